//! DogStatsD over a Unix datagram socket (docs/operations.md, "DogStatsD
//! over a Unix socket"): the real binary, clients on the socket (this test
//! itself, and the Datadog Python client in UDS mode when it is
//! installed), exact totals at a Graphite sink, each line tagged with its
//! sender's pid (origin detection from the kernel's credentials).

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use appliance_tests::graphite::Sink;

/// One DogStatsD stream frame: a little-endian 32-bit length, then the payload.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("appliance-uds-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[test]
fn unix_socket_clients_are_counted_exactly_and_tagged_with_their_pid() {
    let dir = scratch("pid");
    let path = dir.join("dsd.socket");
    std::fs::write(&path, b"left by a crashed process").expect("stale file");
    let sink = Sink::start();
    let p = path.to_str().expect("utf-8");
    let args = ["--flush-interval", "500ms", "--listen-unix", p, "--origin-detection"];
    let (mut app, _, _) = appliance_tests::start_aggregate(sink.addr, &args);
    let mode = std::fs::metadata(&path).expect("socket file").permissions().mode();
    assert_eq!(mode & 0o777, 0o722, "any local client may write, as the Datadog agent's");
    // A short datagram queue (10 by default) is a limit clients hit
    // unseen: the startup log names it and its fix.
    let qlen: Option<u64> =
        std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen").ok().and_then(|s| s.trim().parse().ok());
    if qlen.is_some_and(|q| q < 512) {
        assert!(
            app.printed("net.unix.max_dgram_qlen is"),
            "no warning about the short queue:\n{}",
            app.output()
        );
    }
    let client = UnixDatagram::unbound().expect("client");
    for _ in 0..100 {
        client.send_to(b"uds.hits:1|c\nuds.tagged:2|c|#env:prod", &path).expect("send");
    }
    let pid = std::process::id();
    let hits = format!("stats.counters.uds.hits.count;pid={pid}");
    let tagged = format!("stats.counters.uds.tagged.count;env=prod;pid={pid}");
    sink.eventually("every line, tagged with our pid", |s| s.sum(&hits) == 100.0 && s.sum(&tagged) == 200.0);

    if python_datadog() {
        // Blocking sends (socket_timeout=None): a Unix datagram queue holds
        // net.unix.max_dgram_qlen datagrams (10 by default), and the
        // client's default, non-blocking, drops past that on its side.
        let script = format!(
            "from datadog.dogstatsd import DogStatsd\n\
             s = DogStatsd(socket_path={p:?}, disable_buffering=True, socket_timeout=None)\n\
             for i in range(250):\n    s.increment('py.hits', tags=['lang:python'])\n\
             s.close_socket()\n"
        );
        let child = Command::new("python3").args(["-c", &script]).spawn().expect("python3");
        let py = child.id();
        let out = child.wait_with_output().expect("python");
        assert!(out.status.success());
        // The interpreter may be started through a wrapper (pyenv): the
        // pid that sent is the one the lines are tagged with.
        let prefix = "stats.counters.py.hits.count;lang=python;pid=";
        let total =
            |s: &Sink| -> f64 { s.lines().iter().filter(|l| l.0.starts_with(prefix)).map(|l| l.1).sum() };
        sink.eventually("the Python client's 250 increments", |s| total(s) == 250.0);
        let pids: std::collections::HashSet<String> =
            sink.lines().into_iter().filter_map(|l| l.0.strip_prefix(prefix).map(str::to_string)).collect();
        assert_eq!(pids.len(), 1, "one sender: {pids:?} (python3 started as {py})");
    }
    if let Some(modules) = hot_shots() {
        // hot-shots in UDS mode, buffering lines into datagrams as its
        // users do (maxBufferSize).
        let script = format!(
            "const StatsD = require('hot-shots');\n\
             const c = new StatsD({{ protocol: 'uds', path: {p:?}, maxBufferSize: 8192, bufferFlushInterval: 50,\n\
               errorHandler: e => {{ console.error(e); process.exitCode = 1; }} }});\n\
             for (let i = 0; i < 250; i++) c.increment('js.hits', 1, ['lang:node']);\n\
             c.close(() => {{}});\n"
        );
        let child =
            Command::new("node").args(["-e", &script]).env("NODE_PATH", &modules).spawn().expect("node");
        let js = child.id();
        assert!(child.wait_with_output().expect("node").status.success());
        let series = format!("stats.counters.js.hits.count;lang=node;pid={js}");
        sink.eventually("hot-shots' 250 increments", |s| s.sum(&series) == 250.0);
    }
    sink.settle();
    assert_eq!(sink.sum(&hits), 100.0, "and no more");
    app.signal(libc::SIGTERM);
    assert!(app.wait_exit(Duration::from_secs(15)).is_some());
    let deadline = Instant::now() + Duration::from_secs(5);
    while path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!path.exists(), "the socket file is removed at exit");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether the Datadog Python client is installed (make test installs it
/// best effort); skipped with a note otherwise.
fn python_datadog() -> bool {
    let ok = Command::new("python3").args(["-c", "import datadog"]).status().is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped the Python client: `pip install datadog` did not happen");
    }
    ok
}

/// Where `make test` installs hot-shots (best effort), if it did.
fn hot_shots() -> Option<PathBuf> {
    let modules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/node/node_modules");
    let ok = modules.join("hot-shots").exists() && modules.join("unix-dgram").exists();
    if !ok {
        eprintln!(
            "skipped hot-shots: `npm install --prefix target/node hot-shots unix-dgram` did not happen"
        );
    }
    ok.then_some(modules)
}

/// A socket another aggregator still receives on is not taken over.
#[test]
fn a_live_socket_is_not_taken() {
    let dir = scratch("live");
    let path = dir.join("dsd.socket");
    let _live = UnixDatagram::bind(&path).expect("someone else's socket");
    let p = path.to_str().expect("utf-8");
    let (code, out) = appliance_tests::run_to_end(&[
        "aggregate",
        "--listen-unix",
        p,
        "--flush-stdout",
        "--shards",
        "1",
        "--no-pin",
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("another process receives on this socket"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A binary upgrade hands the Unix socket over too: clients keep sending
/// to the same file, nothing sent is lost, the file outlives the old
/// process.
#[test]
fn the_unix_socket_survives_an_upgrade() {
    let dir = scratch("upgrade");
    let (path, upgrade) = (dir.join("dsd.socket"), dir.join("upgrade.sock"));
    let sink = Sink::start();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "aggregate",
            "--listen-unix",
            path.to_str().expect("utf-8"),
            "--graphite",
            &sink.addr.to_string(),
            "--flush-interval",
            "500ms",
            "--shards",
            "2",
            "--no-pin",
            "--upgrade-socket",
            upgrade.to_str().expect("utf-8"),
            "--grace",
            "5s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let start = |extra: &[&str]| {
        let a = args(extra);
        appliance_tests::Appliance::start(&a.iter().map(String::as_str).collect::<Vec<_>>()).expect("start")
    };
    let mut old = start(&[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !upgrade.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let client = UnixDatagram::unbound().expect("client");
    for _ in 0..100 {
        client.send_to(b"up.hits:1|c", &path).expect("send before");
    }
    let mut new = start(&["--upgrade"]);
    new.wait_for_line("is draining; this process serves").expect("handed over");
    for _ in 0..100 {
        client.send_to(b"up.hits:1|c", &path).expect("send during");
    }
    assert!(old.wait_exit(Duration::from_secs(15)).is_some_and(|s| s.success()), "{}", old.output());
    assert!(path.exists(), "the old process left the file to its successor");
    for _ in 0..100 {
        client.send_to(b"up.hits:1|c", &path).expect("send after");
    }
    sink.eventually("every line of both processes", |s| s.sum("stats.counters.up.hits.count") == 300.0);
    new.signal(libc::SIGTERM);
    assert!(new.wait_exit(Duration::from_secs(15)).is_some());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The stream socket: length-prefixed frames, whatever the writes' sizes,
/// each tagged with the connecting process; a frame over max_datagram
/// closes its connection (counted) and no other.
#[test]
fn stream_clients_send_length_prefixed_frames() {
    use std::io::{Read, Write};
    let dir = scratch("stream");
    let path = dir.join("dsd.stream");
    let sink = Sink::start();
    let p = path.to_str().expect("utf-8");
    let args = [
        "--flush-interval",
        "500ms",
        "--listen-unix-stream",
        p,
        "--origin-detection",
        "--max-datagram",
        "1024",
    ];
    let (_app, _, _) = appliance_tests::start_aggregate(sink.addr, &args);
    let mut stream: Vec<u8> = Vec::new();
    for _ in 0..100 {
        stream.extend(frame(b"st.hits:1|c\nst.other:2|c"));
    }
    let mut client = std::os::unix::net::UnixStream::connect(&path).expect("connect");
    for piece in stream.chunks(7) {
        client.write_all(piece).expect("write");
    }
    let mut bad = std::os::unix::net::UnixStream::connect(&path).expect("connect");
    bad.write_all(&frame(&[b'x'; 2000])).expect("write");
    bad.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let closed = bad.read(&mut [0u8; 1]);
    assert!(matches!(closed, Ok(0) | Err(_)), "the oversized frame's connection is closed: {closed:?}");
    let pid = std::process::id();
    let hits = format!("stats.counters.st.hits.count;pid={pid}");
    let other = format!("stats.counters.st.other.count;pid={pid}");
    sink.eventually("every frame's lines", |s| s.sum(&hits) == 100.0 && s.sum(&other) == 200.0);
    sink.eventually("the oversized frame counted", |s| s.last("stats.aggregate.truncated") == Some(1.0));
    drop(client);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Unix stream clients take their share of the descriptor budget as TCP
/// clients do (the service has no TCP listener here: before, it then had
/// no share at all, so a flood of stream clients could take every
/// descriptor): beyond it a client is closed at once and counted, and the
/// clients within it keep counting.
#[test]
fn unix_stream_clients_beyond_the_budget_are_refused_and_counted() {
    use std::io::Write;
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux prlimit is not installed");
        return;
    }
    let dir = scratch("budget");
    let path = dir.join("dsd.stream");
    let sink = Sink::start();
    let (graphite, p) = (sink.addr.to_string(), path.to_str().expect("utf-8").to_string());
    let args = [
        "aggregate",
        "--listen-unix-stream",
        &p,
        "--graphite",
        &graphite,
        "--flush-interval",
        "200ms",
        "--shards",
        "2",
        "--no-pin",
    ];
    let mut app = appliance_tests::Appliance::start_with_nofile(300, &args).expect("aggregate");
    app.wait_for_line("aggregate").expect("started");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let clients: Vec<std::os::unix::net::UnixStream> =
        (0..250).map(|_| std::os::unix::net::UnixStream::connect(&path).expect("connect")).collect();
    std::thread::sleep(Duration::from_millis(300));
    let (mut kept, refused) =
        appliance_tests::served(clients, |c, on| c.set_nonblocking(on).expect("nonblocking"));
    assert!(refused > 0 && !kept.is_empty(), "kept {}, refused {refused}", kept.len());
    for c in &mut kept {
        c.write_all(&frame(b"budget.k:1|c")).expect("a kept client still sends");
    }
    let n = kept.len() as f64;
    sink.eventually("every kept client's line counted", |s| s.sum("stats.counters.budget.k.count") == n);
    sink.eventually("the refused counted", |s| s.last("stats.aggregate.tcp_refused") == Some(refused as f64));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A draining appliance refuses new Unix stream clients (as its TCP
/// listener does) instead of queueing connections nobody accepts any more,
/// which its exit would reset with their lines unread; a client already
/// connected keeps being read, every line of it counted.
#[test]
fn a_draining_unix_stream_listener_refuses_new_clients() {
    use std::io::Write;
    let dir = scratch("drain-stream");
    let path = dir.join("dsd.stream");
    let sink = Sink::start();
    let p = path.to_str().expect("utf-8");
    let args = ["--flush-interval", "200ms", "--listen-unix-stream", p, "--grace", "4s"];
    let (mut app, _, _) = appliance_tests::start_aggregate(sink.addr, &args);
    let mut client = std::os::unix::net::UnixStream::connect(&path).expect("connect");
    client.write_all(&frame(b"drain.early:1|c")).expect("write");
    sink.eventually("the first line", |s| s.sum("stats.counters.drain.early.count") == 1.0);
    app.signal(libc::SIGTERM);
    // The connected client keeps sending through the drain (it is read
    // until half the grace); meanwhile a new client is refused.
    let started = Instant::now();
    let mut sent = 1;
    let mut refused = None;
    while started.elapsed() < Duration::from_millis(1200) {
        client.write_all(&frame(b"drain.early:1|c")).expect("the connected client still writes");
        sent += 1;
        if refused.is_none() && started.elapsed() > Duration::from_millis(300) {
            refused = Some(std::os::unix::net::UnixStream::connect(&path).map(drop));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = refused.expect("tried to connect during the drain");
    assert!(
        matches!(&refused, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "a client connecting during the drain: {refused:?}"
    );
    drop(client);
    sink.eventually("every line of the connected client", |s| {
        s.sum("stats.counters.drain.early.count") == f64::from(sent)
    });
    assert!(app.wait_exit(Duration::from_secs(10)).is_some(), "exits after the drain");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Once a draining appliance has read what its Unix datagram socket held,
/// the socket closes: a client sending then is refused (`ECONNREFUSED`,
/// which DogStatsD clients see and count) instead of queueing datagrams
/// nobody will read before the exit. Graphite is away here, so the process
/// stays up for the rest of its grace retrying the last flush.
#[test]
fn a_drained_unix_datagram_socket_refuses_senders() {
    let dir = scratch("drain-dgram");
    let path = dir.join("dsd.socket");
    let p = path.to_str().expect("utf-8");
    let away = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port");
    let args = ["--flush-interval", "200ms", "--listen-unix", p, "--grace", "4s"];
    let (mut app, _, _) = appliance_tests::start_aggregate(away, &args);
    let client = UnixDatagram::unbound().expect("client");
    client.send_to(b"drain.dgram:1|c", &path).expect("send before the drain");
    app.signal(libc::SIGTERM);
    // Quiet for 50 ms ends each receiver's drain; the Graphite retries
    // keep the process up for seconds after that.
    std::thread::sleep(Duration::from_millis(600));
    let late = client.send_to(b"drain.dgram:1|c", &path);
    assert!(app.wait_exit(Duration::ZERO).is_none(), "still up (retrying Graphite)");
    assert!(
        matches!(&late, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "a datagram sent after the drain: {late:?}"
    );
    assert!(app.wait_exit(Duration::from_secs(10)).is_some(), "exits after the grace");
    let _ = std::fs::remove_dir_all(&dir);
}
