//! The forward service's counters: plain integers owned by each shard (in
//! its `ShardState`), no atomics on the hot path, each declared once with
//! its Prometheus family ([`cores::counters`]). A snapshot of every shard
//! is gathered with `shard::map_reduce` for the admin endpoint.

use std::time::Duration;

/// Connect-time histogram bucket upper bounds, in microseconds (powers of 4
/// from 64 us to ~4 s), plus an overflow bucket.
pub const CONNECT_BUCKETS_US: [u64; 9] = [64, 256, 1024, 4096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304];

cores::counter_set! {
    /// Per-upstream counters (labels `service`, `upstream`).
    pub struct UpstreamStats {
        up: Flag("appliance_forward_upstream_up") "1 if the upstream is eligible.",
        active: Gauge("appliance_forward_upstream_active_connections") "Connections open.",
        total: Counter("appliance_forward_upstream_connections_total") "Connections relayed.",
        connect_errors: Counter("appliance_forward_upstream_connect_errors_total") "Failed connects.",
        refused_over_limit: Counter("appliance_forward_upstream_refused_total") "Refused at its max-conns.",
        transitions: Counter("appliance_forward_upstream_health_transitions_total") "Health state changes.",
        bytes_up: Counter("appliance_forward_upstream_bytes_up_total") "Bytes client to upstream.",
        bytes_down: Counter("appliance_forward_upstream_bytes_down_total") "Bytes upstream to client.",
    }
    with {
        /// Connect times, bucketed by [`CONNECT_BUCKETS_US`] (+1 overflow):
        /// the histogram `appliance_forward_upstream_connect_seconds`.
        connect_time: [u64; CONNECT_BUCKETS_US.len() + 1],
        /// Sum of connect times, in microseconds.
        connect_time_sum_us: u64,
    }
}

cores::counter_set! {
    /// One forward service's counters on one shard (or summed over
    /// several); labels `service`, `shard`.
    pub struct ForwardStats {
        accepted: Counter("appliance_forward_accepted_total") "Client connections accepted.",
        /// The shard's held `max_conns` slots.
        active: Gauge("appliance_forward_active_connections") "Client connections open.",
        refused_over_limit: Counter("appliance_forward_refused_total", reason = "over_limit")
            "Client connections refused, by reason: over max_conns, no eligible upstream, or a client over its limits.",
        /// Also when an upstream could not be reached for a reason on our
        /// side, see `local_connect_errors`.
        refused_no_upstream: Counter("appliance_forward_refused_total", reason = "no_upstream")
            "Client connections refused, by reason: over max_conns, no eligible upstream, or a client over its limits.",
        refused_client_conns: Counter("appliance_forward_refused_total", reason = "client_conns")
            "Client connections refused, by reason: over max_conns, no eligible upstream, or a client over its limits.",
        refused_client_rate: Counter("appliance_forward_refused_total", reason = "client_rate")
            "Client connections refused, by reason: over max_conns, no eligible upstream, or a client over its limits.",
        /// A new client while every tracked client was live.
        refused_client_table: Counter("appliance_forward_refused_total", reason = "client_table")
            "Client connections refused, by reason: over max_conns, no eligible upstream, or a client over its limits.",
        /// Clients tracked by the per-client limits.
        clients: Gauge("appliance_forward_clients") "Clients tracked by the per-client limits.",
        retries: Counter("appliance_forward_retries_total") "Connects retried on another upstream.",
        resets: Counter("appliance_forward_resets_total") "Relays ended by a reset or an error.",
        idle_closed: Counter("appliance_forward_idle_closed_total") "Relays closed by the idle timeout.",
        bad_proxy_headers: Counter("appliance_forward_bad_proxy_headers_total") "Bad inbound PROXY headers.",
        /// Never counted against the upstream's health.
        local_connect_errors: Counter("appliance_forward_local_connect_errors_total")
            "Upstream connects that failed on our side (descriptors, ports, memory), not the upstream's.",
        proxy_header_timeouts: Counter("appliance_forward_proxy_header_timeouts_total")
            "Clients closed because their PROXY header was not complete within proxy_header_timeout.",
        sni_routed: Counter("appliance_forward_sni_total", result = "routed")
            "Connections by what their ClientHello's server name did: matched a route, matched none (default pool), was absent, or was malformed (or not TLS).",
        sni_unmatched: Counter("appliance_forward_sni_total", result = "unmatched")
            "Connections by what their ClientHello's server name did: matched a route, matched none (default pool), was absent, or was malformed (or not TLS).",
        sni_missing: Counter("appliance_forward_sni_total", result = "missing")
            "Connections by what their ClientHello's server name did: matched a route, matched none (default pool), was absent, or was malformed (or not TLS).",
        sni_malformed: Counter("appliance_forward_sni_total", result = "malformed")
            "Connections by what their ClientHello's server name did: matched a route, matched none (default pool), was absent, or was malformed (or not TLS).",
        /// Absent or malformed names with `sni_missing = "refuse"`.
        refused_sni: Counter("appliance_forward_refused_total", reason = "sni")
            "Client connections refused, by reason: over max_conns, no eligible upstream, or a client over its limits.",
        client_hello_timeouts: Counter("appliance_forward_client_hello_timeouts_total")
            "Clients closed because their ClientHello was not complete within client_hello_timeout.",
        bytes_up: Counter("appliance_forward_bytes_total", direction = "up")
            "Bytes relayed (up: client to upstream).",
        bytes_down: Counter("appliance_forward_bytes_total", direction = "down")
            "Bytes relayed (up: client to upstream).",
        relay_buffers_free: Gauge("appliance_netstack_relay_buffers_free") "Relay buffers free in the shard's ring.",
        slow_reader_sends: Counter("appliance_forward_slow_reader_sends_total")
            "Relay sends that found the reader's socket full and waited, bytes copied out of the relay buffer.",
        relay_buffers_exhausted: Counter("appliance_netstack_relay_buffers_exhausted_total")
            "Receives that found the relay buffer ring empty and waited for a buffer.",
    }
    with {
        /// UDP sessions and datagrams (`udp = true`).
        udp: UdpStats,
        /// Per upstream, in configuration order.
        upstreams: Vec<UpstreamStats>,
    }
}

/// The bucket of a connect time.
pub fn bucket(t: Duration) -> usize {
    let us = t.as_micros() as u64;
    CONNECT_BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(CONNECT_BUCKETS_US.len())
}

cores::counter_set! {
    /// UDP counters of one shard (labels `service`, `shard`).
    pub struct UdpStats {
        sessions_active: Gauge("appliance_forward_udp_sessions") "UDP sessions open.",
        /// New clients whose datagrams were dropped.
        sessions_refused: Counter("appliance_forward_udp_sessions_refused_total")
            "New UDP clients dropped: the shard's share of max_conns sessions was in use.",
        sessions_created: Counter("appliance_forward_udp_sessions_total") "UDP sessions created.",
        datagrams_up: Counter("appliance_forward_udp_datagrams_total", direction = "up")
            "UDP datagrams relayed (up: client to upstream).",
        datagrams_down: Counter("appliance_forward_udp_datagrams_total", direction = "down")
            "UDP datagrams relayed (up: client to upstream).",
        /// No eligible upstream, a send failed, or a datagram was cut by a
        /// receive buffer.
        dropped: Counter("appliance_forward_udp_dropped_total") "UDP datagrams dropped.",
        /// Sessions closed by the idle timeout.
        sessions_expired: Counter("appliance_forward_udp_sessions_expired_total") "UDP sessions closed by the idle timeout.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_merge() {
        assert_eq!(bucket(Duration::from_micros(10)), 0);
        assert_eq!(bucket(Duration::from_micros(65)), 1);
        assert_eq!(bucket(Duration::from_secs(10)), 9);
        let mut a = ForwardStats {
            accepted: 1,
            upstreams: vec![UpstreamStats { total: 2, ..Default::default() }],
            ..Default::default()
        };
        let b = ForwardStats {
            accepted: 3,
            upstreams: vec![
                UpstreamStats::default(),
                UpstreamStats { total: 5, up: 1, ..Default::default() },
            ],
            ..Default::default()
        };
        a.merge(&b);
        assert_eq!(a.accepted, 4);
        assert_eq!(a.upstreams.len(), 2);
        assert_eq!(a.upstreams[1].total, 5);
        assert_eq!(a.upstreams[1].up, 1);
    }
}
