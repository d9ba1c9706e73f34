//! Sockets bound to the shard that made them are `!Send`: a socket's
//! operations and its close go through its shard's ring. These assertions
//! fail to compile if one of them becomes `Send`.

use static_assertions::assert_not_impl_any;

use netstack::tcp::{Incoming, RecvStream, TcpListener, TcpStream};
use netstack::udp::{DatagramReceiver, DatagramStream, UdpSocket};

assert_not_impl_any!(TcpListener: Send, Sync);
assert_not_impl_any!(TcpStream: Send, Sync);
assert_not_impl_any!(Incoming<'static>: Send, Sync);
assert_not_impl_any!(RecvStream<'static>: Send, Sync);
assert_not_impl_any!(UdpSocket: Send, Sync);
assert_not_impl_any!(DatagramStream<'static>: Send, Sync);
assert_not_impl_any!(DatagramReceiver: Send, Sync);
