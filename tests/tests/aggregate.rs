//! `appliance aggregate` end to end: the real binary on loopback, statsd
//! senders on many source ports (so every shard's socket receives some),
//! and a Graphite plaintext sink run by this file.

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use appliance_tests::graphite::Sink;
use appliance_tests::Appliance;

/// Starts the aggregator flushing to `sink`, with `extra` flags.
fn start(sink: &Sink, extra: &[&str]) -> (Appliance, SocketAddr, SocketAddr) {
    appliance_tests::start_aggregate(sink.addr, extra)
}

/// Sends `datagrams` round-robin from `ports` different source sockets.
fn send_udp(to: SocketAddr, datagrams: &[String], ports: usize) {
    let sockets: Vec<UdpSocket> =
        (0..ports).map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind sender")).collect();
    for (i, d) in datagrams.iter().enumerate() {
        sockets[i % ports].send_to(d.as_bytes(), to).expect("send");
        if i % 64 == 63 {
            // Stay well inside the receive buffer on a loaded machine.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn close(got: Option<f64>, want: f64, rel: f64) -> bool {
    got.is_some_and(|g| (g - want).abs() <= rel * want.abs() + 1e-9)
}

/// One datagram per group of lines; returns (datagrams, lines in total).
fn workload() -> (Vec<String>, u64) {
    let mut d = Vec::new();
    for _ in 0..200 {
        d.push("e2e.hits:1|c".to_owned());
    }
    for _ in 0..10 {
        d.push("e2e.sampled:1|c|@0.1".to_owned());
    }
    for i in 0..10 {
        // Same key whatever the tag order.
        d.push(
            if i % 2 == 0 { "e2e.tagged:2|c|#env:prod,az:a" } else { "e2e.tagged:3|c|#az:a,env:prod" }
                .to_owned(),
        );
    }
    // Absolute then deltas in one datagram keep their order.
    d.push("e2e.gauge:10|g\r\ne2e.gauge:+5|g\ne2e.gauge:-3|g\n".to_owned());
    for _ in 0..20 {
        d.push("e2e.delta:+1|g".to_owned());
    }
    for v in 1..=100 {
        d.push(format!("e2e.timer:{v}|ms"));
    }
    for _ in 0..4 {
        d.push("e2e.stimer:10|ms|@0.5".to_owned());
    }
    d.push("e2e.hist:5|h\n\ne2e.dist:7|d|#region:eu".to_owned());
    d.push("e2e.packed:1:2:3|ms".to_owned());
    for i in 0..50 {
        d.push(format!("e2e.set:user{}|s", i % 7));
    }
    // Malformed lines between good ones: the good ones still count.
    d.push("e2e.bad:abc|c\ne2e.ok:1|c\ne2e.bad:1|x\n:1|c\ne2e.bad:1|c|@2\n_e{5,4}:title|text".to_owned());
    d.push(format!("e2e.{}:1|c\ne2e.ok:1|c", "x".repeat(300)));
    let lines =
        d.iter().map(|s| s.split('\n').filter(|l| !l.trim_end_matches('\r').is_empty()).count() as u64).sum();
    (d, lines)
}

#[test]
fn every_type_flushes_exact_values() {
    every_type_exact_with(&[]);
}

#[test]
fn every_type_flushes_exact_values_when_records_are_shipped() {
    every_type_exact_with(&["--exchange", "records"]);
}

fn every_type_exact_with(extra: &[&str]) {
    let sink = Sink::start();
    let mut args = vec!["--flush-interval", "2s", "--max-line-length", "256", "--percentiles", "90,99"];
    args.extend_from_slice(extra);
    let (_app, udp, _) = start(&sink, &args);
    // Start right after a flush, so the whole workload lands in one interval.
    sink.wait_for("stats.aggregate.lines", 0.0).expect("first flush");
    let (datagrams, lines) = workload();
    send_udp(udp, &datagrams, 16);
    sink.wait_for("stats.aggregate.lines", lines as f64).expect("every line received");
    sink.settle();

    let value = |p: &str| sink.last(p);
    assert_eq!(sink.sum("stats.counters.e2e.hits.count"), 200.0);
    assert_eq!(sink.sum("stats.counters.e2e.sampled.count"), 100.0);
    assert_eq!(sink.sum("stats.counters.e2e.tagged.count;az=a;env=prod"), 25.0);
    assert_eq!(sink.sum("stats.counters.e2e.ok.count"), 2.0);
    let rates: f64 =
        sink.lines().iter().filter(|(p, _, _)| p == "stats.counters.e2e.hits.rate").map(|l| l.1).sum();
    assert_eq!(rates, 100.0, "rate is per second over 2 s intervals");
    assert_eq!(value("stats.gauges.e2e.gauge"), Some(12.0));
    assert_eq!(value("stats.gauges.e2e.delta"), Some(20.0));
    assert_eq!(value("stats.sets.e2e.set.count"), Some(7.0));

    // The timer's interval: the flush that reported samples.
    let flushed = sink.lines();
    let ts = flushed
        .iter()
        .find(|(p, v, _)| p == "stats.timers.e2e.timer.count" && *v > 0.0)
        .map(|l| l.2)
        .expect("timer flushed");
    let at = |p: &str| flushed.iter().find(|(q, _, t)| q == p && *t == ts).map(|l| l.1);
    let t = "stats.timers.e2e.timer";
    assert_eq!(at(&format!("{t}.count")), Some(100.0), "all samples in one interval");
    assert_eq!(at(&format!("{t}.count_ps")), Some(50.0));
    assert_eq!(at(&format!("{t}.sum")), Some(5050.0));
    assert_eq!(at(&format!("{t}.mean")), Some(50.5));
    assert_eq!(at(&format!("{t}.upper")), Some(100.0));
    assert_eq!(at(&format!("{t}.lower")), Some(1.0));
    assert!(close(at(&format!("{t}.std")), (9999.0f64 / 12.0).sqrt(), 1e-9));
    // 100 samples, under --exact-samples: etsy statsd's figures exactly
    // (the sketch alone gave upper_90 89.13).
    assert_eq!(at(&format!("{t}.median")), Some(50.5));
    assert_eq!(at(&format!("{t}.upper_90")), Some(90.0));
    assert_eq!(at(&format!("{t}.sum_90")), Some(4095.0));
    assert_eq!(at(&format!("{t}.mean_90")), Some(45.5));
    assert_eq!(at(&format!("{t}.upper_99")), Some(99.0));
    assert_eq!(at(&format!("{t}.sum_99")), Some(4950.0));
    assert_eq!(at("stats.timers.e2e.stimer.count"), Some(8.0));
    assert_eq!(at("stats.timers.e2e.stimer.sum"), Some(80.0));
    assert_eq!(at("stats.timers.e2e.packed.count"), Some(3.0));
    assert_eq!(at("stats.timers.e2e.packed.sum"), Some(6.0));
    assert_eq!(at("stats.timers.e2e.hist.upper"), Some(5.0));
    assert_eq!(at("stats.timers.e2e.dist.lower;region=eu"), Some(7.0));

    for (reason, n) in
        [("bad_value", 1.0), ("unknown_type", 1.0), ("empty_name", 1.0), ("bad_rate", 1.0), ("too_long", 1.0)]
    {
        assert_eq!(value(&format!("stats.aggregate.dropped.{reason}")), Some(n), "{reason}");
    }
    assert_eq!(value("stats.aggregate.events"), Some(1.0));
    assert_eq!(value("stats.aggregate.metrics"), Some(lines as f64 - 6.0));
    assert_eq!(value("stats.aggregate.datagrams"), Some(datagrams.len() as f64));
}

#[test]
fn tcp_lines_split_across_segments() {
    let sink = Sink::start();
    let (_app, _, tcp) = start(&sink, &["--flush-interval", "200ms"]);
    let mut conns: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(tcp).expect("connect")).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.set_nodelay(true).expect("nodelay");
        for _ in 0..25 {
            c.write_all(b"tcp.hits:1|c\ntcp.g").expect("write");
            std::thread::sleep(Duration::from_millis(1));
            c.write_all(format!("auge:{i}|g\ntcp.bad:x|c\n").as_bytes()).expect("write");
        }
        // The last line has no newline: the end of the stream ends it.
        c.write_all(b"tcp.hits:1|c").expect("write");
    }
    drop(conns);
    sink.wait_for("stats.aggregate.metrics", 204.0).expect("all lines");
    sink.settle();
    assert_eq!(sink.sum("stats.counters.tcp.hits.count"), 104.0);
    assert_eq!(sink.last("stats.aggregate.dropped.bad_value"), Some(100.0));
    assert_eq!(sink.last("stats.aggregate.tcp_connections"), Some(4.0));
    let g = sink.last("stats.gauges.tcp.gauge").expect("gauge");
    assert!((0.0..4.0).contains(&g), "{g}");
}

#[test]
fn sigterm_mid_interval_loses_nothing() {
    let sink = Sink::start();
    let (mut app, udp, tcp) = start(&sink, &["--flush-interval", "1h"]);
    let datagrams: Vec<String> = (0..400).map(|i| format!("term.udp:1|c\nterm.t:{}|ms", i % 10)).collect();
    send_udp(udp, &datagrams, 16);
    let mut c = TcpStream::connect(tcp).expect("connect");
    c.write_all("term.tcp:1|c\n".repeat(300).as_bytes()).expect("write");
    // The connection stays open across the signal: what it sent counts.
    std::thread::sleep(Duration::from_millis(50));
    app.signal(libc::SIGTERM);
    let status = app.wait_exit(Duration::from_secs(20)).expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", app.output());
    drop(c);
    sink.eventually("final flush delivered", |s| s.last("stats.aggregate.lines") == Some(1100.0));
    sink.settle();
    assert_eq!(sink.sum("stats.counters.term.udp.count"), 400.0, "{}", app.output());
    assert_eq!(sink.sum("stats.counters.term.tcp.count"), 300.0);
    assert_eq!(sink.last("stats.timers.term.t.count"), Some(400.0));
    assert_eq!(sink.last("stats.timers.term.t.sum"), Some(1800.0));
}

#[test]
fn max_keys_refuses_new_keys_only() {
    let sink = Sink::start();
    let (_app, udp, _) = start(&sink, &["--flush-interval", "300ms", "--max-keys", "10"]);
    let keys: Vec<String> = (0..40).map(|i| format!("mk.k{i}:1|c")).collect();
    send_udp(udp, &keys, 8);
    sink.wait_for("stats.aggregate.lines", 40.0).expect("lines");
    sink.settle();
    let lines = sink.lines();
    let mut seen: HashMap<&str, f64> = HashMap::new();
    for (p, v, _) in
        lines.iter().filter(|(p, _, _)| p.starts_with("stats.counters.mk.") && p.ends_with(".count"))
    {
        *seen.entry(p.as_str()).or_default() += v;
    }
    let refused = sink.last("stats.aggregate.keys_refused").expect("refused");
    assert!(!seen.is_empty() && seen.len() <= 10, "{} keys", seen.len());
    assert!(seen.values().all(|v| *v == 1.0));
    assert!(refused >= 30.0, "{refused}");
    assert!(sink.last("stats.aggregate.keys").is_some_and(|k| k <= 10.0));
    // A key that got in keeps counting.
    let kept =
        seen.keys().next().expect("a key").trim_start_matches("stats.counters.").trim_end_matches(".count");
    let before = sink.sum(&format!("stats.counters.{kept}.count"));
    send_udp(udp, &[format!("{kept}:5|c")], 1);
    sink.eventually("existing key keeps counting", |s| {
        s.sum(&format!("stats.counters.{kept}.count")) == before + 5.0
    });
}

#[test]
fn graphite_outage_is_bridged() {
    // Reserve a port for Graphite, then start the aggregator before it.
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let missing = Sink::absent(port);
    let (_app, udp, _) = start(&missing, &["--flush-interval", "200ms"]);
    send_udp(udp, &["late.hits:7|c".to_owned()], 1);
    std::thread::sleep(Duration::from_millis(500));
    let sink = Sink::start_at(port);
    // Held intervals arrive once Graphite is back.
    sink.eventually("held interval delivered", |s| s.sum("stats.counters.late.hits.count") == 7.0);
}

#[test]
fn relays_get_statsd_lines() {
    let sink = Sink::start();
    let relay = UdpSocket::bind("127.0.0.1:0").expect("bind relay");
    relay.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let relay_addr = relay.local_addr().expect("addr").to_string();
    let (_app, udp, _) = start(&sink, &["--flush-interval", "200ms", "--relay", &relay_addr]);
    send_udp(udp, &["r.c:3|c|@0.5|#b,a\nr.g:-4|g\nr.t:10:10|ms\n_e{1,1}:a|b".to_owned()], 1);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let want = ["r.c:6|c|#a,b", "r.g:0|g", "r.g:-4|g", "_e{1,1}:a|b"];
    while Instant::now() < deadline
        && !(want.iter().all(|w| got.contains(&w.to_string()))
            && got.iter().any(|l: &String| l.starts_with("r.t:")))
    {
        let mut buf = [0u8; 2048];
        if let Ok(n) = relay.recv(&mut buf) {
            got.extend(String::from_utf8_lossy(&buf[..n]).lines().map(str::to_owned));
        }
    }
    for w in want {
        assert!(got.contains(&w.to_string()), "{w} missing from {got:?}");
    }
    // Two samples, under --exact-samples: the next tier gets them as sent.
    let timers: Vec<&String> = got.iter().filter(|l| l.starts_with("r.t:")).collect();
    assert_eq!(timers, ["r.t:10|ms", "r.t:10|ms"]);
}

/// With `--exact-samples 0` a timer is relayed as its sketch: two samples
/// of 10 in one bucket, one line weighing 2.
#[test]
fn relays_get_sketch_buckets_without_exact_samples() {
    let sink = Sink::start();
    let relay = UdpSocket::bind("127.0.0.1:0").expect("bind relay");
    relay.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let relay_addr = relay.local_addr().expect("addr").to_string();
    let args = ["--flush-interval", "200ms", "--relay", &relay_addr, "--exact-samples", "0"];
    let (_app, udp, _) = start(&sink, &args);
    send_udp(udp, &["r.t:10:10|ms\n".to_owned()], 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let timer = loop {
        let mut buf = [0u8; 2048];
        if let Ok(n) = relay.recv(&mut buf) {
            if let Some(l) = String::from_utf8_lossy(&buf[..n]).lines().find(|l| l.starts_with("r.t:")) {
                break l.to_owned();
            }
        }
        assert!(Instant::now() < deadline, "no timer line");
    };
    let (value, rest) = timer["r.t:".len()..].split_once('|').expect("type");
    let value: f64 = value.parse().expect("number");
    assert!((value - 10.0).abs() <= 0.1, "{timer}");
    assert_eq!(rest, "ms|@0.5");
}

#[test]
fn bad_flags_are_refused() {
    let (code, out) = appliance_tests::run_to_end(&["aggregate", "--flush-stdout", "--no-pin"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("--listen-udp"), "{out}");
    let (code, out) = appliance_tests::run_to_end(&[
        "aggregate",
        "--listen-udp",
        "127.0.0.1:0",
        "--flush-stdout",
        "--percentiles",
        "0",
    ]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("--percentiles"), "{out}");
}

#[test]
fn a_restarted_graphite_loses_nothing() {
    let first = Sink::start();
    let (_app, udp, _) = start(&first, &["--flush-interval", "2s"]);
    send_udp(udp, &["restart.hits:1|c".to_owned()], 1);
    first.eventually("the first interval", |s| s.sum("stats.counters.restart.hits.count") == 1.0);
    // Right after a flush: the next one carries this, and Graphite
    // restarts before it. Writing it on the old, closed connection would
    // lose it; it must go to the new receiver.
    send_udp(udp, &["restart.hits:5|c".to_owned()], 1);
    first.kill();
    let second = Sink::start_at(first.addr);
    second
        .eventually("the interval after the restart", |s| s.sum("stats.counters.restart.hits.count") == 5.0);
}

#[test]
fn idle_keys_are_deleted() {
    let sink = Sink::start();
    // Deleted after 600 ms without an update: two 300 ms intervals.
    let (_app, udp, _) = start(&sink, &["--flush-interval", "300ms", "--delete-idle", "600ms"]);
    let keys: Vec<String> = (0..20).map(|i| format!("idle.k{i}:1|c")).collect();
    send_udp(udp, &keys, 4);
    sink.eventually("every key held", |s| {
        s.lines().iter().any(|(p, v, _)| p == "stats.aggregate.keys" && *v == 20.0)
    });
    sink.wait_for("stats.aggregate.keys_expired", 20.0).expect("every idle key deleted");
    sink.wait_for("stats.aggregate.keys", 0.0).expect("no key left");
    // Deleted keys are no longer flushed; a new update brings one back.
    let flushed = |s: &Sink| s.lines().iter().filter(|(p, _, _)| p == "stats.counters.idle.k3.count").count();
    let before = flushed(&sink);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(flushed(&sink), before, "a deleted key is still flushed");
    send_udp(udp, &["idle.k3:4|c".to_owned()], 1);
    sink.eventually("the key comes back", |s| s.last("stats.counters.idle.k3.count") == Some(4.0));
}

/// `run --config` with one aggregate service flushing every second to
/// `graphite` with `prefix`, and the admin endpoint.
fn aggregate_config(graphite: SocketAddr, prefix: &str) -> String {
    format!(
        "[runtime]\nshards = 2\nno_pin = true\ngrace = \"5s\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[aggregate]]\nname = \"statsd\"\nlisten_udp = \"127.0.0.1:0\"\nflush_interval = \"1s\"\n\
         graphite = \"{graphite}\"\nprefix = \"{prefix}\"\n"
    )
}

/// Waits until `/status` shows `want` reloads of `key` (`ok` or `failed`).
fn wait_reloads(admin: SocketAddr, key: &str, want: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = appliance_tests::http_get(admin, "/status").expect("status");
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        if json["reloads"][key] == want {
            return json["reloads"]["last_error"].as_str().unwrap_or_default().to_string();
        }
        assert!(Instant::now() < deadline, "reloads.{key} never reached {want}: {json:#}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_moves_graphite_and_prefix_without_losing_a_line() {
    let (first, second) = (Sink::start(), Sink::start());
    let dir = std::env::temp_dir().join(format!("appliance-test-agg-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("appliance.toml");
    std::fs::write(&path, aggregate_config(first.addr, "stats")).expect("write config");
    let mut app = Appliance::start(&["run", "--config", path.to_str().expect("utf8")]).expect("start");
    let udp = app.wait_for_addr("aggregate listening on udp").expect("udp address");
    let admin = app.wait_for_addr("admin listening on").expect("admin address");

    let burst = |n: usize| (0..n).map(|_| "moved:1|c".to_string()).collect::<Vec<_>>();
    send_udp(udp, &burst(40), 8);
    first.eventually("the first Graphite counts the first 40", |s| {
        s.sum("stats.counters.moved.count") == 40.0
    });

    std::fs::write(&path, aggregate_config(second.addr, "tier")).expect("rewrite config");
    app.signal(libc::SIGHUP);
    wait_reloads(admin, "ok", 1);
    send_udp(udp, &burst(60), 8);
    second.eventually("the second Graphite counts the next 60 under the new prefix", |s| {
        s.sum("tier.counters.moved.count") == 60.0
    });
    second.settle();
    let total = first.sum("stats.counters.moved.count")
        + second.sum("stats.counters.moved.count")
        + second.sum("tier.counters.moved.count");
    assert_eq!(total, 100.0, "every line counted once, wherever it went");
    assert_eq!(first.sum("tier.counters.moved.count"), 0.0, "nothing new reaches the old Graphite");

    // What needs a restart is refused, and the running configuration stays.
    let restart = aggregate_config(second.addr, "tier") + "exchange = \"records\"\n";
    std::fs::write(&path, restart).expect("rewrite config");
    app.signal(libc::SIGHUP);
    let error = wait_reloads(admin, "failed", 1);
    assert!(error.contains("needs a restart") && error.contains("exchange"), "{error}");
    send_udp(udp, &burst(5), 1);
    second.eventually("still flushing under the reloaded prefix", |s| {
        s.sum("tier.counters.moved.count") == 65.0
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// docs/operations.md, "Reloading": an aggregate reload loses no line
/// even when intervals wait for a Graphite that is away: they move to the
/// new one. The first Graphite is a port nothing listens on, so every
/// interval is held until the reload points the service at a live sink.
#[test]
fn a_reload_moves_intervals_held_for_an_absent_graphite_to_the_new_one() {
    let sink = Sink::start();
    let away = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let dir = std::env::temp_dir().join(format!("appliance-test-agg-held-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("appliance.toml");
    std::fs::write(&path, aggregate_config(away, "stats")).expect("write config");
    let mut app = Appliance::start(&["run", "--config", path.to_str().expect("utf8")]).expect("start");
    let udp = app.wait_for_addr("aggregate listening on udp").expect("udp address");
    let admin = app.wait_for_addr("admin listening on").expect("admin address");

    let lines: Vec<String> = (0..50).map(|_| "held:1|c".to_string()).collect();
    send_udp(udp, &lines, 8);
    // Every line counted, then one more flush on each of the 2 shards: the
    // lines are in intervals held for the absent Graphite, none in one
    // still open.
    let read = |name: &str| {
        let (_, text) = appliance_tests::http_get(admin, "/metrics").expect("metrics");
        appliance_tests::metric(&text, &format!("{name}{{service=\"statsd\",shard=\"all\"}}")).unwrap_or(0.0)
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while read("appliance_aggregate_metrics_total") < 50.0 {
        assert!(Instant::now() < deadline, "the 50 lines were never counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    let held = read("appliance_aggregate_held_intervals");
    while read("appliance_aggregate_held_intervals") < held + 2.0 {
        assert!(Instant::now() < deadline, "no interval held for the absent Graphite");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(&path, aggregate_config(sink.addr, "stats")).expect("rewrite config");
    app.signal(libc::SIGHUP);
    wait_reloads(admin, "ok", 1);
    sink.eventually("the held intervals' 50 lines, at the new Graphite", |s| {
        s.sum("stats.counters.held.count") == 50.0
    });
    sink.settle();
    assert_eq!(sink.sum("stats.counters.held.count"), 50.0, "every line once");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two aggregate services in one process (per-shard state is the runner's,
/// kept per service, not a thread-local of the aggregator): each counts its
/// own port's lines, flushes to its own Graphite with its own prefix, and
/// the admin endpoint reports each apart.
#[test]
fn two_aggregate_services_run_side_by_side() {
    let (a, b) = (Sink::start(), Sink::start());
    let dir = std::env::temp_dir().join(format!("appliance-test-two-agg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("appliance.toml");
    let text = format!(
        "[runtime]\nshards = 2\nno_pin = true\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[aggregate]]\nname = \"left\"\nlisten_udp = \"127.0.0.1:0\"\nflush_interval = \"200ms\"\n\
         graphite = \"{}\"\nprefix = \"l\"\n\
         [[aggregate]]\nname = \"right\"\nlisten_udp = \"127.0.0.1:0\"\nflush_interval = \"300ms\"\n\
         graphite = \"{}\"\nprefix = \"r\"\n",
        a.addr, b.addr
    );
    std::fs::write(&path, text).expect("write config");
    let mut app = Appliance::start(&["run", "--config", path.to_str().expect("utf8")]).expect("start");
    let left = app.wait_for_addr("aggregate listening on udp").expect("left");
    let right = app.wait_for_addr("aggregate listening on udp").expect("right");
    let admin = app.wait_for_addr("admin listening on").expect("admin");
    let lines = |n: usize, key: &str| (0..n).map(|_| format!("{key}:1|c")).collect::<Vec<_>>();
    send_udp(left, &lines(40, "same.key"), 8);
    send_udp(right, &lines(25, "same.key"), 8);
    a.eventually("left counts its own 40", |s| s.sum("l.counters.same.key.count") == 40.0);
    b.eventually("right counts its own 25", |s| s.sum("r.counters.same.key.count") == 25.0);
    a.settle();
    assert_eq!(a.sum("r.counters.same.key.count"), 0.0, "no line crosses services");
    assert_eq!(b.sum("l.counters.same.key.count"), 0.0, "no line crosses services");
    let (_, text) = appliance_tests::http_get(admin, "/metrics").expect("metrics");
    let series = |svc: &str| format!("appliance_aggregate_metrics_total{{service=\"{svc}\",shard=\"all\"}}");
    assert_eq!(appliance_tests::metric(&text, &series("left")), Some(40.0), "{text}");
    assert_eq!(appliance_tests::metric(&text, &series("right")), Some(25.0));
    assert_families_are_groups(&text);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every line of a metric family comes in one group after its `# TYPE`
/// (the text format's rule), even when two services add samples to it.
fn assert_families_are_groups(text: &str) {
    let mut seen = std::collections::HashSet::new();
    let mut current = "";
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            current = rest.split(' ').next().unwrap_or("");
            assert!(seen.insert(current.to_owned()), "{current} announced twice:\n{text}");
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = &line[..line.find(['{', ' ']).unwrap_or(line.len())];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| *f == current))
                .unwrap_or(name);
            assert_eq!(family, current, "{line} outside its family's group:\n{text}");
        }
    }
}

/// Loss the user can see: while the aggregator is stopped (SIGSTOP) its
/// sockets' buffers fill and the kernel drops the rest. What it then
/// reports as received plus what it reports the kernel dropped is every
/// datagram sent, and every received line is counted.
#[test]
fn kernel_drops_are_reported_and_add_up() {
    let sink = Sink::start();
    let (app, udp, _) = start(&sink, &["--flush-interval", "500ms"]);
    sink.wait_for("stats.aggregate.lines", 0.0).expect("first flush");
    let sent = 40_000usize;
    app.signal(libc::SIGSTOP);
    let sockets: Vec<UdpSocket> = (0..16).map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind")).collect();
    // 1 KiB datagrams (over 2 KiB each of receive buffer, with the
    // kernel's overhead): 40,000 of them overrun the two sockets' buffers
    // (8 MiB asked, capped at net.core.rmem_max, doubled by the kernel).
    let datagram = format!("drops.k:1|c\n#{}", "x".repeat(1000));
    for i in 0..sent {
        sockets[i % 16].send_to(datagram.as_bytes(), udp).expect("send");
    }
    app.signal(libc::SIGCONT);
    let counted = |s: &Sink| {
        s.last("stats.aggregate.datagrams").unwrap_or(0.0)
            + s.last("stats.aggregate.kernel_drops").unwrap_or(0.0)
    };
    sink.eventually("received + dropped = sent", |s| counted(s) == sent as f64);
    let (received, dropped) = (
        sink.last("stats.aggregate.datagrams").unwrap_or(0.0),
        sink.last("stats.aggregate.kernel_drops").unwrap_or(0.0),
    );
    assert!(dropped > 0.0, "the buffers were overrun: {received} received");
    sink.settle();
    let lines = sink.sum("stats.counters.drops.k.count");
    assert_eq!(lines, received, "every datagram read is counted");
}

/// Cost control: metrics dropped by name pattern never reach a table and
/// are counted; a stripped tag key does not make keys (the counts of every
/// request id add up under one key).
#[test]
fn drop_rules_and_stripped_tags() {
    let sink = Sink::start();
    let args = ["--flush-interval", "500ms", "--drop-metric", "debug.*", "--strip-tag", "request_id"];
    let (_app, udp, _) = start(&sink, &args);
    sink.wait_for("stats.aggregate.lines", 0.0).expect("first flush");
    let datagrams: Vec<String> = (0..200)
        .map(|i| format!("api.hits:1|c|#request_id:{i},env:prod\ndebug.noise:1|c\ndebug.a.b:1|c"))
        .collect();
    send_udp(udp, &datagrams, 8);
    sink.eventually("every kept line", |s| s.sum("stats.counters.api.hits.count;env=prod") == 200.0);
    sink.eventually("drops counted", |s| s.last("stats.aggregate.rule_drops") == Some(200.0));
    sink.settle();
    assert_eq!(sink.sum("stats.counters.debug.a.b.count"), 200.0, "`*` stays within one part");
    let paths: Vec<String> = sink.lines().into_iter().map(|l| l.0).collect();
    assert!(!paths.iter().any(|p| p.contains("request_id") || p.contains("debug.noise")), "{paths:?}");
}

/// Per-origin key limits by source: a source sending 40 keys from many
/// ports (so, unsteered, several shards would see it) gets exactly its 5
/// per interval across both shards; a quiet source is untouched; /status
/// names the offender.
#[test]
fn per_origin_key_limits_by_source_hold_across_shards() {
    let sink = Sink::start();
    let args = ["--flush-interval", "1s", "--max-keys-per-origin", "5", "--admin", "127.0.0.1:0"];
    let (mut app, udp, _) = start(&sink, &args);
    let admin = app.wait_for_addr("admin listening on").expect("admin");
    sink.wait_for("stats.aggregate.lines", 0.0).expect("first flush");
    let from = |ip: [u8; 4], lines: Vec<String>| {
        let sockets: Vec<UdpSocket> =
            (0..16).map(|_| UdpSocket::bind((std::net::Ipv4Addr::from(ip), 0)).expect("bind")).collect();
        for (i, l) in lines.iter().enumerate() {
            sockets[i % 16].send_to(l.as_bytes(), udp).expect("send");
        }
    };
    from([127, 0, 0, 2], (0..40).map(|k| format!("noisy.k{k}:1|c")).collect());
    from([127, 0, 0, 3], (0..3).map(|k| format!("quiet.k{k}:1|c")).collect());
    sink.eventually("refusals counted", |s| s.last("stats.aggregate.origin_refused") == Some(35.0));
    sink.settle();
    let paths: std::collections::HashSet<String> = sink.lines().into_iter().map(|l| l.0).collect();
    let noisy =
        paths.iter().filter(|p| p.starts_with("stats.counters.noisy.") && p.ends_with(".count")).count();
    let quiet =
        paths.iter().filter(|p| p.starts_with("stats.counters.quiet.") && p.ends_with(".count")).count();
    assert_eq!((noisy, quiet), (5, 3), "exactly its budget across shards");
    let (_, body) = appliance_tests::http_get(admin, "/status").expect("status");
    let status: serde_json::Value = serde_json::from_str(&body).expect("json");
    let worst = &status["services"][0]["worst_origins"];
    assert_eq!(worst, &serde_json::json!([{"origin": "127.0.0.2", "refused": 35}]), "{status}");
}
