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
//! Start it with [`run`] and an [`AggregateConfig`] (from flags with
//! [`config_from_args`], or filled in by a config file).

pub mod config;
pub mod graphite;
pub mod hash;
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
pub use service::{bind, gather_stats, run, serve_shard, Bound};

use anyhow::Context as _;

use crate::cli::AggregateArgs;
use crate::forward::upstream::parse_duration;

/// The configuration `appliance aggregate` flags describe (validated
/// against the shard count by [`run`]); errors name the flag.
pub fn config_from_args(args: &AggregateArgs) -> anyhow::Result<AggregateConfig> {
    let duration = |flag: &str, v: &str| parse_duration(v).with_context(|| format!("--{flag} {v:?}"));
    let percentiles = graphite::parse_percentiles(&args.percentiles)
        .map_err(|e| anyhow::anyhow!("--percentiles {:?}: {e}", args.percentiles))?;
    Ok(AggregateConfig {
        listen_udp: args.listen_udp,
        listen_tcp: args.listen_tcp,
        flush_interval: duration("flush-interval", &args.flush_interval)?,
        graphite: args.graphite,
        prefix: args.prefix.trim_end_matches('.').to_owned(),
        relays: args.relays.clone(),
        percentiles,
        max_keys: args.max_keys,
        delete_idle: duration("delete-idle", &args.delete_idle)?,
        flush_stdout: args.flush_stdout,
        max_line_length: args.max_line_length,
        ..AggregateConfig::default()
    })
}
