//! Choosing an upstream for a new connection.
//!
//! Every shard owns a [`Balancer`] and balances with its own view: its own
//! round-robin position, its own count of the connections it opened, its own
//! random stream. Nothing is shared, so there is no cross-core traffic per
//! connection; the price is that "least connections" means least of *this
//! shard's* connections. With the kernel spreading clients evenly over
//! shards, per-shard balance adds up to global balance.
//!
//! What makes an upstream a candidate (healthy, under its connection limit)
//! is not the balancer's business: every pick takes an `eligible(i)`
//! predicate, so health (`super::health`) and limits (`super::limits`) stay
//! separate state machines. A typical accept path:
//!
//! ```text
//! let i = balancer.pick(Some(peer), |i| health[i].is_eligible(now) && limits.has_room(i))?;
//! limits.try_acquire(i); balancer.on_open(i);   // ... and on close:
//! limits.release(i);     balancer.on_close(i);
//! ```
//!
//! `eligible` may be called once for each upstream during a pick (never
//! more), so it should be cheap and must not change during the call.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use super::maglev::{self, Maglev};
use super::upstream::UpstreamSpec;

/// How a [`Balancer`] chooses among eligible upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Policy {
    /// Smooth weighted round-robin (nginx's algorithm).
    #[default]
    RoundRobin,
    /// Fewest active connections relative to weight.
    LeastConn,
    /// Power of two choices: two weighted-random candidates, the less loaded wins.
    PowerOfTwo,
    /// Weighted random.
    Random,
    /// Consistent hashing of the client IP (Maglev).
    Maglev,
}

impl Policy {
    /// Every policy, in the order the help text lists them.
    pub const ALL: [Policy; 5] =
        [Policy::RoundRobin, Policy::LeastConn, Policy::PowerOfTwo, Policy::Random, Policy::Maglev];

    /// Whether picks depend on the client's address (so it is worth a
    /// `getpeername` per connection).
    pub fn uses_client(self) -> bool {
        self == Policy::Maglev
    }

    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::RoundRobin => "round-robin",
            Policy::LeastConn => "least-conn",
            Policy::PowerOfTwo => "p2c",
            Policy::Random => "random",
            Policy::Maglev => "maglev",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown balancing policy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?}: unknown policy (expected one of round-robin, least-conn, p2c, random, maglev)")]
pub struct PolicyError {
    /// The name as given.
    pub value: String,
}

impl FromStr for Policy {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| PolicyError { value: s.to_owned() })
    }
}

/// One shard's balancing state over a fixed list of upstreams, addressed by
/// their index in that list.
#[derive(Debug, Clone)]
pub struct Balancer {
    policy: Policy,
    /// Weights, each at least 1.
    weights: Vec<u32>,
    /// Connections this shard opened to each upstream and has not closed.
    active: Vec<u32>,
    /// Smooth round-robin "current weight" per upstream.
    current: Vec<i64>,
    /// Where scans start: fixed for round-robin (per-shard tie-break order),
    /// moving for least-conn (rotation among equals).
    rotation: usize,
    rng: SplitMix64,
    /// Reused list of eligible indices, so a pick never allocates.
    scratch: Vec<usize>,
    /// Built only for [`Policy::Maglev`].
    maglev: Option<Maglev>,
}

impl Balancer {
    /// A balancer over upstreams given as `(name, weight)` in index order.
    /// The name matters only to Maglev (all shards must pass the same
    /// names); a weight of 0 counts as 1, since weights are validated when
    /// parsed and an unreachable upstream should not come from arithmetic.
    ///
    /// `seed` drives the random policies and the starting position; give
    /// each shard a different one (e.g. its index) so that shards do not
    /// all send their first connection to the same upstream.
    pub fn new<'a>(policy: Policy, upstreams: impl IntoIterator<Item = (&'a str, u32)>, seed: u64) -> Self {
        let upstreams: Vec<(&str, u32)> = upstreams.into_iter().map(|(n, w)| (n, w.max(1))).collect();
        let n = upstreams.len();
        let maglev = (policy == Policy::Maglev).then(|| Maglev::new(upstreams.iter().copied()));
        let mut rng = SplitMix64::new(seed);
        let rotation = if n == 0 { 0 } else { rng.below(n as u64) as usize };
        Self {
            policy,
            weights: upstreams.iter().map(|&(_, w)| w).collect(),
            active: vec![0; n],
            current: vec![0; n],
            rotation,
            rng,
            scratch: Vec::with_capacity(n),
            maglev,
        }
    }

    /// A balancer over parsed upstream specs (names and weights).
    pub fn from_specs(policy: Policy, specs: &[UpstreamSpec], seed: u64) -> Self {
        Self::new(policy, specs.iter().map(|s| (s.name.as_str(), s.weight)), seed)
    }

    /// The policy this balancer applies.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The number of upstreams.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// Whether there are no upstreams (every pick is `None`).
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Connections this shard has open to upstream `i` (0 for an unknown index).
    pub fn active(&self, i: usize) -> u32 {
        self.active.get(i).copied().unwrap_or(0)
    }

    /// Chooses an upstream among those for which `eligible(i)` holds, or
    /// `None` if there is none. `client` is used by [`Policy::Maglev`] only
    /// (its IP, not its port: see `maglev::client_key`); without one Maglev
    /// falls back to round-robin.
    pub fn pick(&mut self, client: Option<SocketAddr>, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        match self.policy {
            Policy::RoundRobin => self.round_robin(&eligible),
            Policy::LeastConn => self.least_conn(&eligible),
            Policy::PowerOfTwo => self.power_of_two(&eligible),
            Policy::Random => self.random(&eligible),
            Policy::Maglev => match (client, self.maglev.as_mut()) {
                (Some(addr), Some(table)) => table.pick(maglev::client_key(addr.ip()), &eligible),
                _ => self.round_robin(&eligible),
            },
        }
    }

    /// Records a connection opened to upstream `i` (unknown indices are ignored).
    pub fn on_open(&mut self, i: usize) {
        if let Some(a) = self.active.get_mut(i) {
            *a = a.saturating_add(1);
        }
    }

    /// Records a connection to upstream `i` closed. Saturates at zero so an
    /// unmatched close cannot wrap the count and starve the upstream.
    pub fn on_close(&mut self, i: usize) {
        if let Some(a) = self.active.get_mut(i) {
            *a = a.saturating_sub(1);
        }
    }

    /// Indices in this balancer's scan order, starting at `rotation`.
    fn scan_order(&self) -> impl Iterator<Item = usize> {
        let (n, start) = (self.weights.len(), self.rotation);
        (start..n).chain(0..start.min(n))
    }

    /// Smooth weighted round-robin: every eligible upstream gains its weight,
    /// the one with the most accumulated wins and pays back the total. Over
    /// `W` picks (the sum of eligible weights) from a zero state each
    /// upstream wins exactly its weight, interleaved (5,1,1 gives a a b a c
    /// a a). Ineligible upstreams keep their state unchanged, as in nginx;
    /// resetting it whenever the eligible set changes would make an upstream
    /// that flaps at its connection limit reset the cycle on every pick and
    /// hand every connection to the heaviest upstream.
    fn round_robin(&mut self, eligible: &impl Fn(usize) -> bool) -> Option<usize> {
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for i in self.scan_order() {
            if !eligible(i) {
                continue;
            }
            let weight = i64::from(self.weights[i]);
            self.current[i] += weight;
            total += weight;
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let chosen = best?;
        self.current[chosen] -= total;
        Some(chosen)
    }

    /// Whether `i` is a better least-loaded choice than `j`: lower
    /// `(active + 1) / weight` (the load it would have after taking this
    /// connection, so that weights also split the first connections), then
    /// the higher weight.
    fn less_loaded(&self, i: usize, j: usize) -> bool {
        let load_i = (u64::from(self.active[i]) + 1) * u64::from(self.weights[j]);
        let load_j = (u64::from(self.active[j]) + 1) * u64::from(self.weights[i]);
        load_i < load_j || (load_i == load_j && self.weights[i] > self.weights[j])
    }

    /// Least connections, weighted. Among equals the first in scan order
    /// wins and the scan then starts after it, so equals take turns instead
    /// of the lowest index taking every connection between closes.
    fn least_conn(&mut self, eligible: &impl Fn(usize) -> bool) -> Option<usize> {
        let mut best: Option<usize> = None;
        for i in self.scan_order() {
            if eligible(i) && best.is_none_or(|b| self.less_loaded(i, b)) {
                best = Some(i);
            }
        }
        let chosen = best?;
        self.rotation = (chosen + 1) % self.weights.len();
        Some(chosen)
    }

    /// Collects the eligible indices into `scratch`; returns their total weight.
    fn collect_eligible(&mut self, eligible: &impl Fn(usize) -> bool) -> u64 {
        self.scratch.clear();
        let mut total = 0;
        for i in 0..self.weights.len() {
            if eligible(i) {
                self.scratch.push(i);
                total += u64::from(self.weights[i]);
            }
        }
        total
    }

    /// The position in `scratch` of a weighted-random entry, skipping the
    /// entry at position `skip` (whose weight `total` must exclude).
    fn weighted_position(&mut self, total: u64, skip: Option<usize>) -> usize {
        let mut r = self.rng.below(total);
        for (pos, &i) in self.scratch.iter().enumerate() {
            if Some(pos) == skip {
                continue;
            }
            let w = u64::from(self.weights[i]);
            if r < w {
                return pos;
            }
            r -= w;
        }
        // Unreachable while `total` is the sum of the non-skipped weights;
        // the last entry is a safe answer regardless.
        self.scratch.len() - 1
    }

    /// Weighted random among the eligible.
    fn random(&mut self, eligible: &impl Fn(usize) -> bool) -> Option<usize> {
        let total = self.collect_eligible(eligible);
        if self.scratch.is_empty() {
            return None;
        }
        let pos = self.weighted_position(total, None);
        Some(self.scratch[pos])
    }

    /// Power of two choices: two distinct weighted-random candidates, the
    /// less loaded wins (the first on a tie, itself a random choice). Avoids
    /// least-conn's herd onto one upstream when views are stale or equal,
    /// while still steering away from overloaded upstreams.
    fn power_of_two(&mut self, eligible: &impl Fn(usize) -> bool) -> Option<usize> {
        let total = self.collect_eligible(eligible);
        match self.scratch.len() {
            0 => return None,
            1 => return Some(self.scratch[0]),
            _ => {}
        }
        let first_pos = self.weighted_position(total, None);
        let first = self.scratch[first_pos];
        let second_pos = self.weighted_position(total - u64::from(self.weights[first]), Some(first_pos));
        let second = self.scratch[second_pos];
        let (a, b) = (u64::from(self.active[first]), u64::from(self.active[second]));
        let second_lighter = b * u64::from(self.weights[first]) < a * u64::from(self.weights[second]);
        Some(if second_lighter { second } else { first })
    }
}

/// SplitMix64: a tiny, fast, seedable generator. Statistical quality is
/// ample for spreading connections, and a seed makes every test replayable.
#[derive(Debug, Clone)]
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        maglev::mix64(self.state)
    }

    /// Uniform in `0..n` (for `n > 0`) by multiply-shift; the bias, under
    /// `n / 2^64`, is far below anything a load balancer could notice.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn balancer(policy: Policy, weights: &[u32], seed: u64) -> Balancer {
        let names: Vec<String> = (0..weights.len()).map(|i| format!("10.0.0.{i}:80")).collect();
        Balancer::new(policy, names.iter().map(String::as_str).zip(weights.iter().copied()), seed)
    }

    fn all(_: usize) -> bool {
        true
    }

    fn counts(b: &mut Balancer, picks: usize, eligible: impl Fn(usize) -> bool) -> Vec<usize> {
        let mut counts = vec![0; b.len()];
        for _ in 0..picks {
            counts[b.pick(None, &eligible).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn policy_names_round_trip() {
        for p in Policy::ALL {
            assert_eq!(p.as_str().parse::<Policy>(), Ok(p));
        }
        assert_eq!(
            "leastconn".parse::<Policy>().unwrap_err().to_string(),
            "\"leastconn\": unknown policy (expected one of round-robin, least-conn, p2c, random, maglev)"
        );
    }

    #[test]
    fn smooth_round_robin_interleaves() {
        let mut b = balancer(Policy::RoundRobin, &[5, 1, 1], 0);
        b.rotation = 0;
        let names = ["a", "b", "c"];
        let seq: Vec<&str> = (0..14).map(|_| names[b.pick(None, all).unwrap()]).collect();
        assert_eq!(seq.join(" "), "a a b a c a a a a b a c a a");
    }

    #[test]
    fn round_robin_skips_ineligible_keeping_proportions() {
        let mut b = balancer(Policy::RoundRobin, &[5, 1, 3, 2], 7);
        // Upstream 2 is out: the other weights (5, 1, 2) share 8 picks a cycle.
        assert_eq!(counts(&mut b, 8 * 10, |i| i != 2), [50, 10, 0, 20]);
    }

    #[test]
    fn shards_start_at_different_upstreams() {
        let firsts: std::collections::HashSet<usize> = (0..16)
            .map(|seed| balancer(Policy::RoundRobin, &[1; 4], seed).pick(None, all).unwrap())
            .collect();
        assert!(firsts.len() > 1, "all shards start at {firsts:?}");
    }

    #[test]
    fn least_conn_prefers_fewest_and_rotates_ties() {
        let mut b = balancer(Policy::LeastConn, &[1, 1, 1], 0);
        // Nothing open anywhere: ties take turns rather than all going to 0.
        let seq: Vec<usize> = (0..6).map(|_| b.pick(None, all).unwrap()).collect();
        let mut first_three = seq[..3].to_vec();
        first_three.sort();
        assert_eq!(first_three, [0, 1, 2]);
        assert_eq!(seq[..3], seq[3..]);

        let mut b = balancer(Policy::LeastConn, &[1, 1, 1], 0);
        b.rotation = 0;
        for i in [0, 0, 0, 2] {
            b.on_open(i);
        }
        assert_eq!(b.pick(None, all), Some(1), "active [3, 0, 1]");
        b.on_open(1);
        assert_eq!(b.pick(None, all), Some(2), "active [3, 1, 1]: the tie goes to the next in turn");
        b.on_open(2);
        assert_eq!(b.pick(None, all), Some(1), "active [3, 1, 2]");
        assert_eq!(b.pick(None, |i| i != 1), Some(2), "skipping the ineligible");
    }

    #[test]
    fn least_conn_weighs_load_and_breaks_ties_by_weight() {
        let mut b = balancer(Policy::LeastConn, &[1, 3], 0);
        assert_eq!(b.pick(None, all), Some(1), "equal (empty) load: the heavier wins");
        // Opening what it picks, the heavier takes three of every four.
        let mut b = balancer(Policy::LeastConn, &[1, 3], 0);
        let mut opened = [0; 2];
        for _ in 0..400 {
            let i = b.pick(None, all).unwrap();
            b.on_open(i);
            opened[i] += 1;
        }
        assert_eq!(opened, [100, 300]);
    }

    #[test]
    fn least_conn_always_picks_a_least_loaded_upstream() {
        let mut b = balancer(Policy::LeastConn, &[1; 5], 3);
        let mut rng = SplitMix64::new(9);
        for _ in 0..2000 {
            if rng.below(3) == 0 {
                b.on_close(rng.below(5) as usize);
            } else {
                let fewest = *b.active.iter().min().unwrap();
                let i = b.pick(None, all).unwrap();
                assert_eq!(b.active(i), fewest);
                b.on_open(i);
            }
        }
    }

    #[test]
    fn power_of_two_avoids_the_most_loaded() {
        let mut b = balancer(Policy::PowerOfTwo, &[1, 1, 1, 1], 5);
        b.on_open(2);
        b.on_open(2);
        b.on_open(0);
        let c = counts(&mut b, 4000, all);
        assert_eq!(c[2], 0, "the most loaded is always compared with a lighter one: {c:?}");
        // Two candidates only: always the lighter.
        let mut b = balancer(Policy::PowerOfTwo, &[1, 1], 1);
        b.on_open(0);
        assert_eq!(counts(&mut b, 100, all), [0, 100]);
        // Normalised by weight: 2 connections on weight 4 is lighter than 1 on weight 1.
        let mut b = balancer(Policy::PowerOfTwo, &[4, 1], 1);
        b.on_open(0);
        b.on_open(0);
        b.on_open(1);
        assert_eq!(counts(&mut b, 100, all), [100, 0]);
    }

    #[test]
    fn random_follows_weights_and_is_seeded() {
        let mut b = balancer(Policy::Random, &[1, 2, 7], 11);
        let c = counts(&mut b, 100_000, all);
        for (count, w) in c.iter().zip([1.0, 2.0, 7.0]) {
            let expected = 100_000.0 * w / 10.0;
            assert!((*count as f64 - expected).abs() < expected * 0.03, "{c:?}");
        }
        let seq = |seed| {
            let mut b = balancer(Policy::Random, &[1, 2, 7], seed);
            (0..50).map(|_| b.pick(None, all).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(seq(4), seq(4));
        assert_ne!(seq(4), seq(5));
    }

    #[test]
    fn maglev_is_sticky_per_client_ip_and_agrees_across_shards() {
        let mut shard_a = balancer(Policy::Maglev, &[1, 1, 1, 1], 1);
        let mut shard_b = balancer(Policy::Maglev, &[1, 1, 1, 1], 2);
        for last in 0..=255u8 {
            let ip = IpAddr::V4(Ipv4Addr::new(198, 51, 100, last));
            let a = shard_a.pick(Some(SocketAddr::new(ip, 1000)), all);
            assert_eq!(a, shard_a.pick(Some(SocketAddr::new(ip, 2000)), all), "port is ignored");
            assert_eq!(a, shard_b.pick(Some(SocketAddr::new(ip, 3000)), all), "shards agree");
        }
        // No client address: round-robin.
        let c = counts(&mut shard_a, 8, all);
        assert_eq!(c, [2, 2, 2, 2]);
    }

    #[test]
    fn empty_and_all_ineligible_give_none() {
        for p in Policy::ALL {
            let mut empty = balancer(p, &[], 0);
            assert_eq!(empty.pick(Some("192.0.2.1:5".parse().unwrap()), all), None);
            let mut b = balancer(p, &[1, 2], 0);
            assert_eq!(b.pick(Some("192.0.2.1:5".parse().unwrap()), |_| false), None, "{p}");
            b.on_close(0);
            b.on_open(99);
            assert_eq!(b.active(0), 0);
            assert_eq!(b.active(99), 0);
        }
    }

    fn policy() -> impl Strategy<Value = Policy> {
        proptest::sample::select(Policy::ALL.to_vec())
    }

    proptest! {
        /// Any policy, any weights, any eligibility, opens and closes in any
        /// order: a pick is eligible, and `None` only when nothing is.
        #[test]
        fn a_pick_is_always_eligible(
            policy in policy(),
            weights in proptest::collection::vec(0u32..=1000, 0..10),
            seed in any::<u64>(),
            steps in proptest::collection::vec((any::<u16>(), any::<u32>(), 0u8..3), 1..60),
        ) {
            let mut b = balancer(policy, &weights, seed);
            for (mask, ip, action) in steps {
                let eligible = |i: usize| mask & (1 << i) != 0;
                let client = SocketAddr::from((Ipv4Addr::from(ip), 4000));
                match b.pick(Some(client), eligible) {
                    Some(i) => {
                        prop_assert!(i < weights.len() && eligible(i));
                        if action > 0 { b.on_open(i) } else { b.on_close(i) }
                    }
                    None => prop_assert!((0..weights.len()).all(|i| !eligible(i))),
                }
            }
        }

        /// From a fresh balancer, every `W` picks (W = sum of the eligible
        /// weights) give each eligible upstream exactly its weight.
        #[test]
        fn round_robin_is_exact_over_full_cycles(
            weights in proptest::collection::vec(1u32..=30, 1..8),
            mask in any::<u8>(),
            seed in any::<u64>(),
            cycles in 1usize..4,
        ) {
            let eligible = |i: usize| mask & (1 << i) != 0;
            let total: u32 = (0..weights.len()).filter(|&i| eligible(i)).map(|i| weights[i]).sum();
            prop_assume!(total > 0);
            let mut b = balancer(Policy::RoundRobin, &weights, seed);
            for _ in 0..cycles {
                let c = counts(&mut b, total as usize, eligible);
                for (i, &w) in weights.iter().enumerate() {
                    prop_assert_eq!(c[i], if eligible(i) { w as usize } else { 0 });
                }
            }
        }

        /// With the eligible set changing now and then, round-robin stays
        /// within a few picks of the exact share of each stable stretch.
        #[test]
        fn round_robin_stays_close_when_the_set_changes(
            weights in proptest::collection::vec(1u32..=20, 2..6),
            masks in proptest::collection::vec(1u8..32, 1..6),
            seed in any::<u64>(),
        ) {
            let mut b = balancer(Policy::RoundRobin, &weights, seed);
            let n = weights.len();
            for mask in masks {
                let eligible = |i: usize| mask & (1 << i) != 0;
                let total: u32 = (0..n).filter(|&i| eligible(i)).map(|i| weights[i]).sum();
                if total == 0 { continue; }
                let picks = total as usize * 20;
                let c = counts(&mut b, picks, eligible);
                for i in 0..n {
                    let exact = if eligible(i) { 20 * weights[i] as usize } else { 0 };
                    prop_assert!(c[i].abs_diff(exact) <= n, "{:?} vs weights {:?} mask {:b}", c, weights, mask);
                }
            }
        }
    }
}
