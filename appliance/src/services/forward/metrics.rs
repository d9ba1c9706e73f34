//! The forward service's Prometheus families: per service and shard, and
//! per upstream.

use ops::metrics::{Exposition, Kind};

use super::stats::{ForwardStats, CONNECT_BUCKETS_US};
use crate::services::each;

pub(super) fn service(e: &mut Exposition, service: &str, all: &[ForwardStats]) {
    use Kind::{Counter, Gauge};
    let l = &[("service", service)];
    each(e, all, "appliance_forward_accepted_total", Counter, "Client connections accepted.", l, |s| {
        s.accepted
    });
    each(e, all, "appliance_forward_active_connections", Gauge, "Client connections open.", l, |s| s.active);
    let help = "Client connections refused: over --max-conns, or no eligible upstream.";
    let name = "appliance_forward_refused_total";
    each(e, all, name, Counter, help, &[("service", service), ("reason", "over_limit")], |s| {
        s.refused_over_limit
    });
    each(e, all, name, Counter, help, &[("service", service), ("reason", "no_upstream")], |s| {
        s.refused_no_upstream
    });
    each(
        e,
        all,
        "appliance_forward_retries_total",
        Counter,
        "Connects retried on another upstream.",
        l,
        |s| s.retries,
    );
    each(e, all, "appliance_forward_resets_total", Counter, "Relays ended by a reset or an error.", l, |s| {
        s.resets
    });
    each(
        e,
        all,
        "appliance_forward_idle_closed_total",
        Counter,
        "Relays closed by the idle timeout.",
        l,
        |s| s.idle_closed,
    );
    each(
        e,
        all,
        "appliance_forward_bad_proxy_headers_total",
        Counter,
        "Bad inbound PROXY headers.",
        l,
        |s| s.bad_proxy_headers,
    );
    let help = "Upstream connects that failed on our side (descriptors, ports, memory), not the upstream's.";
    each(e, all, "appliance_forward_local_connect_errors_total", Counter, help, l, |s| {
        s.local_connect_errors
    });
    each(
        e,
        all,
        "appliance_forward_proxy_header_timeouts_total",
        Counter,
        "Clients closed because their PROXY header was not complete within proxy_header_timeout.",
        l,
        |s| s.proxy_header_timeouts,
    );
    let help = "Bytes relayed (up: client to upstream).";
    let name = "appliance_forward_bytes_total";
    each(e, all, name, Counter, help, &[("service", service), ("direction", "up")], |s| s.bytes_up);
    each(e, all, name, Counter, help, &[("service", service), ("direction", "down")], |s| s.bytes_down);
    each(
        e,
        all,
        "appliance_netstack_relay_buffers_free",
        Gauge,
        "Relay buffers free in the shard's ring.",
        l,
        |s| s.relay_buffers_free,
    );
    let help =
        "Relay sends that found the reader's socket full and waited, bytes copied out of the relay buffer.";
    each(e, all, "appliance_forward_slow_reader_sends_total", Counter, help, l, |s| s.slow_reader_sends);
    let help = "Receives that found the relay buffer ring empty and waited for a buffer.";
    each(e, all, "appliance_netstack_relay_buffers_exhausted_total", Counter, help, l, |s| {
        s.relay_buffers_exhausted
    });
    each(e, all, "appliance_forward_udp_sessions", Gauge, "UDP sessions open.", l, |s| s.udp.sessions_active);
    let help = "New UDP clients dropped: the shard's share of max_conns sessions was in use.";
    each(e, all, "appliance_forward_udp_sessions_refused_total", Counter, help, l, |s| {
        s.udp.sessions_refused
    });
    each(e, all, "appliance_forward_udp_sessions_total", Counter, "UDP sessions created.", l, |s| {
        s.udp.sessions_created
    });
    let help = "UDP datagrams relayed (up: client to upstream).";
    let name = "appliance_forward_udp_datagrams_total";
    each(e, all, name, Counter, help, &[("service", service), ("direction", "up")], |s| s.udp.datagrams_up);
    each(e, all, name, Counter, help, &[("service", service), ("direction", "down")], |s| {
        s.udp.datagrams_down
    });
    each(e, all, "appliance_forward_udp_dropped_total", Counter, "UDP datagrams dropped.", l, |s| {
        s.udp.dropped
    });
}

/// Per-upstream families, summed over shards (labels: service, upstream).
pub(super) fn upstreams(e: &mut Exposition, service: &str, names: &[&str], all: &[ForwardStats]) {
    let mut sum = ForwardStats::default();
    for s in all {
        sum.merge(s);
    }
    type Field = fn(&crate::services::forward::stats::UpstreamStats) -> u64;
    let families: [(&str, Kind, &str, Field); 8] = [
        ("appliance_forward_upstream_up", Kind::Gauge, "1 if the upstream is eligible.", |u| u.up),
        ("appliance_forward_upstream_active_connections", Kind::Gauge, "Connections open.", |u| u.active),
        ("appliance_forward_upstream_connections_total", Kind::Counter, "Connections relayed.", |u| u.total),
        ("appliance_forward_upstream_connect_errors_total", Kind::Counter, "Failed connects.", |u| {
            u.connect_errors
        }),
        ("appliance_forward_upstream_refused_total", Kind::Counter, "Refused at its max-conns.", |u| {
            u.refused_over_limit
        }),
        (
            "appliance_forward_upstream_health_transitions_total",
            Kind::Counter,
            "Health state changes.",
            |u| u.transitions,
        ),
        ("appliance_forward_upstream_bytes_up_total", Kind::Counter, "Bytes client to upstream.", |u| {
            u.bytes_up
        }),
        ("appliance_forward_upstream_bytes_down_total", Kind::Counter, "Bytes upstream to client.", |u| {
            u.bytes_down
        }),
    ];
    for (name, kind, help, f) in families {
        e.family(name, kind, help);
        for (u, s) in names.iter().zip(&sum.upstreams) {
            e.sample(name, &[("service", service), ("upstream", u)], f(s) as f64);
        }
    }
    let name = "appliance_forward_upstream_connect_seconds";
    e.family(name, Kind::Histogram, "Time to connect to the upstream.");
    let bounds: Vec<f64> = CONNECT_BUCKETS_US.iter().map(|us| *us as f64 / 1e6).collect();
    for (u, s) in names.iter().zip(&sum.upstreams) {
        let total_us: f64 = s.connect_time_sum_us as f64;
        e.histogram(name, &[("service", service), ("upstream", u)], &bounds, &s.connect_time, total_us / 1e6);
    }
}
