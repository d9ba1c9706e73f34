//! The descriptor budget: what `RLIMIT_NOFILE` leaves for connections once
//! the process's own needs are reserved, and how it is shared.
//!
//! Without it, a flood of idle clients could take every descriptor: then
//! the health checker could not open a socket and marked healthy upstreams
//! down, and connects to upstreams failed for want of a descriptor, not
//! because of the upstream. So the appliance sizes its own limits:
//!
//! - a **reserve** for what it must always be able to open: the runtime
//!   (rings, eventfds), every listener (twice with an upgrade socket: a
//!   copy is kept for a successor), the admin endpoint and its clients,
//!   one health check per upstream, Graphite and relay sockets, logging and
//!   the rest of the process;
//! - the remainder is shared between the services that accept connections
//!   (forward: two descriptors a connection, one a UDP session; echo and
//!   aggregate TCP: one), water-filling: a service that needs less than an
//!   equal share (a forward with a small `max_conns`) leaves the rest to
//!   the others. A forward's `max_conns` is capped to its share (warned at
//!   start); echo and aggregate TCP get their share as a connection limit.
//!
//! Connections over a limit are refused at once (reset) and counted.

use crate::config::{AppConfig, Service};

/// Descriptors every process needs whatever it runs: stdio, the signal
/// thread's pipe, logging, `/proc` reads, hwloc.
const BASE: u64 = 64;
/// Per shard: its io_uring, its eventfd, and slack for short-lived ones.
const PER_SHARD: u64 = 8;
/// The admin endpoint's listener and its connection bound.
const ADMIN: u64 = 1 + 64;

/// What one service gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// Descriptors for its connections.
    pub fds: u64,
    /// Connections (or UDP sessions) at most, across all shards.
    pub conns: u64,
}

/// The budget of one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// The soft `RLIMIT_NOFILE` it was made for.
    pub nofile: u64,
    /// Descriptors kept for the process's own needs.
    pub reserve: u64,
    /// Per service, in configuration order (`None`: it takes no connections).
    pub shares: Vec<Option<Share>>,
}

/// Descriptors one connection of `service` takes, and how many it asks
/// for (`None`: no limit of its own); `None` when it takes no connections.
fn demand(service: &Service) -> Option<(u64, Option<u64>)> {
    let d = service.descriptors();
    (d.per_conn > 0).then_some((d.per_conn, d.limit))
}

/// The descriptors the process keeps for itself.
fn reserve(cfg: &AppConfig, shards: usize) -> u64 {
    let shards = shards as u64;
    let mut r = BASE + PER_SHARD * shards + if cfg.admin.is_some() { ADMIN } else { 0 };
    // With an upgrade socket every listener is kept twice (a copy offered
    // to a successor), plus the socket and one connection on it.
    let copies = if cfg.runtime.upgrade_socket.is_some() { 2 } else { 1 };
    if copies == 2 {
        r += 3;
    }
    for s in &cfg.services {
        let d = s.descriptors();
        r += s.listens().len() as u64 * shards * copies + d.reserve_per_shard * shards + d.reserve;
    }
    r
}

impl Budget {
    /// The budget for `cfg` on `shards` shards under a soft limit of `nofile`.
    pub fn new(cfg: &AppConfig, shards: usize, nofile: u64) -> Budget {
        let reserve = reserve(cfg, shards);
        let mut left = nofile.saturating_sub(reserve);
        let demands: Vec<_> = cfg.services.iter().map(demand).collect();
        let mut shares = vec![None; demands.len()];
        // Water-filling: smallest asks first, each at most an equal part of
        // what is left.
        let mut order: Vec<usize> = (0..demands.len()).filter(|&i| demands[i].is_some()).collect();
        let wanted =
            |i: usize| demands[i].map_or(0, |(per, n)| n.map_or(u64::MAX, |n| n.saturating_mul(per)));
        order.sort_by_key(|&i| wanted(i));
        let mut takers = order.len() as u64;
        for i in order {
            let Some((per, _)) = demands[i] else { continue };
            let fds = wanted(i).min(left / takers.max(1));
            left -= fds;
            takers -= 1;
            shares[i] = Some(Share { fds, conns: fds / per });
        }
        Budget { nofile, reserve, shares }
    }

    /// Caps every service's own connection limit to its share; returns one warning
    /// per service whose configured limit does not fit.
    pub fn apply(&self, cfg: &mut AppConfig) -> Vec<String> {
        let mut warnings = Vec::new();
        for (service, share) in cfg.services.iter_mut().zip(&self.shares) {
            let (Some(limit), Some(share)) = (service.descriptors().limit, share) else { continue };
            let cap = share.conns.max(1);
            if limit <= cap {
                continue;
            }
            let Some(capped) = service.limited_to(cap) else { continue };
            warnings.push(format!(
                "{} {:?}: max_conns {limit} needs more descriptors than RLIMIT_NOFILE {} leaves it \
                 ({} after the reserve of {}): capped at {cap} connections; raise the limit \
                 (LimitNOFILE= in the systemd unit) or lower max_conns",
                service.kind(),
                service.name(),
                self.nofile,
                share.fds,
                self.reserve
            ));
            *service = capped;
        }
        warnings
    }

    /// The connection limit of service `i` on each of `shards` shards
    /// (at least one), for services without a limit of their own.
    pub fn per_shard(&self, i: usize, shards: usize) -> usize {
        let conns = self.shares.get(i).copied().flatten().map_or(u64::MAX, |s| s.conns);
        usize::try_from(conns / shards.max(1) as u64).unwrap_or(usize::MAX).max(1)
    }
}

/// The process's soft `RLIMIT_NOFILE` (`u64::MAX` when unlimited).
pub fn nofile() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    soft_limit(&limits, "Max open files").unwrap_or(u64::MAX)
}

/// The soft limit on a `/proc/self/limits` line (None: unlimited or absent).
pub fn soft_limit(limits: &str, name: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileConfig;

    fn config(text: &str) -> AppConfig {
        FileConfig::parse(text).and_then(|f| f.validate()).expect("config")
    }

    /// The position of the service `name` (validation orders services by kind).
    fn at(cfg: &AppConfig, name: &str) -> usize {
        cfg.services.iter().position(|s| s.name() == name).expect("service")
    }

    fn max_conns(cfg: &AppConfig, name: &str) -> u64 {
        cfg.services[at(cfg, name)].descriptors().limit.expect("a forward")
    }

    const TWO: &str = "[[forward]]\nname = \"big\"\nlisten = \"127.0.0.1:1\"\nupstreams = [\"127.0.0.1:2\"]\n\
                       [[forward]]\nname = \"small\"\nlisten = \"127.0.0.1:3\"\nupstreams = [\"127.0.0.1:4\"]\n\
                       max_conns = 100\n[[echo]]\nname = \"echo\"\nlisten = \"127.0.0.1:5\"\n";

    #[test]
    fn reads_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max open files            20000                20000                files     \n\
                    Max locked memory         8388608              8388608              bytes     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n";
        assert_eq!(soft_limit(text, "Max open files"), Some(20000));
        assert_eq!(soft_limit(text, "Max locked memory"), Some(8 << 20));
        assert_eq!(soft_limit(text, "Max cpu time"), None);
    }

    #[test]
    fn the_reserve_comes_first_and_small_asks_leave_the_rest_to_others() {
        let cfg = config(TWO);
        let b = Budget::new(&cfg, 2, 20_000);
        // 64 + 8 x 2 shards + 3 listeners x 2 shards + 2 upstreams.
        assert_eq!(b.reserve, 64 + 16 + 6 + 2);
        let left = 20_000 - b.reserve;
        let share = |name| b.shares[at(&cfg, name)].expect("a share");
        assert_eq!(share("small"), Share { fds: 200, conns: 100 }, "asks for less than a third: gets it all");
        let (big, echo) = (share("big"), share("echo"));
        assert_eq!(big.fds + echo.fds + 200, left, "nothing left unshared");
        assert!(big.fds.abs_diff(echo.fds) <= 1, "the rest split evenly: {big:?} {echo:?}");
        assert_eq!(big.conns, big.fds / 2, "two descriptors a forwarded connection");
        assert_eq!(echo.conns, echo.fds);
    }

    #[test]
    fn a_forward_that_does_not_fit_is_capped_with_a_warning() {
        let mut cfg = config(TWO);
        let b = Budget::new(&cfg, 2, 20_000);
        let warnings = b.apply(&mut cfg);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("\"big\"") && warnings[0].contains("max_conns 100000"), "{warnings:?}");
        assert_eq!(max_conns(&cfg, "big"), b.shares[at(&cfg, "big")].expect("share").conns);
        assert_eq!(max_conns(&cfg, "small"), 100, "a limit that fits stays");
        assert_eq!(
            b.per_shard(at(&cfg, "echo"), 2) as u64,
            b.shares[at(&cfg, "echo")].expect("share").conns / 2
        );
    }

    #[test]
    fn a_tiny_limit_still_gives_one_connection_and_never_underflows() {
        let mut cfg = config(TWO);
        let b = Budget::new(&cfg, 4, 10);
        assert!(b.shares.iter().flatten().all(|s| s.fds == 0));
        b.apply(&mut cfg);
        assert_eq!(max_conns(&cfg, "big"), 1);
        assert_eq!(b.per_shard(at(&cfg, "echo"), 4), 1);
    }
}
