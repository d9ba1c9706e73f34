//! The aggregate service's Prometheus families, and its aggregates as
//! Prometheus series (`/metrics/<name>`).

use cores::statsd::exporter::{FamilyKind, SnapValue, Snapshot};
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

/// The service's Prometheus series (see `cores::statsd::exporter`), in the
/// text format.
pub(super) fn exposition(snapshot: &Snapshot) -> String {
    let mut e = Exposition::new();
    for f in &snapshot.families {
        let (kind, bounds, quantiles) = match &f.kind {
            FamilyKind::Counter => (Kind::Counter, &[][..], &[][..]),
            FamilyKind::Gauge => (Kind::Gauge, &[][..], &[][..]),
            FamilyKind::Histogram(bounds) => (Kind::Histogram, &bounds[..], &[][..]),
            FamilyKind::Summary { quantiles, .. } => (Kind::Summary, &[][..], &quantiles[..]),
        };
        e.family(&f.name, kind, &f.help);
        for s in &f.series {
            let labels: Vec<(&str, &str)> = s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            match &s.value {
                SnapValue::Counter(v) | SnapValue::Gauge(v) => {
                    e.sample(&f.name, &labels, *v);
                }
                SnapValue::Histogram { counts, sum } => {
                    let counts: Vec<u64> = counts.iter().map(|c| c.round() as u64).collect();
                    e.histogram(&f.name, &labels, bounds, &counts, *sum);
                }
                SnapValue::Summary { sum, count, .. } => {
                    e.summary(&f.name, &labels, &s.value.quantiles(quantiles), *sum, *count);
                }
            }
        }
    }
    e.finish()
}
