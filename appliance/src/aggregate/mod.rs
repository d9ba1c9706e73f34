//! `aggregate`: a statsd / DogStatsD aggregator (the job of etsy statsd or
//! brubeck), shared-nothing across shards.
//!
//! Layers, bottom up (all but the last are sans-IO and tested without
//! sockets):
//!
//! - [`parse`]: statsd/DogStatsD lines parsed in place, drops by reason;
//! - [`stream`]: lines out of a TCP byte stream;
//! - [`sketch`], [`set`]: mergeable timer sketch (1 % relative error) and
//!   unique counts (exact, then HyperLogLog);
//! - [`table`]: a shard's keys and their per-interval aggregates;
//! - [`graphite`], [`relay`]: flush output (Graphite plaintext with etsy
//!   names, statsd lines for a next tier);
//! - [`config`], [`stats`]: settings and counters;
//! - [`sink`], [`service`]: the Graphite connection, receivers, the flush
//!   cycle and shutdown (see [`service`] for the cross-shard design).
//!
//! It runs like every service (`crate::serve`): [`service::serve_shard`] on
//! every shard with an [`AggregateConfig`] validated from the flags of
//! `appliance aggregate` or an `[[aggregate]]` table
//! (`crate::config::AggregateOptions`).

pub mod config;
pub mod graphite;
pub mod parse;
pub mod relay;
pub mod service;
pub mod set;
pub mod sink;
pub mod sketch;
pub mod stats;
pub mod stream;
pub mod table;

pub use config::{AggregateConfig, ConfigError};
pub use service::gather_stats;
