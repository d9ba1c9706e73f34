//! The fault suite: one test per defect a hostile test run found, each
//! starting the real binary and reproducing the fault as it was reported
//! (HAProxy's regression tests are the model). Each failed on the code
//! before its fix; the comment above it gives the report and the figure.

use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use appliance_tests::graphite::Sink;
use appliance_tests::{start_aggregate, Appliance};

/// The `key=value` counters of the "final counters" log line.
fn final_counter(output: &str, name: &str) -> Option<u64> {
    let line = output.lines().rev().find(|l| l.contains("final counters"))?;
    line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{name}="))?.trim_matches('"').parse().ok())
}

/// One TCP statsd client sending `rate` lines/s of `line` for `secs`
/// seconds (in 10 ms bursts); returns how many lines the kernel took.
fn tcp_sender(to: SocketAddr, line: &'static str, rate: usize, secs: u64) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut c = TcpStream::connect(to).expect("connect");
        let burst = line.repeat(rate / 100);
        let per_burst = (rate / 100) as u64;
        let start = Instant::now();
        let mut sent = 0u64;
        for i in 0..secs * 100 {
            if c.write_all(burst.as_bytes()).is_err() {
                break;
            }
            sent += per_burst;
            let next = start + Duration::from_millis(10 * (i + 1));
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        sent
    })
}

/// Reported: after SIGTERM, lines a TCP client keeps sending were read but
/// never flushed (the final flush waited a fixed ~3 s whatever the grace
/// was): at 100k lines/s for 6 s with SIGTERM 2 s in, about 490k of 600k
/// lines reached Graphite with a grace of 4, 10 or 20 s alike. Now the
/// receivers read for half of the grace, then the tables are sealed and
/// flushed: with a 12 s grace every line the client sent reaches Graphite,
/// and the final counters agree with the flushed totals.
#[test]
fn sigterm_flushes_every_line_a_tcp_client_sent_within_the_grace() {
    let sink = Sink::start();
    let (mut app, _, tcp) = start_aggregate(sink.addr, &["--flush-interval", "1s", "--grace", "12s"]);
    let client = tcp_sender(tcp, "drain.k:1|c\n", 100_000, 6);
    std::thread::sleep(Duration::from_secs(2));
    app.signal(libc::SIGTERM);
    let sent = client.join().expect("client");
    let status = app.wait_exit(Duration::from_secs(20)).expect("exits within the grace");
    assert!(status.success(), "{status:?}");
    sink.settle();
    let out = app.output();
    let flushed = sink.sum("stats.counters.drain.k.count") as u64;
    assert_eq!(sent, 600_000, "the client was never refused");
    assert_eq!(flushed, sent, "every line sent reached Graphite\n{out}");
    assert_eq!(final_counter(&out, "metrics"), Some(flushed), "final counters agree with Graphite\n{out}");
}

/// The same fault with a grace shorter than the client's sending: the
/// receivers stop reading at half the grace and the client is cut off
/// (reset, not a clean close), but whatever was read is flushed: the final
/// counters, the last reported `aggregate.metrics` and Graphite agree, and
/// the process is gone within the grace.
#[test]
fn sigterm_with_a_short_grace_flushes_what_it_read_and_stops_reading() {
    let sink = Sink::start();
    let (mut app, _, tcp) = start_aggregate(sink.addr, &["--flush-interval", "1s", "--grace", "3s"]);
    let client = tcp_sender(tcp, "short.k:1|c\n", 100_000, 8);
    std::thread::sleep(Duration::from_secs(1));
    let signalled = Instant::now();
    app.signal(libc::SIGTERM);
    let status = app.wait_exit(Duration::from_secs(20)).expect("exits");
    let took = signalled.elapsed();
    let sent = client.join().expect("client");
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(4), "gone within the 3 s grace (and process exit): {took:?}");
    sink.settle();
    let out = app.output();
    let flushed = sink.sum("stats.counters.short.k.count") as u64;
    assert!(sent < 800_000, "the client was cut off, not served for ever ({sent} lines)");
    assert!(flushed > 0 && flushed <= sent);
    assert_eq!(final_counter(&out, "metrics"), Some(flushed), "{out}");
    assert_eq!(sink.last("stats.aggregate.metrics"), Some(flushed as f64));
}

/// Reported: SIGTERM while Graphite is down waited out the grace and exited
/// 0 with no word of the intervals it held. Now the loss is logged with its
/// size and counted in the final counters; the number of held intervals is
/// a setting (`--graphite-queue`).
#[test]
fn sigterm_while_graphite_is_down_reports_the_lost_intervals() {
    let down: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("reserve a port");
        l.local_addr().expect("addr")
    };
    let (mut app, udp, _) =
        start_aggregate(down, &["--flush-interval", "200ms", "--grace", "2s", "--graphite-queue", "3"]);
    let s = UdpSocket::bind("127.0.0.1:0").expect("client");
    for _ in 0..10 {
        s.send_to(b"lost.k:1|c", udp).expect("send");
        std::thread::sleep(Duration::from_millis(100));
    }
    app.signal(libc::SIGTERM);
    let status = app.wait_exit(Duration::from_secs(10)).expect("exits within the grace");
    assert!(status.success(), "{status:?}");
    let out = app.output();
    let warning = out.lines().find(|l| l.contains("did not take the last flush intervals"));
    assert!(warning.is_some_and(|w| w.contains("intervals=")), "the loss is logged:\n{out}");
    let lost: u64 = warning
        .and_then(|w| w.split_whitespace().find_map(|f| f.strip_prefix("intervals=")?.parse().ok()))
        .expect("the warning counts the intervals");
    let dropped = final_counter(&out, "intervals_dropped").expect("final counters");
    // Intervals are keyed by their (one-second) timestamp, so how many a
    // second of 200 ms flushes makes depends on the clock; what holds is
    // that the ones lost at the end are among those counted.
    assert!(lost >= 1 && dropped >= lost, "lost {lost}, counted {dropped}\n{out}");
}

/// Reported: datagrams over 9,216 bytes were cut, with only a counter to
/// say so. Now a datagram up to `max_datagram` (default 65,507, any UDP
/// datagram) is taken whole; a larger one is cut there, counted and
/// logged, its complete lines kept.
#[test]
fn large_datagrams_are_received_whole_up_to_the_configured_maximum() {
    let sink = Sink::start();
    let (mut app, udp, _) =
        start_aggregate(sink.addr, &["--flush-interval", "200ms", "--max-datagram", "20000"]);
    let s = UdpSocket::bind("127.0.0.1:0").expect("client");
    let line = "big.k:1|c\n";
    let whole = line.repeat(1_900); // 19,000 bytes: over the old 9,216
    s.send_to(whole.as_bytes(), udp).expect("send");
    let cut = line.repeat(2_500); // 25,000 bytes: over the maximum
    s.send_to(cut.as_bytes(), udp).expect("send");
    let kept = 20_000 / line.len();
    let want = 1_900 + kept as u64;
    sink.eventually("both datagrams counted", |s| s.sum("stats.counters.big.k.count") as u64 == want);
    sink.eventually("the cut is counted", |s| s.last("stats.aggregate.truncated") == Some(1.0));
    assert!(app.output().contains("larger than max_datagram"), "the cut is logged");
}

/// A config file in a temporary directory, removed on drop.
struct TempConfig(std::path::PathBuf);

impl TempConfig {
    fn new(name: &str, text: &str) -> TempConfig {
        let dir = std::env::temp_dir().join(format!("appliance-faults-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write config");
        TempConfig(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Reported: `check` accepted what `run` rejected (`format = "xml"`,
/// `cpus = "0-99"`, `shards = 64`, `max_keys` below the shard count), and
/// errors named `--cpus` for a `[runtime] cpus` key. Now both go through
/// one validation, the runtime plan included, and name the key once.
#[test]
fn check_refuses_what_run_refuses_naming_the_key() {
    let echo = "[[echo]]\nlisten = \"127.0.0.1:0\"\n";
    let cases = [
        (format!("[log]\nformat = \"xml\"\n{echo}"), "log.format"),
        (format!("[log]\nlevel = \"verbose\"\n{echo}"), "log.level"),
        (format!("[runtime]\ncpus = \"0-99\"\n{echo}"), "runtime.cpus"),
        (format!("[runtime]\nshards = 64\n{echo}"), "runtime.shards"),
        (
            "[runtime]\nshards = 2\nno_pin = true\n[[aggregate]]\nlisten_udp = \"127.0.0.1:0\"\n\
             flush_stdout = true\nmax_keys = 1\n"
                .to_string(),
            "aggregate[0].max_keys",
        ),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let file = TempConfig::new(&format!("case{i}.toml"), text);
        for verb in ["check", "run"] {
            let (code, out) = appliance_tests::run_to_end(&[verb, "--config", file.path()]);
            assert_eq!(code, Some(2), "{verb} must refuse {key}: {out}");
            assert!(out.contains(&format!("{key}: ")), "{verb} names {key}: {out}");
            assert_eq!(out.matches(key).count(), 1, "{verb} says it once: {out}");
            assert!(!out.contains("--cpus") && !out.contains("--shards"), "not a flag: {out}");
        }
    }
}

/// Reported: a typo in the log level (`verbose`) silenced all logging.
#[test]
fn an_unknown_log_level_is_refused() {
    let (code, out) = appliance_tests::run_to_end(&[
        "echo",
        "--listen",
        "127.0.0.1:0",
        "--no-pin",
        "--log-level",
        "verbose",
    ]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("--log-level") && out.contains("verbose"), "{out}");
}

/// Reported: human-format logs carried ANSI colour codes into files.
#[test]
fn logs_to_a_file_or_pipe_carry_no_colour_codes() {
    let mut app =
        Appliance::start(&["echo", "--listen", "127.0.0.1:0", "--no-pin", "--shards", "1"]).expect("echo");
    app.wait_for_addr("echo listening on").expect("listening");
    // Logs (stderr) and the listening line (stdout) are read by separate
    // threads: wait for the startup report however they interleave.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !app.output().contains("placement") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = app.output();
    assert!(out.contains("placement"), "the startup report was logged:\n{out}");
    assert!(!out.contains('\u{1b}'), "no escape codes in piped logs:\n{out}");
}

/// Reported: during a drain, new connections hung in the backlog instead of
/// being refused, and a drain with `grace = 3s` exited after 5.07 s. Now a
/// draining forward stops listening (what was already queued is served),
/// new connections are refused at once, and the process is gone within
/// the grace even with a client that never closes.
#[test]
fn a_draining_forward_refuses_new_connections_and_keeps_its_grace() {
    use appliance_tests::upstream::{echo, Upstream};
    use std::io::Read;
    let up = Upstream::start(echo, 0);
    let (mut app, addr, _) = forward(up.addr, &["--grace", "3s"]);
    // Keeps the drain busy for the whole grace.
    let mut idle = TcpStream::connect(addr).expect("connect");
    idle.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    idle.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    idle.read_exact(&mut buf).expect("echoed");
    let signalled = Instant::now();
    app.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(mut late) => {
            // Not refused: then it must not hang either.
            late.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout");
            let r = late.read(&mut buf);
            assert!(
                !matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
                "left hanging: {r:?}"
            );
        }
    }
    let status = app.wait_exit(Duration::from_secs(10)).expect("exits");
    let took = signalled.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_secs(4),
        "the drain keeps its 3 s grace (and process exit): {took:?}\n{}",
        app.output()
    );
}

/// `appliance forward` on 2 shards in front of `upstream`, with an admin
/// endpoint and `extra` flags, under a descriptor limit of `nofile` when
/// given; returns it with its listening and admin addresses.
fn forward_limited(
    nofile: Option<u64>,
    upstream: SocketAddr,
    extra: &[&str],
) -> (Appliance, SocketAddr, SocketAddr) {
    let up = upstream.to_string();
    let mut args = vec![
        "forward",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &up,
        "--shards",
        "2",
        "--no-pin",
        "--admin",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let started = match nofile {
        Some(n) => Appliance::start_with_nofile(n, &args),
        None => Appliance::start(&args),
    };
    let mut app = started.expect("forward");
    let addr = app.wait_for_addr("forward listening on").expect("listening");
    let admin = app.wait_for_addr("admin listening on").expect("admin");
    (app, addr, admin)
}

/// [`forward_limited`] without a descriptor limit and without health checks.
fn forward(upstream: SocketAddr, extra: &[&str]) -> (Appliance, SocketAddr, SocketAddr) {
    let mut flags = vec!["--health-interval", "0"];
    flags.extend_from_slice(extra);
    forward_limited(None, upstream, &flags)
}

fn scrape(admin: SocketAddr, series: &str) -> Option<f64> {
    let (_, text) = appliance_tests::http_get(admin, "/metrics").expect("metrics");
    appliance_tests::metric(&text, series)
}

/// Reported: with `--accept-proxy`, a client that sent part of a PROXY
/// header was never timed out (150 s observed with `--idle-timeout 5s`).
/// Now the header must be complete within `--proxy-header-timeout`; the
/// client is closed and counted.
#[test]
fn a_partial_proxy_header_is_timed_out_and_counted() {
    use appliance_tests::upstream::{echo, Upstream};
    use std::io::Read;
    let up = Upstream::start(echo, 0);
    let (_app, addr, admin) = forward(up.addr, &["--accept-proxy", "--proxy-header-timeout", "500ms"]);
    let mut slow = TcpStream::connect(addr).expect("connect");
    slow.write_all(b"PROXY TCP4 192.0.2.1 19").expect("half a header");
    slow.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let r = slow.read(&mut buf);
    assert!(
        matches!(r, Ok(0)) || r.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(4), "closed by the header timeout, not left open");
    let series = "appliance_forward_proxy_header_timeouts_total{service=\"forward\",shard=\"all\"}";
    assert_eq!(scrape(admin, series), Some(1.0));
}

/// Reported: `--accept-proxy --proxy-protocol v1` announced the listener's
/// address as the destination instead of the one the client's own header
/// named. Now the original destination is passed on.
#[test]
fn a_proxy_chain_passes_the_original_destination_on() {
    use appliance_tests::upstream::Upstream;
    use std::io::Read;
    fn reflect(_: usize, mut s: TcpStream) {
        s.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") && matches!(s.read(&mut byte), Ok(1)) {
            line.push(byte[0]);
        }
        let _ = s.write_all(&line);
    }
    let up = Upstream::start(reflect, 0);
    let (_app, addr, _) = forward(up.addr, &["--accept-proxy", "--proxy-protocol", "v1"]);
    let mut c = TcpStream::connect(addr).expect("connect");
    c.write_all(b"PROXY TCP4 192.0.2.1 198.51.100.7 5000 443\r\n").expect("header");
    c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut got = String::new();
    let _ = c.read_to_string(&mut got);
    assert_eq!(got, "PROXY TCP4 192.0.2.1 198.51.100.7 5000 443\r\n");
}

/// Reported: `/status` kept the previous reload error after a successful
/// reload. Now a reload that applies clears it.
#[test]
fn a_good_reload_clears_the_last_reload_error() {
    let good = "[runtime]\nshards = 1\nno_pin = true\n[admin]\nlisten = \"127.0.0.1:0\"\n\
                [[echo]]\nname = \"e\"\nlisten = \"127.0.0.1:0\"\n";
    let file = TempConfig::new("reload.toml", good);
    let mut app = Appliance::start(&["run", "--config", file.path()]).expect("run");
    let admin = app.wait_for_addr("admin listening on").expect("admin");
    let status = |want: &str, n: u64| -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, body) = appliance_tests::http_get(admin, "/status").expect("status");
            let json: serde_json::Value = serde_json::from_str(&body).expect("json");
            if json["reloads"][want] == n {
                return json;
            }
            assert!(Instant::now() < deadline, "reloads.{want} never reached {n}: {json}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    std::fs::write(&file.0, good.replace("[[echo]]", "[[echo]]\nbuffers = 3")).expect("bad file");
    app.signal(libc::SIGHUP);
    let json = status("failed", 1);
    assert!(json["reloads"]["last_error"].as_str().is_some_and(|e| e.contains("buffers")), "{json}");
    std::fs::write(&file.0, good).expect("good file");
    app.signal(libc::SIGHUP);
    let json = status("ok", 1);
    assert!(json["reloads"]["last_error"].is_null(), "cleared by the good reload: {json}");
}

/// Reported: the admin endpoint on an aggregate's TCP port passed `check`,
/// started, and split the traffic (statsd lines answered with HTTP 400 and
/// lost); `0.0.0.0:8080` and `127.0.0.1:8080` in one file both started.
/// Now both are refused by `check` and `run`, naming the key.
#[test]
fn colliding_ports_in_one_file_are_refused() {
    let p = appliance_tests::free_port();
    let admin_on_statsd = format!(
        "[admin]\nlisten = \"127.0.0.1:{p}\"\n[[aggregate]]\nlisten_tcp = \"127.0.0.1:{p}\"\nflush_stdout = true\n"
    );
    let wildcard_and_loopback = format!(
        "[[echo]]\nname = \"a\"\nlisten = \"0.0.0.0:{p}\"\n[[echo]]\nname = \"b\"\nlisten = \"127.0.0.1:{p}\"\n"
    );
    for (i, (text, key)) in
        [(admin_on_statsd, "admin.listen"), (wildcard_and_loopback, "b.listen")].iter().enumerate()
    {
        let file = TempConfig::new(&format!("ports{i}.toml"), text);
        for verb in ["check", "run"] {
            let (code, out) = appliance_tests::run_to_end(&[verb, "--config", file.path()]);
            assert_eq!(code, Some(2), "{verb} refuses:\n{text}\n{out}");
            assert!(out.contains(key), "{verb} names {key}: {out}");
        }
    }
}

/// Reported: a second appliance process on the same ports started without
/// error and took half the connections (every socket joined one
/// `SO_REUSEPORT` group). Now it refuses to start, and the first one keeps
/// every connection.
#[test]
fn a_second_process_cannot_join_the_port_group() {
    use appliance_tests::upstream::{identify, Upstream};
    use std::io::Read;
    let up = Upstream::start(identify, 7);
    let (p, up_s) = (appliance_tests::free_port(), up.addr.to_string());
    let listen = format!("127.0.0.1:{p}");
    let args = [
        "forward",
        "--listen",
        &listen,
        "--upstream",
        &up_s,
        "--shards",
        "1",
        "--no-pin",
        "--health-interval",
        "0",
    ];
    let mut first = Appliance::start(&args).expect("first");
    first.wait_for_addr("forward listening on").expect("first listens");
    let (code, out) = appliance_tests::run_to_end(&args);
    assert_eq!(code, Some(1), "the second process must not start: {out}");
    assert!(out.contains("already in use"), "{out}");
    for _ in 0..10 {
        let mut c = TcpStream::connect(("127.0.0.1", p)).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut id = [0u8; 1];
        c.read_exact(&mut id).expect("served by the first process");
        assert_eq!(id[0], 7);
    }
}

/// Reported: with the default `max_conns` (100,000) above what the
/// process's descriptors allow, idle clients exhausted the descriptors; the
/// health checker could then not open a socket and marked a healthy
/// upstream down, and the queued clients were reset as `no_upstream`. Now
/// the appliance sizes its limits from `RLIMIT_NOFILE` (warned at start),
/// keeps a reserve for checks and the admin endpoint, refuses what is over
/// promptly and counts it, and the upstream stays up.
#[test]
fn descriptor_exhaustion_refuses_clients_and_never_fails_the_upstream() {
    use appliance_tests::upstream::{echo, Upstream};
    use std::io::Read;
    if std::process::Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux prlimit is not installed");
        return;
    }
    let up = Upstream::start(echo, 0);
    let (mut app, addr, admin) = forward_limited(Some(400), up.addr, &["--health-interval", "100ms"]);
    assert!(app.output().contains("capped at"), "the cap is warned at start:\n{}", app.output());
    // 300 clients would need 600 descriptors: about half fit.
    let mut served = Vec::new();
    let mut refused = 0;
    for i in 0..300u32 {
        let mut c = TcpStream::connect(addr).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
        let msg = i.to_be_bytes();
        let mut back = [0u8; 4];
        match c.write_all(&msg).and_then(|_| c.read_exact(&mut back)) {
            Ok(()) if back == msg => served.push(c),
            Ok(()) => panic!("client {i}: wrong echo"),
            Err(e) => {
                assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "client {i} left hanging, not refused");
                refused += 1;
            }
        }
    }
    assert!(served.len() >= 100 && refused >= 100, "served {}, refused {refused}", served.len());
    // The checks go on meanwhile (fall = 3 at 100 ms): the upstream stays up.
    std::thread::sleep(Duration::from_millis(600));
    let (_, body) = appliance_tests::http_get(admin, "/status").expect("the admin endpoint still answers");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["services"][0]["upstreams"][0]["up"], true, "{json}");
    let over = scrape(
        admin,
        "appliance_forward_refused_total{service=\"forward\",reason=\"over_limit\",shard=\"all\"}",
    );
    let none = scrape(
        admin,
        "appliance_forward_refused_total{service=\"forward\",reason=\"no_upstream\",shard=\"all\"}",
    );
    assert_eq!(over, Some(refused as f64), "every refusal counted");
    assert_eq!(none, Some(0.0), "no client was blamed on the upstream");
    // Room again once clients leave.
    served.truncate(0);
    std::thread::sleep(Duration::from_millis(200));
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    c.write_all(b"back").expect("write");
    let mut back = [0u8; 4];
    c.read_exact(&mut back).expect("served again");
}

/// A UDP echo upstream on a thread, for as long as the test runs.
fn udp_echo() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind udp upstream");
    let addr = sock.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    });
    addr
}

/// Reported: `forward --udp` dropped datagrams over 1,904 bytes (2 KiB relay
/// buffers), counted but not logged or documented. Now any UDP datagram is
/// relayed whole both ways.
#[test]
fn udp_forward_relays_any_datagram_whole() {
    let (_app, addr, _) = forward(udp_echo(), &["--udp"]);
    let c = UdpSocket::bind("127.0.0.1:0").expect("client");
    c.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    for len in [1_905usize, 9_000, 65_507] {
        let msg: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut buf = vec![0u8; 65_536];
        let mut got = None;
        for _ in 0..5 {
            c.send_to(&msg, addr).expect("send");
            if let Ok((n, _)) = c.recv_from(&mut buf) {
                got = Some(buf[..n].to_vec());
                break;
            }
        }
        assert_eq!(got.as_deref().map(<[u8]>::len), Some(len), "{len} bytes came back");
        assert!(got.is_some_and(|g| g == msg), "{len} bytes came back intact");
    }
}

/// UDP sessions are a table keyed by outside input: bounded by `max_conns`,
/// with what is refused counted (it grew without bound before).
#[test]
fn udp_sessions_are_bounded_and_refusals_counted() {
    let (_app, addr, admin) = forward(udp_echo(), &["--udp", "--max-conns", "4"]);
    let clients: Vec<UdpSocket> = (0..12).map(|_| UdpSocket::bind("127.0.0.1:0").expect("client")).collect();
    let mut answered = 0;
    for c in &clients {
        c.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
        c.send_to(b"hello", addr).expect("send");
        let mut buf = [0u8; 16];
        if c.recv_from(&mut buf).is_ok() {
            answered += 1;
        }
    }
    assert!((1..=4).contains(&answered), "at most max_conns sessions: {answered}");
    let refused =
        scrape(admin, "appliance_forward_udp_sessions_refused_total{service=\"forward\",shard=\"all\"}");
    assert_eq!(refused, Some((12 - answered) as f64));
}

/// Reported: bad addresses (`listen`, `graphite`, `relays`) and type errors
/// named only a line and a Rust type. Now they name the key, the value and
/// the form expected, in a file and on the command line.
#[test]
fn bad_values_name_the_key_the_value_and_the_form() {
    let cases = [
        (
            "[[forward]]\nname = \"web\"\nlisten = \"localhost:8080\"\nupstreams = [\"127.0.0.1:7000\"]\n",
            vec!["forward[0].listen", "localhost:8080", "IP:PORT"],
        ),
        (
            "[[aggregate]]\nlisten_udp = \"127.0.0.1:0\"\ngraphite = \"graphite.local:2003\"\n",
            vec!["aggregate[0].graphite", "graphite.local:2003", "IP:PORT"],
        ),
        (
            "[[echo]]\nlisten = \"127.0.0.1:0\"\nbuffers = \"many\"\n",
            vec!["echo[0].buffers", "many", "a whole number"],
        ),
    ];
    for (i, (text, wanted)) in cases.iter().enumerate() {
        let file = TempConfig::new(&format!("values{i}.toml"), text);
        let (code, out) = appliance_tests::run_to_end(&["check", "--config", file.path()]);
        assert_eq!(code, Some(2), "{out}");
        for w in wanted {
            assert!(out.contains(w), "{w:?} in: {out}");
        }
    }
    let (code, out) = appliance_tests::run_to_end(&[
        "aggregate",
        "--listen-udp",
        "127.0.0.1:0",
        "--flush-stdout",
        "--relay",
        "relay.local:8125",
    ]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("--relay") && out.contains("relay.local:8125") && out.contains("IP:PORT"), "{out}");
}

/// The aggregator's TCP clients take their share of the descriptor budget
/// as a connection limit: beyond it a client is reset at once and counted
/// (`appliance_aggregate_tcp_refused_total`), and the clients within it
/// keep counting.
#[test]
fn aggregate_tcp_clients_beyond_the_budget_are_refused_and_counted() {
    if std::process::Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux prlimit is not installed");
        return;
    }
    let sink = Sink::start();
    let graphite = sink.addr.to_string();
    let mut app = Appliance::start_with_nofile(
        300,
        &[
            "aggregate",
            "--listen-tcp",
            "127.0.0.1:0",
            "--graphite",
            &graphite,
            "--flush-interval",
            "200ms",
            "--shards",
            "2",
            "--no-pin",
            "--admin",
            "127.0.0.1:0",
        ],
    )
    .expect("aggregate");
    let tcp = app.wait_for_addr("aggregate listening on tcp").expect("tcp");
    let admin = app.wait_for_addr("admin listening on").expect("admin");
    // A client over the limit is reset at once: under load the reset can
    // land before its own connect returns, which is the same refusal.
    let mut reset_at_connect = 0;
    let mut clients = Vec::new();
    for _ in 0..250 {
        match TcpStream::connect(tcp) {
            Ok(c) => clients.push(c),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => reset_at_connect += 1,
            Err(e) => panic!("connect: {e}"),
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let (mut kept, refused) =
        appliance_tests::served(clients, |c, on| c.set_nonblocking(on).expect("nonblocking"));
    let refused = refused + reset_at_connect;
    assert!(refused > 0 && !kept.is_empty(), "kept {}, refused {refused}", kept.len());
    for c in &mut kept {
        c.write_all(b"budget.k:1|c\n").expect("a kept client still sends");
    }
    let n = kept.len() as f64;
    sink.eventually("every kept client's line counted", |s| s.sum("stats.counters.budget.k.count") == n);
    let series = "appliance_aggregate_tcp_refused_total{service=\"aggregate\",shard=\"all\"}";
    assert_eq!(scrape(admin, series), Some(refused as f64));
}

/// A reload is checked against the running runtime's shard count too, as
/// `check` and `run` are: `max_keys` below the shard count was applied
/// (leaving shards no keys at all) before; now it is refused, naming the key.
#[test]
fn a_reload_below_the_shard_count_is_refused() {
    let good = "[runtime]\nshards = 2\nno_pin = true\n[admin]\nlisten = \"127.0.0.1:0\"\n\
                [[aggregate]]\nlisten_udp = \"127.0.0.1:0\"\nflush_stdout = true\nmax_keys = 10\n";
    let file = TempConfig::new("reload-keys.toml", good);
    let mut app = Appliance::start(&["run", "--config", file.path()]).expect("run");
    let admin = app.wait_for_addr("admin listening on").expect("admin");
    std::fs::write(&file.0, good.replace("max_keys = 10", "max_keys = 1")).expect("new file");
    app.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = appliance_tests::http_get(admin, "/status").expect("status");
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        if json["reloads"]["failed"] == 1 || json["reloads"]["ok"] == 1 {
            assert_eq!(json["reloads"]["ok"], 0, "applied: {json}");
            let error = json["reloads"]["last_error"].as_str().unwrap_or_default();
            assert!(error.contains("aggregate[0].max_keys"), "{error}");
            break;
        }
        assert!(Instant::now() < deadline, "no reload outcome: {json}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
