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
