//! The aggregate service's counters: plain integers owned by each shard
//! (no atomics), gathered with `shard::map_reduce` and merged; declared
//! once ([`crate::counters`]).

use super::parse::DropReason;

crate::counter_set! {
    /// One shard's counters (or the sum of several). Each is exposed as
    /// the Graphite gauge `<prefix>.aggregate.<name>` and the Prometheus
    /// family named here.
    pub struct AggregateStats {
        datagrams: Counter("appliance_aggregate_datagrams_total") "Datagrams received.",
        /// Read from the kernel (`SO_MEMINFO`) when counters are gathered.
        kernel_drops: Counter("appliance_aggregate_kernel_drops_total")
            "Datagrams the kernel dropped on the service's UDP sockets (receive buffer full) before the appliance could read them.",
        truncated: Counter("appliance_aggregate_truncated_total")
            "Datagrams larger than max_datagram, cut there (their cut line is dropped).",
        tcp_connections: Counter("appliance_aggregate_tcp_connections_total")
            "Stream connections accepted (TCP, and Unix stream sockets).",
        tcp_refused: Counter("appliance_aggregate_tcp_refused_total")
            "TCP connections refused: the shard's share of the descriptor budget was in use.",
        lines: Counter("appliance_aggregate_lines_total") "Non-empty lines received.",
        metrics: Counter("appliance_aggregate_metrics_total") "Metric lines accepted.",
        rule_drops: Counter("appliance_aggregate_rule_drops_total") "Metric lines dropped by a drop rule (by name).",
        origin_refused: Counter("appliance_aggregate_origin_refused_total")
            "Metric lines refused: a new key over its origin's max_keys_per_origin, or a new origin over max_origins.",
        events: Counter("appliance_aggregate_events_total")
            "DogStatsD events seen (forwarded to relays, else dropped).",
        service_checks: Counter("appliance_aggregate_service_checks_total")
            "DogStatsD service checks seen (forwarded to relays, else dropped).",
        /// Lines at the receiving shard, plus partial aggregates an owner
        /// could not take at flush time (their lines were already counted
        /// in `metrics`).
        keys_refused: Counter("appliance_aggregate_keys_refused_total") "New keys refused over max_keys.",
        keys: Gauge("appliance_aggregate_keys") "Keys owned.",
        keys_expired: Counter("appliance_aggregate_keys_expired_total") "Keys deleted as idle.",
        flushes: Counter("appliance_aggregate_flushes_total") "Flushes completed.",
        flush_errors: Counter("appliance_aggregate_flush_errors_total") "Graphite connects or sends failed.",
        intervals_dropped: Counter("appliance_aggregate_intervals_dropped_total")
            "Flush intervals dropped while Graphite was unreachable.",
        graphite_lines: Counter("appliance_aggregate_graphite_lines_total") "Graphite lines written.",
        held_intervals: Gauge("appliance_aggregate_held_intervals")
            "Flush intervals queued for Graphite (more than one: Graphite is slow or away).",
        last_flush_timestamp_seconds: Newest("appliance_aggregate_last_flush_timestamp_seconds")
            "When the last flush ended (unix seconds).",
        relay_errors: Counter("appliance_aggregate_relay_errors_total") "Relay datagrams not sent.",
        prom_series: Gauge("appliance_aggregate_prom_series") "Series in the service's Prometheus exposition.",
        prom_unmapped: Counter("appliance_aggregate_prom_unmapped_total")
            "Keys no mapping matched (shown under their escaped statsd name).",
        prom_mapping_drops: Counter("appliance_aggregate_prom_mapping_drops_total")
            "Flushed keys not shown: a mapping with action drop matched.",
        prom_conflicts: Counter("appliance_aggregate_prom_conflicts_total")
            "Flushed keys not shown: their name is another type's, or their labels use le or quantile.",
        prom_errors: Counter("appliance_aggregate_prom_errors_total")
            "Malformed tags left out, negative counter sums refused, and mappings that gave an empty name.",
        prom_series_refused: Counter("appliance_aggregate_prom_series_refused_total")
            "New series refused over max_keys.",
        prom_series_expired: Counter("appliance_aggregate_prom_series_expired_total")
            "Series removed after their mapping's ttl without an update.",
    }
    with {
        /// Malformed lines, by [`DropReason::index`].
        dropped: [u64; DropReason::ALL.len()],
    }
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
    use crate::counters::Measure;

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
        let s = AggregateStats { datagrams: 1, prom_series_expired: 9, ..Default::default() };
        assert_eq!(AggregateStats::FIELDS.len(), s.values().len());
        assert_eq!(AggregateStats::FIELDS.first().map(|f| f.name), Some("datagrams"));
        assert_eq!(s.values().first(), Some(&1));
        assert_eq!(s.values().last(), Some(&9), "declaration order");
        let names: std::collections::HashSet<_> = AggregateStats::FIELDS.iter().map(|f| f.name).collect();
        assert_eq!(names.len(), AggregateStats::FIELDS.len());
        assert_eq!(AggregateStats::FIELDS.iter().filter(|f| f.measure == Measure::Gauge).count(), 3);
        for f in AggregateStats::FIELDS {
            let suffix = if f.measure == Measure::Counter { "_total" } else { "" };
            assert_eq!(f.family, format!("appliance_aggregate_{}{suffix}", f.name), "metric names unchanged");
        }
    }
}
