//! The forward service's Prometheus families: per service and shard, and
//! per upstream, each family as its counter set declares it
//! ([`super::stats`]).

use ops::metrics::{Exposition, Kind};

use super::stats::{ForwardStats, UdpStats, UpstreamStats, CONNECT_BUCKETS_US};
use crate::services::counters;

pub(super) fn service(e: &mut Exposition, service: &str, all: &[ForwardStats]) {
    let l = &[("service", service)];
    let values: Vec<Vec<u64>> = all.iter().map(ForwardStats::values).collect();
    counters::per_shard(e, ForwardStats::FIELDS, l, &values);
    let udp: Vec<Vec<u64>> = all.iter().map(|s| s.udp.values()).collect();
    counters::per_shard(e, UdpStats::FIELDS, l, &udp);
}

/// Per-upstream families, summed over shards (labels: service, upstream;
/// `up` is 1 when any shard sees the upstream eligible).
pub(super) fn upstreams(e: &mut Exposition, service: &str, names: &[&str], all: &[ForwardStats]) {
    let mut sum = ForwardStats::default();
    for s in all {
        sum.merge(s);
    }
    let rows: Vec<counters::Row<'_>> =
        names.iter().zip(&sum.upstreams).map(|(u, s)| (vec![("upstream", *u)], s.values())).collect();
    counters::rows(e, UpstreamStats::FIELDS, &[("service", service)], &rows);
    let name = "appliance_forward_upstream_connect_seconds";
    e.family(name, Kind::Histogram, "Time to connect to the upstream.");
    let bounds: Vec<f64> = CONNECT_BUCKETS_US.iter().map(|us| *us as f64 / 1e6).collect();
    for (u, s) in names.iter().zip(&sum.upstreams) {
        let total_us: f64 = s.connect_time_sum_us as f64;
        e.histogram(name, &[("service", service), ("upstream", u)], &bounds, &s.connect_time, total_us / 1e6);
    }
}

/// `appliance_forward_upstream_admin_state`: 1 for the state the operator
/// set (ready, drain, maint), 0 for the others.
pub(super) fn admin_states(
    e: &mut Exposition,
    service: &str,
    upstreams: &[cores::pool::upstream::UpstreamSpec],
) {
    let name = "appliance_forward_upstream_admin_state";
    e.family(name, Kind::Gauge, "The upstream's state as set through the admin API (1: in this state).");
    for u in upstreams {
        for s in super::runtime::STATES {
            let labels = [("service", service), ("upstream", u.name.as_str()), ("state", s.as_str())];
            e.sample(name, &labels, f64::from(u8::from(u.state == s)));
        }
    }
}
