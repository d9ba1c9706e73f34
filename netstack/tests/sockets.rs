//! TCP and UDP on the shard runtime against real loopback sockets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcp, UdpSocket as StdUdp};
use std::time::{Duration, Instant};

use netstack::tcp::{Pipe, TcpListener, TcpStream};
use netstack::udp::UdpSocket;
use shard::reactor::BufRing;

/// Runs `f` on one unpinned shard, failing the test if the runtime fails.
fn on_shard<T, F, Fut>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    shard::run_single(f).expect("runtime")
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

#[test]
fn accept_receive_echo_and_half_close() {
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    let client = std::thread::spawn(move || {
        let addr = rx.recv().expect("address");
        let mut s = StdTcp::connect(addr).expect("connect");
        s.write_all(b"ping").expect("write");
        s.shutdown(std::net::Shutdown::Write).expect("half-close");
        let mut back = Vec::new();
        s.read_to_end(&mut back).expect("read to EOF");
        back
    });
    on_shard(move || async move {
        let listener = TcpListener::bind(localhost()).expect("bind");
        tx.send(listener.local_addr()).expect("send addr");
        let mut incoming = listener.incoming();
        let conn = incoming.next().await.expect("accept");
        assert_eq!(conn.peer_addr().expect("peer").ip(), listener.local_addr().ip());
        let group = BufRing::new(8, 1024).expect("group");
        let mut rx = conn.recv_stream(&group);
        let mut got = Vec::new();
        while let Some(buf) = rx.next().await.expect("recv") {
            got.extend_from_slice(&buf);
        }
        assert_eq!(got, b"ping");
        // The peer half-closed; we can still send, then close our half.
        let (r, _) = conn.send_all(b"pong after FIN".to_vec()).await;
        r.expect("send after peer FIN");
        conn.shutdown_write().await.expect("shutdown");
    });
    assert_eq!(client.join().expect("client"), b"pong after FIN");
}

/// The forward path's upstream connect: socket, TCP_NODELAY and connect
/// through the ring (with the system calls as the fallback), a working
/// stream either way; and a listener's TCP_NODELAY reaches what it
/// accepts, so an accept needs no setsockopt.
#[test]
fn ring_connect_sets_nodelay_and_accepted_sockets_inherit_it() {
    let server = std::net::TcpListener::bind(localhost()).expect("bind");
    socket2::SockRef::from(&server).set_tcp_nodelay(true).expect("listener nodelay");
    let addr = server.local_addr().expect("addr");
    let accepted = std::thread::spawn(move || {
        let (mut s, _) = server.accept().expect("accept");
        let inherited = socket2::SockRef::from(&s).tcp_nodelay().expect("nodelay");
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).expect("read");
        s.write_all(&buf).expect("echo");
        inherited
    });
    let (nodelay, back) = on_shard(move || async move {
        let conn = TcpStream::connect_nodelay_timeout(addr, Duration::from_secs(5)).await.expect("connect");
        let nodelay = socket2::SockRef::from(&conn).tcp_nodelay().expect("nodelay");
        let (r, _) = conn.send_all(b"ping".to_vec()).await;
        r.expect("send");
        let group = BufRing::new(8, 1024).expect("group");
        let mut rx = conn.recv_stream(&group);
        let buf = rx.next().await.expect("recv").expect("data");
        (nodelay, buf.to_vec())
    });
    assert!(nodelay, "TCP_NODELAY on the ring-made upstream socket");
    assert_eq!(back, b"ping");
    assert!(accepted.join().expect("server"), "TCP_NODELAY inherited from the listener");
}

#[test]
fn connect_and_exchange_with_a_std_server() {
    let server = std::net::TcpListener::bind(localhost()).expect("bind");
    let addr = server.local_addr().expect("addr");
    let t = std::thread::spawn(move || {
        let (mut s, _) = server.accept().expect("accept");
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).expect("read");
        s.write_all(&buf).expect("write");
    });
    on_shard(move || async move {
        let s = TcpStream::connect_timeout(addr, Duration::from_secs(5)).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        let (r, _) = s.send_all(&b"hello"[..]).await;
        r.expect("send");
        let (n, buf) = s.recv(Vec::with_capacity(16)).await;
        assert_eq!(n.expect("recv"), 5);
        assert_eq!(buf, b"hello");
    });
    t.join().expect("server");
}

/// A listener whose accept queue is full drops SYNs, so the connect hangs
/// and the timeout must fire (and the socket be cleaned up).
#[test]
fn connect_timeout_fires() {
    let server = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    server.bind(&localhost().into()).expect("bind");
    server.listen(1).expect("listen");
    let addr = server.local_addr().expect("addr").as_socket().expect("ip");
    // Fill the accept queue (nobody accepts).
    let fillers: Vec<_> =
        (0..4).filter_map(|_| StdTcp::connect_timeout(&addr, Duration::from_millis(300)).ok()).collect();
    on_shard(move || async move {
        let start = Instant::now();
        let err =
            TcpStream::connect_timeout(addr, Duration::from_millis(300)).await.expect_err("must time out");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
    });
    drop(fillers);
}

#[test]
fn reset_on_close_reaches_the_peer() {
    let server = std::net::TcpListener::bind(localhost()).expect("bind");
    let addr = server.local_addr().expect("addr");
    let t = std::thread::spawn(move || {
        let (mut s, _) = server.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut buf = [0u8; 8];
        s.read(&mut buf).map_err(|e| e.kind())
    });
    on_shard(move || async move {
        let s = TcpStream::connect(addr).await.expect("connect");
        s.set_reset_on_close().expect("linger");
        drop(s);
        shard::time::sleep(Duration::from_millis(20)).await;
    });
    assert_eq!(t.join().expect("server"), Err(std::io::ErrorKind::ConnectionReset));
}

/// Bytes relayed between two sockets through a pipe (splice) arrive intact.
#[test]
fn splice_relay_moves_a_megabyte() {
    const LEN: usize = 1 << 20;
    let source = std::net::TcpListener::bind(localhost()).expect("bind");
    let sink = std::net::TcpListener::bind(localhost()).expect("bind");
    let (src_addr, sink_addr) = (source.local_addr().expect("a"), sink.local_addr().expect("b"));
    let writer = std::thread::spawn(move || {
        let (mut s, _) = source.accept().expect("accept");
        let data: Vec<u8> = (0..LEN).map(|i| (i % 253) as u8).collect();
        s.write_all(&data).expect("write");
    });
    let reader = std::thread::spawn(move || {
        let (mut s, _) = sink.accept().expect("accept");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read");
        got
    });
    on_shard(move || async move {
        let from = TcpStream::connect(src_addr).await.expect("connect source");
        let to = TcpStream::connect(sink_addr).await.expect("connect sink");
        let pipe = Pipe::new(1 << 16).expect("pipe");
        let mut total = 0;
        loop {
            let n = pipe.splice(&from, &to).await.expect("splice");
            if n == 0 {
                break;
            }
            total += n;
        }
        assert_eq!(total, LEN);
    });
    writer.join().expect("writer");
    let got = reader.join().expect("reader");
    assert_eq!(got.len(), LEN);
    assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 253) as u8));
}

#[test]
fn zero_copy_send_of_a_large_buffer() {
    const LEN: usize = 4 << 20;
    let sink = std::net::TcpListener::bind(localhost()).expect("bind");
    let addr = sink.local_addr().expect("addr");
    let reader = std::thread::spawn(move || {
        let (mut s, _) = sink.accept().expect("accept");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read");
        got
    });
    on_shard(move || async move {
        let s = TcpStream::connect(addr).await.expect("connect");
        let data: Vec<u8> = (0..LEN).map(|i| (i % 241) as u8).collect();
        let (r, back) = s.send_all_zc(data).await;
        r.expect("send_zc");
        assert_eq!(back.len(), LEN, "the buffer comes back whole");
    });
    let got = reader.join().expect("reader");
    assert_eq!(got.len(), LEN);
    assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 241) as u8));
}

/// Idle connections with a receive armed hold no receive buffer.
#[test]
fn idle_connections_hold_no_buffers() {
    const CONNS: usize = 200;
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let clients = std::thread::spawn(move || {
        let addr = rx.recv().expect("address");
        let conns: Vec<StdTcp> = (0..CONNS).map(|_| StdTcp::connect(addr).expect("connect")).collect();
        let _ = done_rx.recv_timeout(Duration::from_secs(20));
        drop(conns);
    });
    on_shard(move || async move {
        let listener = TcpListener::bind(localhost()).expect("bind");
        tx.send(listener.local_addr()).expect("send addr");
        let group = BufRing::new(64, 4096).expect("group");
        let mut incoming = listener.incoming();
        for _ in 0..CONNS {
            let conn = incoming.next().await.expect("accept");
            let group = group.clone();
            shard::spawn_local(async move {
                let mut rx = conn.recv_stream(&group);
                while let Ok(Some(_)) = rx.next().await {}
            })
            .detach();
        }
        shard::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(group.in_use(), 0, "no idle connection holds a buffer");
        assert!(shard::stats().ops_in_flight >= CONNS as u64, "every connection has its receive armed");
        done_tx.send(()).expect("release clients");
    });
    clients.join().expect("clients");
}

#[test]
fn udp_stream_receives_datagrams_with_sources() {
    let peer = StdUdp::bind(localhost()).expect("bind");
    let peer_addr = peer.local_addr().expect("addr");
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    let sender = std::thread::spawn(move || {
        let to = rx.recv().expect("address");
        for i in 0..500u32 {
            peer.send_to(&i.to_be_bytes(), to).expect("send");
            // Paced, so the receiver's socket buffer never overflows: UDP
            // would drop the excess and the count below would be short.
            if i % 50 == 49 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let mut buf = [0u8; 16];
        peer.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let (n, _) = peer.recv_from(&mut buf).expect("reply");
        buf[..n].to_vec()
    });
    on_shard(move || async move {
        let sock = UdpSocket::bind(localhost()).expect("bind");
        tx.send(sock.local_addr()).expect("send addr");
        let group = BufRing::new(64, 2048).expect("group");
        let mut stream = sock.recv_stream(&group);
        let mut seen = vec![false; 500];
        for _ in 0..500 {
            let d = shard::time::timeout(Duration::from_secs(20), stream.next()).await;
            let d = d.expect("a datagram within 20 s").expect("datagram");
            assert_eq!(d.source(), Some(peer_addr));
            let i = u32::from_be_bytes(d.payload().try_into().expect("4 bytes")) as usize;
            assert!(!seen[i], "datagram {i} twice");
            seen[i] = true;
        }
        let (r, _) = sock.send_to(b"done".to_vec(), peer_addr).await;
        r.expect("reply");
    });
    assert_eq!(sender.join().expect("sender"), b"done");
}

/// The bounded receive: one buffer per call, and when the group is empty
/// the receive waits for a buffer to come back instead of failing.
#[test]
fn recv_provided_waits_for_a_buffer_when_the_group_is_empty() {
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    let writer = std::thread::spawn(move || {
        let addr = rx.recv().expect("address");
        let mut a = StdTcp::connect(addr).expect("connect a");
        let mut b = StdTcp::connect(addr).expect("connect b");
        a.write_all(&[1u8; 3000]).expect("write a");
        b.write_all(&[2u8; 3000]).expect("write b");
        std::thread::sleep(Duration::from_millis(300));
    });
    on_shard(move || async move {
        let listener = TcpListener::bind(localhost()).expect("bind");
        tx.send(listener.local_addr()).expect("send addr");
        let group = BufRing::new(1, 1024).expect("one buffer");
        let mut incoming = listener.incoming();
        let a = incoming.next().await.expect("accept a");
        let b = incoming.next().await.expect("accept b");
        let held = a.recv_provided(&group).await.expect("recv a").expect("data");
        assert_eq!(group.in_use(), 1);
        let g = group.clone();
        let other = shard::spawn_local(async move {
            let mut got = 0;
            while got < 3000 {
                let buf = b.recv_provided(&g).await.expect("recv b").expect("data");
                assert!(buf.iter().all(|&x| x == 2));
                got += buf.len();
            }
            got
        });
        shard::time::sleep(Duration::from_millis(20)).await;
        assert!(!other.is_finished(), "waits while the only buffer is held");
        drop(held);
        assert_eq!(other.await.expect("task"), 3000);
    });
    writer.join().expect("writer");
}

/// A bounded receive stream stopped by its owner (a relay about to wait on
/// a slow reader) hands back what it took, in order, holds nothing after,
/// and its next `next` re-arms: every byte once, in order.
#[test]
fn a_stopped_bounded_stream_hands_back_what_it_took() {
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        let mut s = StdTcp::connect(rx.recv().expect("address")).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        s.write_all(b"first").expect("write");
        go_rx.recv().expect("go");
        for part in [&b"-a"[..], b"-b", b"-c"] {
            s.write_all(part).expect("write");
            std::thread::sleep(Duration::from_millis(20));
        }
        go_rx.recv().expect("go");
        s.write_all(b"-after").expect("write");
        s.shutdown(std::net::Shutdown::Write).expect("half-close");
    });
    let got = on_shard(move || async move {
        let listener = TcpListener::bind(localhost()).expect("bind");
        tx.send(listener.local_addr()).expect("send addr");
        let conn = listener.incoming().next().await.expect("accept");
        let group = BufRing::new(8, 1024).expect("group");
        let mut rx = conn.recv_bounded(&group, 8);
        let mut got = rx.next().await.expect("recv").expect("data").to_vec();
        go_tx.send(()).expect("go");
        // The owner is busy while three more segments arrive.
        shard::time::sleep(Duration::from_millis(200)).await;
        let held = rx.stop().await;
        assert_eq!(group.in_use(), held.len(), "the stream itself holds nothing once stopped");
        for b in &held {
            got.extend_from_slice(b);
        }
        drop(held);
        go_tx.send(()).expect("go");
        while let Some(b) = rx.next().await.expect("recv") {
            got.extend_from_slice(&b);
        }
        got
    });
    writer.join().expect("writer");
    assert_eq!(got, b"first-a-b-c-after");
}

/// The bounded stream as on a kernel without the multishot byte limit
/// (before 6.17): one single-shot receive per `next`, holding at most that
/// buffer; `stop` has nothing to hand back; every byte once, in order.
#[test]
fn a_bounded_stream_without_the_byte_limit_receives_one_buffer_at_a_time() {
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    let writer = std::thread::spawn(move || {
        let mut s = StdTcp::connect(rx.recv().expect("address")).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        for part in [&b"one"[..], b"-two", b"-three"] {
            s.write_all(part).expect("write");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let (got, held, in_use) = on_shard(move || async move {
        let listener = TcpListener::bind(localhost()).expect("bind");
        tx.send(listener.local_addr()).expect("send addr");
        let conn = listener.incoming().next().await.expect("accept");
        let group = BufRing::new(8, 1024).expect("group");
        let mut rx = conn.recv_bounded_on(&group, 4, false);
        let first = rx.next().await.expect("recv").expect("data");
        // The owner is busy while the rest arrives: nothing is received
        // for it meanwhile, so the group holds only the buffer in hand.
        shard::time::sleep(Duration::from_millis(150)).await;
        let in_use = group.in_use();
        let held = rx.stop().await.len();
        let mut got = first.to_vec();
        drop(first);
        while let Some(b) = rx.next().await.expect("recv") {
            got.extend_from_slice(&b);
        }
        (got, held, in_use)
    });
    writer.join().expect("writer");
    assert_eq!((held, in_use), (0, 1), "single-shot: only the buffer in hand");
    assert_eq!(got, b"one-two-three");
}
