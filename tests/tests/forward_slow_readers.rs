//! `appliance forward` with clients that stop reading: they must not hold
//! the shard's relay buffers and stall everyone else's connections.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use appliance_tests::upstream::Upstream;
use appliance_tests::{http_get, metric, Appliance};

/// First byte `F`: writes without end (a download); anything else: echo.
fn flood_or_echo(_: usize, mut s: TcpStream) {
    let mut first = [0u8; 1];
    if s.read_exact(&mut first).is_err() {
        return;
    }
    if first[0] == b'F' {
        let chunk = vec![0x5a; 64 * 1024];
        while s.write_all(&chunk).is_ok() {}
        return;
    }
    if s.write_all(&first).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 || s.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

#[test]
fn stalled_downloads_do_not_stall_other_connections() {
    let up = Upstream::start(flood_or_echo, 0);
    let upstream = up.addr.to_string();
    // One shard with 4 relay buffers (and so 4 x 64 KiB for copies), and
    // 6 stalled downloads: without copies they would hold all 4 buffers.
    let mut args = vec!["forward", "--listen", "127.0.0.1:0", "--upstream", &upstream, "--shards", "1"];
    args.extend_from_slice(&["--no-pin", "--health-interval", "0", "--admin", "127.0.0.1:0"]);
    args.extend_from_slice(&["--buffers", "4", "--buffer-size", "65536"]);
    let mut app = Appliance::start(&args).expect("start");
    let addr: SocketAddr = app.wait_for_addr("forward listening on").expect("listening");
    let admin: SocketAddr = app.wait_for_addr("admin listening on").expect("admin");
    let stalled: Vec<TcpStream> = (0..6)
        .map(|_| {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.write_all(b"F").expect("ask for a download");
            s
        })
        .collect();
    // Let every download fill its socket buffers and stall.
    std::thread::sleep(Duration::from_millis(700));
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let start = Instant::now();
    for round in 0..20u8 {
        let msg = [b'e', round, round, round];
        c.write_all(&msg).expect("send");
        let mut back = [0u8; 4];
        if let Err(e) = c.read_exact(&mut back) {
            panic!("echo round {round} through the proxy: {e} (relay buffers held by stalled readers?)");
        }
        assert_eq!(back, msg);
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    // Six floods on four buffers ran the group dry: the receives that found
    // it empty waited, and that backpressure is counted (docs/operations.md,
    // the signal to raise `buffers`).
    let (_, text) = http_get(admin, "/metrics").expect("scrape");
    let exhausted = "appliance_netstack_relay_buffers_exhausted_total{service=\"forward\",shard=\"all\"}";
    assert!(metric(&text, exhausted).is_some_and(|n| n > 0.0), "{exhausted} in:\n{text}");
    // Each stalled download waited at least once; counted when it ends.
    drop(stalled);
    let series = "appliance_forward_slow_reader_sends_total{service=\"forward\",shard=\"all\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = http_get(admin, "/metrics").expect("scrape");
        let waited = metric(&text, series).unwrap_or(0.0);
        if waited >= 6.0 {
            break;
        }
        assert!(Instant::now() < deadline, "{series} = {waited}, want >= 6:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The copy budget is each service's own: one forward service's stalled
/// readers (here holding far more copies than the other's whole budget)
/// leave the other service its copies, so its stalled readers still give
/// their buffers back and its other connections go on. (With one budget
/// per shard shared by every service, the small service found it spent
/// by the big one, its stalled downloads kept all four buffers, and its
/// echo stalled.)
#[test]
fn each_service_has_its_own_copy_budget() {
    let up = Upstream::start(flood_or_echo, 0);
    let dir = std::env::temp_dir().join(format!("appliance-copy-budget-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("appliance.toml");
    let forward = |name: &str, buffers: u32| {
        format!(
            "[[forward]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"{}\"]\n\
             health_interval = \"0\"\nbuffers = {buffers}\nbuffer_size = 65536\n",
            up.addr
        )
    };
    let text = format!(
        "[runtime]\nshards = 1\nno_pin = true\n[admin]\nlisten = \"127.0.0.1:0\"\n{}{}",
        forward("big", 64),
        forward("small", 4)
    );
    std::fs::write(&path, text).expect("write config");
    let mut app = Appliance::start(&["run", "--config", path.to_str().expect("utf8")]).expect("start");
    let big: SocketAddr = app.wait_for_addr("forward listening on").expect("big");
    let small: SocketAddr = app.wait_for_addr("forward listening on").expect("small");
    let stall = |addr: SocketAddr, n: usize| -> Vec<TcpStream> {
        (0..n)
            .map(|_| {
                let mut s = TcpStream::connect(addr).expect("connect");
                s.write_all(b"F").expect("ask for a download");
                s
            })
            .collect()
    };
    // Sixteen stalled downloads on the big service: ~1 MiB of copies, four
    // times the small service's whole budget (4 x 64 KiB).
    let _big_stalled = stall(big, 16);
    std::thread::sleep(Duration::from_millis(700));
    let _small_stalled = stall(small, 6);
    std::thread::sleep(Duration::from_millis(700));
    let mut c = TcpStream::connect(small).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    for round in 0..10u8 {
        let msg = [b'e', round, round, round];
        c.write_all(&msg).expect("send");
        let mut back = [0u8; 4];
        if let Err(e) = c.read_exact(&mut back) {
            panic!("echo round {round} on the small service: {e} (its budget spent by the big one?)");
        }
        assert_eq!(back, msg);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
