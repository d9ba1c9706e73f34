//! The forward service's options: the flags of `appliance forward` and a
//! `[[forward]]` table of the config file are the same struct, validated by
//! the same code, so both name the offending flag or key the same way.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::Deserialize;

use super::{ConfigError, Source};
use crate::services::forward::sni::{Missing, SniConfig};
use crate::services::forward::ForwardConfig;
use cores::pool::check::{self, Exchange, Expect};
use cores::pool::clients::ClientPolicy;
use cores::pool::health::HealthConfig;
use cores::pool::upstream::{DnsName, UpstreamSpec};
use cores::sni::Routes;

/// Defaults shared by the flags and the file.
mod defaults {
    pub const NAME: &str = "forward";
    pub const BALANCE: &str = "round-robin";
    pub const CONNECT_TIMEOUT: &str = "3s";
    pub const IDLE_TIMEOUT: &str = "10m";
    pub const MAX_CONNS: u32 = 100_000;
    pub const RETRIES: u32 = 2;
    pub const HEALTH_INTERVAL: &str = "2s";
    pub const PROXY_HEADER_TIMEOUT: &str = "5s";
    pub const BUFFERS: u16 = 128;
    pub const BUFFER_SIZE: usize = 256 * 1024;

    pub fn name() -> String {
        NAME.into()
    }
    pub fn balance() -> String {
        BALANCE.into()
    }
    pub fn connect_timeout() -> String {
        CONNECT_TIMEOUT.into()
    }
    pub fn idle_timeout() -> String {
        IDLE_TIMEOUT.into()
    }
    pub fn max_conns() -> u32 {
        MAX_CONNS
    }
    pub fn retries() -> u32 {
        RETRIES
    }
    pub fn health_interval() -> String {
        HEALTH_INTERVAL.into()
    }
    pub fn proxy_header_timeout() -> String {
        PROXY_HEADER_TIMEOUT.into()
    }
    pub fn buffers() -> u16 {
        BUFFERS
    }
    pub fn buffer_size() -> usize {
        BUFFER_SIZE
    }
    pub fn prefix_v4() -> u8 {
        32
    }
    pub fn prefix_v6() -> u8 {
        64
    }
    pub fn max_clients() -> usize {
        100_000
    }
    pub const CLIENT_HELLO_TIMEOUT: &str = "5s";
    pub fn client_hello_timeout() -> String {
        CLIENT_HELLO_TIMEOUT.into()
    }
    pub const SNI_MISSING: &str = "default";
    pub fn sni_missing() -> String {
        SNI_MISSING.into()
    }
}

/// One SNI route: server names (exact, or `*.` wildcards) and the pool
/// their connections go to. In the file a table (`{ names = [...],
/// upstreams = [...] }`); as a flag `NAMES=UPSTREAMS`, names separated by
/// commas and upstreams by `|`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniRoute {
    /// Server names: `api.example.com`, `*.example.com`.
    pub names: Vec<String>,
    /// The pool: `HOST:PORT[,weight=N][,max-conns=N]` each.
    pub upstreams: Vec<String>,
}

impl std::str::FromStr for SniRoute {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let form = "expected NAME[,NAME...]=UPSTREAM[|UPSTREAM...]";
        let (names, upstreams) = text.split_once('=').ok_or(format!("{text:?}: {form}"))?;
        let names: Vec<String> =
            names.split(',').map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect();
        let upstreams: Vec<String> =
            upstreams.split('|').map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect();
        if names.is_empty() || upstreams.is_empty() {
            return Err(format!("{text:?}: {form}"));
        }
        Ok(SniRoute { names, upstreams })
    }
}

/// One forward listener and its upstream pool.
#[derive(Debug, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardOptions {
    /// A name for logs, metrics and reloads (unique per config).
    #[arg(long, default_value = defaults::NAME)]
    #[serde(default = "defaults::name")]
    pub name: String,
    /// Address to listen on (port 0 picks a free port, printed at startup).
    #[arg(long, value_parser = crate::config::parse_addr)]
    pub listen: SocketAddr,
    /// An upstream: `HOST:PORT[,weight=N][,max-conns=N]`; repeat for a pool.
    #[arg(long = "upstream", required = true)]
    pub upstreams: Vec<String>,
    /// Balancing policy: round-robin, least-conn, p2c, random or maglev.
    #[arg(long, default_value = defaults::BALANCE)]
    #[serde(default = "defaults::balance")]
    pub balance: String,
    /// Give up connecting to an upstream after this long (e.g. 3s, 500ms).
    #[arg(long, default_value = defaults::CONNECT_TIMEOUT)]
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: String,
    /// Close a connection after this long without a byte either way.
    #[arg(long, default_value = defaults::IDLE_TIMEOUT)]
    #[serde(default = "defaults::idle_timeout")]
    pub idle_timeout: String,
    /// Connections at most, across all shards (split between them).
    #[arg(long, default_value_t = defaults::MAX_CONNS)]
    #[serde(default = "defaults::max_conns")]
    pub max_conns: u32,
    /// Other upstreams to try after a failed connect.
    #[arg(long, default_value_t = defaults::RETRIES)]
    #[serde(default = "defaults::retries")]
    pub retries: u32,
    /// Send a PROXY protocol header (v1 or v2) to the upstream.
    #[arg(long)]
    #[serde(default)]
    pub proxy_protocol: Option<String>,
    /// Expect a PROXY protocol header from clients (a load balancer in front).
    #[arg(long)]
    #[serde(default)]
    pub accept_proxy: bool,
    /// With --accept-proxy: a client whose header is not complete this long
    /// after connecting is closed (and counted); the header is also bounded
    /// to 4 KiB.
    #[arg(long, default_value = defaults::PROXY_HEADER_TIMEOUT)]
    #[serde(default = "defaults::proxy_header_timeout")]
    pub proxy_header_timeout: String,
    /// Check every upstream this often (TCP connect); 0 disables checks.
    #[arg(long, default_value = defaults::HEALTH_INTERVAL)]
    #[serde(default = "defaults::health_interval")]
    pub health_interval: String,
    /// Bytes a health check sends once connected, with escapes \r \n \t
    /// \0 \\ \xHH (e.g. `PING\r\n` for Redis, or
    /// `GET /health HTTP/1.0\r\n\r\n`); without it a check is a connect.
    #[arg(long)]
    #[serde(default)]
    pub health_send: Option<String>,
    /// What the response to a health check must contain within its first
    /// 4 KiB (same escapes; e.g. `+PONG` or `HTTP/1.1 200`); a check whose
    /// response lacks it, or that gets none within the check timeout,
    /// fails.
    #[arg(long)]
    #[serde(default)]
    pub health_expect: Option<String>,
    /// The shards this service runs on, e.g. `0-3` (its shard group; default:
    /// every shard), so another service's load cannot take its cores.
    #[arg(id = "service_shards", long = "service-shards")]
    #[serde(default)]
    pub shards: Option<String>,
    /// Connections one client may have open at once (0: no cap). A client
    /// is an address masked to --client-prefix-v4 / -v6. Enforced at
    /// accept; the listening group is steered by client address so the
    /// limit is exact across shards.
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub max_conns_per_client: u32,
    /// New connections per second one client may open (token bucket; 0: no
    /// rate limit).
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub client_rate: u32,
    /// The bucket's size: new connections a client may open at once
    /// [default: client_rate].
    #[arg(long)]
    #[serde(default)]
    pub client_burst: Option<u32>,
    /// Bits of an IPv4 address that make one client.
    #[arg(long, default_value_t = 32)]
    #[serde(default = "defaults::prefix_v4")]
    pub client_prefix_v4: u8,
    /// Bits of an IPv6 address that make one client.
    #[arg(long, default_value_t = 64)]
    #[serde(default = "defaults::prefix_v6")]
    pub client_prefix_v6: u8,
    /// Clients tracked at most (across shards); a new client beyond it is
    /// refused and counted while every tracked client is live.
    #[arg(long, default_value_t = defaults::max_clients())]
    #[serde(default = "defaults::max_clients")]
    pub max_clients: usize,
    /// Route TLS connections by the server name of their ClientHello
    /// (read, never decrypted): `NAMES=UPSTREAMS` (names by commas,
    /// `*.example.com` wildcards; upstreams by `|`); repeat for more
    /// routes. Names no route has go to --upstream (the default pool).
    #[arg(long = "sni-route")]
    #[serde(default)]
    pub sni_routes: Vec<SniRoute>,
    /// With --sni-route: what a connection without a usable server name
    /// (absent, malformed, not TLS) gets: `default` (the default pool) or
    /// `refuse`.
    #[arg(long, default_value = defaults::SNI_MISSING)]
    #[serde(default = "defaults::sni_missing")]
    pub sni_missing: String,
    /// With --sni-route: a client whose ClientHello is not complete this
    /// long after connecting is closed (and counted); it is also bounded to
    /// one TLS record (16 KiB).
    #[arg(long, default_value = defaults::CLIENT_HELLO_TIMEOUT)]
    #[serde(default = "defaults::client_hello_timeout")]
    pub client_hello_timeout: String,
    /// Forward UDP datagrams (a session per client) instead of TCP
    /// connections; active health checks are TCP connects, so they are
    /// off for UDP (passive ejection still applies).
    #[arg(long)]
    #[serde(default)]
    pub udp: bool,
    /// Relay buffers per shard (provided-buffer ring entries). A connection
    /// holds none while idle and a few per direction while data flows; a
    /// direction waiting on a slow reader gives them back for a heap copy,
    /// up to a budget of buffers x buffer size per shard; when all are in
    /// use, receives wait (backpressure, counted). Raise it for many slow
    /// clients.
    #[arg(long, default_value_t = defaults::BUFFERS)]
    #[serde(default = "defaults::buffers")]
    pub buffers: u16,
    /// Size of each relay buffer in bytes. Bigger buffers move bulk
    /// transfers in fewer operations (iperf3 through the relay, one run:
    /// 16 KiB 5.4-8.4, 64 KiB 7.5-9.7, 256 KiB 9.6-12.1 Gbit/s; 1 MiB no
    /// better); small messages use only what they need of it, and only
    /// pages the kernel wrote become resident.
    #[arg(long, default_value_t = defaults::BUFFER_SIZE)]
    #[serde(default = "defaults::buffer_size")]
    pub buffer_size: usize,
}

impl ForwardOptions {
    /// The send/expect part of the active check; refused where no check runs.
    fn health_exchange(&self, src: &Source, checks_on: bool) -> Result<Exchange, ConfigError> {
        let mut exchange = Exchange::default();
        for (field, value) in [("health_send", &self.health_send), ("health_expect", &self.health_expect)] {
            let Some(text) = value else { continue };
            let bytes = check::unescape(text).map_err(|e| src.key(field).error(format!("{text:?}: {e}")))?;
            if !checks_on {
                let why = if self.udp {
                    "health checks are off for --udp"
                } else {
                    "health checks are off (interval 0)"
                };
                return Err(src.key(field).error(format!("{text:?}: {why}")));
            }
            if field == "health_send" {
                exchange.send = bytes;
            } else if bytes.is_empty() {
                return Err(src.key(field).error("\"\": give the bytes the response must contain"));
            } else if bytes.len() > Exchange::WINDOW {
                let max = Exchange::WINDOW;
                return Err(src.key(field).error(format!("{} bytes: at most {max}", bytes.len())));
            } else {
                exchange.expect = Some(Expect::new(bytes, Exchange::WINDOW));
            }
        }
        Ok(exchange)
    }

    /// The per-client limits, if any is set.
    fn client_policy(&self, src: &Source) -> Result<Option<ClientPolicy>, ConfigError> {
        if self.max_conns_per_client == 0 && self.client_rate == 0 {
            return Ok(None);
        }
        let field = if self.max_conns_per_client > 0 { "max_conns_per_client" } else { "client_rate" };
        if self.udp {
            return Err(src.key(field).error("per-client limits apply to TCP; this forward is udp"));
        }
        if self.accept_proxy {
            let why =
                "the client is in the PROXY header, which the kernel cannot steer by: limit clients on \
                       the load balancer in front";
            return Err(src.key(field).error(why));
        }
        if !(1..=32).contains(&self.client_prefix_v4) {
            return Err(src
                .key("client_prefix_v4")
                .error(format!("{}: must be 1..=32", self.client_prefix_v4)));
        }
        if !(1..=128).contains(&self.client_prefix_v6) {
            return Err(src
                .key("client_prefix_v6")
                .error(format!("{}: must be 1..=128", self.client_prefix_v6)));
        }
        if self.max_clients == 0 {
            return Err(src.key("max_clients").error("0: must be at least 1"));
        }
        let burst = self.client_burst.unwrap_or(self.client_rate).max(1);
        Ok(Some(ClientPolicy {
            max_conns: (self.max_conns_per_client > 0).then_some(self.max_conns_per_client),
            rate: (self.client_rate > 0).then_some(f64::from(self.client_rate)),
            burst,
            v4_prefix: self.client_prefix_v4,
            v6_prefix: self.client_prefix_v6,
            max_clients: self.max_clients,
        }))
    }

    /// Validates the options, resolving upstream names with the system's
    /// resolver; every error names the flag or key.
    pub fn validate(&self, src: &Source) -> Result<Arc<ForwardConfig>, ConfigError> {
        self.validate_with(src, &system_resolve_all)
    }

    /// [`ForwardOptions::validate`], resolving names with `resolve`
    /// (`[dns]`'s nameservers).
    pub fn validate_with(
        &self,
        src: &Source,
        resolve: &Resolve<'_>,
    ) -> Result<Arc<ForwardConfig>, ConfigError> {
        let key = |field: &str| src.key(field);
        if self.upstreams.is_empty() {
            return Err(key("upstreams").error("give at least one upstream HOST:PORT"));
        }
        let mut upstreams = Vec::with_capacity(self.upstreams.len());
        let mut names = Vec::new();
        let default_pool =
            add_upstreams(&self.upstreams, src, "upstreams", resolve, &mut upstreams, &mut names)?;
        let sni = self.sni(src, resolve, default_pool, &mut upstreams, &mut names)?;
        let policy = self.balance.parse().map_err(|e| key("balance").error(e))?;
        let proxy_protocol = match &self.proxy_protocol {
            Some(v) => Some(v.parse().map_err(|e: String| key("proxy_protocol").error(e))?),
            None => None,
        };
        let interval = src.duration("health_interval", &self.health_interval)?;
        let passive = HealthConfig::default();
        let health = if interval.is_zero() || self.udp {
            None
        } else {
            let cfg = HealthConfig { interval, timeout: interval.min(passive.timeout), ..passive };
            cfg.validate()
                .map_err(|e| key("health_interval").error(format!("{:?}: {e}", self.health_interval)))?;
            Some(cfg)
        };
        let exchange = self.health_exchange(src, health.is_some())?;
        if self.max_conns == 0 {
            return Err(key("max_conns").error("0: must be at least 1"));
        }
        if self.buffers == 0 || !self.buffers.is_power_of_two() {
            return Err(key("buffers").error(format!("{}: must be a power of two (e.g. 512)", self.buffers)));
        }
        if !(512..=1 << 20).contains(&self.buffer_size) {
            return Err(
                key("buffer_size").error(format!("{}: must be 512..=1048576 bytes", self.buffer_size))
            );
        }
        Ok(Arc::new(ForwardConfig {
            name: self.name.clone(),
            listen: self.listen,
            upstreams,
            names,
            sni,
            policy,
            connect_timeout: src.duration("connect_timeout", &self.connect_timeout)?,
            idle_timeout: src.duration("idle_timeout", &self.idle_timeout)?,
            max_conns: self.max_conns,
            retries: self.retries,
            proxy_protocol,
            accept_proxy: self.accept_proxy,
            proxy_header_timeout: nonzero(src, "proxy_header_timeout", &self.proxy_header_timeout)?,
            health,
            exchange,
            passive,
            buffers: self.buffers,
            buffer_size: self.buffer_size,
            udp: self.udp,
            group: src.group(&self.shards)?,
            clients: self.client_policy(src)?,
        }))
    }
}

/// Parses `values` (the key `field`) into `upstreams` and `names`: the
/// entries (`HOST:PORT` of a literal or a name) they make a pool of. An
/// address already in `upstreams` is an error within one list and shared
/// between lists (a route may reuse a default upstream).
fn add_upstreams(
    values: &[String],
    src: &Source,
    field: &str,
    resolve: &Resolve<'_>,
    upstreams: &mut Vec<UpstreamSpec>,
    names: &mut Vec<DnsName>,
) -> Result<Vec<String>, ConfigError> {
    let mut pool: Vec<String> = Vec::new();
    for (i, u) in values.iter().enumerate() {
        let item = || src.item(field, i);
        let (specs, name) = DnsName::parse_with(u, resolve).map_err(|e| item().error(e))?;
        let entry = name.as_ref().map_or_else(|| specs[0].name.clone(), |n| n.label.clone());
        if pool.contains(&entry) {
            return Err(item().error(format!("{u:?}: upstream given twice")));
        }
        for spec in specs {
            match upstreams.iter().find(|s| s.addr == spec.addr) {
                // The same entry in another list: one upstream, in both pools.
                Some(s) if s.name == spec.name => {}
                Some(s) => {
                    let twice = format!("{u:?}: {} is already in the pool (as {})", spec.addr, s.name);
                    return Err(item().error(twice));
                }
                None => upstreams.push(spec),
            }
        }
        if let Some(n) = name {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        pool.push(entry);
    }
    Ok(pool)
}

impl ForwardOptions {
    /// The SNI routes, their upstreams added to the service's.
    fn sni(
        &self,
        src: &Source,
        resolve: &Resolve<'_>,
        default_pool: Vec<String>,
        upstreams: &mut Vec<UpstreamSpec>,
        names: &mut Vec<DnsName>,
    ) -> Result<Option<SniConfig>, ConfigError> {
        if self.sni_routes.is_empty() {
            return Ok(None);
        }
        if self.udp {
            return Err(src
                .key("sni_routes")
                .error("SNI routes are for TLS over TCP; drop udp or the routes"));
        }
        let mut pools = vec![default_pool];
        for (i, r) in self.sni_routes.iter().enumerate() {
            let field = format!("sni_routes[{i}].upstreams");
            if r.upstreams.is_empty() || r.names.is_empty() {
                return Err(src.item("sni_routes", i).error("a route needs names and at least one upstream"));
            }
            pools.push(add_upstreams(&r.upstreams, src, &field, resolve, upstreams, names)?);
        }
        let routes = Routes::new(self.sni_routes.iter().enumerate().map(|(i, r)| (r.names.as_slice(), i)))
            .map_err(|e| src.key("sni_routes").error(e))?;
        let missing = match self.sni_missing.as_str() {
            "default" => Missing::Default,
            "refuse" => Missing::Refuse,
            other => {
                return Err(src.key("sni_missing").error(format!("{other:?}: expected default or refuse")))
            }
        };
        let hello_timeout = nonzero(src, "client_hello_timeout", &self.client_hello_timeout)?;
        Ok(Some(SniConfig { routes, pools, missing, hello_timeout }))
    }
}

/// How a forward resolves an upstream name: every address (IPv4 ones when
/// there are any, else IPv6).
pub type Resolve<'a> = dyn Fn(&str, u16) -> std::io::Result<Vec<std::net::IpAddr>> + 'a;

/// The system resolver (`getaddrinfo`), for flags.
fn system_resolve_all(host: &str, port: u16) -> std::io::Result<Vec<std::net::IpAddr>> {
    use std::net::ToSocketAddrs as _;
    let all: Vec<std::net::IpAddr> = (host, port).to_socket_addrs()?.map(|a| a.ip()).collect();
    let v4: Vec<std::net::IpAddr> = all.iter().copied().filter(std::net::IpAddr::is_ipv4).collect();
    Ok(if v4.is_empty() { all } else { v4 })
}

/// A duration that must be above zero.
fn nonzero(src: &Source, field: &str, value: &str) -> Result<std::time::Duration, ConfigError> {
    let d = src.duration(field, value)?;
    if d.is_zero() {
        return Err(src.key(field).error(format!("{value:?}: must be above zero (e.g. 5s)")));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_as_a_flag() {
        let r: SniRoute = "api.test, *.api.test=127.0.0.1:1|127.0.0.1:2,weight=3".parse().expect("route");
        assert_eq!(r.names, ["api.test", "*.api.test"]);
        assert_eq!(r.upstreams, ["127.0.0.1:1", "127.0.0.1:2,weight=3"]);
        for bad in ["api.test", "=127.0.0.1:1", "api.test="] {
            assert!(bad.parse::<SniRoute>().is_err(), "{bad}");
        }
    }

    /// An upstream in the default pool and a route is one upstream in
    /// both pools; an address under two names is an error.
    #[test]
    fn pools_share_upstreams_by_entry() {
        let opts = |routes: &str| -> Result<Arc<ForwardConfig>, ConfigError> {
            let text = format!(
                "[[forward]]\nlisten = \"127.0.0.1:0\"\nupstreams = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\nsni_routes = [{routes}]\n"
            );
            let file: crate::config::FileConfig = toml::from_str(&text).expect("toml");
            file.forward[0].validate(&Source::Flags)
        };
        let f =
            opts("{ names = [\"a.test\"], upstreams = [\"127.0.0.1:2\", \"127.0.0.1:3\"] }").expect("valid");
        assert_eq!(f.upstreams.len(), 3);
        let sni = f.sni.as_ref().expect("sni");
        assert_eq!(sni.pools, [vec!["127.0.0.1:1", "127.0.0.1:2"], vec!["127.0.0.1:2", "127.0.0.1:3"]]);
        let m = crate::services::forward::sni::members(sni, &f.upstreams, &f.names);
        assert_eq!(m, [vec![true, true, false], vec![false, true, true]]);
        let err =
            opts("{ names = [\"a.test\"], upstreams = [\"127.0.0.1:3\", \"127.0.0.1:3\"] }").unwrap_err();
        assert!(err.message.contains("twice"), "{err}");
    }
}
