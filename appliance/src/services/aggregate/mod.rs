//! `aggregate`: a statsd / DogStatsD aggregator (the job of etsy statsd or
//! brubeck), shared-nothing across shards.
//!
//! The protocol logic is sans-IO, in the `cores` crate
//! ([`cores::statsd`]: parsing, the key table, sketches and sets, Graphite
//! and relay output). Here:
//!
//! - [`config`], [`stats`]: settings and counters;
//! - [`sink`], [`service`]: the Graphite connection, receivers, the flush
//!   cycle and shutdown (see [`service`] for the cross-shard design).
//!
//! It runs like every service (`crate::app`): [`service::serve_shard`] on
//! every shard with an [`AggregateConfig`] validated from the flags of
//! `appliance aggregate` or an `[[aggregate]]` table
//! (`crate::config::AggregateOptions`).

pub mod config;
pub mod service;
pub mod sink;
pub mod stats;

pub use config::{AggregateConfig, ConfigError};
pub use service::gather_stats;
