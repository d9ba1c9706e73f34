//! The command line.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A shard-per-core L4 forwarder and statsd aggregator on io_uring.
#[derive(Debug, Parser)]
#[command(name = "appliance", version, about, propagate_version = true)]
pub struct Cli {
    /// Log level or RUST_LOG-style filter (RUST_LOG wins when set).
    #[arg(long, global = true, default_value = "info", env = "APPLIANCE_LOG_LEVEL")]
    pub log_level: String,
    /// Log format: human or json.
    #[arg(long, global = true, default_value = "human", env = "APPLIANCE_LOG_FORMAT")]
    pub log_format: String,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the shard placement plan and the io_uring features of this kernel.
    Topology(RuntimeArgs),
    /// Run a TCP echo service on every shard (a bundled upstream for demos and tests).
    Echo(EchoArgs),
    /// Forward TCP connections to a pool of upstreams (an L4 load balancer).
    Forward(ForwardArgs),
    /// Aggregate statsd / DogStatsD metrics and flush them to Graphite or relays.
    Aggregate(AggregateArgs),
}

/// `appliance forward`.
#[derive(Debug, Clone, Args)]
pub struct ForwardArgs {
    /// Address to listen on (port 0 picks a free port, printed at startup).
    #[arg(long)]
    pub listen: SocketAddr,
    /// An upstream: `HOST:PORT[,weight=N][,max-conns=N]`; repeat for a pool.
    #[arg(long = "upstream", required = true)]
    pub upstreams: Vec<String>,
    /// Balancing policy: round-robin, least-conn, p2c, random or maglev.
    #[arg(long, default_value = "round-robin")]
    pub balance: String,
    /// Give up connecting to an upstream after this long (e.g. 3s, 500ms).
    #[arg(long, default_value = "3s")]
    pub connect_timeout: String,
    /// Close a connection after this long without a byte either way.
    #[arg(long, default_value = "10m")]
    pub idle_timeout: String,
    /// Connections at most, across all shards (split between them).
    #[arg(long, default_value_t = 100_000)]
    pub max_conns: u32,
    /// Other upstreams to try after a failed connect.
    #[arg(long, default_value_t = 2)]
    pub retries: u32,
    /// Send a PROXY protocol header (v1 or v2) to the upstream.
    #[arg(long)]
    pub proxy_protocol: Option<String>,
    /// Expect a PROXY protocol header from clients (a load balancer in front).
    #[arg(long)]
    pub accept_proxy: bool,
    /// Check every upstream this often (TCP connect); 0 disables checks.
    #[arg(long, default_value = "2s")]
    pub health_interval: String,
    /// How long established connections may finish after SIGTERM.
    #[arg(long, default_value = "30s")]
    pub grace: String,
    /// Forward UDP datagrams (a session per client) instead of TCP
    /// connections; active health checks are TCP connects, so they are
    /// off for UDP (passive ejection still applies).
    #[arg(long)]
    pub udp: bool,
    /// Relay buffers per shard (provided-buffer ring entries).
    #[arg(long, default_value_t = 4096)]
    pub buffers: u16,
    /// Size of each relay buffer in bytes.
    #[arg(long, default_value_t = 16384)]
    pub buffer_size: usize,
    /// Runtime placement.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// `appliance aggregate`.
#[derive(Debug, Clone, Args)]
pub struct AggregateArgs {
    /// UDP address for statsd datagrams (port 0 picks one, printed at startup).
    #[arg(long)]
    pub listen_udp: Option<SocketAddr>,
    /// TCP address for newline-separated statsd lines.
    #[arg(long)]
    pub listen_tcp: Option<SocketAddr>,
    /// Flush every shard this often (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s")]
    pub flush_interval: String,
    /// Graphite plaintext receiver, HOST:PORT.
    #[arg(long)]
    pub graphite: Option<SocketAddr>,
    /// Global prefix of Graphite paths.
    #[arg(long, default_value = "stats")]
    pub prefix: String,
    /// A next-tier statsd aggregator (UDP); repeat for several (keys are
    /// hashed consistently across them).
    #[arg(long = "relay")]
    pub relays: Vec<SocketAddr>,
    /// Timer percentiles to report (upper_N, mean_N, sum_N).
    #[arg(long, default_value = "50,90,95,99")]
    pub percentiles: String,
    /// Keys at most, across all shards; new keys beyond it are dropped (counted).
    #[arg(long, default_value_t = 1_000_000)]
    pub max_keys: usize,
    /// Delete a key after this long without an update (0: after one idle interval).
    #[arg(long, default_value = "5m")]
    pub delete_idle: String,
    /// Also print the Graphite lines on stdout.
    #[arg(long)]
    pub flush_stdout: bool,
    /// Longer lines are dropped (counted), never truncated.
    #[arg(long, default_value_t = 4096)]
    pub max_line_length: usize,
    /// Runtime placement.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// How shards are placed and run.
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Number of shards (default: one per allowed CPU).
    #[arg(long, env = "APPLIANCE_SHARDS")]
    pub shards: Option<usize>,
    /// Explicit CPU list, one shard per CPU, e.g. 0-3,8.
    #[arg(long, env = "APPLIANCE_CPUS")]
    pub cpus: Option<String>,
    /// Do not pin shard threads to CPUs (allows more shards than CPUs).
    #[arg(long)]
    pub no_pin: bool,
    /// Prefer CPUs on the NUMA node of this network interface.
    #[arg(long)]
    pub nic: Option<String>,
    /// How a shard wakes a parked peer.
    #[arg(long, value_enum, default_value_t = Wake::MsgRing)]
    pub wake: Wake,
}

/// `--wake` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Wake {
    /// IORING_OP_MSG_RING, batched with the sender's submissions.
    MsgRing,
    /// An eventfd write per wake-up.
    Eventfd,
}

/// `appliance echo`.
#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    /// Address to listen on (port 0 picks a free port, printed at startup).
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub listen: SocketAddr,
    /// Receive buffers per shard (provided-buffer ring entries).
    #[arg(long, default_value_t = 1024)]
    pub buffers: u16,
    /// Size of each receive buffer in bytes.
    #[arg(long, default_value_t = 4096)]
    pub buffer_size: usize,
    /// Runtime placement.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

impl RuntimeArgs {
    /// The runtime builder these flags describe.
    pub fn builder(&self) -> anyhow::Result<shard::Builder> {
        let mut opts = shard::placement::PlacementOptions { shards: self.shards, ..Default::default() };
        if let Some(list) = &self.cpus {
            opts.cpus = Some(shard::placement::parse_cpu_list(list)?);
        }
        opts.pin = !self.no_pin;
        opts.nic = self.nic.clone();
        let wake = match self.wake {
            Wake::MsgRing => shard::WakeMode::MsgRing,
            Wake::Eventfd => shard::WakeMode::EventFd,
        };
        Ok(shard::Builder::new().placement(opts).wake_mode(wake))
    }
}
