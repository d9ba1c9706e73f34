//! The aggregate service's validated configuration, shared read-only by
//! every shard. Built from `appliance aggregate` flags (main.rs) or, later,
//! from a config file: fill the fields, then [`AggregateConfig::validate`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use cores::statsd::graphite::Percentile;
use cores::statsd::mapping::Mapper;

pub use super::xdp::{Backend, XdpMode};

/// Why a configuration was refused; each names the setting.
#[derive(Debug, Error, PartialEq)]
pub enum ConfigError {
    /// Neither a UDP nor a TCP listener.
    #[error("nothing to listen on: give listen-udp, listen-tcp and/or listen-unix")]
    NoListener,
    /// No output at all: metrics would be aggregated and thrown away.
    #[error("no output: give graphite, relay, prometheus (or mapping-config) or flush-stdout")]
    NoOutput,
    /// The flush interval is below 10 ms.
    #[error("{0:?}: must be at least 10ms")]
    FlushInterval(Duration),
    /// Fewer keys than shards (each shard needs a share).
    #[error("{max_keys}: must be at least the shard count ({shards})")]
    MaxKeys {
        /// The limit given.
        max_keys: usize,
        /// Shards in the runtime.
        shards: usize,
    },
    /// The line limit is out of range.
    #[error("{0}: must be between 16 and 65536")]
    MaxLineLength(usize),
    /// The Graphite queue holds no interval.
    #[error("graphite queue of {0} intervals: must be at least 1")]
    Queue(usize),
    /// The Graphite queue's byte bound is below one interval's worth.
    #[error("{0} bytes: must be at least 1048576 (1 MiB)")]
    QueueBytes(usize),
    /// The largest datagram accepted is out of range.
    #[error("{0} bytes: must be between 512 and 65536")]
    MaxDatagram(usize),
    /// No receive buffers.
    #[error("0 udp receive buffers: need at least 1")]
    Buffers,
    /// A kernel-bypass backend without an interface to attach to.
    #[error("backend {0}: give the interface statsd arrives on (interface = \"eth0\")")]
    NoInterface(&'static str),
    /// An AF_XDP UMEM size the rings cannot have.
    #[error("{0} frames: must be a power of two from 64 to 65536")]
    XdpFrames(u32),
    /// A kernel-bypass backend without a UDP listener (it receives UDP only).
    #[error("backend {0}: needs listen_udp (AF_XDP receives UDP datagrams)")]
    XdpWithoutUdp(&'static str),
}

impl ConfigError {
    /// The setting (snake_case key; the flag is the same with dashes).
    pub fn field(&self) -> &'static str {
        match self {
            ConfigError::NoListener => "listen_udp",
            ConfigError::NoOutput => "graphite",
            ConfigError::FlushInterval(_) => "flush_interval",
            ConfigError::MaxKeys { .. } => "max_keys",
            ConfigError::MaxLineLength(_) => "max_line_length",
            ConfigError::Queue(_) => "graphite_queue",
            ConfigError::QueueBytes(_) => "graphite_queue_bytes",
            ConfigError::MaxDatagram(_) => "max_datagram",
            ConfigError::Buffers => "udp_buffers",
            ConfigError::NoInterface(_) => "interface",
            ConfigError::XdpFrames(_) => "xdp_frames",
            ConfigError::XdpWithoutUdp(_) => "listen_udp",
        }
    }
}

/// How lines received by a shard that does not own their key reach the
/// owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Exchange {
    /// Aggregate locally into a partial table; ship the partials to the
    /// owners once per flush (the default: measured faster).
    #[default]
    Partials,
    /// Ship the raw lines to their owner in batches as they arrive; the
    /// owner parses and aggregates them (the design ARCHITECTURE.md
    /// sketched first; kept to measure against).
    Records,
}

/// Everything the aggregate service needs.
#[derive(Debug, Clone)]
pub struct AggregateConfig {
    /// The service's name (logs, metrics).
    pub name: String,
    /// How foreign lines reach their owner.
    pub exchange: Exchange,
    /// Where statsd datagrams arrive (one `SO_REUSEPORT` socket per shard).
    pub listen_udp: Option<SocketAddr>,
    /// Where newline-separated statsd lines arrive over TCP.
    pub listen_tcp: Option<SocketAddr>,
    /// How often every shard flushes.
    pub flush_interval: Duration,
    /// Graphite plaintext receiver (one connection per shard).
    pub graphite: Option<SocketAddr>,
    /// Global Graphite prefix (`stats`).
    pub prefix: String,
    /// Next-tier statsd aggregators (UDP); keys are spread by rendezvous
    /// hashing.
    pub relays: Vec<SocketAddr>,
    /// Timer percentile thresholds.
    pub percentiles: Vec<Percentile>,
    /// Samples a timer key keeps as they came per interval, so its figures
    /// are etsy's exactly (0: the sketch only).
    pub exact_samples: u32,
    /// Metrics dropped by name and tag keys stripped before aggregation.
    pub rules: cores::statsd::rules::Rules,
    /// Per-origin key limits (per shard, per interval), if any.
    pub origins: Option<cores::statsd::origins::OriginPolicy>,
    /// Keys at most, across all shards (each shard gets an equal share).
    pub max_keys: usize,
    /// A key not updated for this long is deleted (0: after the first
    /// interval without an update).
    pub delete_idle: Duration,
    /// Also print the Graphite lines on stdout.
    pub flush_stdout: bool,
    /// Keep the aggregates as Prometheus series named by this mapping
    /// (served at `/metrics/<name>`).
    pub prometheus: Option<Arc<Mapper>>,
    /// The mapping file it came from, if any.
    pub mapping_config: Option<std::path::PathBuf>,
    /// Longer lines are dropped (counted), never truncated.
    pub max_line_length: usize,
    /// Flush intervals held for an unreachable Graphite; older ones are
    /// dropped (counted).
    pub graphite_queue: usize,
    /// Bytes of held intervals at most, across shards (each shard holds
    /// its share): bounds the memory an outage costs, whatever the key
    /// count. The newest interval is always kept.
    pub graphite_queue_bytes: usize,
    /// UDP receive buffers per shard.
    pub udp_buffers: u16,
    /// `SO_RCVBUF` of each shard's UDP socket: absorbs bursts while the
    /// shard is busy (a table growing, a flush). The kernel caps it at
    /// `net.core.rmem_max`.
    pub udp_socket_buffer: usize,
    /// The largest datagram payload received whole; a larger one is cut
    /// there (counted as `truncated`; its cut last line is dropped as too
    /// long, its complete lines are kept). Each receive buffer is this
    /// large plus the kernel's header; only the pages a datagram touches
    /// become resident.
    pub max_datagram: usize,
    /// The shards it runs on (`None`: every shard); keys are owned by
    /// its members only.
    pub group: Option<shard::Group>,
    /// What receives the UDP datagrams.
    pub backend: Backend,
    /// The XDP program attached for `backend`, once the runner has
    /// prepared the service (`Service::prepare`); `None` before, and with
    /// the kernel sockets alone.
    pub xdp: Option<std::sync::Arc<super::xdp::Attachment>>,
    /// Unix datagram socket path for DogStatsD clients.
    pub listen_unix: Option<std::path::PathBuf>,
    /// Unix stream socket path (length-prefixed frames).
    pub listen_unix_stream: Option<std::path::PathBuf>,
    /// Tag Unix socket clients' metrics with their pid and container id.
    pub origin_detection: bool,
    /// The bound Unix socket, once the runner has prepared the service.
    pub unix: Option<std::sync::Arc<super::unix::UnixSocket>>,
    /// The bound Unix stream socket, likewise.
    pub unix_stream: Option<std::sync::Arc<super::unix::UnixSocket>>,
}

/// The largest UDP payload over IPv4 (65,535 less the IP and UDP headers):
/// by default every datagram is received whole, as statsd_exporter does.
pub const MAX_UDP_PAYLOAD: usize = 65_507;

impl Default for AggregateConfig {
    fn default() -> Self {
        AggregateConfig {
            name: "aggregate".into(),
            exchange: Exchange::Partials,
            listen_udp: None,
            listen_tcp: None,
            flush_interval: Duration::from_secs(10),
            graphite: None,
            prefix: "stats".into(),
            relays: Vec::new(),
            percentiles: cores::statsd::graphite::parse_percentiles("50,90,95,99").unwrap_or_default(),
            exact_samples: 1000,
            rules: cores::statsd::rules::Rules::default(),
            origins: None,
            max_keys: 1_000_000,
            delete_idle: Duration::from_secs(300),
            flush_stdout: false,
            prometheus: None,
            mapping_config: None,
            max_line_length: 4096,
            graphite_queue: 6,
            graphite_queue_bytes: 256 << 20,
            udp_socket_buffer: 8 << 20,
            udp_buffers: 512,
            max_datagram: MAX_UDP_PAYLOAD,
            group: None,
            backend: Backend::Kernel,
            xdp: None,
            listen_unix: None,
            listen_unix_stream: None,
            origin_detection: false,
            unix: None,
            unix_stream: None,
        }
    }
}

impl AggregateConfig {
    /// Checks the settings for a runtime of `shards` shards.
    pub fn validate(&self, shards: usize) -> Result<(), ConfigError> {
        let unix = self.listen_unix.is_some() || self.listen_unix_stream.is_some();
        if self.listen_udp.is_none() && self.listen_tcp.is_none() && !unix {
            return Err(ConfigError::NoListener);
        }
        if self.graphite.is_none()
            && self.relays.is_empty()
            && !self.flush_stdout
            && self.prometheus.is_none()
        {
            return Err(ConfigError::NoOutput);
        }
        if self.flush_interval < Duration::from_millis(10) {
            return Err(ConfigError::FlushInterval(self.flush_interval));
        }
        if self.max_keys < shards.max(1) {
            return Err(ConfigError::MaxKeys { max_keys: self.max_keys, shards });
        }
        if !(16..=65536).contains(&self.max_line_length) {
            return Err(ConfigError::MaxLineLength(self.max_line_length));
        }
        if self.graphite_queue == 0 {
            return Err(ConfigError::Queue(self.graphite_queue));
        }
        if self.graphite_queue_bytes < 1 << 20 {
            return Err(ConfigError::QueueBytes(self.graphite_queue_bytes));
        }
        if !(512..=65536).contains(&self.max_datagram) {
            return Err(ConfigError::MaxDatagram(self.max_datagram));
        }
        if self.udp_buffers == 0 {
            return Err(ConfigError::Buffers);
        }
        if let Backend::Xdp { interface, frames, .. } = &self.backend {
            if interface.is_empty() {
                return Err(ConfigError::NoInterface(self.backend.as_str()));
            }
            if !frames.is_power_of_two() || !(64..=65536).contains(frames) {
                return Err(ConfigError::XdpFrames(*frames));
            }
            if self.listen_udp.is_none() {
                return Err(ConfigError::XdpWithoutUdp(self.backend.as_str()));
            }
        }
        Ok(())
    }

    /// Each shard's share of `graphite_queue_bytes`.
    pub fn queue_bytes_per_shard(&self, shards: usize) -> usize {
        self.graphite_queue_bytes / shards.max(1)
    }

    /// Each shard's share of `max_keys`.
    pub fn keys_per_shard(&self, shards: usize) -> usize {
        self.max_keys / shards.max(1)
    }

    /// Flushes a key may go without an update before it is deleted.
    pub fn max_idle_flushes(&self) -> u32 {
        let n = self.delete_idle.as_nanos() / self.flush_interval.as_nanos().max(1);
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> AggregateConfig {
        AggregateConfig {
            listen_udp: Some("127.0.0.1:8125".parse().unwrap()),
            flush_stdout: true,
            ..Default::default()
        }
    }

    #[test]
    fn validation_names_the_setting() {
        assert_eq!(ok().validate(2), Ok(()));
        assert_eq!(AggregateConfig { listen_udp: None, ..ok() }.validate(2), Err(ConfigError::NoListener));
        assert_eq!(AggregateConfig { flush_stdout: false, ..ok() }.validate(2), Err(ConfigError::NoOutput));
        let e = AggregateConfig { max_keys: 1, ..ok() }.validate(2).unwrap_err();
        assert_eq!(e.to_string(), "1: must be at least the shard count (2)");
        assert_eq!(e.field(), "max_keys");
        assert!(AggregateConfig { flush_interval: Duration::from_millis(1), ..ok() }.validate(1).is_err());
        assert!(AggregateConfig { max_line_length: 8, ..ok() }.validate(1).is_err());
        assert!(AggregateConfig { graphite_queue: 0, ..ok() }.validate(1).is_err());
        assert!(AggregateConfig { max_datagram: 100, ..ok() }.validate(1).is_err());
        assert!(AggregateConfig { max_datagram: 70_000, ..ok() }.validate(1).is_err());
        assert!(AggregateConfig { graphite_queue_bytes: 1000, ..ok() }.validate(1).is_err());
    }

    #[test]
    fn derived_limits() {
        let c = AggregateConfig { max_keys: 10, ..ok() };
        assert_eq!(c.keys_per_shard(3), 3);
        assert_eq!(ok().max_idle_flushes(), 30);
        let c = AggregateConfig { delete_idle: Duration::ZERO, ..ok() };
        assert_eq!(c.max_idle_flushes(), 0);
    }
}
