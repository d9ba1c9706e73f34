//! `/metrics`: every shard's counters, gathered with `map_reduce` and
//! written in the Prometheus text format, `appliance_` prefixed, per shard
//! (`shard="N"`) and summed (`shard="all"`).

use ops::metrics::{Exposition, Kind};

use crate::app::state::App;
use crate::config::Service;
use crate::services::forward::stats::{ForwardStats, CONNECT_BUCKETS_US};
use crate::services::ServiceId;

/// Every shard's runtime counters, indexed by shard.
pub(super) async fn runtime_stats() -> Result<Vec<shard::ShardStats>, shard::SubmitError> {
    let mut all = shard::map_reduce(
        || async { shard::stats() },
        Vec::new(),
        |mut acc, s| {
            acc.push(s);
            acc
        },
    )
    .await?;
    all.sort_by_key(|s| s.shard);
    Ok(all)
}

/// The whole exposition.
pub(super) async fn render(app: &App, http: ops::http::HttpStats) -> Result<String, shard::SubmitError> {
    let mut e = Exposition::new();
    process(&mut e, app, http);
    runtime(&mut e, &runtime_stats().await?);
    let services = app.config().services.clone();
    for (i, service) in services.iter().enumerate() {
        let id = ServiceId(i as u64);
        match service {
            Service::Forward(cfg) => {
                let per_shard = crate::services::forward::gather_per_shard(id).await?;
                forward(&mut e, &cfg.name, &per_shard);
                let names: Vec<&str> = cfg.upstreams.iter().map(|u| u.name.as_str()).collect();
                upstreams(&mut e, &cfg.name, &names, &per_shard);
            }
            Service::Aggregate(cfg) => {
                let stats =
                    on_every_shard(move || crate::services::aggregate::service::shard_stats(id)).await?;
                aggregate(&mut e, &cfg.name, &stats);
                let flushed =
                    on_every_shard(move || crate::services::aggregate::service::last_flush(id)).await?;
                flushed_values(&mut e, &cfg.name, &flushed);
            }
            Service::Echo(_) => {}
        }
    }
    Ok(e.finish())
}

/// `f()` on every shard, indexed by shard.
async fn on_every_shard<T: Send + 'static>(
    f: impl Fn() -> T + Clone + Send + 'static,
) -> Result<Vec<T>, shard::SubmitError> {
    let mut all = shard::map_reduce(
        move || {
            let f = f.clone();
            async move { (shard::shard_id(), f()) }
        },
        Vec::new(),
        |mut acc, x| {
            acc.push(x);
            acc
        },
    )
    .await?;
    all.sort_by_key(|(shard, _)| *shard);
    Ok(all.into_iter().map(|(_, v)| v).collect())
}

fn aggregate(e: &mut Exposition, service: &str, all: &[crate::services::aggregate::stats::AggregateStats]) {
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
fn flushed_values(e: &mut Exposition, service: &str, per_shard: &[Vec<u8>]) {
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

fn process(e: &mut Exposition, app: &App, http: ops::http::HttpStats) {
    e.family("appliance_build_info", Kind::Gauge, "Version of the running binary.").sample(
        "appliance_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    e.family("appliance_uptime_seconds", Kind::Gauge, "Seconds since the appliance started.").sample(
        "appliance_uptime_seconds",
        &[],
        app.started.elapsed().as_secs_f64(),
    );
    e.family("appliance_ready", Kind::Gauge, "1 when every shard serves and the appliance is not draining.")
        .sample("appliance_ready", &[], f64::from(u8::from(app.ready())));
    let reloads = app.reloads().clone();
    let name = "appliance_config_reloads_total";
    e.family(name, Kind::Counter, "SIGHUP reloads, applied (ok) or refused (error).");
    e.sample(name, &[("result", "ok")], reloads.ok as f64);
    e.sample(name, &[("result", "error")], reloads.failed as f64);
    let name = "appliance_admin_requests_total";
    e.family(name, Kind::Counter, "Admin endpoint requests by outcome.");
    for (outcome, v) in [
        ("ok", http.ok),
        ("not_found", http.not_found),
        ("bad_request", http.bad),
        ("timeout", http.timeouts),
        ("refused", http.refused),
    ] {
        e.sample(name, &[("outcome", outcome)], v as f64);
    }
}

/// Writes one per-shard family from a field of the shard stats.
fn each<T>(
    e: &mut Exposition,
    all: &[T],
    name: &str,
    kind: Kind,
    help: &str,
    labels: ops::metrics::Labels<'_>,
    f: impl Fn(&T) -> u64,
) {
    let values: Vec<u64> = all.iter().map(f).collect();
    e.per_shard(name, kind, help, labels, &values);
}

fn runtime(e: &mut Exposition, all: &[shard::ShardStats]) {
    use Kind::{Counter, Gauge};
    each(e, all, "appliance_runtime_loop_turns_total", Counter, "Shard loop turns.", &[], |s| s.turns);
    each(
        e,
        all,
        "appliance_runtime_parks_total",
        Counter,
        "Times a shard parked waiting for work.",
        &[],
        |s| s.parks,
    );
    each(e, all, "appliance_runtime_tasks", Gauge, "Tasks alive.", &[], |s| s.tasks_alive);
    each(e, all, "appliance_runtime_tasks_spawned_total", Counter, "Tasks spawned.", &[], |s| {
        s.tasks_spawned
    });
    each(e, all, "appliance_runtime_task_polls_total", Counter, "Task polls.", &[], |s| s.polls);
    each(
        e,
        all,
        "appliance_runtime_stalls_total",
        Counter,
        "Polls longer than the stall threshold.",
        &[],
        |s| s.stalls,
    );
    each(e, all, "appliance_uring_enters_total", Counter, "io_uring_enter calls.", &[], |s| s.reactor.enters);
    each(e, all, "appliance_uring_submissions_total", Counter, "io_uring entries submitted.", &[], |s| {
        s.reactor.submitted
    });
    each(e, all, "appliance_uring_completions_total", Counter, "io_uring completions reaped.", &[], |s| {
        s.reactor.completions
    });
    each(e, all, "appliance_uring_ops_in_flight", Gauge, "io_uring operations in flight.", &[], |s| {
        s.ops_in_flight
    });
    let help = "Wake-ups received from other shards.";
    each(e, all, "appliance_runtime_wakeups_received_total", Counter, help, &[("via", "msg_ring")], |s| {
        s.reactor.ring_wakes
    });
    each(e, all, "appliance_runtime_wakeups_received_total", Counter, help, &[("via", "eventfd")], |s| {
        s.reactor.eventfd_wakes
    });
    each(
        e,
        all,
        "appliance_runtime_wakeups_sent_total",
        Counter,
        "Wake-ups sent to parked shards.",
        &[],
        |s| s.mesh.wakes_sent,
    );
    each(e, all, "appliance_mesh_messages_sent_total", Counter, "Messages sent to other shards.", &[], |s| {
        s.mesh.sent
    });
    each(
        e,
        all,
        "appliance_mesh_messages_received_total",
        Counter,
        "Messages received from other shards.",
        &[],
        |s| s.mesh.received,
    );
    let help = "Messages waiting in the shard's inbound cross-shard rings (occupancy).";
    each(e, all, "appliance_mesh_inbound_queued", Gauge, help, &[], |s| s.mesh.queued_in);
    each(e, all, "appliance_mesh_batches_total", Counter, "Message batches published.", &[], |s| {
        s.mesh.batches
    });
    each(
        e,
        all,
        "appliance_mesh_full_waits_total",
        Counter,
        "Sends that found a ring full and waited.",
        &[],
        |s| s.mesh.full_waits,
    );
}

fn forward(e: &mut Exposition, service: &str, all: &[ForwardStats]) {
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
fn upstreams(e: &mut Exposition, service: &str, names: &[&str], all: &[ForwardStats]) {
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
