//! Small synchronisation pieces used between shards.

pub mod oneshot;
pub mod waiters;
