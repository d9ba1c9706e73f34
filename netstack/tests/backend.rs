//! The datagram backends behind one trait: kernel UDP, in-memory loopback,
//! and the seeded fault injector.

use std::net::{SocketAddr, UdpSocket as StdUdp};
use std::time::Duration;

use netstack::backend::{DatagramBackend, FaultRates, Faulty, KernelUdp, Loopback, Outgoing, Received};
use netstack::udp::UdpSocket;

/// Runs `f` on one unpinned shard, failing the test if the runtime fails.
fn on_shard<T, F, Fut>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    shard::run_single(f).expect("runtime")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

/// Receives exactly `n` datagrams through any backend, in bursts.
async fn receive_n<B: DatagramBackend>(backend: &mut B, n: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut burst: Vec<Received<B::Buf>> = Vec::new();
    while got.len() < n {
        let r = shard::time::timeout(Duration::from_secs(10), backend.recv_burst(&mut burst, 64)).await;
        r.expect("a burst within 10 s").expect("recv_burst");
        got.extend(burst.drain(..).map(|r| r.payload().to_vec()));
    }
    got
}

#[test]
fn kernel_backend_receives_bursts_and_sends() {
    let peer = StdUdp::bind("127.0.0.1:0").expect("bind");
    let peer_addr = peer.local_addr().expect("addr");
    peer.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    let remote = std::thread::spawn(move || {
        let to = rx.recv().expect("address");
        for i in 0..200u8 {
            peer.send_to(&[i; 32], to).expect("send");
            if i % 40 == 39 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let mut replies = Vec::new();
        let mut buf = [0u8; 64];
        for _ in 0..3 {
            let (n, _) = peer.recv_from(&mut buf).expect("reply");
            replies.push(buf[..n].to_vec());
        }
        replies
    });
    on_shard(move || async move {
        let sock = UdpSocket::bind(addr("127.0.0.1:0")).expect("bind");
        let mut backend = KernelUdp::new(sock, 32, 2048).expect("backend");
        tx.send(backend.local_addr()).expect("send addr");
        let got = receive_n(&mut backend, 200).await;
        let mut firsts: Vec<u8> = got.iter().map(|p| p[0]).collect();
        firsts.sort_unstable();
        assert_eq!(firsts, (0..200u8).collect::<Vec<_>>());
        let mut out: Vec<Outgoing> =
            (0..3u8).map(|i| Outgoing { payload: vec![b'r', i], dest: peer_addr }).collect();
        assert_eq!(backend.send_burst(&mut out).await.expect("send_burst"), 3);
        assert!(out.is_empty());
    });
    let replies = remote.join().expect("remote");
    assert_eq!(replies, vec![vec![b'r', 0], vec![b'r', 1], vec![b'r', 2]]);
}

#[test]
fn loopback_pair_delivers_in_order_and_counts_overflow() {
    on_shard(|| async {
        let (mut a, mut b) = Loopback::pair(addr("10.0.0.1:1"), addr("10.0.0.2:2"), 4);
        let mut out: Vec<Outgoing> =
            (0..6u8).map(|i| Outgoing { payload: vec![i], dest: addr("10.0.0.2:2") }).collect();
        assert_eq!(a.send_burst(&mut out).await.expect("send"), 4);
        assert_eq!(a.dropped(), 2, "a full queue drops, as a full socket buffer would");
        let mut burst = Vec::new();
        assert_eq!(b.recv_burst(&mut burst, 16).await.expect("recv"), 4);
        let got: Vec<u8> = burst.iter().map(|r| r.payload()[0]).collect();
        assert_eq!(got, vec![0, 1, 2, 3]);
        assert!(burst.iter().all(|r| r.source == Some(addr("10.0.0.1:1"))));
        // A receiver waiting on an empty queue is woken by a later send.
        let waiter = shard::spawn_local(async move {
            let mut burst = Vec::new();
            b.recv_burst(&mut burst, 16).await.expect("recv");
            burst.into_iter().map(|r| r.payload().to_vec()).collect::<Vec<_>>()
        });
        shard::time::sleep(Duration::from_millis(5)).await;
        let mut more = vec![Outgoing { payload: b"late".to_vec(), dest: addr("10.0.0.2:2") }];
        a.send_burst(&mut more).await.expect("send");
        assert_eq!(waiter.await.expect("task"), vec![b"late".to_vec()]);
    });
}

/// Runs 10,000 numbered datagrams through a faulty loopback and returns
/// what arrived, plus the fault counters.
async fn through_faults(rates: FaultRates, seed: u64) -> (Vec<Vec<u8>>, netstack::backend::FaultCounts) {
    let (mut a, b) = Loopback::pair(addr("10.0.0.1:1"), addr("10.0.0.2:2"), 20_000);
    let mut faulty = Faulty::new(b, rates, seed);
    let mut out: Vec<Outgoing> = (0..10_000u32)
        .map(|i| Outgoing { payload: i.to_be_bytes().to_vec(), dest: addr("10.0.0.2:2") })
        .collect();
    a.send_burst(&mut out).await.expect("send");
    let mut got = Vec::new();
    let mut burst = Vec::new();
    // Dropped datagrams never arrive: stop once the queue is drained.
    loop {
        let r = shard::time::timeout(Duration::from_millis(50), faulty.recv_burst(&mut burst, 256)).await;
        match r {
            Ok(r) => {
                r.expect("recv");
                got.extend(burst.drain(..).map(|r| r.payload().to_vec()));
            }
            Err(_) => break,
        }
    }
    (got, faulty.counts())
}

#[test]
fn fault_injection_is_seeded_and_near_its_rates() {
    let rates = FaultRates { drop: 0.05, duplicate: 0.05, truncate: 0.05, reorder: 0.05 };
    let (got, counts) = on_shard(move || async move { through_faults(rates, 42).await });
    let (again, counts_again) = on_shard(move || async move { through_faults(rates, 42).await });
    assert_eq!(got, again, "the same seed replays the same faults");
    assert_eq!(counts, counts_again);
    // 10,000 draws at 5%: expect ~500 each; 300..700 is > 9 sigma wide.
    for (name, n) in [
        ("dropped", counts.dropped),
        ("duplicated", counts.duplicated),
        ("truncated", counts.truncated),
        ("reordered", counts.reordered),
    ] {
        assert!((300..700).contains(&n), "{name}: {n} of 10000 at 5%");
    }
    assert_eq!(got.len() as u64, 10_000 - counts.dropped + counts.duplicated);
    let short = got.iter().filter(|p| p.len() < 4).count() as u64;
    // Truncation picks a length below the original; a duplicate of a
    // truncated datagram is short too.
    assert!(short >= counts.truncated, "{short} short payloads for {} truncations", counts.truncated);
    let (clean, zero) = on_shard(|| async { through_faults(FaultRates::default(), 7).await });
    assert_eq!(zero, Default::default());
    let expected: Vec<Vec<u8>> = (0..10_000u32).map(|i| i.to_be_bytes().to_vec()).collect();
    assert_eq!(clean, expected, "no faults: everything, in order");
}
