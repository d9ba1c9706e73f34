//! The aggregate service's counters: plain integers owned by each shard
//! (no atomics), gathered with `shard::map_reduce` and merged.

use super::parse::DropReason;

/// Whether a counter only grows (a Prometheus counter) or is a level now
/// (a gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Only grows.
    Counter,
    /// A level.
    Gauge,
}

/// One counter of a set, as the exposition names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Its name (`lines`): the struct field, the Graphite gauge
    /// (`<prefix>.aggregate.lines`) and the Prometheus family
    /// (`appliance_aggregate_lines_total`).
    pub name: &'static str,
    /// Counter or gauge.
    pub measure: Measure,
    /// One line of help.
    pub help: &'static str,
}

/// Declares the counter set once: the struct, its cross-shard merge, and
/// the list every exposition walks ([`AggregateStats::FIELDS`] with
/// [`AggregateStats::values`]). A new counter is one line here.
macro_rules! counter_set {
    ($( $(#[doc = $doc:literal])* $field:ident: $measure:ident, $help:literal; )*) => {
        /// One shard's counters (or the sum of several).
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct AggregateStats {
            $( $(#[doc = $doc])* pub $field: u64, )*
            /// Malformed lines, by [`DropReason::index`].
            pub dropped: [u64; DropReason::ALL.len()],
        }

        impl AggregateStats {
            /// Every scalar counter, in declaration order.
            pub const FIELDS: &'static [Field] =
                &[$( Field { name: stringify!($field), measure: Measure::$measure, help: $help }, )*];

            /// The scalar counters' values, in [`Self::FIELDS`] order.
            pub fn values(&self) -> Vec<u64> {
                vec![$( self.$field, )*]
            }

            /// Adds another shard's counters into these.
            pub fn merge(&mut self, o: &AggregateStats) {
                $( self.$field += o.$field; )*
                for (a, b) in self.dropped.iter_mut().zip(o.dropped) {
                    *a += b;
                }
            }
        }
    };
}

counter_set! {
    /// Datagrams received.
    datagrams: Counter, "Datagrams received.";
    /// Datagrams larger than `max_datagram` (their cut line is dropped).
    truncated: Counter, "Datagrams larger than max_datagram, cut there.";
    /// TCP connections accepted.
    tcp_connections: Counter, "TCP connections accepted.";
    /// TCP connections refused: the shard's share of the descriptor budget
    /// was in use.
    tcp_refused: Counter, "TCP connections refused: the shard's share of the descriptor budget was in use.";
    /// Non-empty lines seen.
    lines: Counter, "Non-empty lines received.";
    /// Metric lines accepted.
    metrics: Counter, "Metric lines accepted.";
    /// DogStatsD events seen (forwarded to relays, else dropped).
    events: Counter, "DogStatsD events seen.";
    /// DogStatsD service checks seen (forwarded to relays, else dropped).
    service_checks: Counter, "DogStatsD service checks seen.";
    /// Refused because a key was new and the table's share of
    /// `--max-keys` was used up: lines at the receiving shard, plus
    /// partial aggregates an owner could not take at flush time (their
    /// lines were already counted in `metrics`).
    keys_refused: Counter, "New keys refused over max_keys.";
    /// Keys this shard owns now.
    keys: Gauge, "Keys owned.";
    /// Keys deleted as idle.
    keys_expired: Counter, "Keys deleted as idle.";
    /// Flushes completed.
    flushes: Counter, "Flushes completed.";
    /// Graphite connects or sends that failed.
    flush_errors: Counter, "Graphite connects or sends failed.";
    /// Flush intervals dropped because Graphite was unreachable too long.
    intervals_dropped: Counter, "Flush intervals dropped while Graphite was unreachable.";
    /// Graphite lines written to the socket.
    graphite_lines: Counter, "Graphite lines written.";
    /// Relay datagrams that could not be sent.
    relay_errors: Counter, "Relay datagrams not sent.";
}

impl AggregateStats {
    /// Malformed lines of every reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    /// `(name, value)` pairs, for reporting: every counter, then
    /// `dropped.<reason>` per reason.
    pub fn pairs(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> =
            Self::FIELDS.iter().zip(self.values()).map(|(f, v)| (f.name.to_owned(), v)).collect();
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

    #[test]
    fn the_declaration_lists_every_counter_once() {
        let s = AggregateStats { datagrams: 1, relay_errors: 9, ..Default::default() };
        assert_eq!(AggregateStats::FIELDS.len(), s.values().len());
        assert_eq!(AggregateStats::FIELDS.first().map(|f| f.name), Some("datagrams"));
        assert_eq!(s.values().first(), Some(&1));
        assert_eq!(s.values().last(), Some(&9), "declaration order");
        let names: std::collections::HashSet<_> = AggregateStats::FIELDS.iter().map(|f| f.name).collect();
        assert_eq!(names.len(), AggregateStats::FIELDS.len());
        assert_eq!(AggregateStats::FIELDS.iter().filter(|f| f.measure == Measure::Gauge).count(), 1);
    }
}
