//! End-to-end test support: start the real `appliance` binary on ephemeral
//! loopback ports, read what it prints, talk to it with real sockets, and
//! always stop it (the process is killed when the handle drops, even when
//! a test fails).
//!
//! ```no_run
//! let mut app = appliance_tests::Appliance::start(&["echo", "--listen", "127.0.0.1:0", "--no-pin"]).unwrap();
//! let addr = app.wait_for_addr("echo listening on").unwrap();
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod graphite;
pub mod upstream;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Path of the `appliance` binary built by this workspace (same profile as
/// the running test). It is built (or found up to date) once per test
/// process, because `cargo test -p appliance-tests` alone does not rebuild
/// another package's binary.
///
/// `APPLIANCE_TEST_BINARY` points the tests at another build instead (an
/// older commit's, to see a regression test fail on the code before its
/// fix).
pub fn binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| match std::env::var_os("APPLIANCE_TEST_BINARY") {
            Some(path) => PathBuf::from(path),
            None => build(),
        })
        .clone()
}

fn build() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/appliance
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir").to_path_buf();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "--quiet", "-p", "appliance"]);
    if dir.ends_with("release") {
        cmd.arg("--release");
    }
    if let Some(target) = dir.parent() {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    let status = cmd.status().expect("running cargo build");
    assert!(status.success(), "building the appliance binary failed");
    dir.join("appliance")
}

/// A running appliance process.
#[derive(Debug)]
pub struct Appliance {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Appliance {
    /// Starts `appliance ARGS...`, capturing stdout and stderr lines.
    pub fn start(args: &[&str]) -> std::io::Result<Appliance> {
        Appliance::spawn(Command::new(binary()).args(args))
    }

    /// Starts `appliance ARGS...` in the network namespace `ns` (`ip netns
    /// exec`, which execs the binary in place: signals reach it).
    pub fn start_in(ns: &str, args: &[&str]) -> std::io::Result<Appliance> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(binary()).args(args);
        Appliance::spawn(&mut cmd)
    }

    /// Starts `appliance ARGS...` with a descriptor limit of `nofile`
    /// (through util-linux `prlimit`, so the test process keeps its own).
    pub fn start_with_nofile(nofile: u64, args: &[&str]) -> std::io::Result<Appliance> {
        let limit = format!("--nofile={nofile}:{nofile}");
        let mut cmd = Command::new("prlimit");
        cmd.arg(limit).arg("--").arg(binary()).args(args);
        Appliance::spawn(&mut cmd)
    }

    /// Starts `cmd` (one that runs the appliance, through a wrapper such
    /// as `ip netns exec` or `capsh`), capturing its output.
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Appliance> {
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                BufReader::new(out).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l)))
            });
        }
        if let Some(err) = child.stderr.take() {
            std::thread::spawn(move || {
                BufReader::new(err).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l)))
            });
        }
        Ok(Appliance { child: Some(child), lines: rx, seen: Vec::new() })
    }

    /// Waits (up to 20 s) for a line containing `marker` and returns it.
    pub fn wait_for_line(&mut self, marker: &str) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(marker) {
                        return Ok(line);
                    }
                }
                Err(_) => {
                    return Err(format!("no line with {marker:?}; output so far:\n{}", self.seen.join("\n")))
                }
            }
        }
    }

    /// Waits for a line containing `marker` and parses the first
    /// `IP:PORT` in it.
    pub fn wait_for_addr(&mut self, marker: &str) -> Result<SocketAddr, String> {
        let line = self.wait_for_line(marker)?;
        line.split_whitespace()
            .find_map(|w| w.trim_end_matches(',').parse().ok())
            .ok_or_else(|| format!("no address in {line:?}"))
    }

    /// The process id (None once it has exited and been reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            let pid = c.id() as i32;
            #[allow(unsafe_code)]
            // SAFETY: kill(2) on our own child's pid has no memory effects.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// Waits (up to `limit`) for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether a line containing `marker` was printed: among the lines
    /// read so far, or one that arrives (stdout and stderr are read apart,
    /// so a line printed before another may be read after it).
    pub fn printed(&mut self, marker: &str) -> bool {
        self.output().lines().any(|l| l.contains(marker)) || self.wait_for_line(marker).is_ok()
    }

    /// Every line read so far.
    pub fn output(&mut self) -> String {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen.join("\n")
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `appliance aggregate` on 2 shards, UDP and TCP on ephemeral
/// loopback ports, flushing to `graphite`, with `extra` flags; returns it
/// with its UDP and TCP addresses.
pub fn start_aggregate(graphite: SocketAddr, extra: &[&str]) -> (Appliance, SocketAddr, SocketAddr) {
    let graphite = graphite.to_string();
    let mut args = vec![
        "aggregate",
        "--listen-udp",
        "127.0.0.1:0",
        "--listen-tcp",
        "127.0.0.1:0",
        "--graphite",
        &graphite,
        "--shards",
        "2",
        "--no-pin",
    ];
    args.extend_from_slice(extra);
    let mut app = Appliance::start(&args).expect("start aggregate");
    let udp = app.wait_for_addr("aggregate listening on udp").expect("udp address");
    let tcp = app.wait_for_addr("aggregate listening on tcp").expect("tcp address");
    (app, udp, tcp)
}

/// Runs `appliance ARGS...` to completion (bounded), returning its exit
/// code and combined output.
pub fn run_to_end(args: &[&str]) -> (Option<i32>, String) {
    let mut app = match Appliance::start(args) {
        Ok(a) => a,
        Err(e) => return (None, format!("could not start: {e}")),
    };
    let status = app.wait_exit(Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(50));
    (status.and_then(|s| s.code()), app.output())
}

/// A `GET` to the admin endpoint: `(status, body)`.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_raw(addr, format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes())
}

/// Sends `request` as is and reads the response: `(status, body)`.
pub fn http_raw(addr: SocketAddr, request: &[u8]) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request)?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// The value of the sample `series` (name and labels exactly as exposed,
/// e.g. `appliance_forward_accepted_total{service="web",shard="all"}`).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A port nothing listens on right now (for a process the test starts
/// later, such as a Prometheus server, that must be told its port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A directory of one test's own (emptied first), removed when dropped.
#[derive(Debug)]
pub struct TempDir {
    /// Where it is.
    pub path: PathBuf,
}

impl TempDir {
    /// `appliance-test-<tag>-<pid>-<n>` under the system's temporary
    /// directory (`n` counts this process's directories, so tests running
    /// in parallel never share one).
    pub fn new(tag: &str) -> TempDir {
        static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("appliance-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Checks `text` with `promtool check metrics` (Debian's `prometheus`,
/// which `make test-deps` installs).
pub fn promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (install Debian's prometheus: make test-deps)");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("promtool");
    let report = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool check metrics failed:\n{report}\n{text}");
}

/// Splits connected clients into those the server keeps open (a read
/// finds nothing yet) and the number it closed or reset at once (refused
/// over a limit). `nonblocking` sets a client's mode; kept clients are
/// left blocking.
pub fn served<S: Read>(clients: Vec<S>, nonblocking: impl Fn(&S, bool)) -> (Vec<S>, usize) {
    let (mut kept, mut refused) = (Vec::new(), 0);
    for mut c in clients {
        nonblocking(&c, true);
        match c.read(&mut [0u8; 1]) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                nonblocking(&c, false);
                kept.push(c);
            }
            _ => refused += 1,
        }
    }
    (kept, refused)
}
