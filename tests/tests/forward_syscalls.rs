//! What docs/architecture.md promises about the forward path's system
//! calls, checked with strace on the real binary: a new connection costs
//! no `socket`, `setsockopt` or `getpeername` of its own unless something
//! uses the client's address (Maglev here), which asks once per connection.
//! Skipped with a message where strace is not installed; `make test`
//! installs it. And what it promises about the ring: a relayed message
//! costs one completion per direction (its receive; the quiet send that
//! carries it on posts none).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use appliance_tests::upstream::{echo, Upstream};
use appliance_tests::{http_get, metric, Appliance, TempDir};

const CONNECTIONS: usize = 20;

/// strace attached to every thread of `pid`, writing to `out`; returns
/// once it says so (`Process N attached with T threads`), or `None`
/// when strace is not installed. An installed strace that cannot attach
/// fails the test.
fn attach(pid: u32, out: &std::path::Path) -> Option<Child> {
    let mut child = match Command::new("strace")
        .args(["-f", "-e", "trace=socket,setsockopt,getpeername", "-o"])
        .arg(out)
        .args(["-p", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("skipped: strace is not installed (make test installs it)");
            return None;
        }
        Err(e) => panic!("strace did not start: {e}"),
    };
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("attached") => return Some(child),
            Ok(line) => eprintln!("strace: {line}"),
            Err(_) => {
                let _ = child.kill();
                panic!("strace did not attach to {pid} within 10 s");
            }
        }
    }
}

/// Counts each traced call over `CONNECTIONS` echoed connections through a
/// proxy started with `extra`.
fn calls_per_run(tag: &str, extra: &[&str]) -> Option<(usize, usize, usize)> {
    let up = Upstream::start(echo, 0);
    let upstream = up.addr.to_string();
    let mut args = vec!["forward", "--listen", "127.0.0.1:0", "--upstream", &upstream, "--shards", "2"];
    args.extend_from_slice(&["--no-pin", "--health-interval", "0"]);
    args.extend_from_slice(extra);
    let mut app = Appliance::start(&args).expect("start");
    let addr: SocketAddr = app.wait_for_addr("forward listening on").expect("listening");
    let dir = TempDir::new(tag);
    let out = dir.path.join("strace.out");
    let mut strace = attach(app.pid().expect("pid"), &out)?;
    for i in 0..CONNECTIONS {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let msg = [b'x', i as u8];
        s.write_all(&msg).expect("send");
        let mut back = [0u8; 2];
        s.read_exact(&mut back).expect("echo");
        assert_eq!(back, msg);
    }
    // SIGINT makes strace detach and flush its output.
    let _ = Command::new("kill").args(["-INT", &strace.id().to_string()]).status();
    let _ = strace.wait();
    let text = std::fs::read_to_string(&out).expect("strace output");
    let count = |name: &str| text.lines().filter(|l| l.contains(&format!("{name}("))).count();
    Some((count("socket"), count("setsockopt"), count("getpeername")))
}

#[test]
fn a_new_connection_makes_no_system_call_of_its_own() {
    let Some((socket, setsockopt, getpeername)) = calls_per_run("syscalls-rr", &[]) else {
        return;
    };
    // The ring makes the upstream socket and sets its option where the
    // kernel has those operations (Linux 6.7+); the startup report lists
    // missing ones, and this machine kind has them.
    if shard_ops_in_ring() {
        assert_eq!((socket, setsockopt), (0, 0), "upstream sockets are made in the ring");
    }
    assert_eq!(getpeername, 0, "round-robin never asks for the client's address");
}

#[test]
fn maglev_asks_for_each_client_address_once() {
    let Some((_, _, getpeername)) = calls_per_run("syscalls-maglev", &["--balance", "maglev"]) else {
        return;
    };
    assert_eq!(getpeername, CONNECTIONS, "one getpeername per connection, for the hash");
}

/// Whether this kernel's io_uring has the socket and socket-option
/// operations (Linux 6.7+).
fn shard_ops_in_ring() -> bool {
    let probe = shard::probe();
    probe.supports("socket") && probe.supports("uring_cmd")
}

/// Echo round trips through one shard, each a 16-byte message up and its
/// echo down: each costs two ring completions (the two receives). With a
/// completion for every send as well it was four.
#[test]
fn a_relayed_message_costs_one_completion_per_direction() {
    if !shard::reactor::probe::quiet_send() {
        eprintln!("skipped: this kernel ({}) has no quiet sends (6.0)", shard::probe().kernel);
        return;
    }
    const ROUNDS: u32 = 2000;
    let up = Upstream::start(echo, 0);
    let upstream = up.addr.to_string();
    let mut args = vec!["forward", "--listen", "127.0.0.1:0", "--upstream", &upstream, "--shards", "1"];
    args.extend_from_slice(&["--no-pin", "--health-interval", "0", "--admin", "127.0.0.1:0"]);
    let mut app = Appliance::start(&args).expect("start");
    let addr: SocketAddr = app.wait_for_addr("forward listening on").expect("listening");
    let admin: SocketAddr = app.wait_for_addr("admin listening on").expect("admin");
    let completions = || {
        let (_, text) = http_get(admin, "/metrics").expect("scrape");
        metric(&text, "appliance_uring_completions_total{shard=\"0\"}").expect("completions series")
    };
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_nodelay(true).expect("nodelay");
    c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut round = |i: u32| {
        let msg = [i as u8; 16];
        c.write_all(&msg).expect("send");
        let mut back = [0u8; 16];
        c.read_exact(&mut back).expect("echo");
        assert_eq!(back, msg);
    };
    // The connection and the upstream's are set up before counting.
    round(0);
    let before = completions();
    for i in 1..=ROUNDS {
        round(i);
    }
    let per_round = (completions() - before) / f64::from(ROUNDS);
    assert!(per_round < 3.0, "{per_round:.2} completions per echo round trip, want about 2");
}
