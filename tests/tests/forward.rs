//! `appliance forward` end to end: the real binary on loopback between real
//! clients and test upstreams run by this file.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use appliance_tests::upstream::{echo, identify, Upstream};
use appliance_tests::Appliance;

/// Reads what the proxy announced (a PROXY header line or block) and sends
/// it back verbatim, then closes.
fn reflect_header(_: usize, mut s: TcpStream) {
    s.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let _ = s.write_all(&got);
}

fn start_forward(upstreams: &[SocketAddr], extra: &[&str]) -> (Appliance, SocketAddr) {
    let mut args: Vec<String> =
        ["forward", "--listen", "127.0.0.1:0", "--shards", "2", "--no-pin", "--grace", "5s"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    for u in upstreams {
        args.push("--upstream".into());
        args.push(u.to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut app = Appliance::start(&argv).expect("start forward");
    let addr = app.wait_for_addr("forward listening on").expect("listening line");
    (app, addr)
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

#[test]
fn relays_random_payloads_intact_with_half_close() {
    let up = Upstream::start(echo, 0);
    let (_app, addr) = start_forward(&[up.addr], &[]);
    let clients: Vec<_> = (0..8u64)
        .map(|c| {
            std::thread::spawn(move || {
                let mut seed = c.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                let mut next = || {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed
                };
                let len = (next() % 3_000_000) as usize + 1;
                let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                let mut s = TcpStream::connect(addr).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
                let mut reader = s.try_clone().expect("clone");
                let want = fnv(&data);
                let sender = std::thread::spawn(move || {
                    s.write_all(&data).expect("write");
                    // Half-close: the reply must still arrive in full.
                    s.shutdown(Shutdown::Write).expect("half-close");
                });
                let mut back = Vec::new();
                reader.read_to_end(&mut back).expect("read to EOF");
                sender.join().expect("sender");
                assert_eq!(back.len(), len, "client {c}: length");
                assert_eq!(fnv(&back), want, "client {c}: content hash");
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client");
    }
}

#[test]
fn round_robin_is_exact_and_a_dead_upstream_is_skipped() {
    let ups: Vec<Upstream> = (0..3).map(|i| Upstream::start(identify, i)).collect();
    let dead = TcpListener::bind("127.0.0.1:0").expect("reserve a port").local_addr().expect("addr");
    let mut addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    addrs.push(dead);
    // One shard, so one balancer sees every connection in order.
    let mut args =
        vec!["forward", "--listen", "127.0.0.1:0", "--shards", "1", "--no-pin", "--health-interval", "0"];
    let owned: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    for a in &owned {
        args.push("--upstream");
        args.push(a);
    }
    let mut app = Appliance::start(&args).expect("start");
    let addr = app.wait_for_addr("forward listening on").expect("listening");
    let mut counts = [0usize; 3];
    let mut late = [0usize; 3];
    for n in 0..90 {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut id = [0u8; 1];
        s.read_exact(&mut id).expect("an upstream answered (the dead one is retried past)");
        counts[id[0] as usize] += 1;
        if n >= 30 {
            late[id[0] as usize] += 1;
        }
    }
    // Every connection reached a live upstream (the dead one was retried
    // past, then ejected after 5 failed connects); once it is out of the
    // rotation the live ones share exactly.
    assert_eq!(counts.iter().sum::<usize>(), 90);
    assert_eq!(late, [20, 20, 20], "exact round-robin after ejection (all: {counts:?})");
}

#[test]
fn max_conns_refuses_the_excess() {
    let up = Upstream::start(echo, 0);
    let (_app, addr) = start_forward(&[up.addr], &["--max-conns", "2", "--health-interval", "0"]);
    // Two shards split a limit of 2: one connection each. Hold many open;
    // at most 2 get through, the rest are refused (closed at once).
    let mut served = 0;
    let mut held = Vec::new();
    for i in 0..12u8 {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
        let ok = s.write_all(&[i]).is_ok() && {
            let mut b = [0u8; 1];
            matches!(s.read(&mut b), Ok(1))
        };
        if ok {
            served += 1;
        }
        held.push(s);
    }
    assert!((1..=2).contains(&served), "{served} served with --max-conns 2");
}

#[test]
fn proxy_headers_are_sent_in_both_versions() {
    for (version, prefix) in
        [("v1", &b"PROXY TCP4 127.0.0.1 127.0.0.1 "[..]), ("v2", &b"\r\n\r\n\0\r\nQUIT\n"[..])]
    {
        let up = Upstream::start(reflect_header, 0);
        let (_app, addr) =
            start_forward(&[up.addr], &["--proxy-protocol", version, "--health-interval", "0"]);
        let mut s = TcpStream::connect(addr).expect("connect");
        let client_port = s.local_addr().expect("local").port();
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("reflected header");
        assert!(got.starts_with(prefix), "{version}: {:?}", String::from_utf8_lossy(&got));
        if version == "v1" {
            let line = String::from_utf8_lossy(&got);
            assert!(line.contains(&format!(" {client_port} ")), "v1 names the client port: {line}");
        }
    }
}

#[test]
fn accept_proxy_strips_the_inbound_header() {
    let up = Upstream::start(echo, 0);
    let (_app, addr) = start_forward(&[up.addr], &["--accept-proxy", "--health-interval", "0"]);
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.write_all(b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 80\r\nafter the header").expect("write");
    s.shutdown(Shutdown::Write).expect("half-close");
    let mut back = Vec::new();
    s.read_to_end(&mut back).expect("read");
    assert_eq!(back, b"after the header");
    // A client that does not speak PROXY protocol is closed.
    let mut bad = TcpStream::connect(addr).expect("connect");
    bad.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    bad.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("write");
    let mut rest = Vec::new();
    assert!(matches!(bad.read_to_end(&mut rest), Ok(0) | Err(_)), "closed without relaying");
}

/// One echo round trip on a new connection, which then stays open.
fn held(addr: SocketAddr, msg: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(msg).expect("write");
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).expect("echo");
    assert_eq!(back, msg);
    s
}

/// The rest of docs/operations.md's signal table: SIGINT drains as SIGTERM
/// does (an established connection keeps working; exit 0 once it ends),
/// and a second SIGTERM or SIGINT, or SIGQUIT, exits at once with code 130,
/// with a connection open and the grace (5 s) far from over.
#[test]
fn sigint_drains_and_a_second_stop_signal_or_sigquit_exits_with_130() {
    let up = Upstream::start(echo, 0);
    let (mut app, addr) = start_forward(&[up.addr], &["--health-interval", "0"]);
    let mut s = held(addr, b"before");
    app.signal(libc::SIGINT);
    std::thread::sleep(Duration::from_millis(200));
    s.write_all(b"during").expect("write during drain");
    let mut b = [0u8; 6];
    s.read_exact(&mut b).expect("echo during drain");
    assert_eq!(&b, b"during");
    drop(s);
    let status = app.wait_exit(Duration::from_secs(15)).expect("exits after the last connection");
    assert!(status.success(), "SIGINT drains and exits 0: {status:?}: {}", app.output());

    for signals in [&[libc::SIGTERM, libc::SIGTERM][..], &[libc::SIGINT, libc::SIGINT], &[libc::SIGQUIT]] {
        let (mut app, addr) = start_forward(&[up.addr], &["--health-interval", "0"]);
        let _open = held(addr, b"x");
        for &sig in signals {
            app.signal(sig);
            std::thread::sleep(Duration::from_millis(100));
        }
        let status = app.wait_exit(Duration::from_secs(4));
        let status = status.unwrap_or_else(|| panic!("{signals:?}: still running, draining for its grace"));
        assert_eq!(status.code(), Some(130), "{signals:?}: {status:?}: {}", app.output());
    }
}

#[test]
fn sigterm_drains_while_a_transfer_completes() {
    let up = Upstream::start(echo, 0);
    let (mut app, addr) = start_forward(&[up.addr], &["--health-interval", "0"]);
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(b"before").expect("write");
    let mut b = [0u8; 6];
    s.read_exact(&mut b).expect("echo before");
    app.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    // The established connection keeps working during the grace period.
    s.write_all(b"during").expect("write during drain");
    s.read_exact(&mut b).expect("echo during drain");
    assert_eq!(&b, b"during");
    // New connections are no longer accepted.
    let refused = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        .map(|mut c| {
            let _ = c.write_all(b"x");
            let mut one = [0u8; 1];
            c.set_read_timeout(Some(Duration::from_millis(500))).ok();
            !matches!(c.read(&mut one), Ok(1))
        })
        .unwrap_or(true);
    assert!(refused, "no new connections while draining");
    drop(s);
    let status = app.wait_exit(Duration::from_secs(15)).expect("exits after the last connection");
    assert!(status.success(), "{status:?}: {}", app.output());
}

#[test]
fn bad_flags_name_the_flag_and_exit_2() {
    for (args, needle) in [
        (vec!["forward", "--listen", "127.0.0.1:0", "--upstream", "10.0.0.1"], "missing port"),
        (vec!["forward", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9,weight=0"], "weight"),
        (
            vec!["forward", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--balance", "fastest"],
            "--balance",
        ),
        (
            vec![
                "forward",
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                "127.0.0.1:9",
                "--connect-timeout",
                "soon",
            ],
            "--connect-timeout",
        ),
    ] {
        let (code, out) = appliance_tests::run_to_end(&args);
        assert_eq!(code, Some(2), "{args:?}: {out}");
        assert!(out.contains(needle), "{args:?} should mention {needle}: {out}");
    }
}

fn ids_seen(addr: SocketAddr, connections: usize) -> Vec<u8> {
    (0..connections)
        .filter_map(|_| {
            let mut s = TcpStream::connect(addr).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            let mut id = [0u8; 1];
            s.read_exact(&mut id).ok()?;
            Some(id[0])
        })
        .collect()
}

/// Active checks take a dead upstream out of the rotation and bring it
/// back once it answers again.
#[test]
fn health_checks_eject_and_recover_an_upstream() {
    let a = Upstream::start(identify, 0);
    let b = Upstream::start(identify, 1);
    let b_addr = b.addr;
    let (_app, addr) = start_forward(&[a.addr, b.addr], &["--health-interval", "100ms"]);
    let before = ids_seen(addr, 20);
    assert!(before.contains(&1), "both serve at first: {before:?}");
    drop(b);
    // fall = 3 checks at 100 ms; every shard hears of it.
    std::thread::sleep(Duration::from_millis(800));
    let down = ids_seen(addr, 20);
    assert_eq!(down.len(), 20, "every connection still served");
    assert!(down.iter().all(|&id| id == 0), "the dead upstream is out: {down:?}");
    let _b = Upstream::start_at(b_addr, identify, 1);
    // rise = 2 checks.
    std::thread::sleep(Duration::from_millis(800));
    let after = ids_seen(addr, 20);
    assert!(after.contains(&1), "back in the rotation: {after:?}");
}

/// A UDP echo upstream on a thread; returns its address.
fn udp_echo_upstream(stop: Arc<AtomicBool>) -> (SocketAddr, JoinHandle<()>) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp upstream");
    sock.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
    let addr = sock.local_addr().expect("addr");
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::SeqCst) {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], from);
            }
        }
    });
    (addr, t)
}

#[test]
fn udp_sessions_relay_replies_and_survive_idle_expiry() {
    let stop = Arc::new(AtomicBool::new(false));
    let (up, thread) = udp_echo_upstream(stop.clone());
    let up_s = up.to_string();
    let mut app = Appliance::start(&[
        "forward",
        "--udp",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &up_s,
        "--shards",
        "2",
        "--no-pin",
        "--idle-timeout",
        "200ms",
        "--admin",
        "127.0.0.1:0",
    ])
    .expect("start");
    let addr = app.wait_for_addr("forward listening on").expect("listening");
    let admin = app.wait_for_addr("admin listening on").expect("admin");
    let clients: Vec<std::net::UdpSocket> =
        (0..4).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("client")).collect();
    let roundtrip = |c: &std::net::UdpSocket, msg: &[u8]| -> Vec<u8> {
        c.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        for _ in 0..5 {
            c.send_to(msg, addr).expect("send");
            let mut buf = [0u8; 2048];
            if let Ok((n, from)) = c.recv_from(&mut buf) {
                assert_eq!(from, addr, "replies come from the listening address");
                return buf[..n].to_vec();
            }
        }
        panic!("no reply for {msg:?}");
    };
    for (i, c) in clients.iter().enumerate() {
        for j in 0..10u8 {
            let msg = vec![i as u8, j, 0xab];
            assert_eq!(roundtrip(c, &msg), msg);
        }
    }
    // Sessions expire after 200 ms of silence; the next datagram opens a
    // new one and is relayed just the same.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(roundtrip(&clients[0], b"after expiry"), b"after expiry");
    // The expiries are counted and exposed (the counter was kept but left
    // out of /metrics before the counter sets were declared once).
    let (_, text) = appliance_tests::http_get(admin, "/metrics").expect("metrics");
    let expired = "appliance_forward_udp_sessions_expired_total{service=\"forward\",shard=\"all\"}";
    assert_eq!(appliance_tests::metric(&text, expired), Some(4.0), "{text}");
    stop.store(true, Ordering::SeqCst);
    thread.join().expect("upstream");
    app.signal(libc::SIGTERM);
    assert!(app.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()), "{}", app.output());
}

/// docs/operations.md, "Logs": `--log-format json` writes JSON lines, each
/// with the thread's name, and an event from a shard names it (`shard-N`):
/// here the grace running out on a held connection.
#[test]
fn json_logs_name_the_shard_an_event_came_from() {
    let up = Upstream::start(echo, 0);
    let upstream = up.addr.to_string();
    let args = ["forward", "--listen", "127.0.0.1:0", "--upstream", &upstream, "--shards", "2", "--no-pin"];
    let mut app = Appliance::start(
        &[&args[..], &["--health-interval", "0", "--grace", "1s", "--log-format", "json"]].concat(),
    )
    .expect("start");
    let addr = app.wait_for_addr("forward listening on").expect("listening line");
    let _open = held(addr, b"x");
    app.signal(libc::SIGTERM);
    let status = app.wait_exit(Duration::from_secs(15)).expect("exits once the grace is over");
    assert!(status.success(), "{status:?}");
    assert!(app.printed("grace period over"), "no grace event:\n{}", app.output());
    let output = app.output();
    let mut from_shard = None;
    for line in output.lines().filter(|l| l.starts_with('{')) {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        let thread = event["threadName"].as_str().unwrap_or_default();
        if event["fields"]["message"].as_str().is_some_and(|m| m.contains("grace period over")) {
            from_shard = Some(thread.to_string());
        }
    }
    // Besides the events, only the listening announcements (stdout).
    assert!(output.lines().all(|l| l.starts_with('{') || l.contains("listening on")), "{output}");
    let thread = from_shard.unwrap_or_else(|| panic!("no grace event:\n{output}"));
    assert!(thread.strip_prefix("shard-").is_some_and(|n| n.parse::<usize>().is_ok()), "thread {thread:?}");
}
