//! Per-origin key limits, beside the table's global `max_keys`: one client
//! (a source address, or the value of a tag such as `service`) may add at
//! most `keys` distinct keys per interval on this instance; its lines for
//! other keys are refused and counted against it, so a user can see which
//! client blew the budget ([`Origins::offenders`]).
//!
//! Memory is bounded: at most `keys` key hashes (8 bytes each) per origin
//! and `max_origins` origins; a new origin beyond that is refused as a
//! whole ([`Verdict::TooManyOrigins`], counted by the caller). Key sets empty at every
//! interval ([`Origins::new_interval`]); refusal counts stay.

use std::collections::{HashMap, HashSet};

/// What makes a line's origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginBy {
    /// The sender's address.
    Source,
    /// The value of this tag key (lines without it have no origin and are
    /// not limited).
    Tag(Vec<u8>),
}

/// The limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPolicy {
    /// What an origin is.
    pub by: OriginBy,
    /// Distinct keys per origin per interval.
    pub keys: usize,
    /// Origins tracked at most.
    pub max_origins: usize,
}

/// What became of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Its key is within its origin's budget.
    Admit,
    /// A new key over its origin's budget.
    OverKeys,
    /// A new origin while `max_origins` are tracked.
    TooManyOrigins,
}

#[derive(Debug, Default)]
struct Origin {
    keys: HashSet<u64>,
    refused: u64,
}

/// Origins whose refusals are remembered across intervals (the worst).
const REMEMBERED: usize = 64;

/// One instance's origins.
#[derive(Debug)]
pub struct Origins {
    policy: OriginPolicy,
    /// This interval's origins: their keys and refusals.
    table: HashMap<Box<[u8]>, Origin>,
    /// Refusals of earlier intervals, the [`REMEMBERED`] worst origins.
    history: HashMap<Box<[u8]>, u64>,
}

impl Origins {
    /// No origins yet.
    pub fn new(policy: OriginPolicy) -> Origins {
        Origins { policy, table: HashMap::new(), history: HashMap::new() }
    }

    /// The policy.
    pub fn policy(&self) -> &OriginPolicy {
        &self.policy
    }

    /// New limits (a reload), from now on.
    pub fn set_policy(&mut self, policy: OriginPolicy) {
        self.policy = policy;
    }

    /// Admits (or not) a line of key `key_hash` from `origin`.
    pub fn admit(&mut self, origin: &[u8], key_hash: u64) -> Verdict {
        if !self.table.contains_key(origin) {
            if self.table.len() >= self.policy.max_origins {
                return Verdict::TooManyOrigins;
            }
            self.table.insert(origin.into(), Origin::default());
        }
        let Some(o) = self.table.get_mut(origin) else { return Verdict::TooManyOrigins };
        if o.keys.contains(&key_hash) {
            return Verdict::Admit;
        }
        if o.keys.len() >= self.policy.keys {
            o.refused += 1;
            return Verdict::OverKeys;
        }
        o.keys.insert(key_hash);
        Verdict::Admit
    }

    /// A new interval: every origin's budget is whole again, and the
    /// table starts empty (so an origin gone quiet frees its place); the
    /// interval's refusals join the remembered worst.
    pub fn new_interval(&mut self) {
        for (k, o) in self.table.drain() {
            if o.refused > 0 {
                *self.history.entry(k).or_default() += o.refused;
            }
        }
        if self.history.len() > REMEMBERED {
            let mut all: Vec<(Box<[u8]>, u64)> = self.history.drain().collect();
            all.sort_by_key(|e| std::cmp::Reverse(e.1));
            all.truncate(REMEMBERED);
            self.history = all.into_iter().collect();
        }
    }

    /// The `n` origins with the most refused lines, most first.
    pub fn offenders(&self, n: usize) -> Vec<(Vec<u8>, u64)> {
        let now = self.table.iter().filter(|(_, o)| o.refused > 0).map(|(k, o)| (k.to_vec(), o.refused));
        let before = self.history.iter().map(|(k, v)| (k.to_vec(), *v));
        merge_offenders([now.collect::<Vec<_>>(), before.collect()], n)
    }
}

/// How an origin reads in a report: a source address as an address, a
/// tag's value as text.
pub fn label(by: &OriginBy, raw: &[u8]) -> String {
    match (by, raw.len()) {
        (OriginBy::Source, 4) => {
            let a: [u8; 4] = raw.try_into().unwrap_or_default();
            std::net::Ipv4Addr::from(a).to_string()
        }
        (OriginBy::Source, 16) => {
            let a: [u8; 16] = raw.try_into().unwrap_or_default();
            std::net::Ipv6Addr::from(a).to_string()
        }
        _ => String::from_utf8_lossy(raw).into_owned(),
    }
}

/// Sums offender lists from several instances and keeps the `n` worst.
pub fn merge_offenders(
    lists: impl IntoIterator<Item = Vec<(Vec<u8>, u64)>>,
    n: usize,
) -> Vec<(Vec<u8>, u64)> {
    let mut sum: HashMap<Vec<u8>, u64> = HashMap::new();
    for (k, v) in lists.into_iter().flatten() {
        *sum.entry(k).or_default() += v;
    }
    let mut all: Vec<(Vec<u8>, u64)> = sum.into_iter().collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(n);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(keys: usize, max_origins: usize) -> OriginPolicy {
        OriginPolicy { by: OriginBy::Source, keys, max_origins }
    }

    #[test]
    fn each_origin_has_its_budget_per_interval() {
        let mut o = Origins::new(policy(2, 10));
        assert_eq!(o.admit(b"a", 1), Verdict::Admit);
        assert_eq!(o.admit(b"a", 2), Verdict::Admit);
        assert_eq!(o.admit(b"a", 1), Verdict::Admit, "a known key");
        assert_eq!(o.admit(b"a", 3), Verdict::OverKeys);
        assert_eq!(o.admit(b"a", 4), Verdict::OverKeys);
        assert_eq!(o.admit(b"b", 3), Verdict::Admit, "another origin");
        o.new_interval();
        assert_eq!(o.admit(b"a", 3), Verdict::Admit, "a new interval");
        assert_eq!(o.offenders(5), vec![(b"a".to_vec(), 2)]);
    }

    #[test]
    fn origins_are_bounded() {
        let mut o = Origins::new(policy(5, 2));
        assert_eq!(o.admit(b"a", 1), Verdict::Admit);
        assert_eq!(o.admit(b"b", 1), Verdict::Admit);
        assert_eq!(o.admit(b"c", 1), Verdict::TooManyOrigins);
        o.new_interval();
        assert_eq!(o.admit(b"c", 1), Verdict::Admit, "a new interval makes room");
    }

    #[test]
    fn offenders_merge_across_instances() {
        let a = vec![(b"x".to_vec(), 5), (b"y".to_vec(), 1)];
        let b = vec![(b"y".to_vec(), 7), (b"z".to_vec(), 2)];
        assert_eq!(merge_offenders([a, b], 2), vec![(b"y".to_vec(), 8), (b"x".to_vec(), 5)]);
    }
}
