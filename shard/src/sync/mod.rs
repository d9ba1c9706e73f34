//! Small synchronisation pieces used between shards.

pub mod notify;
pub mod oneshot;
pub mod waiters;
