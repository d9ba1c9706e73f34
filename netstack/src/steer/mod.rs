//! Steering and draining of `SO_REUSEPORT` groups.
//!
//! Every shard owns one socket of a group bound to the same address; the
//! kernel picks one socket per new connection (TCP, at SYN time) or per
//! datagram (UDP).
//!
//! # Binding
//!
//! [`bind_group`] / [`bind_udp_group`] (or [`ReuseportGroup`]) bind all
//! sockets of a group from one thread, in order, so socket `i` is index `i`
//! of the kernel's group: TCP listeners join the group at `listen()`, UDP
//! sockets at `bind()`. Binding from each shard concurrently would make the
//! order, and so any CPU mapping, a race. Port 0 is resolved once for the
//! whole group.
//!
//! # Steering
//!
//! - [`Steering::Hash`] (default): the kernel hashes the 4-tuple over the
//!   group's sockets.
//! - [`Steering::Cpu`]: a classic BPF program (`SO_ATTACH_REUSEPORT_CBPF`)
//!   returns the index of the shard pinned to the CPU processing the SYN
//!   (or datagram), so a connection is accepted on the core where its
//!   packets already are (with RSS/RPS spreading flows over cores, the
//!   shard and the softirq share caches). Attaching to any one socket
//!   applies to the whole group; [`detach_steering`] goes back to hashing.
//!   CPUs running no shard fall back to the hash ([`Unmapped::Hash`]) or to
//!   socket `cpu % n` ([`Unmapped::Modulo`]). See [`CpuProgram`].
//!
//! The program is an index into the group *as it is when a packet arrives*.
//! When a socket leaves the group (its listener closes), the kernel moves
//! the last socket into its slot (`Vec::swap_remove` semantics), so a mapping
//! is stale after any member closes: build the new one with `swap_remove`
//! on the CPU list and attach it again. Indexes beyond the group's size fall
//! back to the hash.
//!
//! # Draining
//!
//! A TCP listener's accept queue holds connections whose handshake is done
//! (the client already sees them as connected) plus requests still in
//! SYN-RECV. When a shard closes its listener during a drain:
//!
//! - with `net.ipv4.tcp_migrate_req = 0` (the default), all of them are
//!   **reset**: clients that are already connected and may have sent data
//!   get `ECONNRESET`;
//! - with `net.ipv4.tcp_migrate_req = 1` (Linux >= 5.14), the kernel
//!   **migrates** them to another listener of the same group (chosen by the
//!   4-tuple hash, a CBPF program is not consulted), where they are accepted
//!   normally. Only when the closing listener was the last one are they
//!   reset.
//!
//! [`migrate_req_enabled`] reads the sysctl, [`enable_migrate_req`] sets it
//! (root; per network namespace, it persists after the process exits and
//! applies to every group in the namespace). Without it, a graceful drain
//! has to stop new connections reaching the socket before closing it (for
//! example, attach a [`CpuProgram`] over the other shards' CPUs only,
//! accept what is queued, then close), which still loses requests that are
//! mid-handshake at the moment of the close.

mod cbpf;
mod client;
mod drain;
mod group;
mod sys;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};

pub use cbpf::{CpuProgram, Insn, ProgramError, Unmapped, MAX_MAPPED_SHARDS};
pub use client::ClientProgram;
pub use drain::{enable_migrate_req, migrate_req_enabled, set_migrate_req, MIGRATE_REQ_SYSCTL};
pub use group::{bind_group, bind_udp_group, ensure_free, local_addr, set_listener_nodelay, ListenOptions};

/// How the kernel picks a group member for a new connection or datagram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Steering {
    /// The kernel's 4-tuple hash (no program attached).
    #[default]
    Hash,
    /// The socket of the shard pinned to the CPU processing the packet
    /// (a [`CpuProgram`]).
    Cpu,
}

/// Attaches a [`CpuProgram`] for `shard_cpus` (`shard_cpus[i]` is the CPU
/// shard `i`, owner of group index `i`, is pinned to) with the default
/// [`Unmapped::Hash`] fallback, to the group `member` belongs to.
pub fn attach_cpu_steering(member: &impl AsFd, shard_cpus: &[u32]) -> io::Result<()> {
    attach_program(member, &CpuProgram::new(shard_cpus, Unmapped::default())?)
}

/// Attaches a [`ClientProgram`] to the group `member` belongs to (of
/// `sockets` sockets): each client address, masked to `v4_prefix` or
/// `v6_prefix` bits, always reaches the same socket.
pub fn attach_client_steering(
    member: &impl AsFd,
    sockets: usize,
    v4_prefix: u8,
    v6_prefix: u8,
) -> io::Result<()> {
    let program = ClientProgram::new(sockets, v4_prefix, v6_prefix)?;
    sys::attach_reuseport_cbpf(member.as_fd(), program.instructions())
}

/// Attaches `program` to the group `member` belongs to, replacing any
/// program already attached. The member must have `SO_REUSEPORT` set.
pub fn attach_program(member: &impl AsFd, program: &CpuProgram) -> io::Result<()> {
    sys::attach_reuseport_cbpf(member.as_fd(), program.instructions())
}

/// Detaches the group's program (back to [`Steering::Hash`]); `Ok(false)`
/// if none was attached. Linux >= 5.3.
pub fn detach_steering(member: &impl AsFd) -> io::Result<bool> {
    sys::detach_reuseport_bpf(member.as_fd())
}

/// A group to bind: address, size, options and steering.
///
/// ```no_run
/// use netstack::steer::{ReuseportGroup, Steering};
/// # fn main() -> std::io::Result<()> {
/// // Two shards pinned to CPUs 2 and 3; socket i goes to shard i.
/// let sockets = ReuseportGroup::new("0.0.0.0:7000".parse().unwrap(), 2)
///     .steering(Steering::Cpu)
///     .shard_cpus(vec![2, 3])
///     .bind_tcp()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ReuseportGroup {
    addr: SocketAddr,
    shards: usize,
    options: ListenOptions,
    steering: Steering,
    shard_cpus: Option<Vec<u32>>,
    unmapped: Unmapped,
}

impl ReuseportGroup {
    /// A group of `shards` sockets on `addr`, default options, hash steering.
    pub fn new(addr: SocketAddr, shards: usize) -> Self {
        ReuseportGroup {
            addr,
            shards,
            options: ListenOptions::default(),
            steering: Steering::Hash,
            shard_cpus: None,
            unmapped: Unmapped::default(),
        }
    }

    /// Socket options for every member.
    pub fn options(mut self, options: ListenOptions) -> Self {
        self.options = options;
        self
    }

    /// The steering to set up after binding.
    pub fn steering(mut self, steering: Steering) -> Self {
        self.steering = steering;
        self
    }

    /// The CPU of each shard, for [`Steering::Cpu`]; without it shard `i` is
    /// taken to run on CPU `i`. Must have one entry per shard.
    pub fn shard_cpus(mut self, cpus: Vec<u32>) -> Self {
        self.shard_cpus = Some(cpus);
        self
    }

    /// Where [`Steering::Cpu`] sends packets from CPUs without a shard.
    pub fn unmapped(mut self, unmapped: Unmapped) -> Self {
        self.unmapped = unmapped;
        self
    }

    /// Binds TCP listeners ([`bind_group`]) and sets up the steering.
    pub fn bind_tcp(&self) -> io::Result<Vec<OwnedFd>> {
        let program = self.program()?;
        let fds = bind_group(self.addr, self.shards, &self.options)?;
        self.steer(&fds, program.as_ref())?;
        Ok(fds)
    }

    /// Binds UDP sockets ([`bind_udp_group`]) and sets up the steering.
    pub fn bind_udp(&self) -> io::Result<Vec<OwnedFd>> {
        let program = self.program()?;
        let fds = bind_udp_group(self.addr, self.shards, &self.options)?;
        self.steer(&fds, program.as_ref())?;
        Ok(fds)
    }

    /// Built before binding, so a bad mapping fails without opening sockets.
    fn program(&self) -> io::Result<Option<CpuProgram>> {
        if self.steering == Steering::Hash {
            return Ok(None);
        }
        let identity: Vec<u32>;
        let cpus = match &self.shard_cpus {
            Some(cpus) => cpus.as_slice(),
            None => {
                identity = (0..self.shards).map(|i| i as u32).collect();
                &identity
            }
        };
        if cpus.len() != self.shards {
            let msg = format!("{} shard CPUs for {} shards", cpus.len(), self.shards);
            return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        }
        Ok(Some(CpuProgram::new(cpus, self.unmapped)?))
    }

    /// The group exists once every member is bound, so attaching to the
    /// first covers all. Until then (a moment at startup) the hash applies.
    fn steer(&self, fds: &[OwnedFd], program: Option<&CpuProgram>) -> io::Result<()> {
        match (program, fds.first()) {
            (Some(program), Some(first)) => attach_program(first, program),
            _ => Ok(()),
        }
    }
}
