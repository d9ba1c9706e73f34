//! Upstream specifications as written on the command line or in a config
//! file: `HOST:PORT[,weight=N][,max-conns=N]`, and the duration syntax the
//! forwarder's flags share (`250ms`, `3s`, `10m`, `1h`, a bare number of
//! seconds).
//!
//! Parsing is the only place a name is resolved, once, at startup: the data
//! path never waits on DNS. Resolution goes through a closure
//! ([`UpstreamSpec::parse_with`]) so tests and fuzzing never touch the
//! network; [`UpstreamSpec::parse`] plugs in the system resolver.
//!
//! An upstream's `name` is the `HOST:PORT` text as given, not the options:
//! it labels the upstream's statistics and seeds its Maglev permutation
//! (`super::maglev`), and neither should change when only its weight or
//! limit does.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// The accepted form of an `--upstream` value, quoted in error messages.
pub const UPSTREAM_FORM: &str = "HOST:PORT[,weight=N][,max-conns=N]";

/// The largest weight an upstream may have. Bounded so that weight sums and
/// Maglev tables stay small, and because a ratio beyond 1000:1 is better
/// expressed by removing the light upstream.
pub const MAX_WEIGHT: u32 = 1000;

/// One upstream (backend) the forwarder balances over.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamSpec {
    /// The resolved address (the first one the resolver returned).
    pub addr: SocketAddr,
    /// Relative share of new connections, `1..=MAX_WEIGHT`.
    pub weight: u32,
    /// Concurrent connections allowed across all shards; `None` is no limit.
    pub max_conns: Option<u32>,
    /// The `HOST:PORT` text as given, for statistics and consistent hashing.
    pub name: String,
    /// What the operator set at run time (the admin endpoint's upstream
    /// API); never part of the text form, so a re-read file makes every
    /// upstream ready again.
    pub state: AdminState,
}

/// An upstream's state as the operator sets it, beside its health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum AdminState {
    /// Takes new connections when healthy.
    #[default]
    Ready,
    /// Takes no new connections; established ones finish; still checked.
    Drain,
    /// Maintenance: no new connections, no health checks; established
    /// ones finish.
    Maint,
}

impl AdminState {
    /// `ready`, `drain` or `maint`.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }

    /// The state named `text` (as [`AdminState::as_str`] writes it).
    pub fn parse(text: &str) -> Option<AdminState> {
        [AdminState::Ready, AdminState::Drain, AdminState::Maint].into_iter().find(|s| s.as_str() == text)
    }
}

/// Why an `--upstream` value was rejected. Every message starts with the
/// value as given and ends with what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The value (or its `HOST:PORT` part) is empty.
    #[error("{value:?}: empty address (expected {UPSTREAM_FORM})")]
    Empty {
        /// The value as given.
        value: String,
    },
    /// No `:PORT` after the host.
    #[error("{value:?}: missing port (expected {UPSTREAM_FORM})")]
    MissingPort {
        /// The value as given.
        value: String,
    },
    /// The port is not a number in `1..=65535`.
    #[error("{value:?}: port {port:?} must be 1..=65535")]
    InvalidPort {
        /// The value as given.
        value: String,
        /// The port text.
        port: String,
    },
    /// An IPv6 address written without brackets, so its port is ambiguous.
    #[error("{value:?}: IPv6 addresses need brackets, e.g. [::1]:80")]
    UnbracketedIpv6 {
        /// The value as given.
        value: String,
    },
    /// The host is neither an IP address nor a well-formed DNS name.
    #[error("{value:?}: invalid host {host:?} (expected an IPv4 address, [IPv6] or a DNS name)")]
    InvalidHost {
        /// The value as given.
        value: String,
        /// The host text.
        host: String,
    },
    /// The resolver failed for this host.
    #[error("{value:?}: cannot resolve {host:?}: {reason} (check the name or give an IP address)")]
    Resolve {
        /// The value as given.
        value: String,
        /// The host that was looked up.
        host: String,
        /// The resolver's error.
        reason: String,
    },
    /// The resolver succeeded but returned no address.
    #[error("{value:?}: {host:?} resolved to no address (give an IP address)")]
    NoAddress {
        /// The value as given.
        value: String,
        /// The host that was looked up.
        host: String,
    },
    /// `weight=` is not a number in `1..=MAX_WEIGHT`.
    #[error("{value:?}: weight must be 1..={MAX_WEIGHT}")]
    Weight {
        /// The value as given.
        value: String,
    },
    /// `max-conns=` is not a positive number.
    #[error("{value:?}: max-conns must be 1..={} (omit it for no limit)", u32::MAX)]
    MaxConns {
        /// The value as given.
        value: String,
    },
    /// An option other than `weight` or `max-conns`.
    #[error("{value:?}: unknown option {option:?} (expected weight=N or max-conns=N)")]
    UnknownOption {
        /// The value as given.
        value: String,
        /// The option's name.
        option: String,
    },
    /// An option without `=N`, or an empty option between commas.
    #[error("{value:?}: option {option:?} needs a value (expected {UPSTREAM_FORM})")]
    MissingValue {
        /// The value as given.
        value: String,
        /// The option as written.
        option: String,
    },
    /// The same option given twice.
    #[error("{value:?}: option {option:?} given twice")]
    DuplicateOption {
        /// The value as given.
        value: String,
        /// The option's name.
        option: String,
    },
    /// Two upstreams with the same `HOST:PORT`.
    #[error("{value:?}: upstream {name:?} given twice")]
    Duplicate {
        /// The second value.
        value: String,
        /// The `HOST:PORT` both share.
        name: String,
    },
    /// The list of upstreams is empty.
    #[error("no upstreams: give at least one --upstream {UPSTREAM_FORM}")]
    NoUpstreams,
}

impl UpstreamSpec {
    /// Parses one value, resolving a host name with the system resolver
    /// (blocking; call at startup only).
    pub fn parse(value: &str) -> Result<Self, UpstreamError> {
        Self::parse_with(value, system_resolve)
    }

    /// Parses one value, resolving a host name with `resolve(host, port)`,
    /// which returns the first address or `None`. Literal IP addresses never
    /// reach the resolver.
    pub fn parse_with<R>(value: &str, resolve: R) -> Result<Self, UpstreamError>
    where
        R: FnOnce(&str, u16) -> io::Result<Option<SocketAddr>>,
    {
        let Checked { addr_text, target, weight, max_conns } = check(value)?;
        let addr = match target {
            Target::Addr(addr) => addr,
            Target::Name(host, port) => resolve_name(value, host, port, resolve)?,
        };
        Ok(Self { addr, weight, max_conns, name: addr_text.to_owned(), state: AdminState::Ready })
    }

    /// Parses every value (system resolver) and rejects an empty list or a
    /// `HOST:PORT` given twice (their statistics would collide).
    pub fn parse_all<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Vec<Self>, UpstreamError> {
        Self::parse_all_with(values, system_resolve)
    }

    /// [`UpstreamSpec::parse_all`] with a given resolver.
    pub fn parse_all_with<'a, R>(
        values: impl IntoIterator<Item = &'a str>,
        resolve: R,
    ) -> Result<Vec<Self>, UpstreamError>
    where
        R: Fn(&str, u16) -> io::Result<Option<SocketAddr>>,
    {
        let mut specs = Vec::new();
        let mut names = HashSet::new();
        for value in values {
            let spec = Self::parse_with(value, &resolve)?;
            if !names.insert(spec.name.clone()) {
                return Err(UpstreamError::Duplicate { value: value.to_owned(), name: spec.name });
            }
            specs.push(spec);
        }
        if specs.is_empty() {
            return Err(UpstreamError::NoUpstreams);
        }
        Ok(specs)
    }
}

/// The canonical form, which parses back to the same spec: the name, then
/// only the options that differ from their defaults.
impl fmt::Display for UpstreamSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if self.weight != 1 {
            write!(f, ",weight={}", self.weight)?;
        }
        if let Some(max) = self.max_conns {
            write!(f, ",max-conns={max}")?;
        }
        Ok(())
    }
}

/// An upstream given by host name: re-resolved at run time, each of its
/// addresses one upstream named `HOST:PORT/IP` (statistics and Maglev
/// follow the address, whatever else the answer holds).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DnsName {
    /// The host name.
    pub host: String,
    /// The port every address is reached on.
    pub port: u16,
    /// Each address's weight.
    pub weight: u32,
    /// Each address's connection limit.
    pub max_conns: Option<u32>,
    /// `HOST:PORT` as given.
    pub label: String,
}

impl DnsName {
    /// One upstream per address, in the answer's order (duplicates once).
    pub fn specs(&self, addrs: &[IpAddr]) -> Vec<UpstreamSpec> {
        let mut seen = HashSet::new();
        addrs
            .iter()
            .filter(|ip| seen.insert(**ip))
            .map(|ip| UpstreamSpec {
                addr: SocketAddr::new(*ip, self.port),
                weight: self.weight,
                max_conns: self.max_conns,
                name: format!("{}/{ip}", self.label),
                state: AdminState::Ready,
            })
            .collect()
    }

    /// Whether `spec` is one of this name's addresses.
    pub fn owns(&self, spec: &UpstreamSpec) -> bool {
        spec.name.strip_prefix(self.label.as_str()).is_some_and(|rest| rest.starts_with('/'))
    }

    /// Parses one configured value: a literal address is one upstream (no
    /// name); a host name is resolved with `resolve_all(host, port)` and
    /// gives one upstream per address, and the name to re-resolve.
    pub fn parse_with<R>(
        value: &str,
        resolve_all: R,
    ) -> Result<(Vec<UpstreamSpec>, Option<DnsName>), UpstreamError>
    where
        R: FnOnce(&str, u16) -> io::Result<Vec<IpAddr>>,
    {
        let Checked { addr_text, target, weight, max_conns } = check(value)?;
        match target {
            Target::Addr(addr) => {
                let name = addr_text.to_owned();
                Ok((vec![UpstreamSpec { addr, weight, max_conns, name, state: AdminState::Ready }], None))
            }
            Target::Name(host, port) => {
                let dns =
                    DnsName { host: host.to_owned(), port, weight, max_conns, label: addr_text.to_owned() };
                let addrs = resolve_all(host, port).map_err(|e| UpstreamError::Resolve {
                    value: value.to_owned(),
                    host: host.to_owned(),
                    reason: e.to_string(),
                })?;
                let specs = dns.specs(&addrs);
                if specs.is_empty() {
                    return Err(UpstreamError::NoAddress { value: value.to_owned(), host: host.to_owned() });
                }
                Ok((specs, Some(dns)))
            }
        }
    }
}

fn system_resolve(host: &str, port: u16) -> io::Result<Option<SocketAddr>> {
    Ok((host, port).to_socket_addrs()?.next())
}

/// A value checked whole before any lookup, so a typo in an option is
/// reported as such rather than after a DNS timeout.
struct Checked<'t> {
    addr_text: &'t str,
    target: Target<'t>,
    weight: u32,
    max_conns: Option<u32>,
}

fn check(value: &str) -> Result<Checked<'_>, UpstreamError> {
    let (addr_text, options) = match value.split_once(',') {
        Some((addr, options)) => (addr.trim(), Some(options)),
        None => (value.trim(), None),
    };
    let target = parse_target(value, addr_text)?;
    let (weight, max_conns) = match options {
        Some(options) => parse_options(value, options)?,
        None => (1, None),
    };
    Ok(Checked { addr_text, target, weight, max_conns })
}

/// What a `HOST:PORT` names: an address, or a host name still to resolve.
enum Target<'t> {
    Addr(SocketAddr),
    Name(&'t str, u16),
}

/// `HOST:PORT` checked: a literal socket address first (the common case),
/// else a well-formed host name and port.
fn parse_target<'t>(value: &str, text: &'t str) -> Result<Target<'t>, UpstreamError> {
    if text.is_empty() {
        return Err(UpstreamError::Empty { value: value.to_owned() });
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(UpstreamError::InvalidPort { value: value.to_owned(), port: "0".into() });
        }
        return Ok(Target::Addr(addr));
    }
    let (host, port) = split_host_port(value, text)?;
    // Forms the std parser declines but we accept (e.g. a port with leading
    // zeros) still need no resolver.
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Target::Addr(SocketAddr::new(ip, port)));
    }
    if !is_dns_name(host) {
        return Err(UpstreamError::InvalidHost { value: value.to_owned(), host: host.to_owned() });
    }
    Ok(Target::Name(host, port))
}

fn resolve_name<R>(value: &str, host: &str, port: u16, resolve: R) -> Result<SocketAddr, UpstreamError>
where
    R: FnOnce(&str, u16) -> io::Result<Option<SocketAddr>>,
{
    match resolve(host, port) {
        Ok(Some(addr)) => Ok(addr),
        Ok(None) => Err(UpstreamError::NoAddress { value: value.to_owned(), host: host.to_owned() }),
        Err(e) => Err(UpstreamError::Resolve {
            value: value.to_owned(),
            host: host.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// Splits `host:port` or `[v6]:port`, validating the port.
fn split_host_port<'t>(value: &str, text: &'t str) -> Result<(&'t str, u16), UpstreamError> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(UpstreamError::InvalidHost { value: value.to_owned(), host: text.to_owned() });
        };
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(UpstreamError::InvalidHost { value: value.to_owned(), host: host.to_owned() });
        }
        match after.strip_prefix(':') {
            Some(port) => (host, port),
            None if after.is_empty() => return Err(UpstreamError::MissingPort { value: value.to_owned() }),
            None => {
                return Err(UpstreamError::InvalidHost { value: value.to_owned(), host: text.to_owned() })
            }
        }
    } else {
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(UpstreamError::MissingPort { value: value.to_owned() });
        };
        if host.contains(':') {
            return Err(UpstreamError::UnbracketedIpv6 { value: value.to_owned() });
        }
        (host, port)
    };
    if port.is_empty() {
        return Err(UpstreamError::MissingPort { value: value.to_owned() });
    }
    // Digits only: `u16::from_str` would also take "+80".
    match port.parse::<u16>() {
        Ok(p) if p != 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok((host, p)),
        _ => Err(UpstreamError::InvalidPort { value: value.to_owned(), port: port.to_owned() }),
    }
}

/// RFC 1123 host names (letters, digits, hyphens; labels of 1..=63 bytes,
/// not starting or ending with a hyphen; one trailing dot allowed), plus
/// `_` which service-discovery names use. Checked before resolving so that
/// garbage never reaches the resolver and errors say "invalid host" rather
/// than whatever the resolver makes of it.
fn is_dns_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > 253 {
        return false;
    }
    host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// `weight=N` and `max-conns=N`, comma-separated, each at most once.
fn parse_options(value: &str, options: &str) -> Result<(u32, Option<u32>), UpstreamError> {
    let mut weight = None;
    let mut max_conns = None;
    for option in options.split(',').map(str::trim) {
        let Some((name, number)) = option.split_once('=') else {
            return Err(UpstreamError::MissingValue { value: value.to_owned(), option: option.to_owned() });
        };
        let (name, number) = (name.trim(), number.trim());
        let slot = match name {
            "weight" => &mut weight,
            "max-conns" => &mut max_conns,
            _ => {
                return Err(UpstreamError::UnknownOption { value: value.to_owned(), option: name.to_owned() })
            }
        };
        if slot.is_some() {
            return Err(UpstreamError::DuplicateOption { value: value.to_owned(), option: name.to_owned() });
        }
        *slot = Some(number.parse::<u32>().ok());
    }
    let weight = match weight {
        None => 1,
        Some(Some(w)) if (1..=MAX_WEIGHT).contains(&w) => w,
        Some(_) => return Err(UpstreamError::Weight { value: value.to_owned() }),
    };
    let max_conns = match max_conns {
        None => None,
        Some(Some(m)) if m >= 1 => Some(m),
        Some(_) => return Err(UpstreamError::MaxConns { value: value.to_owned() }),
    };
    Ok((weight, max_conns))
}

/// Why a duration flag was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not a whole number followed by an optional unit.
    #[error(
        "invalid duration {value:?} (expected a whole number with an optional unit us, ms, s, m or h, \
         e.g. 250ms, 3s, 10m, 1h; a bare number is seconds)"
    )]
    Invalid {
        /// The text as given.
        value: String,
    },
    /// A well-formed duration too long to represent.
    #[error("duration {value:?} is too long (use a smaller number or unit)")]
    TooLong {
        /// The text as given.
        value: String,
    },
}

/// Parses `50us`, `250ms`, `3s`, `10m`, `1h` or `2` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid { value: text.to_owned() };
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    // `digits` counts ASCII bytes from the start, so it is a char boundary.
    let (number, unit) = text.split_at(digits);
    if number.is_empty() {
        return Err(invalid());
    }
    let n: u64 = number.parse().map_err(|_| DurationError::TooLong { value: text.to_owned() })?;
    let seconds_per = match unit {
        "us" => return Ok(Duration::from_micros(n)),
        "ms" => return Ok(Duration::from_millis(n)),
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(invalid()),
    };
    n.checked_mul(seconds_per)
        .map(Duration::from_secs)
        .ok_or(DurationError::TooLong { value: text.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    /// A resolver that knows one name, so tests never touch DNS.
    fn fake(host: &str, port: u16) -> io::Result<Option<SocketAddr>> {
        match host {
            "backend.test" => Ok(Some(SocketAddr::from(([192, 0, 2, 7], port)))),
            "empty.test" => Ok(None),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such host")),
        }
    }

    fn parse(value: &str) -> Result<UpstreamSpec, UpstreamError> {
        UpstreamSpec::parse_with(value, fake)
    }

    #[test]
    fn parses_the_documented_forms() {
        let a = parse("10.0.0.1:80").unwrap();
        assert_eq!(a.addr, SocketAddr::from(([10, 0, 0, 1], 80)));
        assert_eq!((a.weight, a.max_conns, a.name.as_str()), (1, None, "10.0.0.1:80"));

        let b = parse("10.0.0.2:80,weight=3").unwrap();
        assert_eq!((b.weight, b.max_conns, b.name.as_str()), (3, None, "10.0.0.2:80"));

        let c = parse("[::1]:80,weight=2,max-conns=100").unwrap();
        assert_eq!(c.addr, "[::1]:80".parse().unwrap());
        assert_eq!((c.weight, c.max_conns, c.name.as_str()), (2, Some(100), "[::1]:80"));

        let d = parse("backend.test:8080, max-conns = 5 ,weight=1000").unwrap();
        assert_eq!(d.addr, SocketAddr::from(([192, 0, 2, 7], 8080)));
        assert_eq!((d.weight, d.max_conns, d.name.as_str()), (1000, Some(5), "backend.test:8080"));
    }

    #[test]
    fn resolves_localhost_with_the_system_resolver() {
        let spec = UpstreamSpec::parse("localhost:8080").unwrap();
        assert!(spec.addr.ip().is_loopback(), "{spec:?}");
        assert_eq!(spec.addr.port(), 8080);
        assert_eq!(spec.name, "localhost:8080");
    }

    #[test]
    fn error_messages_name_the_value_and_the_fix() {
        let msg = |v: &str| parse(v).unwrap_err().to_string();
        assert_eq!(
            msg("10.0.0.1"),
            r#""10.0.0.1": missing port (expected HOST:PORT[,weight=N][,max-conns=N])"#
        );
        assert_eq!(msg("a:80,weight=0"), r#""a:80,weight=0": weight must be 1..=1000"#);
        assert_eq!(msg("a:80,weight=1001"), r#""a:80,weight=1001": weight must be 1..=1000"#);
        assert_eq!(msg("a:80,weight=x"), r#""a:80,weight=x": weight must be 1..=1000"#);
        assert_eq!(
            msg("a:80,wieght=2"),
            r#""a:80,wieght=2": unknown option "wieght" (expected weight=N or max-conns=N)"#
        );
        assert_eq!(
            msg("nowhere.test:80"),
            r#""nowhere.test:80": cannot resolve "nowhere.test": no such host (check the name or give an IP address)"#
        );
        assert!(msg("a:80,max-conns=0").contains("max-conns must be 1..=4294967295 (omit it for no limit)"));
    }

    #[test]
    fn rejects_each_kind_of_mistake() {
        type IsExpected = fn(&UpstreamError) -> bool;
        let cases: &[(&str, IsExpected)] = &[
            ("", |e| matches!(e, UpstreamError::Empty { .. })),
            (" ,weight=2", |e| matches!(e, UpstreamError::Empty { .. })),
            ("host", |e| matches!(e, UpstreamError::MissingPort { .. })),
            ("host:", |e| matches!(e, UpstreamError::MissingPort { .. })),
            ("[::1]", |e| matches!(e, UpstreamError::MissingPort { .. })),
            ("10.0.0.1:0", |e| matches!(e, UpstreamError::InvalidPort { .. })),
            ("10.0.0.1:65536", |e| matches!(e, UpstreamError::InvalidPort { .. })),
            ("host:http", |e| matches!(e, UpstreamError::InvalidPort { .. })),
            ("host:+80", |e| matches!(e, UpstreamError::InvalidPort { .. })),
            ("[::1]:0", |e| matches!(e, UpstreamError::InvalidPort { .. })),
            ("::1:80", |e| matches!(e, UpstreamError::UnbracketedIpv6 { .. })),
            ("[::1:80", |e| matches!(e, UpstreamError::InvalidHost { .. })),
            ("[nope]:80", |e| matches!(e, UpstreamError::InvalidHost { .. })),
            ("[::1]x:80", |e| matches!(e, UpstreamError::InvalidHost { .. })),
            ("bad host:80", |e| matches!(e, UpstreamError::InvalidHost { .. })),
            ("-a.test:80", |e| matches!(e, UpstreamError::InvalidHost { .. })),
            ("a..test:80", |e| matches!(e, UpstreamError::InvalidHost { .. })),
            ("empty.test:80", |e| matches!(e, UpstreamError::NoAddress { .. })),
            ("a:80,", |e| matches!(e, UpstreamError::MissingValue { .. })),
            ("a:80,weight", |e| matches!(e, UpstreamError::MissingValue { .. })),
            ("a:80,weight=2,weight=3", |e| matches!(e, UpstreamError::DuplicateOption { .. })),
            ("a:80,max-conns=-1", |e| matches!(e, UpstreamError::MaxConns { .. })),
        ];
        for (value, is_expected) in cases {
            let err = parse(value).unwrap_err();
            assert!(is_expected(&err), "{value:?} gave {err:?}");
            if !matches!(err, UpstreamError::NoUpstreams) {
                assert!(err.to_string().starts_with(&format!("{value:?}: ")), "{err}");
            }
        }
    }

    #[test]
    fn a_name_is_resolved_only_when_not_a_literal() {
        let spec = UpstreamSpec::parse_with("192.0.2.1:80", |_, _| panic!("resolver called")).unwrap();
        assert_eq!(spec.addr, SocketAddr::from(([192, 0, 2, 1], 80)));
        let spec = UpstreamSpec::parse_with("[2001:db8::1]:443", |_, _| panic!("resolver called")).unwrap();
        assert_eq!(spec.addr.port(), 443);
    }

    #[test]
    fn parse_all_rejects_duplicates_and_empty_lists() {
        let specs = UpstreamSpec::parse_all_with(["10.0.0.1:80", "10.0.0.2:80,weight=2"], fake).unwrap();
        assert_eq!(specs.len(), 2);
        let err = UpstreamSpec::parse_all_with(["10.0.0.1:80", "10.0.0.1:80,weight=2"], fake).unwrap_err();
        assert_eq!(err.to_string(), r#""10.0.0.1:80,weight=2": upstream "10.0.0.1:80" given twice"#);
        assert_eq!(UpstreamSpec::parse_all_with([], fake).unwrap_err(), UpstreamError::NoUpstreams);
    }

    #[test]
    fn display_is_the_canonical_form() {
        assert_eq!(parse("10.0.0.1:80,weight=1").unwrap().to_string(), "10.0.0.1:80");
        assert_eq!(
            parse("[::1]:80,max-conns=9,weight=2").unwrap().to_string(),
            "[::1]:80,weight=2,max-conns=9"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "s", "-1s", "1.5s", "3 s", " 3s", "3sec", "3S", "1d", "ms"] {
            assert_eq!(parse_duration(bad), Err(DurationError::Invalid { value: bad.into() }), "{bad:?}");
        }
        assert!(matches!(parse_duration("99999999999999999999"), Err(DurationError::TooLong { .. })));
        assert!(matches!(parse_duration("18446744073709551615h"), Err(DurationError::TooLong { .. })));
        assert_eq!(
            parse_duration("3x").unwrap_err().to_string(),
            "invalid duration \"3x\" (expected a whole number with an optional unit us, ms, s, m or h, \
             e.g. 250ms, 3s, 10m, 1h; a bare number is seconds)"
        );
    }

    fn spec_strategy() -> impl Strategy<Value = UpstreamSpec> {
        let ip = prop_oneof![
            any::<u32>().prop_map(|v| IpAddr::V4(Ipv4Addr::from(v))),
            any::<u128>().prop_map(|v| IpAddr::V6(Ipv6Addr::from(v))),
        ];
        (ip, 1..=u16::MAX, 1..=MAX_WEIGHT, proptest::option::of(1..=u32::MAX)).prop_map(
            |(ip, port, weight, max_conns)| {
                let addr = SocketAddr::new(ip, port);
                UpstreamSpec { addr, weight, max_conns, name: addr.to_string(), state: AdminState::Ready }
            },
        )
    }

    proptest! {
        #[test]
        fn never_panics_on_any_string(value in any::<String>()) {
            let _ = parse(&value);
            let _ = UpstreamSpec::parse_with(&value, |_, _| Err(io::Error::other("down")));
        }

        #[test]
        fn never_panics_on_near_misses(value in r"[\[\]:,=a-z0-9.\- ]{0,40}") {
            if let Ok(spec) = parse(&value) {
                prop_assert!((1..=MAX_WEIGHT).contains(&spec.weight));
                prop_assert_ne!(spec.addr.port(), 0);
                prop_assert_ne!(spec.max_conns, Some(0));
            }
        }

        #[test]
        fn parse_of_display_is_identity(spec in spec_strategy()) {
            prop_assert_eq!(parse(&spec.to_string()), Ok(spec));
        }

        #[test]
        fn weights_outside_the_range_are_rejected(w in (MAX_WEIGHT + 1)..) {
            let value = format!("10.0.0.1:80,weight={w}");
            prop_assert_eq!(parse(&value), Err(UpstreamError::Weight { value: value.clone() }));
        }

        #[test]
        fn durations_never_panic(text in any::<String>()) {
            let _ = parse_duration(&text);
        }

        #[test]
        fn durations_round_trip(n in 0u64..1 << 40) {
            prop_assert_eq!(parse_duration(&format!("{n}ms")), Ok(Duration::from_millis(n)));
            prop_assert_eq!(parse_duration(&format!("{n}s")), Ok(Duration::from_secs(n)));
            prop_assert_eq!(parse_duration(&n.to_string()), Ok(Duration::from_secs(n)));
            prop_assert_eq!(parse_duration(&format!("{n}m")), Ok(Duration::from_secs(n * 60)));
        }
    }
}
