//! `[dns]`: how upstream names are resolved (`crate::dns`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use super::{duration, ConfigError, Key};
use crate::dns::DnsConfig;

/// `[dns]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsOptions {
    /// `IP` or `IP:PORT` (default port 53); default: `/etc/resolv.conf`.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// Re-resolve no sooner than this after an answer, and retry a failed
    /// lookup after this [default: 1s].
    pub min_ttl: Option<String>,
    /// Re-resolve at least this often, whatever the record's TTL [default: 300s].
    pub max_ttl: Option<String>,
    /// How long one query to one nameserver may take [default: 2s].
    pub timeout: Option<String>,
}

impl DnsOptions {
    /// Checks the table; errors name `dns.KEY`.
    pub fn validate(&self) -> Result<DnsConfig, ConfigError> {
        let key = |f: &str| Key(format!("dns.{f}"));
        let mut cfg = DnsConfig::default();
        for (i, ns) in self.nameservers.iter().enumerate() {
            let addr = ns
                .parse::<SocketAddr>()
                .or_else(|_| ns.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| {
                    Key(format!("dns.nameservers[{i}]")).error(format!("{ns:?}: expected IP or IP:PORT"))
                })?;
            cfg.nameservers.push(addr);
        }
        if let Some(v) = &self.min_ttl {
            cfg.min_ttl = duration(key("min_ttl"), v)?;
        }
        if let Some(v) = &self.max_ttl {
            cfg.max_ttl = duration(key("max_ttl"), v)?;
        }
        if let Some(v) = &self.timeout {
            cfg.timeout = duration(key("timeout"), v)?;
        }
        if cfg.min_ttl < Duration::from_millis(100) {
            return Err(key("min_ttl").error("at least 100ms (every name is looked up that often at most)"));
        }
        if cfg.max_ttl < cfg.min_ttl {
            return Err(key("max_ttl").error("must not be below min_ttl"));
        }
        if cfg.timeout.is_zero() || cfg.timeout > Duration::from_secs(30) {
            return Err(key("timeout").error("between 1ms and 30s"));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_checked() {
        let opts = |ns: &[&str], min: Option<&str>, max: Option<&str>| DnsOptions {
            nameservers: ns.iter().map(|s| s.to_string()).collect(),
            min_ttl: min.map(String::from),
            max_ttl: max.map(String::from),
            timeout: None,
        };
        let ok = opts(&["127.0.0.1", "[::1]:5353"], Some("200ms"), None).validate().expect("valid");
        assert_eq!(
            ok.nameservers,
            vec!["127.0.0.1:53".parse().expect("addr"), "[::1]:5353".parse().expect("addr")]
        );
        assert_eq!((ok.min_ttl, ok.max_ttl), (Duration::from_millis(200), Duration::from_secs(300)));
        let e = opts(&["dns.example"], None, None).validate().unwrap_err();
        assert_eq!(e.key, "dns.nameservers[0]");
        assert_eq!(opts(&[], Some("10ms"), None).validate().unwrap_err().key, "dns.min_ttl");
        assert_eq!(opts(&[], Some("5s"), Some("1s")).validate().unwrap_err().key, "dns.max_ttl");
    }
}
