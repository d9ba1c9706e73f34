//! `[runtime]` / the runtime flags: how many shards, on which CPUs, how
//! they wake each other and how long a drain may take.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;

use super::{ConfigError, Key, Source};

/// How shards are placed and run (flags, or `[runtime]` in the file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Args, Deserialize)]
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
    /// How the kernel spreads new connections and datagrams over a
    /// service's shards [default: hash].
    #[arg(long, value_enum, env = "APPLIANCE_STEERING")]
    pub steering: Option<Steering>,
    /// A Unix socket where the running process hands its listening
    /// sockets to a new one started with --upgrade [default: none].
    #[arg(long, env = "APPLIANCE_UPGRADE_SOCKET")]
    pub upgrade_socket: Option<PathBuf>,
    /// Take over from the process serving --upgrade-socket: inherit its
    /// listening sockets, start serving, then have it drain.
    #[arg(long, env = "APPLIANCE_UPGRADE")]
    #[serde(skip)]
    pub upgrade: bool,
}

/// `--steering` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Steering {
    /// The kernel's hash of the 4-tuple.
    Hash,
    /// To the shard pinned to the CPU that received the packet (a classic
    /// BPF program on each `SO_REUSEPORT` group), so a connection is served
    /// where its packets are processed: for NICs whose receive queues
    /// (RSS, IRQ affinity) are spread over the shards' CPUs. Needs pinned
    /// shards, one per CPU.
    Cpu,
}

/// `--wake` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Wake {
    /// IORING_OP_MSG_RING, batched with the sender's submissions.
    MsgRing,
    /// An eventfd write per wake-up.
    Eventfd,
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
        self.check_upgrade().map_err(|(field, e)| key(field).error(e))?;
        let steering_cpus = self.steering == Some(Steering::Cpu);
        let builder = shard::Builder::new().placement(opts).wake_mode(wake).idle_poll(idle_poll).grace(grace);
        let rt = builder.build().map_err(|e| match e {
            shard::RuntimeError::Placement(p) => placement(p),
            other => key("shards").error(other),
        })?;
        if steering_cpus {
            Self::check_cpu_steering(rt.plan()).map_err(|e| key("steering").error(e))?;
        }
        Ok(rt)
    }

    /// Whether `plan` can steer by CPU: pinned shards, each on a CPU of
    /// its own, no more than a classic BPF program can map.
    fn check_cpu_steering(plan: &shard::placement::Plan) -> Result<(), String> {
        if !plan.pinned {
            return Err("\"cpu\" sends each connection to the shard pinned to the CPU that received it, \
                 and these shards are not pinned; drop --no-pin or use \"hash\""
                .into());
        }
        netstack::steer::CpuProgram::new(&Self::shard_cpus(plan), netstack::steer::Unmapped::Hash)
            .map(drop)
            .map_err(|e| format!("\"cpu\": {e}; place one shard per CPU or use \"hash\""))
    }

    /// `--upgrade` needs the socket to take over from.
    fn check_upgrade(&self) -> Result<(), (&'static str, String)> {
        match (&self.upgrade_socket, self.upgrade) {
            (None, true) => Err((
                "upgrade",
                "needs the socket of the process to take over from: \
                 --upgrade-socket PATH (or upgrade_socket in [runtime])"
                    .into(),
            )),
            (Some(p), _) if !p.is_absolute() => {
                Err(("upgrade_socket", format!("{p:?} must be an absolute path")))
            }
            _ => Ok(()),
        }
    }

    /// The CPU each shard of `plan` is pinned to, by shard.
    pub fn shard_cpus(plan: &shard::placement::Plan) -> Vec<u32> {
        plan.shards.iter().map(|p| p.cpu as u32).collect()
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
            "steering" => self.steering.is_some(),
            "upgrade_socket" => self.upgrade_socket.is_some(),
            "upgrade" => self.upgrade,
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
            steering: over.steering.or(self.steering),
            upgrade_socket: over.upgrade_socket.clone().or_else(|| self.upgrade_socket.clone()),
            upgrade: over.upgrade || self.upgrade,
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
