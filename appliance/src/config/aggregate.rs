//! The aggregate service's options: the flags of `appliance aggregate` and
//! an `[[aggregate]]` table of the config file, validated by the same code.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::Deserialize;

use super::{ConfigError, Source};
use crate::services::aggregate::config::{AggregateConfig, Exchange};
use cores::statsd::graphite::parse_percentiles;

/// Defaults shared by the flags and the file.
mod defaults {
    pub const NAME: &str = "aggregate";
    pub const FLUSH_INTERVAL: &str = "10s";
    pub const PREFIX: &str = "stats";
    pub const PERCENTILES: &str = "50,90,95,99";
    pub const MAX_KEYS: usize = 1_000_000;
    pub const DELETE_IDLE: &str = "5m";
    pub const MAX_LINE_LENGTH: usize = 4096;

    pub fn name() -> String {
        NAME.into()
    }
    pub fn flush_interval() -> String {
        FLUSH_INTERVAL.into()
    }
    pub fn prefix() -> String {
        PREFIX.into()
    }
    pub fn percentiles() -> String {
        PERCENTILES.into()
    }
    pub fn max_keys() -> usize {
        MAX_KEYS
    }
    pub fn delete_idle() -> String {
        DELETE_IDLE.into()
    }
    pub fn max_line_length() -> usize {
        MAX_LINE_LENGTH
    }
    pub fn exchange() -> String {
        "partials".into()
    }
    pub fn graphite_queue() -> usize {
        6
    }
    pub fn graphite_queue_bytes() -> usize {
        256 << 20
    }
    pub fn max_datagram() -> usize {
        crate::services::aggregate::config::MAX_UDP_PAYLOAD
    }
}

/// A statsd aggregator (flags, or an `[[aggregate]]` table).
#[derive(Debug, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateOptions {
    /// A name for logs and metrics.
    #[arg(long = "name", default_value = defaults::NAME)]
    #[serde(default = "defaults::name")]
    pub name: String,
    /// UDP address for statsd datagrams (port 0 picks one, printed at startup).
    #[arg(long, value_parser = crate::config::parse_addr)]
    #[serde(default)]
    pub listen_udp: Option<SocketAddr>,
    /// TCP address for newline-separated statsd lines.
    #[arg(long, value_parser = crate::config::parse_addr)]
    #[serde(default)]
    pub listen_tcp: Option<SocketAddr>,
    /// Flush every shard this often (e.g. 10s, 500ms).
    #[arg(long, default_value = defaults::FLUSH_INTERVAL)]
    #[serde(default = "defaults::flush_interval")]
    pub flush_interval: String,
    /// Graphite plaintext receiver, HOST:PORT.
    #[arg(long, value_parser = crate::config::parse_addr)]
    #[serde(default)]
    pub graphite: Option<SocketAddr>,
    /// Flush intervals held while Graphite is unreachable (per shard);
    /// older ones are dropped and counted. With a 10 s flush, 6 rides out
    /// a minute: raise it for longer outages.
    #[arg(long, default_value_t = defaults::graphite_queue())]
    #[serde(default = "defaults::graphite_queue")]
    pub graphite_queue: usize,
    /// Bytes of held intervals at most, across all shards (the newest
    /// interval is always kept): the memory a Graphite outage may cost.
    #[arg(long, default_value_t = defaults::graphite_queue_bytes())]
    #[serde(default = "defaults::graphite_queue_bytes")]
    pub graphite_queue_bytes: usize,
    /// The largest UDP datagram received whole (bytes of payload, up to
    /// 65536); a larger one is cut there and counted as truncated, its
    /// complete lines kept.
    #[arg(long, default_value_t = defaults::max_datagram())]
    #[serde(default = "defaults::max_datagram")]
    pub max_datagram: usize,
    /// The shards this service runs on, e.g. `0-3` (its shard group; default:
    /// every shard), so another service's load cannot take its cores.
    #[arg(id = "service_shards", long = "service-shards")]
    #[serde(default)]
    pub shards: Option<String>,
    /// Global prefix of Graphite paths.
    #[arg(long, default_value = defaults::PREFIX)]
    #[serde(default = "defaults::prefix")]
    pub prefix: String,
    /// A next-tier statsd aggregator (UDP); repeat for several (keys are
    /// hashed consistently across them).
    #[arg(long = "relay", value_parser = crate::config::parse_addr)]
    #[serde(default)]
    pub relays: Vec<SocketAddr>,
    /// Timer percentiles to report (upper_N, mean_N, sum_N).
    #[arg(long, default_value = defaults::PERCENTILES)]
    #[serde(default = "defaults::percentiles")]
    pub percentiles: String,
    /// Keys at most, across all shards; new keys beyond it are dropped (counted).
    #[arg(long, default_value_t = defaults::MAX_KEYS)]
    #[serde(default = "defaults::max_keys")]
    pub max_keys: usize,
    /// Delete a key after this long without an update (0: after one idle interval).
    #[arg(long, default_value = defaults::DELETE_IDLE)]
    #[serde(default = "defaults::delete_idle")]
    pub delete_idle: String,
    /// Also print the Graphite lines on stdout.
    #[arg(long)]
    #[serde(default)]
    pub flush_stdout: bool,
    /// Longer lines are dropped (counted), never truncated.
    #[arg(long, default_value_t = defaults::MAX_LINE_LENGTH)]
    #[serde(default = "defaults::max_line_length")]
    pub max_line_length: usize,
    /// How lines for keys another shard owns get there: `partials`
    /// (aggregate locally, ship once per flush) or `records` (ship the lines
    /// in batches as they arrive). See BENCHMARKS.md for the measurement.
    #[arg(long, default_value = "partials")]
    #[serde(default = "defaults::exchange")]
    pub exchange: String,
}

impl AggregateOptions {
    /// Validates the options; every error names the flag or key. What
    /// depends on the shard count is checked again when the runtime starts.
    pub fn validate(&self, src: &Source) -> Result<Arc<AggregateConfig>, ConfigError> {
        let key = |field: &str| src.key(field);
        let percentiles = parse_percentiles(&self.percentiles)
            .map_err(|e| key("percentiles").error(format!("{:?}: {e}", self.percentiles)))?;
        let exchange = match self.exchange.as_str() {
            "partials" => Exchange::Partials,
            "records" => Exchange::Records,
            other => return Err(key("exchange").error(format!("{other:?}: expected partials or records"))),
        };
        let cfg = AggregateConfig {
            name: self.name.clone(),
            exchange,
            listen_udp: self.listen_udp,
            listen_tcp: self.listen_tcp,
            flush_interval: src.duration("flush_interval", &self.flush_interval)?,
            graphite: self.graphite,
            prefix: self.prefix.trim_end_matches('.').to_owned(),
            relays: self.relays.clone(),
            percentiles,
            max_keys: self.max_keys,
            delete_idle: src.duration("delete_idle", &self.delete_idle)?,
            flush_stdout: self.flush_stdout,
            max_line_length: self.max_line_length,
            graphite_queue: self.graphite_queue,
            graphite_queue_bytes: self.graphite_queue_bytes,
            max_datagram: self.max_datagram,
            group: src.group(&self.shards)?,
            ..AggregateConfig::default()
        };
        cfg.validate(1).map_err(|e| key(e.field()).error(e))?;
        Ok(Arc::new(cfg))
    }
}
