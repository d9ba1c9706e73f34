//! The forward service's counters: plain integers owned by each shard (in
//! its `ShardState`), no atomics on the hot path. A snapshot of every shard
//! is gathered with `shard::map_reduce` for the admin endpoint.

use std::time::Duration;

/// Connect-time histogram bucket upper bounds, in microseconds (powers of 4
/// from 64 us to ~4 s), plus an overflow bucket.
pub const CONNECT_BUCKETS_US: [u64; 9] = [64, 256, 1024, 4096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304];

/// Per-upstream counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamStats {
    /// Connections open now.
    pub active: u64,
    /// Connections relayed in total.
    pub total: u64,
    /// Bytes client -> upstream.
    pub bytes_up: u64,
    /// Bytes upstream -> client.
    pub bytes_down: u64,
    /// Failed connects.
    pub connect_errors: u64,
    /// Refused because the upstream was at its max-conns.
    pub refused_over_limit: u64,
    /// Health transitions seen.
    pub transitions: u64,
    /// Whether it is eligible now (1) or not (0), as this shard sees it.
    pub up: u64,
    /// Connect times, bucketed by [`CONNECT_BUCKETS_US`] (+1 overflow).
    pub connect_time: [u64; 10],
    /// Sum of connect times, in microseconds.
    pub connect_time_sum_us: u64,
}

/// Per-listener counters (one listener per forward service).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections open now (the shard's held `--max-conns` slots).
    pub active: u64,
    /// Refused: the listener's share of --max-conns was used up.
    pub refused_over_limit: u64,
    /// Refused: no upstream was eligible (or one could not be reached for
    /// a reason on our side, see `local_connect_errors`).
    pub refused_no_upstream: u64,
    /// Upstream connects that failed on our side (out of descriptors,
    /// ports or memory): never counted against the upstream's health.
    pub local_connect_errors: u64,
    /// Connects retried on another upstream.
    pub retries: u64,
    /// Relays that ended in a reset, on idle, or on another error.
    pub resets: u64,
    /// Relays closed by the idle timeout.
    pub idle_closed: u64,
    /// Bad inbound PROXY headers.
    pub bad_proxy_headers: u64,
    /// Clients closed because their PROXY header was not complete in time.
    pub proxy_header_timeouts: u64,
    /// Bytes client -> upstream.
    pub bytes_up: u64,
    /// Bytes upstream -> client.
    pub bytes_down: u64,
    /// Relay sends that found the reader's socket full and waited, their
    /// bytes copied out so the relay buffer went back to the shard.
    pub slow_reader_sends: u64,
    /// Relay buffers free in the shard's ring now (a gauge).
    pub relay_buffers_free: u64,
    /// Receives that found the relay buffer ring empty and waited.
    pub relay_buffers_exhausted: u64,
    /// UDP sessions and datagrams (`--udp`).
    pub udp: UdpStats,
    /// Per upstream, in configuration order.
    pub upstreams: Vec<UpstreamStats>,
}

impl ForwardStats {
    /// Adds another shard's counters into these.
    pub fn merge(&mut self, other: &ForwardStats) {
        self.accepted += other.accepted;
        self.active += other.active;
        self.refused_over_limit += other.refused_over_limit;
        self.refused_no_upstream += other.refused_no_upstream;
        self.local_connect_errors += other.local_connect_errors;
        self.retries += other.retries;
        self.resets += other.resets;
        self.idle_closed += other.idle_closed;
        self.bad_proxy_headers += other.bad_proxy_headers;
        self.proxy_header_timeouts += other.proxy_header_timeouts;
        self.bytes_up += other.bytes_up;
        self.bytes_down += other.bytes_down;
        self.slow_reader_sends += other.slow_reader_sends;
        self.relay_buffers_free += other.relay_buffers_free;
        self.relay_buffers_exhausted += other.relay_buffers_exhausted;
        self.udp.merge(&other.udp);
        if self.upstreams.len() < other.upstreams.len() {
            self.upstreams.resize(other.upstreams.len(), UpstreamStats::default());
        }
        for (a, b) in self.upstreams.iter_mut().zip(&other.upstreams) {
            a.active += b.active;
            a.total += b.total;
            a.bytes_up += b.bytes_up;
            a.bytes_down += b.bytes_down;
            a.connect_errors += b.connect_errors;
            a.refused_over_limit += b.refused_over_limit;
            a.transitions += b.transitions;
            a.up = a.up.max(b.up);
            a.connect_time_sum_us += b.connect_time_sum_us;
            for (x, y) in a.connect_time.iter_mut().zip(b.connect_time.iter()) {
                *x += y;
            }
        }
    }
}

/// The bucket of a connect time.
pub fn bucket(t: Duration) -> usize {
    let us = t.as_micros() as u64;
    CONNECT_BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(CONNECT_BUCKETS_US.len())
}

/// UDP counters of one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdpStats {
    /// Sessions created.
    pub sessions_created: u64,
    /// Sessions open now.
    pub sessions_active: u64,
    /// Sessions closed by the idle timeout.
    pub sessions_expired: u64,
    /// New clients whose datagrams were dropped: the shard's share of
    /// `max_conns` sessions was in use.
    pub sessions_refused: u64,
    /// Datagrams client -> upstream.
    pub datagrams_up: u64,
    /// Datagrams upstream -> client.
    pub datagrams_down: u64,
    /// Datagrams dropped: no eligible upstream, a send failed, or a
    /// datagram was cut by a receive buffer.
    pub dropped: u64,
}

impl UdpStats {
    /// Adds another shard's counters into these.
    pub fn merge(&mut self, o: &UdpStats) {
        self.sessions_created += o.sessions_created;
        self.sessions_active += o.sessions_active;
        self.sessions_expired += o.sessions_expired;
        self.sessions_refused += o.sessions_refused;
        self.datagrams_up += o.datagrams_up;
        self.datagrams_down += o.datagrams_down;
        self.dropped += o.dropped;
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
