//! `appliance loadgen`: a load generator on the shard runtime, a crate of
//! its own (a tool beside the product, not part of its library; the
//! `appliance` binary only hands it its subcommand).
//!
//! Every shard drives its share of the connections (connection `c` runs on
//! shard `c mod shards`) and counts into its own [`report::Tally`]; the
//! shards' results are merged with `map_reduce` into one
//! [`report::Summary`]. Every run is bounded by a duration and, optionally,
//! an exact count that it checks it reached.
//!
//! - [`tcp`]: `tcp-rr` (echo or HTTP keep-alive, unpaced or fixed-rate
//!   without coordinated omission), `tcp-stream`, `connect`;
//! - [`udp`]: datagrams per second, optionally echoed;
//! - [`statsd`]: metric lines, and with [`graphite`] an exact check of
//!   what an aggregator flushed;
//! - [`http`] parses responses, [`report`] counts and prints; both sans-IO.
//!
//! ```text
//! appliance loadgen tcp-rr --target 127.0.0.1:8080 --connections 50 --duration 10s --http --rate 20000
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod args;
pub mod graphite;
pub mod http;
pub mod report;
pub mod statsd;
pub mod tcp;
pub mod udp;

use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

pub use args::Mode;
use report::{Progress, ShardResult, Summary, Tally};

use args::Placement;

/// The time window every shard's load shares.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// When the load started.
    pub start: Instant,
    /// When it must stop.
    pub deadline: Instant,
}

impl Window {
    /// True once the window is over.
    pub fn over(&self) -> bool {
        Instant::now() >= self.deadline
    }
}

/// Part `i` of `total` split into `parts` shares that differ by at most one.
pub fn share(total: u64, parts: usize, i: usize) -> u64 {
    let parts = parts.max(1) as u64;
    total / parts + u64::from((i as u64) < total % parts)
}

/// The connections (or sockets) of this shard: `c` with `c mod shards == me`.
fn mine(count: usize) -> impl Iterator<Item = usize> {
    (shard::shard_id()..count).step_by(shard::shard_count().max(1))
}

/// A fixed-rate schedule: the intended time of each operation, so latency
/// is measured from when an operation was due, not from when a slow
/// previous reply let it go (no coordinated omission).
#[derive(Debug)]
pub struct Pacer {
    next: Instant,
    interval: Option<Duration>,
}

impl Pacer {
    /// `rate` operations per second (None: as fast as possible), the first
    /// due at `first`.
    pub fn new(rate: Option<f64>, first: Instant) -> Pacer {
        let interval = rate.filter(|r| *r > 0.0).map(|r| Duration::from_secs_f64(1.0 / r));
        Pacer { next: first, interval }
    }

    /// Waits until the next operation is due and returns when it was due
    /// (now, when unpaced). A schedule that fell behind is not skipped.
    pub async fn due(&mut self) -> Instant {
        let Some(iv) = self.interval else { return Instant::now() };
        let due = self.next;
        self.next += iv;
        if due > Instant::now() {
            shard::time::sleep_until(due).await;
        }
        due
    }

    /// When the next operation is due.
    pub fn next(&self) -> Instant {
        self.next
    }
}

/// Runs `count` workers (connections, sockets) spread over the shards of a
/// runtime built from `runtime`, worker `i` as `worker(tally, i, window)`
/// on shard `i mod shards`, bounded by `limit`; returns the merged result
/// and the wall time of the load.
pub fn drive<W, Fut>(
    runtime: &Placement,
    unit: &'static str,
    limit: Duration,
    count: usize,
    worker: W,
) -> anyhow::Result<(ShardResult, Duration, usize)>
where
    W: Fn(Rc<Tally>, usize, Window) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let rt = runtime.plan()?;
    for w in &rt.plan().warnings {
        tracing::warn!("{w}");
    }
    let shards = rt.shards();
    let progress = Progress::new(shards);
    progress.print_while_running(unit);
    let p = progress.clone();
    let out = rt.run(move || async move {
        let start = Instant::now();
        let window = Window { start, deadline: start + limit };
        let merged = shard::map_reduce(
            move || {
                let (worker, p) = (worker.clone(), p.clone());
                async move {
                    let tally = Rc::new(Tally::new(p));
                    run_all(&tally, mine(count), |i| worker(tally.clone(), i, window)).await;
                    tally.finish()
                }
            },
            ShardResult::default(),
            ShardResult::merge,
        )
        .await;
        (merged.map_err(|e| e.to_string()), start.elapsed())
    });
    progress.finish();
    let (merged, elapsed) = out.context("runtime")?;
    let merged = merged.map_err(anyhow::Error::msg)?;
    Ok((merged, elapsed, shards))
}

/// Spawns one task per item on this shard and waits for all of them; a
/// task that panicked counts as an error.
async fn run_all<I, F, Fut>(tally: &Rc<Tally>, items: I, task: F)
where
    I: IntoIterator<Item = usize>,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let handles: Vec<_> = items.into_iter().map(|i| shard::spawn_local_named("loadgen", task(i))).collect();
    for h in handles {
        if let Err(e) = h.await {
            tally.error(format!("load task: {e:?}"));
        }
    }
}

/// Runs `appliance loadgen MODE`; the process exit status is an error when
/// the run could not do what it was asked (no operation succeeded, or an
/// exact count was not reached).
pub fn run(mode: Mode) -> anyhow::Result<()> {
    let (summary, json, expected) = match mode {
        Mode::TcpRr(a) => (tcp::rr(&a)?, a.common.json, a.requests),
        Mode::TcpStream(a) => (tcp::stream(&a)?, a.common.json, None),
        Mode::Connect(a) => (tcp::connect_rate(&a)?, a.common.json, a.requests),
        Mode::Udp(a) => (udp::run(&a)?, a.common.json, a.requests),
        Mode::Statsd(a) => (statsd::run(&a)?, a.common.json, a.lines),
    };
    if json {
        println!("{}", summary.to_json());
    } else {
        print!("{}", summary.to_text());
    }
    check(&summary, expected)
}

fn check(summary: &Summary, expected: Option<u64>) -> anyhow::Result<()> {
    if let Some(n) = expected {
        if summary.result.ok != n {
            anyhow::bail!(
                "{} of the {n} {} asked for completed ({} errors; first: {})",
                summary.result.ok,
                summary.unit,
                summary.result.errors,
                summary.result.first_error.as_deref().unwrap_or("none")
            );
        }
    }
    if summary.result.ok == 0 {
        anyhow::bail!(
            "no {} succeeded against {} (first error: {})",
            summary.unit,
            summary.target,
            summary.result.first_error.as_deref().unwrap_or("none")
        );
    }
    Ok(())
}

/// The common end of every mode: a summary from the merged result.
pub(crate) fn summary(
    mode: &'static str,
    unit: &'static str,
    target: std::net::SocketAddr,
    connections: usize,
    (result, elapsed, shards): (ShardResult, Duration, usize),
) -> Summary {
    Summary {
        mode,
        unit,
        target: target.to_string(),
        shards,
        connections,
        elapsed,
        result,
        extra: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_differ_by_at_most_one() {
        for total in [0u64, 1, 7, 100, 1001] {
            for parts in 1..9 {
                let s: Vec<u64> = (0..parts).map(|i| share(total, parts, i)).collect();
                assert_eq!(s.iter().sum::<u64>(), total);
                assert!(s.iter().max().unwrap() - s.iter().min().unwrap() <= 1);
            }
        }
    }
}
