//! The admin endpoint's upstream API (docs/operations.md, "Changing
//! upstreams at run time"): list, add, weight, drain, maintenance and
//! remove reach every shard and show in `/status` and `/metrics`; changes
//! need the token (or a loopback listener without one); SIGHUP makes the
//! file the truth again.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use appliance_tests::{http_get, http_raw, metric, Appliance};

/// A server that greets each connection with its name and then echoes.
fn named_server(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut conn = conn;
                let _ = conn.write_all(name.as_bytes());
                let mut buf = [0u8; 64];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// A connection through the forward and the name of the upstream it reached.
fn reach(port: u16) -> (TcpStream, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut name = [0u8; 1];
    s.read_exact(&mut name).expect("greeting");
    (s, String::from_utf8_lossy(&name).into_owned())
}

fn reached(port: u16, n: usize) -> HashSet<String> {
    (0..n).map(|_| reach(port).1).collect()
}

fn post(admin: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!("POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    http_raw(admin, req.as_bytes()).expect("request")
}

fn upstreams(admin: SocketAddr) -> Vec<serde_json::Value> {
    let (code, body) = http_get(admin, "/api/upstreams").expect("list");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v["services"][0]["upstreams"].as_array().cloned().unwrap_or_default()
}

fn field<'a>(list: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    list.iter().find(|u| u["name"] == name).unwrap_or_else(|| panic!("no {name} in {list:?}"))
}

const TOKEN: &str = "0123456789abcdef0123";

fn start(dir: &str, a: SocketAddr, extra: &str) -> (Appliance, PathBuf, u16, SocketAddr) {
    let dir = std::env::temp_dir().join(format!("appliance-api-{dir}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("appliance.toml");
    let text = format!(
        "[runtime]\nshards = 2\n[admin]\nlisten = \"127.0.0.1:0\"\n{extra}\
         [[forward]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"{a}\"]\n"
    );
    std::fs::write(&path, text).expect("config");
    let mut app =
        Appliance::start(&["run", "--config", path.to_str().expect("utf-8"), "--no-pin"]).expect("start");
    let port = app.wait_for_addr("forward listening on").expect("forward").port();
    let admin = app.wait_for_addr("admin listening on").expect("admin");
    (app, path, port, admin)
}

#[test]
fn upstreams_change_at_run_time_on_every_shard_until_sighup() {
    let (a, b) = (named_server("A"), named_server("B"));
    let (mut app, _path, port, admin) = start("change", a, &format!("token = \"{TOKEN}\"\n"));
    let list = upstreams(admin);
    assert_eq!((list.len(), &field(&list, &a.to_string())["state"]), (1, &serde_json::json!("ready")));

    // Without the token, or with a wrong one: refused, nothing changes.
    let add = format!("/api/upstreams/add?service=web&upstream={b}&weight=2");
    assert_eq!(post(admin, &add, None).0, 401);
    assert_eq!(post(admin, &add, Some("0123456789abcdef0124")).0, 401);
    assert_eq!(upstreams(admin).len(), 1);

    let (code, body) = post(admin, &add, Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    // Every shard has it: connections land on both shards (hash), and
    // both upstreams are reached.
    assert_eq!(reached(port, 40), HashSet::from(["A".to_string(), "B".to_string()]));
    assert_eq!(field(&upstreams(admin), &b.to_string())["weight"], 2);

    // Drain A: an established connection to it finishes, new ones go to B.
    let held = loop {
        let (s, name) = reach(port);
        if name == "A" {
            break s;
        }
    };
    let drain = format!("/api/upstreams/set?service=web&upstream={a}&state=drain");
    assert_eq!(post(admin, &drain, Some(TOKEN)).0, 200);
    assert_eq!(reached(port, 30), HashSet::from(["B".to_string()]));
    let mut held = held;
    held.write_all(b"still").expect("write");
    let mut echo = [0u8; 5];
    held.read_exact(&mut echo).expect("the drained upstream's connection lives");
    assert_eq!(&echo, b"still");

    let maint = format!("/api/upstreams/set?service=web&upstream={a}&state=maint&weight=5");
    assert_eq!(post(admin, &maint, Some(TOKEN)).0, 200);
    let list = upstreams(admin);
    assert_eq!(
        (&field(&list, &a.to_string())["state"], &field(&list, &a.to_string())["weight"]),
        (&serde_json::json!("maint"), &serde_json::json!(5))
    );
    let (_, text) = http_get(admin, "/metrics").expect("metrics");
    let series = |s: &str| {
        format!("appliance_forward_upstream_admin_state{{service=\"web\",upstream=\"{a}\",state=\"{s}\"}}")
    };
    assert_eq!(
        (metric(&text, &series("maint")), metric(&text, &series("ready"))),
        (Some(1.0), Some(0.0)),
        "{text}"
    );
    let (_, status) = http_get(admin, "/status").expect("status");
    assert!(status.contains("\"maint\""), "{status}");

    let ready = format!("/api/upstreams/set?service=web&upstream={a}&state=ready");
    assert_eq!(post(admin, &ready, Some(TOKEN)).0, 200);
    let remove = format!("/api/upstreams/remove?service=web&upstream={b}");
    assert_eq!(post(admin, &remove, Some(TOKEN)).0, 200);
    assert_eq!(reached(port, 20), HashSet::from(["A".to_string()]));

    // What cannot be done says why, and changes nothing.
    let (code, body) = post(admin, &format!("/api/upstreams/remove?service=web&upstream={a}"), Some(TOKEN));
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("one upstream at least"), "{body}");
    assert_eq!(post(admin, "/api/upstreams/add?service=nope&upstream=127.0.0.1:1", Some(TOKEN)).0, 404);
    assert_eq!(post(admin, "/api/upstreams/set?service=web&upstream=x&state=off", Some(TOKEN)).0, 400);
    assert_eq!(http_get(admin, "/api/upstreams/add").expect("get").0, 405);

    // SIGHUP: the file is the truth again (A alone, ready, weight 1).
    assert_eq!(post(admin, &add, Some(TOKEN)).0, 200);
    assert_eq!(post(admin, &maint, Some(TOKEN)).0, 200);
    app.signal(libc::SIGHUP);
    app.wait_for_line("configuration reloaded").expect("reloaded");
    let list = upstreams(admin);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!((&list[0]["state"], &list[0]["weight"]), (&serde_json::json!("ready"), &serde_json::json!(1)));
    assert_eq!(reached(port, 10), HashSet::from(["A".to_string()]));
}

/// Without a token, changes are taken on a loopback admin listener only.
#[test]
fn without_a_token_changes_need_a_loopback_listener() {
    let a = named_server("A");
    let (_app, _path, _port, admin) = start("loopback", a, "");
    let set = format!("/api/upstreams/set?service=web&upstream={a}&weight=2");
    let (code, body) = post(admin, &set, None);
    assert_eq!(code, 200, "{body}");

    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let mut remote = Appliance::start(&[
        "forward",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &a.to_string(),
        "--shards",
        "1",
        "--no-pin",
        "--admin",
        &format!("0.0.0.0:{port}"),
        "--admin-allow-remote",
    ])
    .expect("start");
    remote.wait_for_line("admin listening on").expect("admin");
    let at: SocketAddr = ([127, 0, 0, 1], port).into();
    let (code, body) = post(at, &set.replace("web", "forward"), None);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("need a token"), "{body}");
    assert_eq!(http_get(at, "/api/upstreams").expect("list").0, 200, "reading needs no token");
}

/// A change made as soon as the admin endpoint answers, while shards may
/// still be starting their services, waits for them instead of reaching
/// some shards and failing on the others (before: a 500, "not running",
/// with the shards that took it disagreeing with those that did not).
#[test]
fn a_change_right_at_startup_reaches_every_shard() {
    let a = named_server("A");
    let dir = std::env::temp_dir().join(format!("appliance-api-early-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("appliance.toml");
    let text = format!(
        "[runtime]\nshards = 4\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[forward]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"{a}\"]\n"
    );
    std::fs::write(&path, text).expect("config");
    let mut app =
        Appliance::start(&["run", "--config", path.to_str().expect("utf-8"), "--no-pin"]).expect("start");
    let admin = app.wait_for_addr("admin listening on").expect("admin");
    let set = format!("/api/upstreams/set?service=web&upstream={a}&weight=3");
    let (code, body) = post(admin, &set, None);
    assert_eq!(code, 200, "{body}");
    let list = upstreams(admin);
    assert_eq!(field(&list, &a.to_string())["weight"], serde_json::json!(3), "{list:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// docs/operations.md, "Runtime API": `state=maint` stops an upstream's
/// health checks, `state=drain` keeps them. The upstream dies while in
/// maintenance and stays `up` (no check sees it); set to drain, its checks
/// resume and find it down.
#[test]
fn maintenance_stops_health_checks_and_drain_keeps_them() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = listener.local_addr().expect("addr");
    let gone = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let accepting = std::thread::spawn({
        let gone = gone.clone();
        move || {
            listener.set_nonblocking(true).expect("nonblocking");
            // Accepts health checks until told to go; then the upstream is gone.
            while !gone.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = listener.accept();
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    let dir = std::env::temp_dir().join(format!("appliance-api-maint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("appliance.toml");
    let text = format!(
        "[runtime]\nshards = 2\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\
         [[forward]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"{a}\"]\nhealth_interval = \"100ms\"\n"
    );
    std::fs::write(&path, text).expect("config");
    let mut app =
        Appliance::start(&["run", "--config", path.to_str().expect("utf-8"), "--no-pin"]).expect("start");
    let admin = app.wait_for_addr("admin listening on").expect("admin");
    let set = |state: &str| {
        let (code, body) =
            post(admin, &format!("/api/upstreams/set?service=web&upstream={a}&state={state}"), Some(TOKEN));
        assert_eq!(code, 200, "{body}");
    };
    set("maint");
    gone.store(true, std::sync::atomic::Ordering::SeqCst);
    accepting.join().expect("listener thread");
    // Twenty check intervals with nothing listening.
    std::thread::sleep(Duration::from_secs(2));
    let list = upstreams(admin);
    assert_eq!(field(&list, &a.to_string())["up"], true, "a check ran in maintenance: {list:?}");
    set("drain");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while field(&upstreams(admin), &a.to_string())["up"] != false {
        assert!(std::time::Instant::now() < deadline, "drained, its checks never found it down");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
