//! Binary upgrades (docs/operations.md, "Upgrading the binary"): a new
//! process started with `--upgrade` takes the running one's listening
//! sockets over the upgrade socket, serves, and the old one drains. Under
//! load, nothing is refused, reset or lost; an upgrade that fails leaves
//! the old process serving.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use appliance_tests::{http_get, run_to_end, Appliance};

/// A directory of its own for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("appliance-upgrade-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A forward on `port` to `upstream`, an admin endpoint on `admin`, the
/// upgrade socket in `dir`; written to `dir/appliance.toml`.
fn config(dir: &Path, port: u16, admin: u16, upstream: SocketAddr) -> PathBuf {
    let text = format!(
        "[runtime]\nshards = 2\ngrace = \"60s\"\nupgrade_socket = \"{}\"\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\n\
         [[forward]]\nname = \"web\"\nlisten = \"127.0.0.1:{port}\"\nupstreams = [\"{upstream}\"]\n",
        dir.join("upgrade.sock").display()
    );
    let path = dir.join("appliance.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// The bundled echo service, as the forward's upstream (never upgraded).
fn echo() -> (Appliance, SocketAddr) {
    let mut up =
        Appliance::start(&["echo", "--listen", "127.0.0.1:0", "--shards", "1", "--no-pin"]).expect("echo");
    let addr = up.wait_for_addr("echo listening on").expect("echo address");
    (up, addr)
}

/// `appliance run --config PATH EXTRA...`, waited for until it serves.
fn run(config: &Path, extra: &[&str]) -> Appliance {
    let mut args = vec!["run", "--config", config.to_str().expect("utf-8"), "--no-pin"];
    args.extend_from_slice(extra);
    let mut app = Appliance::start(&args).expect("start");
    app.wait_for_line("forward listening on").expect("serving");
    app
}

/// Upgrades to a new process and waits until the old one says it drains.
fn upgrade(config: &Path, old: &mut Appliance, extra: &[&str]) -> Appliance {
    let mut args = vec!["--upgrade"];
    args.extend_from_slice(extra);
    let mut new = run(config, &args);
    new.wait_for_line("is draining; this process serves").expect("the old process hands over");
    assert!(old.printed("serves now; draining"), "{}", old.output());
    new
}

/// One echo round trip through the forward.
fn round_trip(port: u16) -> Result<(), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    s.write_all(b"ping\n").map_err(|e| format!("write: {e}"))?;
    let mut got = [0u8; 5];
    s.read_exact(&mut got).map_err(|e| format!("read: {e}"))?;
    if &got == b"ping\n" {
        Ok(())
    } else {
        Err(format!("echoed {got:?}"))
    }
}

/// The JSON summary of a loadgen run.
fn loadgen(args: Vec<String>) -> serde_json::Value {
    let mut all: Vec<&str> = vec!["loadgen"];
    all.extend(args.iter().map(String::as_str));
    all.extend_from_slice(&["--json", "--no-pin", "--shards", "1"]);
    let (code, out) = run_to_end(&all);
    assert_eq!(code, Some(0), "loadgen {args:?} failed:\n{out}");
    let line = out.lines().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no JSON in:\n{out}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
}

fn status(admin: u16) -> serde_json::Value {
    let (code, body) = http_get(([127, 0, 0, 1], admin).into(), "/status").expect("/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status JSON")
}

/// The promise of the feature: three upgrades (the first from 1 shard to
/// 2, so an inherited group also grows) while `loadgen connect` (a new
/// connection and an echo round trip each) and `loadgen tcp-rr` (long
/// connections) run at fixed rates through the forward. Not one connect is
/// refused, not one connection reset, every request answered byte for
/// byte; the old processes finish their connections and exit by
/// themselves; the last one serves on and hands its socket file back at
/// exit.
#[test]
fn three_upgrades_under_load_refuse_and_lose_nothing() {
    let dir = scratch("load");
    let (_up, upstream) = echo();
    let (port, admin) = (appliance_tests::free_port(), appliance_tests::free_port());
    let cfg = config(&dir, port, admin, upstream);
    let mut procs = vec![run(&cfg, &["--shards", "1"])];
    let target = format!("127.0.0.1:{port}");
    let secs = 12;
    let connects = {
        let target = target.clone();
        std::thread::spawn(move || {
            let args =
                ["connect", "--target", &target, "--rate", "300", "--connections", "8", "--size", "64"];
            let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            args.extend(["--duration".into(), format!("{secs}s")]);
            loadgen(args)
        })
    };
    let requests = {
        let target = target.clone();
        std::thread::spawn(move || {
            let args =
                ["tcp-rr", "--target", &target, "--rate", "1000", "--connections", "16", "--size", "64"];
            let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            args.extend(["--duration".into(), format!("{secs}s")]);
            loadgen(args)
        })
    };
    let started = Instant::now();
    for at in [2, 5, 8] {
        std::thread::sleep(Duration::from_secs(at).saturating_sub(started.elapsed()));
        let old = procs.last_mut().expect("a process");
        let old_pid = old.pid();
        let new = upgrade(&cfg, old, &[]);
        let s = status(admin);
        assert_eq!(s["pid"].as_u64(), new.pid().map(u64::from), "the admin endpoint moved too");
        assert_eq!(s["upgraded_from"].as_u64(), old_pid.map(u64::from));
        procs.push(new);
    }
    let mut current = procs.pop().expect("the last process");
    let mut olds = procs;
    let (c, r) = (connects.join().expect("connect load"), requests.join().expect("rr load"));
    for (what, s, least) in [("connect", &c, 300 * secs * 9 / 10), ("tcp-rr", &r, 1000 * secs * 9 / 10)] {
        assert_eq!(s["errors"], 0, "{what}: {s}");
        assert!(s["ok"].as_u64().unwrap_or(0) >= least, "{what}: fewer than {least}: {s}");
        assert_eq!(s["bytes_in"], s["bytes_out"], "{what}: every byte came back: {s}");
    }
    // Their connections closed with the load: each old process is done.
    for old in &mut olds {
        let status = old.wait_exit(Duration::from_secs(15)).expect("an old process drains and exits");
        assert!(status.success(), "{status:?}: {}", old.output());
    }
    round_trip(port).expect("the last process serves");
    assert!(dir.join("upgrade.sock").exists());
    current.signal(libc::SIGTERM);
    assert!(current.wait_exit(Duration::from_secs(15)).is_some_and(|s| s.success()), "{}", current.output());
    assert!(!dir.join("upgrade.sock").exists(), "the socket file is removed at exit");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A new process that cannot start (its config is invalid; a listener
/// cannot be bound after it took the sockets; it would serve with fewer
/// shards) exits with an error, and the old process serves on, not
/// draining, and still takes a good upgrade afterwards.
#[test]
fn a_failed_upgrade_leaves_the_old_process_serving() {
    let dir = scratch("failed");
    let (_up, upstream) = echo();
    let (port, admin) = (appliance_tests::free_port(), appliance_tests::free_port());
    let cfg = config(&dir, port, admin, upstream);
    let mut old = run(&cfg, &[]);

    let bad = dir.join("bad.toml");
    let text = std::fs::read_to_string(&cfg).expect("config") + "no_such_key = 1\n";
    std::fs::write(&bad, text).expect("bad config");
    let (code, out) = run_to_end(&["run", "--config", bad.to_str().expect("utf-8"), "--upgrade", "--no-pin"]);
    assert_eq!(code, Some(2), "{out}");

    // A port held by someone else: the new process has the sockets by the
    // time it fails to bind its extra service.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let clash = dir.join("clash.toml");
    let extra = format!("[[echo]]\nname = \"extra\"\nlisten = \"{}\"\n", taken.local_addr().expect("addr"));
    std::fs::write(&clash, std::fs::read_to_string(&cfg).expect("config") + &extra).expect("clash config");
    let (code, out) =
        run_to_end(&["run", "--config", clash.to_str().expect("utf-8"), "--upgrade", "--no-pin"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("took 2 listening groups") && out.contains("cannot bind"), "{out}");

    let (code, out) =
        run_to_end(&["run", "--config", cfg.to_str().expect("utf-8"), "--upgrade", "--shards", "1"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("cannot take fewer shards"), "{out}");

    for _ in 0..3 {
        round_trip(port).expect("the old process still serves");
    }
    let s = status(admin);
    assert_eq!((s["pid"].as_u64(), &s["draining"]), (old.pid().map(u64::from), &serde_json::json!(false)));
    assert!(old.printed("this process keeps serving"), "{}", old.output());
    let mut new = upgrade(&cfg, &mut old, &[]);
    round_trip(port).expect("the new process serves");
    assert!(old.wait_exit(Duration::from_secs(15)).is_some_and(|s| s.success()), "{}", old.output());
    new.signal(libc::SIGTERM);
    assert!(new.wait_exit(Duration::from_secs(15)).is_some(), "{}", new.output());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A second instance on the same upgrade socket is refused before it
/// binds anything (it would otherwise join the port groups); a socket file
/// a crashed process left behind is replaced.
#[test]
fn a_second_instance_is_refused_and_a_stale_socket_is_replaced() {
    let dir = scratch("second");
    let (_up, upstream) = echo();
    let cfg = config(&dir, appliance_tests::free_port(), appliance_tests::free_port(), upstream);
    drop(std::os::unix::net::UnixListener::bind(dir.join("upgrade.sock")).expect("stale file"));
    assert!(dir.join("upgrade.sock").exists());
    let mut first = run(&cfg, &[]);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.join("upgrade.sock")).expect("socket file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only this user may take the listeners");
    let (code, out) = run_to_end(&["run", "--config", cfg.to_str().expect("utf-8"), "--no-pin"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("another appliance serves upgrades there"), "{out}");
    assert!(!out.contains("listening on"), "{out}");
    first.signal(libc::SIGTERM);
    assert!(first.wait_exit(Duration::from_secs(15)).is_some_and(|s| s.success()));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Under systemd (`Type=notify`, `NotifyAccess=all`): the first process
/// says READY=1; the new one says MAINPID=<itself> and READY=1 before the
/// old one stops, and the old one never says STOPPING=1 (systemd would
/// take the service for stopping); the last one does, on SIGTERM.
#[test]
fn systemd_hears_ready_and_follows_the_new_main_pid() {
    let dir = scratch("systemd");
    let (_up, upstream) = echo();
    let port = appliance_tests::free_port();
    let cfg = config(&dir, port, appliance_tests::free_port(), upstream);
    let notify_path = dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path).expect("notify socket");
    notify.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let next = || {
        let mut buf = [0u8; 256];
        let n = notify.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let start = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(appliance_tests::binary());
        cmd.args(["run", "--config", cfg.to_str().expect("utf-8"), "--no-pin"]).args(extra);
        cmd.env("NOTIFY_SOCKET", &notify_path);
        let mut app = Appliance::spawn(&mut cmd).expect("start");
        app.wait_for_line("forward listening on").expect("serving");
        app
    };
    let mut old = start(&[]);
    assert_eq!(next(), "READY=1");
    let mut new = start(&["--upgrade"]);
    let pid = new.pid().expect("pid");
    assert_eq!(next(), format!("MAINPID={pid}\nREADY=1"));
    new.wait_for_line("is draining; this process serves").expect("handed over");
    assert!(old.wait_exit(Duration::from_secs(15)).is_some_and(|s| s.success()), "{}", old.output());
    notify.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 256];
    let quiet = notify.recv(&mut buf);
    assert!(
        quiet.is_err(),
        "the old process said {:?}",
        quiet.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    );
    notify.set_nonblocking(false).expect("blocking");
    round_trip(port).expect("serving");
    new.signal(libc::SIGTERM);
    assert_eq!(next(), "STOPPING=1");
    assert!(new.wait_exit(Duration::from_secs(15)).is_some());
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGUSR2 (nginx's way, and the systemd unit's `ExecReload`): the
/// running process starts its own binary with its arguments and
/// `--upgrade`; the new process takes over and the old one exits.
#[test]
fn sigusr2_starts_a_successor_that_takes_over() {
    let dir = scratch("usr2");
    let (_up, upstream) = echo();
    let (port, admin) = (appliance_tests::free_port(), appliance_tests::free_port());
    let cfg = config(&dir, port, admin, upstream);
    let mut old = run(&cfg, &[]);
    let old_pid = old.pid().map(u64::from);
    old.signal(libc::SIGUSR2);
    // The successor writes where the old process does: its lines come here.
    old.wait_for_line("is draining; this process serves").expect("the successor takes over");
    assert!(old.wait_exit(Duration::from_secs(15)).is_some_and(|s| s.success()), "{}", old.output());
    let s = status(admin);
    assert_eq!(s["upgraded_from"].as_u64(), old_pid, "{s}");
    let new_pid = s["pid"].as_u64().expect("pid");
    round_trip(port).expect("the successor serves");
    let pid = i32::try_from(new_pid).expect("pid");
    #[allow(unsafe_code)]
    // SAFETY: kill(2) has no memory effects; the pid is the successor this test caused.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while dir.join("upgrade.sock").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!dir.join("upgrade.sock").exists(), "the successor exits and removes its socket");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A service the new configuration drops keeps being served by the old
/// process while it drains, and closes with it.
#[test]
fn a_dropped_service_closes_when_the_old_process_drains() {
    let dir = scratch("dropped");
    let (_up, upstream) = echo();
    let (port, admin, extra_port) =
        (appliance_tests::free_port(), appliance_tests::free_port(), appliance_tests::free_port());
    let cfg = config(&dir, port, admin, upstream);
    let with_extra = dir.join("extra.toml");
    let extra = format!("[[echo]]\nname = \"extra\"\nlisten = \"127.0.0.1:{extra_port}\"\n");
    std::fs::write(&with_extra, std::fs::read_to_string(&cfg).expect("config") + &extra).expect("config");
    let mut old = run(&with_extra, &[]);
    // A connection to the extra service keeps the old process draining.
    let mut held = TcpStream::connect(("127.0.0.1", extra_port)).expect("extra service");
    held.write_all(b"x").expect("write");
    let mut one = [0u8; 1];
    held.read_exact(&mut one).expect("echo");
    let mut new = upgrade(&cfg, &mut old, &[]);
    assert!(new.printed("is not in this configuration"), "{}", new.output());
    held.write_all(b"y").expect("still served while the old process drains");
    held.read_exact(&mut one).expect("echo");
    assert_eq!(&one, b"y");
    drop(held);
    assert!(old.wait_exit(Duration::from_secs(15)).is_some_and(|s| s.success()), "{}", old.output());
    let gone = TcpStream::connect(("127.0.0.1", extra_port)).map(drop).unwrap_err();
    assert_eq!(gone.kind(), std::io::ErrorKind::ConnectionRefused);
    round_trip(port).expect("the forward moved on");
    new.signal(libc::SIGTERM);
    assert!(new.wait_exit(Duration::from_secs(15)).is_some());
    let _ = std::fs::remove_dir_all(&dir);
}
