//! Active checks that say something and expect an answer (`--health-send`,
//! `--health-expect`), against a real `redis-server`: an upstream that
//! accepts connections but does not answer `PING` with `+PONG` is taken
//! out of the rotation, where a bare connect check would keep it in.
//!
//! Skipped with a message when `redis-server` is not installed (`make
//! test` installs it best effort).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use appliance_tests::upstream::{echo, Upstream};
use appliance_tests::{http_get, Appliance};

/// A `redis-server` on a free loopback port, killed on drop.
struct Redis {
    child: Child,
    addr: SocketAddr,
}

impl Redis {
    fn start() -> Option<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut redis = Redis { child, addr };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if ping(addr).as_deref() == Some("+PONG") {
                return Some(redis);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = redis.child.kill();
        None
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `PING` and returns the first reply line.
fn ping(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"PING\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines().next().map(str::to_string)
}

fn upstream_states(admin: SocketAddr) -> Vec<(String, bool)> {
    let (_, body) = http_get(admin, "/status").expect("status");
    let json: serde_json::Value = serde_json::from_str(&body).expect("status json");
    json["services"][0]["upstreams"]
        .as_array()
        .map(|ups| {
            ups.iter()
                .map(|u| {
                    (u["addr"].as_str().unwrap_or_default().to_string(), u["up"].as_bool().unwrap_or(false))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_redis_check_takes_out_an_upstream_that_does_not_answer_pong() {
    let Some(redis) = Redis::start() else {
        eprintln!("skipped: redis-server is not installed or did not start");
        return;
    };
    // Accepts and echoes: "PING\r\n" comes back, never "+PONG".
    let impostor = Upstream::start(echo, 0);
    let (redis_s, impostor_s) = (redis.addr.to_string(), impostor.addr.to_string());
    let mut app = Appliance::start(&[
        "forward",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &redis_s,
        "--upstream",
        &impostor_s,
        "--shards",
        "2",
        "--no-pin",
        "--admin",
        "127.0.0.1:0",
        "--health-interval",
        "100ms",
        "--health-send",
        r"PING\r\n",
        "--health-expect",
        "+PONG",
    ])
    .expect("start forward");
    let addr = app.wait_for_addr("forward listening on").expect("listening");
    let admin = app.wait_for_addr("admin listening on").expect("admin");
    // fall = 3 checks at 100 ms.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut states = upstream_states(admin);
    while Instant::now() < deadline && !states.iter().any(|(a, up)| a == &impostor_s && !up) {
        std::thread::sleep(Duration::from_millis(100));
        states = upstream_states(admin);
    }
    assert!(
        states.contains(&(impostor_s.clone(), false)),
        "the impostor is down: {states:?}\n{}",
        app.output()
    );
    assert!(states.contains(&(redis_s.clone(), true)), "redis stays up: {states:?}");
    // Every connection through the forward now reaches redis.
    for i in 0..20 {
        assert_eq!(ping(addr).as_deref(), Some("+PONG"), "connection {i} reached redis");
    }
}

/// Escapes and misuse are refused before anything binds, naming the flag.
#[test]
fn bad_health_exchanges_are_refused_by_name() {
    for (extra, wanted) in [
        (vec!["--health-send", r"PING\q"], "--health-send"),
        (vec!["--health-expect", ""], "--health-expect"),
        (vec!["--health-interval", "0", "--health-expect", "+PONG"], "--health-expect"),
    ] {
        let mut args = vec!["forward", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--no-pin"];
        args.extend(extra.iter().copied());
        let (code, out) = appliance_tests::run_to_end(&args);
        assert_ne!(code, Some(0), "{extra:?} must be refused: {out}");
        assert!(out.contains(wanted), "{extra:?}: the error names {wanted}: {out}");
    }
}
