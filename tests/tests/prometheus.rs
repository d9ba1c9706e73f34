//! The aggregate service as a statsd_exporter: a mapping file of its
//! documentation, the series it gives (`promtool check metrics`), and a
//! real Prometheus server (Debian's `prometheus`) scraping the appliance
//! and answering a query for a mapped series.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use appliance_tests::{free_port, http_get, metric, promtool_accepts, Appliance, TempDir};

/// Mappings from statsd_exporter's README (glob with labels, a capture in
/// a label's text, a drop, a histogram with buckets, a regex).
const MAPPING: &str = concat!(
    include_str!("../../cores/tests/data/readme_globs.yml"),
    r#"- match: "(.*)\\.(.*)--(.*)\\.status\\.(.*)\\.count"
  match_type: regex
  name: "request_total"
  labels:
    hostname: "$1"
    exec: "$2"
    protocol: "$3"
    code: "$4"
- match: "test.web-server.foo.bar"
  name: "web_server_foo_bar_seconds"
  observer_type: summary
  summary_options:
    quantiles:
      - quantile: 0.99
        error: 0.001
      - quantile: 0.5
        error: 0.05
- match: "client.*.request.duration"
  name: "client_request_duration_seconds"
  labels:
    client: "$1"
- match: "debug.*"
  action: drop
  name: "dropped"
defaults:
  observer_type: histogram
  histogram_options:
    buckets: [0.005, 0.05, 0.5]
"#
);

/// Starts an aggregate service with `mapping` and an admin endpoint;
/// returns it with its UDP and admin addresses.
fn start(dir: &Path, mapping: &str) -> (Appliance, SocketAddr, SocketAddr) {
    let file = dir.join("mapping.yml");
    std::fs::write(&file, mapping).expect("mapping file");
    let file = file.to_string_lossy().into_owned();
    let args = [
        "aggregate",
        "--listen-udp",
        "127.0.0.1:0",
        "--flush-interval",
        "500ms",
        "--mapping-config",
        &file,
        "--shards",
        "2",
        "--no-pin",
        "--admin",
        "127.0.0.1:0",
    ];
    let mut app = Appliance::start(&args).expect("start");
    let udp = app.wait_for_addr("aggregate listening on udp").expect("udp address");
    let admin = app.wait_for_addr("admin listening on").expect("admin address");
    (app, udp, admin)
}

fn send(udp: SocketAddr, lines: &[&str]) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for chunk in lines.chunks(20) {
        socket.send_to(chunk.join("\n").as_bytes(), udp).expect("send");
    }
}

/// Scrapes `/metrics/aggregate` until `series` reads `want`.
fn wait_series(admin: SocketAddr, series: &str, want: f64) -> String {
    wait_all(admin, &[(series, want)])
}

/// Scrapes `/metrics/aggregate` until every series reads its value (each
/// owner shard flushes its keys on its own, so they may come apart).
fn wait_all(admin: SocketAddr, want: &[(&str, f64)]) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, text) = http_get(admin, "/metrics/aggregate").expect("scrape");
        assert_eq!(status, 200, "{text}");
        let wrong = want
            .iter()
            .find(|(series, value)| metric(&text, series).is_none_or(|got| (got - value).abs() > 1e-9));
        let Some((series, value)) = wrong else { return text };
        assert!(Instant::now() < deadline, "{series} never read {value}:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_documented_mappings_give_their_series() {
    let dir = TempDir::new("prom-mapped");
    let (_app, udp, admin) = start(&dir.path, MAPPING);
    send(
        udp,
        &[
            "test.dispatcher.FooProcessor.send.success:3|c",
            "test.dispatcher.FooProcessor.send.success:2|c",
            "foo_product.signup.facebook.failure:1|c",
            "foo_product.signup.facebook.failure:1|c|#region:eu",
            "foo.bar--http.status.404.count:7|c",
            "debug.noise:1|c",
            "client.aaa.request.duration:2|ms",
            "client.aaa.request.duration:20|ms",
            "client.aaa.request.duration:200|ms",
            "client.aaa.request.duration:2000|ms",
            "test.web-server.foo.bar:100|ms",
            "unmapped.thing-1:5|g|#Env:prod",
        ],
    );
    let l = r#"{action="send",job="test_dispatcher",outcome="success",processor="FooProcessor"}"#;
    let dispatcher = format!("dispatcher_events_total{l}");
    let want = [
        (dispatcher.as_str(), 5.0),
        (r#"signup_events_total{job="foo_product_server",outcome="failure",provider="facebook"}"#, 1.0),
        (
            r#"signup_events_total{job="foo_product_server",outcome="failure",provider="facebook",region="eu"}"#,
            1.0,
        ),
        (r#"request_total{code="404",exec="bar",hostname="foo",protocol="http"}"#, 7.0),
        (r#"client_request_duration_seconds_bucket{client="aaa",le="0.005"}"#, 1.0),
        (r#"client_request_duration_seconds_bucket{client="aaa",le="0.05"}"#, 2.0),
        (r#"client_request_duration_seconds_bucket{client="aaa",le="0.5"}"#, 3.0),
        (r#"client_request_duration_seconds_bucket{client="aaa",le="+Inf"}"#, 4.0),
        (r#"client_request_duration_seconds_sum{client="aaa"}"#, 2.222),
        (r#"client_request_duration_seconds_count{client="aaa"}"#, 4.0),
        (r#"web_server_foo_bar_seconds{quantile="0.99"}"#, 0.1),
        (r#"web_server_foo_bar_seconds{quantile="0.5"}"#, 0.1),
        (r#"web_server_foo_bar_seconds_count"#, 1.0),
        (r#"unmapped_thing_1{Env="prod"}"#, 5.0),
    ];
    let text = wait_all(admin, &want);
    assert!(!text.contains("dropped"), "{text}");
    assert!(text.contains("# TYPE client_request_duration_seconds histogram\n"), "{text}");
    assert!(text.contains("# TYPE web_server_foo_bar_seconds summary\n"), "{text}");
    promtool_accepts(&text);
    let (_, status) = http_get(admin, "/status").expect("status");
    let status: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert_eq!(status["services"][0]["prometheus"]["mappings"], 6, "the file's six mappings");
    let (_, own) = http_get(admin, "/metrics").expect("scrape");
    let drops = "appliance_aggregate_prom_mapping_drops_total{service=\"aggregate\",shard=\"all\"}";
    assert_eq!(metric(&own, drops), Some(1.0), "{own}");
}

#[test]
fn a_bad_mapping_file_is_refused_with_its_path() {
    let dir = TempDir::new("prom-bad");
    let file = dir.path.join("mapping.yml");
    std::fs::write(&file, "mappings:\n- match: \"a.*\"\n  name: \"x\"\n  observer_type: sometimes\n")
        .expect("file");
    let file = file.to_string_lossy().into_owned();
    let (code, out) =
        appliance_tests::run_to_end(&["aggregate", "--listen-udp", "127.0.0.1:0", "--mapping-config", &file]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("mapping") && out.contains(&file), "{out}");
}

/// A reload reads the mapping file again: new keys get the new names.
#[test]
fn a_reload_reads_the_mapping_again() {
    let dir = TempDir::new("prom-reload");
    let mapping = dir.path.join("mapping.yml");
    std::fs::write(&mapping, MAPPING).expect("mapping file");
    let config = dir.path.join("appliance.toml");
    let toml = format!(
        "[runtime]\nshards = 2\nno_pin = true\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[aggregate]]\nlisten_udp = \"127.0.0.1:0\"\nflush_interval = \"500ms\"\nmapping_config = {:?}\n",
        mapping.display().to_string()
    );
    std::fs::write(&config, toml).expect("config file");
    let config = config.to_string_lossy().into_owned();
    let app = Appliance::start(&["run", "--config", &config]).expect("start");
    reload_renames(app, &mapping, &config);
}

/// As statsd_exporter does on SIGHUP, a flags-only start reads its
/// `--mapping-config` again (the flags are validated again).
#[test]
fn a_reload_reads_the_mapping_named_by_a_flag_again() {
    let dir = TempDir::new("prom-reload-flags");
    let mapping = dir.path.join("mapping.yml");
    std::fs::write(&mapping, MAPPING).expect("mapping file");
    let path = mapping.to_string_lossy().into_owned();
    let args =
        ["aggregate", "--listen-udp", "127.0.0.1:0", "--flush-interval", "500ms", "--mapping-config", &path];
    let mut all = args.to_vec();
    all.extend_from_slice(&["--shards", "2", "--no-pin", "--admin", "127.0.0.1:0"]);
    let app = Appliance::start(&all).expect("start");
    reload_renames(app, &mapping, "command-line flags");
}

/// Rewrites `mapping` to name `job.*.done` `jobs_done_total`, signals
/// SIGHUP and waits for the new name; series shown before stay. `/status`
/// names what SIGHUP reads (`source`).
fn reload_renames(mut app: Appliance, mapping: &std::path::Path, source: &str) {
    let udp = app.wait_for_addr("aggregate listening on udp").expect("udp address");
    let admin = app.wait_for_addr("admin listening on").expect("admin address");
    let (_, status) = http_get(admin, "/status").expect("status");
    let status: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert_eq!(status["config"], source, "what SIGHUP reads");
    send(udp, &["job.a.done:1|c"]);
    wait_series(admin, "job_a_done", 1.0);
    let job = "- match: \"job.*.done\"\n  name: \"jobs_done_total\"\n  labels:\n    job: \"$1\"\ndefaults:";
    let renamed = MAPPING.replace("defaults:", job);
    std::fs::write(mapping, renamed).expect("rewrite");
    app.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        send(udp, &["job.b.done:1|c"]);
        let (_, text) = http_get(admin, "/metrics/aggregate").expect("scrape");
        if metric(&text, r#"jobs_done_total{job="b"}"#).is_some() {
            assert_eq!(metric(&text, "job_a_done"), Some(1.0), "series shown before stay: {text}");
            break;
        }
        assert!(Instant::now() < deadline, "the reloaded mapping never applied:\n{text}\n{}", app.output());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A real Prometheus scrapes `/metrics/aggregate` and its query API
/// returns the mapped series' value.
#[test]
fn a_real_prometheus_scrapes_the_mapped_series() {
    let dir = TempDir::new("prom-server");
    let (_app, udp, admin) = start(&dir.path, MAPPING);
    send(
        udp,
        &[
            "test.dispatcher.BarProcessor.receive.failure:41|c",
            "test.dispatcher.BarProcessor.receive.failure:1|c",
        ],
    );
    wait_series(
        admin,
        r#"dispatcher_events_total{action="receive",job="test_dispatcher",outcome="failure",processor="BarProcessor"}"#,
        42.0,
    );
    let port = free_port();
    let config = dir.path.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n- job_name: appliance\n  honor_labels: true\n  metrics_path: /metrics/aggregate\n  static_configs:\n  - targets: ['{admin}']\n"
        ),
    )
    .expect("config");
    let _server = Server::start(&dir.path, &config, port);
    let api = SocketAddr::from(([127, 0, 0, 1], port));
    let query = "/api/v1/query?query=dispatcher_events_total%7Bprocessor%3D%22BarProcessor%22%7D";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, body)) = http_get(api, query) {
            let v: serde_json::Value = serde_json::from_str(&body).expect("json");
            let result = &v["data"]["result"][0];
            if result["value"][1] == "42" {
                assert_eq!(result["metric"]["outcome"], "failure", "{body}");
                assert_eq!(
                    result["metric"]["job"], "test_dispatcher",
                    "the mapping's job label, honored: {body}"
                );
                return;
            }
        }
        assert!(Instant::now() < deadline, "Prometheus never returned the series");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A Prometheus server, stopped on drop.
struct Server(Child);

impl Server {
    fn start(dir: &Path, config: &Path, port: u16) -> Server {
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian's prometheus: make test-deps installs it)");
        Server(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
