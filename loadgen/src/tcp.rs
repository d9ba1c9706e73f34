//! TCP load: `tcp-rr` (one request outstanding per connection, echo or
//! HTTP/1.1 keep-alive), `tcp-stream` (bulk) and `connect` (new
//! connections per second).
//!
//! In fixed-rate mode every connection follows its own schedule
//! ([`super::Pacer`]) and a request's latency runs from when it was due, so
//! a stalled reply is charged to every request it delayed.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netstack::tcp::TcpStream;
use shard::time::timeout_at;

use super::args::{duration_flag, ConnectArgs, RrArgs, StreamArgs};
use super::http::{request, ResponseReader};
use super::report::{Summary, Tally};
use super::{drive, share, summary, Pacer, Window};

/// A connection gives up after this many failures in a row.
const MAX_FAILS: u32 = 100;

/// What one `tcp-rr` or `connect` exchange sends and expects.
#[derive(Debug, Clone, Copy)]
enum Exchange {
    /// Send these bytes, expect them back.
    Echo(&'static [u8]),
    /// Send this GET, expect one response with a body.
    Http(&'static [u8]),
}

#[derive(Debug)]
struct RrConfig {
    target: std::net::SocketAddr,
    conns: usize,
    exchange: Exchange,
    /// Requests per second per connection.
    conn_rate: Option<f64>,
    total: Option<u64>,
    timeout: Duration,
}

/// A buffer the program keeps for its whole life: the ring may still be
/// sending from it when a timed-out send future is dropped.
fn leak(bytes: Vec<u8>) -> &'static [u8] {
    Box::leak(bytes.into_boxed_slice())
}

fn positive(flag: &str, v: usize) -> anyhow::Result<()> {
    if v == 0 {
        anyhow::bail!("--{flag} 0: must be at least 1");
    }
    Ok(())
}

fn rate_flag(rate: Option<f64>) -> anyhow::Result<()> {
    match rate {
        Some(r) if !(r.is_finite() && r > 0.0) => anyhow::bail!("--rate {r}: must be a positive number"),
        _ => Ok(()),
    }
}

/// `loadgen tcp-rr`.
pub fn rr(a: &RrArgs) -> anyhow::Result<Summary> {
    positive("connections", a.connections)?;
    positive("size", a.size)?;
    rate_flag(a.rate)?;
    let exchange = if a.http {
        Exchange::Http(leak(request(&a.common.target.to_string(), &a.path)))
    } else {
        Exchange::Echo(leak((0..a.size).map(|i| b'a' + (i % 26) as u8).collect()))
    };
    let cfg = Arc::new(RrConfig {
        target: a.common.target,
        conns: a.connections,
        exchange,
        conn_rate: a.rate.map(|r| r / a.connections as f64),
        total: a.requests,
        timeout: duration_flag("timeout", &a.common.timeout)?,
    });
    let limit = a.common.limit(a.requests.is_some())?;
    let out = drive(&a.common.runtime, "requests", limit, a.connections, move |tally, c, w| {
        rr_conn(tally, cfg.clone(), c, w)
    })?;
    let mut s = summary("tcp-rr", "requests", a.common.target, a.connections, out);
    s.extra.push(("protocol", if a.http { "http" } else { "echo" }.into()));
    if let Some(r) = a.rate {
        s.extra.push(("target_rate_per_s", r.into()));
    }
    Ok(s)
}

async fn rr_conn(tally: Rc<Tally>, cfg: Arc<RrConfig>, c: usize, w: Window) {
    let quota = cfg.total.map(|t| share(t, cfg.conns, c));
    // Connections start spread over one interval of the schedule.
    let offset = cfg.conn_rate.map(|r| Duration::from_secs_f64(c as f64 / cfg.conns as f64 / r));
    let mut pacer = Pacer::new(cfg.conn_rate, w.start + offset.unwrap_or_default());
    let (mut done, mut fails) = (0u64, 0u32);
    let mut conn = Conn::default();
    while !w.over() && quota.is_none_or(|q| done < q) && fails < MAX_FAILS {
        let Some(stream) = connect(&tally, cfg.target, cfg.timeout, &w).await else {
            fails += 1;
            shard::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        while quota.is_none_or(|q| done < q) {
            let due = pacer.due().await;
            if due >= w.deadline || w.over() {
                return;
            }
            let limit = (Instant::now() + cfg.timeout).min(w.deadline);
            match timeout_at(limit, conn.exchange(&stream, cfg.exchange, &tally)).await {
                Ok(Ok(close)) => {
                    tally.ok(due.elapsed());
                    done += 1;
                    fails = 0;
                    if close {
                        break;
                    }
                }
                Err(_) if w.over() => return, // in flight at the end: not counted
                Ok(Err(e)) => {
                    tally.error(e);
                    fails += 1;
                    break;
                }
                Err(_) => {
                    tally.error(format!("request timed out after {:?}", cfg.timeout));
                    fails += 1;
                    break;
                }
            }
        }
    }
}

/// Connects, counting a failure as an error; None after the window.
async fn connect(
    tally: &Tally,
    target: std::net::SocketAddr,
    timeout: Duration,
    w: &Window,
) -> Option<TcpStream> {
    let limit = (Instant::now() + timeout).min(w.deadline);
    match timeout_at(limit, TcpStream::connect(target)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tally.error(format!("connect to {target}: {e}"));
            None
        }
        Err(_) if w.over() => None,
        Err(_) => {
            tally.error(format!("connect to {target}: timed out after {timeout:?}"));
            None
        }
    }
}

/// A connection's receive state, reused across requests.
#[derive(Debug, Default)]
struct Conn {
    rx: Vec<u8>,
    http: ResponseReader,
}

const RX_SIZE: usize = 16 * 1024;

impl Conn {
    async fn recv(&mut self, stream: &TcpStream, tally: &Tally) -> Result<usize, String> {
        // A receive dropped by a timeout keeps its buffer until the kernel
        // lets go of it, so a fresh one is made here when needed.
        let mut rx = std::mem::take(&mut self.rx);
        if rx.capacity() < RX_SIZE {
            rx = Vec::with_capacity(RX_SIZE);
        }
        rx.clear();
        let (r, rx) = stream.recv(rx).await;
        self.rx = rx;
        match r {
            Ok(0) => Err("connection closed by the target".into()),
            Ok(n) => {
                tally.bytes_in.set(tally.bytes_in.get() + n as u64);
                Ok(n)
            }
            Err(e) => Err(format!("receive: {e}")),
        }
    }

    /// One request and its whole response; `Ok(true)` when the server
    /// will close the connection after it.
    async fn exchange(&mut self, stream: &TcpStream, ex: Exchange, tally: &Tally) -> Result<bool, String> {
        let (Exchange::Echo(req) | Exchange::Http(req)) = ex;
        stream.send_all(req).await.0.map_err(|e| format!("send: {e}"))?;
        tally.bytes_out.set(tally.bytes_out.get() + req.len() as u64);
        match ex {
            Exchange::Echo(payload) => {
                let mut got = 0;
                while got < payload.len() {
                    let n = self.recv(stream, tally).await?;
                    if payload.get(got..got + n) != Some(&self.rx[..n]) {
                        return Err(format!("echo differs from what was sent at byte {got}..{}", got + n));
                    }
                    got += n;
                }
                Ok(false)
            }
            Exchange::Http(_) => {
                self.http.reset();
                loop {
                    let n = self.recv(stream, tally).await?;
                    match self.http.feed(&self.rx[..n]) {
                        Ok(None) => {}
                        Ok(Some(r)) if (200..300).contains(&r.status) => return Ok(r.close),
                        Ok(Some(r)) => return Err(format!("HTTP status {}", r.status)),
                        Err(e) => return Err(e.to_string()),
                    }
                }
            }
        }
    }
}

/// `loadgen tcp-stream`.
pub fn stream(a: &StreamArgs) -> anyhow::Result<Summary> {
    positive("connections", a.connections)?;
    positive("size", a.size)?;
    let chunk = leak(vec![0x5a; a.size]);
    let (target, conns) = (a.common.target, a.connections);
    let timeout = duration_flag("timeout", &a.common.timeout)?;
    let limit = a.common.limit(false)?;
    let out = drive(&a.common.runtime, "sends", limit, conns, move |tally, _, w| {
        stream_conn(tally, target, chunk, timeout, w)
    })?;
    Ok(summary("tcp-stream", "sends", target, conns, out))
}

async fn stream_conn(
    tally: Rc<Tally>,
    target: std::net::SocketAddr,
    chunk: &'static [u8],
    timeout: Duration,
    w: Window,
) {
    let Some(s) = connect(&tally, target, timeout, &w).await else { return };
    let s = Rc::new(s);
    let reader = shard::spawn_local_named("loadgen-drain", drain(s.clone(), tally.clone()));
    // A send is never cut off by the end of the run: one dropped after the
    // kernel took its bytes would go uncounted while its echo is counted.
    // The run ends between sends; a stalled target is bounded by `timeout`.
    while !w.over() {
        match shard::time::timeout(timeout, s.send(chunk)).await {
            Ok((Ok(n), _)) => {
                tally.bytes_out.set(tally.bytes_out.get() + n as u64);
                tally.ok_unmeasured(1);
            }
            Ok((Err(e), _)) => {
                tally.error(format!("send: {e}"));
                break;
            }
            Err(_) => {
                tally.error(format!("send: no progress within {timeout:?}"));
                break;
            }
        }
    }
    let _ = s.shutdown_write().await;
    if shard::time::timeout(timeout, reader).await.is_err() {
        tally.error(format!("the target did not close within {timeout:?} of our FIN"));
    }
}

/// Counts what comes back until end of stream.
async fn drain(s: Rc<TcpStream>, tally: Rc<Tally>) {
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        buf.clear();
        let (r, b) = s.recv(buf).await;
        buf = b;
        match r {
            Ok(0) | Err(_) => return,
            Ok(n) => tally.bytes_in.set(tally.bytes_in.get() + n as u64),
        }
    }
}

/// `loadgen connect`.
pub fn connect_rate(a: &ConnectArgs) -> anyhow::Result<Summary> {
    positive("connections", a.connections)?;
    rate_flag(a.rate)?;
    let exchange = if a.http {
        Some(Exchange::Http(leak(request(&a.common.target.to_string(), "/"))))
    } else if let Some(name) = &a.tls_hello {
        Some(Exchange::Echo(leak(client_hello(name, 512)?)))
    } else {
        (a.size > 0).then(|| Exchange::Echo(leak(vec![b'c'; a.size])))
    };
    let cfg = Arc::new(RrConfig {
        target: a.common.target,
        conns: a.connections,
        exchange: exchange.unwrap_or(Exchange::Echo(&[])),
        conn_rate: a.rate.map(|r| r / a.connections as f64),
        total: a.requests,
        timeout: duration_flag("timeout", &a.common.timeout)?,
    });
    let limit = a.common.limit(a.requests.is_some())?;
    let out = drive(&a.common.runtime, "connections", limit, a.connections, move |tally, c, w| {
        connect_loop(tally, cfg.clone(), c, w)
    })?;
    let mut s = summary("connect", "connections", a.common.target, a.connections, out);
    let round_trip = if a.http {
        "http"
    } else if a.tls_hello.is_some() {
        "tls-hello"
    } else if a.size > 0 {
        "echo"
    } else {
        "none"
    };
    s.extra.push(("round_trip", round_trip.into()));
    if let Some(r) = a.rate {
        s.extra.push(("target_rate_per_s", r.into()));
    }
    Ok(s)
}

async fn connect_loop(tally: Rc<Tally>, cfg: Arc<RrConfig>, c: usize, w: Window) {
    let quota = cfg.total.map(|t| share(t, cfg.conns, c));
    let offset = cfg.conn_rate.map(|r| Duration::from_secs_f64(c as f64 / cfg.conns as f64 / r));
    let mut pacer = Pacer::new(cfg.conn_rate, w.start + offset.unwrap_or_default());
    let (mut done, mut fails) = (0u64, 0u32);
    let mut conn = Conn::default();
    while !w.over() && quota.is_none_or(|q| done < q) && fails < MAX_FAILS {
        // Unpaced: now. Paced: when it was due, so a slow connect delays
        // the next one's start but not its measured latency.
        let t0 = pacer.due().await;
        if t0 >= w.deadline || w.over() {
            return;
        }
        let Some(stream) = connect(&tally, cfg.target, cfg.timeout, &w).await else {
            fails += 1;
            continue;
        };
        let (Exchange::Echo(p) | Exchange::Http(p)) = cfg.exchange;
        if !p.is_empty() {
            let _ = stream.set_nodelay(true);
            let limit = (Instant::now() + cfg.timeout).min(w.deadline);
            match timeout_at(limit, conn.exchange(&stream, cfg.exchange, &tally)).await {
                Ok(Ok(_)) => {}
                Err(_) if w.over() => return,
                Ok(Err(e)) => {
                    tally.error(e);
                    fails += 1;
                    continue;
                }
                Err(_) => {
                    tally.error(format!("round trip timed out after {:?}", cfg.timeout));
                    fails += 1;
                    continue;
                }
            }
        }
        drop(stream);
        tally.ok(t0.elapsed());
        done += 1;
        fails = 0;
    }
}

/// A TLS 1.2-framed ClientHello record of `size` bytes carrying `name` as
/// its server name (SNI), one cipher suite and a padding extension (RFC
/// 7685) for the rest, as browsers pad theirs.
fn client_hello(name: &str, size: usize) -> anyhow::Result<Vec<u8>> {
    let name = name.as_bytes();
    let mut sni = vec![0, 0];
    sni.extend_from_slice(&((name.len() + 5) as u16).to_be_bytes());
    sni.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sni.push(0);
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    // Record header 5, handshake header 4, version 2, random 32, session
    // id 1, suites 4, compression 2, extensions length 2, padding header 4.
    let fixed = 5 + 4 + 2 + 32 + 1 + 4 + 2 + 2 + sni.len() + 4;
    let pad = size.checked_sub(fixed).ok_or_else(|| anyhow::anyhow!("--tls-hello: name too long"))?;
    let mut ext = sni;
    ext.extend_from_slice(&[0, 21]);
    ext.extend_from_slice(&(pad as u16).to_be_bytes());
    ext.resize(ext.len() + pad, 0);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0x42; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut record = vec![0x16, 3, 1];
    record.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
    record.push(1);
    record.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    record.extend_from_slice(&body);
    Ok(record)
}

#[cfg(test)]
mod hello_tests {
    #[test]
    fn the_hello_is_the_size_asked_and_names_the_server() {
        let h = super::client_hello("api.example.com", 512).expect("hello");
        assert_eq!(h.len(), 512);
        assert_eq!(usize::from(u16::from_be_bytes([h[3], h[4]])), 512 - 5, "one record");
        assert!(h.windows(15).any(|w| w == b"api.example.com"));
        let read = cores::sni::server_name(&h);
        assert_eq!(read, cores::sni::Hello::Name("api.example.com".into()), "an SNI router reads it");
        assert!(super::client_hello(&"x".repeat(600), 512).is_err());
    }
}
