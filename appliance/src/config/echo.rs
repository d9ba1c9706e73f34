//! The echo service's options: the flags of `appliance echo` and an
//! `[[echo]]` table.

use std::net::SocketAddr;

use clap::Args;
use serde::Deserialize;

use super::{ConfigError, Source};
use crate::services::echo::EchoConfig;

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
    /// The shards this service runs on, e.g. `0-3` (its shard group; default:
    /// every shard), so another service's load cannot take its cores.
    #[arg(id = "service_shards", long = "service-shards")]
    #[serde(default)]
    pub shards: Option<String>,
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
    /// Checks the buffer settings; the echo service they describe.
    pub fn validate(&self, src: &Source) -> Result<std::sync::Arc<EchoConfig>, ConfigError> {
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
        Ok(std::sync::Arc::new(EchoConfig {
            name: self.name.clone(),
            listen: self.listen,
            buffers: self.buffers,
            buffer_size: self.buffer_size,
            group: src.group(&self.shards)?,
        }))
    }
}
