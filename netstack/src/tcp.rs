//! TCP on the shard's io_uring: a listener with multishot accept and a
//! stream with owned-buffer I/O.
//!
//! Buffers go in by value and come back with the result, so the kernel never
//! writes memory Rust has freed. Receiving through a [`BufRing`] (see
//! [`TcpStream::recv_stream`]) means an idle connection holds no receive
//! buffer at all: its cost is the socket, one fd and its task.
//!
//! Measured on this machine (`cargo run --release -p netstack --example
//! conn_memory`): 4,000 idle connections, each with a receive armed, hold no
//! receive buffer and add about 480 bytes of user-space memory each (the
//! task, its operation slot and the fd); the kernel adds about 3.4 KiB of
//! socket objects per connection and no buffer pages while it is idle.
//!
//! A stream closes its fd through the ring when dropped, ordered after any
//! operation already queued on it, so an fd number is never reused under a
//! queued operation.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use shard::ops::{self, IoBuf, IoBufMut, Slice};
use shard::reactor::{BufRing, MultiOp, ProvidedBuf};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::ShardBound;

/// A listening socket of this shard (one of a `SO_REUSEPORT` group).
#[derive(Debug)]
pub struct TcpListener {
    fd: OwnedFd,
    local: SocketAddr,
    _shard: ShardBound,
}

impl TcpListener {
    /// Binds a listener on `addr` in a `SO_REUSEPORT` group (so every shard
    /// can bind its own on the same address).
    pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::from_fd(crate::listener::tcp_reuseport(addr, 4096)?)
    }

    /// Wraps a listening socket made elsewhere (it must be non-blocking).
    pub fn from_fd(fd: OwnedFd) -> io::Result<TcpListener> {
        let local = crate::listener::local_addr(&fd)?;
        Ok(TcpListener { fd, local, _shard: ShardBound::default() })
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Accepts one connection, with the peer's address.
    pub async fn accept(&self) -> io::Result<(TcpStream, Option<SocketAddr>)> {
        let (fd, peer) = ops::accept(self.fd.as_raw_fd()).await?;
        Ok((TcpStream::from_fd(fd), peer))
    }

    /// Accepted connections as a stream, from one multishot accept that is
    /// re-armed whenever the kernel ends it.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self, op: None }
    }
}

impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// See [`TcpListener::incoming`].
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
    op: Option<MultiOp<()>>,
}

impl Incoming<'_> {
    /// The connections already waiting, without waiting for more: those
    /// the multishot accept has taken and those still in the kernel's
    /// backlog. For a drain that stops listening: serve (or close) what
    /// clients already connected, then drop the listener so that new
    /// connections are refused at once instead of hanging in a backlog
    /// nobody reads.
    ///
    /// The multishot accept is cancelled and waited for: a connection it
    /// took while the cancel was on its way is served too, not closed
    /// unseen (which a client that has sent its request sees as a reset;
    /// when the listening socket lives on in another process, after a
    /// binary upgrade, no connection may be lost this way).
    pub async fn finish(&mut self) -> Vec<TcpStream> {
        let mut ready = Vec::new();
        if let Some(mut op) = self.op.take() {
            if op.cancel().is_ok() {
                while let Some(mut c) = op.next().await {
                    if let (Ok(_), Some(fd)) = (c.io_result(), c.take_fd()) {
                        ready.push(TcpStream::from_fd(fd));
                    }
                }
            }
            // Cancel not submitted (the ring failed): dropping cancels.
        }
        // The multishot accept has ended: draining the backlog does not
        // race with it.
        let listener = SockRef::from(&self.listener.fd);
        loop {
            match listener.accept() {
                Ok((socket, _)) => {
                    if socket.set_nonblocking(true).is_ok() {
                        ready.push(TcpStream::from_fd(socket.into()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNABORTED | libc::EPROTO)) => {}
                // WouldBlock: the backlog is empty; anything else (out of
                // descriptors): what is left is refused when the listener
                // closes.
                Err(_) => break,
            }
        }
        ready
    }

    /// The next accepted connection. Errors that concern one connection
    /// only (the peer reset it while queued) are skipped; errors that say
    /// the process is out of descriptors are returned, so the caller can
    /// back off and shed instead of spinning.
    pub async fn next(&mut self) -> io::Result<TcpStream> {
        loop {
            let fd = self.listener.fd.as_raw_fd();
            let op = self.op.get_or_insert_with(|| ops::accept_multi(fd));
            let Some(mut c) = op.next().await else {
                self.op = None;
                continue;
            };
            match c.io_result() {
                Ok(_) => match c.take_fd() {
                    Some(fd) => return Ok(TcpStream::from_fd(fd)),
                    None => return Err(io::Error::other("accept completed without a descriptor")),
                },
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::ECONNABORTED | libc::EPERM | libc::EPROTO)) => {}
                Err(e) => {
                    self.op = None;
                    return Err(e);
                }
            }
        }
    }
}

/// A TCP connection owned by this shard.
#[derive(Debug)]
pub struct TcpStream {
    fd: Option<OwnedFd>,
    _shard: ShardBound,
}

fn owned(fd: RawFd) -> OwnedFd {
    #[allow(unsafe_code)]
    // SAFETY: the one caller (Pipe::new) passes descriptors pipe2 just created for us, which nothing else owns.
    unsafe {
        OwnedFd::from_raw_fd(fd)
    }
}

impl TcpStream {
    /// Wraps a connected, non-blocking socket.
    pub fn from_fd(fd: OwnedFd) -> TcpStream {
        TcpStream { fd: Some(fd), _shard: ShardBound::default() }
    }

    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = Socket::new(
            Domain::for_address(addr),
            Type::STREAM.nonblocking().cloexec(),
            Some(Protocol::TCP),
        )?;
        let stream = TcpStream::from_fd(socket.into());
        ops::connect(stream.raw_fd(), addr).await?;
        Ok(stream)
    }

    /// Connects to `addr` with `TCP_NODELAY`, every step in the ring where
    /// the kernel can (`IORING_OP_SOCKET`, the socket-option command, then
    /// the connect): no system call of its own per connection, the steps
    /// ride the shard's batched submissions. Falls back to the system calls
    /// for a step the kernel refuses, once and for all.
    pub async fn connect_nodelay(addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = TcpStream::from_fd(ring_socket(addr).await?);
        set_nodelay_in_ring(&stream).await?;
        ops::connect(stream.raw_fd(), addr).await?;
        Ok(stream)
    }

    /// [`TcpStream::connect_nodelay`], giving up with `TimedOut` after
    /// `timeout` (the pending step is cancelled and the socket closed).
    pub async fn connect_nodelay_timeout(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        timed(addr, timeout, TcpStream::connect_nodelay(addr)).await
    }

    /// Connects to `addr`, giving up with `TimedOut` after `timeout` (the
    /// pending connect is cancelled and the socket closed).
    pub async fn connect_timeout(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        timed(addr, timeout, TcpStream::connect(addr)).await
    }

    fn fd(&self) -> &OwnedFd {
        match &self.fd {
            Some(fd) => fd,
            None => unreachable!("the fd is only taken by into_fd or drop"),
        }
    }

    /// The raw descriptor (valid while `self` lives).
    pub fn raw_fd(&self) -> RawFd {
        self.fd().as_raw_fd()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        sock_addr(SockRef::from(self.fd()).peer_addr()?)
    }

    /// Our address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        sock_addr(SockRef::from(self.fd()).local_addr()?)
    }

    /// Disables Nagle's algorithm (on by default for request/response).
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        SockRef::from(self.fd()).set_tcp_nodelay(on)
    }

    /// Makes the close send a RST instead of a FIN (SO_LINGER 0): how a
    /// relay propagates a reset it received.
    pub fn set_reset_on_close(&self) -> io::Result<()> {
        SockRef::from(self.fd()).set_linger(Some(Duration::ZERO))
    }

    /// Receives into the spare capacity of `buf` (one call).
    pub async fn recv<B: IoBufMut>(&self, buf: B) -> (io::Result<usize>, B) {
        ops::recv(self.raw_fd(), buf).await
    }

    /// Received data as a stream of buffers picked from `group` by the
    /// kernel: one multishot receive, re-armed as needed.
    pub fn recv_stream(&self, group: &BufRing) -> RecvStream<'_> {
        self.receiving(group, Mode::Unbounded)
    }

    /// [`recv_stream`](Self::recv_stream) holding at most `limit` buffers
    /// of `group` that its owner has not taken yet: past that the reactor
    /// cancels the receive, and [`RecvStream::next`] re-arms it once the
    /// owner has caught up (see `shard::ops::recv_multi_bounded` for the
    /// kernel's share of the bound). [`RecvStream::stop`] ends it and hands
    /// back what it holds, for an owner about to wait on something else.
    ///
    /// Each arming also ends by itself after one buffer's worth of bytes
    /// where the kernel supports it (`shard::reactor::probe::recv_byte_limit`),
    /// so a flooding peer fills one buffer per arming, as a single-shot
    /// receive would. On kernels without that limit the stream receives
    /// single-shot ([`recv_provided`](Self::recv_provided)): at most one
    /// buffer, whatever the peer does.
    pub fn recv_bounded(&self, group: &BufRing, limit: usize) -> RecvStream<'_> {
        self.recv_bounded_on(group, limit, shard::reactor::probe::recv_byte_limit())
    }

    /// [`recv_bounded`](Self::recv_bounded) as on a kernel with
    /// (`byte_limit`) or without the multishot byte limit: the single-shot
    /// path older kernels take can be exercised on any kernel.
    pub fn recv_bounded_on(&self, group: &BufRing, limit: usize, byte_limit: bool) -> RecvStream<'_> {
        self.receiving(group, if byte_limit { Mode::Bounded(limit.max(1)) } else { Mode::SingleShot })
    }

    fn receiving(&self, group: &BufRing, mode: Mode) -> RecvStream<'_> {
        RecvStream { stream: self, group: group.clone(), op: None, starved: 0, mode, end: None }
    }

    /// Receives once into a buffer the kernel picks from `group` when data
    /// arrives; `Ok(None)` at end of stream. The connection holds no buffer
    /// while waiting and at most this one after: the bounded path for
    /// relays (see [`TcpStream::recv_stream`] for the unbounded multishot
    /// one). When the group is empty, waits for a buffer to come back.
    pub async fn recv_provided(&self, group: &BufRing) -> io::Result<Option<ProvidedBuf>> {
        loop {
            match ops::recv_select(self.raw_fd(), group).await {
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => group.available().await,
                r => return r,
            }
        }
    }

    /// Sends from `buf` (one call: may be partial).
    pub async fn send<B: IoBuf>(&self, buf: B) -> (io::Result<usize>, B) {
        ops::send(self.raw_fd(), buf).await
    }

    /// Sends what fits now, without waiting for room: `WouldBlock` when
    /// nothing fits (one call: may be partial).
    pub async fn try_send<B: IoBuf>(&self, buf: B) -> (io::Result<usize>, B) {
        ops::send_nowait(self.raw_fd(), buf).await
    }

    /// [`try_send`](Self::try_send) of a group buffer without a completion
    /// when all of it went out, where the kernel allows
    /// (`shard::ops::send_quiet`).
    pub fn send_quiet(&self, buf: ProvidedBuf) -> shard::reactor::QuietSend {
        ops::send_quiet(self.raw_fd(), buf)
    }

    /// Sends all of `buf`.
    pub async fn send_all<B: IoBuf>(&self, buf: B) -> (io::Result<()>, B) {
        send_all_with(self.raw_fd(), buf, false).await
    }

    /// Sends all of `buf` with zero-copy sends (worth it for large writes:
    /// the kernel pins the pages instead of copying them).
    pub async fn send_all_zc<B: IoBuf>(&self, buf: B) -> (io::Result<()>, B) {
        send_all_with(self.raw_fd(), buf, true).await
    }

    /// Half-closes: sends FIN, keeps receiving. Sends this stream made
    /// before are already complete (each is awaited), so the FIN follows
    /// them.
    ///
    /// A direct `shutdown(2)`, not the ring's: io_uring cannot issue a
    /// shutdown without blocking and hands every one to an io-wq worker
    /// thread, whose wake-ups took 6 % of the forward path's CPU per new
    /// connection (a `perf record` profile); the call itself only queues the
    /// FIN.
    pub async fn shutdown_write(&self) -> io::Result<()> {
        SockRef::from(self.fd()).shutdown(std::net::Shutdown::Write)
    }

    /// Gives up ownership of the descriptor.
    pub fn into_fd(mut self) -> OwnedFd {
        match self.fd.take() {
            Some(fd) => fd,
            None => unreachable!("the fd is only taken by into_fd or drop"),
        }
    }
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd().as_fd()
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            ops::close_later(fd);
        }
    }
}

fn sock_addr(a: socket2::SockAddr) -> io::Result<SocketAddr> {
    a.as_socket().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"))
}

async fn send_all_with<B: IoBuf>(fd: RawFd, buf: B, zero_copy: bool) -> (io::Result<()>, B) {
    let len = buf.bytes_init();
    let mut slice = Slice::new(buf, 0, len);
    loop {
        if slice.begin() >= len {
            return (Ok(()), slice.into_inner());
        }
        let (res, back) = if zero_copy { ops::send_zc(fd, slice).await } else { ops::send(fd, slice).await };
        match res {
            Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), back.into_inner()),
            Ok(n) => {
                let begin = back.begin() + n;
                slice = Slice::new(back.into_inner(), begin, len);
            }
            Err(e) => return (Err(e), back.into_inner()),
        }
    }
}

/// See [`TcpStream::recv_stream`].
#[derive(Debug)]
pub struct RecvStream<'a> {
    stream: &'a TcpStream,
    group: BufRing,
    op: Option<MultiOp<()>>,
    starved: u64,
    mode: Mode,
    /// How the stream ended while [`RecvStream::stop`] drained it: given
    /// out by the next [`RecvStream::next`].
    end: Option<io::Result<()>>,
}

/// How a [`RecvStream`] receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One multishot receive, as long as the kernel keeps it armed.
    Unbounded,
    /// Multishot, stopped at this many completions waiting and after one
    /// buffer's worth of bytes per arming.
    Bounded(usize),
    /// One single-shot receive per `next` (kernels without the byte limit).
    SingleShot,
}

/// One completion of the receive, as the stream sees it.
enum Step {
    Data(ProvidedBuf),
    /// End of stream (`Ok`) or a failure.
    End(io::Result<()>),
    /// The receive ended and may be re-armed (after `wait`ing for a buffer
    /// if the group ran dry).
    Rearm {
        dry: bool,
    },
}

impl RecvStream<'_> {
    /// The next received buffer; `Ok(None)` at end of stream (the peer
    /// half-closed). When the shard's buffers are all in use the receive
    /// waits for some to come back (backpressure) and counts it.
    pub async fn next(&mut self) -> io::Result<Option<ProvidedBuf>> {
        loop {
            if let Some(end) = self.end.take() {
                return end.map(|()| None);
            }
            let fd = self.stream.raw_fd();
            let (group, mode) = (&self.group, self.mode);
            let op = match mode {
                Mode::SingleShot => return self.stream.recv_provided(group).await,
                Mode::Unbounded => self.op.get_or_insert_with(|| ops::recv_multi(fd, group)),
                Mode::Bounded(hold) => self.op.get_or_insert_with(|| {
                    let bytes = u32::try_from(group.buf_size()).unwrap_or(u32::MAX);
                    ops::recv_multi_bounded(fd, group, hold, bytes)
                }),
            };
            let Some(c) = op.next().await else {
                self.op = None;
                continue;
            };
            let last = c.is_final();
            match step(c, op.stopped_at_limit()) {
                Step::Data(buf) => {
                    // The kernel ended the receive (at its byte limit, say):
                    // the next call arms another.
                    if last {
                        self.op = None;
                    }
                    return Ok(Some(buf));
                }
                Step::End(end) => {
                    self.op = None;
                    return end.map(|()| None);
                }
                Step::Rearm { dry } => {
                    self.op = None;
                    if dry {
                        self.starved += 1;
                        match self.mode {
                            Mode::Unbounded => shard::yield_now().await,
                            _ => self.group.available().await,
                        }
                    }
                }
            }
        }
    }

    /// Ends the receive and returns the buffers it took that the owner
    /// has not, in order: afterwards the stream holds nothing until the
    /// next [`next`](Self::next) re-arms it (or reports the end of stream
    /// or error the drain ran into). Waits for the kernel to confirm the
    /// end, one ring turn.
    pub async fn stop(&mut self) -> Vec<ProvidedBuf> {
        let mut held = Vec::new();
        let Some(mut op) = self.op.take() else {
            return held;
        };
        if let Err(e) = op.cancel() {
            // The ring refused the cancel (its enter failed): waiting for an
            // end that may never come could collect without bound, so the
            // stream ends in that error and drops the receive instead.
            self.end = Some(Err(e));
            return held;
        }
        while let Some(c) = op.next().await {
            match step(c, true) {
                Step::Data(buf) => held.push(buf),
                Step::End(end) => {
                    self.end.get_or_insert(end);
                }
                // Our own cancel's final completion, or the group ran dry.
                Step::Rearm { .. } => {}
            }
        }
        held
    }

    /// Whether a receive is armed and may still deliver data: false
    /// before the first [`next`](Self::next), after [`stop`](Self::stop),
    /// and once the receive's final completion was taken (the kernel ended
    /// it, at its byte limit say), until `next` arms the next one.
    pub fn is_armed(&self) -> bool {
        self.op.is_some()
    }

    /// Whether the stream receives with a multishot receive (armed once),
    /// whose [`next`](Self::next) may be dropped while it waits without
    /// losing data; a single-shot receive dropped in flight may have taken
    /// bytes nobody will see.
    pub fn is_multishot(&self) -> bool {
        self.mode != Mode::SingleShot
    }

    /// Times the receive found the buffer group empty.
    pub fn starved(&self) -> u64 {
        self.starved
    }
}

/// Classifies one completion; `cancelled`: a final `ECANCELED` is a cancel
/// the stream expects (the reactor's at the hold limit, or [`RecvStream::stop`]).
fn step(c: shard::reactor::Completion, cancelled: bool) -> Step {
    match c.result {
        0 => Step::End(Ok(())),
        n if n > 0 => match c.buf {
            Some(buf) => Step::Data(buf),
            None => Step::End(Err(io::Error::other("receive completed without a buffer"))),
        },
        // Final: the receive ended because every buffer is out. Let their
        // holders run, then re-arm.
        e if e == -libc::ENOBUFS => Step::Rearm { dry: true },
        // Final: the owner has taken everything queued before it.
        e if e == -libc::ECANCELED && cancelled => Step::Rearm { dry: false },
        e => Step::End(Err(io::Error::from_raw_os_error(-e))),
    }
}

/// A kernel pipe, the intermediate buffer of a splice relay: bytes move
/// socket -> pipe -> socket without entering user space.
///
/// Measured (`cargo bench -p netstack --bench relay`): 0.54-0.93x of
/// `std::io::copy` on loopback, because io_uring cannot run a splice
/// inline and hands each one to a worker thread. Receiving into a
/// provided-buffer ring and sending that buffer back out is the faster
/// bulk relay (1.04-1.37x `std::io::copy`); splice is kept for comparison
/// and for kernels where it wins.
#[derive(Debug)]
pub struct Pipe {
    rd: OwnedFd,
    wr: OwnedFd,
    capacity: usize,
}

impl Pipe {
    /// A pipe of about `capacity` bytes (rounded by the kernel to pages,
    /// capped by `/proc/sys/fs/pipe-max-size`).
    pub fn new(capacity: usize) -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        #[allow(unsafe_code)]
        // SAFETY: `fds` is a valid two-element array for pipe2 to fill.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let (rd, wr) = (owned(fds[0]), owned(fds[1]));
        #[allow(unsafe_code)]
        // SAFETY: fcntl on a descriptor we own; F_SETPIPE_SZ takes an int.
        let got = unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, capacity as libc::c_int) };
        let capacity = if got > 0 { got as usize } else { 65536 };
        Ok(Pipe { rd, wr, capacity })
    }

    /// The pipe's capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Moves up to one pipe-full from `from` to `to` through the pipe.
    /// Returns the bytes moved; 0 means `from` reached end of stream.
    pub async fn splice(&self, from: &TcpStream, to: &TcpStream) -> io::Result<usize> {
        let n = splice_when_ready(from.raw_fd(), libc::POLLIN, self.wr.as_raw_fd(), self.capacity).await?;
        let mut left = n;
        while left > 0 {
            let m = splice_when_ready(self.rd.as_raw_fd(), 0, to.raw_fd(), left).await?;
            if m == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            left -= m;
        }
        Ok(n)
    }
}

/// Splices up to `len` bytes, waiting for readiness when the kernel says
/// EAGAIN: io_uring cannot arm a poll for splice itself. `wait_in` is the
/// event to wait for on `from` (0: the source is our pipe, so it is `to`
/// that must become writable).
async fn splice_when_ready(from: RawFd, wait_in: i16, to: RawFd, len: usize) -> io::Result<usize> {
    loop {
        match ops::splice(from, to, len.min(u32::MAX as usize) as u32).await {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                if wait_in != 0 {
                    ops::poll_ready(from, wait_in).await?;
                } else {
                    ops::poll_ready(to, libc::POLLOUT).await?;
                }
            }
            r => return r,
        }
    }
}

/// `connect` bounded by `timeout`.
async fn timed(
    addr: SocketAddr,
    timeout: Duration,
    connect: impl std::future::Future<Output = io::Result<TcpStream>>,
) -> io::Result<TcpStream> {
    match shard::time::timeout(timeout, connect).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect to {addr}: timed out after {timeout:?}"),
        )),
    }
}

/// Set once the kernel refused a ring step: later connections make the
/// system call instead.
static NO_RING_SOCKET: AtomicBool = AtomicBool::new(false);
static NO_RING_SOCKOPT: AtomicBool = AtomicBool::new(false);

/// Whether `e` says the kernel has no such ring operation.
fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP))
}

/// A non-blocking, close-on-exec TCP socket for `addr`'s family.
async fn ring_socket(addr: SocketAddr) -> io::Result<OwnedFd> {
    let domain = Domain::for_address(addr);
    if !NO_RING_SOCKET.load(Relaxed) {
        let ty = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        match ops::socket(domain.into(), ty, libc::IPPROTO_TCP).await {
            Err(e) if unsupported(&e) => NO_RING_SOCKET.store(true, Relaxed),
            other => return other,
        }
    }
    Ok(Socket::new(domain, Type::STREAM.nonblocking().cloexec(), Some(Protocol::TCP))?.into())
}

/// `TCP_NODELAY` on `stream`.
async fn set_nodelay_in_ring(stream: &TcpStream) -> io::Result<()> {
    if !NO_RING_SOCKOPT.load(Relaxed) {
        match ops::setsockopt_int(stream.raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1).await {
            Err(e) if unsupported(&e) => NO_RING_SOCKOPT.store(true, Relaxed),
            other => return other,
        }
    }
    stream.set_nodelay(true)
}
