//! Connection limits without a shared counter.
//!
//! A global `--max-conns` (and an upstream's `max-conns=`) is split across
//! shards once, at startup: each shard enforces its own share with a plain
//! counter it alone touches. No atomics, no cross-core cache-line traffic
//! per connection. The price: a shard whose share is used up refuses a
//! connection even while another shard still has room, so the global limit
//! is an upper bound that may be reached a little before the total is in
//! use. With the kernel spreading connections evenly over shards the shares
//! fill evenly; a limit smaller than the number of shards leaves some
//! shards with a share of 0, which refuse every connection (give a limit of
//! at least one per shard).

/// `total` divided over `shards`, the remainder going one each to the first
/// shards, so the shares differ by at most one and sum to `total`. Zero for
/// `shards == 0` or `shard >= shards`.
pub fn split_limit(total: u32, shards: usize, shard: usize) -> u32 {
    if shard >= shards {
        return 0;
    }
    let shards = shards as u64;
    let (base, remainder) = (u64::from(total) / shards, u64::from(total) % shards);
    // base <= total and the remainder adds at most one to a base that is
    // below total whenever remainder > 0, so the share fits in a u32.
    (base + u64::from((shard as u64) < remainder)) as u32
}

/// A counter of active connections against a maximum, owned by one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimit {
    /// Connections allowed at once.
    pub max: u32,
    /// Connections currently held.
    pub active: u32,
}

impl ConnLimit {
    /// A limit of `max` connections.
    pub fn new(max: u32) -> Self {
        Self { max, active: 0 }
    }

    /// No limit (`u32::MAX`, more connections than a shard can have open).
    pub fn unlimited() -> Self {
        Self::new(u32::MAX)
    }

    /// This shard's share of an optional global limit (`None`: no limit).
    pub fn for_shard(total: Option<u32>, shards: usize, shard: usize) -> Self {
        total.map_or_else(Self::unlimited, |t| Self::new(split_limit(t, shards, shard)))
    }

    /// Whether one more connection would be allowed.
    pub fn has_room(&self) -> bool {
        self.active < self.max
    }

    /// Takes a slot if one is free.
    pub fn try_acquire(&mut self) -> bool {
        let ok = self.has_room();
        if ok {
            self.active += 1;
        }
        ok
    }

    /// Returns a slot. Saturates at zero: an unmatched release is a bug
    /// elsewhere, and wrapping would lock every connection out.
    pub fn release(&mut self) {
        self.active = self.active.saturating_sub(1);
    }
}

/// One shard's share of every upstream's `max-conns`, by upstream index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamLimits {
    limits: Vec<ConnLimit>,
}

impl UpstreamLimits {
    /// Shares of each upstream's optional limit, in upstream index order.
    pub fn new(max_conns: impl IntoIterator<Item = Option<u32>>, shards: usize, shard: usize) -> Self {
        Self { limits: max_conns.into_iter().map(|m| ConnLimit::for_shard(m, shards, shard)).collect() }
    }

    /// Whether upstream `i` can take one more connection (false for an unknown index).
    pub fn has_room(&self, i: usize) -> bool {
        self.limits.get(i).is_some_and(ConnLimit::has_room)
    }

    /// Takes a slot on upstream `i` if one is free.
    pub fn try_acquire(&mut self, i: usize) -> bool {
        self.limits.get_mut(i).is_some_and(ConnLimit::try_acquire)
    }

    /// Returns a slot on upstream `i` (unknown indices are ignored).
    pub fn release(&mut self, i: usize) {
        if let Some(limit) = self.limits.get_mut(i) {
            limit.release();
        }
    }

    /// Sets how many connections upstream `i` holds (carried over a reload).
    pub fn set_active(&mut self, i: usize, active: u32) {
        if let Some(limit) = self.limits.get_mut(i) {
            limit.active = active;
        }
    }

    /// Upstream `i`'s limit on this shard.
    pub fn get(&self, i: usize) -> Option<&ConnLimit> {
        self.limits.get(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_give_the_remainder_to_the_first_shards() {
        let shares: Vec<u32> = (0..4).map(|s| split_limit(10, 4, s)).collect();
        assert_eq!(shares, [3, 3, 2, 2]);
        assert_eq!(split_limit(10, 0, 0), 0);
        assert_eq!(split_limit(10, 4, 4), 0);
        assert_eq!(split_limit(2, 4, 3), 0, "a limit below the shard count starves some shards");
        assert_eq!(split_limit(u32::MAX, 1, 0), u32::MAX);
    }

    #[test]
    fn conn_limit_counts() {
        let mut limit = ConnLimit::new(2);
        assert!(limit.try_acquire());
        assert!(limit.try_acquire());
        assert!(!limit.try_acquire());
        assert_eq!(limit.active, 2);
        limit.release();
        assert!(limit.try_acquire());
        limit.release();
        limit.release();
        limit.release();
        assert_eq!(limit.active, 0, "release saturates");
        assert!(!ConnLimit::new(0).try_acquire());
        assert!(ConnLimit::unlimited().has_room());
        assert_eq!(ConnLimit::for_shard(None, 4, 1), ConnLimit::unlimited());
        assert_eq!(ConnLimit::for_shard(Some(5), 4, 0), ConnLimit::new(2));
    }

    #[test]
    fn upstream_limits_split_each_upstream() {
        let mut shard1 = UpstreamLimits::new([Some(3), None, Some(1)], 2, 1);
        assert_eq!(shard1.get(0).map(|l| l.max), Some(1));
        assert!(shard1.try_acquire(0));
        assert!(!shard1.has_room(0));
        assert!(!shard1.try_acquire(0));
        assert!(shard1.has_room(1));
        assert!(!shard1.has_room(2), "max-conns=1 over 2 shards: this shard gets none");
        assert!(!shard1.has_room(9) && !shard1.try_acquire(9));
        shard1.release(0);
        shard1.release(9);
        assert!(shard1.has_room(0));
        let shard0 = UpstreamLimits::new([Some(3), None, Some(1)], 2, 0);
        assert_eq!(shard0.get(2).map(|l| l.max), Some(1));
    }

    #[test]
    fn splits_sum_to_the_total_exhaustively_for_small_values() {
        for total in 0..=1000 {
            for shards in 1..=64 {
                let sum: u32 = (0..shards).map(|s| split_limit(total, shards, s)).sum();
                assert_eq!(sum, total, "{total} over {shards}");
            }
        }
    }

    proptest! {
        #[test]
        fn splits_sum_to_the_total(total in any::<u32>(), shards in 1usize..200) {
            let shares: Vec<u32> = (0..shards).map(|s| split_limit(total, shards, s)).collect();
            prop_assert_eq!(shares.iter().map(|&s| u64::from(s)).sum::<u64>(), u64::from(total));
            let (min, max) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
            prop_assert!(max - min <= 1);
            prop_assert!(shares.windows(2).all(|w| w[0] >= w[1]), "remainder to the first shards");
        }

        #[test]
        fn active_never_exceeds_max(max in 0u32..20, ops in proptest::collection::vec(any::<bool>(), 0..100)) {
            let mut limit = ConnLimit::new(max);
            let mut held = 0u32;
            for acquire in ops {
                if acquire {
                    if limit.try_acquire() { held += 1 } else { prop_assert_eq!(held, max) }
                } else if held > 0 {
                    limit.release();
                    held -= 1;
                }
                prop_assert!(limit.active <= max);
                prop_assert_eq!(limit.active, held);
            }
        }
    }
}
