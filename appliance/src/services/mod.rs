//! The services: I/O shells around the protocol cores (`cores`), each run
//! on every shard by the runner (`crate::app`).
//!
//! - [`echo`]: a TCP echo service (the bundled upstream for demos, tests
//!   and benchmarks);
//! - [`forward`]: the L4 load balancer;
//! - [`aggregate`]: the statsd / DogStatsD aggregator;
//! - [`accept`]: accepting and draining, shared by the three.

pub mod accept;
pub mod aggregate;
pub mod echo;
pub mod forward;

use std::rc::Rc;

/// Which service of the running configuration a per-shard state belongs
/// to. The runner assigns it (the service's position in the
/// configuration, which a reload cannot change) and hands it to the
/// service, whose per-shard state is kept under it in the shard's slots
/// (`shard::slots`): cross-shard work (a reload, a scrape, a health
/// broadcast, a flush) carries the id and finds the state on the shard it
/// runs on. No service keeps a thread-local singleton, so a process can run
/// several instances of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceId(pub u64);

impl ServiceId {
    /// Keeps `state` as this service's state on the current shard.
    pub fn install<T: 'static>(self, state: Rc<T>) {
        shard::slots::put(self.0, state);
    }

    /// This service's state on the current shard, if it runs here.
    pub fn state<T: 'static>(self) -> Option<Rc<T>> {
        shard::slots::get(self.0)
    }

    /// Forgets this service's state on the current shard.
    pub fn uninstall(self) {
        shard::slots::remove(self.0);
    }
}
