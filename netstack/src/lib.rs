//! `netstack`: the appliance's I/O layer on the `shard` runtime.
//!
//! - [`listener`]: per-shard sockets in one `SO_REUSEPORT` group, so the
//!   kernel hands each connection (or datagram flow) to exactly one shard
//!   and no shard is woken for work another will take.
//! - [`tcp`]: a listener with multishot accept and streams with
//!   owned-buffer I/O (receive through provided-buffer rings, so an idle
//!   connection holds no buffer), half-close, reset, zero-copy send, and a
//!   splice relay through a pipe.
//! - [`udp`]: datagram sockets with multishot `recvmsg`.
//! - [`backend`]: the burst-oriented datagram backend services use, with a
//!   kernel-socket implementation (default), an in-memory loopback and a
//!   fault injector, and one over AF_XDP ([`xdp`]).
//! - [`xdp`]: AF_XDP sockets and the XDP program that feeds them.
//! - [`fdpass`]: handing descriptors to another process (`SCM_RIGHTS`),
//!   for binary upgrades.
//! - [`sockopt`]: the kernel's drop count of a socket.
//! - [`unix`]: Unix datagram sockets with the sender's credentials.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! // On each shard: a listener in the group, echo one message per connection.
//! let listener = netstack::tcp::TcpListener::bind("127.0.0.1:7000".parse().unwrap())?;
//! let mut incoming = listener.incoming();
//! let conn = incoming.next().await?;
//! let (n, buf) = conn.recv(Vec::with_capacity(4096)).await;
//! let (sent, _) = conn.send_all(buf).await;
//! # n?; sent }
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod backend;
pub mod fdpass;

/// Marks a type as bound to the shard thread that made it (`!Send`,
/// `!Sync`): its descriptor's operations and its close go through that
/// shard's ring, so it must not be used or dropped from another.
pub(crate) type ShardBound = std::marker::PhantomData<std::rc::Rc<()>>;
pub mod listener;
pub mod sockopt;
pub mod steer;
pub mod tcp;
pub mod udp;
pub mod unix;
pub mod wire;
pub mod xdp;
