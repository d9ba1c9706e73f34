//! Helpers shared by the shard's integration tests.

use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;

/// A connected loopback pair: the std end for a thread of the test, the
/// other for a shard.
pub fn pair() -> (TcpStream, OwnedFd) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let peer = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    peer.set_nodelay(true).expect("nodelay");
    let (ours, _) = listener.accept().expect("accept");
    (peer, ours.into())
}
