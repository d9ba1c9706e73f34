//! SNI routing end to end (docs/operations.md, "Routing TLS by server
//! name"): real TLS upstreams (`openssl s_server`, each with a certificate
//! of its own name) behind a forward with routes, reached by real clients
//! (`openssl s_client -servername`, `curl --resolve`); which upstream
//! answered is read from the certificate the client saw. TLS is never
//! terminated by the appliance: the handshake is the upstream's.
//!
//! Skipped, with a note, only when `openssl` is not installed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use appliance_tests::{http_get, metric, Appliance};

fn have(tool: &str) -> bool {
    let found =
        Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !found {
        eprintln!("skipped: {tool} is not installed");
    }
    found
}

/// A TLS server whose certificate names it `cn`.
struct TlsServer {
    child: Child,
    port: u16,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_server(dir: &Path, cn: &str) -> TlsServer {
    let (key, cert) = (dir.join(format!("{cn}.key")), dir.join(format!("{cn}.pem")));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-subj", &format!("/CN={cn}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl req");
    assert!(made.success());
    let port = appliance_tests::free_port();
    let child = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept", &format!("127.0.0.1:{port}")])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("s_server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "s_server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    TlsServer { child, port }
}

/// The CN of the certificate `openssl s_client` got through `port`, with
/// `servername` (None: no SNI at all).
fn s_client(port: u16, servername: Option<&str>) -> Option<String> {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")]);
    match servername {
        Some(name) => cmd.args(["-servername", name]),
        None => cmd.arg("-noservername"),
    };
    let out = cmd.stdin(Stdio::null()).stderr(Stdio::piped()).output().expect("s_client");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines().find_map(|l| l.trim().strip_prefix("depth=0 CN = ").map(str::to_string))
}

fn config(dir: &Path, servers: [&TlsServer; 3], missing: &str) -> (PathBuf, u16, u16) {
    let [api, wild, default] = servers;
    let (port, admin) = (appliance_tests::free_port(), appliance_tests::free_port());
    let text = format!(
        "[runtime]\nshards = 2\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
         [[forward]]\nname = \"tls\"\nlisten = \"127.0.0.1:{port}\"\n\
         upstreams = [\"127.0.0.1:{}\"]\nsni_missing = \"{missing}\"\nclient_hello_timeout = \"500ms\"\n\
         sni_routes = [\n  {{ names = [\"api.example.com\"], upstreams = [\"127.0.0.1:{}\"] }},\n\
           {{ names = [\"*.example.com\"], upstreams = [\"127.0.0.1:{}\"] }},\n]\n",
        default.port, api.port, wild.port
    );
    let path = dir.join(format!("{missing}.toml"));
    std::fs::write(&path, text).expect("config");
    (path, port, admin)
}

fn sni_counts(admin: u16) -> [f64; 4] {
    let (_, text) = http_get(([127, 0, 0, 1], admin).into(), "/metrics").expect("metrics");
    ["routed", "unmatched", "missing", "malformed"].map(|r| {
        metric(&text, &format!("appliance_forward_sni_total{{service=\"tls\",result=\"{r}\",shard=\"all\"}}"))
            .unwrap_or(-1.0)
    })
}

#[test]
fn tls_is_routed_by_server_name_without_being_terminated() {
    if !have("openssl") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("appliance-sni-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let (api, wild, default) = (
        tls_server(&dir, "api-backend"),
        tls_server(&dir, "wild-backend"),
        tls_server(&dir, "default-backend"),
    );
    let (cfg, port, admin) = config(&dir, [&api, &wild, &default], "default");
    let mut app =
        Appliance::start(&["run", "--config", cfg.to_str().expect("utf-8"), "--no-pin"]).expect("start");
    app.wait_for_line("forward listening on").expect("serving");

    assert_eq!(s_client(port, Some("api.example.com")).as_deref(), Some("api-backend"), "exact");
    assert_eq!(s_client(port, Some("API.example.com")).as_deref(), Some("api-backend"), "case");
    assert_eq!(s_client(port, Some("www.example.com")).as_deref(), Some("wild-backend"), "wildcard");
    assert_eq!(s_client(port, Some("a.b.example.com")).as_deref(), Some("wild-backend"), "deeper wildcard");
    assert_eq!(s_client(port, Some("example.org")).as_deref(), Some("default-backend"), "unmatched");
    assert_eq!(s_client(port, None).as_deref(), Some("default-backend"), "no SNI");
    assert_eq!(sni_counts(admin), [4.0, 1.0, 1.0, 0.0]);

    if have("curl") {
        let out = Command::new("curl")
            .args(["-skv", "--max-time", "10", "--resolve", &format!("api.example.com:{port}:127.0.0.1")])
            .arg(format!("https://api.example.com:{port}/"))
            .output()
            .expect("curl");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && err.contains("subject: CN=api-backend"), "{err}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("s_server"),
            "the upstream's page came back whole"
        );
    }

    // Not TLS: counted malformed, sent to the default pool as it came.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    plain.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("write");
    plain.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let _ = plain.read(&mut [0u8; 64]);
    // A client that never sends its ClientHello is closed after the timeout.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    silent.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let t = Instant::now();
    let closed = silent.read(&mut [0u8; 1]);
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    assert!(t.elapsed() < Duration::from_secs(4), "closed within the hello timeout: {:?}", t.elapsed());
    let (_, text) = http_get(([127, 0, 0, 1], admin).into(), "/metrics").expect("metrics");
    let timeouts =
        metric(&text, "appliance_forward_client_hello_timeouts_total{service=\"tls\",shard=\"all\"}");
    assert_eq!(timeouts, Some(1.0), "{text}");
    assert_eq!(sni_counts(admin)[3], 1.0, "malformed");
    drop(app);

    // sni_missing = "refuse": no name, no upstream; a named one still goes.
    let (cfg, port, admin) = config(&dir, [&api, &wild, &default], "refuse");
    let mut app =
        Appliance::start(&["run", "--config", cfg.to_str().expect("utf-8"), "--no-pin"]).expect("start");
    app.wait_for_line("forward listening on").expect("serving");
    assert_eq!(s_client(port, None), None, "refused");
    assert_eq!(s_client(port, Some("www.example.com")).as_deref(), Some("wild-backend"));
    let (_, text) = http_get(([127, 0, 0, 1], admin).into(), "/metrics").expect("metrics");
    let refused =
        metric(&text, "appliance_forward_refused_total{service=\"tls\",reason=\"sni\",shard=\"all\"}");
    assert_eq!(refused, Some(1.0), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The routes are checked when the file is: a bad name, a route without
/// upstreams, an unknown `sni_missing`, UDP.
#[test]
fn bad_routes_are_configuration_errors() {
    let dir = std::env::temp_dir().join(format!("appliance-sni-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let base = "[[forward]]\nlisten = \"127.0.0.1:0\"\nupstreams = [\"127.0.0.1:9\"]\n";
    for (extra, key) in [
        ("sni_routes = [{ names = [\"*\"], upstreams = [\"127.0.0.1:10\"] }]\n", "sni_routes"),
        ("sni_routes = [{ names = [\"a.test\"], upstreams = [] }]\n", "sni_routes[0]"),
        ("sni_routes = [{ names = [\"a.test\"], upstreams = [\"127.0.0.1:10\"] }]\nsni_missing = \"drop\"\n", "sni_missing"),
        ("sni_routes = [{ names = [\"a.test\"], upstreams = [\"127.0.0.1:10\"] }]\nudp = true\n", "sni_routes"),
    ] {
        let path = dir.join("bad.toml");
        std::fs::write(&path, format!("{base}{extra}")).expect("write");
        let (code, out) = appliance_tests::run_to_end(&["check", "--config", path.to_str().expect("utf-8")]);
        assert_eq!(code, Some(2), "{extra}: {out}");
        assert!(out.contains(&format!("forward[0].{key}")), "{extra}: {out}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _: Option<SocketAddr> = None;
}
