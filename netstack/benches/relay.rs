//! TCP relay throughput: one shard forwarding a bulk stream, four ways,
//! against std threads.
//!
//! Topology, on loopback: a source thread (pinned to `ENDS_CPU`) writes
//! `MSG`-byte messages as fast as it can for a fixed time into the relay's
//! inbound connection; the relay (pinned to `RELAY_CPU`) forwards them to
//! a sink thread (also on `ENDS_CPU`), which reads, counts and checks
//! every byte against the source's pattern.
//!
//! Relays, each on one shard (a fresh runtime per round):
//! - `vec`: `TcpStream::recv` into a 64 KiB `Vec`, then `send_all`;
//! - `bufring`: `recv_stream` over a `BufRing` of 64 KiB buffers, then
//!   `send_all` of each `ProvidedBuf` (the multishot receive keeps filling
//!   buffers while a send is in flight);
//! - `splice`: `netstack::tcp::Pipe::new(64 KiB)` and `pipe.splice(from, to)`;
//! - `vec zc`: `recv` into a 64 KiB `Vec`, then `send_all_zc` (zero-copy
//!   sends from a plain `Vec`: on loopback the kernel copies them anyway,
//!   so this shows what pinning and completion notifications cost there);
//!
//! and the peers, std threads pinned to `RELAY_CPU`:
//! - `std::io::copy(&mut inbound, &mut outbound)`, with a second thread
//!   copying the other way (idle here), as a thread-pair relay would;
//! - the same pair with a 64 KiB buffer and `read` / `write_all`.
//!
//! Every round checks that the sink got exactly the bytes the source sent,
//! in order (a byte pattern of period 251), and that the relay moved that
//! many; a mismatch exits non-zero. Relays alternate round by round; the
//! table shows medians. Relay CPU is the relay thread's (plus, for ours,
//! any io_uring worker threads: splice runs in them). Run with
//! `cargo bench -p netstack --bench relay`.
#![allow(unsafe_code)]

use bench_support::{fail, median, pin_to, quick, thread_cpu};

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netstack::tcp::{Pipe, TcpStream};
use shard::reactor::BufRing;

/// Bytes per source write.
const MSG: usize = 64 << 10;
/// Relay buffer size (Vec, BufRing buffers, pipe).
const CHUNK: usize = 64 << 10;
/// Buffers in the `bufring` relay's group.
const RING_BUFS: u16 = 16;
/// The byte pattern's period (prime, so a lost or repeated chunk shows).
const PERIOD: usize = 251;
/// Sink read size.
const SINK_READ: usize = 256 << 10;
const ENDS_CPU: usize = 0;
const RELAY_CPU: usize = 1;
/// No progress for this long is a hang, reported as an error.
const STUCK: Duration = Duration::from_secs(5);
/// The whole bench is aborted after this long.
const WATCHDOG: Duration = Duration::from_secs(150);

/// Sending time per round.
fn round_time() -> Duration {
    if quick() {
        Duration::from_millis(40)
    } else {
        Duration::from_millis(1500)
    }
}
/// Upper bound on bytes per round.
fn max_bytes() -> u64 {
    if quick() {
        32 << 20
    } else {
        64 << 30
    }
}
/// Rounds per relay.
fn rounds() -> usize {
    if quick() {
        1
    } else {
        3
    }
}

/// The relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relay {
    Vec,
    BufRing,
    Splice,
    VecZc,
    StdCopy,
    StdBuf,
}

impl Relay {
    const ALL: [Relay; 6] =
        [Relay::Vec, Relay::StdCopy, Relay::BufRing, Relay::Splice, Relay::StdBuf, Relay::VecZc];

    fn name(self) -> &'static str {
        match self {
            Relay::Vec => "(a) shard: `recv` into 64 KiB Vec + `send_all`",
            Relay::BufRing => "(b) shard: `recv_stream` over BufRing 16 x 64 KiB + `send_all(ProvidedBuf)`",
            Relay::Splice => "(c) shard: `Pipe::new(64 KiB)` + `pipe.splice`",
            Relay::VecZc => "(d) shard: `recv` into 64 KiB Vec + `send_all_zc`",
            Relay::StdCopy => "(e) std thread pair: `std::io::copy`",
            Relay::StdBuf => "(f) std thread pair: 64 KiB `read` + `write_all`",
        }
    }

    fn ours(self) -> bool {
        !matches!(self, Relay::StdCopy | Relay::StdBuf)
    }
}

fn main() {
    let started = Instant::now();
    std::thread::spawn(|| {
        std::thread::sleep(WATCHDOG);
        fail(&format!("the benchmark did not finish within {WATCHDOG:?}"));
    });
    let placement = match runtime() {
        Ok((_, p)) => p,
        Err(e) => fail(&format!("runtime: {e}")),
    };
    println!("# netstack TCP relay benchmark");
    println!();
    println!("command: `cargo bench -p netstack --bench relay`");
    println!();
    println!(
        "setup: loopback; source and sink: std threads pinned to cpu {ENDS_CPU}, the source writing {} KiB \
         messages for {:?} per round, the sink checking every byte; relays: {placement} (a fresh runtime \
         per round), std peers on threads pinned to cpu {RELAY_CPU}; {} rounds per relay, alternating",
        MSG >> 10,
        round_time(),
        rounds()
    );
    println!();

    let mut results: Vec<(Relay, Vec<Round>)> = Relay::ALL.iter().map(|&r| (r, Vec::new())).collect();
    let mut notes: Vec<String> = Vec::new();
    for round in 0..rounds() {
        let mut line = format!("round {round}:");
        for (relay, runs) in results.iter_mut() {
            let r = checked(*relay, run_round(*relay));
            line.push_str(&format!(" | {:?} {:.2} Gbit/s", relay, r.gbps()));
            runs.push(r);
        }
        eprintln!("{line}");
    }
    for (relay, runs) in &results {
        if runs.iter().any(|r| r.relay.starved.is_some()) {
            notes.push(format!(
                "{}: the multishot receive found the buffer group empty (ENOBUFS, re-armed) {:.0} times per \
                 round (median)",
                relay.name(),
                median(runs, |r| r.relay.starved.unwrap_or(0) as f64)
            ));
        }
    }

    println!("## TCP relay throughput, one direction (median of {})", rounds());
    println!();
    println!(
        "| relay | median Gbit/s | best Gbit/s | vs std::io::copy | GiB per round | relay CPU busy | relay CPU \
         ms per GiB | of which io_uring workers | source + sink CPU busy (cpu {ENDS_CPU}) | avg bytes per receive |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let std_copy = results
        .iter()
        .find(|(r, _)| *r == Relay::StdCopy)
        .map(|(_, runs)| median(runs, Round::gbps))
        .unwrap_or(f64::NAN);
    for (relay, runs) in &results {
        let chunk = if relay.ours() {
            format!("{:.1} KiB", median(runs, |r| r.bytes as f64 / r.relay.receives.max(1) as f64) / 1024.0)
        } else {
            "n/a".to_string()
        };
        let workers = if relay.ours() {
            format!(
                "{:.0}% ({} seen)",
                median(runs, |r| r.relay.worker_cpu.as_secs_f64() / r.relay.cpu.as_secs_f64()) * 100.0,
                runs.iter().map(|r| r.relay.workers).max().unwrap_or(0)
            )
        } else {
            "n/a".to_string()
        };
        println!(
            "| {} | {:.2} | {:.2} | {:.2}x | {:.2} | {:.0}% | {:.0} | {workers} | {:.0}% | {chunk} |",
            relay.name(),
            median(runs, Round::gbps),
            runs.iter().map(Round::gbps).fold(0.0, f64::max),
            median(runs, Round::gbps) / std_copy,
            median(runs, |r| r.bytes as f64) / (1u64 << 30) as f64,
            median(runs, Round::relay_busy) * 100.0,
            median(runs, Round::relay_ms_per_gib),
            median(runs, Round::ends_busy) * 100.0,
        );
    }
    println!();
    let mut ranked: Vec<(Relay, f64)> =
        results.iter().filter(|(r, _)| r.ours()).map(|(r, runs)| (*r, median(runs, Round::gbps))).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let line: Vec<String> = ranked.iter().map(|(r, g)| format!("{r:?} {:.2}x", g / std_copy)).collect();
    println!("ratios vs std::io::copy (Gbit/s): {}", line.join(", "));
    if let Some(&(best, g)) = ranked.first() {
        let second = ranked.get(1).map_or(f64::NAN, |x| x.1);
        println!(
            "fastest shard relay: **{}** at {:.2} Gbit/s, **{:.2}x** std::io::copy ({:.2}x the next one)",
            best.name(),
            g,
            g / std_copy,
            g / second
        );
    }
    for n in &notes {
        println!("note: {n}");
    }
    println!();
    println!(
        "checked every round: the sink received exactly the bytes the source wrote, in order (pattern of \
         period {PERIOD}), and the relay counted the same number"
    );
    println!(
        "CPU: CLOCK_THREAD_CPUTIME_ID of the relay thread (ours: the shard thread) plus, for ours, \
         /proc/self/task ticks of io_uring worker threads (`iou-*`) seen at the end of the round"
    );
    println!("total bench time: {:.1} s", started.elapsed().as_secs_f64());
}

/// CPU time of this process's io_uring worker threads (`iou-*`), from
/// /proc/self/task (clock ticks, so 10 ms resolution), and their number.
fn io_worker_cpu() -> (Duration, usize) {
    // SAFETY: sysconf has no memory preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    let (mut total, mut workers) = (0u64, 0usize);
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return (Duration::ZERO, 0) };
    for entry in dir.flatten() {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("iou-") {
            continue;
        }
        workers += 1;
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // The fields after the command name start with the state (field
        // 3), so utime (14) and stime (15) are at 11 and 12.
        let Some(close) = stat.rfind(')') else { continue };
        let mut fields = stat[close + 1..].split_whitespace().skip(11);
        let u: u64 = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
        let s: u64 = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
        total += u + s;
    }
    (Duration::from_secs_f64(total as f64 / ticks), workers)
}

/// `pattern()[i] == i % PERIOD`, long enough for a `MSG` slice at any phase.
fn pattern() -> Vec<u8> {
    (0..MSG + PERIOD).map(|i| (i % PERIOD) as u8).collect()
}

// ------------------------------------------------------------------ rounds

/// What the relay reports.
#[derive(Debug, Default)]
struct RelayDone {
    bytes: u64,
    receives: u64,
    cpu: Duration,
    /// Of which in io_uring worker threads, and how many there were.
    worker_cpu: Duration,
    workers: usize,
    /// Times the buffer group ran dry (`bufring` only).
    starved: Option<u64>,
}

/// What the source reports.
#[derive(Debug)]
struct SourceDone {
    sent: u64,
    started: Instant,
    cpu: Duration,
}

/// What the sink reports.
#[derive(Debug)]
struct SinkDone {
    received: u64,
    finished: Instant,
    /// Offset of the first byte that differs from the pattern.
    mismatch: Option<u64>,
    cpu: Duration,
}

/// One checked round.
#[derive(Debug)]
struct Round {
    bytes: u64,
    elapsed: Duration,
    relay: RelayDone,
    ends_cpu: Duration,
}

impl Round {
    fn gbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64() / 1e9
    }
    fn relay_busy(&self) -> f64 {
        self.relay.cpu.as_secs_f64() / self.elapsed.as_secs_f64()
    }
    fn relay_ms_per_gib(&self) -> f64 {
        self.relay.cpu.as_secs_f64() * 1e3 / (self.bytes as f64 / (1u64 << 30) as f64)
    }
    fn ends_busy(&self) -> f64 {
        self.ends_cpu.as_secs_f64() / self.elapsed.as_secs_f64()
    }
}

/// What a round returns.
type Outcome = Result<(SourceDone, RelayDone, SinkDone), String>;

/// Checks a round exactly.
fn checked(relay: Relay, r: Outcome) -> Round {
    let (src, rel, sink) = r.unwrap_or_else(|e| fail(&format!("{relay:?}: {e}")));
    let mut errors = Vec::new();
    if src.sent == 0 {
        errors.push("the source sent nothing".to_string());
    }
    if sink.received != src.sent || rel.bytes != src.sent {
        errors.push(format!(
            "the source sent {} bytes, the relay moved {}, the sink received {}",
            src.sent, rel.bytes, sink.received
        ));
    }
    if let Some(at) = sink.mismatch {
        errors.push(format!("the sink's byte {at} is not what the source sent"));
    }
    if !errors.is_empty() {
        fail(&format!("{}: {}", relay.name(), errors.join("; ")));
    }
    Round {
        bytes: sink.received,
        elapsed: sink.finished.saturating_duration_since(src.started),
        ends_cpu: src.cpu + sink.cpu,
        relay: rel,
    }
}

/// Accepts one connection, giving up after `STUCK`.
fn accept(listener: &StdListener) -> io::Result<StdStream> {
    listener.set_nonblocking(true)?;
    let since = Instant::now();
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)?;
                return Ok(s);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if since.elapsed() > STUCK {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "no connection from the relay"));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
}

fn source(listener: StdListener) -> io::Result<SourceDone> {
    pin_to(ENDS_CPU);
    let pat = pattern();
    let mut s = accept(&listener)?;
    s.set_write_timeout(Some(STUCK))?;
    let cpu0 = thread_cpu();
    let started = Instant::now();
    let deadline = started + round_time();
    let max = max_bytes();
    let mut sent = 0u64;
    while sent < max && Instant::now() < deadline {
        let at = (sent % PERIOD as u64) as usize;
        s.write_all(&pat[at..at + MSG])?;
        sent += MSG as u64;
    }
    s.shutdown(Shutdown::Write)?;
    Ok(SourceDone { sent, started, cpu: thread_cpu() - cpu0 })
}

fn sink(listener: StdListener) -> io::Result<SinkDone> {
    pin_to(ENDS_CPU);
    let pat = pattern();
    let mut s = accept(&listener)?;
    s.set_read_timeout(Some(STUCK))?;
    let cpu0 = thread_cpu();
    let mut buf = vec![0u8; SINK_READ];
    let mut received = 0u64;
    let mut mismatch = None;
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if mismatch.is_none() {
            let mut off = 0;
            while off < n {
                let at = ((received + off as u64) % PERIOD as u64) as usize;
                let len = (n - off).min(MSG);
                let (got, want) = (&buf[off..off + len], &pat[at..at + len]);
                if got != want {
                    let i = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
                    mismatch = Some(received + (off + i) as u64);
                    break;
                }
                off += len;
            }
        }
        received += n as u64;
    }
    let finished = Instant::now();
    Ok(SinkDone { received, finished, mismatch, cpu: thread_cpu() - cpu0 })
}

/// Runs one round of `relay` between a fresh source and sink.
fn run_round(relay: Relay) -> Outcome {
    let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
    let src_listener = StdListener::bind(localhost).map_err(|e| format!("bind: {e}"))?;
    let sink_listener = StdListener::bind(localhost).map_err(|e| format!("bind: {e}"))?;
    let src_addr = src_listener.local_addr().map_err(|e| e.to_string())?;
    let sink_addr = sink_listener.local_addr().map_err(|e| e.to_string())?;
    let src = std::thread::spawn(move || source(src_listener));
    let snk = std::thread::spawn(move || sink(sink_listener));
    let rel = if relay.ours() { ours(relay, src_addr, sink_addr) } else { peer(relay, src_addr, sink_addr) };
    let src = src.join().map_err(|_| "source panicked".to_string())?;
    let snk = snk.join().map_err(|_| "sink panicked".to_string())?;
    let rel = rel?;
    let src = src.map_err(|e| format!("source: {e}"))?;
    let snk = snk.map_err(|e| format!("sink: {e}"))?;
    Ok((src, rel, snk))
}

// -------------------------------------------------------------------- ours

/// One shard on `RELAY_CPU` (unpinned if that fails).
fn runtime() -> Result<(shard::Runtime, String), String> {
    let builder = || shard::Builder::new().grace(Duration::from_millis(200)).name("relay-shard");
    match builder().cpus(vec![RELAY_CPU]).build() {
        Ok(rt) => Ok((rt, format!("one shard pinned to cpu {RELAY_CPU}"))),
        Err(e) => {
            let rt = builder().shards(1).pin(false).build().map_err(|e| e.to_string())?;
            Ok((rt, format!("one shard NOT pinned ({e})")))
        }
    }
}

/// Runs relay `relay` on a fresh one-shard runtime.
fn ours(relay: Relay, source: SocketAddr, sink: SocketAddr) -> Result<RelayDone, String> {
    let (rt, _) = runtime()?;
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let r = rt.run(move || async move { ours_main(relay, source, sink).await });
        let _ = tx.send(r.map_err(|e| format!("runtime: {e}")).and_then(|r| r));
    });
    let r = rx.recv().map_err(|_| "the relay runtime died".to_string())?;
    thread.join().map_err(|_| "the relay thread panicked".to_string())?;
    r
}

async fn ours_main(relay: Relay, source: SocketAddr, sink: SocketAddr) -> Result<RelayDone, String> {
    let mut starved = None;
    let ring = match relay {
        Relay::BufRing => Some(BufRing::new(RING_BUFS, CHUNK).map_err(|e| format!("buffer ring: {e}"))?),
        _ => None,
    };
    // The sink first: by the time the source accepts, the path is whole.
    let to = TcpStream::connect_timeout(sink, STUCK).await.map_err(|e| format!("connect sink: {e}"))?;
    let from = TcpStream::connect_timeout(source, STUCK).await.map_err(|e| format!("connect source: {e}"))?;
    let cpu0 = thread_cpu();
    let workers0 = io_worker_cpu();
    let (bytes, receives) = match (relay, &ring) {
        (Relay::Vec, _) => relay_vec(&from, &to, false).await,
        (Relay::VecZc, _) => relay_vec(&from, &to, true).await,
        (Relay::BufRing, Some(ring)) => {
            let r = relay_ring(&from, &to, ring).await;
            if let Ok((_, _, n)) = &r {
                starved = Some(*n);
            }
            r.map(|(b, n, _)| (b, n))
        }
        (Relay::Splice, _) => relay_splice(&from, &to).await,
        _ => unreachable!("every shard relay has what it needs"),
    }
    .map_err(|e| format!("relay: {e}"))?;
    to.shutdown_write().await.map_err(|e| format!("shutdown: {e}"))?;
    let (workers1, workers) = io_worker_cpu();
    let worker_cpu = workers1.saturating_sub(workers0.0);
    let cpu = (thread_cpu() - cpu0) + worker_cpu;
    Ok(RelayDone { bytes, receives, cpu, worker_cpu, workers, starved })
}

/// `recv` into a `Vec`, then `send_all` (`send_all_zc` when `zc`).
async fn relay_vec(from: &TcpStream, to: &TcpStream, zc: bool) -> io::Result<(u64, u64)> {
    let (mut bytes, mut receives) = (0u64, 0u64);
    let mut buf = Vec::with_capacity(CHUNK);
    loop {
        buf.clear();
        let (r, b) = from.recv(buf).await;
        let n = r?;
        if n == 0 {
            return Ok((bytes, receives));
        }
        let (r, b) = if zc { to.send_all_zc(b).await } else { to.send_all(b).await };
        r?;
        buf = b;
        bytes += n as u64;
        receives += 1;
    }
}

async fn relay_ring(from: &TcpStream, to: &TcpStream, ring: &BufRing) -> io::Result<(u64, u64, u64)> {
    let (mut bytes, mut receives) = (0u64, 0u64);
    let mut rx = from.recv_stream(ring);
    while let Some(buf) = rx.next().await? {
        let n = buf.len();
        let (r, buf) = to.send_all(buf).await;
        r?;
        drop(buf);
        bytes += n as u64;
        receives += 1;
    }
    Ok((bytes, receives, rx.starved()))
}

async fn relay_splice(from: &TcpStream, to: &TcpStream) -> io::Result<(u64, u64)> {
    let pipe = Pipe::new(CHUNK)?;
    let (mut bytes, mut receives) = (0u64, 0u64);
    loop {
        let n = pipe.splice(from, to).await?;
        if n == 0 {
            return Ok((bytes, receives));
        }
        bytes += n as u64;
        receives += 1;
    }
}

// ------------------------------------------------------------------- peers

/// A std thread pair on `RELAY_CPU`: this thread copies source -> sink, a
/// second one sink -> source (idle here).
fn peer(relay: Relay, source: SocketAddr, sink: SocketAddr) -> Result<RelayDone, String> {
    let forward = std::thread::spawn(move || -> io::Result<RelayDone> {
        pin_to(RELAY_CPU);
        let mut outbound = StdStream::connect(sink)?;
        let mut inbound = StdStream::connect(source)?;
        outbound.set_read_timeout(Some(STUCK * 2))?;
        inbound.set_read_timeout(Some(STUCK))?;
        let (mut back_in, mut back_out) = (outbound.try_clone()?, inbound.try_clone()?);
        let backward = std::thread::spawn(move || {
            pin_to(RELAY_CPU);
            let r = io::copy(&mut back_in, &mut back_out);
            let _ = back_out.shutdown(Shutdown::Write);
            r
        });
        let cpu0 = thread_cpu();
        let copied = match relay {
            Relay::StdCopy => io::copy(&mut inbound, &mut outbound),
            _ => copy_64k(&mut inbound, &mut outbound),
        };
        let cpu = thread_cpu() - cpu0;
        match copied {
            Ok(_) => outbound.shutdown(Shutdown::Write)?,
            Err(_) => {
                // Unblock the other thread and both ends.
                let _ = outbound.shutdown(Shutdown::Both);
                let _ = inbound.shutdown(Shutdown::Both);
            }
        }
        let back = backward.join().map_err(|_| io::Error::other("the backward thread panicked"))?;
        let bytes = copied?;
        if back? != 0 {
            return Err(io::Error::other("bytes came back from the sink"));
        }
        Ok(RelayDone { bytes, receives: 0, cpu, worker_cpu: Duration::ZERO, workers: 0, starved: None })
    });
    let r = forward.join().map_err(|_| "the relay thread panicked".to_string())?;
    r.map_err(|e| format!("relay: {e}"))
}

fn copy_64k(from: &mut StdStream, to: &mut StdStream) -> io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}
