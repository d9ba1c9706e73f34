//! The aggregate service's Prometheus families, and its last flushed
//! interval as gauges when it has no Graphite upstream.

use ops::metrics::{Exposition, Kind};

use super::stats::AggregateStats;
use crate::services::counters;

/// Every counter of the set, as declared once in `AggregateStats`, and the
/// drops by reason.
pub(super) fn service(e: &mut Exposition, service: &str, all: &[AggregateStats]) {
    let l = &[("service", service)];
    let values: Vec<Vec<u64>> = all.iter().map(AggregateStats::values).collect();
    counters::per_shard(e, AggregateStats::FIELDS, l, &values);
    let name = "appliance_aggregate_dropped_total";
    let help = "Malformed lines dropped, by reason.";
    for reason in cores::statsd::parse::DropReason::ALL {
        let labels = &[("service", service), ("reason", reason.as_str())];
        let values: Vec<u64> = all.iter().map(|s| s.dropped[reason.index()]).collect();
        e.per_shard(name, Kind::Counter, help, labels, &values);
    }
}

/// The last interval's flushed values (kept when there is no Graphite
/// upstream): one gauge sample per Graphite path (`path;tag=v` for tagged
/// keys), so a Prometheus can scrape the aggregates directly.
pub(super) fn flushed_values(e: &mut Exposition, service: &str, per_shard: &[Vec<u8>]) {
    let name = "appliance_aggregate_value";
    e.family(name, Kind::Gauge, "Last flushed value of each aggregate, by Graphite path.");
    for text in per_shard {
        for line in text.split(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(line);
            let mut parts = line.split(' ');
            let (Some(path), Some(value)) = (parts.next(), parts.next()) else { continue };
            let Ok(v) = value.parse::<f64>() else { continue };
            e.sample(name, &[("service", service), ("metric", path)], v);
        }
    }
}
