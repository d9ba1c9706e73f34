//! Sockets and buffers bound to the shard that made them are `!Send`: a
//! socket's operations and its close go through its shard's ring, a pool
//! buffer's pool is an `Rc` of its shard. These assertions fail to compile
//! if one of them becomes `Send`. `SendBuf` is the one handle built to
//! travel, and stays `Send`.

use static_assertions::{assert_impl_all, assert_not_impl_any};

use netstack::buf::{BufPool, PoolBuf, SendBuf};
use netstack::tcp::{Incoming, RecvStream, TcpListener, TcpStream};
use netstack::udp::{DatagramReceiver, DatagramStream, UdpSocket};

assert_not_impl_any!(TcpListener: Send, Sync);
assert_not_impl_any!(TcpStream: Send, Sync);
assert_not_impl_any!(Incoming<'static>: Send, Sync);
assert_not_impl_any!(RecvStream<'static>: Send, Sync);
assert_not_impl_any!(UdpSocket: Send, Sync);
assert_not_impl_any!(DatagramStream<'static>: Send, Sync);
assert_not_impl_any!(DatagramReceiver: Send, Sync);
assert_not_impl_any!(BufPool: Send, Sync);
assert_not_impl_any!(PoolBuf: Send, Sync);
assert_impl_all!(SendBuf: Send);
