//! Unix sockets for local clients (DogStatsD over UDS, as the Datadog
//! agent takes it): binding over a stale socket file, receiving datagrams
//! with the sender's credentials (`SO_PASSCRED`, `SCM_CREDENTIALS`), and a
//! stream connection's peer (`SO_PEERCRED`), so a service can tell which
//! process sent what. The only unsafe code of the module is `recvmsg` with
//! its control message and `getsockopt`.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use socket2::{Domain, SockAddr, Socket, Type};

/// Who sent a datagram (as the kernel vouches for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Creds {
    /// Process id.
    pub pid: u32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// The sysctl that caps a Unix datagram socket's receive queue, as a file.
pub const MAX_DGRAM_QLEN_SYSCTL: &str = "/proc/sys/net/unix/max_dgram_qlen";

/// `net.unix.max_dgram_qlen`: how many datagrams a Unix datagram socket
/// queues before its senders block (or, sending without blocking, fail
/// with `EAGAIN`). `None` when it cannot be read here.
pub fn max_dgram_qlen() -> Option<u64> {
    std::fs::read_to_string(MAX_DGRAM_QLEN_SYSCTL).ok()?.trim().parse().ok()
}

/// A non-blocking Unix datagram socket bound at `path`, mode `mode`, with
/// `SO_PASSCRED` when `creds`. A socket file left by a process that is gone
/// is replaced; one a live process still receives on is an error.
pub fn bind_dgram(path: &Path, mode: u32, creds: bool) -> io::Result<OwnedFd> {
    replace_stale(path, Type::DGRAM, "receives on")?;
    let socket = Socket::new(Domain::UNIX, Type::DGRAM.nonblocking().cloexec(), None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    if creds {
        socket.set_passcred(true)?;
    }
    Ok(socket.into())
}

/// A non-blocking listening Unix stream socket at `path`, mode `mode`, a
/// stale file replaced as [`bind_dgram`] does.
pub fn bind_stream(path: &Path, mode: u32) -> io::Result<OwnedFd> {
    replace_stale(path, Type::STREAM, "listens on")?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM.nonblocking().cloexec(), None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Accepts a connection without waiting (non-blocking, close-on-exec);
/// `WouldBlock` when none is queued.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let (conn, _) = socket2::SockRef::from(&listener).accept()?;
    conn.set_nonblocking(true)?;
    Ok(conn.into())
}

/// The process at the other end of a connected Unix socket
/// (`SO_PEERCRED`), as it was when it connected.
pub fn peer_creds(fd: BorrowedFd<'_>) -> io::Result<Creds> {
    // SAFETY: ucred is plain data; all-zero is a valid value.
    let mut c: libc::ucred = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `fd` is live for the borrow; `c` is a writable ucred of `len` bytes, which the kernel fills.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut c as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Creds { pid: c.pid as u32, uid: c.uid, gid: c.gid })
}

/// Removes a socket file at `path` no process `does` any more (a connect
/// of type `ty` is refused, or it is not a socket); one a live process
/// still uses is `AddrInUse`.
fn replace_stale(path: &Path, ty: Type, does: &str) -> io::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let probe = Socket::new(Domain::UNIX, ty.cloexec(), None)?;
    match probe.connect(&SockAddr::unix(path)?) {
        Ok(()) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{}: another process {does} this socket", path.display()),
        )),
        Err(_) => std::fs::remove_file(path),
    }
}

/// Receives one datagram into `buf` without waiting: its length, whether it
/// was cut to fit, and the sender's credentials when `SO_PASSCRED` is on.
/// `WouldBlock` when none is queued.
pub fn recv_creds(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, bool, Option<Creds>)> {
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(mem::size_of::<libc::ucred>() as libc::c_uint) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points to `buf` and `control`, both writable and alive for the call, with their true lengths.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let truncated = msg.msg_flags & libc::MSG_TRUNC != 0;
    Ok((n as usize, truncated, creds_of(&msg)))
}

fn creds_of(msg: &libc::msghdr) -> Option<Creds> {
    // SAFETY: `msg` was filled by recvmsg; CMSG_FIRSTHDR reads its control fields.
    let mut header = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !header.is_null() {
        // SAFETY: a non-null header from CMSG_FIRSTHDR/NXTHDR lies within the control buffer the kernel filled.
        let h = unsafe { &*header };
        if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_CREDENTIALS {
            // SAFETY: the header's data follows it within the buffer.
            let data = unsafe { libc::CMSG_DATA(header) };
            // SAFETY: an SCM_CREDENTIALS message carries one `ucred` after its header; it may be unaligned.
            let c = unsafe { data.cast::<libc::ucred>().read_unaligned() };
            return Some(Creds { pid: c.pid as u32, uid: c.uid, gid: c.gid });
        }
        // SAFETY: `header` is a valid header within `msg`'s control buffer.
        header = unsafe { libc::CMSG_NXTHDR(msg, header) };
    }
    None
}

/// Waits until `fd` has a datagram (through the shard's ring).
pub async fn readable(fd: &impl AsFd) -> io::Result<()> {
    shard::ops::poll_ready(fd.as_fd().as_raw_fd(), libc::POLLIN).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn credentials_come_with_each_datagram_and_stale_files_go() {
        let dir = std::env::temp_dir().join(format!("netstack-unix-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("dsd.socket");
        std::fs::write(&path, b"stale").expect("stale file");
        let fd = bind_dgram(&path, 0o722, true).expect("bind over a stale file");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o722);
        assert_eq!(bind_dgram(&path, 0o722, true).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        let mut buf = [0u8; 64];
        assert_eq!(recv_creds(fd.as_fd(), &mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        let tx = UnixDatagram::unbound().expect("client");
        tx.send_to(b"a.b:1|c", &path).expect("send");
        let (n, cut, creds) = recv_creds(fd.as_fd(), &mut buf).expect("recv");
        assert_eq!((&buf[..n], cut), (&b"a.b:1|c"[..], false));
        assert_eq!(creds.map(|c| c.pid), Some(std::process::id()));
        tx.send_to(&[b'x'; 100], &path).expect("send");
        let (n, cut, _) = recv_creds(fd.as_fd(), &mut buf).expect("recv");
        assert_eq!((n, cut), (64, true));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn stream_sockets_know_their_peer() {
        let dir = std::env::temp_dir().join(format!("netstack-unix-stream-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("dsd.stream");
        let listener = bind_stream(&path, 0o722).expect("bind");
        assert_eq!(accept(listener.as_fd()).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        let _client = std::os::unix::net::UnixStream::connect(&path).expect("connect");
        let conn = accept(listener.as_fd()).expect("accept");
        assert_eq!(peer_creds(conn.as_fd()).expect("creds").pid, std::process::id());
        assert_eq!(bind_stream(&path, 0o722).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
