//! The admin status page (`GET /`) in a real browser: headless Chromium
//! from Debian (`make test-deps` installs `chromium-headless-shell` best
//! effort; without one the browser checks are skipped with a message, the
//! server-rendered checks still run). The numbers shown must be what was
//! sent, and a killed upstream's row must turn down while the page is
//! open. Screenshots are kept at `target/admin-page.png` and, at a
//! phone's width, `target/admin-page-narrow.png`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use appliance_tests::upstream::{echo, Upstream};
use appliance_tests::{http_get, Appliance, TempDir};

/// The first headless Chromium found.
fn browser() -> Option<&'static str> {
    ["chromium-headless-shell", "chromium", "chromium-browser"].into_iter().find(|b| {
        Command::new(b)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Runs `browser` with `args` and `url` to its end (bounded), returning
/// its standard output (`--dump-dom`) .
fn run_browser(browser: &str, args: &[String], url: &str) -> String {
    let mut child = Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,1000"])
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("browser");
    let mut out = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    reader.join().unwrap_or_default()
}

/// A page kept open in a headless browser, read through the DevTools
/// protocol while its script refreshes it in real time.
struct OpenPage {
    child: std::process::Child,
    ws: tungstenite::WebSocket<TcpStream>,
    next_id: u64,
}

impl OpenPage {
    fn open(browser: &str, url: &str) -> OpenPage {
        let port = appliance_tests::free_port();
        let child = Command::new(browser)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,1000"])
            .arg(format!("--remote-debugging-port={port}"))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("browser");
        let devtools = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(20);
        let ws_url = loop {
            let targets = devtools_list(devtools).and_then(|b| serde_json::from_str(&b).ok());
            let page: Option<String> = targets.and_then(|t: serde_json::Value| {
                t.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"]
                    .as_str()
                    .map(String::from)
            });
            if let Some(u) = page {
                break u;
            }
            assert!(Instant::now() < deadline, "the browser's DevTools never answered");
            std::thread::sleep(Duration::from_millis(100));
        };
        let stream = TcpStream::connect(devtools).expect("devtools");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let (ws, _) = tungstenite::client(ws_url.as_str(), stream).expect("websocket");
        OpenPage { child, ws, next_id: 1 }
    }

    /// The page's DOM now.
    fn dom(&mut self) -> String {
        let id = self.next_id;
        self.next_id += 1;
        let call = serde_json::json!({"id": id, "method": "Runtime.evaluate",
            "params": {"expression": "document.documentElement.outerHTML", "returnByValue": true}});
        self.ws.send(tungstenite::Message::text(call.to_string())).expect("send");
        loop {
            let msg = self.ws.read().expect("devtools reply");
            let Ok(v) = serde_json::from_str::<serde_json::Value>(msg.to_text().unwrap_or("")) else {
                continue;
            };
            if v["id"] == id {
                return v["result"]["result"]["value"].as_str().unwrap_or("").to_string();
            }
        }
    }
}

/// DevTools' `/json/list` (it answers only a Host that is an address or
/// localhost, and keeps the connection open: the body is read by its
/// length).
fn devtools_list(devtools: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect(devtools).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET /json/list HTTP/1.1\r\nHost: {devtools}\r\n\r\n").as_bytes()).ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).ok().filter(|&n| n > 0)?;
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
        let len: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:")?.trim().parse().ok())?;
        if body.len() >= len {
            return Some(body.to_string());
        }
    }
}

impl Drop for OpenPage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of the cell whose `data-k` is `key` (quotes as the DOM
/// serializer writes them).
fn cell(html: &str, key: &str) -> Option<String> {
    let at = html.find(&format!("data-k=\"{key}\""))?;
    let rest = &html[at..];
    let start = rest.find('>')? + 1;
    Some(rest[start..start + rest[start..].find('<')?].trim().to_string())
}

/// The class of the upstream row `service/upstream`.
fn row_class(html: &str, upstream: &str) -> Option<String> {
    let at = html.find(&format!("data-upstream=\"{upstream}\""))?;
    let tag = &html[html[..at].rfind("<tr")?..at];
    let class = tag.split("class=").nth(1)?.trim_start_matches('"');
    Some(class[..class.find(['"', ' '])?].to_string())
}

struct Setup {
    _app: Appliance,
    admin: SocketAddr,
    up_a: Upstream,
    up_b: Option<Upstream>,
    _dir: TempDir,
}

/// A forward service over two echo upstreams (health checks every
/// 300 ms) and an aggregate service; `conns` connections and `lines`
/// statsd lines sent, and both counted on `/status`.
fn setup(conns: usize, lines: usize) -> Setup {
    let (up_a, up_b) = (Upstream::start(echo, 0), Upstream::start(echo, 1));
    let dir = TempDir::new("page");
    let config = dir.path.join("appliance.toml");
    let toml = format!(
        "[runtime]\nshards = 2\nno_pin = true\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[forward]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nupstreams = [\"{}\", \"{}\"]\nhealth_interval = \"300ms\"\n\
         [[aggregate]]\nname = \"statsd\"\nlisten_udp = \"127.0.0.1:0\"\nflush_interval = \"500ms\"\nprometheus = true\n",
        up_a.addr, up_b.addr
    );
    std::fs::write(&config, toml).expect("config");
    let mut app = Appliance::start(&["run", "--config", &config.to_string_lossy()]).expect("start");
    let web = app.wait_for_addr("forward listening on").expect("forward address");
    let udp = app.wait_for_addr("aggregate listening on udp").expect("udp address");
    let admin = app.wait_for_addr("admin listening on").expect("admin address");
    for i in 0..conns {
        let mut s = TcpStream::connect(web).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let msg = format!("hello {i}");
        s.write_all(msg.as_bytes()).expect("send");
        let mut back = vec![0; msg.len()];
        s.read_exact(&mut back).expect("echo");
    }
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for chunk in (0..lines).collect::<Vec<_>>().chunks(25) {
        let text: Vec<String> = chunk.iter().map(|i| format!("page.key{}:1|c", i % 7)).collect();
        socket.send_to(text.join("\n").as_bytes(), udp).expect("send");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = http_get(admin, "/status").expect("status");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        let accepted = v["services"][0]["counters"]["accepted"].as_u64();
        let got = v["services"][1]["counters"]["lines"].as_u64();
        if accepted == Some(conns as u64) && got == Some(lines as u64) {
            break;
        }
        assert!(Instant::now() < deadline, "counters never settled: {accepted:?} {got:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Setup { _app: app, admin, up_a, up_b: Some(up_b), _dir: dir }
}

/// With JavaScript off the page is a plain table with the same numbers:
/// checked on the server's HTML itself, browser or not.
#[test]
fn the_page_shows_what_was_sent_without_a_browser() {
    let s = setup(12, 300);
    let (status, html) = http_get(s.admin, "/").expect("page");
    assert_eq!(status, 200);
    assert!(html.starts_with("<!doctype html>"), "{html}");
    assert_eq!(cell(&html, "web.accepted").as_deref(), Some("12"), "{html}");
    assert_eq!(cell(&html, "statsd.lines").as_deref(), Some("300"), "{html}");
    assert_eq!(row_class(&html, &format!("web/{}", s.up_a.addr)).as_deref(), Some("up"));
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"), "no external assets");
    let (_, tables) = http_get(s.admin, "/status?format=html").expect("tables");
    assert!(tables.contains("data-k=\"web.accepted\">12<"), "{tables}");
    assert!(!tables.contains("<html"), "the live part only");
}

#[test]
fn a_browser_shows_the_numbers_and_a_killed_upstream_goes_down() {
    let Some(browser) = browser() else {
        eprintln!("skipped: no headless Chromium (make test-deps installs chromium-headless-shell)");
        return;
    };
    let mut s = setup(10, 200);
    let url = format!("http://{}/", s.admin);
    let mut page = OpenPage::open(browser, &url);
    let b = s.up_b.as_ref().map(|u| format!("web/{}", u.addr)).expect("b");
    let deadline = Instant::now() + Duration::from_secs(10);
    let dom = loop {
        let dom = page.dom();
        if cell(&dom, "statsd.lines").is_some() {
            break dom;
        }
        assert!(Instant::now() < deadline, "the page never loaded: {dom}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(cell(&dom, "web.accepted").as_deref(), Some("10"), "{dom}");
    assert_eq!(cell(&dom, "statsd.lines").as_deref(), Some("200"), "{dom}");
    assert_eq!(row_class(&dom, &b).as_deref(), Some("up"), "{dom}");
    // Kill b while the page is open: its script must turn b's row down
    // within the health checks' fall (3 x 300 ms) and one refresh (2 s).
    drop(s.up_b.take());
    let killed = Instant::now();
    let dom = loop {
        let dom = page.dom();
        if row_class(&dom, &b).as_deref() == Some("down") {
            break dom;
        }
        assert!(killed.elapsed() < Duration::from_secs(8), "b's row never turned down: {dom}");
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("b's row turned down {:?} after the kill", killed.elapsed());
    assert_eq!(cell(&dom, &format!("{b}.state")).as_deref(), Some("down"), "{dom}");
    assert_eq!(row_class(&dom, &format!("web/{}", s.up_a.addr)).as_deref(), Some("up"), "{dom}");
    let rate = cell(&dom, "web.accepted_rate").unwrap_or_default();
    assert!(rate.parse::<f64>().is_ok(), "rates appear once two samples are held: {rate:?}");
    drop(page);
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/admin-page.png");
    let _ = std::fs::remove_file(&shot);
    run_browser(browser, &[format!("--screenshot={}", shot.display())], &url);
    assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000), "screenshot at {}", shot.display());
    let narrow = shot.with_file_name("admin-page-narrow.png");
    run_browser(
        browser,
        &["--window-size=420,900".into(), format!("--screenshot={}", narrow.display())],
        &url,
    );
    let dumped = run_browser(browser, &["--dump-dom".to_string()], &url);
    assert_eq!(cell(&dumped, "web.accepted").as_deref(), Some("10"), "{dumped}");
}
