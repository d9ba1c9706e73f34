//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table
//! of `M` slots, `M` prime, each holding an upstream index. A client's key
//! hashes to a slot; the table is built so that every upstream owns a share
//! of slots proportional to its weight, and so that changing the upstream
//! set moves few slots.
//!
//! Every shard builds its own copy of the table from the same upstream list
//! and must pick the same upstream for the same client, so everything here
//! is deterministic and the hash is the crate's stable one (`crate::hash`,
//! seeded per use) instead of `std`'s `DefaultHasher`, which is randomly
//! keyed per process and not promised stable across releases.
//!
//! Choices the paper leaves open:
//!
//! - **Table size**: the paper's 65537 for up to 655 upstreams, else the
//!   smallest prime above the next power of two (131101, 262147, ...)
//!   reaching `100 * max(N, R)`, where `N` is the number of upstreams and
//!   `R = min(sum of weights / smallest weight, 1000)`: at least ~100 slots
//!   for the lightest upstream, which keeps shares within ~1% of exact.
//!   The size must not follow `N` closely: a different `M` is a different
//!   table, and adding or removing one upstream would then move almost
//!   every client instead of about `1/N` of them. So it only steps up at
//!   powers of two, where a reshuffle is the documented price of growth.
//!   4 bytes a slot, one copy per shard: 256 KiB at 65537.
//! - **Weights**: the paper fills the table by giving each upstream one turn
//!   per round. Here an upstream of weight `w` gets `w` turns per round,
//!   interleaved (the next turn goes to the upstream whose
//!   `(turns + 1/2) / w` is smallest, ties to the lower index), and each
//!   turn claims exactly one slot, so slot counts are proportional to
//!   weights to within `1/2 + N * w / (2 * sum of weights)` slots. With equal
//!   weights this is exactly the paper's round-robin.
//! - **Ineligible upstreams**: the table is not rebuilt when an upstream goes
//!   down (shards would disagree while they rebuild, and a rebuild costs
//!   O(M log M)). Instead a client whose slot holds an ineligible upstream
//!   probes further slots by double hashing (a step derived from its key,
//!   visiting every slot since `M` is prime) and takes the first eligible
//!   upstream. Clients of healthy upstreams do not move at all, and a
//!   displaced client lands on the same fallback every time as long as the
//!   eligible set is unchanged.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fmt;
use std::net::IpAddr;

/// Caps the weight ratio that sizes the table (see the module docs).
const MAX_WEIGHT_RATIO: u64 = 1000;

/// Slots per upstream (at the lightest weight) the table aims for.
const SLOTS_PER_UPSTREAM: u64 = 100;

/// The smallest table: the paper's size, a prime.
const MIN_TABLE_SIZE: u64 = 65537;

/// Seeds of the two independent hashes of an upstream's name (offset, skip)
/// and of client keys. Arbitrary constants; changing them reshuffles every
/// table, so they are fixed forever.
const SEED_OFFSET: u64 = 0x6d61_676c_6576_3031; // "maglev01"
const SEED_SKIP: u64 = 0x6d61_676c_6576_3032; // "maglev02"
const SEED_CLIENT: u64 = 0x6d61_676c_6576_3033; // "maglev03"

const EMPTY: u32 = u32::MAX;

/// A built Maglev lookup table over `N` upstreams.
#[derive(Clone)]
pub struct Maglev {
    /// Slot -> upstream index.
    table: Vec<u32>,
    /// Number of upstreams the table was built for.
    upstreams: usize,
    /// Per-upstream eligibility memo for the fallback probe (reused, so a
    /// pick never allocates): 0 unknown, 1 eligible, 2 not.
    memo: Vec<u8>,
}

/// A table is up to hundreds of thousands of slots; print its shape only.
impl fmt::Debug for Maglev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Maglev").field("size", &self.table.len()).field("upstreams", &self.upstreams).finish()
    }
}

impl Maglev {
    /// Builds the table for upstreams given as `(name, weight)`, in index
    /// order. The name (the `HOST:PORT` text) places the upstream in the
    /// table, so it must be the same on every shard; a weight of 0 counts as
    /// 1. An empty list gives an empty table whose lookups return `None`.
    pub fn new<'a>(upstreams: impl IntoIterator<Item = (&'a str, u32)>) -> Self {
        let upstreams: Vec<(&str, u64)> =
            upstreams.into_iter().map(|(n, w)| (n, u64::from(w.max(1)))).collect();
        let weights: Vec<u64> = upstreams.iter().map(|&(_, w)| w).collect();
        let size = table_size(&weights);
        let mut table = vec![EMPTY; size];
        if size > 0 {
            fill(&mut table, &upstreams);
        }
        Self { table, upstreams: upstreams.len(), memo: vec![0; upstreams.len()] }
    }

    /// The number of slots, `M`.
    pub fn size(&self) -> usize {
        self.table.len()
    }

    /// The number of upstreams the table was built for.
    pub fn upstreams(&self) -> usize {
        self.upstreams
    }

    /// How many slots each upstream owns, by index.
    pub fn slot_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.upstreams];
        for &i in &self.table {
            counts[i as usize] += 1;
        }
        counts
    }

    /// The upstream owning `key`'s slot, ignoring eligibility.
    pub fn lookup(&self, key: u64) -> Option<usize> {
        let m = self.table.len() as u64;
        // `key % m < m == table.len()`, so the index is in bounds.
        (m > 0).then(|| self.table[(key % m) as usize] as usize)
    }

    /// The upstream for `key` among those for which `eligible(i)` holds:
    /// the slot's owner if eligible, else the first eligible owner along the
    /// key's probe sequence; `None` if no upstream is eligible. `eligible`
    /// is called at most once per upstream.
    pub fn pick(&mut self, key: u64, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let first = self.lookup(key)?;
        if eligible(first) {
            return Some(first);
        }
        self.probe(key, first, eligible)
    }

    /// The slow path of [`Maglev::pick`]: double hashing from the key's slot.
    fn probe(&mut self, key: u64, first: usize, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        const UNKNOWN: u8 = 0;
        const YES: u8 = 1;
        const NO: u8 = 2;
        self.memo.fill(UNKNOWN);
        self.memo[first] = NO;
        let mut refused = 1;
        let m = self.table.len() as u64;
        // The table size is a prime >= 101, so any step in 1..m visits every
        // slot within m probes.
        let step = 1 + mix64(key ^ SEED_SKIP) % (m - 1);
        let mut slot = key % m;
        for _ in 1..m {
            if refused == self.upstreams {
                return None;
            }
            slot = (slot + step) % m;
            let i = self.table[slot as usize] as usize;
            match self.memo[i] {
                YES => return Some(i),
                NO => continue,
                _ if eligible(i) => return Some(i),
                _ => {
                    self.memo[i] = NO;
                    refused += 1;
                }
            }
        }
        None
    }
}

/// The table size for these weights (see the module docs); 0 for none.
pub fn table_size(weights: &[u64]) -> usize {
    let Some(&lightest) = weights.iter().min() else {
        return 0;
    };
    let total: u64 = weights.iter().sum();
    let ratio = total.div_ceil(lightest.max(1)).min(MAX_WEIGHT_RATIO);
    let target = SLOTS_PER_UPSTREAM * (weights.len() as u64).max(ratio);
    if target <= MIN_TABLE_SIZE {
        return MIN_TABLE_SIZE as usize;
    }
    // Only powers of two as starting points, so the size is stable while N
    // moves within a band (see the module docs).
    next_prime_above(target.next_power_of_two()) as usize
}

/// The smallest prime strictly greater than `n`, by trial division: tables
/// are built once per configuration and `n` stays below ~10^8.
fn next_prime_above(n: u64) -> u64 {
    let is_prime = |c: u64| c >= 2 && (2..).take_while(|d| d * d <= c).all(|d| c % d != 0);
    (n + 1..).find(|&c| is_prime(c)).unwrap_or(n + 1)
}

/// One upstream's place in the turn order: its next turn is due at virtual
/// time `(turns + 1/2) / weight`. The half (Webster's divisor method) centres
/// each upstream's turns on its exact share; `turns + 1` would let every
/// upstream fall up to a whole turn behind.
#[derive(Debug, Clone, Copy)]
struct Turn {
    turns: u64,
    weight: u64,
    index: usize,
}

impl Ord for Turn {
    fn cmp(&self, other: &Self) -> Ordering {
        // (2a+1)/wa vs (2b+1)/wb by cross-multiplying; u128 cannot overflow.
        let lhs = u128::from(2 * self.turns + 1) * u128::from(other.weight);
        let rhs = u128::from(2 * other.turns + 1) * u128::from(self.weight);
        lhs.cmp(&rhs).then(self.index.cmp(&other.index))
    }
}

impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Turn {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Turn {}

/// The paper's population: each upstream walks its own permutation of the
/// slots (`offset + j * skip mod M`) and, on its turn, claims the first slot
/// of it still empty.
fn fill(table: &mut [u32], upstreams: &[(&str, u64)]) {
    let m = table.len() as u64;
    let mut next: Vec<u64> = Vec::with_capacity(upstreams.len());
    let mut skip: Vec<u64> = Vec::with_capacity(upstreams.len());
    let mut heap = BinaryHeap::with_capacity(upstreams.len());
    for (index, &(name, weight)) in upstreams.iter().enumerate() {
        next.push(hash64(SEED_OFFSET, name.as_bytes()) % m);
        skip.push(hash64(SEED_SKIP, name.as_bytes()) % (m - 1) + 1);
        heap.push(Reverse(Turn { turns: 0, weight, index }));
    }
    let mut filled = 0;
    while filled < m {
        // The heap holds one entry per upstream and every iteration pushes
        // back the one it pops, so it is never empty here.
        let Some(Reverse(mut turn)) = heap.pop() else { break };
        let i = turn.index;
        // Terminates within m steps: the permutation covers every slot and
        // at least one is empty.
        loop {
            let slot = next[i] as usize;
            next[i] = (next[i] + skip[i]) % m;
            if table[slot] == EMPTY {
                // Upstream counts are far below u32::MAX (the EMPTY marker).
                table[slot] = i as u32;
                filled += 1;
                break;
            }
        }
        turn.turns += 1;
        heap.push(Reverse(turn));
    }
}

/// The key of a client for Maglev: its IP address only. The port is left
/// out on purpose: a client's connections (and a UDP client's flows from
/// fresh source ports) should stick to one upstream. IPv4-mapped IPv6
/// addresses hash as the IPv4 address, so a dual-stack listener sends a
/// client to the same upstream whichever family it arrived on.
pub fn client_key(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => hash64(SEED_CLIENT, &v4.octets()),
        IpAddr::V6(v6) => hash64(SEED_CLIENT, &v6.octets()),
    }
}

/// The stable seeded hash (`crate::hash`): every shard and every instance
/// builds the same table and maps a client the same way.
fn hash64(seed: u64, bytes: &[u8]) -> u64 {
    crate::hash::hash64_with(seed, bytes)
}

/// The SplitMix64 output function (Steele, Lea, Flood 2014): a bijection on
/// u64 with good avalanche. Also the step of the balancer's PRNG.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.1.{}.{}:8080", i / 256, i % 256)).collect()
    }

    fn build(names: &[String]) -> Maglev {
        Maglev::new(names.iter().map(|n| (n.as_str(), 1)))
    }

    /// 100k pseudo-random IPv4 client keys, the same every run.
    fn clients() -> Vec<u64> {
        let mut state = 0x1234_5678_u64;
        (0..100_000)
            .map(|_| {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                client_key(IpAddr::V4(Ipv4Addr::from(mix64(state) as u32)))
            })
            .collect()
    }

    /// The upstream name each client maps to.
    fn assignment(table: &Maglev, names: &[String], clients: &[u64]) -> Vec<String> {
        clients.iter().map(|&k| names[table.lookup(k).unwrap()].clone()).collect()
    }

    /// All shards, and the process after a restart, must agree: pin the
    /// outputs so an accidental change to the hash fails here.
    #[test]
    fn client_keys_are_stable() {
        assert_eq!(client_key(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))), 0xed1c_3530_e96a_2d4e);
        assert_eq!(client_key("2001:db8::1".parse().unwrap()), 0xf070_a3d8_0528_3979);
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(client_key(mapped), client_key(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))));
        assert_ne!(client_key(IpAddr::V6(Ipv6Addr::LOCALHOST)), client_key(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }

    #[test]
    fn table_sizes() {
        assert_eq!(table_size(&[]), 0);
        assert_eq!(table_size(&[1]), 65537);
        assert_eq!(table_size(&[1; 655]), 65537);
        assert_eq!(table_size(&[1; 656]), 131_101, "the next band: a prime above 2^17");
        assert_eq!(table_size(&[1; 1000]), 131_101);
        assert_eq!(table_size(&[2, 1]), 65537);
        assert_eq!(table_size(&[1000, 1]), 131_101);
        assert_eq!(table_size(&[1000; 1000]), 131_101);
        assert_eq!(next_prime_above(65536), 65537);
        assert_eq!(next_prime_above(131_072), 131_101);
    }

    #[test]
    fn every_slot_is_filled_and_equal_weights_share_evenly() {
        for n in [1, 2, 3, 7, 10, 50, 200, 655] {
            let table = build(&names(n));
            assert!(table.table.iter().all(|&i| (i as usize) < n));
            let m = table.size() as f64;
            for (i, &count) in table.slot_counts().iter().enumerate() {
                let share = m / n as f64;
                assert!(
                    (count as f64 - share).abs() <= share * 0.01 + 1.0,
                    "n={n} upstream {i}: {count} vs {share}"
                );
                // Round-robin turns give floor or ceil of M/N exactly.
                assert!(count == share.floor() as usize || count == share.ceil() as usize);
            }
        }
    }

    #[test]
    fn building_twice_gives_the_same_table() {
        let list = names(17);
        assert_eq!(build(&list).table, build(&list).table);
        let weighted =
            |l: &[String]| Maglev::new(l.iter().enumerate().map(|(i, n)| (n.as_str(), i as u32 + 1)));
        assert_eq!(weighted(&list).table, weighted(&list).table);
    }

    #[test]
    fn weights_give_proportional_slots() {
        let table = Maglev::new([("a:1", 2), ("b:1", 1)]);
        let counts = table.slot_counts();
        assert_eq!(counts[0] + counts[1], table.size());
        assert!(counts[0].abs_diff(2 * counts[1]) <= 2, "{counts:?}");

        let table = Maglev::new([("a:1", 5), ("b:1", 3), ("c:1", 1), ("d:1", 1)]);
        let m = table.size() as f64;
        for (count, w) in table.slot_counts().into_iter().zip([5.0, 3.0, 1.0, 1.0]) {
            assert!((count as f64 - m * w / 10.0).abs() <= 1.5, "{count} for weight {w} of M={m}");
        }
    }

    /// Removing one of N upstreams (and rebuilding) moves its clients and
    /// less than 1% of everyone else's.
    #[test]
    fn removing_an_upstream_moves_about_one_nth() {
        let clients = clients();
        for n in [5, 10, 31] {
            let before_names = names(n);
            let before = assignment(&build(&before_names), &before_names, &clients);
            let removed = &before_names[n / 2];
            let after_names: Vec<String> = before_names.iter().filter(|x| *x != removed).cloned().collect();
            let after = assignment(&build(&after_names), &after_names, &clients);
            let orphaned = before.iter().filter(|b| *b == removed).count();
            let extra = before.iter().zip(&after).filter(|(b, a)| *b != removed && b != a).count();
            let moved = (orphaned + extra) as f64 / clients.len() as f64;
            assert!(extra * 100 < clients.len(), "n={n}: {extra} clients of healthy upstreams moved");
            assert!((moved - 1.0 / n as f64).abs() < 0.02, "n={n}: moved {moved}");
        }
    }

    /// Adding an upstream to N moves about 1/(N+1): mostly to the newcomer.
    #[test]
    fn adding_an_upstream_moves_about_one_over_n_plus_one() {
        let clients = clients();
        for n in [4, 9, 30] {
            let before_names = names(n);
            let after_names = names(n + 1);
            let before = assignment(&build(&before_names), &before_names, &clients);
            let after = assignment(&build(&after_names), &after_names, &clients);
            let newcomer = &after_names[n];
            let to_new = after.iter().filter(|a| *a == newcomer).count();
            let extra = before.iter().zip(&after).filter(|(b, a)| b != a && *a != newcomer).count();
            let share = to_new as f64 / clients.len() as f64;
            assert!((share - 1.0 / (n + 1) as f64).abs() < 0.02, "n={n}: {share}");
            assert!(extra * 100 < clients.len(), "n={n}: {extra} moved between old upstreams");
        }
    }

    /// An ineligible upstream's clients move (spread over the others), and
    /// nobody else's do; each moved client keeps its fallback.
    #[test]
    fn ineligible_upstreams_are_skipped_without_moving_others() {
        let clients = clients();
        let mut table = build(&names(10));
        let down = 3;
        let mut spread: HashMap<usize, usize> = HashMap::new();
        for &key in &clients {
            let primary = table.lookup(key).unwrap();
            let picked = table.pick(key, |i| i != down).unwrap();
            assert_ne!(picked, down);
            if primary == down {
                *spread.entry(picked).or_default() += 1;
                assert_eq!(table.pick(key, |i| i != down), Some(picked), "fallback must be stable");
            } else {
                assert_eq!(picked, primary);
            }
        }
        let displaced: usize = spread.values().sum();
        assert_eq!(spread.len(), 9, "displaced clients spread over every other upstream: {spread:?}");
        for (&i, &count) in &spread {
            let fair = displaced as f64 / 9.0;
            assert!((count as f64 - fair).abs() < fair * 0.25, "upstream {i}: {count} of {displaced}");
        }
    }

    #[test]
    fn no_eligible_upstream_gives_none() {
        let mut table = build(&names(4));
        let calls = std::cell::Cell::new(0);
        assert_eq!(
            table.pick(42, |_| {
                calls.set(calls.get() + 1);
                false
            }),
            None
        );
        assert_eq!(calls.get(), 4, "eligible() is asked once per upstream");
        let mut empty = Maglev::new([]);
        assert_eq!(empty.pick(42, |_| true), None);
        assert_eq!(empty.lookup(42), None);
    }

    proptest! {
        // Each case builds a 65537-slot table; fewer cases keep the suite quick.
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn a_pick_is_always_eligible(
            weights in proptest::collection::vec(1u32..=20, 1..12),
            mask in any::<u16>(),
            keys in proptest::collection::vec(any::<u64>(), 1..50),
        ) {
            let names = names(weights.len());
            let mut table = Maglev::new(names.iter().map(String::as_str).zip(weights.iter().copied()));
            let eligible = |i: usize| mask & (1 << i) != 0;
            let any_eligible = (0..weights.len()).any(eligible);
            for key in keys {
                match table.pick(key, eligible) {
                    Some(i) => prop_assert!(eligible(i)),
                    None => prop_assert!(!any_eligible),
                }
            }
        }

        #[test]
        fn weighted_slot_counts_are_near_exact(weights in proptest::collection::vec(1u32..=50, 1..8)) {
            let names = names(weights.len());
            let table = Maglev::new(names.iter().map(String::as_str).zip(weights.iter().copied()));
            let total = f64::from(weights.iter().sum::<u32>());
            let (m, n) = (table.size() as f64, weights.len() as f64);
            for (count, w) in table.slot_counts().into_iter().zip(weights) {
                let exact = m * f64::from(w) / total;
                // The divisor method's bound (module docs).
                let bound = 0.5 + n * f64::from(w) / (2.0 * total);
                prop_assert!((count as f64 - exact).abs() <= bound + 1e-9, "{} vs {}", count, exact);
            }
        }
    }
}
