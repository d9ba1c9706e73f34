//! Per-shard listening sockets in one `SO_REUSEPORT` group.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use crate::steer::{self, ListenOptions};

/// A TCP listener bound with `SO_REUSEPORT` (and `SO_REUSEADDR`), so one can
/// be opened per shard on the same address. Non-blocking, close-on-exec.
/// (A whole group at once, with more options and steering: [`crate::steer`].)
pub fn tcp_reuseport(addr: SocketAddr, backlog: i32) -> io::Result<OwnedFd> {
    let opts = ListenOptions { backlog, ..ListenOptions::default() };
    one(steer::bind_group(addr, 1, &opts)?)
}

/// A UDP socket bound with `SO_REUSEPORT`, one per shard.
pub fn udp_reuseport(addr: SocketAddr) -> io::Result<OwnedFd> {
    one(steer::bind_udp_group(addr, 1, &ListenOptions::default())?)
}

fn one(mut fds: Vec<OwnedFd>) -> io::Result<OwnedFd> {
    fds.pop().ok_or_else(|| io::Error::other("no socket bound"))
}

/// The address a socket is bound to (to learn an ephemeral port).
pub fn local_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    steer::local_addr(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn two_listeners_share_a_port() {
        let a = tcp_reuseport("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = local_addr(&a).unwrap();
        let b = tcp_reuseport(addr, 16).unwrap();
        assert_eq!(local_addr(&b).unwrap(), addr);
        assert!(a.as_raw_fd() != b.as_raw_fd());
    }

    #[test]
    fn udp_sockets_share_a_port() {
        let a = udp_reuseport("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = local_addr(&a).unwrap();
        let b = udp_reuseport(addr).unwrap();
        assert_eq!(local_addr(&b).unwrap(), addr);
    }
}
