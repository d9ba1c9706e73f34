//! Per-shard runtime counters: plain integers owned by the shard, read with
//! [`stats`] on the shard itself (gather them across shards with
//! [`crate::map_reduce`]).

use crate::context;
use crate::mesh::MeshStats;
use crate::reactor::ReactorStats;

/// A snapshot of one shard's runtime counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct ShardStats {
    /// The shard.
    pub shard: usize,
    /// Loop turns.
    pub turns: u64,
    /// Times the shard parked in `io_uring_enter`.
    pub parks: u64,
    /// Tasks spawned.
    pub tasks_spawned: u64,
    /// Tasks alive now.
    pub tasks_alive: u64,
    /// Task polls.
    pub polls: u64,
    /// Polls that exceeded the stall threshold.
    pub stalls: u64,
    /// io_uring counters.
    pub reactor: ReactorStats,
    /// Operations in flight now.
    pub ops_in_flight: u64,
    /// Mesh counters.
    pub mesh: MeshStats,
    /// Tasks waiting for [`crate::stopping`].
    pub stop_waiters: u64,
    /// How the shard's io_uring was set up.
    pub uring_setup: crate::reactor::SetupFlags,
}

/// The current shard's counters.
pub fn stats() -> ShardStats {
    context::with(|c| ShardStats {
        shard: c.id,
        turns: c.turns.get(),
        parks: c.parks.get(),
        tasks_spawned: c.executor.spawned(),
        tasks_alive: c.executor.alive() as u64,
        polls: c.executor.polls(),
        stalls: c.executor.stalls(),
        reactor: c.reactor.stats(),
        ops_in_flight: c.reactor.live_ops() as u64,
        mesh: c.mesh.stats(),
        stop_waiters: c.stop_waiters.len() as u64,
        uring_setup: c.reactor.setup_flags(),
    })
}
