//! `appliance loadgen` end to end: the real binary against the bundled
//! echo and against servers run by this file that count what they
//! receive, so a load generator that miscounts fails here.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use appliance_tests::{run_to_end, Appliance};

/// The JSON summary line of a loadgen run's output.
fn summary(output: &str) -> serde_json::Value {
    let line = output.lines().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no JSON in:\n{output}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
}

fn loadgen(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["loadgen"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--json", "--no-pin"]);
    let (code, out) = run_to_end(&all);
    assert_eq!(code, Some(0), "loadgen {args:?} failed:\n{out}");
    summary(&out)
}

/// A TCP server that echoes and counts the bytes it received.
fn counting_echo() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let received = Arc::new(AtomicU64::new(0));
    let count = received.clone();
    std::thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            let count = count.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                    count.fetch_add(n as u64, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, received)
}

#[test]
fn tcp_rr_against_the_bundled_echo_counts_exactly() {
    let mut echo = Appliance::start(&["echo", "--listen", "127.0.0.1:0", "--shards", "2", "--no-pin"])
        .expect("start echo");
    let addr = echo.wait_for_addr("echo listening on").expect("echo address").to_string();
    let s = loadgen(&[
        "tcp-rr",
        "--target",
        &addr,
        "--connections",
        "7",
        "--requests",
        "3001",
        "--size",
        "100",
        "--shards",
        "2",
    ]);
    assert_eq!(s["ok"], 3001, "{s}");
    assert_eq!(s["errors"], 0, "{s}");
    assert_eq!(s["bytes_out"], 300_100, "{s}");
    assert_eq!(s["bytes_in"], 300_100, "{s}");
    assert!(s["latency_us"]["p99"].as_f64().expect("p99") > 0.0, "{s}");
    assert!(s["rate_per_s"].as_f64().expect("rate") > 0.0, "{s}");
}

#[test]
fn tcp_rr_sends_exactly_what_the_server_counts() {
    let (addr, received) = counting_echo();
    let s = loadgen(&[
        "tcp-rr",
        "--target",
        &addr.to_string(),
        "--connections",
        "5",
        "--requests",
        "997",
        "--size",
        "33",
        "--shards",
        "2",
    ]);
    assert_eq!(s["ok"], 997, "{s}");
    assert_eq!(received.load(Ordering::SeqCst), 997 * 33);
}

#[test]
fn fixed_rate_runs_at_the_rate_it_was_given() {
    let (addr, received) = counting_echo();
    // 400 requests at 2000/s take about 0.2 s; the exact count is checked,
    // the timing is only reported.
    let s = loadgen(&[
        "tcp-rr",
        "--target",
        &addr.to_string(),
        "--connections",
        "4",
        "--requests",
        "400",
        "--rate",
        "2000",
        "--size",
        "8",
        "--shards",
        "1",
    ]);
    assert_eq!(s["ok"], 400, "{s}");
    assert_eq!(received.load(Ordering::SeqCst), 400 * 8);
    assert_eq!(s["target_rate_per_s"], 2000.0);
}

/// An HTTP/1.1 server counting requests; it answers in two writes, so the
/// client has to put a response together from several reads. With `close`
/// it says `Connection: close` and closes after every response.
fn counting_http(close: bool) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let requests = Arc::new(AtomicU64::new(0));
    let count = requests.clone();
    std::thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            let count = count.clone();
            std::thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        count.fetch_add(1, Ordering::SeqCst);
                        let head: &[u8] = if close {
                            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhe"
                        } else {
                            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe"
                        };
                        if s.write_all(head).is_err() || s.write_all(b"llo").is_err() || close {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, requests)
}

#[test]
fn http_keep_alive_counts_requests_exactly() {
    http_requests_counted_exactly(false, "3", 500, "2");
}

/// `tcp-rr --http` against a server that counts what it answered (closing
/// after each response when `close`).
fn http_requests_counted_exactly(close: bool, connections: &str, requests: u64, shards: &str) {
    let (addr, answered) = counting_http(close);
    let n = requests.to_string();
    let s = loadgen(&[
        "tcp-rr",
        "--http",
        "--target",
        &addr.to_string(),
        "--connections",
        connections,
        "--requests",
        &n,
        "--shards",
        shards,
    ]);
    assert_eq!(s["ok"], requests, "{s}");
    assert_eq!(s["errors"], 0, "{s}");
    assert_eq!(answered.load(Ordering::SeqCst), requests);
}

#[test]
fn a_count_that_is_not_reached_fails_the_run() {
    // Nothing listens here: every connect is refused.
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").to_string();
    let (code, out) = run_to_end(&[
        "loadgen",
        "tcp-rr",
        "--target",
        &closed,
        "--connections",
        "1",
        "--requests",
        "10",
        "--shards",
        "1",
        "--no-pin",
        "--duration",
        "2s",
    ]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("0 of the 10 requests"), "{out}");
}

/// A UDP statsd receiver: counts lines and sums counter values per key
/// (`lg.c.<k>:<v>|c`).
struct StatsdReceiver {
    addr: SocketAddr,
    lines: Arc<AtomicU64>,
    counters: Arc<std::sync::Mutex<HashMap<String, u64>>>,
}

fn statsd_receiver() -> StatsdReceiver {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let addr = socket.local_addr().expect("addr");
    let lines = Arc::new(AtomicU64::new(0));
    let counters = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let (l, c) = (lines.clone(), counters.clone());
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            for line in text.split('\n') {
                l.fetch_add(1, Ordering::SeqCst);
                let Some((key, rest)) = line.split_once(':') else { continue };
                let mut fields = rest.split('|');
                let (Some(v), Some("c")) = (fields.next(), fields.next()) else { continue };
                let v: u64 = v.parse().expect("counter value");
                *c.lock().expect("lock").entry(key.to_owned()).or_insert(0) += v;
            }
        }
    });
    StatsdReceiver { addr, lines, counters }
}

impl StatsdReceiver {
    fn wait_for(&self, lines: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.lines.load(Ordering::SeqCst) < lines && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(self.lines.load(Ordering::SeqCst), lines, "lines received");
    }
}

#[test]
fn statsd_lines_are_counted_exactly() {
    let rx = statsd_receiver();
    // Paced (60k lines/s) so that loopback does not drop datagrams.
    let s = loadgen(&[
        "statsd",
        "--target",
        &rx.addr.to_string(),
        "--lines",
        "6007",
        "--per-packet",
        "7",
        "--keys",
        "50",
        "--sockets",
        "5",
        "--rate",
        "60000",
        "--shards",
        "2",
    ]);
    assert_eq!(s["ok"], 6007, "{s}");
    rx.wait_for(6007);
    let counters = rx.counters.lock().expect("lock");
    let sum: u64 = counters.values().sum();
    assert_eq!(s["counter_total_sent"], sum, "{s}");
    assert_eq!(s["counter_keys_sent"], counters.len() as u64, "{s}");
}

/// Runs loadgen with `--verify-graphite`, plays the aggregator: sums the
/// counters the receiver got and flushes them to loadgen's sink in two
/// intervals, with `off_by` added to one key. Returns the summary.
fn verify_with_fake_graphite(off_by: u64) -> serde_json::Value {
    let rx = statsd_receiver();
    let mut app = Appliance::start(&[
        "loadgen",
        "statsd",
        "--target",
        &rx.addr.to_string(),
        "--lines",
        "3000",
        "--per-packet",
        "10",
        "--keys",
        "40",
        "--rate",
        "50000",
        "--verify-graphite",
        "127.0.0.1:0",
        "--settle",
        "1s",
        "--json",
        "--shards",
        "1",
        "--no-pin",
    ])
    .expect("start loadgen");
    let sink = app.wait_for_addr("graphite sink listening on").expect("sink address");
    rx.wait_for(3000);
    let counters = rx.counters.lock().expect("lock").clone();
    let mut keys: Vec<_> = counters.keys().cloned().collect();
    keys.sort();
    for half in 0..2u64 {
        let mut conn = TcpStream::connect(sink).expect("connect to sink");
        let mut text = String::new();
        for key in &keys {
            let total = counters[key] + if key == &keys[0] { off_by } else { 0 };
            let part = if half == 0 { total / 2 } else { total - total / 2 };
            text += &format!("stats.counters.{key}.count {part} 1700000000\n");
            text += &format!("stats.counters.{key}.rate {} 1700000000\n", part as f64 / 10.0);
        }
        text += "stats.timers.lg.ms.1.count 12 1700000000\nstatsd.numStats 3 1700000000\n";
        conn.write_all(text.as_bytes()).expect("flush to sink");
    }
    let line = app.wait_for_line("\"mode\"").expect("summary");
    assert_eq!(app.wait_exit(Duration::from_secs(10)).and_then(|s| s.code()), Some(0), "{}", app.output());
    summary(&line)
}

#[test]
fn verify_graphite_accepts_exact_totals() {
    let s = verify_with_fake_graphite(0);
    let v = &s["verify"];
    assert_eq!(v["exact_fraction"], 1.0, "{s}");
    assert_eq!(v["counter_keys"], 40, "{s}");
    assert_eq!(v["missing_keys"], 0, "{s}");
}

#[test]
fn verify_graphite_notices_one_key_off_by_one() {
    let s = verify_with_fake_graphite(1);
    let v = &s["verify"];
    assert_eq!(v["exact_keys"], 39, "{s}");
    assert!(v["exact_fraction"].as_f64().expect("fraction") < 1.0, "{s}");
}

#[test]
fn tcp_stream_bytes_match_what_the_server_received() {
    let (addr, received) = counting_echo();
    let s = loadgen(&[
        "tcp-stream",
        "--target",
        &addr.to_string(),
        "--connections",
        "2",
        "--size",
        "8192",
        "--duration",
        "300ms",
        "--shards",
        "2",
    ]);
    let sent = s["bytes_out"].as_u64().expect("bytes_out");
    assert!(sent > 0, "{s}");
    assert_eq!(received.load(Ordering::SeqCst), sent, "{s}");
    // Everything echoed came back before the run ended.
    assert_eq!(s["bytes_in"], sent, "{s}");
}

#[test]
fn connect_counts_every_accepted_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            count.fetch_add(1, Ordering::SeqCst);
            // One 4-byte round trip per connection.
            let mut buf = [0u8; 4];
            if s.read_exact(&mut buf).is_ok() {
                let _ = s.write_all(&buf);
            }
        }
    });
    let s = loadgen(&[
        "connect",
        "--target",
        &addr.to_string(),
        "--connections",
        "3",
        "--requests",
        "301",
        "--size",
        "4",
        "--shards",
        "1",
    ]);
    assert_eq!(s["ok"], 301, "{s}");
    assert_eq!(accepted.load(Ordering::SeqCst), 301);
}

#[test]
fn udp_echo_and_blast_count_exactly() {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let addr = socket.local_addr().expect("addr").to_string();
    let received = Arc::new(AtomicU64::new(0));
    let count = received.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    let s = loadgen(&[
        "udp",
        "--target",
        &addr,
        "--sockets",
        "4",
        "--requests",
        "800",
        "--echo",
        "--shards",
        "2",
    ]);
    assert_eq!(s["ok"], 800, "{s}");
    assert_eq!(s["errors"], 0, "{s}");
    assert_eq!(received.load(Ordering::SeqCst), 800);
    // Without --echo, paced so that loopback keeps every datagram.
    let s = loadgen(&["udp", "--target", &addr, "--sockets", "3", "--requests", "500", "--rate", "20000"]);
    assert_eq!(s["ok"], 500, "{s}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while received.load(Ordering::SeqCst) < 1300 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(received.load(Ordering::SeqCst), 1300);
}

#[test]
fn http_connection_close_reconnects_and_still_counts_exactly() {
    http_requests_counted_exactly(true, "2", 120, "1");
}

#[test]
fn tcp_rr_through_appliance_forward_counts_exactly() {
    let (upstream, received) = counting_echo();
    let mut fwd = Appliance::start(&[
        "forward",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream.to_string(),
        "--shards",
        "2",
        "--no-pin",
        "--health-interval",
        "0",
    ])
    .expect("start forward");
    let addr = fwd.wait_for_addr("forward listening on").expect("forward address").to_string();
    let s = loadgen(&[
        "tcp-rr",
        "--target",
        &addr,
        "--connections",
        "6",
        "--requests",
        "1200",
        "--size",
        "50",
        "--shards",
        "2",
    ]);
    assert_eq!(s["ok"], 1200, "{s}");
    assert_eq!(received.load(Ordering::SeqCst), 1200 * 50);
}
