//! The aggregate service's options: the flags of `appliance aggregate` and
//! an `[[aggregate]]` table of the config file, validated by the same code.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::Deserialize;

use super::{ConfigError, Source};
use crate::services::aggregate::config::{AggregateConfig, Backend, Exchange, XdpMode};
use cores::statsd::graphite::parse_percentiles;
use cores::statsd::mapping::Mapper;

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
    pub const EXACT_SAMPLES: u32 = 1000;
    pub fn origin() -> String {
        "source".into()
    }
    pub fn max_origins() -> usize {
        10_000
    }
    pub fn exact_samples() -> u32 {
        EXACT_SAMPLES
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
    pub fn backend() -> String {
        "kernel".into()
    }
    pub fn xdp_mode() -> String {
        "auto".into()
    }
    pub fn xdp_frames() -> u32 {
        // 1 MiB of locked memory per queue: four queues and four shards fit
        // the common 8 MiB RLIMIT_MEMLOCK without CAP_IPC_LOCK.
        512
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
    /// Unix datagram socket for DogStatsD clients (the Datadog agent's
    /// `dogstatsd_socket`, e.g. /var/run/datadog/dsd.socket), mode 0722; a
    /// stale socket file is replaced.
    #[arg(long)]
    #[serde(default)]
    pub listen_unix: Option<std::path::PathBuf>,
    /// Unix stream socket for DogStatsD clients that send length-prefixed
    /// frames (a 4-byte little-endian length, then a datagram's worth of
    /// lines), mode 0722; a stale socket file is replaced.
    #[arg(long)]
    #[serde(default)]
    pub listen_unix_stream: Option<std::path::PathBuf>,
    /// Tag what arrives on --listen-unix with its sender: `pid:N`, and
    /// `container_id:ID` when the process runs in a container (from
    /// /proc/PID/cgroup), from the kernel's credentials of each datagram.
    #[arg(long)]
    #[serde(default)]
    pub origin_detection: bool,
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
    /// Samples a timer key keeps as they came each interval (16 bytes
    /// each, within 2^20 per shard): up to this many, its figures are
    /// etsy statsd's exactly; above, the sketch's (within 1 %). 0: always
    /// the sketch.
    #[arg(long, default_value_t = defaults::EXACT_SAMPLES)]
    #[serde(default = "defaults::exact_samples")]
    pub exact_samples: u32,
    /// Drop metrics whose name matches this glob before aggregation (`*`
    /// matches within one dot-separated part: `debug.*`); repeat for more.
    /// Counted in rule_drops.
    #[arg(long = "drop-metric")]
    #[serde(default)]
    pub drop_metrics: Vec<String>,
    /// Remove this tag key from every metric before aggregation (a tag
    /// whose values are unbounded, such as a request id); repeat for more.
    #[arg(long = "strip-tag")]
    #[serde(default)]
    pub strip_tags: Vec<String>,
    /// New keys one origin may add per interval (0: no limit); lines for
    /// further keys are refused and counted against it (the worst origins
    /// are on /status). With --origin source the service's sockets are
    /// steered by source address, so the limit holds across shards; with a
    /// tag it holds per shard.
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub max_keys_per_origin: usize,
    /// What an origin is for --max-keys-per-origin: `source` (the sender's
    /// address) or `tag:NAME` (the value of that tag, e.g. tag:service).
    #[arg(long, default_value = "source")]
    #[serde(default = "defaults::origin")]
    pub origin: String,
    /// Origins tracked at most per shard; lines from a new origin beyond it
    /// are refused (counted) until the next interval.
    #[arg(long, default_value_t = 10_000)]
    #[serde(default = "defaults::max_origins")]
    pub max_origins: usize,
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
    /// Keep the aggregates as Prometheus series, served by the admin
    /// endpoint at /metrics/NAME (NAME: the service's name), as
    /// statsd_exporter shows them.
    #[arg(long)]
    #[serde(default)]
    pub prometheus: bool,
    /// A statsd_exporter mapping file (YAML) naming those series and their
    /// labels; implies --prometheus. Read again on reload.
    #[arg(long)]
    #[serde(default)]
    pub mapping_config: Option<std::path::PathBuf>,
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
    /// What receives UDP: `kernel` sockets, `xdp` (AF_XDP sockets on the
    /// receive queues of `interface`, beside the kernel sockets, which keep
    /// what the XDP program passes on; refuses to start if AF_XDP cannot),
    /// or `auto` (`xdp`, else the kernel sockets alone, with the reason
    /// logged). Needs CAP_NET_ADMIN and CAP_BPF.
    #[arg(long, default_value = "kernel")]
    #[serde(default = "defaults::backend")]
    pub backend: String,
    /// The interface statsd arrives on, for `backend = "xdp"` or `"auto"`.
    #[arg(long)]
    #[serde(default)]
    pub interface: Option<String>,
    /// How the XDP program is attached: `auto` (in the driver, else
    /// generic), `native` or `generic`.
    #[arg(long, default_value = "auto")]
    #[serde(default = "defaults::xdp_mode")]
    pub xdp_mode: String,
    /// Frames of 2 KiB per AF_XDP socket (one socket per receive queue):
    /// what absorbs a burst while a shard flushes. Locked memory: this x 2
    /// KiB per queue (charged to RLIMIT_MEMLOCK without CAP_IPC_LOCK).
    #[arg(long, default_value_t = defaults::xdp_frames())]
    #[serde(default = "defaults::xdp_frames")]
    pub xdp_frames: u32,
}

impl AggregateOptions {
    /// The per-origin limits, if `max_keys_per_origin` turns them on.
    fn origin_policy(
        &self,
        src: &Source,
    ) -> Result<Option<cores::statsd::origins::OriginPolicy>, ConfigError> {
        use cores::statsd::origins::{OriginBy, OriginPolicy};
        if self.max_keys_per_origin == 0 {
            return Ok(None);
        }
        let by = match self.origin.as_str() {
            "source" => OriginBy::Source,
            other => match other.strip_prefix("tag:").filter(|t| !t.is_empty() && !t.contains([':', ','])) {
                Some(tag) => OriginBy::Tag(tag.as_bytes().to_vec()),
                None => {
                    return Err(src.key("origin").error(format!("{other:?}: expected source or tag:NAME")))
                }
            },
        };
        if self.max_origins == 0 {
            return Err(src.key("max_origins").error("0: must be at least 1"));
        }
        Ok(Some(OriginPolicy { by, keys: self.max_keys_per_origin, max_origins: self.max_origins }))
    }
}

impl AggregateOptions {
    /// Validates the options; every error names the flag or key. What
    /// depends on the shard count is checked again when the runtime starts.
    pub fn validate(&self, src: &Source) -> Result<Arc<AggregateConfig>, ConfigError> {
        let key = |field: &str| src.key(field);
        // Checked in two steps so the error names the key at fault.
        use cores::statsd::rules::Rules;
        Rules::new(&self.drop_metrics, &[]).map_err(|e| key("drop_metrics").error(e))?;
        let rules =
            Rules::new(&self.drop_metrics, &self.strip_tags).map_err(|e| key("strip_tags").error(e))?;
        let origins = self.origin_policy(src)?;
        let percentiles = parse_percentiles(&self.percentiles)
            .map_err(|e| key("percentiles").error(format!("{:?}: {e}", self.percentiles)))?;
        let exchange = match self.exchange.as_str() {
            "partials" => Exchange::Partials,
            "records" => Exchange::Records,
            other => return Err(key("exchange").error(format!("{other:?}: expected partials or records"))),
        };
        let backend = self.backend(src)?;
        let prometheus = self.mapper(src)?;
        let cfg = AggregateConfig {
            name: self.name.clone(),
            exchange,
            listen_udp: self.listen_udp,
            listen_tcp: self.listen_tcp,
            listen_unix: self.listen_unix.clone(),
            listen_unix_stream: self.listen_unix_stream.clone(),
            origin_detection: self.origin_detection,
            flush_interval: src.duration("flush_interval", &self.flush_interval)?,
            graphite: self.graphite,
            prefix: self.prefix.trim_end_matches('.').to_owned(),
            relays: self.relays.clone(),
            percentiles,
            exact_samples: self.exact_samples,
            rules,
            origins,
            max_keys: self.max_keys,
            delete_idle: src.duration("delete_idle", &self.delete_idle)?,
            flush_stdout: self.flush_stdout,
            prometheus,
            mapping_config: self.mapping_config.clone(),
            max_line_length: self.max_line_length,
            graphite_queue: self.graphite_queue,
            graphite_queue_bytes: self.graphite_queue_bytes,
            max_datagram: self.max_datagram,
            group: src.group(&self.shards)?,
            backend,
            ..AggregateConfig::default()
        };
        cfg.validate(1).map_err(|e| key(e.field()).error(e))?;
        Ok(Arc::new(cfg))
    }

    /// The mapping the Prometheus series are named by, if they are kept:
    /// the file's, or statsd_exporter's defaults without one.
    fn mapper(&self, src: &Source) -> Result<Option<Arc<Mapper>>, ConfigError> {
        let Some(path) = &self.mapping_config else {
            return Ok(self.prometheus.then(|| Arc::new(Mapper::empty())));
        };
        let refused = |e: String| src.key("mapping_config").error(format!("{}: {e}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| refused(e.to_string()))?;
        let mapper = Mapper::from_yaml(&text).map_err(refused)?;
        Ok(Some(Arc::new(mapper)))
    }

    /// `backend`, `interface` and `xdp_mode` as one setting.
    fn backend(&self, src: &Source) -> Result<Backend, ConfigError> {
        let mode = match self.xdp_mode.as_str() {
            "auto" => XdpMode::Auto,
            "native" => XdpMode::Native,
            "generic" => XdpMode::Generic,
            other => {
                return Err(src.key("xdp_mode").error(format!("{other:?}: expected auto, native or generic")))
            }
        };
        let fallback = match self.backend.as_str() {
            "kernel" => return Ok(Backend::Kernel),
            "xdp" => false,
            "auto" => true,
            other => {
                return Err(src.key("backend").error(format!("{other:?}: expected kernel, xdp or auto")))
            }
        };
        let interface = self.interface.clone().unwrap_or_default();
        Ok(Backend::Xdp { interface, mode, fallback, frames: self.xdp_frames })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::FileConfig;
    use crate::services::aggregate::config::{AggregateConfig, Backend, XdpMode};

    fn aggregate(keys: &str) -> Result<AggregateConfig, String> {
        let text = format!("[[aggregate]]\nlisten_udp = \"127.0.0.1:8125\"\nflush_stdout = true\n{keys}");
        let cfg = FileConfig::parse(&text).and_then(|f| f.validate()).map_err(|e| e.to_string())?;
        let service = cfg.services.first().ok_or("no service")?;
        Ok(service.as_any().downcast_ref::<AggregateConfig>().ok_or("not an aggregate")?.clone())
    }

    #[test]
    fn the_backend_is_one_setting_of_three_keys() {
        assert_eq!(aggregate("").map(|c| c.backend), Ok(Backend::Kernel));
        let want =
            Backend::Xdp { interface: "eth0".into(), mode: XdpMode::Generic, fallback: true, frames: 512 };
        assert_eq!(
            aggregate("backend = \"auto\"\ninterface = \"eth0\"\nxdp_mode = \"generic\"").map(|c| c.backend),
            Ok(want)
        );
        let xdp = aggregate("backend = \"xdp\"\ninterface = \"veth1\"").map(|c| c.backend);
        assert!(matches!(xdp, Ok(Backend::Xdp { fallback: false, mode: XdpMode::Auto, .. })), "{xdp:?}");
    }

    #[test]
    fn a_wrong_backend_setting_names_its_key() {
        for (keys, key, says) in [
            ("backend = \"dpdk\"", "aggregate[0].backend", "expected kernel, xdp or auto"),
            ("backend = \"xdp\"", "aggregate[0].interface", "give the interface"),
            (
                "backend = \"xdp\"\ninterface = \"eth0\"\nxdp_mode = \"fast\"",
                "aggregate[0].xdp_mode",
                "expected auto",
            ),
            (
                "backend = \"xdp\"\ninterface = \"eth0\"\nxdp_frames = 1000",
                "aggregate[0].xdp_frames",
                "power of two",
            ),
        ] {
            let err = aggregate(keys).expect_err(keys);
            assert!(err.contains(key) && err.contains(says), "{keys}: {err}");
        }
        let err = FileConfig::parse("[[aggregate]]\nlisten_tcp = \"127.0.0.1:8125\"\nflush_stdout = true\nbackend = \"xdp\"\ninterface = \"eth0\"\n")
            .and_then(|f| f.validate())
            .map(|_| ())
            .expect_err("xdp without udp");
        assert!(err.to_string().contains("needs listen_udp"), "{err}");
    }
}
