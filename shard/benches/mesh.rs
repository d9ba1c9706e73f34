//! Cross-shard messaging between two shards, against two plain threads.
//!
//! - Throughput: one `u64` stream from shard 0 to shard 1 over a
//!   `shard::mesh::channel` (staged with `feed`, published with `flush`
//!   every `FLUSH_EVERY` items, drained with `recv_batch`), against
//!   `crossbeam_channel::bounded` and `std::sync::mpsc::sync_channel` of
//!   the same capacity between two std threads pinned to the same CPUs.
//!   Every run checks that the receiver got exactly what was sent (count
//!   and sum) and exits non-zero otherwise.
//! - Request latency: sequential `shard::submit_to(1, ..)` round trips,
//!   against a request/reply pair of crossbeam channels, and a blocking
//!   eventfd ping-pong (the kernel's cost of waking a sleeping thread,
//!   which every hop to a parked shard pays).
//! - Both under `WakeMode::MsgRing` and `WakeMode::EventFd`.
//!
//! Sides alternate round by round in one process and the tables show the
//! median (and best) per side: on a shared, noisy machine the ratios are
//! what to look at. Every run is bounded by an item count and a duration.
//!
//! Run with `cargo bench -p shard --bench mesh`.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use shard::mesh::channel::channel;
use shard::WakeMode;

use bench_support::{fail, fmt_count, fmt_rate, median as median_by, pin_to, quick};

/// Channel capacity of the headline comparison, the same for all three.
const CAPACITY: usize = 1024;
/// A large capacity, to show what the ring does when wake-ups are rare.
const BIG_CAPACITY: usize = 65536;
/// Upper bound on items per throughput run.
fn max_items() -> u64 {
    if quick() {
        200_000
    } else {
        20_000_000
    }
}
/// Upper bound on the duration of one throughput run.
fn items_time() -> Duration {
    if quick() {
        Duration::from_millis(100)
    } else {
        Duration::from_millis(1200)
    }
}
/// Our sender publishes a batch every this many items.
const FLUSH_EVERY: u64 = 64;
/// How often (in items) a sender looks at the clock.
const CLOCK_EVERY: u64 = 4096;
/// Upper bound on round trips per latency run.
fn max_calls() -> u64 {
    if quick() {
        2_000
    } else {
        200_000
    }
}
/// Upper bound on the duration of one latency run.
fn calls_time() -> Duration {
    if quick() {
        Duration::from_millis(100)
    } else {
        Duration::from_millis(800)
    }
}
/// Round trips before the clock starts.
const WARMUP_CALLS: u64 = 1000;
/// A single wait longer than this is a hang, reported as an error.
const STUCK: Duration = Duration::from_secs(5);
/// The whole bench is aborted after this long.
const WATCHDOG: Duration = Duration::from_secs(150);
/// Rounds per side.
fn rounds() -> usize {
    if quick() {
        1
    } else {
        3
    }
}

fn main() {
    let started = Instant::now();
    std::thread::spawn(|| {
        std::thread::sleep(WATCHDOG);
        fail(&format!("the benchmark did not finish within {WATCHDOG:?}"));
    });
    let cpus = plan_cpus();
    println!("# shard mesh benchmark");
    println!();
    println!("command: `cargo bench -p shard --bench mesh`");
    println!();
    match cpus {
        Some((a, b)) => {
            println!("placement: shards pinned to cpus {a} and {b}; peer threads pinned the same way")
        }
        None => println!("placement: not pinned (pinned build failed); peer threads not pinned either"),
    }
    let rounds_v = rounds();
    println!(
        "default wake mode: {:?}; {rounds_v} rounds per side, alternating; at most {} items / {:?} per \
         throughput run, at most {} calls / {:?} per latency run",
        WakeMode::default(),
        fmt_count(max_items()),
        items_time(),
        fmt_count(max_calls()),
        calls_time(),
    );
    println!();

    // Throughput, capacity 1024 (the headline), then 65536.
    let mut ch_msg = Vec::new();
    let mut ch_efd = Vec::new();
    let mut ch_cb = Vec::new();
    let mut ch_mpsc = Vec::new();
    let mut big_ours = Vec::new();
    let mut big_cb = Vec::new();
    for round in 0..rounds() {
        let a = checked("shard channel (MsgRing)", ours_channel(WakeMode::MsgRing, CAPACITY));
        let b = checked("crossbeam bounded", peer_channel::<Crossbeam>(cpus, CAPACITY));
        let c = checked("shard channel (EventFd)", ours_channel(WakeMode::EventFd, CAPACITY));
        let d = checked("std mpsc sync_channel", peer_channel::<Mpsc>(cpus, CAPACITY));
        let e = checked("shard channel (big)", ours_channel(WakeMode::default(), BIG_CAPACITY));
        let f = checked("crossbeam bounded (big)", peer_channel::<Crossbeam>(cpus, BIG_CAPACITY));
        eprintln!(
            "channel round {round}: msgring {} | crossbeam {} | eventfd {} | mpsc {} | big: ours {} crossbeam {}",
            rate(&a),
            rate(&b),
            rate(&c),
            rate(&d),
            rate(&e),
            rate(&f)
        );
        ch_msg.push(a);
        ch_cb.push(b);
        ch_efd.push(c);
        ch_mpsc.push(d);
        big_ours.push(e);
        big_cb.push(f);
    }

    // Request latency.
    let mut rq_msg = Vec::new();
    let mut rq_efd = Vec::new();
    let mut rq_cb = Vec::new();
    let mut rq_floor = Vec::new();
    let mut rq_msg_parked = Vec::new();
    let mut rq_efd_parked = Vec::new();
    let parked = Some(Duration::ZERO);
    for round in 0..rounds() {
        let a = checked_calls("submit_to (MsgRing)", ours_requests(WakeMode::MsgRing, None));
        let b = checked_calls("crossbeam request/reply", peer_requests(cpus));
        let c = checked_calls("submit_to (EventFd)", ours_requests(WakeMode::EventFd, None));
        let d = checked_calls("eventfd ping-pong", eventfd_pingpong(cpus));
        let e = checked_calls("submit_to (MsgRing, parked)", ours_requests(WakeMode::MsgRing, parked));
        let f = checked_calls("submit_to (EventFd, parked)", ours_requests(WakeMode::EventFd, parked));
        eprintln!(
            "request round {round}: msgring {} | crossbeam {} | eventfd mode {} | eventfd ping-pong {} | \
             parked: msgring {} eventfd {}",
            rate(&a),
            rate(&b),
            rate(&c),
            rate(&d),
            rate(&e),
            rate(&f)
        );
        rq_msg.push(a);
        rq_cb.push(b);
        rq_efd.push(c);
        rq_floor.push(d);
        rq_msg_parked.push(e);
        rq_efd_parked.push(f);
    }

    let default_is_msgring = WakeMode::default() == WakeMode::MsgRing;
    let (ours_ch, ours_rq) = if default_is_msgring { (&ch_msg, &rq_msg) } else { (&ch_efd, &rq_efd) };

    let rounds_v = rounds();
    println!("## Cross-shard messages/s (u64 items, shard 0 -> shard 1, median of {rounds_v})");
    println!();
    println!("| implementation | capacity | median msgs/s | best msgs/s | items/run | parks per 1k msgs (tx / rx) |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, cap, runs) in [
        ("shard mesh channel, WakeMode::MsgRing", CAPACITY, &ch_msg),
        ("shard mesh channel, WakeMode::EventFd", CAPACITY, &ch_efd),
        ("crossbeam-channel bounded", CAPACITY, &ch_cb),
        ("std::sync::mpsc::sync_channel", CAPACITY, &ch_mpsc),
        ("shard mesh channel, default wake mode", BIG_CAPACITY, &big_ours),
        ("crossbeam-channel bounded", BIG_CAPACITY, &big_cb),
    ] {
        let parks = match runs[0].parks {
            Some(_) => {
                let per_k = |f: fn(&(u64, u64)) -> u64| {
                    median_by(runs, |r| r.parks.map_or(0.0, |p| f(&p) as f64 * 1000.0 / r.count as f64))
                };
                format!("{:.2} / {:.2}", per_k(|p| p.0), per_k(|p| p.1))
            }
            None => "n/a".to_string(),
        };
        println!(
            "| {name} | {cap} | {} | {} | {} | {parks} |",
            fmt_rate(median(runs)),
            fmt_rate(best(runs)),
            fmt_count(median_by(runs, |r| r.count as f64) as u64),
        );
    }
    println!();
    println!(
        "ratio ours/crossbeam (capacity {CAPACITY}, default wake mode): **{:.2}x** (target >= 3x); \
         ours/mpsc: **{:.2}x**",
        median(ours_ch) / median(&ch_cb),
        median(ours_ch) / median(&ch_mpsc)
    );
    println!(
        "ratio ours/crossbeam (capacity {BIG_CAPACITY}): **{:.2}x**",
        median(&big_ours) / median(&big_cb)
    );
    println!(
        "ratio MsgRing/EventFd (channel, capacity {CAPACITY}): {:.2}x",
        median(&ch_msg) / median(&ch_efd)
    );
    println!();

    let rounds_v = rounds();
    println!("## Cross-shard request round trips (sequential awaits, median of {rounds_v})");
    println!();
    println!("| implementation | median round trips/s | median us/round trip | best round trips/s |");
    println!("|---|---:|---:|---:|");
    for (name, runs) in [
        ("`submit_to(1, \\|\\| async { 1 })`, WakeMode::MsgRing", &rq_msg),
        ("`submit_to(1, \\|\\| async { 1 })`, WakeMode::EventFd", &rq_efd),
        ("crossbeam bounded(1) request + reply, 2 threads", &rq_cb),
        ("blocking eventfd ping-pong, 2 threads (kernel wake-up floor)", &rq_floor),
        ("`submit_to`, WakeMode::MsgRing, idle poll off (every hop wakes a parked shard)", &rq_msg_parked),
        ("`submit_to`, WakeMode::EventFd, idle poll off (every hop wakes a parked shard)", &rq_efd_parked),
    ] {
        let m = median(runs);
        println!("| {name} | {} | {:.2} | {} |", fmt_rate(m), 1e6 / m, fmt_rate(best(runs)));
    }
    println!();
    println!(
        "ratio ours/crossbeam (round trips/s, default wake mode): **{:.2}x**; ours/eventfd ping-pong: {:.2}x; \
         MsgRing/EventFd: {:.2}x",
        median(ours_rq) / median(&rq_cb),
        median(ours_rq) / median(&rq_floor),
        median(&rq_msg) / median(&rq_efd)
    );
    println!(
        "wake-up cost, idle poll off: MsgRing/EventFd round trips/s **{:.2}x** (the default wake mode is the \
         faster one)",
        median(&rq_msg_parked) / median(&rq_efd_parked)
    );
    println!();
    println!("total bench time: {:.1} s", started.elapsed().as_secs_f64());
}

/// One run: how many items (or round trips) went through, their sum, how
/// long it took, and (ours) how often each shard parked.
#[derive(Debug, Clone, Copy)]
struct Run {
    sent: u64,
    count: u64,
    sum: u64,
    elapsed: Duration,
    parks: Option<(u64, u64)>,
}

impl Run {
    fn per_sec(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }
}

/// Sum of `0..n`.
fn expected_sum(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        n * (n - 1) / 2
    }
}

/// A throughput run must deliver exactly `0..sent`.
fn checked(what: &str, run: Result<Run, String>) -> Run {
    let run = run.unwrap_or_else(|e| fail(&format!("{what}: {e}")));
    if run.sent == 0 || run.count != run.sent || run.sum != expected_sum(run.sent) {
        fail(&format!(
            "{what}: sent {} items (sum {}), received {} (sum {})",
            run.sent,
            expected_sum(run.sent),
            run.count,
            run.sum
        ));
    }
    run
}

/// A latency run must see every reply (each worth 1).
fn checked_calls(what: &str, run: Result<Run, String>) -> Run {
    let run = run.unwrap_or_else(|e| fail(&format!("{what}: {e}")));
    if run.sent == 0 || run.count != run.sent || run.sum != run.sent {
        fail(&format!("{what}: {} requests, {} replies, reply sum {}", run.sent, run.count, run.sum));
    }
    run
}

fn median(runs: &[Run]) -> f64 {
    median_by(runs, Run::per_sec)
}

fn best(runs: &[Run]) -> f64 {
    runs.iter().map(Run::per_sec).fold(0.0, f64::max)
}

fn rate(r: &Run) -> String {
    fmt_rate(r.per_sec())
}

// ------------------------------------------------------------------ ours

/// Two shards, pinned if the machine allows it.
fn runtime(mode: WakeMode) -> shard::Runtime {
    runtime_with(mode, None)
}

/// As [`runtime`]; `idle_poll` overrides the runtime's default (zero: an
/// idle shard parks at once, so every message pays a cross-core wake-up).
fn runtime_with(mode: WakeMode, idle_poll: Option<Duration>) -> shard::Runtime {
    let builder = || {
        let b = shard::Builder::new().shards(2).wake_mode(mode).grace(Duration::from_secs(1));
        match idle_poll {
            Some(d) => b.idle_poll(d),
            None => b,
        }
    };
    match builder().pin(true).build() {
        Ok(rt) => rt,
        Err(_) => builder().pin(false).build().unwrap_or_else(|e| fail(&format!("runtime: {e}"))),
    }
}

/// The CPUs our two shards get, if pinned; peers use the same.
fn plan_cpus() -> Option<(usize, usize)> {
    let rt = runtime(WakeMode::default());
    let plan = rt.plan();
    plan.pinned.then(|| (plan.shards[0].cpu, plan.shards[1].cpu))
}

fn ours_channel(mode: WakeMode, capacity: usize) -> Result<Run, String> {
    let rt = runtime(mode);
    rt.run(move || async move {
        let (mut tx, mut rx) = channel::<u64>(capacity);
        let t0 = Instant::now();
        let receiver = shard::spawn_local(shard::submit_to(1, move || async move {
            let (mut count, mut sum) = (0u64, 0u64);
            loop {
                let n = rx
                    .recv_batch(capacity, |v| {
                        count += 1;
                        sum = sum.wrapping_add(v);
                    })
                    .await;
                if n == 0 {
                    return (count, sum, shard::stats().parks);
                }
            }
        }));
        let parks_before = shard::stats().parks;
        let deadline = t0 + items_time();
        let mut sent = 0u64;
        while sent < max_items() {
            if let Err(v) = tx.feed(sent) {
                match shard::time::timeout(STUCK, tx.send(v)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Err("receiver gone".to_string()),
                    Err(_) => {
                        let room = tx.feed(v).is_ok();
                        return Err(format!(
                            "send() not woken for {STUCK:?} after {sent} items (room in the ring now: {room})"
                        ));
                    }
                }
            }
            sent += 1;
            if sent % FLUSH_EVERY == 0 {
                tx.flush();
                if sent % CLOCK_EVERY == 0 && Instant::now() >= deadline {
                    break;
                }
            }
        }
        // Dropping the sender publishes the rest and ends the receiver.
        drop(tx);
        let (count, sum, rx_parks) = match shard::time::timeout(STUCK, receiver).await {
            Ok(Ok(Ok(v))) => v,
            Ok(Ok(Err(e))) => return Err(format!("receiver: {e}")),
            Ok(Err(e)) => return Err(format!("receiver task: {e:?}")),
            Err(_) => return Err(format!("receiver not done {STUCK:?} after the sender finished")),
        };
        let elapsed = t0.elapsed();
        let tx_parks = shard::stats().parks - parks_before;
        Ok(Run { sent, count, sum, elapsed, parks: Some((tx_parks, rx_parks)) })
    })
    .map_err(|e| format!("runtime: {e}"))?
}

fn ours_requests(mode: WakeMode, idle_poll: Option<Duration>) -> Result<Run, String> {
    let rt = runtime_with(mode, idle_poll);
    rt.run(|| async {
        let call = || async {
            match shard::time::timeout(STUCK, shard::submit_to(1, || async { 1u64 })).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("submit_to not answered within {STUCK:?}")),
            }
        };
        for _ in 0..WARMUP_CALLS {
            call().await?;
        }
        let t0 = Instant::now();
        let deadline = t0 + calls_time();
        let (mut calls, mut sum) = (0u64, 0u64);
        while calls < max_calls() {
            sum += call().await?;
            calls += 1;
            if calls % 1024 == 0 && Instant::now() >= deadline {
                break;
            }
        }
        Ok(Run { sent: calls, count: calls, sum, elapsed: t0.elapsed(), parks: None })
    })
    .map_err(|e| format!("runtime: {e}"))?
}

// ----------------------------------------------------------------- peers

/// A bounded channel between two threads.
trait Pair {
    type Tx: Send + 'static;
    type Rx: Send + 'static;
    fn make(capacity: usize) -> (Self::Tx, Self::Rx);
    fn send(tx: &Self::Tx, v: u64) -> bool;
    fn recv(rx: &Self::Rx) -> Option<u64>;
}

struct Crossbeam;
impl Pair for Crossbeam {
    type Tx = crossbeam_channel::Sender<u64>;
    type Rx = crossbeam_channel::Receiver<u64>;
    fn make(capacity: usize) -> (Self::Tx, Self::Rx) {
        crossbeam_channel::bounded(capacity)
    }
    fn send(tx: &Self::Tx, v: u64) -> bool {
        tx.send(v).is_ok()
    }
    fn recv(rx: &Self::Rx) -> Option<u64> {
        rx.recv().ok()
    }
}

struct Mpsc;
impl Pair for Mpsc {
    type Tx = std::sync::mpsc::SyncSender<u64>;
    type Rx = std::sync::mpsc::Receiver<u64>;
    fn make(capacity: usize) -> (Self::Tx, Self::Rx) {
        std::sync::mpsc::sync_channel(capacity)
    }
    fn send(tx: &Self::Tx, v: u64) -> bool {
        tx.send(v).is_ok()
    }
    fn recv(rx: &Self::Rx) -> Option<u64> {
        rx.recv().ok()
    }
}

/// The same stream as [`ours_channel`], between two std threads.
fn peer_channel<P: Pair>(cpus: Option<(usize, usize)>, capacity: usize) -> Result<Run, String> {
    let (tx, rx) = P::make(capacity);
    let start = Barrier::new(3);
    std::thread::scope(|s| {
        let start = &start;
        let receiver = s.spawn(move || {
            if let Some((_, cpu)) = cpus {
                pin_to(cpu);
            }
            start.wait();
            let (mut count, mut sum) = (0u64, 0u64);
            while let Some(v) = P::recv(&rx) {
                count += 1;
                sum = sum.wrapping_add(v);
            }
            (count, sum)
        });
        let sender = s.spawn(move || {
            if let Some((cpu, _)) = cpus {
                pin_to(cpu);
            }
            start.wait();
            let deadline = Instant::now() + items_time();
            let mut sent = 0u64;
            while sent < max_items() {
                if !P::send(&tx, sent) {
                    return Err("receiver gone".to_string());
                }
                sent += 1;
                if sent % CLOCK_EVERY == 0 && Instant::now() >= deadline {
                    break;
                }
            }
            Ok(sent)
        });
        start.wait();
        let t0 = Instant::now();
        let sent = sender.join().map_err(|_| "sender panicked".to_string())??;
        let (count, sum) = receiver.join().map_err(|_| "receiver panicked".to_string())?;
        Ok(Run { sent, count, sum, elapsed: t0.elapsed(), parks: None })
    })
}

/// Sequential request/reply between two std threads over two crossbeam
/// channels: the closest thread analogue of `submit_to`.
fn peer_requests(cpus: Option<(usize, usize)>) -> Result<Run, String> {
    let (req_tx, req_rx) = crossbeam_channel::bounded::<u64>(1);
    let (rep_tx, rep_rx) = crossbeam_channel::bounded::<u64>(1);
    std::thread::scope(|s| {
        s.spawn(move || {
            if let Some((_, cpu)) = cpus {
                pin_to(cpu);
            }
            for _ in req_rx.iter() {
                if rep_tx.send(1).is_err() {
                    return;
                }
            }
        });
        let client = s.spawn(move || {
            if let Some((cpu, _)) = cpus {
                pin_to(cpu);
            }
            let call = |i| {
                req_tx.send(i).map_err(|_| "server gone".to_string())?;
                rep_rx.recv_timeout(STUCK).map_err(|e| format!("no reply: {e}"))
            };
            for i in 0..WARMUP_CALLS {
                call(i)?;
            }
            let t0 = Instant::now();
            let deadline = t0 + calls_time();
            let (mut calls, mut sum) = (0u64, 0u64);
            while calls < max_calls() {
                sum += call(calls)?;
                calls += 1;
                if calls % 1024 == 0 && Instant::now() >= deadline {
                    break;
                }
            }
            Ok(Run { sent: calls, count: calls, sum, elapsed: t0.elapsed(), parks: None })
        });
        // Dropping `req_tx` (inside the client) ends the server.
        client.join().map_err(|_| "client panicked".to_string())?
    })
}

/// A blocking eventfd counter.
fn eventfd() -> Result<OwnedFd, String> {
    // SAFETY: eventfd has no memory preconditions; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn efd_write(fd: &OwnedFd) -> bool {
    let one = 1u64;
    // SAFETY: writes 8 bytes from a live u64 to an fd we own.
    let n = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    n == 8
}

fn efd_read(fd: &OwnedFd) -> Option<u64> {
    let mut v = 0u64;
    // SAFETY: reads at most 8 bytes into a live u64 from an fd we own.
    let n = unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    (n == 8).then_some(v)
}

/// Two threads that block on eventfds in turn: each round trip is two
/// kernel wake-ups of a sleeping thread, with no spinning.
fn eventfd_pingpong(cpus: Option<(usize, usize)>) -> Result<Run, String> {
    let (ping, pong) = (eventfd()?, eventfd()?);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let (ping, pong, stop) = (&ping, &pong, &stop);
        s.spawn(move || {
            if let Some((_, cpu)) = cpus {
                pin_to(cpu);
            }
            while efd_read(ping).is_some() {
                if stop.load(Ordering::SeqCst) || !efd_write(pong) {
                    return;
                }
            }
        });
        let client = s.spawn(move || {
            if let Some((cpu, _)) = cpus {
                pin_to(cpu);
            }
            let call = || {
                if !efd_write(ping) {
                    return Err("eventfd write failed".to_string());
                }
                efd_read(pong).ok_or_else(|| "eventfd read failed".to_string())
            };
            for _ in 0..WARMUP_CALLS {
                call()?;
            }
            let t0 = Instant::now();
            let deadline = t0 + calls_time();
            let (mut calls, mut sum) = (0u64, 0u64);
            while calls < max_calls() {
                sum += call()?;
                calls += 1;
                if calls % 256 == 0 && Instant::now() >= deadline {
                    break;
                }
            }
            Ok(Run { sent: calls, count: calls, sum, elapsed: t0.elapsed(), parks: None })
        });
        let run = client.join().map_err(|_| "client panicked".to_string());
        // The client is done (or failed): tell the server to leave.
        stop.store(true, Ordering::SeqCst);
        efd_write(ping);
        run?
    })
}
