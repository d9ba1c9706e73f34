//! `shard`: a thread-per-core, shared-nothing runtime on io_uring.
//!
//! A [`Runtime`] runs one *shard* per CPU: a thread pinned to its CPU, with
//! its memory bound to the CPU's NUMA node, its own io_uring, its own task
//! queue and its own timers. Shards share nothing mutable. They talk only
//! through the *mesh*: a bounded single-producer/single-consumer ring per
//! ordered pair of shards, published in batches, with a parked shard woken
//! at most once per batch.
//!
//! The layers, bottom up:
//!
//! - [`placement`]: reads the machine (hwloc, or sysfs as a fallback) and
//!   plans one CPU per shard, spreading over physical cores before SMT
//!   siblings and filling one NUMA node before the next.
//! - [`reactor`]: the shard's io_uring. Operations are futures that own
//!   their buffers until the kernel's completion arrives, even when the
//!   future is dropped early. Submissions are batched into one
//!   `io_uring_enter` per loop turn, which is also where the shard parks.
//! - `executor`: single-threaded run queue of `!Send` tasks with a run
//!   budget per turn and a stall detector.
//! - [`time`]: sleeps, timeouts and intervals in a per-shard timer map; the
//!   nearest deadline becomes the park timeout, so timers cost no syscall.
//! - [`mesh`]: the rings between shards, typed data-plane
//!   [`channel`](mesh::channel)s, and [`Foreign`](mesh::foreign::Foreign)
//!   values that go home to be dropped.
//! - [`slots`]: values kept per shard under a key, found again by work
//!   that arrives from other shards (a runner's per-service state).
//! - [`runtime`]: starting and stopping shards, and the cross-shard API:
//!   [`submit_to`], [`invoke_on_all`], [`map_reduce`], [`broadcast`].
//!
//! ```no_run
//! let rt = shard::Builder::new().shards(2).pin(false).build().expect("plan");
//! let total = rt
//!     .run(|| async {
//!         // Ask every shard for its id and add them up.
//!         shard::map_reduce(|| async { shard::shard_id() }, 0, |acc, id| acc + id).await
//!     })
//!     .expect("runtime");
//! assert_eq!(total, Ok(1));
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod clock;
pub(crate) mod context;
pub mod executor;
pub mod future;
pub mod mem;
pub mod mesh;
pub mod placement;
pub mod reactor;
pub mod runtime;
pub mod slots;
pub mod stats;
pub mod sync;
pub mod time;

pub use executor::{JoinError, JoinHandle};
pub use mesh::WakeMode;
pub use reactor::ops;
pub use reactor::probe::{probe, UringProbe};
pub use runtime::api::{
    broadcast, invoke_on_all, is_stopping, map_reduce, on_shard, request_stop, shard_count, shard_id,
    spawn_local, spawn_local_named, stop_deadline, stopping, submit_to, yield_now, SubmitError,
};
pub use runtime::group::{Group, GroupError};
pub use runtime::{run_single, Builder, Runtime, RuntimeError, RuntimeHandle};
pub use stats::{stats, ShardStats};
