//! Shard groups: each service runs on the shards its table names
//! (`shards = "0"`), so one service's load cannot take another's cores.
//! The real binary with a forward on shard 0 and an aggregator (and the
//! echo upstream) on shard 1: each serves exactly, and the per-shard
//! counters show no work on the other group's shard.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use appliance_tests::graphite::Sink;
use appliance_tests::{http_get, metric, Appliance};

fn config(graphite: std::net::SocketAddr, forward_shards: &str) -> String {
    format!(
        "[runtime]\nshards = 2\nno_pin = true\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[echo]]\nname = \"echo\"\nlisten = \"127.0.0.1:0\"\nshards = \"1\"\n\
         [[aggregate]]\nname = \"statsd\"\nlisten_udp = \"127.0.0.1:0\"\nflush_interval = \"200ms\"\n\
         graphite = \"{graphite}\"\nshards = \"1\"\n\
         [[forward]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"ECHO\"]\n\
         health_interval = \"0\"\nshards = \"{forward_shards}\"\n"
    )
}

fn temp_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("appliance-groups-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn services_run_on_their_own_shards() {
    let sink = Sink::start();
    // The forward needs the echo's port: start the echo first, alone.
    let echo_port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let text = config(sink.addr, "0").replace("ECHO", &echo_port.to_string()).replace(
        "[[echo]]\nname = \"echo\"\nlisten = \"127.0.0.1:0\"",
        &format!("[[echo]]\nname = \"echo\"\nlisten = \"{echo_port}\""),
    );
    let path = temp_config("groups.toml", &text);
    let mut app = Appliance::start(&["run", "--config", path.to_str().expect("utf8")]).expect("run");
    // Startup lines come echo, forward, aggregate, admin.
    let line = app.wait_for_line("forward listening on").expect("forward");
    assert!(line.contains("on shards 0 of 2"), "startup says where it runs: {line}");
    let fwd: std::net::SocketAddr = line.split_whitespace().find_map(|w| w.parse().ok()).expect("an address");
    let udp = app.wait_for_addr("aggregate listening on udp").expect("aggregate");
    let admin = app.wait_for_addr("admin listening on").expect("admin");

    for i in 0..20u32 {
        let mut c = TcpStream::connect(fwd).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        c.write_all(&i.to_be_bytes()).expect("write");
        let mut back = [0u8; 4];
        c.read_exact(&mut back).expect("echoed through the forward");
        assert_eq!(back, i.to_be_bytes());
    }
    let senders: Vec<UdpSocket> = (0..8).map(|_| UdpSocket::bind("127.0.0.1:0").expect("sender")).collect();
    for i in 0..100 {
        senders[i % 8].send_to(b"groups.hits:1|c", udp).expect("send");
    }
    sink.eventually("every line counted once", |s| s.sum("stats.counters.groups.hits.count") == 100.0);

    let (_, text) = http_get(admin, "/metrics").expect("metrics");
    let series = |name: &str, svc: &str, shard: &str| {
        metric(&text, &format!("{name}{{service=\"{svc}\",shard=\"{shard}\"}}")).unwrap_or(-1.0)
    };
    let accepted = "appliance_forward_accepted_total";
    assert_eq!(series(accepted, "web", "0"), 20.0, "the forward's shard took every connection");
    assert_eq!(series(accepted, "web", "1"), 0.0, "none on the other group's shard");
    let datagrams = "appliance_aggregate_datagrams_total";
    assert_eq!(series(datagrams, "statsd", "1"), 100.0, "the aggregator's shard took every datagram");
    assert_eq!(series(datagrams, "statsd", "0"), 0.0, "none on the forward's shard");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_group_naming_a_shard_the_runtime_lacks_is_refused() {
    let path = temp_config(
        "bad-group.toml",
        &config("127.0.0.1:2003".parse().unwrap(), "0-5").replace("ECHO", "127.0.0.1:7000"),
    );
    for verb in ["check", "run"] {
        let (code, out) = appliance_tests::run_to_end(&[verb, "--config", path.to_str().expect("utf8")]);
        assert_eq!(code, Some(2), "{out}");
        assert!(out.contains("forward[0].shards") && out.contains("shard 2 does not exist"), "{out}");
    }
    let _ = std::fs::remove_file(&path);
}
