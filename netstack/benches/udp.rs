//! UDP receive into a shard against a blocking `recv_from` loop.
//!
//! - Sender: one std thread pinned to `SENDER_CPU`, sending statsd-like
//!   datagrams (`LINES` lines of `metric.<seq>.<line>:1|c\n`, `DGRAM_LEN`
//!   bytes each) with `sendmmsg` in batches of `SEND_BATCH`.
//! - Ours: one shard pinned to `RECEIVER_CPU`, receiving through
//!   `netstack::backend::KernelUdp` (multishot `recvmsg` into a provided
//!   buffer ring of `BUFFERS` x `BUF_SIZE`) with `recv_burst` of at most
//!   `BURST` datagrams; once with the runtime's default idle poll, once
//!   with `idle_poll(0)` (the shard parks as soon as it is idle).
//! - Peer: a std thread pinned to `RECEIVER_CPU`, a blocking `recv_from`
//!   loop on a std `UdpSocket`.
//!
//! Modes:
//! - unpaced: the sender sends as fast as it can for a fixed time;
//! - paced: the sender sends at a fixed rate for a fixed time;
//! - backlog drain: the sender fills the socket's queue while the receiver
//!   waits (with a receive buffer large enough to hold it all), then the
//!   receiver drains it: the receiver's own capacity, which the other two
//!   modes cannot show when the sender is the slower side.
//!
//! Both receivers get the same `SO_RCVBUF` and do the same work per
//! datagram: count it, its bytes and its lines (`b'\n'`), and check its
//! sequence number against a bitmap (no duplicates, none never sent).
//! Every round is checked exactly: each datagram has `LINES` lines and
//! `DGRAM_LEN` bytes, and received + dropped by the socket (its `drops`
//! counter in `/proc/net/udp`) == sent; a mismatch exits non-zero.
//!
//! A round ends with a `STOP` datagram, sent once the receiver's socket
//! queue is empty (in drain mode, right after the backlog) and resent if
//! lost. Received datagrams/s is over the time from the first send (drain:
//! from the receiver's start) to the receiver seeing `STOP`.
//!
//! Sides alternate round by round in one process; the tables show medians.
//! Only the ratios mean anything on a shared machine. Run with
//! `cargo bench -p netstack --bench udp`.
#![allow(unsafe_code)]

use bench_support::{fail, fmt_count, fmt_rate, median, pin_to, quick, thread_cpu};

use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdp};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use netstack::backend::{DatagramBackend, KernelUdp, Received};
use netstack::udp::{Datagram, UdpSocket};

/// Lines per datagram.
const LINES: usize = 20;
/// Bytes per line: `metric.` + 10-digit sequence + `.` + 2-digit line + `:1|c\n`.
const LINE_LEN: usize = 25;
/// Bytes per datagram.
const DGRAM_LEN: usize = LINES * LINE_LEN;
/// Where the sequence number sits in every line.
const SEQ_AT: usize = 7;
const SEQ_DIGITS: usize = 10;
/// Datagrams per `sendmmsg`.
const SEND_BATCH: usize = 32;
/// Our receive burst and buffer ring.
const BURST: usize = 64;
const BUFFERS: u16 = 1024;
const BUF_SIZE: usize = 2048;
/// The receive buffer both receivers ask for (timed modes).
const RCVBUF: usize = 4 << 20;
/// The receive buffer of the backlog drain mode: room for the backlog.
const DRAIN_RCVBUF: usize = 512 << 20;
/// The end-of-round marker (shorter than any data datagram).
const STOP: &[u8] = b"STOP";
const SENDER_CPU: usize = 0;
const RECEIVER_CPU: usize = 1;
/// No progress for this long is a hang, reported as an error.
const STUCK: Duration = Duration::from_secs(5);
/// The whole bench is aborted after this long.
const WATCHDOG: Duration = Duration::from_secs(150);

/// Sending time per round (timed modes).
fn round_time() -> Duration {
    if quick() {
        Duration::from_millis(60)
    } else {
        Duration::from_millis(1500)
    }
}
/// Upper bound on datagrams per round (also the size of the seq bitmap).
fn max_datagrams() -> u64 {
    if quick() {
        20_000
    } else {
        20_000_000
    }
}
/// Datagrams queued before a backlog drain.
fn drain_datagrams() -> u64 {
    if quick() {
        5_000
    } else {
        200_000
    }
}
/// Rounds per side and mode.
fn rounds() -> usize {
    if quick() {
        1
    } else {
        3
    }
}

/// How the sender sends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// As fast as it can, for `round_time()`.
    Unpaced,
    /// At this many datagrams/s, for `round_time()`.
    Paced(f64),
    /// Queue this many while the receiver waits, then let it drain them.
    Drain(u64),
}

impl Mode {
    fn name(self) -> String {
        match self {
            Mode::Unpaced => "unpaced".to_string(),
            Mode::Paced(r) => format!("paced {}", fmt_rate(r)),
            Mode::Drain(n) => format!("backlog drain ({} queued)", fmt_count(n)),
        }
    }
}

fn modes() -> Vec<Mode> {
    let paced = if quick() { 50_000.0 } else { 100_000.0 };
    vec![Mode::Unpaced, Mode::Paced(paced), Mode::Drain(drain_datagrams())]
}

/// Which receiver.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Side {
    /// A shard with `KernelUdp`; `true`: `idle_poll(0)`.
    Ours { park_at_once: bool },
    /// A blocking `recv_from` loop.
    Peer,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Ours { park_at_once: false } => "ours: shard + KernelUdp",
            Side::Ours { park_at_once: true } => "ours, idle_poll(0)",
            Side::Peer => "peer: std recv_from loop",
        }
    }
}

/// The receivers of a mode, in the order they alternate.
fn sides(mode: Mode) -> Vec<Side> {
    match mode {
        // A draining receiver is never idle: the idle poll changes nothing.
        Mode::Drain(_) => vec![Side::Ours { park_at_once: false }, Side::Peer],
        _ => vec![Side::Ours { park_at_once: false }, Side::Peer, Side::Ours { park_at_once: true }],
    }
}

/// The rounds of one receiver in one mode.
type SideRuns = (Side, Vec<Round>);

fn main() {
    let started = Instant::now();
    std::thread::spawn(|| {
        std::thread::sleep(WATCHDOG);
        fail(&format!("the benchmark did not finish within {WATCHDOG:?}"));
    });
    let placement = match runtime(false) {
        Ok((_, p)) => p,
        Err(e) => fail(&format!("runtime: {e}")),
    };
    println!("# netstack UDP receive benchmark");
    println!();
    println!("command: `cargo bench -p netstack --bench udp`");
    println!();
    println!(
        "setup: loopback; sender: one std thread pinned to cpu {SENDER_CPU}, `sendmmsg` of {SEND_BATCH} \
         datagrams per call, {DGRAM_LEN} B datagrams of {LINES} statsd lines (`metric.<seq>.<n>:1|c`), \
         {:?} per timed round; ours: {placement}, `KernelUdp::recv_burst` (max {BURST}) over a BufRing of \
         {BUFFERS} x {BUF_SIZE} B; peer: std thread pinned to cpu {RECEIVER_CPU}, blocking `recv_from`; \
         {} rounds per receiver and mode, alternating",
        round_time(),
        rounds()
    );

    let mut results: Vec<(Mode, Vec<SideRuns>)> = Vec::new();
    let mut rcvbuf_notes: Vec<String> = Vec::new();
    for mode in modes() {
        let mut per_side: Vec<SideRuns> = sides(mode).into_iter().map(|s| (s, Vec::new())).collect();
        for round in 0..rounds() {
            let mut line = format!("{} round {round}:", mode.name());
            for (side, runs) in per_side.iter_mut() {
                let r = checked(side.name(), run_round(*side, mode));
                line.push_str(&format!(
                    " | {} {:.0} dgram/s ({:.2}% of sent, {:.2} us cpu/dgram, STOP seen {:.1} ms after the \
                     last send)",
                    side.name(),
                    r.rx_rate(),
                    r.fraction() * 100.0,
                    r.rx_us_per_dgram(),
                    r.tail.as_secs_f64() * 1e3
                ));
                let note = format!(
                    "{}: asked for {} KiB with {}; the kernel reports {} KiB",
                    if matches!(mode, Mode::Drain(_)) { "backlog drain" } else { "timed modes" },
                    r.rcvbuf.asked >> 10,
                    r.rcvbuf.how,
                    r.rcvbuf.got >> 10,
                );
                if !rcvbuf_notes.contains(&note) {
                    rcvbuf_notes.push(note);
                }
                runs.push(r);
            }
            eprintln!("{line}");
        }
        results.push((mode, per_side));
    }
    println!("SO_RCVBUF, the same for every receiver: {}", rcvbuf_notes.join("; "));
    println!();

    println!("## UDP receive, datagrams/s received (median of {})", rounds());
    println!();
    println!(
        "| sender | receiver | sent dgram/s | received dgram/s | received lines/s | received/sent | dropped \
         by socket | receiver CPU us/dgram | receiver CPU busy | ring starved |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (mode, per_side) in &results {
        for (side, runs) in per_side {
            let starved = match side {
                Side::Ours { .. } => format!("{:.0}", median(runs, |r| r.starved as f64)),
                Side::Peer => "n/a".to_string(),
            };
            println!(
                "| {} | {} | {} | {} | {} | {:.2}% | {} | {:.2} | {:.0}% | {starved} |",
                mode.name(),
                side.name(),
                fmt_rate(median(runs, Round::tx_rate)),
                fmt_rate(median(runs, Round::rx_rate)),
                fmt_rate(median(runs, Round::lines_rate)),
                median(runs, Round::fraction) * 100.0,
                fmt_count(median(runs, |r| r.drops as f64) as u64),
                median(runs, Round::rx_us_per_dgram),
                median(runs, Round::rx_busy) * 100.0,
            );
        }
    }
    println!();
    for (mode, per_side) in &results {
        let get = |want: Side| per_side.iter().find(|(s, _)| *s == want).map(|(_, r)| r.as_slice());
        let (Some(ours), Some(peer)) = (get(Side::Ours { park_at_once: false }), get(Side::Peer)) else {
            continue;
        };
        let mut line = format!(
            "{}: ratio ours/peer received datagrams/s: **{:.2}x**; received/sent ours {:.2}% vs peer {:.2}%; \
             receiver CPU per datagram ours/peer: {:.2}x",
            mode.name(),
            median(ours, Round::rx_rate) / median(peer, Round::rx_rate),
            median(ours, Round::fraction) * 100.0,
            median(peer, Round::fraction) * 100.0,
            median(ours, Round::rx_us_per_dgram) / median(peer, Round::rx_us_per_dgram),
        );
        if let Some(parked) = get(Side::Ours { park_at_once: true }) {
            line.push_str(&format!(
                "; with idle_poll(0): {:.2}x received, {:.2}x CPU per datagram",
                median(parked, Round::rx_rate) / median(peer, Round::rx_rate),
                median(parked, Round::rx_us_per_dgram) / median(peer, Round::rx_us_per_dgram),
            ));
        }
        println!("{line}");
    }
    println!();
    println!(
        "checked every round: each datagram {DGRAM_LEN} B and {LINES} lines, no duplicate or unknown \
         sequence number, received + dropped by the socket (`drops` in /proc/net/udp) == sent"
    );
    println!(
        "CPU: CLOCK_THREAD_CPUTIME_ID of the receiving thread (the shard thread for ours, which includes \
         the runtime's idle poll unless idle_poll(0))"
    );
    println!("total bench time: {:.1} s", started.elapsed().as_secs_f64());
}

// ------------------------------------------------------------- datagrams

/// What a receiver counted and checked.
#[derive(Debug)]
struct Tally {
    datagrams: u64,
    lines: u64,
    bytes: u64,
    /// Data datagrams that were not `DGRAM_LEN` bytes of well-formed lines.
    malformed: u64,
    truncated: u64,
    duplicates: u64,
    /// Highest sequence number seen + 1.
    seq_end: u64,
    seen: Vec<u64>,
}

enum Seen {
    Data,
    Stop,
}

impl Tally {
    fn new() -> Tally {
        let words = max_datagrams().div_ceil(64) as usize;
        Tally {
            datagrams: 0,
            lines: 0,
            bytes: 0,
            malformed: 0,
            truncated: 0,
            duplicates: 0,
            seq_end: 0,
            seen: vec![0; words],
        }
    }

    /// Counts one datagram; the same work on both sides.
    #[inline]
    fn add(&mut self, p: &[u8], truncated: bool) -> Seen {
        if p == STOP {
            return Seen::Stop;
        }
        self.datagrams += 1;
        self.bytes += p.len() as u64;
        self.lines += p.iter().filter(|&&b| b == b'\n').count() as u64;
        if truncated {
            self.truncated += 1;
        }
        match parse_seq(p) {
            Some(seq) if (seq as usize) < self.seen.len() * 64 => {
                let (w, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
                if self.seen[w] & bit != 0 {
                    self.duplicates += 1;
                }
                self.seen[w] |= bit;
                self.seq_end = self.seq_end.max(seq + 1);
            }
            _ => self.malformed += 1,
        }
        Seen::Data
    }
}

fn parse_seq(p: &[u8]) -> Option<u64> {
    if p.len() != DGRAM_LEN || &p[..SEQ_AT] != b"metric." || p[LINE_LEN - 1] != b'\n' {
        return None;
    }
    let mut seq = 0u64;
    for &d in &p[SEQ_AT..SEQ_AT + SEQ_DIGITS] {
        if !d.is_ascii_digit() {
            return None;
        }
        seq = seq * 10 + u64::from(d - b'0');
    }
    Some(seq)
}

/// Writes datagram `seq` into `buf` (whose line numbers and punctuation
/// are already in place from [`template`]).
fn fill(buf: &mut [u8; DGRAM_LEN], seq: u64) {
    let mut digits = [b'0'; SEQ_DIGITS];
    let mut v = seq;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    for line in buf.chunks_exact_mut(LINE_LEN) {
        line[SEQ_AT..SEQ_AT + SEQ_DIGITS].copy_from_slice(&digits);
    }
}

fn template() -> [u8; DGRAM_LEN] {
    let mut buf = [0u8; DGRAM_LEN];
    for (n, line) in buf.chunks_exact_mut(LINE_LEN).enumerate() {
        let text = format!("metric.{:010}.{:02}:1|c\n", 0, n);
        line.copy_from_slice(text.as_bytes());
    }
    buf
}

// ---------------------------------------------------------------- sockets

/// What the receive buffer ended up as.
#[derive(Debug, Clone, Copy)]
struct RcvBuf {
    asked: usize,
    how: &'static str,
    got: usize,
}

/// Asks for `bytes` of receive buffer: `SO_RCVBUFFORCE` (past `rmem_max`,
/// needs CAP_NET_ADMIN), else `SO_RCVBUF`.
fn set_rcvbuf(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<RcvBuf> {
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: setsockopt reads an int from a live local; fd is open.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    let sock = socket2::SockRef::from(&fd);
    let how = if rc == 0 {
        "SO_RCVBUFFORCE"
    } else {
        sock.set_recv_buffer_size(bytes)?;
        "SO_RCVBUF (SO_RCVBUFFORCE refused)"
    };
    Ok(RcvBuf { asked: bytes, how, got: sock.recv_buffer_size()? })
}

/// (bytes queued, datagrams dropped) of the IPv4 UDP socket bound to
/// 127.0.0.1:`port`, from /proc/net/udp.
fn socket_queue(port: u16) -> Option<(u64, u64)> {
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    let want = format!("0100007F:{port:04X}");
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 13 || f[1] != want {
            continue;
        }
        let rx_queue = u64::from_str_radix(f[4].split(':').nth(1)?, 16).ok()?;
        let drops = f[12].parse().ok()?;
        return Some((rx_queue, drops));
    }
    None
}

// ------------------------------------------------------------------ rounds

/// What one round measured, on one side.
#[derive(Debug)]
struct Round {
    sent: u64,
    tx_elapsed: Duration,
    received: u64,
    lines: u64,
    rx_elapsed: Duration,
    rx_cpu: Duration,
    drops: u64,
    starved: u64,
    rcvbuf: RcvBuf,
    /// From the sender's last datagram to the receiver seeing `STOP`.
    tail: Duration,
}

impl Round {
    fn tx_rate(&self) -> f64 {
        self.sent as f64 / self.tx_elapsed.as_secs_f64()
    }
    fn rx_rate(&self) -> f64 {
        self.received as f64 / self.rx_elapsed.as_secs_f64()
    }
    fn lines_rate(&self) -> f64 {
        self.lines as f64 / self.rx_elapsed.as_secs_f64()
    }
    fn fraction(&self) -> f64 {
        self.received as f64 / self.sent as f64
    }
    fn rx_us_per_dgram(&self) -> f64 {
        self.rx_cpu.as_secs_f64() * 1e6 / self.received as f64
    }
    fn rx_busy(&self) -> f64 {
        self.rx_cpu.as_secs_f64() / self.rx_elapsed.as_secs_f64()
    }
}

/// What a receiver reports when it saw `STOP`.
#[derive(Debug)]
struct RxDone {
    tally: Tally,
    /// When it started receiving (drain mode: after the backlog was queued).
    started_at: Instant,
    stopped_at: Instant,
    cpu: Duration,
    drops: u64,
    starved: u64,
}

/// What the sender reports.
#[derive(Debug)]
struct TxDone {
    sent: u64,
    started: Instant,
    finished: Instant,
    stops: u64,
}

/// Checks a round exactly; returns the figures.
fn checked(what: &str, r: Result<(Mode, TxDone, RxDone, RcvBuf), String>) -> Round {
    let (mode, tx, rx, rcvbuf) = r.unwrap_or_else(|e| fail(&format!("{what}: {e}")));
    let t = &rx.tally;
    let mut errors = Vec::new();
    if tx.sent == 0 || t.datagrams == 0 {
        errors.push(format!("nothing went through (sent {}, received {})", tx.sent, t.datagrams));
    }
    if let Mode::Drain(n) = mode {
        if tx.sent != n {
            errors.push(format!("{} datagrams queued, {n} wanted", tx.sent));
        }
    }
    if t.malformed + t.truncated + t.duplicates > 0 {
        errors.push(format!(
            "{} malformed, {} truncated, {} duplicate datagrams",
            t.malformed, t.truncated, t.duplicates
        ));
    }
    if t.seq_end > tx.sent {
        errors.push(format!("sequence number {} received, only {} sent", t.seq_end - 1, tx.sent));
    }
    if t.lines != t.datagrams * LINES as u64 || t.bytes != t.datagrams * DGRAM_LEN as u64 {
        errors.push(format!("{} datagrams but {} lines and {} bytes", t.datagrams, t.lines, t.bytes));
    }
    // Every datagram is received or dropped by the socket; a `STOP` resent
    // because an earlier one was dropped may be among the drops.
    let extra_stops = tx.stops.saturating_sub(1);
    let accounted = t.datagrams + rx.drops;
    if !(tx.sent..=tx.sent + extra_stops).contains(&accounted) {
        errors.push(format!(
            "sent {}, received {} + dropped by the socket {} = {} ({} STOPs sent)",
            tx.sent, t.datagrams, rx.drops, accounted, tx.stops
        ));
    }
    if !errors.is_empty() {
        fail(&format!("{} ({}): {}", what, mode.name(), errors.join("; ")));
    }
    let rx_from = match mode {
        Mode::Drain(_) => rx.started_at,
        _ => tx.started,
    };
    Round {
        sent: tx.sent,
        tx_elapsed: tx.finished - tx.started,
        received: t.datagrams,
        lines: t.lines,
        rx_elapsed: rx.stopped_at.saturating_duration_since(rx_from),
        rx_cpu: rx.cpu,
        drops: t.datagrams.max(tx.sent) - t.datagrams,
        starved: rx.starved,
        rcvbuf,
        tail: rx.stopped_at.saturating_duration_since(tx.finished),
    }
}

/// Flags shared by the sender and the receiver of a round.
#[derive(Debug, Default)]
struct Flags {
    /// Drain mode: the backlog is queued, start receiving.
    go: AtomicBool,
    /// The receiver saw `STOP`.
    done: AtomicBool,
}

/// Sends to `to` from a thread pinned to `SENDER_CPU` (see [`Mode`]), then
/// ends the round with `STOP`: right after the backlog in drain mode, else
/// once the receiver's queue is empty; resent (when the queue is empty
/// again) until the receiver says it saw one.
fn sender(to: SocketAddr, mode: Mode, flags: Arc<Flags>) -> std::thread::JoinHandle<io::Result<TxDone>> {
    std::thread::spawn(move || {
        pin_to(SENDER_CPU);
        let sock = StdUdp::bind("127.0.0.1:0")?;
        sock.connect(to)?;
        let mut bufs = vec![template(); SEND_BATCH];
        // SAFETY: an all-zero iovec/mmsghdr is a valid empty value.
        let mut iovs: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; SEND_BATCH];
        // SAFETY: as above.
        let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; SEND_BATCH];
        for (hdr, iov) in hdrs.iter_mut().zip(iovs.iter_mut()) {
            iov.iov_len = DGRAM_LEN;
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
        }
        let (max, timed) = match mode {
            Mode::Drain(n) => (n.min(max_datagrams()), false),
            _ => (max_datagrams(), true),
        };
        let started = Instant::now();
        let deadline = started + round_time();
        let mut sent = 0u64;
        while sent < max {
            let now = Instant::now();
            if timed && now >= deadline {
                break;
            }
            let n = match mode {
                Mode::Paced(rate) => {
                    let due = (rate * (now - started).as_secs_f64()) as u64;
                    if due <= sent {
                        std::thread::sleep(Duration::from_micros(50));
                        continue;
                    }
                    (due - sent).min(SEND_BATCH as u64)
                }
                _ => SEND_BATCH as u64,
            };
            let n = n.min(max - sent) as usize;
            for (i, (buf, iov)) in bufs.iter_mut().zip(iovs.iter_mut()).take(n).enumerate() {
                fill(buf, sent + i as u64);
                iov.iov_base = buf.as_mut_ptr().cast();
            }
            // SAFETY: the first `n` headers point at live iovecs, which point at live buffers of DGRAM_LEN bytes; none moves during the call.
            let rc = unsafe { libc::sendmmsg(sock.as_raw_fd(), hdrs.as_mut_ptr(), n as libc::c_uint, 0) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(io::Error::new(e.kind(), format!("sendmmsg after {sent} datagrams: {e}")));
            }
            sent += rc as u64;
        }
        let finished = Instant::now();
        let mut stops = 0u64;
        let mut last_stop = None;
        if let Mode::Drain(_) = mode {
            sock.send(STOP)?;
            stops += 1;
            last_stop = Some(Instant::now());
            flags.go.store(true, Ordering::Release);
        }
        let port = to.port();
        loop {
            if flags.done.load(Ordering::Acquire) {
                break;
            }
            if finished.elapsed() > STUCK {
                let queue = socket_queue(port);
                return Err(io::Error::other(format!(
                    "the receiver did not see STOP within {STUCK:?} after the last datagram ({stops} sent; \
                     queue bytes and drops now: {queue:?})"
                )));
            }
            let resend = last_stop.is_none_or(|t: Instant| t.elapsed() > Duration::from_millis(50));
            if resend {
                match socket_queue(port) {
                    Some((0, _)) => {
                        sock.send(STOP)?;
                        stops += 1;
                        last_stop = Some(Instant::now());
                    }
                    Some(_) => {}
                    // The receiver closes its socket once it has said so.
                    None if flags.done.load(Ordering::Acquire) => break,
                    None => {
                        return Err(io::Error::other(format!("no socket on port {port} in /proc/net/udp")))
                    }
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(TxDone { sent, started, finished, stops })
    })
}

/// A runtime of one shard on `RECEIVER_CPU` (unpinned if that fails);
/// `park_at_once`: `idle_poll(0)`.
fn runtime(park_at_once: bool) -> Result<(shard::Runtime, String), String> {
    let builder = || {
        let b = shard::Builder::new().grace(Duration::from_millis(200)).name("udp-shard");
        if park_at_once {
            b.idle_poll(Duration::ZERO)
        } else {
            b
        }
    };
    match builder().cpus(vec![RECEIVER_CPU]).build() {
        Ok(rt) => Ok((rt, format!("one shard pinned to cpu {RECEIVER_CPU}"))),
        Err(e) => {
            let rt = builder().shards(1).pin(false).build().map_err(|e| e.to_string())?;
            Ok((rt, format!("one shard NOT pinned ({e})")))
        }
    }
}

type Ready = mpsc::Sender<Result<(SocketAddr, RcvBuf), String>>;

/// What a receiver needs to know.
#[derive(Debug)]
struct RxSetup {
    ready: Ready,
    flags: Arc<Flags>,
    rcvbuf: usize,
    wait_for_go: bool,
}

/// Runs one round: the receiver of `side` on its thread, then the sender.
fn run_round(side: Side, mode: Mode) -> Result<(Mode, TxDone, RxDone, RcvBuf), String> {
    let (ready, ready_rx) = mpsc::channel();
    let flags = Arc::new(Flags::default());
    let rcvbuf = if let Mode::Drain(_) = mode { DRAIN_RCVBUF } else { RCVBUF };
    let setup = RxSetup { ready, flags: flags.clone(), rcvbuf, wait_for_go: matches!(mode, Mode::Drain(_)) };
    let rx = std::thread::spawn(move || match side {
        Side::Ours { park_at_once } => {
            let (rt, _) = runtime(park_at_once)?;
            rt.run(move || ours_receiver(setup)).map_err(|e| format!("runtime: {e}"))?
        }
        Side::Peer => peer_receiver(setup),
    });
    let (addr, rcvbuf) = match ready_rx.recv_timeout(STUCK) {
        Ok(r) => r?,
        Err(_) => {
            let why = match rx.join() {
                Ok(Err(e)) => e,
                _ => "the receiver did not start".to_string(),
            };
            return Err(why);
        }
    };
    let tx = sender(addr, mode, flags).join().map_err(|_| "sender panicked".to_string())?;
    let rx = rx.join().map_err(|_| "receiver panicked".to_string())?;
    let tx = tx.map_err(|e| format!("sender: {e}"))?;
    Ok((mode, tx, rx?, rcvbuf))
}

async fn ours_receiver(setup: RxSetup) -> Result<RxDone, String> {
    let open = || -> io::Result<(KernelUdp, RcvBuf)> {
        let sock = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let rcvbuf = set_rcvbuf(sock.as_fd(), setup.rcvbuf)?;
        Ok((KernelUdp::new(sock, BUFFERS, BUF_SIZE)?, rcvbuf))
    };
    let (mut backend, rcvbuf) = match open() {
        Ok(v) => v,
        Err(e) => {
            let _ = setup.ready.send(Err(format!("setup: {e}")));
            return Err(format!("setup: {e}"));
        }
    };
    let port = backend.local_addr().port();
    let mut tally = Tally::new();
    let mut burst: Vec<Received<Datagram>> = Vec::with_capacity(BURST);
    let _ = setup.ready.send(Ok((backend.local_addr(), rcvbuf)));
    if setup.wait_for_go {
        let since = Instant::now();
        while !setup.flags.go.load(Ordering::Acquire) {
            if since.elapsed() > STUCK * 4 {
                return Err("the backlog was not queued in time".to_string());
            }
            shard::time::sleep(Duration::from_micros(200)).await;
        }
    }
    let started_at = Instant::now();
    let cpu0 = thread_cpu();
    loop {
        backend.recv_burst(&mut burst, BURST).await.map_err(|e| format!("recv_burst: {e}"))?;
        let mut stop = false;
        for r in burst.drain(..) {
            if let Seen::Stop = tally.add(r.payload(), r.truncated) {
                stop = true;
            }
        }
        if stop {
            break;
        }
    }
    let stopped_at = Instant::now();
    let cpu = thread_cpu() - cpu0;
    let drops = socket_queue(port).map(|(_, d)| d).ok_or("socket gone from /proc/net/udp")?;
    setup.flags.done.store(true, Ordering::Release);
    Ok(RxDone { tally, started_at, stopped_at, cpu, drops, starved: backend.starved() })
}

fn peer_receiver(setup: RxSetup) -> Result<RxDone, String> {
    pin_to(RECEIVER_CPU);
    let open = || -> io::Result<(StdUdp, RcvBuf)> {
        let sock = StdUdp::bind("127.0.0.1:0")?;
        let rcvbuf = set_rcvbuf(sock.as_fd(), setup.rcvbuf)?;
        Ok((sock, rcvbuf))
    };
    let (sock, rcvbuf) = match open() {
        Ok(v) => v,
        Err(e) => {
            let _ = setup.ready.send(Err(format!("setup: {e}")));
            return Err(format!("setup: {e}"));
        }
    };
    let addr = sock.local_addr().map_err(|e| e.to_string())?;
    let mut tally = Tally::new();
    let mut buf = vec![0u8; BUF_SIZE];
    let _ = setup.ready.send(Ok((addr, rcvbuf)));
    if setup.wait_for_go {
        let since = Instant::now();
        while !setup.flags.go.load(Ordering::Acquire) {
            if since.elapsed() > STUCK * 4 {
                return Err("the backlog was not queued in time".to_string());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    let started_at = Instant::now();
    let cpu0 = thread_cpu();
    loop {
        let (n, _) = sock.recv_from(&mut buf).map_err(|e| format!("recv_from: {e}"))?;
        if let Seen::Stop = tally.add(&buf[..n], n == buf.len()) {
            break;
        }
    }
    let stopped_at = Instant::now();
    let cpu = thread_cpu() - cpu0;
    let drops = socket_queue(addr.port()).map(|(_, d)| d).ok_or("socket gone from /proc/net/udp")?;
    setup.flags.done.store(true, Ordering::Release);
    Ok(RxDone { tally, started_at, stopped_at, cpu, drops, starved: 0 })
}
