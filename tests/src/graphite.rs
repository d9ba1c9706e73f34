//! A Graphite plaintext receiver for end-to-end tests of the aggregator:
//! it keeps every line from every connection, and can go away and come
//! back like a restarting Graphite.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A Graphite plaintext receiver: keeps every line from every connection.
#[derive(Debug)]
pub struct Sink {
    /// Where it listens.
    pub addr: SocketAddr,
    text: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Sink {
    /// Listens on an ephemeral loopback port.
    pub fn start() -> Sink {
        Sink::start_at("127.0.0.1:0".parse().expect("addr"))
    }

    /// A Graphite that is down: nothing listens on `addr` (yet).
    pub fn absent(addr: SocketAddr) -> Sink {
        Sink { addr, text: Arc::default(), stop: Arc::default(), conns: Arc::default() }
    }

    /// Listens on `at` (a restarted Graphite at the same address).
    pub fn start_at(at: SocketAddr) -> Sink {
        let listener = TcpListener::bind(at).expect("bind sink");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let text = Arc::new(Mutex::new(String::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (t, flag, kept) = (text.clone(), stop.clone(), conns.clone());
        std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let t = t.clone();
                        s.set_nonblocking(false).expect("blocking");
                        kept.lock().expect("lock").push(s.try_clone().expect("clone"));
                        std::thread::spawn(move || {
                            let mut buf = [0u8; 65536];
                            while let Ok(n @ 1..) = s.read(&mut buf) {
                                t.lock().expect("lock").push_str(&String::from_utf8_lossy(&buf[..n]));
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Sink { addr, text, stop, conns }
    }

    /// Goes away like a restarting Graphite: stops listening and closes
    /// every connection it accepted.
    pub fn kill(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for c in self.conns.lock().expect("lock").drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        // The accept thread drops the listener within a poll period.
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Every complete line as (path, value, timestamp).
    pub fn lines(&self) -> Vec<(String, f64, u64)> {
        let text = self.text.lock().expect("lock").clone();
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        complete
            .lines()
            .map(|l| {
                let mut parts = l.split(' ');
                let path = parts.next().expect("path").to_owned();
                let value =
                    parts.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("bad line {l:?}"));
                let ts =
                    parts.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("bad line {l:?}"));
                assert!(parts.next().is_none(), "extra field in {l:?}");
                (path, value, ts)
            })
            .collect()
    }

    /// The last value reported for `path`.
    pub fn last(&self, path: &str) -> Option<f64> {
        self.lines().into_iter().rev().find(|(p, _, _)| p == path).map(|(_, v, _)| v)
    }

    /// The sum of every value reported for `path` (counters over flushes).
    pub fn sum(&self, path: &str) -> f64 {
        self.lines().into_iter().filter(|(p, _, _)| p == path).map(|(_, v, _)| v).sum()
    }

    /// Waits (up to 10 s) until `test` holds for the lines so far.
    pub fn eventually(&self, what: &str, test: impl Fn(&Sink) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !test(self) {
            assert!(Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Lets the other shard's connection deliver the same flush: each
    /// shard writes its own keys, so the service's counters (from shard 0)
    /// can arrive a moment before them.
    pub fn settle(&self) {
        std::thread::sleep(Duration::from_millis(300));
    }

    /// Waits (up to 15 s) until `path` was last reported as `value`.
    pub fn wait_for(&self, path: &str, value: f64) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.last(path) == Some(value) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("{path} never reached {value} (last {:?})", self.last(path)))
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
