//! Configuration: the flags of each subcommand and the TOML file of
//! `appliance run --config` / `appliance check --config` describe the same
//! things with the same names (a flag `--connect-timeout` is the key
//! `connect_timeout`), and are validated by the same code. Every error names
//! the flag or key, the value and the fix.
//!
//! The file holds any number of services, each in its own table array:
//!
//! ```toml
//! [runtime]            # shards, cpus, pin, nic, wake, grace, steering
//! [admin]              # listen, allow_remote, token
//! [dns]                # nameservers, min_ttl, max_ttl, timeout
//! [log]                # level, format
//! [[echo]]             # name, listen, buffers, buffer_size
//! [[forward]]          # name, listen, upstreams, balance, ... (the forward flags)
//! [[aggregate]]        # name, listen_udp, listen_tcp, flush_interval, graphite, ... (any number)
//! ```
//!
//! `config/appliance.toml` is the commented example, embedded in the
//! binary as the default of `appliance run`.

pub mod aggregate;
pub mod dns;
pub mod echo;
pub mod forward;
pub mod runtime;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

pub use aggregate::AggregateOptions;
use cores::pool::upstream::parse_duration;
pub use echo::EchoOptions;
pub use forward::ForwardOptions;
pub use runtime::{RuntimeArgs, Steering, Wake};

/// The embedded default configuration (`config/appliance.toml`).
pub const DEFAULT: &str = include_str!("../../../config/appliance.toml");

/// Where options came from, to name them in errors.
#[derive(Debug, Clone)]
pub enum Source {
    /// Command-line flags.
    Flags,
    /// The `index`th `[[section]]` of a config file.
    File {
        /// The table array, e.g. `forward`.
        section: &'static str,
        /// Its position in the file.
        index: usize,
    },
}

impl Source {
    /// The name of `field` (snake_case) as the user wrote it: the flag
    /// (`--connect-timeout`; lists are repeated singular flags, `--upstream`)
    /// or the key (`forward[0].connect_timeout`).
    pub fn key(&self, field: &str) -> Key {
        match self {
            Source::Flags if field == "upstreams" => Key("--upstream".into()),
            // `--shards` is the runtime's shard count on every subcommand.
            Source::Flags if field == "shards" => Key("--service-shards".into()),
            Source::Flags => Key(format!("--{}", field.replace('_', "-"))),
            Source::File { section, index } => Key(format!("{section}[{index}].{field}")),
        }
    }

    /// Parses the duration `value` of `field`, naming it in the error.
    pub fn duration(&self, field: &str, value: &str) -> Result<Duration, ConfigError> {
        duration(self.key(field), value)
    }

    /// Parses a service's shard group (`shards = "0-3"`), naming it in
    /// the error; `None` (every shard) when not given. Checked against the
    /// runtime's shard count by the service's `check_for_shards`.
    pub fn group(&self, value: &Option<String>) -> Result<Option<shard::Group>, ConfigError> {
        let Some(text) = value else { return Ok(None) };
        let key = || self.key("shards");
        let list = shard::placement::parse_cpu_list(text).map_err(|e| key().error(e))?;
        shard::Group::new(list).map(Some).map_err(|e| key().error(format!("{text:?}: {e}")))
    }

    /// The name of element `i` of the list `field`.
    pub fn item(&self, field: &str, i: usize) -> Key {
        match self {
            Source::Flags => self.key(field),
            Source::File { .. } => Key(format!("{}[{i}]", self.key(field).0)),
        }
    }
}

/// The name of a flag or key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key(pub String);

impl Key {
    /// An error about this key.
    pub fn error(self, message: impl fmt::Display) -> ConfigError {
        ConfigError { key: self.0, message: message.to_string() }
    }
}

/// An invalid flag or key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The flag or key.
    pub key: String,
    /// What is wrong with its value and how to fix it.
    pub message: String,
}

/// The config file, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[runtime]`.
    #[serde(default)]
    pub runtime: RuntimeArgs,
    /// `[admin]`.
    #[serde(default)]
    pub admin: Option<AdminOptions>,
    /// `[log]`.
    #[serde(default)]
    pub log: LogOptions,
    /// `[[echo]]`.
    #[serde(default)]
    pub echo: Vec<EchoOptions>,
    /// `[[forward]]`.
    #[serde(default)]
    pub forward: Vec<ForwardOptions>,
    /// `[[aggregate]]`: any number, each with its own ports and keys.
    #[serde(default)]
    pub aggregate: Vec<AggregateOptions>,
    /// `[dns]`: how upstream names are resolved and re-resolved.
    #[serde(default)]
    pub dns: dns::DnsOptions,
}

/// `[admin]`: the admin HTTP endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminOptions {
    /// Where to listen (loopback unless `allow_remote`).
    pub listen: SocketAddr,
    /// Allow a non-loopback address.
    #[serde(default)]
    pub allow_remote: bool,
    /// The bearer token the runtime API's changes need (`Authorization:
    /// Bearer TOKEN`). Without one, changes are only taken on a loopback
    /// listener.
    #[serde(default)]
    pub token: Option<String>,
}

/// Shortest admin token accepted.
pub const MIN_TOKEN: usize = 16;

/// Checks an admin token: long enough to not be guessed, printable.
pub fn check_token(token: &str, key: Key) -> Result<(), ConfigError> {
    if token.len() < MIN_TOKEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(key.error(format!(
            "the admin token must be {MIN_TOKEN} or more printable ASCII characters without spaces \
             (e.g. the output of `openssl rand -hex 16`)"
        )));
    }
    Ok(())
}

impl AdminOptions {
    /// Refuses a non-loopback address unless explicitly allowed.
    pub fn validate(&self, key: Key) -> Result<SocketAddr, ConfigError> {
        if !self.listen.ip().is_loopback() && !self.allow_remote {
            return Err(key.error(format!(
                "{}: not a loopback address; reading the admin endpoint needs no authentication, \
                 so allow it explicitly (--admin-allow-remote, or allow_remote = true)",
                self.listen
            )));
        }
        Ok(self.listen)
    }
}

/// `[log]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogOptions {
    /// Level or RUST_LOG-style filter.
    pub level: Option<String>,
    /// `human` or `json`.
    pub format: Option<String>,
}

/// A validated service, as the runner drives it (see
/// [`crate::services::Service`]).
pub type Service = Arc<dyn crate::services::Service>;

/// A whole validated configuration.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Runtime placement.
    pub runtime: RuntimeArgs,
    /// Drain time on SIGTERM.
    pub grace: Duration,
    /// The admin endpoint, if any.
    pub admin: Option<SocketAddr>,
    /// The admin API's bearer token, if any.
    pub admin_token: Option<String>,
    /// How upstream names are re-resolved.
    pub dns: crate::dns::DnsConfig,
    /// Services by kind (echo, forward, aggregate), each kind in file order.
    pub services: Vec<Service>,
    /// Whether the services came from a file (errors name `aggregate[0].x`)
    /// or flags (`--x`).
    pub from_file: bool,
    /// What the command line set over the file (`run --config F --grace
    /// 3s`): a reload re-reads the file and sets these over it again.
    pub overrides: Overrides,
}

/// Settings the command line gives over a configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// The runtime flags given.
    pub runtime: RuntimeArgs,
    /// `--admin`, if given.
    pub admin: Option<SocketAddr>,
    /// `--admin-token`, if given.
    pub admin_token: Option<String>,
}

impl AppConfig {
    /// What can only be checked with the machine in view: plans the
    /// runtime and checks the settings that depend on its shard count.
    /// `check` and `run` both call it, before anything binds, so `check`
    /// accepts exactly what `run` accepts. `runtime_key` names a runtime
    /// setting as the user gave it (`--cpus`, or `runtime.cpus`).
    pub fn preflight(&self, runtime_key: &dyn Fn(&str) -> Key) -> Result<shard::Runtime, ConfigError> {
        let rt = self.runtime.plan(runtime_key)?;
        self.check_for_shards(rt.shards())?;
        let by_client = self.services.iter().any(|s| s.listens().iter().any(|l| l.by_client.is_some()));
        if self.runtime.steering == Some(Steering::Cpu) && by_client {
            let why = "\"cpu\": a forward with per-client limits steers its connections by client address \
                       instead (the limits hold per client only then); drop one of the two";
            return Err(runtime_key("steering").error(why));
        }
        Ok(rt)
    }

    /// Sets `overrides` over this configuration (the file's): runtime
    /// flags win over `[runtime]` and `--admin` over `[admin]`. Errors name
    /// the flag when a flag gave the value.
    pub fn set_overrides(&mut self, overrides: Overrides) -> Result<(), ConfigError> {
        self.runtime = self.runtime.merged(&overrides.runtime);
        self.grace = self.runtime.grace(overrides.runtime.key_over_file("grace"))?;
        if let Some(admin) = overrides.admin {
            self.admin = Some(admin);
        }
        if let Some(token) = &overrides.admin_token {
            self.admin_token = Some(token.clone());
        }
        self.overrides = overrides;
        Ok(())
    }

    /// The settings that depend on the shard count (a reload checks them
    /// against the running runtime's).
    pub fn check_for_shards(&self, shards: usize) -> Result<(), ConfigError> {
        for (i, service) in self.services.iter().enumerate() {
            if let Some(group) = service.group() {
                group.check(shards).map_err(|e| self.source_of(i).key("shards").error(e))?;
            }
            service.check_for_shards(shards).map_err(|e| self.source_of(i).key(e.field).error(e.message))?;
        }
        Ok(())
    }

    /// Where service `i` was configured.
    fn source_of(&self, i: usize) -> Source {
        if !self.from_file {
            return Source::Flags;
        }
        let kind = self.services[i].kind();
        let index = self.services[..i].iter().filter(|s| s.kind() == kind).count();
        Source::File { section: kind, index }
    }
}

impl LogOptions {
    /// Checks the level and format, naming the flag or key each came from
    /// (the flags, `cli_level` and `cli_format`, win over the file).
    pub fn resolve(
        &self,
        cli_level: Option<&str>,
        cli_format: Option<&str>,
    ) -> Result<(String, ops::logging::LogFormat), ConfigError> {
        let (level, level_key) = match (cli_level, &self.level) {
            (Some(l), _) => (l.to_string(), "--log-level"),
            (None, Some(l)) => (l.clone(), "log.level"),
            (None, None) => ("info".to_string(), "--log-level"),
        };
        ops::logging::check_level(&level).map_err(|e| Key(level_key.into()).error(e))?;
        let (format, format_key) = match (cli_format, &self.format) {
            (Some(f), _) => (f.to_string(), "--log-format"),
            (None, Some(f)) => (f.clone(), "log.format"),
            (None, None) => ("human".to_string(), "--log-format"),
        };
        let format = format.parse().map_err(|e: ops::logging::LogError| Key(format_key.into()).error(e))?;
        Ok((level, format))
    }
}

impl FileConfig {
    /// Parses TOML text. An error names the line and, where the error is
    /// about a value, the key it belongs to (`forward[0].listen`), the
    /// value as written and the form expected.
    pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let Some(span) = e.span() else {
                return ConfigError { key: String::new(), message: e.message().trim_end().to_string() };
            };
            let line = line_of(text, span.start);
            let message = e.message().trim_end();
            match key_at(text, span.start) {
                Some(key) => {
                    let value = text.get(span.clone()).unwrap_or_default().trim();
                    let message = match expected_form(message) {
                        Some(form) => format!("{value}: {message} (expected {form})"),
                        None => format!("{value}: {message}"),
                    };
                    ConfigError { key: format!("{line}: {key}"), message }
                }
                None => ConfigError { key: line, message: message.to_string() },
            }
        })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            key: "--config".into(),
            message: format!("{}: {e}", path.display()),
        })?;
        FileConfig::parse(&text).map_err(|e| ConfigError { key: format!("{}{}", path.display(), e.key), ..e })
    }

    /// Validates everything.
    pub fn validate(&self) -> Result<AppConfig, ConfigError> {
        let mut services = Vec::new();
        for (index, e) in self.echo.iter().enumerate() {
            services.push(e.validate(&Source::File { section: "echo", index })? as Service);
        }
        let dns = self.dns.validate()?;
        // Built on the first name only: most files have none.
        let resolver = std::cell::OnceCell::new();
        let resolve = |host: &str, _port: u16| -> std::io::Result<Vec<std::net::IpAddr>> {
            let r = resolver.get_or_init(|| crate::dns::Resolver::new(&dns));
            let r = r.as_ref().map_err(|e| std::io::Error::other(e.clone()))?;
            r.lookup(host).map(|a| a.addrs).map_err(std::io::Error::other)
        };
        for (index, f) in self.forward.iter().enumerate() {
            services.push(f.validate_with(&Source::File { section: "forward", index }, &resolve)? as Service);
        }
        for (index, a) in self.aggregate.iter().enumerate() {
            services.push(a.validate(&Source::File { section: "aggregate", index })? as Service);
        }
        if services.is_empty() {
            let fix = "none configured; add an [[echo]], [[forward]] or [[aggregate]] table";
            return Err(Key("services".into()).error(fix));
        }
        check_unique(&services)?;
        let admin = match &self.admin {
            Some(a) => Some(a.validate(Key("admin.listen".into()))?),
            None => None,
        };
        if let Some(admin) = admin {
            check_admin_port(admin, &services, Key("admin.listen".into()))?;
        }
        let admin_token = self.admin.as_ref().and_then(|a| a.token.clone());
        if let Some(token) = &admin_token {
            check_token(token, Key("admin.token".into()))?;
        }
        Ok(AppConfig {
            grace: self.runtime.grace(Key("runtime.grace".into()))?,
            runtime: self.runtime.clone(),
            admin,
            admin_token,
            dns,
            services,
            from_file: true,
            overrides: Overrides::default(),
        })
    }
}

/// Names and listening addresses must not collide.
fn check_unique(services: &[Service]) -> Result<(), ConfigError> {
    for (i, a) in services.iter().enumerate() {
        for b in &services[..i] {
            if a.name() == b.name() {
                let key = Key(format!("{}.name", a.kind()));
                return Err(
                    key.error(format!("{:?} is used twice; give each service its own name", a.name()))
                );
            }
            for (la, ua) in a.listens().into_iter().map(|l| (l.addr, l.udp)) {
                let theirs = b.listens();
                if let Some(lb) = theirs.iter().find(|l| l.udp == ua && overlap(la, l.addr)).map(|l| l.addr) {
                    let key = Key(format!("{}.listen", a.name()));
                    let same = if la == lb { String::new() } else { format!(" (as {lb})") };
                    return Err(key.error(format!(
                        "{la} is also used by {:?}{same}; give each its own port",
                        b.name()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Whether two listening addresses take the same connections: the same
/// port (not 0) on the same IP, or on a wildcard that covers the other
/// (`0.0.0.0:8080` covers `127.0.0.1:8080`; `[::]` covers IPv4 too, as it
/// is bound dual-stack).
pub fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || a.port() != b.port() {
        return false;
    }
    let covers = |w: SocketAddr, x: SocketAddr| w.ip().is_unspecified() && (w.is_ipv6() || x.is_ipv4());
    a.ip() == b.ip() || covers(a, b) || covers(b, a)
}

/// The admin endpoint must not share a TCP port with a service (its
/// clients would get HTTP answers and the service would lose them).
pub fn check_admin_port(admin: SocketAddr, services: &[Service], key: Key) -> Result<(), ConfigError> {
    for s in services {
        if let Some(l) = s.listens().into_iter().find(|l| !l.udp && overlap(admin, l.addr)).map(|l| l.addr) {
            return Err(key.error(format!(
                "{admin} is also where {} {:?} listens ({l}); give the admin endpoint its own port",
                s.kind(),
                s.name()
            )));
        }
    }
    Ok(())
}

/// The dotted key (`forward[1].listen`, `runtime.shards`) whose value
/// covers byte `offset` of a config file, from the table headers above it
/// and the nearest `key =` at or before it. `None` outside any `key = value`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let before = &text[..offset.min(text.len())];
    let mut table = String::new();
    let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut key = None;
    for line in before.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            let n = counts.entry(name.trim().to_string()).or_insert(0);
            table = format!("{}[{}]", name.trim(), *n);
            *n += 1;
            key = None;
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            table = name.trim().to_string();
            key = None;
        } else if let Some((k, _)) = line.split_once('=') {
            let k = k.trim();
            if !k.is_empty() && !k.starts_with('#') && k.chars().all(|c| c.is_alphanumeric() || c == '_') {
                key = Some(k.to_string());
            }
        }
    }
    let key = key?;
    Some(if table.is_empty() { key } else { format!("{table}.{key}") })
}

/// The form a value should take, for serde's messages about values.
fn expected_form(message: &str) -> Option<&'static str> {
    if message.contains("socket address") {
        Some("IP:PORT, e.g. 127.0.0.1:8080; host names are not resolved")
    } else if ["expected u8", "expected u16", "expected u32", "expected u64", "expected usize"]
        .iter()
        .any(|t| message.contains(t))
    {
        Some("a whole number, without quotes")
    } else if message.contains("expected a boolean") {
        Some("true or false, without quotes")
    } else if message.contains("expected a string") {
        Some("a quoted string")
    } else if message.contains("expected a sequence") {
        Some("a list, e.g. [\"a\", \"b\"]")
    } else {
        None
    }
}

/// `:LINE` of a byte offset, for error messages.
fn line_of(text: &str, offset: usize) -> String {
    let line = text[..offset.min(text.len())].matches('\n').count() + 1;
    format!(":{line}")
}

/// Parses an `IP:PORT` flag, saying what is expected when it is not one
/// (clap names the flag and the value).
pub fn parse_addr(value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| "expected IP:PORT, e.g. 127.0.0.1:8080 (host names are not resolved)".to_string())
}

/// Parses a duration flag or key.
pub fn duration(key: Key, value: &str) -> Result<Duration, ConfigError> {
    parse_duration(value).map_err(|e| key.error(e))
}

#[cfg(test)]
mod tests {
    use super::{key_at, overlap};

    /// `make run`'s configuration validates, and its statsd service keeps
    /// Prometheus series (served at /metrics/statsd), as its comment says.
    #[test]
    fn the_embedded_default_validates_and_keeps_statsd_series() {
        let cfg =
            super::FileConfig::parse(super::DEFAULT).and_then(|f| f.validate()).expect("default config");
        let statsd = cfg.services.iter().find(|s| s.name() == "statsd").expect("a statsd service");
        let agg = statsd.as_any().downcast_ref::<crate::services::aggregate::config::AggregateConfig>();
        assert!(agg.is_some_and(|a| a.prometheus.is_some()), "{agg:?}");
    }

    #[test]
    fn an_offset_is_named_by_its_table_and_key() {
        let text = "[runtime]\nshards = 2\n[[forward]]\nname = \"a\"\n[[forward]]\nlisten = \"x\"\n\
                    upstreams = [\n  \"y\",\n]\n";
        let at = |needle: &str| key_at(text, text.find(needle).unwrap());
        assert_eq!(at("2\n").as_deref(), Some("runtime.shards"));
        assert_eq!(at("\"a\"").as_deref(), Some("forward[0].name"));
        assert_eq!(at("\"x\"").as_deref(), Some("forward[1].listen"));
        assert_eq!(at("\"y\"").as_deref(), Some("forward[1].upstreams"), "inside a multi-line list");
        assert_eq!(key_at(text, 0), None, "a header is no key");
    }

    #[test]
    fn listening_addresses_overlap_on_the_same_port_or_a_covering_wildcard() {
        let a = |s: &str| s.parse().unwrap();
        assert!(overlap(a("127.0.0.1:8080"), a("127.0.0.1:8080")));
        assert!(overlap(a("0.0.0.0:8080"), a("127.0.0.1:8080")));
        assert!(overlap(a("127.0.0.1:8080"), a("0.0.0.0:8080")));
        assert!(overlap(a("[::]:8080"), a("127.0.0.1:8080")), "[::] is dual-stack");
        assert!(overlap(a("[::]:8080"), a("[::1]:8080")));
        assert!(!overlap(a("0.0.0.0:8080"), a("[::1]:8080")), "an IPv4 wildcard covers no IPv6");
        assert!(!overlap(a("127.0.0.1:8080"), a("127.0.0.2:8080")));
        assert!(!overlap(a("127.0.0.1:8080"), a("127.0.0.1:8081")));
        assert!(!overlap(a("127.0.0.1:0"), a("127.0.0.1:0")), "port 0 picks distinct ports");
    }
}
