//! The aggregate service's Prometheus families, and its last flushed
//! interval as gauges when it has no Graphite upstream.

use ops::metrics::{Exposition, Kind};

use super::stats::AggregateStats;
use crate::services::each;

pub(super) fn service(e: &mut Exposition, service: &str, all: &[AggregateStats]) {
    use Kind::{Counter, Gauge};
    let l = &[("service", service)];
    each(e, all, "appliance_aggregate_datagrams_total", Counter, "Datagrams received.", l, |s| s.datagrams);
    each(e, all, "appliance_aggregate_truncated_total", Counter, "Datagrams larger than a buffer.", l, |s| {
        s.truncated
    });
    each(e, all, "appliance_aggregate_tcp_connections_total", Counter, "TCP connections accepted.", l, |s| {
        s.tcp_connections
    });
    let help = "TCP connections refused: the shard's share of the descriptor budget was in use.";
    each(e, all, "appliance_aggregate_tcp_refused_total", Counter, help, l, |s| s.tcp_refused);
    each(e, all, "appliance_aggregate_lines_total", Counter, "Non-empty lines received.", l, |s| s.lines);
    each(e, all, "appliance_aggregate_metrics_total", Counter, "Metric lines accepted.", l, |s| s.metrics);
    each(e, all, "appliance_aggregate_events_total", Counter, "DogStatsD events seen.", l, |s| s.events);
    each(
        e,
        all,
        "appliance_aggregate_service_checks_total",
        Counter,
        "DogStatsD service checks seen.",
        l,
        |s| s.service_checks,
    );
    let name = "appliance_aggregate_dropped_total";
    let help = "Malformed lines dropped, by reason.";
    for reason in cores::statsd::parse::DropReason::ALL {
        let labels = &[("service", service), ("reason", reason.as_str())];
        each(e, all, name, Counter, help, labels, |s| s.dropped[reason.index()]);
    }
    each(
        e,
        all,
        "appliance_aggregate_keys_refused_total",
        Counter,
        "New keys refused over max_keys.",
        l,
        |s| s.keys_refused,
    );
    each(e, all, "appliance_aggregate_keys", Gauge, "Keys owned.", l, |s| s.keys);
    each(e, all, "appliance_aggregate_keys_expired_total", Counter, "Keys deleted as idle.", l, |s| {
        s.keys_expired
    });
    each(e, all, "appliance_aggregate_flushes_total", Counter, "Flushes completed.", l, |s| s.flushes);
    each(
        e,
        all,
        "appliance_aggregate_flush_errors_total",
        Counter,
        "Graphite connects or sends failed.",
        l,
        |s| s.flush_errors,
    );
    let help = "Flush intervals dropped while Graphite was unreachable.";
    each(e, all, "appliance_aggregate_intervals_dropped_total", Counter, help, l, |s| s.intervals_dropped);
    each(e, all, "appliance_aggregate_graphite_lines_total", Counter, "Graphite lines written.", l, |s| {
        s.graphite_lines
    });
    each(e, all, "appliance_aggregate_relay_errors_total", Counter, "Relay datagrams not sent.", l, |s| {
        s.relay_errors
    });
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
