//! The appliance: services on the `shard` runtime, over `netstack` and
//! `ops`. The `appliance` binary (main.rs) is a thin command line over
//! these modules:
//!
//! - [`cli`]: flags and subcommands;
//! - [`serve`]: what every service shares (signals, binding one listener
//!   per shard, draining);
//! - [`echo`]: a TCP echo service (the bundled upstream for demos, tests
//!   and benchmarks);
//! - [`forward`]: the L4 load balancer;
//! - [`aggregate`]: the statsd / DogStatsD aggregator.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod aggregate;
pub mod cli;
pub mod echo;
pub mod forward;
pub mod serve;
