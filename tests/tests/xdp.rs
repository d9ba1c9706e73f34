//! The aggregator on AF_XDP, end to end: the real binary in one network
//! namespace with `--backend xdp` on its veth, statsd from the other
//! namespace, every flushed total checked at a Graphite sink there.
//!
//! Skipped (with a note) only when not root. As root, AF_XDP failing is a
//! failure: the machines this runs on have AF_XDP and XDP on veth.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use appliance_tests::graphite::Sink;
use appliance_tests::{http_get, metric, Appliance};
use bench_support::netns::{in_ns, is_root, VethPair};
use socket2::{Domain, Protocol, Socket, Type};

/// Root can make namespaces and attach XDP; anyone else skips, saying so.
/// The tests of this file run one at a time (the guard): the exact-count
/// ones check that AF_XDP loses no frame, and on this 2-core machine a
/// neighbour test's aggregators and blasts could starve a receiving shard
/// long enough to overrun its RX ring.
fn root() -> Option<std::sync::MutexGuard<'static, ()>> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces, XDP, capabilities)");
        return None;
    }
    Some(ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Lines per datagram from the sender.
const PER_DATAGRAM: usize = 10;

struct Setup {
    pair: VethPair,
    app: Appliance,
    sink: Sink,
    statsd: SocketAddr,
    admin: SocketAddr,
}

/// The aggregator (2 shards) on veth end `a` with `backend`, its Graphite
/// sink on end `b`.
fn start(queues: u32, backend: &str) -> Setup {
    start_on(queues, backend, false, &[])
}

/// [`start`], listening on end `a`'s IPv6 address with `v6`, the binary
/// run through `wrap` (a command that execs its arguments) when given;
/// then without waiting for the AF_XDP sockets.
fn start_on(queues: u32, backend: &str, v6: bool, wrap: &[&str]) -> Setup {
    start_with(queues, backend, v6, wrap, &[])
}

/// [`start_on`] with `extra` flags.
fn start_with(queues: u32, backend: &str, v6: bool, wrap: &[&str], extra: &[&str]) -> Setup {
    let pair = VethPair::with_queues(queues).expect("veth pair");
    pair.complete_checksums_from_b().expect("ethtool");
    let sink_at = SocketAddr::from((pair.addr_b(), 0));
    let sink = in_ns(pair.ns_b(), || Sink::start_at(sink_at));
    let listen = if v6 { format!("[{}]:8125", pair.addr6_a()) } else { format!("{}:8125", pair.addr_a()) };
    let mut args = aggregate_args(&pair, &listen, sink.addr, backend);
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut cmd = VethPair::exec(pair.ns_a(), wrap.first().copied().unwrap_or("env"));
    cmd.args(wrap.iter().skip(1)).arg(appliance_tests::binary()).args(args);
    let mut app = Appliance::spawn(&mut cmd).expect("start");
    let statsd = app.wait_for_addr("aggregate listening on udp").expect("listening");
    let admin = app.wait_for_addr("admin listening on").expect("admin");
    let s = Setup { pair, app, sink, statsd, admin };
    if wrap.is_empty() {
        wait_for_sockets(&s, queues);
    }
    s
}

/// The aggregator's flags: 2 shards on `listen`, flushing to `graphite`
/// every 200 ms, with `backend` on end `a`.
fn aggregate_args(pair: &VethPair, listen: &str, graphite: SocketAddr, backend: &str) -> Vec<String> {
    let graphite = graphite.to_string();
    let args = [
        "aggregate",
        "--listen-udp",
        listen,
        "--graphite",
        &graphite,
        "--flush-interval",
        "200ms",
        "--shards",
        "2",
        "--no-pin",
        "--admin",
        "127.0.0.1:0",
        "--backend",
        backend,
        "--interface",
        pair.if_a(),
        "--grace",
        "3s",
    ];
    args.iter().map(|s| s.to_string()).collect()
}

/// Until every queue's AF_XDP socket is in the program's map (its series
/// appears once it is): datagrams before that take the kernel path, which
/// loses nothing but is not what these tests look at.
fn wait_for_sockets(s: &Setup, queues: u32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(s);
        let bound = (0..queues).all(|q| {
            let series =
                format!("appliance_aggregate_xdp_frames_total{{service=\"aggregate\",queue=\"{q}\"}}");
            metric(&text, &series).is_some()
        });
        if bound {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the AF_XDP sockets never came up:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `n` datagrams of counter lines `key:1|c` from end `b`, each from a
/// socket of its own (so they spread over the queues).
fn blast(s: &Setup, key: &str, n: usize) {
    let to = s.statsd;
    let payload = vec![format!("{key}:1|c"); PER_DATAGRAM].join("\n");
    in_ns(s.pair.ns_b(), || {
        let any = if to.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
        let sockets: Vec<UdpSocket> = (0..16).map(|_| UdpSocket::bind(any).expect("sender")).collect();
        for i in 0..n {
            sockets[i % sockets.len()].send_to(payload.as_bytes(), to).expect("send");
            if i % 256 == 255 {
                // Stay within what the receive rings hold: this test is
                // about exactness, the benchmark about rate.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    });
}

fn scrape(s: &Setup) -> String {
    let admin = s.admin;
    in_ns(s.pair.ns_a(), || http_get(admin, "/metrics").expect("metrics").1)
}

fn sum_of(text: &str, family: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(family))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every line sent counts exactly, and the frames came through AF_XDP (the
/// program redirected them, the sockets received them), on every queue.
#[test]
fn statsd_over_af_xdp_counts_every_line() {
    let Some(_alone) = root() else { return };
    let s = start(2, "xdp");
    assert!(s.pair.link_a().expect("link").contains("xdp"), "the program is attached");
    blast(&s, "xdp.hits", 2000);
    let want = (2000 * PER_DATAGRAM) as f64;
    s.sink.eventually("every line counted", |k| k.sum("stats.counters.xdp.hits.count") == want);
    s.sink.settle();
    assert_eq!(s.sink.sum("stats.counters.xdp.hits.count"), want, "and no more");
    let text = scrape(&s);
    let frames = sum_of(&text, "appliance_aggregate_xdp_frames_total");
    assert_eq!(frames, 2000.0, "every datagram through AF_XDP\n{text}");
    let redirected =
        "appliance_aggregate_xdp_program_frames_total{service=\"aggregate\",action=\"redirect\"}";
    assert!(metric(&text, redirected) >= Some(2000.0), "{text}");
    for q in ["0", "1"] {
        let series = format!("appliance_aggregate_xdp_frames_total{{service=\"aggregate\",queue=\"{q}\"}}");
        assert!(metric(&text, &series) > Some(0.0), "queue {q} received (16 source ports): {text}");
    }
    let admin = s.admin;
    let status = in_ns(s.pair.ns_a(), || http_get(admin, "/status").expect("status").1);
    let status: serde_json::Value = serde_json::from_str(&status).expect("json");
    let svc = &status["services"][0];
    assert_eq!((svc["receiving"].as_str(), svc["xdp_queues"].as_u64()), (Some("xdp"), Some(2)), "{status}");
}

/// The same over IPv6: the program matches the IPv6 destination, the
/// backend checks the IPv6 frame, every line counts.
#[test]
fn statsd_over_af_xdp_on_ipv6() {
    let Some(_alone) = root() else { return };
    let s = start_on(1, "xdp", true, &[]);
    blast(&s, "six.hits", 500);
    let want = (500 * PER_DATAGRAM) as f64;
    s.sink.eventually("every line counted", |k| k.sum("stats.counters.six.hits.count") == want);
    s.sink.settle();
    assert_eq!(s.sink.sum("stats.counters.six.hits.count"), want);
    let frames = sum_of(&scrape(&s), "appliance_aggregate_xdp_frames_total");
    assert_eq!(frames, 500.0, "every datagram through AF_XDP");
}

/// Frames with a bad UDP checksum or a UDP length past the packet are
/// dropped and counted by reason, while good lines keep counting; a
/// datagram larger than the MTU arrives in fragments, which the program
/// passes to the kernel, whose socket the service keeps.
#[test]
fn bad_frames_are_counted_and_fragments_take_the_kernel_path() {
    let Some(_alone) = root() else { return };
    let s = start(1, "xdp");
    let (from, to) = (s.pair.addr_b(), s.pair.addr_a());
    in_ns(s.pair.ns_b(), || {
        let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))
            .expect("raw socket");
        let dest = SocketAddrV4::new(to, 0).into();
        for _ in 0..5 {
            raw.send_to(&ipv4_udp(from, to, b"bad.sum:1|c", Damage::Checksum), &dest).expect("send");
            raw.send_to(&ipv4_udp(from, to, b"bad.len:1|c", Damage::Length), &dest).expect("send");
        }
    });
    blast(&s, "good", 50);
    let big: String = (0..400).map(|_| "frag:1|c\n").collect();
    let to = s.statsd;
    in_ns(s.pair.ns_b(), || {
        let u = UdpSocket::bind("0.0.0.0:0").expect("sender");
        u.send_to(big.as_bytes(), to).expect("send a datagram over the MTU")
    });
    s.sink.eventually("good lines", |k| k.sum("stats.counters.good.count") == (50 * PER_DATAGRAM) as f64);
    s.sink.eventually("the fragmented datagram", |k| k.sum("stats.counters.frag.count") == 400.0);
    s.sink.settle();
    assert_eq!(s.sink.sum("stats.counters.bad.sum.count"), 0.0);
    assert_eq!(s.sink.sum("stats.counters.bad.len.count"), 0.0);
    let text = scrape(&s);
    let series = |reason: &str| {
        format!(
            "appliance_aggregate_xdp_invalid_total{{service=\"aggregate\",queue=\"0\",reason=\"{reason}\"}}"
        )
    };
    assert_eq!(metric(&text, &series("udp_checksum")), Some(5.0), "{text}");
    assert_eq!(metric(&text, &series("malformed")), Some(5.0), "{text}");
    let passed = "appliance_aggregate_xdp_program_frames_total{service=\"aggregate\",action=\"pass\"}";
    assert!(metric(&text, passed) >= Some(2.0), "the fragments were passed on: {text}");
}

/// A queue whose AF_XDP socket cannot open (here: its UMEM over a small
/// locked-memory limit, without CAP_IPC_LOCK) is left to the kernel
/// socket: the service runs on, and every line still counts. (The old code
/// ended that shard's service: nothing was counted.)
#[test]
fn a_socket_that_cannot_open_leaves_its_queue_to_the_kernel() {
    let Some(_alone) = root() else { return };
    // 1 MiB of UMEM per socket; the two shards' rings fit in 512 KiB.
    let wrap = ["capsh", "--drop=cap_ipc_lock", "--", "-c", "exec prlimit --memlock=524288 \"$0\" \"$@\""];
    let mut s = start_on(1, "xdp", false, &wrap);
    assert!(s.app.printed("AF_XDP socket"), "the failure is logged: {}", s.app.output());
    blast(&s, "kernel.path", 100);
    let want = (100 * PER_DATAGRAM) as f64;
    s.sink.eventually("every line counted", |k| k.sum("stats.counters.kernel.path.count") == want);
    let admin = s.admin;
    let status = in_ns(s.pair.ns_a(), || http_get(admin, "/status").expect("status").1);
    let status: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert_eq!(status["services"][0]["receiving"].as_str(), Some("kernel"), "{status}");
}

/// Frames to another host's MAC (a promiscuous port, a router's transit
/// traffic) are not the service's: the kernel would not deliver them, and
/// the backend does not take them either.
#[test]
fn frames_to_another_host_are_not_taken() {
    let Some(_alone) = root() else { return };
    let s = start(1, "xdp");
    let ip = |args: &[&str]| bench_support::netns::ip(args).expect("ip");
    ip(&["-n", s.pair.ns_a(), "link", "set", s.pair.if_a(), "promisc", "on"]);
    let to = s.pair.addr_a().to_string();
    let lie =
        ["-n", s.pair.ns_b(), "neigh", "replace", &to, "lladdr", "02:00:00:00:00:99", "dev", s.pair.if_b()];
    ip(&[&lie[..], &["nud", "permanent"]].concat());
    blast(&s, "other.host", 50);
    ip(&["-n", s.pair.ns_b(), "neigh", "del", &to, "dev", s.pair.if_b()]);
    blast(&s, "this.host", 50);
    s.sink.eventually("lines to this host", |k| k.sum("stats.counters.this.host.count") == 500.0);
    s.sink.settle();
    assert_eq!(s.sink.sum("stats.counters.other.host.count"), 0.0, "not ours");
    let series =
        "appliance_aggregate_xdp_invalid_total{service=\"aggregate\",queue=\"0\",reason=\"not_ours\"}";
    assert_eq!(metric(&scrape(&s), series), Some(50.0));
}

/// The program is gone once the process is: after SIGTERM (the link is
/// closed by the drain) and after SIGKILL (the kernel closes it).
#[test]
fn the_program_leaves_with_the_process() {
    let Some(_alone) = root() else { return };
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let mut s = start(1, "xdp");
        assert!(s.pair.link_a().expect("link").contains("xdp"), "attached");
        s.app.signal(signal);
        assert!(s.app.wait_exit(Duration::from_secs(10)).is_some(), "exited on signal {signal}");
        assert!(!s.pair.link_a().expect("link").contains("prog/xdp"), "detached after signal {signal}");
        let out = s.pair.link_a().expect("link");
        assert!(!out.contains("xdp"), "no XDP program after signal {signal}: {out}");
    }
}

/// `backend = "xdp"` on an interface that does not exist refuses to
/// start, naming the interface and the fallback; `"auto"` starts on the
/// kernel sockets and says why.
#[test]
fn xdp_that_cannot_start_is_an_error_and_auto_falls_back() {
    let Some(_alone) = root() else { return };
    let pair = VethPair::new().expect("veth pair");
    let listen = format!("{}:0", pair.addr_a());
    let args = |backend: &'static str| {
        vec![
            "aggregate".to_string(),
            "--listen-udp".into(),
            listen.clone(),
            "--flush-stdout".into(),
            "--no-pin".into(),
            "--shards".into(),
            "1".into(),
            "--backend".into(),
            backend.into(),
            "--interface".into(),
            "nope0".into(),
            "--admin".into(),
            "127.0.0.1:0".into(),
        ]
    };
    let xdp: Vec<String> = args("xdp");
    let mut app =
        Appliance::start_in(pair.ns_a(), &xdp.iter().map(String::as_str).collect::<Vec<_>>()).expect("start");
    let status = app.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(!status.success(), "{}", app.output());
    assert!(app.printed("backend = \"auto\""), "names the fallback: {}", app.output());
    assert!(app.output().contains("nope0"), "{}", app.output());
    let auto: Vec<String> = args("auto");
    let mut app = Appliance::start_in(pair.ns_a(), &auto.iter().map(String::as_str).collect::<Vec<_>>())
        .expect("start");
    app.wait_for_line("aggregate listening on udp").expect("starts on the kernel sockets");
    let admin = app.wait_for_addr("admin listening on").expect("admin");
    assert!(app.printed("backend auto"), "says why: {}", app.output());
    assert!(app.output().contains("nope0"), "{}", app.output());
    let status = in_ns(pair.ns_a(), || http_get(admin, "/status").expect("status").1);
    let status: serde_json::Value = serde_json::from_str(&status).expect("json");
    let svc = &status["services"][0];
    assert_eq!(
        (svc["backend"].as_str(), svc["receiving"].as_str()),
        (Some("auto"), Some("kernel")),
        "{status}"
    );
}

/// Without CAP_BPF and CAP_NET_ADMIN, `backend = "xdp"` refuses to start
/// and names them; `"auto"` runs on the kernel sockets.
#[test]
fn without_the_capabilities_xdp_names_them() {
    let Some(_alone) = root() else { return };
    let pair = VethPair::new().expect("veth pair");
    let listen = format!("{}:0", pair.addr_a());
    let start = |backend: &str| {
        let mut cmd = VethPair::exec(pair.ns_a(), "capsh");
        cmd.args([
            "--drop=cap_bpf,cap_net_admin,cap_sys_admin,cap_perfmon",
            "--",
            "-c",
            "exec \"$0\" \"$@\"",
        ])
        .arg(appliance_tests::binary())
        .args(["aggregate", "--listen-udp", &listen, "--flush-stdout", "--no-pin", "--shards", "1"])
        .args(["--backend", backend, "--interface", pair.if_a()]);
        Appliance::spawn(&mut cmd).expect("start")
    };
    let mut app = start("xdp");
    let status = app.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(!status.success(), "{}", app.output());
    assert!(app.printed("CAP_BPF") && app.output().contains("CAP_NET_ADMIN"), "{}", app.output());
    let mut app = start("auto");
    app.wait_for_line("aggregate listening on udp").expect("starts on the kernel sockets");
    assert!(app.printed("CAP_BPF"), "says why it fell back: {}", app.output());
}

enum Damage {
    Checksum,
    Length,
}

/// An IPv4 + UDP packet (the kernel fills the IPv4 checksum and length of
/// a raw socket's packet) with its UDP header damaged.
fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8], damage: Damage) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let claimed = match damage {
        Damage::Checksum => udp_len,
        Damage::Length => udp_len + 100,
    };
    p.extend_from_slice(&40000u16.to_be_bytes());
    p.extend_from_slice(&8125u16.to_be_bytes());
    p.extend_from_slice(&(claimed as u16).to_be_bytes());
    // A checksum that is wrong for any content: the right one plus one.
    let sum = udp_checksum(src, dst, &p[20..], payload).wrapping_add(1).max(1);
    let checksum = match damage {
        Damage::Checksum => sum,
        Damage::Length => 0,
    };
    p.extend_from_slice(&checksum.to_be_bytes());
    p.extend_from_slice(payload);
    let total = p.len() as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p
}

/// The correct UDP checksum of a header (`head`, 6 bytes: ports and
/// length) and payload, over the IPv4 pseudo-header.
fn udp_checksum(src: Ipv4Addr, dst: Ipv4Addr, head: &[u8], payload: &[u8]) -> u16 {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&src.octets());
    bytes.extend_from_slice(&dst.octets());
    bytes.extend_from_slice(&[0, 17]);
    bytes.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    bytes.extend_from_slice(head);
    bytes.extend_from_slice(&[0, 0]);
    bytes.extend_from_slice(payload);
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    let mut sum: u32 = bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An interface takes one XDP program: an upgrade to a process that wants
/// AF_XDP on the same interface fails while the old process holds it, and
/// the old one serves on, on AF_XDP; one with `backend = "auto"` takes
/// over on its kernel sockets (docs/operations.md, "Upgrading the
/// binary"). Not a line is lost across either.
#[test]
fn an_upgrade_cannot_take_an_xdp_interface_and_auto_takes_over_on_sockets() {
    let Some(_alone) = root() else { return };
    let sock = std::env::temp_dir().join(format!("appliance-xdp-upgrade-{}.sock", std::process::id()));
    let sock = sock.to_str().expect("utf-8").to_string();
    let mut s = start_with(1, "xdp", false, &[], &["--upgrade-socket", &sock]);
    blast(&s, "up.hits", 100);
    let successor = |backend: &str| {
        let listen = s.statsd.to_string();
        let mut args = aggregate_args(&s.pair, &listen, s.sink.addr, backend);
        args.extend(["--upgrade-socket".to_string(), sock.clone(), "--upgrade".into()]);
        let mut cmd = VethPair::exec(s.pair.ns_a(), "env");
        cmd.arg(appliance_tests::binary()).args(args);
        Appliance::spawn(&mut cmd).expect("start")
    };
    let mut xdp = successor("xdp");
    let status = xdp.wait_exit(Duration::from_secs(20)).expect("exits");
    assert!(!status.success(), "{}", xdp.output());
    let out = xdp.output();
    assert!(out.contains("listening groups from process") && out.contains("another XDP program"), "{out}");
    assert!(s.app.printed("this process keeps serving"), "{}", s.app.output());
    blast(&s, "up.hits", 100);
    let want = (200 * PER_DATAGRAM) as f64;
    s.sink.eventually("the old process counts on", |k| k.sum("stats.counters.up.hits.count") == want);
    let frames = sum_of(&scrape(&s), "appliance_aggregate_xdp_frames_total");
    assert_eq!(frames, 200.0, "on AF_XDP still");

    let mut auto = successor("auto");
    auto.wait_for_line("is draining; this process serves").expect("takes over");
    assert!(auto.printed("backend auto"), "says it fell back: {}", auto.output());
    assert!(s.app.wait_exit(Duration::from_secs(15)).is_some_and(|st| st.success()), "{}", s.app.output());
    blast(&s, "up.hits", 100);
    let want = (300 * PER_DATAGRAM) as f64;
    s.sink.eventually("the successor counts every line", |k| k.sum("stats.counters.up.hits.count") == want);
    s.sink.settle();
    assert_eq!(s.sink.sum("stats.counters.up.hits.count"), want, "and no more");
    auto.signal(libc::SIGTERM);
    assert!(auto.wait_exit(Duration::from_secs(15)).is_some());
}
