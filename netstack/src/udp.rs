//! UDP on the shard's io_uring.
//!
//! The fast path is [`UdpSocket::recv_stream`]: one multishot `recvmsg`
//! into a provided-buffer ring, one completion per datagram with its source
//! address, no system call per datagram and no buffer held while idle.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use shard::ops::{self, IoBuf, IoBufMut, RecvMsgOut};
use shard::reactor::{BufRing, Completion, MultiOp, ProvidedBuf};

/// A UDP socket of this shard (one of a `SO_REUSEPORT` group when bound
/// with [`UdpSocket::bind`]).
#[derive(Debug)]
pub struct UdpSocket {
    fd: Option<OwnedFd>,
    local: SocketAddr,
    _shard: crate::ShardBound,
}

impl UdpSocket {
    /// Binds `addr` in a `SO_REUSEPORT` group.
    pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
        UdpSocket::from_fd(crate::listener::udp_reuseport(addr)?)
    }

    /// A socket on an ephemeral port, connected to `peer`: what a relay
    /// uses to talk to one upstream for one client session.
    pub fn connected(peer: SocketAddr) -> io::Result<UdpSocket> {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::for_address(peer), Type::DGRAM.nonblocking().cloexec(), None)?;
        let any: SocketAddr = match peer {
            SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        s.bind(&any.into())?;
        s.connect(&peer.into())?;
        UdpSocket::from_fd(s.into())
    }

    /// Wraps a bound, non-blocking datagram socket.
    pub fn from_fd(fd: OwnedFd) -> io::Result<UdpSocket> {
        let local = crate::listener::local_addr(&fd)?;
        Ok(UdpSocket { fd: Some(fd), local, _shard: crate::ShardBound::default() })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The raw descriptor (valid while `self` lives).
    pub fn raw_fd(&self) -> RawFd {
        self.fd().as_raw_fd()
    }

    fn fd(&self) -> &OwnedFd {
        match &self.fd {
            Some(fd) => fd,
            None => unreachable!("the fd is only taken by drop"),
        }
    }

    /// Receives one datagram into the spare capacity of `buf`.
    pub async fn recv_from<B: IoBufMut>(&self, buf: B) -> (io::Result<(usize, Option<SocketAddr>)>, B) {
        ops::recvmsg(self.raw_fd(), buf).await
    }

    /// Sends `buf` as one datagram to `to`.
    pub async fn send_to<B: IoBuf>(&self, buf: B, to: SocketAddr) -> (io::Result<usize>, B) {
        ops::sendmsg(self.raw_fd(), buf, Some(to)).await
    }

    /// Datagrams as a stream of buffers picked from `group`.
    pub fn recv_stream(&self, group: &BufRing) -> DatagramStream<'_> {
        DatagramStream { socket: self, rx: DatagramReceiver::new(group) }
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd().as_fd()
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            ops::close_later(fd);
        }
    }
}

/// A received datagram: the kernel-filled buffer and where its payload is.
/// Dropping it returns the buffer to its ring.
#[derive(Debug)]
pub struct Datagram {
    buf: ProvidedBuf,
    source: Option<SocketAddr>,
    len: usize,
    truncated: bool,
}

impl Datagram {
    fn decode(buf: ProvidedBuf) -> io::Result<Datagram> {
        let (source, len, truncated) = match RecvMsgOut::parse(&buf) {
            Some(m) => (m.source, m.payload.len(), m.truncated),
            None => return Err(io::Error::other("datagram buffer shorter than its header")),
        };
        Ok(Datagram { buf, source, len, truncated })
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        let start = RecvMsgOut::PAYLOAD_OFFSET.min(self.buf.len());
        let end = (start + self.len).min(self.buf.len());
        &self.buf[start..end]
    }

    /// The sender's address.
    pub fn source(&self) -> Option<SocketAddr> {
        self.source
    }

    /// The datagram was larger than the buffer and was cut (MSG_TRUNC).
    pub fn truncated(&self) -> bool {
        self.truncated
    }
}

impl AsRef<[u8]> for Datagram {
    fn as_ref(&self) -> &[u8] {
        self.payload()
    }
}

/// See [`UdpSocket::recv_stream`].
#[derive(Debug)]
pub struct DatagramStream<'a> {
    socket: &'a UdpSocket,
    rx: DatagramReceiver,
}

impl DatagramStream<'_> {
    /// Waits for the next datagram.
    pub async fn next(&mut self) -> io::Result<Datagram> {
        self.rx.next(self.socket).await
    }

    /// The next datagram if one has already arrived, without waiting.
    pub fn try_next(&mut self) -> io::Result<Option<Datagram>> {
        self.rx.try_next(self.socket)
    }

    /// Times the receive found the buffer group empty.
    pub fn starved(&self) -> u64 {
        self.rx.starved()
    }
}

/// The state of a multishot datagram receive, kept apart from the socket
/// so an owner can hold both (see `backend::KernelUdp`). Each call names
/// the socket; the receive is re-armed if it changes.
#[derive(Debug)]
pub struct DatagramReceiver {
    group: BufRing,
    op: Option<(RawFd, MultiOp<Box<libc::msghdr>>)>,
    starved: u64,
}

impl DatagramReceiver {
    /// Receives into buffers from `group`.
    pub fn new(group: &BufRing) -> DatagramReceiver {
        DatagramReceiver { group: group.clone(), op: None, starved: 0 }
    }

    fn arm(&mut self, socket: &UdpSocket) -> &mut MultiOp<Box<libc::msghdr>> {
        let fd = socket.raw_fd();
        if self.op.as_ref().is_some_and(|(armed, _)| *armed != fd) {
            self.op = None;
        }
        let group = &self.group;
        &mut self.op.get_or_insert_with(|| (fd, ops::recvmsg_multi(fd, group))).1
    }

    /// Waits for the next datagram on `socket`.
    pub async fn next(&mut self, socket: &UdpSocket) -> io::Result<Datagram> {
        loop {
            let Some(c) = self.arm(socket).next().await else {
                self.op = None;
                continue;
            };
            if let Some(d) = self.accept(c).await? {
                return Ok(d);
            }
        }
    }

    /// The next datagram on `socket` if one has already arrived.
    pub fn try_next(&mut self, socket: &UdpSocket) -> io::Result<Option<Datagram>> {
        match &self.op {
            Some((fd, _)) if *fd == socket.raw_fd() => {}
            _ => return Ok(None),
        }
        let Some((_, op)) = self.op.as_mut() else { return Ok(None) };
        match op.try_next() {
            Some(c) if c.result > 0 => match c.buf {
                Some(buf) => Datagram::decode(buf).map(Some),
                None => Err(io::Error::other("receive completed without a buffer")),
            },
            Some(c) => {
                // An error or the end of the multishot: dropping the op now
                // lets `next` re-arm.
                self.op = None;
                if c.result == -libc::ENOBUFS {
                    self.starved += 1;
                } else if c.result < 0 {
                    return Err(io::Error::from_raw_os_error(-c.result));
                }
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn accept(&mut self, c: Completion) -> io::Result<Option<Datagram>> {
        match c.result {
            n if n > 0 => match c.buf {
                Some(buf) => Datagram::decode(buf).map(Some),
                None => Err(io::Error::other("receive completed without a buffer")),
            },
            e if e == -libc::ENOBUFS => {
                // Every buffer is out: whoever holds them must run first.
                self.op = None;
                self.starved += 1;
                shard::yield_now().await;
                Ok(None)
            }
            0 => Ok(None),
            e => {
                self.op = None;
                Err(io::Error::from_raw_os_error(-e))
            }
        }
    }

    /// Times the receive found the buffer group empty.
    pub fn starved(&self) -> u64 {
        self.starved
    }
}
