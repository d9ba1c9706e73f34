//! `netstack`: sockets, buffers and wire formats for the appliance, on the
//! `shard` runtime.
//!
//! Today it holds the per-shard listener setup: every shard binds its own
//! socket to the same address in one `SO_REUSEPORT` group, so the kernel
//! hands each new connection (or datagram flow) to exactly one shard and no
//! shard is woken for a connection another will take (no thundering herd).
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! // On each shard:
//! let listener = netstack::listener::tcp_reuseport("127.0.0.1:7000".parse().unwrap(), 1024)?;
//! # Ok(()) }
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod listener;
