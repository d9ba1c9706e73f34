//! `appliance loadgen` flags: one subcommand per kind of load, each with
//! the flags every mode shares ([`Common`]).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use cores::pool::upstream::parse_duration;

/// The kinds of load.
#[derive(Debug, Clone, Subcommand)]
pub enum Mode {
    /// Request/response ping-pong (echo, or HTTP/1.1 GET keep-alive with
    /// `--http`), unpaced or at a fixed `--rate`.
    TcpRr(RrArgs),
    /// Bulk throughput: every connection sends as fast as it can and
    /// drains what comes back.
    TcpStream(StreamArgs),
    /// New connections per second (connect + close, or + one round trip).
    Connect(ConnectArgs),
    /// Datagrams per second to a target, optionally waiting for each echo.
    Udp(UdpArgs),
    /// statsd metric lines of every type from many source ports, with an
    /// optional exact check of what a Graphite backend receives.
    Statsd(StatsdArgs),
}

/// Flags every mode shares.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Where to send the load (HOST:PORT).
    #[arg(long)]
    pub target: SocketAddr,
    /// How long to run (e.g. 10s, 500ms). Default 10s, or with
    /// `--requests`/`--lines` a 10m cap.
    #[arg(long)]
    pub duration: Option<String>,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Give up on one connect, request or echo after this long.
    #[arg(long, default_value = "5s")]
    pub timeout: String,
    /// Where the load runs.
    #[command(flatten)]
    pub runtime: Placement,
}

/// The shards that run the load.
#[derive(Debug, Clone, Default, Args)]
pub struct Placement {
    /// Number of shards [default: one per allowed CPU].
    #[arg(long)]
    pub shards: Option<usize>,
    /// Explicit CPU list, one shard per CPU, e.g. 0-3,8.
    #[arg(long)]
    pub cpus: Option<String>,
    /// Do not pin shard threads to CPUs (allows more shards than CPUs).
    #[arg(long)]
    pub no_pin: bool,
}

impl Placement {
    /// The runtime these flags describe (a 1 s grace: a load generator
    /// has nothing to drain).
    pub fn plan(&self) -> anyhow::Result<shard::Runtime> {
        let mut opts = shard::placement::PlacementOptions { shards: self.shards, ..Default::default() };
        if let Some(list) = &self.cpus {
            opts.cpus =
                Some(shard::placement::parse_cpu_list(list).map_err(|e| anyhow::anyhow!("--cpus: {e}"))?);
        }
        opts.pin = !self.no_pin;
        let builder = shard::Builder::new().placement(opts).grace(Duration::from_secs(1));
        builder.build().map_err(|e| match e {
            shard::RuntimeError::Placement(p) => {
                let flag = if p.setting() == Some("shards") { "--shards" } else { "--cpus" };
                anyhow::anyhow!("{flag}: {p}")
            }
            other => anyhow::anyhow!(other),
        })
    }
}

/// `loadgen tcp-rr`.
#[derive(Debug, Clone, Args)]
pub struct RrArgs {
    /// Shared flags.
    #[command(flatten)]
    pub common: Common,
    /// Connections, spread over the shards.
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// Request size in bytes (echo mode).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// HTTP/1.1 GET with keep-alive instead of echo.
    #[arg(long)]
    pub http: bool,
    /// Path of the HTTP request.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Requests per second in total (fixed-rate mode; latency is measured
    /// from each request's intended send time).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Stop after exactly this many requests in total.
    #[arg(long)]
    pub requests: Option<u64>,
}

/// `loadgen tcp-stream`.
#[derive(Debug, Clone, Args)]
pub struct StreamArgs {
    /// Shared flags.
    #[command(flatten)]
    pub common: Common,
    /// Connections, spread over the shards.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Size of each send in bytes.
    #[arg(long, default_value_t = 65536)]
    pub size: usize,
}

/// `loadgen connect`.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Concurrent connecting loops, spread over the shards.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Also send this many bytes and wait for them back before closing
    /// (0: connect and close).
    #[arg(long, default_value_t = 0)]
    pub size: usize,
    /// Make the round trip an HTTP/1.1 GET (a proxy in front of a web
    /// server does all of its per-connection work only then).
    #[arg(long)]
    pub http: bool,
    /// Make the round trip a TLS ClientHello (512 bytes, one record) with
    /// this server name, echoed back: what an SNI router reads before it
    /// picks an upstream (against an echo upstream; no handshake follows).
    #[arg(long, conflicts_with = "http")]
    pub tls_hello: Option<String>,
    /// Stop after exactly this many connections in total.
    #[arg(long)]
    pub requests: Option<u64>,
    /// New connections per second in total (fixed-rate mode: each
    /// connect is due on a schedule and its latency runs from then).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Shared flags.
    #[command(flatten)]
    pub common: Common,
}

/// `loadgen udp`.
#[derive(Debug, Clone, Args)]
pub struct UdpArgs {
    /// Shared flags.
    #[command(flatten)]
    pub common: Common,
    /// Sockets (source ports), spread over the shards.
    #[arg(long, default_value_t = 8)]
    pub sockets: usize,
    /// Datagram size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Wait for each datagram to come back (one outstanding per socket);
    /// a reply missing after `--timeout` counts as lost.
    #[arg(long)]
    pub echo: bool,
    /// Datagrams per second in total (unpaced if absent).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Stop after exactly this many datagrams in total.
    #[arg(long)]
    pub requests: Option<u64>,
}

/// `loadgen statsd`.
#[derive(Debug, Clone, Args)]
pub struct StatsdArgs {
    /// Shared flags.
    #[command(flatten)]
    pub common: Common,
    /// Send exactly this many lines in total (else run for `--duration`).
    #[arg(long)]
    pub lines: Option<u64>,
    /// Distinct keys per metric type.
    #[arg(long, default_value_t = 1000)]
    pub keys: u32,
    /// Lines per second in total (unpaced if absent).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Lines per datagram.
    #[arg(long, default_value_t = 20)]
    pub per_packet: u32,
    /// Sockets (source ports), spread over the shards.
    #[arg(long, default_value_t = 32)]
    pub sockets: usize,
    /// Metric types to send, comma-separated, from c,g,ms,h,d,s.
    #[arg(long, default_value = "c,g,ms,h,d,s")]
    pub types: String,
    /// Add DogStatsD tags (`|#k:v,...`) to every line.
    #[arg(long)]
    pub tags: bool,
    /// Listen here as a Graphite plaintext sink and check the flushed
    /// counter totals exactly against what was sent.
    #[arg(long)]
    pub verify_graphite: Option<SocketAddr>,
    /// Graphite prefix of the aggregator (etsy statsd: `stats`).
    #[arg(long, default_value = "stats")]
    pub prefix: String,
    /// Stop verifying once the totals have not changed for this long
    /// after the load ended.
    #[arg(long, default_value = "3s")]
    pub settle: String,
    /// Stop verifying after this long after the load ended, whatever the
    /// totals.
    #[arg(long, default_value = "30s")]
    pub verify_timeout: String,
}

/// Parses a duration flag, naming the flag in the error.
pub fn duration_flag(flag: &str, value: &str) -> anyhow::Result<Duration> {
    parse_duration(value).with_context(|| format!("--{flag} {value:?} (expected e.g. 10s, 500ms, 2m)"))
}

impl Common {
    /// The run's time limit: `--duration`, else 10 s, or a 10 min cap when
    /// the run is bounded by a count.
    pub fn limit(&self, counted: bool) -> anyhow::Result<Duration> {
        match &self.duration {
            Some(d) => duration_flag("duration", d),
            None if counted => Ok(Duration::from_secs(600)),
            None => Ok(Duration::from_secs(10)),
        }
    }
}
