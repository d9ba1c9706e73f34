//! Datagram I/O through a burst-oriented backend, so a service never
//! depends on kernel sockets.
//!
//! A service receives a *burst* of datagrams (as many as are ready, up to a
//! limit, after waiting for the first) and transmits a burst. That is the
//! shape every fast packet path has (AF_XDP rings, DPDK `rx_burst`,
//! `recvmmsg`), so a faster backend can replace the kernel one without
//! touching the service.
//!
//! The aggregator's UDP ingest and the forwarder's UDP sessions both
//! receive through it.
//!
//! Backends:
//! - [`KernelUdp`]: a kernel UDP socket with multishot `recvmsg` into a
//!   provided-buffer ring (the default);
//! - [`Loopback`]: an in-memory pair, for tests of services without sockets;
//! - [`Faulty`]: wraps any backend and drops, duplicates, truncates and
//!   reorders received datagrams at seeded rates, for tests of what a
//!   service does with a lossy network;
//!
//! - [`XdpUdp`]: an AF_XDP socket on one NIC receive queue
//!   (`crate::xdp`), every frame checked with the wire views (receive
//!   only).

mod faulty;
mod kernel;
mod loopback;
mod xdp;

use std::future::Future;
use std::io;
use std::net::SocketAddr;

pub use faulty::{FaultCounts, FaultRates, Faulty, FaultyBuf};
pub use kernel::KernelUdp;
pub use loopback::{Loopback, LoopbackBuf};
pub use xdp::{FrameDrop, XdpCounters, XdpUdp};

/// A received datagram and its metadata.
#[derive(Debug)]
pub struct Received<B> {
    /// The buffer holding the payload (`as_ref()` is the payload).
    pub buf: B,
    /// Who sent it.
    pub source: Option<SocketAddr>,
    /// The datagram was cut to fit the buffer.
    pub truncated: bool,
}

impl<B: AsRef<[u8]>> Received<B> {
    /// The payload bytes.
    pub fn payload(&self) -> &[u8] {
        self.buf.as_ref()
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// Destination.
    pub dest: SocketAddr,
}

/// A burst-oriented datagram backend; see the module docs.
pub trait DatagramBackend {
    /// The buffer type of received datagrams.
    type Buf: AsRef<[u8]>;

    /// Waits for at least one datagram, then appends every datagram that is
    /// ready (up to `max`) to `out`. Returns how many were appended.
    fn recv_burst(
        &mut self,
        out: &mut Vec<Received<Self::Buf>>,
        max: usize,
    ) -> impl Future<Output = io::Result<usize>>;

    /// Sends the datagrams of `burst` in order, removing them from it.
    /// Returns how many were sent; a datagram the network refused (e.g. no
    /// route) is counted as dropped, not retried.
    fn send_burst(&mut self, burst: &mut Vec<Outgoing>) -> impl Future<Output = io::Result<usize>>;
}
