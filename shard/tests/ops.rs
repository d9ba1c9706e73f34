//! Each raw io_uring operation the reactor exposes, against real sockets
//! and pipes on loopback. A test whose opcode the kernel lacks says so and
//! skips instead of failing.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use shard::ops;

/// Skips the calling test (with a message) when the kernel lacks `op`.
macro_rules! require {
    ($op:expr) => {
        let probe = shard::probe();
        if !probe.supports($op) {
            eprintln!("skipped: the kernel's io_uring lacks {} ({})", $op, probe.kernel);
            return;
        }
    };
}

/// Runs `f` on one unpinned shard, failing the test if the runtime fails.
fn on_shard<T, F, Fut>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    shard::run_single(f).expect("runtime")
}

fn tcp_socket() -> OwnedFd {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    s.into()
}

#[test]
fn connect_send_recv_shutdown_close() {
    require!("connect");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).expect("read");
        s.write_all(&buf).expect("write");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("EOF after shutdown");
        rest.len()
    });
    on_shard(move || async move {
        let fd = tcp_socket();
        ops::connect(fd.as_raw_fd(), addr).await.expect("connect");
        let (n, _) = ops::send(fd.as_raw_fd(), b"hello".to_vec()).await;
        assert_eq!(n.expect("send"), 5);
        let (n, buf) = ops::recv(fd.as_raw_fd(), Vec::with_capacity(16)).await;
        assert_eq!(n.expect("recv"), 5);
        assert_eq!(buf, b"hello");
        // The half-close is a system call (netstack's `shutdown_write`):
        // the ring hands every shutdown to an io-wq worker thread.
        socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Write).expect("shutdown");
        ops::close(fd).await.expect("close");
    });
    assert_eq!(server.join().expect("server"), 0);
}

#[test]
fn connect_refused_is_an_error() {
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    on_shard(move || async move {
        let fd = tcp_socket();
        let err = ops::connect(fd.as_raw_fd(), port).await.expect_err("nobody listens");
        assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED));
    });
}

#[test]
fn accept_reports_the_peer_and_multishot_accepts_many() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    on_shard(move || async move {
        let lfd = listener.as_raw_fd();
        let client = TcpStream::connect(addr).expect("connect");
        let (fd, peer) = ops::accept(lfd).await.expect("accept");
        assert_eq!(peer, Some(client.local_addr().expect("local")));
        drop(fd);
        let mut multi = ops::accept_multi(lfd);
        let clients: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(addr).expect("connect")).collect();
        for _ in 0..clients.len() {
            let mut c = multi.next().await.expect("an accept completion");
            c.io_result().expect("accepted");
            drop(c.take_fd().expect("the completion owns the accepted descriptor"));
        }
        drop(listener);
    });
}

fn owned(fd: i32) -> OwnedFd {
    #[allow(unsafe_code)]
    // SAFETY: the descriptor was just returned by accept and has no other owner.
    unsafe {
        OwnedFd::from_raw_fd(fd)
    }
}

#[test]
fn send_zc_returns_the_buffer_after_the_notification() {
    require!("send_zc");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    const LEN: usize = 1 << 18;
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut got = vec![0u8; LEN];
        s.read_exact(&mut got).expect("read");
        got
    });
    on_shard(move || async move {
        let fd = tcp_socket();
        ops::connect(fd.as_raw_fd(), addr).await.expect("connect");
        let mut buf: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
        let mut sent = 0;
        while sent < LEN {
            // The buffer comes back only after the kernel's zero-copy
            // notification, so it can be reused for the rest at once.
            let (n, back) = ops::send_zc(fd.as_raw_fd(), ops::Slice::new(buf, sent, LEN)).await;
            sent += n.expect("send_zc");
            buf = back.into_inner();
        }
    });
    let got = reader.join().expect("reader");
    assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
}

#[test]
fn recvmsg_and_sendmsg_carry_addresses() {
    let peer = UdpSocket::bind("127.0.0.1:0").expect("bind peer");
    let peer_addr = peer.local_addr().expect("addr");
    let ours = UdpSocket::bind("127.0.0.1:0").expect("bind ours");
    let our_addr = ours.local_addr().expect("addr");
    peer.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let fd = ours.as_raw_fd();
    let echoed = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let (n, from) = peer.recv_from(&mut buf).expect("recv");
        peer.send_to(&buf[..n], from).expect("send back");
        from
    });
    on_shard(move || async move {
        let (n, _) = ops::sendmsg(fd, b"datagram".to_vec(), Some(peer_addr)).await;
        assert_eq!(n.expect("sendmsg"), 8);
        let (r, buf) = ops::recvmsg(fd, Vec::with_capacity(64)).await;
        let (n, from) = r.expect("recvmsg");
        assert_eq!(&buf[..n], b"datagram");
        assert_eq!(from, Some(peer_addr));
    });
    assert_eq!(echoed.join().expect("peer"), our_addr);
    drop(ours);
}

/// A pipe: (read end, write end).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0i32; 2];
    #[allow(unsafe_code)]
    // SAFETY: `fds` is a valid two-element array for pipe2 to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2");
    (owned(fds[0]), owned(fds[1]))
}

#[test]
fn splice_moves_bytes_through_a_pipe() {
    require!("splice");
    let (a, mut b) = std::os::unix::net::UnixStream::pair().expect("pair");
    let (mut c, d) = std::os::unix::net::UnixStream::pair().expect("pair");
    b.write_all(b"spliced bytes").expect("write");
    on_shard(move || async move {
        let (rd, wr) = pipe();
        let n = ops::splice(a.as_raw_fd(), wr.as_raw_fd(), 1 << 16).await.expect("socket -> pipe");
        assert_eq!(n, 13);
        let m = ops::splice(rd.as_raw_fd(), d.as_raw_fd(), n as u32).await.expect("pipe -> socket");
        assert_eq!(m, 13);
    });
    let mut got = [0u8; 13];
    c.read_exact(&mut got).expect("read");
    assert_eq!(&got, b"spliced bytes");
}

#[test]
fn read_and_write_on_a_pipe() {
    on_shard(move || async move {
        let (rd, wr) = pipe();
        let (n, _) = ops::write(wr.as_raw_fd(), &b"through a pipe"[..]).await;
        assert_eq!(n.expect("write"), 14);
        let (n, buf) = ops::read(rd.as_raw_fd(), Vec::with_capacity(32)).await;
        assert_eq!(n.expect("read"), 14);
        assert_eq!(buf, b"through a pipe");
    });
}

#[test]
fn cancel_fd_cancels_pending_operations() {
    let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
    on_shard(move || async move {
        let fd = a.as_raw_fd();
        let pending = shard::spawn_local(async move { ops::recv(fd, Vec::with_capacity(8)).await.0 });
        shard::time::sleep(Duration::from_millis(5)).await;
        let n = ops::cancel_fd(fd).await.expect("cancel");
        assert_eq!(n, 1);
        let err = pending.await.expect("task").expect_err("cancelled");
        assert_eq!(err.raw_os_error(), Some(libc::ECANCELED));
    });
}

#[test]
fn msg_ring_posts_to_another_ring() {
    require!("msg_ring");
    // Posting to our own ring exercises the opcode without a second ring;
    // the runtime's cross-shard wake-ups use it between shards all the time
    // (see the runtime tests).
    on_shard(move || async move {
        let err = ops::msg_ring(-1, 0, 42).await.expect_err("bad fd");
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    });
}

#[test]
fn multishot_recvmsg_reports_each_datagram_and_its_source() {
    let ours = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = ours.local_addr().expect("addr");
    let peer = UdpSocket::bind("127.0.0.1:0").expect("bind peer");
    let peer_addr = peer.local_addr().expect("addr");
    on_shard(move || async move {
        let group = shard::reactor::BufRing::new(8, 2048).expect("buffer ring");
        let mut rx = ops::recvmsg_multi(ours.as_raw_fd(), &group);
        for i in 0..20u8 {
            peer.send_to(&[i; 100], addr).expect("send");
            let c = rx.next().await.expect("a completion");
            assert!(c.result > 0, "result {}", c.result);
            let buf = c.buf.expect("a provided buffer");
            let msg = ops::RecvMsgOut::parse(&buf).expect("layout");
            assert_eq!(msg.source, Some(peer_addr));
            assert_eq!(msg.payload, &[i; 100][..]);
            assert!(!msg.truncated);
        }
        // A datagram larger than the buffer is truncated, and says so.
        peer.send_to(&[7u8; 4000], addr).expect("send");
        let c = rx.next().await.expect("a completion");
        let buf = c.buf.expect("buffer");
        let msg = ops::RecvMsgOut::parse(&buf).expect("layout");
        assert!(msg.truncated);
        assert_eq!(msg.payload.len(), 2048 - ops::RecvMsgOut::PAYLOAD_OFFSET);
    });
}

#[test]
fn close_later_runs_after_queued_operations() {
    let (a, mut b) = std::os::unix::net::UnixStream::pair().expect("pair");
    on_shard(move || async move {
        let fd: OwnedFd = a.into();
        let raw = fd.as_raw_fd();
        let (n, _) = ops::send(raw, b"before close".to_vec()).await;
        assert_eq!(n.expect("send"), 12);
        ops::close_later(fd);
        shard::yield_now().await;
    });
    let mut got = Vec::new();
    b.read_to_end(&mut got).expect("EOF once closed");
    assert_eq!(got, b"before close");
}
