//! The admin endpoint, configuration files, reloads and drain, end to end
//! with the real binary.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use appliance_tests::upstream::{echo, identify, Upstream};
use appliance_tests::{http_get, http_raw, metric, promtool_accepts, run_to_end, Appliance, TempDir};

/// Starts `args` and returns the app, the first service address and the admin address.
fn start(args: &[&str], service: &str) -> (Appliance, SocketAddr, SocketAddr) {
    let mut app = Appliance::start(args).expect("start");
    let addr = app.wait_for_addr(&format!("{service} listening on")).expect("service line");
    let admin = app.wait_for_addr("admin listening on").expect("admin line");
    (app, addr, admin)
}

fn forward_to(upstream: SocketAddr, extra: &[&str]) -> (Appliance, SocketAddr, SocketAddr) {
    let up = upstream.to_string();
    let mut args = vec!["forward", "--listen", "127.0.0.1:0", "--upstream", &up, "--shards", "2", "--no-pin"];
    args.extend_from_slice(&["--admin", "127.0.0.1:0", "--health-interval", "0"]);
    args.extend_from_slice(extra);
    start(&args, "forward")
}

/// Polls `/metrics` until `series` has `want` (counters settle when relays end).
fn wait_metric(admin: SocketAddr, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, text) = http_get(admin, "/metrics").expect("scrape");
        assert_eq!(status, 200, "{text}");
        if metric(&text, series) == Some(want) || Instant::now() > deadline {
            assert_eq!(metric(&text, series), Some(want), "{series} in:\n{text}");
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn round_trip(addr: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.write_all(payload).expect("send");
    s.shutdown(std::net::Shutdown::Write).expect("fin");
    let mut back = Vec::new();
    s.read_to_end(&mut back).expect("read");
    back
}

#[test]
fn metrics_count_what_was_sent() {
    let up = Upstream::start(echo, 0);
    let (_app, addr, admin) = forward_to(up.addr, &[]);
    let mut sent = 0u64;
    for i in 0..12 {
        let payload = vec![i as u8; 1000 + i * 517];
        assert_eq!(round_trip(addr, &payload), payload);
        sent += payload.len() as u64;
    }
    let all = |name: &str, extra: &str| format!("{name}{{service=\"forward\",{extra}shard=\"all\"}}");
    wait_metric(admin, &all("appliance_forward_accepted_total", ""), 12.0);
    wait_metric(admin, &all("appliance_forward_bytes_total", "direction=\"up\","), sent as f64);
    let text = wait_metric(admin, &all("appliance_forward_bytes_total", "direction=\"down\","), sent as f64);
    let u = format!("service=\"forward\",upstream=\"{}\"", up.addr);
    assert_eq!(metric(&text, &format!("appliance_forward_upstream_connections_total{{{u}}}")), Some(12.0));
    assert_eq!(
        metric(&text, &format!("appliance_forward_upstream_connect_seconds_count{{{u}}}")),
        Some(12.0)
    );
    assert_eq!(metric(&text, &all("appliance_forward_active_connections", "")), Some(0.0));
    // Per-shard samples add up to the sum.
    let per_shard: f64 = (0..2)
        .map(|s| {
            metric(&text, &format!("appliance_forward_accepted_total{{service=\"forward\",shard=\"{s}\"}}"))
        })
        .map(|v| v.expect("per-shard sample"))
        .sum();
    assert_eq!(per_shard, 12.0);
    assert!(metric(&text, "appliance_runtime_loop_turns_total{shard=\"all\"}").unwrap_or(0.0) > 0.0);
    assert!(metric(&text, "appliance_runtime_cpu_seconds_total{shard=\"0\"}").is_some(), "{text}");
    promtool_accepts(&text);
}

#[test]
fn status_health_and_readiness_through_a_drain() {
    let up = Upstream::start(echo, 0);
    let (mut app, addr, admin) = forward_to(up.addr, &["--grace", "20s"]);
    assert_eq!(http_get(admin, "/healthz").expect("healthz").0, 200);
    // The admin endpoint answers as soon as it is bound; the shards start
    // their services right after, and only then is the appliance ready.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = http_get(admin, "/readyz").expect("readyz");
        if r == (200, "ready\n".into()) {
            break;
        }
        assert_eq!(r, (503, "starting\n".into()), "before ready, only starting");
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, body) = http_get(admin, "/status").expect("status");
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).expect("status is JSON");
    assert_eq!(json["ready"], true);
    assert_eq!(json["placement"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["services"][0]["upstreams"][0]["addr"], up.addr.to_string());
    assert_eq!(json["services"][0]["upstreams"][0]["up"], true);

    // A connection stays open through the drain.
    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut buf = [0u8; 5];
    conn.write_all(b"hello").expect("send");
    conn.read_exact(&mut buf).expect("echo");
    app.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = http_get(admin, "/readyz").expect("readyz while draining");
        if r == (503, "draining\n".into()) {
            break;
        }
        assert!(Instant::now() < deadline, "readyz never reported draining: {r:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    conn.write_all(b"again").expect("send while draining");
    conn.read_exact(&mut buf).expect("echo while draining");
    assert_eq!(&buf, b"again");
    drop(conn);
    let status = app.wait_exit(Duration::from_secs(10)).expect("exits once the connection closed");
    assert_eq!(status.code(), Some(0), "{}", app.output());
}

#[test]
fn malformed_admin_requests_get_4xx_and_are_counted() {
    let up = Upstream::start(echo, 0);
    let (_app, _addr, admin) = forward_to(up.addr, &[]);
    assert_eq!(http_raw(admin, b"\x16\x03\x01garbage\r\n\r\n").expect("garbage").0, 400);
    assert_eq!(http_raw(admin, b"PUT /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").expect("put").0, 405);
    // POST is for the upstream API only (answered by the router, not a
    // malformed request).
    assert_eq!(http_raw(admin, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").expect("post").0, 405);
    let huge = format!("GET /metrics HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(20_000));
    assert_eq!(http_raw(admin, huge.as_bytes()).expect("huge").0, 413);
    let body = b"GET /metrics HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody";
    assert_eq!(http_raw(admin, body).expect("body").0, 413);
    assert_eq!(http_get(admin, "/nope").expect("404").0, 404);
    // Keep-alive: two requests on one connection.
    let two = b"GET /healthz HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n";
    let mut s = TcpStream::connect(admin).expect("connect");
    s.write_all(two).expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    let (_, metrics) = http_get(admin, "/metrics").expect("scrape");
    let bad = metric(&metrics, "appliance_admin_requests_total{outcome=\"bad_request\"}");
    assert_eq!(bad, Some(4.0), "{metrics}");
    assert_eq!(metric(&metrics, "appliance_admin_requests_total{outcome=\"not_found\"}"), Some(1.0));
}

#[test]
fn a_slow_admin_client_times_out() {
    let up = Upstream::start(echo, 0);
    let (_app, _addr, admin) = forward_to(up.addr, &[]);
    let mut s = TcpStream::connect(admin).expect("connect");
    s.write_all(b"GET /metr").expect("partial request");
    s.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    let started = Instant::now();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() >= Duration::from_secs(3), "timed out too early");
}

fn write_config(dir: &TempDir, text: &str) -> PathBuf {
    let path = dir.path.join("appliance.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn forward_config(upstreams: &[&str]) -> String {
    let list: Vec<String> = upstreams.iter().map(|u| format!("{u:?}")).collect();
    format!(
        "[runtime]\nshards = 2\nno_pin = true\ngrace = \"5s\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[forward]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nupstreams = [{}]\nhealth_interval = \"0\"\n",
        list.join(", ")
    )
}

/// Which upstream a new connection lands on (the `identify` upstreams say).
fn landed_on(addr: SocketAddr) -> u8 {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut id = [0u8; 1];
    s.read_exact(&mut id).expect("upstream id");
    id[0]
}

fn wait_reloads(admin: SocketAddr, key: &str, want: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = http_get(admin, "/status").expect("status");
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        if json["reloads"][key] == want {
            return json;
        }
        assert!(Instant::now() < deadline, "reloads.{key} never reached {want}: {json:#}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_swaps_upstreams_without_dropping_a_connection_and_refuses_a_bad_file() {
    let long_lived = Upstream::start(echo, 0);
    let a = Upstream::start(identify, 1);
    let b = Upstream::start(identify, 2);
    let dir = TempDir::new("reload");
    let (la, lb, ll) = (a.addr.to_string(), b.addr.to_string(), long_lived.addr.to_string());
    let path = write_config(&dir, &forward_config(&[&ll]));
    let (app, addr, admin) = start(&["run", "--config", path.to_str().expect("utf8")], "forward");

    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut buf = [0u8; 4];
    conn.write_all(b"ping").expect("send");
    conn.read_exact(&mut buf).expect("echo before reload");

    write_config(&dir, &forward_config(&[&la, &lb]));
    app.signal(libc::SIGHUP);
    wait_reloads(admin, "ok", 1);
    let landed: Vec<u8> = (0..6).map(|_| landed_on(addr)).collect();
    assert_eq!(landed.iter().filter(|&&i| i == 1).count(), 3, "round-robin over the new pool: {landed:?}");
    assert_eq!(landed.iter().filter(|&&i| i == 2).count(), 3, "round-robin over the new pool: {landed:?}");
    conn.write_all(b"pong").expect("send after reload");
    conn.read_exact(&mut buf).expect("the old connection still relays");
    assert_eq!(&buf, b"pong");

    write_config(&dir, &forward_config(&[&lb]).replace(&lb, "not-an-address"));
    app.signal(libc::SIGHUP);
    let json = wait_reloads(admin, "failed", 1);
    let error = json["reloads"]["last_error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("forward[0].upstreams[0]") && error.contains("not-an-address"), "{error}");
    assert_eq!(json["reloads"]["ok"], 1);
    assert!([1, 2].contains(&landed_on(addr)), "the previous pool stays");
    let text = http_get(admin, "/metrics").expect("scrape").1;
    assert_eq!(metric(&text, "appliance_config_reloads_total{result=\"error\"}"), Some(1.0));

    write_config(
        &dir,
        &forward_config(&[&lb]).replace("127.0.0.1:0\"\nupstreams", "127.0.0.1:1\"\nupstreams"),
    );
    app.signal(libc::SIGHUP);
    let json = wait_reloads(admin, "failed", 2);
    assert!(json["reloads"]["last_error"].as_str().unwrap_or_default().contains("needs a restart"), "{json}");
}

#[test]
fn check_validates_files_and_names_the_key() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/appliance.toml");
    let (code, out) = run_to_end(&["check", "--config", shipped]);
    assert_eq!(code, Some(0), "{out}");
    let dir = TempDir::new("check");
    let cases = [
        (forward_config(&["127.0.0.1:80"]).replace("\"0\"", "\"soon\""), "forward[0].health_interval"),
        (forward_config(&["127.0.0.1:80"]) + "balance = \"fastest\"\n", "forward[0].balance"),
        (forward_config(&["127.0.0.1:80,weight=0"]), "forward[0].upstreams[0]"),
        (forward_config(&["127.0.0.1:80"]) + "conect_timeout = \"1s\"\n", "conect_timeout"),
        (
            forward_config(&["127.0.0.1:80"]).replace("127.0.0.1:0\"\n\n", "10.1.2.3:9090\"\n\n"),
            "admin.listen",
        ),
        ("[runtime]\nshards = 1\n".to_string(), "services"),
    ];
    for (text, key) in cases {
        let path = write_config(&dir, &text);
        let (code, out) = run_to_end(&["check", "--config", path.to_str().expect("utf8")]);
        assert_eq!(code, Some(2), "{text}\n{out}");
        assert!(out.contains(key), "the error names {key}: {out}");
    }
}

#[test]
fn aggregate_series_are_on_their_own_path_and_counters_on_metrics() {
    let args = ["aggregate", "--listen-udp", "127.0.0.1:0", "--flush-interval", "1s", "--prometheus"];
    let mut argv = args.to_vec();
    argv.extend_from_slice(&["--shards", "2", "--no-pin", "--admin", "127.0.0.1:0"]);
    let (_app, udp, admin) = start(&argv, "aggregate");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .send_to(b"api.hits_total:3|c\napi.hits_total:4|c\nnot a metric\nusers:ann|s|#env:prod\n", udp)
        .expect("send");
    let deadline = Instant::now() + Duration::from_secs(10);
    let series = loop {
        let (status, text) = http_get(admin, "/metrics/aggregate").expect("scrape");
        assert_eq!(status, 200, "{text}");
        if metric(&text, "api_hits_total") == Some(7.0) {
            break text;
        }
        assert!(Instant::now() < deadline, "the flushed count never appeared:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(metric(&series, "users{env=\"prod\"}"), Some(1.0), "{series}");
    assert!(series.contains("# TYPE api_hits_total counter\n"), "{series}");
    promtool_accepts(&series);
    let (_, text) = http_get(admin, "/metrics").expect("scrape");
    assert!(!text.contains("api_hits"), "the aggregates are not mixed into the appliance's own metrics");
    let all = |name: &str| format!("appliance_aggregate_{name}{{service=\"aggregate\",shard=\"all\"}}");
    assert_eq!(metric(&text, &all("lines_total")), Some(4.0), "{text}");
    assert_eq!(metric(&text, &all("metrics_total")), Some(3.0), "{text}");
    assert_eq!(metric(&text, &all("prom_series")), Some(2.0), "{text}");
    let dropped =
        "appliance_aggregate_dropped_total{service=\"aggregate\",reason=\"no_value\",shard=\"all\"}";
    assert_eq!(metric(&text, dropped), Some(1.0), "{text}");
    promtool_accepts(&text);
    let (status, text) = http_get(admin, "/metrics/nothing").expect("scrape");
    assert_eq!(status, 404, "{text}");
}

/// The upstreams of service "web" in `/status`, by address.
fn upstreams_by_addr(admin: SocketAddr) -> std::collections::HashMap<String, serde_json::Value> {
    let (_, body) = http_get(admin, "/status").expect("status");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    let services = json["services"].as_array().cloned().unwrap_or_default();
    let web = services.iter().find(|s| s["name"] == "web").cloned().unwrap_or_default();
    let list = web["upstreams"].as_array().cloned().unwrap_or_default();
    list.into_iter().map(|u| (u["addr"].as_str().unwrap_or_default().to_string(), u)).collect()
}

/// docs/operations.md, "Reloading": an upstream that stays across a reload
/// keeps its health state and its counters. The dead one (nothing listens:
/// every check fails) is down before the reload and still down right after
/// it; were its state reset it would start up again (upstreams start up)
/// and take connections until `fall` checks failed anew. The live one keeps
/// its connection count.
#[test]
fn an_upstream_that_stays_across_a_reload_keeps_its_health_and_counters() {
    let a = Upstream::start(identify, 1);
    let c = Upstream::start(identify, 3);
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let (la, lc, ld) = (a.addr.to_string(), c.addr.to_string(), dead.to_string());
    let config =
        |ups: &[&str]| forward_config(ups).replace("health_interval = \"0\"", "health_interval = \"1s\"");
    let dir = TempDir::new("reload-health");
    let path = write_config(&dir, &config(&[&la, &ld]));
    let (app, addr, admin) = start(&["run", "--config", path.to_str().expect("utf8")], "forward");
    let deadline = Instant::now() + Duration::from_secs(20);
    while upstreams_by_addr(admin).get(&ld).is_none_or(|u| u["up"] != false) {
        assert!(
            Instant::now() < deadline,
            "the dead upstream never went down: {:?}",
            upstreams_by_addr(admin)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..4 {
        assert_eq!(landed_on(addr), 1, "only the live upstream serves");
    }
    let served = upstreams_by_addr(admin)[&la]["connections"].as_u64().unwrap_or(0);
    assert!(served >= 4, "{served}");

    write_config(&dir, &config(&[&la, &ld, &lc]));
    app.signal(libc::SIGHUP);
    wait_reloads(admin, "ok", 1);
    let after = upstreams_by_addr(admin);
    assert_eq!(after[&ld]["up"], false, "the dead upstream stays down across the reload: {:?}", after[&ld]);
    assert!(after[&la]["connections"].as_u64().unwrap_or(0) >= served, "counters kept: {:?}", after[&la]);
    let landed: Vec<u8> = (0..6).map(|_| landed_on(addr)).collect();
    assert!(landed.iter().all(|&i| i == 1 || i == 3), "nothing lands on the dead upstream: {landed:?}");
}

/// docs/operations.md, "Admin endpoint": at most 64 admin connections. With
/// 64 clients each in the middle of a request, the next connection is
/// closed at once, and the refusal is counted.
#[test]
fn admin_connections_past_64_are_closed_and_counted() {
    let up = Upstream::start(echo, 0);
    let (_app, _, admin) = forward_to(up.addr, &[]);
    let held: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut c = TcpStream::connect(admin).expect("connect");
            c.write_all(b"GET /metrics HTTP/1.1\r\n").expect("half a request");
            c
        })
        .collect();
    // Each of the 64 is taken before the next: the accept queue is in order.
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = TcpStream::connect(admin).expect("connect");
    extra.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\n\r\n");
    let mut buf = [0u8; 64];
    let closed = match extra.read(&mut buf) {
        Ok(0) => true,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        Ok(_) => false,
    };
    assert!(closed, "the 65th connection was served or held instead of closed");
    drop(held);
    // The 64 end as their clients close; until then a scrape is refused too.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok((200, text)) = http_get(admin, "/metrics") {
            let refused = metric(&text, "appliance_admin_requests_total{outcome=\"refused\"}").unwrap_or(0.0);
            assert!(refused >= 1.0, "the refusal is counted:\n{text}");
            break;
        }
        assert!(Instant::now() < deadline, "the admin endpoint never served again");
        std::thread::sleep(Duration::from_millis(100));
    }
}
