//! `appliance forward`: balancing policies seen from outside (least-conn
//! follows open connections, Maglev keeps clients in place when the pool
//! changes) and reset propagation, with the real binary.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use appliance_tests::upstream::{identify, identify_and_hold, reset_after_read, Upstream};
use appliance_tests::Appliance;

fn start(upstreams: &[SocketAddr], extra: &[&str]) -> (Appliance, SocketAddr) {
    let owned: Vec<String> = upstreams.iter().map(|a| a.to_string()).collect();
    let mut args = vec!["forward", "--listen", "127.0.0.1:0", "--no-pin", "--health-interval", "0"];
    for a in &owned {
        args.extend_from_slice(&["--upstream", a]);
    }
    args.extend_from_slice(extra);
    let mut app = Appliance::start(&args).expect("start");
    let addr = app.wait_for_addr("forward listening on").expect("listening");
    (app, addr)
}

/// Connects, optionally sends `preamble`, and reads the upstream's id.
fn open(addr: SocketAddr, preamble: &[u8]) -> (TcpStream, u8) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(preamble).expect("preamble");
    let mut id = [0u8; 1];
    s.read_exact(&mut id).expect("upstream id");
    (s, id[0])
}

#[test]
fn least_conn_follows_open_connections() {
    let ups: Vec<Upstream> = (0..2).map(|i| Upstream::start(identify_and_hold, i)).collect();
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    // One shard: one balancer sees every connection.
    let (_app, addr) = start(&addrs, &["--shards", "1", "--balance", "least-conn"]);
    let mut held: Vec<(TcpStream, u8)> = (0..4).map(|_| open(addr, b"")).collect();
    let on = |held: &[(TcpStream, u8)], id: u8| held.iter().filter(|(_, i)| *i == id).count();
    assert_eq!((on(&held, 0), on(&held, 1)), (2, 2), "ties alternate");
    // Close both connections of one upstream: it now has 0 open, the other
    // 2, so the next two connections both go to it (round-robin would split).
    let emptied = held[0].1;
    held.retain(|(_, id)| *id != emptied);
    std::thread::sleep(Duration::from_millis(300));
    let next: Vec<u8> = (0..2)
        .map(|_| open(addr, b""))
        .map(|(s, id)| {
            held.push((s, id));
            id
        })
        .collect();
    assert_eq!(next, vec![emptied, emptied], "least-conn picks the emptier upstream");
    let (_third, id) = open(addr, b"");
    assert_ne!(id, emptied, "2-2 again: the tie-break moves on");
}

/// A PROXY v1 header announcing `client`.
fn proxy_v1(client: u32) -> Vec<u8> {
    let ip = std::net::Ipv4Addr::from(0x0a00_0000 | client);
    format!("PROXY TCP4 {ip} 127.0.0.1 40000 80\r\n").into_bytes()
}

/// Which upstream each of `clients` lands on (each connects twice; Maglev
/// must send a client to the same upstream from any shard).
fn maglev_map(addr: SocketAddr, clients: u32) -> Vec<u8> {
    (0..clients)
        .map(|c| {
            let a = open(addr, &proxy_v1(c)).1;
            let b = open(addr, &proxy_v1(c)).1;
            assert_eq!(a, b, "client {c} moved between two connections");
            a
        })
        .collect()
}

#[test]
fn maglev_keeps_clients_in_place_when_an_upstream_leaves() {
    let ups: Vec<Upstream> = (0..4).map(|i| Upstream::start(identify, i)).collect();
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let args = ["--shards", "2", "--balance", "maglev", "--accept-proxy"];
    let clients = 300;
    let before = {
        let (_app, addr) = start(&addrs, &args);
        maglev_map(addr, clients)
    };
    for id in 0..4u8 {
        let share = before.iter().filter(|&&u| u == id).count();
        assert!((40..=110).contains(&share), "upstream {id} got {share} of {clients}: {before:?}");
    }
    // Upstream 3 leaves; every client that was not on it stays put.
    let after = {
        let (_app, addr) = start(&addrs[..3], &args);
        maglev_map(addr, clients)
    };
    let moved = before.iter().zip(&after).filter(|(b, a)| **b != 3 && b != a).count();
    let kept = before.iter().filter(|&&b| b != 3).count();
    assert!(moved * 100 <= kept * 3, "{moved} of {kept} clients of the remaining upstreams moved");
}

fn is_reset(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe)
}

#[test]
fn an_upstream_reset_reaches_the_client_as_a_reset() {
    let up = Upstream::start(reset_after_read, 0);
    let (_app, addr) = start(&[up.addr], &["--shards", "2"]);
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(b"hello").expect("send");
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Err(e) => assert!(is_reset(&e), "expected a reset, got {e}"),
        Ok(n) => panic!("expected a reset, got a clean read of {n} bytes"),
    }
}

#[test]
fn a_client_reset_reaches_the_upstream_as_a_reset() {
    let (tx, rx) = std::sync::mpsc::channel();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let up = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut buf = [0u8; 16];
        let _ = s.read(&mut buf);
        let _ = tx.send(s.read(&mut buf).map_err(|e| e.kind()));
    });
    let (_app, addr) = start(&[up], &["--shards", "2"]);
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(b"hello").expect("send");
    std::thread::sleep(Duration::from_millis(200));
    socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).expect("linger");
    drop(s);
    let got = rx.recv_timeout(Duration::from_secs(10)).expect("upstream saw the end");
    assert!(
        matches!(got, Err(ErrorKind::ConnectionReset)),
        "the upstream should see a reset, not a clean close: {got:?}"
    );
    server.join().expect("server");
}

#[test]
fn the_idle_timeout_closes_both_sides() {
    let (tx, rx) = std::sync::mpsc::channel();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let up = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).unwrap_or(0);
        let _ = s.write_all(&buf[..n]);
        // The proxy closes this side too once the connection idles.
        let _ = tx.send(s.read(&mut buf).map_err(|e| e.kind()));
    });
    let (_app, addr) = start(&[up], &["--shards", "2", "--idle-timeout", "1s"]);
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(b"ping").expect("send");
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).expect("echo");
    let started = std::time::Instant::now();
    let end = s.read(&mut buf);
    assert!(matches!(end, Ok(0)), "the client sees the connection end: {end:?}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "closed after {waited:?}, before the idle timeout");
    let upstream_end = rx.recv_timeout(Duration::from_secs(5)).expect("upstream side ended");
    assert!(matches!(upstream_end, Ok(0)), "the upstream sees the connection end: {upstream_end:?}");
}
