//! Dropping operations while the kernel still holds them.
//!
//! The reactor must park a dropped operation's memory until the kernel's
//! final completion. These tests drop receives at every stage (queued but
//! not submitted, submitted and waiting), then make data arrive and reuse
//! the heap heavily: if the kernel wrote into freed memory, the fresh
//! allocations (which reuse the freed chunks) would see the bytes.

use std::future::Future;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use shard::reactor::BufRing;

const PAIRS: usize = 64;
const SIZE: usize = 4096;

fn runtime() -> shard::Runtime {
    shard::Builder::new().shards(1).pin(false).build().expect("plan")
}

/// Polls `fut` exactly once, then drops it.
async fn poll_once_then_drop<F: Future>(fut: F) {
    let mut fut = pin!(fut);
    std::future::poll_fn(|cx| {
        let _ = fut.as_mut().poll(cx);
        Poll::Ready(())
    })
    .await;
}

async fn wait_until_no_ops_in_flight() {
    let deadline = Instant::now() + Duration::from_secs(5);
    while shard::stats().ops_in_flight > 0 {
        assert!(Instant::now() < deadline, "operations still in flight: {:?}", shard::stats());
        shard::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Fills the heap with fresh buffers of the dropped buffers' size and
/// checks that nothing writes into them while data arrives.
async fn heap_stays_untouched(peers: &mut [UnixStream]) {
    let canaries: Vec<Vec<u8>> = (0..4 * PAIRS).map(|_| vec![0xAA; SIZE]).collect();
    for p in peers.iter_mut() {
        let _ = p.write_all(&[0x55; SIZE]);
    }
    for _ in 0..20 {
        shard::time::sleep(Duration::from_millis(1)).await;
    }
    for c in &canaries {
        assert!(c.iter().all(|&b| b == 0xAA), "a freed receive buffer was written by the kernel");
    }
}

fn pairs() -> (Vec<UnixStream>, Vec<UnixStream>) {
    (0..PAIRS).map(|_| UnixStream::pair().expect("socketpair")).unzip()
}

#[test]
fn dropping_queued_receives_keeps_memory_safe() {
    runtime()
        .run(|| async {
            let (ours, mut peers) = pairs();
            for s in &ours {
                // Dropped before the loop turn submitted it: the entry and
                // its cancel go to the kernel together.
                poll_once_then_drop(shard::ops::recv(s.as_raw_fd(), Vec::with_capacity(SIZE))).await;
            }
            heap_stays_untouched(&mut peers).await;
            wait_until_no_ops_in_flight().await;
        })
        .expect("run");
}

#[test]
fn dropping_submitted_receives_keeps_memory_safe() {
    runtime()
        .run(|| async {
            let (ours, mut peers) = pairs();
            let mut handles = Vec::new();
            for s in &ours {
                let fd = s.as_raw_fd();
                handles.push(shard::spawn_local(async move {
                    let _ = shard::ops::recv(fd, Vec::with_capacity(SIZE)).await;
                }));
            }
            // Let the receives reach the kernel and wait there.
            shard::time::sleep(Duration::from_millis(5)).await;
            assert!(shard::stats().ops_in_flight >= PAIRS as u64);
            for h in handles {
                h.abort();
            }
            shard::yield_now().await;
            heap_stays_untouched(&mut peers).await;
            wait_until_no_ops_in_flight().await;
        })
        .expect("run");
}

/// Multishot receives into a provided-buffer ring, dropped mid-stream many
/// times over: every buffer comes back to the ring (none leaked, none
/// handed out twice) and receiving still works afterwards.
#[test]
fn dropping_multishot_receives_returns_every_buffer() {
    runtime()
        .run(|| async {
            let group = BufRing::new(16, 256).expect("buffer ring");
            let (a, mut b) = UnixStream::pair().expect("socketpair");
            let fd = a.as_raw_fd();
            for round in 0..100u8 {
                let mut rx = shard::ops::recv_multi(fd, &group);
                b.write_all(&[round; 100]).expect("write");
                let c = rx.next().await.expect("a completion");
                let buf = c.buf.expect("a provided buffer");
                assert!(buf.iter().all(|&x| x == round), "round {round}: stale or foreign bytes");
                drop(buf);
                // Drop the stream while the kernel still has it armed.
                drop(rx);
            }
            wait_until_no_ops_in_flight().await;
            assert_eq!(group.in_use(), 0, "every buffer is back on the ring");
            // 100 rounds through a 16-buffer ring: buffers were recycled.
            let mut rx = shard::ops::recv_multi(fd, &group);
            b.write_all(b"still works").expect("write");
            let c = rx.next().await.expect("a completion");
            assert_eq!(&c.buf.expect("buffer")[..], b"still works");
        })
        .expect("run");
}

/// An accept dropped while waiting does not take the next connection.
#[test]
fn dropping_an_accept_cancels_it() {
    runtime()
        .run(|| async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.set_nonblocking(true).expect("nonblocking");
            let addr = listener.local_addr().expect("addr");
            let fd = listener.as_raw_fd();
            let h = shard::spawn_local(async move { shard::ops::accept(fd).await });
            shard::time::sleep(Duration::from_millis(5)).await;
            h.abort();
            wait_until_no_ops_in_flight().await;
            let _client = std::net::TcpStream::connect(addr).expect("connect");
            // Bounded: if the aborted accept had taken the connection, this
            // one would wait for ever.
            let accepted = shard::time::timeout(Duration::from_secs(5), shard::ops::accept(fd)).await;
            let (conn, peer) =
                accepted.expect("the aborted accept did not take the connection").expect("accept");
            assert!(conn.as_raw_fd() >= 0);
            assert!(peer.is_some());
            drop(listener);
        })
        .expect("run");
}
