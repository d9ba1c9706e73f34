//! The aggregate service's counters: plain integers owned by each shard
//! (no atomics), gathered with `shard::map_reduce` and merged.

use super::parse::DropReason;

/// One shard's counters (or the sum of several).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AggregateStats {
    /// Datagrams received.
    pub datagrams: u64,
    /// Datagrams larger than a receive buffer (their cut line is dropped).
    pub truncated: u64,
    /// TCP connections accepted.
    pub tcp_connections: u64,
    /// TCP connections refused: the shard's share of the descriptor budget
    /// was in use.
    pub tcp_refused: u64,
    /// Non-empty lines seen.
    pub lines: u64,
    /// Metric lines accepted.
    pub metrics: u64,
    /// DogStatsD events seen (forwarded to relays, else dropped).
    pub events: u64,
    /// DogStatsD service checks seen (forwarded to relays, else dropped).
    pub service_checks: u64,
    /// Malformed lines, by [`DropReason::index`].
    pub dropped: [u64; DropReason::ALL.len()],
    /// Refused because a key was new and the table's share of
    /// `--max-keys` was used up: lines at the receiving shard, plus
    /// partial aggregates an owner could not take at flush time (their
    /// lines were already counted in `metrics`).
    pub keys_refused: u64,
    /// Keys this shard owns now.
    pub keys: u64,
    /// Keys deleted as idle.
    pub keys_expired: u64,
    /// Flushes completed.
    pub flushes: u64,
    /// Graphite connects or sends that failed.
    pub flush_errors: u64,
    /// Flush intervals dropped because Graphite was unreachable too long.
    pub intervals_dropped: u64,
    /// Graphite lines written to the socket.
    pub graphite_lines: u64,
    /// Relay datagrams that could not be sent.
    pub relay_errors: u64,
}

impl AggregateStats {
    /// Adds another shard's counters into these.
    pub fn merge(&mut self, o: &AggregateStats) {
        self.datagrams += o.datagrams;
        self.truncated += o.truncated;
        self.tcp_connections += o.tcp_connections;
        self.tcp_refused += o.tcp_refused;
        self.lines += o.lines;
        self.metrics += o.metrics;
        self.events += o.events;
        self.service_checks += o.service_checks;
        for (a, b) in self.dropped.iter_mut().zip(o.dropped) {
            *a += b;
        }
        self.keys_refused += o.keys_refused;
        self.keys += o.keys;
        self.keys_expired += o.keys_expired;
        self.flushes += o.flushes;
        self.flush_errors += o.flush_errors;
        self.intervals_dropped += o.intervals_dropped;
        self.graphite_lines += o.graphite_lines;
        self.relay_errors += o.relay_errors;
    }

    /// Malformed lines of every reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    /// `(name, value)` pairs, for reporting (`dropped.<reason>` per reason).
    pub fn pairs(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = [
            ("datagrams", self.datagrams),
            ("truncated", self.truncated),
            ("tcp_connections", self.tcp_connections),
            ("tcp_refused", self.tcp_refused),
            ("lines", self.lines),
            ("metrics", self.metrics),
            ("events", self.events),
            ("service_checks", self.service_checks),
            ("keys_refused", self.keys_refused),
            ("keys", self.keys),
            ("keys_expired", self.keys_expired),
            ("flush_errors", self.flush_errors),
            ("intervals_dropped", self.intervals_dropped),
            ("relay_errors", self.relay_errors),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for r in DropReason::ALL {
            v.push((format!("dropped.{r}"), self.dropped[r.index()]));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_everything() {
        let mut a = AggregateStats { lines: 3, keys: 2, ..Default::default() };
        a.dropped[DropReason::BadRate.index()] = 1;
        let mut b = AggregateStats { lines: 4, flush_errors: 1, ..Default::default() };
        b.dropped[DropReason::BadRate.index()] = 2;
        a.merge(&b);
        assert_eq!((a.lines, a.keys, a.flush_errors, a.dropped_total()), (7, 2, 1, 3));
        assert!(a.pairs().contains(&("dropped.bad_rate".to_owned(), 3)));
    }
}
