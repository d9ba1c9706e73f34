//! Socket figures `socket2` does not read: the kernel's count of packets a
//! socket dropped (`SO_MEMINFO`, `SK_MEMINFO_DROPS`: a datagram that found
//! the receive buffer full, among others). The only unsafe code of the
//! module is the `getsockopt` call.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// `SO_MEMINFO` (include/uapi/asm-generic/socket.h; sparc numbers it apart).
#[cfg(not(any(target_arch = "sparc", target_arch = "sparc64")))]
const SO_MEMINFO: libc::c_int = 55;
#[cfg(any(target_arch = "sparc", target_arch = "sparc64"))]
const SO_MEMINFO: libc::c_int = 0x0039;
/// The entries of `SO_MEMINFO` (`SK_MEMINFO_VARS`) and the one counting drops.
const SK_MEMINFO_VARS: usize = 9;
const SK_MEMINFO_DROPS: usize = 8;

/// Packets the kernel dropped on this socket since it was created (a
/// 32-bit counter in the kernel: it wraps after 2^32).
pub fn receive_drops(socket: &impl AsFd) -> io::Result<u64> {
    let mut info = [0u32; SK_MEMINFO_VARS];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    let fd = socket.as_fd().as_raw_fd();
    let out = info.as_mut_ptr().cast();
    // SAFETY: `fd` is a live descriptor for the borrow; `out` is `info`, a writable buffer of `len` bytes, which the kernel fills (at most `len`) and for which it updates `len`.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, SO_MEMINFO, out, &mut len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if (len as usize) <= SK_MEMINFO_DROPS * std::mem::size_of::<u32>() {
        return Err(io::Error::new(io::ErrorKind::Unsupported, "SO_MEMINFO without the drop count"));
    }
    Ok(u64::from(info[SK_MEMINFO_DROPS]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    /// Datagrams sent to a socket nobody reads, with a small buffer: what
    /// it holds plus what the kernel counts as dropped is what was sent.
    #[test]
    fn drops_are_what_did_not_fit() {
        let rx = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).expect("socket");
        rx.set_recv_buffer_size(4096).expect("rcvbuf");
        rx.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().expect("addr").into()).expect("bind");
        let rx: UdpSocket = rx.into();
        let to = rx.local_addr().expect("addr");
        assert_eq!(receive_drops(&rx).expect("drops"), 0);
        let tx = UdpSocket::bind("127.0.0.1:0").expect("sender");
        let sent = 500;
        for _ in 0..sent {
            tx.send_to(&[7u8; 200], to).expect("send");
        }
        rx.set_nonblocking(true).expect("nonblocking");
        let mut held = 0;
        let mut buf = [0u8; 512];
        while rx.recv(&mut buf).is_ok() {
            held += 1;
        }
        let dropped = receive_drops(&rx).expect("drops");
        assert!(dropped > 0, "a 4 KiB buffer cannot hold 500 datagrams");
        assert_eq!(held + dropped, sent);
    }
}
