//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{EchoOptions, ForwardOptions, RuntimeArgs};

/// A shard-per-core L4 forwarder and statsd aggregator on io_uring.
#[derive(Debug, Parser)]
#[command(name = "appliance", version, about, propagate_version = true)]
pub struct Cli {
    /// Log level or RUST_LOG-style filter (RUST_LOG wins when set) [default: info].
    #[arg(long, global = true, env = "APPLIANCE_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log format: human or json [default: human].
    #[arg(long, global = true, env = "APPLIANCE_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Serve /metrics, /status, /healthz and /readyz here (e.g. 127.0.0.1:9090).
    #[arg(long, value_parser = crate::config::parse_addr, global = true, env = "APPLIANCE_ADMIN")]
    pub admin: Option<SocketAddr>,
    /// Allow a non-loopback --admin address (reads have no authentication).
    #[arg(long, global = true, env = "APPLIANCE_ADMIN_ALLOW_REMOTE")]
    pub admin_allow_remote: bool,
    /// Bearer token the admin API's changes need (16+ characters); without
    /// one they are only taken on a loopback admin address.
    #[arg(long, global = true, env = "APPLIANCE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every service of a config file (default: the embedded example).
    Run(RunArgs),
    /// Validate a config file without starting anything.
    Check(CheckArgs),
    /// Print the shard placement plan and the io_uring features of this kernel.
    Topology(RuntimeArgs),
    /// Run a TCP echo service on every shard (a bundled upstream for demos and tests).
    Echo(EchoArgs),
    /// Forward TCP connections (or UDP datagrams) to a pool of upstreams.
    Forward(ForwardArgs),
    /// Aggregate statsd / DogStatsD metrics and flush them to Graphite or relays.
    Aggregate(AggregateArgs),
    /// Generate load (TCP request/response, bulk, connects, UDP, statsd) and report rates and latency.
    Loadgen(LoadgenArgs),
}

/// `appliance aggregate`.
#[derive(Debug, Clone, Args)]
pub struct AggregateArgs {
    /// The service.
    #[command(flatten)]
    pub options: crate::config::AggregateOptions,
    /// Runtime placement.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// `appliance loadgen`.
#[derive(Debug, Clone, Args)]
pub struct LoadgenArgs {
    /// The kind of load.
    #[command(subcommand)]
    pub mode: loadgen::Mode,
}

/// `appliance run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The TOML config file; SIGHUP re-reads it [default: the embedded example].
    #[arg(long, env = "APPLIANCE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Runtime placement (overrides the file's `[runtime]` table).
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// `appliance check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The TOML config file to validate.
    #[arg(long, env = "APPLIANCE_CONFIG")]
    pub config: PathBuf,
}

/// `appliance forward`.
#[derive(Debug, Clone, Args)]
pub struct ForwardArgs {
    /// The service.
    #[command(flatten)]
    pub options: ForwardOptions,
    /// Runtime placement.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// `appliance echo`.
#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    /// The service.
    #[command(flatten)]
    pub options: EchoOptions,
    /// Runtime placement.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}
