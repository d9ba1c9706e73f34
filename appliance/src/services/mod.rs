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
