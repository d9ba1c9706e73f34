//! Cross-shard messaging between two shards, against two plain threads.
//!
//! - Throughput: one `u64` stream from shard 0 to shard 1 over a
//!   `shard::mesh::channel` (staged with `feed`, published with `flush`
//!   every `FLUSH_EVERY` items, drained with `recv_batch`), against
//!   `crossbeam_channel::bounded` and `std::sync::mpsc::sync_channel`
//!   between two std threads pinned to the same CPUs. Every run checks
//!   that the receiver got exactly what was sent (count and sum).
//! - Request latency: sequential `shard::submit_to(1, ..)` round trips,
//!   against a request/reply pair of crossbeam channels.
//! - Both under `WakeMode::MsgRing` and `WakeMode::EventFd`.
//!
//! Sides alternate round by round in one process; the table shows the
//! median (and best) per side, so the ratio is what to look at on a
//! noisy machine. Run with `cargo bench -p shard --bench mesh`.
#![allow(unsafe_code)]

use std::sync::Barrier;
use std::time::{Duration, Instant};

use shard::mesh::channel::channel;
use shard::WakeMode;

/// Channel capacity, the same for all three implementations.
const CAPACITY: usize = 1024;
/// Upper bound on items per throughput run.
const MAX_ITEMS: u64 = 20_000_000;
/// Upper bound on the duration of one throughput run.
const ITEMS_TIME: Duration = Duration::from_millis(1500);
/// Our sender publishes a batch every this many items.
const FLUSH_EVERY: u64 = 64;
/// How often (in items) a sender looks at the clock.
const CLOCK_EVERY: u64 = 4096;
/// Upper bound on round trips per latency run.
const MAX_CALLS: u64 = 200_000;
/// Upper bound on the duration of one latency run.
const CALLS_TIME: Duration = Duration::from_millis(1000);
/// Rounds per side.
const ROUNDS: usize = 3;

fn main() {
    if std::env::var("EXP").is_ok() {
        for _ in 0..3 {
            let r = checked("x", ours_channel(WakeMode::MsgRing));
            eprintln!("EXP {} items {}", rate(r), r.count);
        }
        return;
    }
    let started = Instant::now();
    let cpus = plan_cpus();
    println!("# shard mesh benchmark");
    println!();
    println!("command: `cargo bench -p shard --bench mesh`");
    match cpus {
        Some((a, b)) => {
            println!("placement: shards pinned to cpus {a} and {b}; peer threads pinned to the same")
        }
        None => println!("placement: not pinned (pinned build failed); peer threads not pinned either"),
    }
    println!(
        "default wake mode: {:?}; {ROUNDS} rounds per side, alternating; capacity {CAPACITY}",
        WakeMode::default()
    );
    println!();

    // Throughput.
    let mut ch_msg = Vec::new();
    let mut ch_efd = Vec::new();
    let mut ch_cb = Vec::new();
    let mut ch_mpsc = Vec::new();
    for round in 0..ROUNDS {
        let a = checked("shard channel (MsgRing)", ours_channel(WakeMode::MsgRing));
        let b = checked("crossbeam bounded", peer_channel::<Crossbeam>(cpus));
        let c = checked("shard channel (EventFd)", ours_channel(WakeMode::EventFd));
        let d = checked("std mpsc sync_channel", peer_channel::<Mpsc>(cpus));
        eprintln!(
            "round {round}: msgring {} | crossbeam {} | eventfd {} | mpsc {}",
            rate(a),
            rate(b),
            rate(c),
            rate(d)
        );
        ch_msg.push(a);
        ch_cb.push(b);
        ch_efd.push(c);
        ch_mpsc.push(d);
    }

    // Request latency.
    let mut rq_msg = Vec::new();
    let mut rq_efd = Vec::new();
    let mut rq_cb = Vec::new();
    for round in 0..ROUNDS {
        let a = checked_calls("submit_to (MsgRing)", ours_requests(WakeMode::MsgRing));
        let b = checked_calls("crossbeam request/reply", peer_requests(cpus));
        let c = checked_calls("submit_to (EventFd)", ours_requests(WakeMode::EventFd));
        eprintln!("round {round}: msgring {} | crossbeam {} | eventfd {}", rate(a), rate(b), rate(c));
        rq_msg.push(a);
        rq_cb.push(b);
        rq_efd.push(c);
    }

    let default_is_msgring = WakeMode::default() == WakeMode::MsgRing;
    let (ours_ch, ours_rq) = if default_is_msgring { (&ch_msg, &rq_msg) } else { (&ch_efd, &rq_efd) };

    println!("## Cross-shard messages/s (u64 items, 2 threads, median of {ROUNDS})");
    println!();
    println!("| implementation | median msgs/s | best msgs/s | items per run |");
    println!("|---|---:|---:|---:|");
    for (name, runs) in [
        ("shard mesh channel, WakeMode::MsgRing", &ch_msg),
        ("shard mesh channel, WakeMode::EventFd", &ch_efd),
        ("crossbeam-channel bounded(1024)", &ch_cb),
        ("std::sync::mpsc::sync_channel(1024)", &ch_mpsc),
    ] {
        println!(
            "| {name} | {} | {} | {} |",
            fmt_rate(median(runs)),
            fmt_rate(best(runs)),
            fmt_count(median_by(runs, |r| r.count as f64) as u64)
        );
    }
    println!();
    println!(
        "ratio ours/crossbeam: **{:.2}x** (target >= 3x); ours/mpsc: **{:.2}x** (ours = default wake mode)",
        median(ours_ch) / median(&ch_cb),
        median(ours_ch) / median(&ch_mpsc)
    );
    println!("ratio MsgRing/EventFd (channel): {:.2}x", median(&ch_msg) / median(&ch_efd));
    println!();

    println!("## Cross-shard request round trips (sequential, median of {ROUNDS})");
    println!();
    println!("| implementation | median round trips/s | median us/round trip | best round trips/s |");
    println!("|---|---:|---:|---:|");
    for (name, runs) in [
        ("`submit_to(1, || async { 1 })`, WakeMode::MsgRing", &rq_msg),
        ("`submit_to(1, || async { 1 })`, WakeMode::EventFd", &rq_efd),
        ("crossbeam bounded(1) request + reply pair", &rq_cb),
    ] {
        let m = median(runs);
        println!("| {name} | {} | {:.2} | {} |", fmt_rate(m), 1e6 / m, fmt_rate(best(runs)));
    }
    println!();
    println!(
        "ratio ours/crossbeam (round trips/s): **{:.2}x**; MsgRing/EventFd: {:.2}x",
        median(ours_rq) / median(&rq_cb),
        median(&rq_msg) / median(&rq_efd)
    );
    println!();
    println!("total bench time: {:.1} s", started.elapsed().as_secs_f64());
}

/// One run: how many items (or round trips) went through, their sum, and
/// how long it took.
#[derive(Debug, Clone, Copy)]
struct Run {
    sent: u64,
    count: u64,
    sum: u64,
    elapsed: Duration,
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
    if run.count != run.sent || run.sum != expected_sum(run.sent) || run.sent == 0 {
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
    if run.count != run.sent || run.sum != run.sent || run.sent == 0 {
        fail(&format!("{what}: {} requests, {} replies, reply sum {}", run.sent, run.count, run.sum));
    }
    run
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1);
}

fn median_by(runs: &[Run], f: impl Fn(&Run) -> f64) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn median(runs: &[Run]) -> f64 {
    median_by(runs, Run::per_sec)
}

fn best(runs: &[Run]) -> f64 {
    runs.iter().map(Run::per_sec).fold(0.0, f64::max)
}

fn rate(r: Run) -> String {
    fmt_rate(r.per_sec())
}

fn fmt_rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M/s", x / 1e6)
    } else {
        format!("{:.1} k/s", x / 1e3)
    }
}

fn fmt_count(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.1} M", n as f64 / 1e6)
    } else {
        format!("{:.0} k", n as f64 / 1e3)
    }
}

// ---------------------------------------------------------------- ours

/// Two shards, pinned if the machine allows it.
fn runtime(mode: WakeMode) -> shard::Runtime {
    let builder = || shard::Builder::new().shards(2).wake_mode(mode).grace(Duration::from_secs(1));
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

fn ours_channel(mode: WakeMode) -> Result<Run, String> {
    let rt = runtime(mode);
    rt.run(|| async {
        let cap: usize = std::env::var("CAP").ok().and_then(|v| v.parse().ok()).unwrap_or(CAPACITY); let (mut tx, mut rx) = channel::<u64>(cap);
        let t0 = Instant::now();
        let receiver = shard::spawn_local(shard::submit_to(1, move || async move {
            let (mut count, mut sum) = (0u64, 0u64);
            loop {
                let n = rx
                    .recv_batch(cap, |v| {
                        count += 1;
                        sum = sum.wrapping_add(v);
                    })
                    .await;
                if n == 0 {
                    return (count, sum);
                }
            }
        }));
        let deadline = t0 + ITEMS_TIME;
        let mut sent = 0u64;
        while sent < MAX_ITEMS {
            if let Err(v) = tx.feed(sent) {
                if tx.send(v).await.is_err() {
                    return Err("receiver gone".to_string());
                }
            }
            sent += 1;
            if sent % FLUSH_EVERY == 0 {
                tx.flush();
                if YIELD_EVERY.with(|y| *y) > 0 && sent % YIELD_EVERY.with(|y| *y) == 0 {
                    shard::yield_now().await;
                }
                if sent % CLOCK_EVERY == 0 && Instant::now() >= deadline {
                    break;
                }
            }
        }
        // Dropping the sender publishes the rest and ends the receiver.
        drop(tx);
        let (count, sum) = match receiver.await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(format!("receiver: {e}")),
            Err(e) => return Err(format!("receiver task: {e:?}")),
        };
        let elapsed = t0.elapsed();
        let s1 = shard::submit_to(1, || async { shard::stats() }).await.unwrap();
        let s0 = shard::stats();
        eprintln!("DIAG s0 parks {} turns {} wakes_sent {} ring_wakes {} | s1 parks {} turns {} wakes_sent {} full_waits0 {}", s0.parks, s0.turns, s0.mesh.wakes_sent, s0.reactor.ring_wakes, s1.parks, s1.turns, s1.mesh.wakes_sent, s0.mesh.full_waits);
        Ok(Run { sent, count, sum, elapsed })
    })
    .map_err(|e| format!("runtime: {e}"))?
}

thread_local! { static YIELD_EVERY: u64 = std::env::var("YE").ok().and_then(|v| v.parse().ok()).unwrap_or(0); }

fn ours_requests(mode: WakeMode) -> Result<Run, String> {
    let rt = runtime(mode);
    rt.run(|| async {
        // Warm up (first wake, task slab growth).
        for _ in 0..1000 {
            shard::submit_to(1, || async { 1u64 }).await.map_err(|e| e.to_string())?;
        }
        let t0 = Instant::now();
        let deadline = t0 + CALLS_TIME;
        let (mut calls, mut sum) = (0u64, 0u64);
        while calls < MAX_CALLS {
            sum += shard::submit_to(1, || async { 1u64 }).await.map_err(|e| e.to_string())?;
            calls += 1;
            if calls % 1024 == 0 && Instant::now() >= deadline {
                break;
            }
        }
        Ok(Run { sent: calls, count: calls, sum, elapsed: t0.elapsed() })
    })
    .map_err(|e| format!("runtime: {e}"))?
}

// ---------------------------------------------------------------- peers

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET only sets a bit inside `set` (it ignores cpus beyond
    // the set's size).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the
    // size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        eprintln!("warning: could not pin to cpu {cpu}: {}", std::io::Error::last_os_error());
    }
}

/// A bounded channel between two threads.
trait Pair {
    type Tx: Send + 'static;
    type Rx: Send + 'static;
    fn make() -> (Self::Tx, Self::Rx);
    fn send(tx: &Self::Tx, v: u64) -> bool;
    fn recv(rx: &Self::Rx) -> Option<u64>;
}

struct Crossbeam;
impl Pair for Crossbeam {
    type Tx = crossbeam_channel::Sender<u64>;
    type Rx = crossbeam_channel::Receiver<u64>;
    fn make() -> (Self::Tx, Self::Rx) {
        crossbeam_channel::bounded(CAPACITY)
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
    fn make() -> (Self::Tx, Self::Rx) {
        std::sync::mpsc::sync_channel(CAPACITY)
    }
    fn send(tx: &Self::Tx, v: u64) -> bool {
        tx.send(v).is_ok()
    }
    fn recv(rx: &Self::Rx) -> Option<u64> {
        rx.recv().ok()
    }
}

/// Same stream as [`ours_channel`], between two std threads.
fn peer_channel<P: Pair>(cpus: Option<(usize, usize)>) -> Result<Run, String> {
    let (tx, rx) = P::make();
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
            let deadline = Instant::now() + ITEMS_TIME;
            let mut sent = 0u64;
            while sent < MAX_ITEMS {
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
        Ok(Run { sent, count, sum, elapsed: t0.elapsed() })
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
                rep_rx.recv().map_err(|_| "server gone".to_string())
            };
            for i in 0..1000 {
                call(i)?;
            }
            let t0 = Instant::now();
            let deadline = t0 + CALLS_TIME;
            let (mut calls, mut sum) = (0u64, 0u64);
            while calls < MAX_CALLS {
                sum += call(calls)?;
                calls += 1;
                if calls % 1024 == 0 && Instant::now() >= deadline {
                    break;
                }
            }
            Ok(Run { sent: calls, count: calls, sum, elapsed: t0.elapsed() })
        });
        client.join().map_err(|_| "client panicked".to_string())?
    })
}
