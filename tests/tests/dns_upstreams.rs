//! Upstreams given by DNS name (docs/operations.md, "Upstreams by DNS
//! name"): resolved through `[dns] nameservers` (here a DNS server this
//! file runs on loopback, whose answers change mid-test), each address an
//! upstream, re-resolved on the record's TTL; a failing lookup keeps the
//! last answer and is counted.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use appliance_tests::{http_get, metric, run_to_end, Appliance};

/// What the test DNS server answers for every A query.
#[derive(Debug, Clone)]
enum Answer {
    /// These addresses, TTL 1 s.
    Addrs(Vec<Ipv4Addr>),
    /// SERVFAIL.
    Fail,
}

/// A DNS server on loopback UDP: A queries get the current [`Answer`],
/// anything else an empty answer.
fn dns_server(answer: Arc<Mutex<Answer>>) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = socket.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if let Some(reply) = respond(&buf[..n], &answer.lock().expect("answer").clone()) {
                let _ = socket.send_to(&reply, from);
            }
        }
    });
    addr
}

fn respond(query: &[u8], answer: &Answer) -> Option<Vec<u8>> {
    // Header (12 bytes), then one question: name labels, type, class.
    let mut at = 12;
    while *query.get(at)? != 0 {
        at += 1 + usize::from(query[at]);
    }
    let qtype = u16::from_be_bytes([*query.get(at + 1)?, *query.get(at + 2)?]);
    let question = &query[12..at + 5];
    let (rcode, addrs) = match answer {
        Answer::Fail => (2u8, Vec::new()),
        Answer::Addrs(a) if qtype == 1 => (0, a.clone()),
        Answer::Addrs(_) => (0, Vec::new()),
    };
    let mut r = Vec::new();
    r.extend_from_slice(&query[..2]);
    r.extend_from_slice(&[0x81, 0x80 | rcode]);
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(question);
    for ip in addrs {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        r.extend_from_slice(&1u32.to_be_bytes());
        r.extend_from_slice(&4u16.to_be_bytes());
        r.extend_from_slice(&ip.octets());
    }
    Some(r)
}

/// A server on `ip:port` greeting each connection with `name`.
fn named_server(ip: Ipv4Addr, port: u16, name: &'static str) -> u16 {
    let listener = TcpListener::bind((ip, port)).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().map_while(Result::ok) {
            let _ = conn.write_all(name.as_bytes());
        }
    });
    port
}

fn reached(port: u16, n: usize) -> HashSet<String> {
    (0..n)
        .filter_map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
            let mut name = [0u8; 1];
            s.read_exact(&mut name).ok()?;
            Some(String::from_utf8_lossy(&name).into_owned())
        })
        .collect()
}

fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn set(answer: &Arc<Mutex<Answer>>, a: Answer) {
    *answer.lock().expect("answer") = a;
}

#[test]
fn names_follow_their_answers_and_keep_the_last_one_on_failure() {
    let (two, three) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
    let port = named_server(two, 0, "A");
    named_server(three, port, "B");
    let answer = Arc::new(Mutex::new(Answer::Addrs(vec![two])));
    let ns = dns_server(answer.clone());
    let dir = std::env::temp_dir().join(format!("appliance-dns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("appliance.toml");
    let text = format!(
        "[runtime]\nshards = 2\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [dns]\nnameservers = [\"{ns}\"]\nmin_ttl = \"200ms\"\nmax_ttl = \"2s\"\ntimeout = \"500ms\"\n\
         [[forward]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"web.test:{port}\"]\n"
    );
    std::fs::write(&path, &text).expect("config");
    let cfg = path.to_str().expect("utf-8");
    let mut app = Appliance::start(&["run", "--config", cfg, "--no-pin"]).expect("start");
    let fwd = app.wait_for_addr("forward listening on").expect("forward").port();
    let admin = app.wait_for_addr("admin listening on").expect("admin");
    assert_eq!(reached(fwd, 10), HashSet::from(["A".to_string()]));
    let status = || -> serde_json::Value {
        serde_json::from_str(&http_get(admin, "/status").expect("status").1).expect("json")
    };
    let s = status();
    assert_eq!(s["dns"][0]["name"], format!("web.test:{port}"), "{s}");
    let upstream_names: Vec<String> = s["services"][0]["upstreams"]
        .as_array()
        .expect("upstreams")
        .iter()
        .map(|u| u["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(upstream_names, [format!("web.test:{port}/127.0.0.2")]);

    set(&answer, Answer::Addrs(vec![two, three]));
    eventually("both addresses serve", || reached(fwd, 20).len() == 2);
    set(&answer, Answer::Addrs(vec![three]));
    eventually("only the new address serves", || reached(fwd, 20) == HashSet::from(["B".to_string()]));
    let s = status();
    assert_eq!(s["dns"][0]["addresses"], serde_json::json!(["127.0.0.3"]), "{s}");

    set(&answer, Answer::Fail);
    let failures = || {
        let (_, text) = http_get(admin, "/metrics").expect("metrics");
        let series = format!("appliance_forward_dns_lookups_total{{service=\"web\",name=\"web.test:{port}\",result=\"error\"}}");
        metric(&text, &series).unwrap_or(0.0)
    };
    eventually("failed lookups are counted", || failures() >= 2.0);
    assert_eq!(reached(fwd, 10), HashSet::from(["B".to_string()]), "the last answer stays");
    assert!(status()["dns"][0]["last_error"].is_string());

    // A name that does not resolve at start is a configuration error.
    let (code, out) = run_to_end(&["check", "--config", cfg]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("cannot resolve") && out.contains("web.test"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
