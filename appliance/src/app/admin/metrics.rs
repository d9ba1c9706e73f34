//! `/metrics`: every shard's counters, gathered with `map_reduce` and
//! written in the Prometheus text format, `appliance_` prefixed, per shard
//! (`shard="N"`) and summed (`shard="all"`).

use ops::metrics::{Exposition, Kind, Labels};

use crate::app::state::App;
use crate::services::ServiceId;

/// Every shard's runtime counters and its thread's CPU time (seconds),
/// indexed by shard, in one round over the shards.
pub(super) async fn runtime_and_cpu() -> Result<Vec<(shard::ShardStats, Option<f64>)>, shard::SubmitError> {
    let mut all = shard::map_reduce(
        || async { (shard::stats(), ops::cpu::thread_cpu_seconds()) },
        Vec::new(),
        |mut acc, s| {
            acc.push(s);
            acc
        },
    )
    .await?;
    all.sort_by_key(|(s, _)| s.shard);
    Ok(all)
}

/// The whole exposition.
pub(super) async fn render(app: &App, http: ops::http::HttpStats) -> Result<String, shard::SubmitError> {
    let mut e = Exposition::new();
    process(&mut e, app, http);
    let per_shard = runtime_and_cpu().await?;
    let stats: Vec<shard::ShardStats> = per_shard.iter().map(|(s, _)| *s).collect();
    runtime(&mut e, &stats);
    let name = "appliance_runtime_cpu_seconds_total";
    e.family(name, Kind::Counter, "CPU time each shard's thread has used (user and system, 10 ms steps).");
    for (s, cpu) in &per_shard {
        if let Some(cpu) = cpu {
            e.sample(name, &[("shard", &s.shard.to_string())], *cpu);
        }
    }
    let services = app.config().services.clone();
    for (i, service) in services.iter().enumerate() {
        service.metrics(ServiceId(i as u64), &mut e).await?;
    }
    dns(&mut e, app);
    Ok(e.finish())
}

/// Re-resolved upstream names: lookups by result, and addresses now.
fn dns(e: &mut Exposition, app: &App) {
    let names = app.dns.lock().clone();
    if names.is_empty() {
        return;
    }
    let lookups = "appliance_forward_dns_lookups_total";
    e.family(
        lookups,
        Kind::Counter,
        "Lookups of upstream names: answered (ok) or failed (the last answer stays).",
    );
    for ((service, name), s) in &names {
        let l = |result| [("service", service.as_str()), ("name", name.as_str()), ("result", result)];
        e.sample(lookups, &l("ok"), s.lookups_ok as f64);
        e.sample(lookups, &l("error"), s.lookups_failed as f64);
    }
    let changes = "appliance_forward_dns_changes_total";
    e.family(changes, Kind::Counter, "Answers that changed the addresses of an upstream name.");
    for ((service, name), s) in &names {
        e.sample(changes, &[("service", service.as_str()), ("name", name.as_str())], s.changes as f64);
    }
    let addresses = "appliance_forward_dns_addresses";
    e.family(addresses, Kind::Gauge, "Addresses an upstream name has in the pool.");
    for ((service, name), s) in &names {
        let l = [("service", service.as_str()), ("name", name.as_str())];
        e.sample(addresses, &l, s.addresses.len() as f64);
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

/// Writes one per-shard family from a field of per-shard counters.
fn each<T>(
    e: &mut Exposition,
    all: &[T],
    name: &str,
    kind: Kind,
    help: &str,
    labels: Labels<'_>,
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
    let help = "Bounded multishot receives cancelled because their owner had their limit of buffers waiting.";
    each(e, all, "appliance_uring_hold_stops_total", Counter, help, &[], |s| s.reactor.hold_stops);
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
