//! `steering = "cpu"`: each connection and datagram goes to the shard
//! pinned to the CPU that received it. On loopback the receive work runs
//! on the sender's CPU, so a sender pinned to CPU c is served by the shard
//! on CPU c: every datagram and connection, from any number of source
//! ports. With the default hash the same traffic spreads over both shards
//! (the control, which shows the test can tell the two apart).

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use appliance_tests::{http_get, metric, Appliance};

/// Datagrams and connections sent from each CPU, each from a new source port.
const SENDS: usize = 40;

struct Running {
    app: Appliance,
    udp: SocketAddr,
    tcp: SocketAddr,
    admin: SocketAddr,
}

fn start(steering: &str) -> Running {
    let dir = std::env::temp_dir().join(format!("appliance-steering-{}-{steering}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("appliance.toml");
    let text = format!(
        "[runtime]\ncpus = \"0,1\"\nsteering = \"{steering}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[aggregate]]\nname = \"statsd\"\nlisten_udp = \"127.0.0.1:0\"\nflush_interval = \"10s\"\n\
         flush_stdout = true\n\
         [[forward]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"127.0.0.1:9\"]\n\
         health_interval = \"0\"\nmax_conns = 1000\n"
    );
    std::fs::write(&path, text).expect("write config");
    let mut app = Appliance::start(&["run", "--config", path.to_str().expect("utf8")]).expect("run");
    // Startup lines come in the order of kinds: forward, then aggregate.
    let tcp = app.wait_for_addr("forward listening on").expect("forward");
    let udp = app.wait_for_addr("aggregate listening on udp").expect("aggregate");
    let admin = app.wait_for_addr("admin listening on").expect("admin");
    Running { app, udp, tcp, admin }
}

/// From a thread pinned to `cpu`: `SENDS` datagrams and connections, each
/// from a socket of its own.
fn send_from(cpu: usize, r: &Running) {
    let (udp, tcp) = (r.udp, r.tcp);
    std::thread::spawn(move || {
        bench_support::try_pin_to(cpu).expect("pin the sender");
        for i in 0..SENDS {
            let s = UdpSocket::bind("127.0.0.1:0").expect("sender");
            s.send_to(format!("k{i}:1|c").as_bytes(), udp).expect("send");
            // Accepted, then closed at once by the forward (no upstream
            // listens on port 9): the accept is what counts here, and the
            // forward's reset may reach the socket before `connect` looks.
            match TcpStream::connect_timeout(&tcp, Duration::from_secs(5)) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                Err(e) => panic!("connect {i} from cpu {cpu}: {e}"),
            }
        }
    })
    .join()
    .expect("sender thread");
}

/// Per-shard `[datagrams, accepted]` once the totals reach `want`.
fn per_shard(r: &Running, want: f64) -> [[f64; 2]; 2] {
    let series =
        |family: &str, svc: &str, shard: &str| format!("{family}{{service=\"{svc}\",shard=\"{shard}\"}}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = http_get(r.admin, "/metrics").expect("metrics");
        let get =
            |family: &str, svc: &str, shard: &str| metric(&text, &series(family, svc, shard)).unwrap_or(0.0);
        let dgrams = "appliance_aggregate_datagrams_total";
        let accepted = "appliance_forward_accepted_total";
        let done = get(dgrams, "statsd", "all") >= want && get(accepted, "web", "all") >= want;
        if done || std::time::Instant::now() > deadline {
            return [0, 1].map(|s| {
                let s = s.to_string();
                [get(dgrams, "statsd", &s), get(accepted, "web", &s)]
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn cpu_steering_serves_each_sender_on_its_cpus_shard() {
    let r = start("cpu");
    let n = SENDS as f64;
    send_from(1, &r);
    assert_eq!(
        per_shard(&r, n),
        [[0.0, 0.0], [n, n]],
        "[datagrams, accepted] of shards 0 and 1, sender on cpu 1"
    );
    send_from(0, &r);
    assert_eq!(per_shard(&r, 2.0 * n), [[n, n], [n, n]], "then a sender on cpu 0");
    drop(r.app);
}

#[test]
fn hash_steering_spreads_the_same_traffic() {
    let r = start("hash");
    send_from(1, &r);
    let got = per_shard(&r, SENDS as f64);
    for (what, i) in [("datagrams", 0), ("connections", 1)] {
        assert!(
            got[0][i] > 0.0 && got[1][i] > 0.0,
            "{what} from {SENDS} source ports on both shards: {got:?}"
        );
    }
    drop(r.app);
}

#[test]
fn cpu_steering_needs_pinned_shards() {
    let out = std::process::Command::new(appliance_tests::binary())
        .args([
            "forward",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:9",
            "--no-pin",
            "--steering",
            "cpu",
        ])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--steering") && err.contains("not pinned"), "{err}");
}
