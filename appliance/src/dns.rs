//! Resolving upstream names (`[dns]`, see `config::dns`): hickory-resolver, run on a small
//! Tokio runtime of its own, off the shards (a lookup never blocks the
//! data path). Used at validation (a name must resolve for a config to be
//! valid) and by the re-resolving thread (`crate::app::dns`), with the
//! same nameservers.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

/// `[dns]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// The nameservers; empty: the system's (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// Re-resolve no sooner than this after an answer; retry a failure after this.
    pub min_ttl: Duration,
    /// Re-resolve at least this often, whatever the record's TTL.
    pub max_ttl: Duration,
    /// How long one query to one nameserver may take.
    pub timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            nameservers: Vec::new(),
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(300),
            timeout: Duration::from_secs(2),
        }
    }
}

/// A blocking resolver: each lookup runs to completion on the resolver's
/// own single-threaded Tokio runtime.
pub struct Resolver {
    rt: tokio::runtime::Runtime,
    inner: TokioResolver,
    cfg: DnsConfig,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").field("cfg", &self.cfg).finish()
    }
}

/// One answer: the addresses and how long they may be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// IPv4 addresses when the name has any, else IPv6 ones.
    pub addrs: Vec<IpAddr>,
    /// The records' TTL within `min_ttl..=max_ttl`.
    pub ttl: Duration,
}

impl Resolver {
    /// A resolver for `cfg`'s nameservers (or the system's).
    pub fn new(cfg: &DnsConfig) -> Result<Resolver, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("DNS runtime: {e}"))?;
        let provider = TokioRuntimeProvider::default();
        let mut builder = if cfg.nameservers.is_empty() {
            TokioResolver::builder(provider).map_err(|e| format!("reading /etc/resolv.conf: {e}"))?
        } else {
            let servers = cfg
                .nameservers
                .iter()
                .map(|ns| {
                    let conn = |mut c: ConnectionConfig| {
                        c.port = ns.port();
                        c
                    };
                    NameServerConfig::new(
                        ns.ip(),
                        true,
                        vec![conn(ConnectionConfig::udp()), conn(ConnectionConfig::tcp())],
                    )
                })
                .collect();
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = cfg.timeout;
        opts.attempts = 2;
        opts.ip_strategy = LookupIpStrategy::Ipv4thenIpv6;
        opts.positive_min_ttl = Some(cfg.min_ttl);
        opts.positive_max_ttl = Some(cfg.max_ttl);
        opts.negative_max_ttl = Some(cfg.min_ttl);
        let inner = {
            let _entered = rt.enter();
            builder.build().map_err(|e| format!("DNS resolver: {e}"))?
        };
        Ok(Resolver { rt, inner, cfg: cfg.clone() })
    }

    /// Looks `host` up (blocking, bounded by the timeout and attempts).
    pub fn lookup(&self, host: &str) -> Result<Answer, String> {
        let started = Instant::now();
        let lookup = self.rt.block_on(self.inner.lookup_ip(host)).map_err(|e| e.to_string())?;
        let addrs: Vec<IpAddr> = lookup.iter().collect();
        let ttl = lookup.valid_until().saturating_duration_since(started);
        Ok(Answer { addrs, ttl: ttl.clamp(self.cfg.min_ttl, self.cfg.max_ttl) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nameserver_that_is_not_there_fails_within_the_timeout() {
        // A UDP port that answers nothing: the lookup gives up, bounded.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let cfg = DnsConfig {
            nameservers: vec![silent.local_addr().expect("addr")],
            timeout: Duration::from_millis(100),
            ..DnsConfig::default()
        };
        let r = Resolver::new(&cfg).expect("resolver");
        let t = Instant::now();
        assert!(r.lookup("nowhere.test").is_err());
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(
            r.lookup("10.1.2.3").expect("literal").addrs,
            vec!["10.1.2.3".parse::<IpAddr>().expect("ip")]
        );
    }
}
