//! The appliance: services on the `shard` runtime, over `netstack` and
//! `ops`. The `appliance` binary (main.rs) is a thin command line over
//! these modules:
//!
//! - [`cli`] and [`config`]: flags, subcommands and the TOML file, one
//!   validation path for both;
//! - [`serve`]: running a configuration (binding one listener per shard,
//!   starting every service on every shard, draining on signals);
//! - [`reload`]: signals and SIGHUP reloads;
//! - [`admin`]: `/metrics`, `/status`, `/healthz`, `/readyz`;
//! - [`startup`]: the startup report;
//! - [`fds`]: the descriptor budget (what `RLIMIT_NOFILE` leaves for
//!   connections, shared between the services);
//! - [`echo`]: a TCP echo service (the bundled upstream for demos, tests
//!   and benchmarks);
//! - [`forward`]: the L4 load balancer;
//! - [`aggregate`]: the statsd / DogStatsD aggregator;
//! - [`loadgen`]: the bundled load generator.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod aggregate;
pub mod cli;
pub mod config;
pub mod echo;
pub mod fds;
pub mod forward;
pub mod loadgen;
pub mod reload;
pub mod serve;
pub mod startup;
