//! Passing descriptors between processes: `SCM_RIGHTS` over a Unix
//! `SOCK_SEQPACKET` socket, one message (bytes plus up to [`MAX_FDS`]
//! descriptors) per packet. This is how a new appliance process takes the
//! running one's listening sockets on a binary upgrade: the sockets (and
//! the connections waiting in their backlogs) stay open across the hand-off,
//! so no client is refused.
//!
//! `SOCK_SEQPACKET` keeps message boundaries, so descriptors always arrive
//! with the bytes they were sent with (on a stream socket the kernel may
//! split or join the bytes around them). Received descriptors are
//! close-on-exec (`MSG_CMSG_CLOEXEC`). The only unsafe code of the module
//! is building and reading the control message.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

/// Descriptors per message at most (the kernel's `SCM_MAX_FD` is 253).
pub const MAX_FDS: usize = 250;

/// The largest message [`recv`] accepts, bytes.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// A listening `SOCK_SEQPACKET` socket at `path` (close-on-exec), its file
/// mode `0600` so only this user (and root) can connect.
pub fn listen(path: &Path) -> io::Result<Socket> {
    let socket = Socket::new(Domain::UNIX, Type::SEQPACKET.cloexec(), None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    socket.listen(4)?;
    Ok(socket)
}

/// A `SOCK_SEQPACKET` connection to `path` whose every send and receive
/// gives up after `timeout` (`WouldBlock`/`TimedOut`).
pub fn connect(path: &Path, timeout: Duration) -> io::Result<Socket> {
    let socket = Socket::new(Domain::UNIX, Type::SEQPACKET.cloexec(), None)?;
    socket.connect(&SockAddr::unix(path)?)?;
    bound_in_time(&socket, timeout)?;
    Ok(socket)
}

/// Bounds every later send and receive on `socket` by `timeout`.
pub fn bound_in_time(socket: &Socket, timeout: Duration) -> io::Result<()> {
    socket.set_read_timeout(Some(timeout))?;
    socket.set_write_timeout(Some(timeout))
}

/// Sends one message: `bytes` (not empty) with `fds` (at most [`MAX_FDS`]).
pub fn send(socket: &Socket, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if bytes.is_empty() || fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a message is 1 byte or more, and 250 fds at most",
        ));
    }
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let payload = mem::size_of_val(raw.as_slice());
    // SAFETY: CMSG_SPACE only computes a size from its argument.
    let space = unsafe { libc::CMSG_SPACE(payload as libc::c_uint) } as usize;
    // u64 words: the buffer is aligned for `cmsghdr`.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec { iov_base: bytes.as_ptr().cast_mut().cast(), iov_len: bytes.len() };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !raw.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: `msg_control` points to `space` writable, aligned bytes, room for one header: CMSG_FIRSTHDR returns a pointer into them.
        let header = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        // SAFETY: `header` points to the first header of the zeroed control buffer, which has room for it (it is not null).
        let header = unsafe { &mut *header };
        header.cmsg_level = libc::SOL_SOCKET;
        header.cmsg_type = libc::SCM_RIGHTS;
        // SAFETY: CMSG_LEN only computes a size.
        header.cmsg_len = unsafe { libc::CMSG_LEN(payload as libc::c_uint) } as _;
        // SAFETY: CMSG_DATA points just past the header, into the buffer.
        let data = unsafe { libc::CMSG_DATA(header) };
        // SAFETY: the buffer was sized by CMSG_SPACE(payload), so `payload` bytes fit after the header; `raw` is a live slice of that many bytes and the regions cannot overlap (one is ours, freshly allocated).
        unsafe { std::ptr::copy_nonoverlapping(raw.as_ptr().cast::<u8>(), data, payload) };
    }
    // SAFETY: `msg` points to the iovec over `bytes` and to `control`, all alive for the call; the kernel only reads them. Descriptors in `fds` are borrowed, so open.
    let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    match sent {
        n if n < 0 => Err(io::Error::last_os_error()),
        n if n as usize != bytes.len() => Err(io::Error::new(io::ErrorKind::WriteZero, "message cut short")),
        _ => Ok(()),
    }
}

/// Receives one message: its bytes and descriptors. `Ok(None)` when the
/// peer has closed. A message longer than [`MAX_MESSAGE`], or whose
/// descriptors did not all fit, is an error (the descriptors that arrived
/// are closed).
pub fn recv(socket: &Socket) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut bytes = vec![0u8; MAX_MESSAGE];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS * mem::size_of::<RawFd>()) as libc::c_uint) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec { iov_base: bytes.as_mut_ptr().cast(), iov_len: bytes.len() };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points to `bytes` and `control`, both writable and alive for the call, with their true lengths.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let fds = take_fds(&msg);
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "message or its descriptors cut short"));
    }
    bytes.truncate(n as usize);
    Ok(Some((bytes, fds)))
}

/// The descriptors of every `SCM_RIGHTS` header of a received message,
/// owned (so closed if the caller drops them).
fn take_fds(msg: &libc::msghdr) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    // SAFETY: `msg` was filled by recvmsg; CMSG_FIRSTHDR reads its control fields.
    let mut header = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !header.is_null() {
        // SAFETY: a non-null header from CMSG_FIRSTHDR/NXTHDR lies within the control buffer the kernel filled.
        let h = unsafe { &*header };
        if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN only computes a size.
            let head = unsafe { libc::CMSG_LEN(0) } as usize;
            let count = (h.cmsg_len as usize).saturating_sub(head) / mem::size_of::<RawFd>();
            // SAFETY: the header's data follows it within the buffer.
            let data = unsafe { libc::CMSG_DATA(header) };
            for i in 0..count {
                let at = data.cast::<RawFd>().wrapping_add(i);
                // SAFETY: `count` ints of data follow the header (its `cmsg_len` says so), so `at` is in the buffer; they may be unaligned, hence read_unaligned.
                let raw = unsafe { at.read_unaligned() };
                // SAFETY: SCM_RIGHTS installed a new descriptor with this number in our table, owned by nobody else yet.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        // SAFETY: `header` is a valid header within `msg`'s control buffer.
        header = unsafe { libc::CMSG_NXTHDR(msg, header) };
    }
    fds
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    fn pair() -> (Socket, Socket) {
        Socket::pair(Domain::UNIX, Type::SEQPACKET.cloexec(), None).expect("socketpair")
    }

    #[test]
    fn descriptors_arrive_with_their_message_and_work() {
        let (a, b) = pair();
        let (mut mine, theirs) = UnixStream::pair().expect("pair");
        send(&a, b"one", &[theirs.as_fd()]).expect("send");
        send(&a, b"two", &[]).expect("send");
        drop(theirs);
        let (bytes, mut fds) = recv(&b).expect("recv").expect("a message");
        assert_eq!((bytes.as_slice(), fds.len()), (&b"one"[..], 1));
        let mut passed = UnixStream::from(fds.pop().expect("fd"));
        passed.write_all(b"hi").expect("write");
        let mut got = [0u8; 2];
        mine.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"hi", "the received descriptor is the same socket");
        let (bytes, fds) = recv(&b).expect("recv").expect("a message");
        assert_eq!((bytes.as_slice(), fds.len()), (&b"two"[..], 0));
        drop(a);
        assert!(recv(&b).expect("recv").is_none(), "closed");
    }

    #[test]
    fn many_descriptors_in_one_message() {
        let (a, b) = pair();
        let sockets: Vec<UnixStream> = (0..MAX_FDS / 2)
            .flat_map(|_| {
                let (x, y) = UnixStream::pair().expect("pair");
                [x, y]
            })
            .collect();
        let fds: Vec<BorrowedFd<'_>> = sockets.iter().map(|s| s.as_fd()).collect();
        send(&a, b"m", &fds).expect("send");
        let (_, got) = recv(&b).expect("recv").expect("message");
        assert_eq!(got.len(), fds.len());
        let err = send(&a, b"m", &[fds[0]; MAX_FDS + 1]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn receive_is_bounded_in_time() {
        let (_a, b) = pair();
        bound_in_time(&b, Duration::from_millis(50)).expect("timeout");
        let err = recv(&b).unwrap_err();
        assert!(matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut), "{err}");
    }
}
