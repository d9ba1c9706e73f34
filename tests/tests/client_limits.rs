//! Per-client limits on forward: a cap on connections open per client and
//! a new-connection rate per client, exact across shards because the
//! listening group is steered by client address (every connection of one
//! client reaches one shard's table). Clients are loopback addresses
//! (127.0.0.x), each connecting from many ports.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use appliance_tests::upstream::{echo, Upstream};
use appliance_tests::{http_get, metric, Appliance};

fn start(extra: &[&str]) -> (Appliance, SocketAddr, SocketAddr) {
    let up = Upstream::start(echo, 0);
    let upstream = up.addr.to_string();
    std::mem::forget(up); // serves for the test process's life
    let mut args = vec![
        "forward",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream,
        "--shards",
        "2",
        "--no-pin",
        "--health-interval",
        "0",
        "--admin",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let mut app = Appliance::start(&args).expect("start");
    let addr = app.wait_for_addr("forward listening on").expect("listening");
    let admin = app.wait_for_addr("admin listening on").expect("admin");
    (app, addr, admin)
}

/// A connection from `client` that gets an echo back: relayed (`Some`),
/// or refused (`None`: reset or closed at once).
fn relayed(client: Ipv4Addr, to: SocketAddr) -> Option<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    s.bind(&SocketAddr::from((client, 0)).into()).expect("bind the client address");
    s.connect_timeout(&to.into(), Duration::from_secs(3)).ok()?;
    let mut s = TcpStream::from(s);
    s.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    s.write_all(b"x").ok()?;
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(1)).then_some(s)
}

fn refused(admin: SocketAddr, reason: &str) -> f64 {
    let (_, text) = http_get(admin, "/metrics").expect("metrics");
    let series =
        format!("appliance_forward_refused_total{{service=\"forward\",reason=\"{reason}\",shard=\"all\"}}");
    metric(&text, &series).unwrap_or(f64::NAN)
}

#[test]
fn a_client_gets_exactly_its_cap_across_shards() {
    let (_app, addr, admin) = start(&["--max-conns-per-client", "5"]);
    let heavy = Ipv4Addr::new(127, 0, 0, 2);
    let held: Vec<TcpStream> = (0..12).filter_map(|_| relayed(heavy, addr)).collect();
    assert_eq!(held.len(), 5, "five of twelve from one client, whatever shard each port hashed to");
    assert_eq!(refused(admin, "client_conns"), 7.0);
    for i in 3..6 {
        assert!(relayed(Ipv4Addr::new(127, 0, 0, i), addr).is_some(), "another client is not limited by it");
    }
    drop(held);
    // Closed connections give their slots back.
    let again = (0..50).find_map(|_| {
        std::thread::sleep(Duration::from_millis(20));
        relayed(heavy, addr)
    });
    assert!(again.is_some(), "a slot came back once the client closed its connections");
}

#[test]
fn a_client_gets_its_burst_then_its_rate() {
    let (_app, addr, admin) = start(&["--client-rate", "2", "--client-burst", "4"]);
    let client = Ipv4Addr::new(127, 0, 0, 7);
    let started = std::time::Instant::now();
    let admitted = (0..20).filter(|_| relayed(client, addr).is_some()).count();
    let elapsed = started.elapsed().as_secs_f64();
    // The burst, plus what two tokens a second added meanwhile.
    let most = 4 + (elapsed * 2.0).ceil() as usize;
    assert!((4..=most).contains(&admitted), "{admitted} admitted in {elapsed:.2} s");
    assert_eq!(refused(admin, "client_rate"), (20 - admitted) as f64);
}

#[test]
fn client_limits_conflict_with_cpu_steering_and_accept_proxy() {
    let run = |extra: &[&str]| {
        let mut args =
            vec!["forward", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--shards", "1"];
        args.extend_from_slice(extra);
        appliance_tests::run_to_end(&args)
    };
    let (code, out) = run(&["--max-conns-per-client", "3", "--accept-proxy"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("--max-conns-per-client") && out.contains("PROXY"), "{out}");
    let (code, out) = run(&["--client-rate", "3", "--steering", "cpu", "--cpus", "0"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("--steering") && out.contains("per-client"), "{out}");
}
