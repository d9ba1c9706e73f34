//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use crate::config::{ConfigError, ForwardOptions, Key, Source};

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
    /// Allow a non-loopback --admin address (the endpoint has no authentication).
    #[arg(long, global = true, env = "APPLIANCE_ADMIN_ALLOW_REMOTE")]
    pub admin_allow_remote: bool,
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
    pub mode: crate::loadgen::Mode,
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

/// How shards are placed and run (flags, or `[runtime]` in the file).
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeArgs {
    /// Number of shards [default: one per allowed CPU].
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
    /// How a shard wakes a parked peer [default: msg-ring].
    #[arg(long, value_enum)]
    pub wake: Option<Wake>,
    /// How long an idle shard may keep polling for completions before it
    /// parks (an adaptive window up to this). Polling saves wake-ups on
    /// dedicated cores at high rates; on cores shared with other busy
    /// processes it costs them CPU, so the default parks at once [default: 0].
    #[arg(long, env = "APPLIANCE_IDLE_POLL")]
    pub idle_poll: Option<String>,
    /// How long established connections may finish after SIGTERM [default: 30s].
    #[arg(long, env = "APPLIANCE_GRACE")]
    pub grace: Option<String>,
}

/// `--wake` values.
#[derive(Debug, Clone, Copy, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Wake {
    /// IORING_OP_MSG_RING, batched with the sender's submissions.
    MsgRing,
    /// An eventfd write per wake-up.
    Eventfd,
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

/// The echo service (flags, or an `[[echo]]` table).
#[derive(Debug, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EchoOptions {
    /// A name for logs and metrics.
    #[arg(long, default_value = "echo")]
    #[serde(default = "echo_name")]
    pub name: String,
    /// Address to listen on (port 0 picks a free port, printed at startup).
    #[arg(long, value_parser = crate::config::parse_addr, default_value = "127.0.0.1:7000")]
    pub listen: SocketAddr,
    /// Receive buffers per shard (provided-buffer ring entries).
    #[arg(long, default_value_t = 1024)]
    #[serde(default = "echo_buffers")]
    pub buffers: u16,
    /// Size of each receive buffer in bytes.
    #[arg(long, default_value_t = 4096)]
    #[serde(default = "echo_buffer_size")]
    pub buffer_size: usize,
}

fn echo_name() -> String {
    "echo".into()
}
fn echo_buffers() -> u16 {
    1024
}
fn echo_buffer_size() -> usize {
    4096
}

impl EchoOptions {
    /// Checks the buffer settings.
    pub fn validate(&self, src: &Source) -> Result<(), ConfigError> {
        if self.buffers == 0 || !self.buffers.is_power_of_two() {
            return Err(src
                .key("buffers")
                .error(format!("{}: must be a power of two (e.g. 1024)", self.buffers)));
        }
        if !(64..=1 << 20).contains(&self.buffer_size) {
            return Err(src
                .key("buffer_size")
                .error(format!("{}: must be 64..=1048576 bytes", self.buffer_size)));
        }
        Ok(())
    }
}

impl RuntimeArgs {
    /// The runtime these settings describe, planned on this machine (as
    /// `run` does, binding nothing). Errors name the setting through `key`
    /// (`--cpus`, or `runtime.cpus` when it came from the file).
    pub fn plan(&self, key: &dyn Fn(&str) -> Key) -> Result<shard::Runtime, ConfigError> {
        let placement = |e: shard::placement::PlacementError| key(e.setting().unwrap_or("cpus")).error(e);
        let mut opts = shard::placement::PlacementOptions { shards: self.shards, ..Default::default() };
        if let Some(list) = &self.cpus {
            opts.cpus = Some(shard::placement::parse_cpu_list(list).map_err(placement)?);
        }
        opts.pin = !self.no_pin;
        opts.nic = self.nic.clone();
        let wake = match self.wake.unwrap_or(Wake::MsgRing) {
            Wake::MsgRing => shard::WakeMode::MsgRing,
            Wake::Eventfd => shard::WakeMode::EventFd,
        };
        let idle_poll = match &self.idle_poll {
            Some(v) => crate::config::duration(key("idle_poll"), v)?,
            None => Duration::ZERO,
        };
        let grace = self.grace(key("grace"))?;
        let builder = shard::Builder::new().placement(opts).wake_mode(wake).idle_poll(idle_poll).grace(grace);
        builder.build().map_err(|e| match e {
            shard::RuntimeError::Placement(p) => placement(p),
            other => key("shards").error(other),
        })
    }

    /// The names of these settings as flags (`--cpus`).
    pub fn flag(field: &str) -> Key {
        Source::Flags.key(field)
    }

    /// How `field` is named when these flags override a file's
    /// `[runtime]` table: the flag if it was given, else the file key.
    pub fn key_over_file(&self, field: &str) -> Key {
        let given = match field {
            "shards" => self.shards.is_some(),
            "cpus" => self.cpus.is_some(),
            "nic" => self.nic.is_some(),
            "idle_poll" => self.idle_poll.is_some(),
            "grace" => self.grace.is_some(),
            _ => false,
        };
        if given {
            Self::flag(field)
        } else {
            Key(format!("runtime.{field}"))
        }
    }

    /// These settings with every one given in `over` taking precedence.
    pub fn merged(&self, over: &RuntimeArgs) -> RuntimeArgs {
        RuntimeArgs {
            shards: over.shards.or(self.shards),
            cpus: over.cpus.clone().or_else(|| self.cpus.clone()),
            no_pin: over.no_pin || self.no_pin,
            nic: over.nic.clone().or_else(|| self.nic.clone()),
            wake: over.wake.or(self.wake),
            idle_poll: over.idle_poll.clone().or_else(|| self.idle_poll.clone()),
            grace: over.grace.clone().or_else(|| self.grace.clone()),
        }
    }

    /// The drain grace period (default 30 s).
    pub fn grace(&self, key: Key) -> Result<Duration, ConfigError> {
        match &self.grace {
            Some(v) => crate::config::duration(key, v),
            None => Ok(Duration::from_secs(30)),
        }
    }
}
