//! Counting and reporting. Each shard counts in its own [`Tally`] (plain
//! cells, one latency histogram) and hands a [`ShardResult`] back through
//! `map_reduce`; the merged result becomes a [`Summary`] printed for people
//! or as JSON. Live progress reads one cache-padded slot per shard that
//! only that shard writes.

use std::cell::{Cell, RefCell};
use std::fmt::Display;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Latencies are recorded in nanoseconds, up to an hour, 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that satisfy hdrhistogram's rules
    // (low >= 1, high >= 2 * low, sigfig <= 5), so this cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// One shard's live counters, padded so shards never share a cache line.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Slot {
    ok: AtomicU64,
    errors: AtomicU64,
}

/// Live progress: one slot per shard, read by a printer thread.
#[derive(Debug)]
pub struct Progress {
    slots: Vec<Slot>,
    done: AtomicBool,
}

impl Progress {
    /// Slots for `shards` shards.
    pub fn new(shards: usize) -> Arc<Progress> {
        Arc::new(Progress {
            slots: (0..shards).map(|_| Slot::default()).collect(),
            done: AtomicBool::new(false),
        })
    }

    fn totals(&self) -> (u64, u64) {
        self.slots.iter().fold((0, 0), |(o, e), s| {
            (o + s.ok.load(Ordering::Relaxed), e + s.errors.load(Ordering::Relaxed))
        })
    }

    /// Prints the per-second rate to stderr every second while the load
    /// runs, when stderr is a terminal; stops at [`Progress::finish`].
    pub fn print_while_running(self: &Arc<Progress>, what: &'static str) {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let me = self.clone();
        let start = Instant::now();
        let _ = std::thread::Builder::new().name("progress".into()).spawn(move || {
            let mut last = (0, 0);
            while !me.done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                let now = me.totals();
                eprintln!(
                    "[{:>4.0}s] {} {what}/s, {} errors (total {})",
                    start.elapsed().as_secs_f64(),
                    now.0 - last.0,
                    now.1 - last.1,
                    now.0
                );
                last = now;
            }
        });
    }

    /// Stops the printer.
    pub fn finish(&self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// A shard's counters while the load runs.
#[derive(Debug)]
pub struct Tally {
    ok: Cell<u64>,
    errors: Cell<u64>,
    /// Bytes sent.
    pub bytes_out: Cell<u64>,
    /// Bytes received.
    pub bytes_in: Cell<u64>,
    /// Datagrams sent (UDP modes).
    pub datagrams: Cell<u64>,
    hist: RefCell<Histogram<u64>>,
    first_error: RefCell<Option<String>>,
    /// statsd: counter total sent per key index.
    pub counters: RefCell<Vec<u64>>,
    progress: Arc<Progress>,
    shard: usize,
}

impl Tally {
    /// Counters for this shard, publishing progress to `progress`.
    pub fn new(progress: Arc<Progress>) -> Tally {
        Tally {
            ok: Cell::new(0),
            errors: Cell::new(0),
            bytes_out: Cell::new(0),
            datagrams: Cell::new(0),
            bytes_in: Cell::new(0),
            hist: RefCell::new(new_histogram()),
            first_error: RefCell::new(None),
            counters: RefCell::new(Vec::new()),
            progress,
            shard: shard::shard_id(),
        }
    }

    /// One operation done, `latency` after it was due.
    pub fn ok(&self, latency: Duration) {
        let _ = self.hist.borrow_mut().record(latency.as_nanos().clamp(1, u64::MAX as u128) as u64);
        self.ok_unmeasured(1);
    }

    /// `n` operations done, without a latency.
    pub fn ok_unmeasured(&self, n: u64) {
        let v = self.ok.get() + n;
        self.ok.set(v);
        if let Some(s) = self.progress.slots.get(self.shard) {
            s.ok.store(v, Ordering::Relaxed);
        }
    }

    /// One failed operation; the first error's text is kept for the report.
    pub fn error(&self, what: impl Display) {
        let v = self.errors.get() + 1;
        self.errors.set(v);
        if let Some(s) = self.progress.slots.get(self.shard) {
            s.errors.store(v, Ordering::Relaxed);
        }
        let mut first = self.first_error.borrow_mut();
        if first.is_none() {
            *first = Some(what.to_string());
        }
    }

    /// Operations done so far.
    pub fn done(&self) -> u64 {
        self.ok.get()
    }

    /// What the shard hands back.
    pub fn finish(&self) -> ShardResult {
        ShardResult {
            ok: self.ok.get(),
            errors: self.errors.get(),
            bytes_out: self.bytes_out.get(),
            datagrams: self.datagrams.get(),
            bytes_in: self.bytes_in.get(),
            hist: self.hist.replace(new_histogram()),
            first_error: self.first_error.borrow_mut().take(),
            counters: self.counters.take(),
        }
    }
}

/// A shard's (or the merged) outcome.
#[derive(Debug, Clone)]
pub struct ShardResult {
    /// Operations completed.
    pub ok: u64,
    /// Operations failed.
    pub errors: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Datagrams sent (UDP modes).
    pub datagrams: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Latencies in nanoseconds.
    pub hist: Histogram<u64>,
    /// The first error seen.
    pub first_error: Option<String>,
    /// statsd: counter total sent per key index.
    pub counters: Vec<u64>,
}

impl Default for ShardResult {
    fn default() -> ShardResult {
        ShardResult {
            ok: 0,
            errors: 0,
            bytes_out: 0,
            datagrams: 0,
            bytes_in: 0,
            hist: new_histogram(),
            first_error: None,
            counters: Vec::new(),
        }
    }
}

impl ShardResult {
    /// Folds `other` into `self` (the `map_reduce` reducer).
    pub fn merge(mut self, other: ShardResult) -> ShardResult {
        self.ok += other.ok;
        self.errors += other.errors;
        self.bytes_out += other.bytes_out;
        self.datagrams += other.datagrams;
        self.bytes_in += other.bytes_in;
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
        self.first_error = self.first_error.or(other.first_error);
        if self.counters.len() < other.counters.len() {
            self.counters.resize(other.counters.len(), 0);
        }
        for (a, b) in self.counters.iter_mut().zip(&other.counters) {
            *a += b;
        }
        self
    }
}

/// The final report of a run.
#[derive(Debug)]
pub struct Summary {
    /// `tcp-rr`, `connect`, ...
    pub mode: &'static str,
    /// What one operation is called (requests, connections, datagrams, lines).
    pub unit: &'static str,
    /// The target.
    pub target: String,
    /// Shards that ran the load.
    pub shards: usize,
    /// Connections or sockets.
    pub connections: usize,
    /// Wall time of the load.
    pub elapsed: Duration,
    /// Merged counts.
    pub result: ShardResult,
    /// Extra mode-specific fields (name, value) for the report.
    pub extra: Vec<(&'static str, serde_json::Value)>,
}

impl Summary {
    fn rate(&self) -> f64 {
        self.result.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn gbits(&self, bytes: u64) -> f64 {
        bytes as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e9
    }

    /// Latency percentiles in microseconds, None when nothing was timed.
    fn percentiles(&self) -> Option<[(&'static str, f64); 6]> {
        let h = &self.result.hist;
        if h.is_empty() {
            return None;
        }
        let us = |v: u64| v as f64 / 1000.0;
        Some([
            ("p50", us(h.value_at_quantile(0.50))),
            ("p90", us(h.value_at_quantile(0.90))),
            ("p99", us(h.value_at_quantile(0.99))),
            ("p99.9", us(h.value_at_quantile(0.999))),
            ("max", us(h.max())),
            ("mean", h.mean() / 1000.0),
        ])
    }

    /// The summary as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let mut o = serde_json::json!({
            "mode": self.mode,
            "unit": self.unit,
            "target": self.target,
            "shards": self.shards,
            "connections": self.connections,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "ok": self.result.ok,
            "errors": self.result.errors,
            "rate_per_s": self.rate(),
            "bytes_out": self.result.bytes_out,
            "datagrams_sent": self.result.datagrams,
            "bytes_in": self.result.bytes_in,
            "gbit_out_per_s": self.gbits(self.result.bytes_out),
            "gbit_in_per_s": self.gbits(self.result.bytes_in),
            "first_error": self.result.first_error,
        });
        if let Some(p) = self.percentiles() {
            let lat: serde_json::Map<String, serde_json::Value> =
                p.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
            o["latency_us"] = serde_json::Value::Object(lat);
        }
        for (k, v) in &self.extra {
            o[*k] = v.clone();
        }
        o
    }

    /// The summary for people.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{} {}: {} {} in {:.2}s over {} connections on {} shards: {:.0} {}/s, {} errors\n",
            self.mode,
            self.target,
            self.result.ok,
            self.unit,
            self.elapsed.as_secs_f64(),
            self.connections,
            self.shards,
            self.rate(),
            self.unit,
            self.result.errors,
        );
        if self.result.bytes_out > 0 || self.result.bytes_in > 0 {
            s += &format!(
                "  throughput: {:.3} Gbit/s out, {:.3} Gbit/s in\n",
                self.gbits(self.result.bytes_out),
                self.gbits(self.result.bytes_in)
            );
        }
        if let Some(p) = self.percentiles() {
            s += "  latency (us):";
            for (k, v) in p {
                s += &format!(" {k} {v:.1}");
            }
            s += "\n";
        }
        if let Some(e) = &self.result.first_error {
            s += &format!("  first error: {e}\n");
        }
        for (k, v) in &self.extra {
            s += &format!("  {k}: {v}\n");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(ok: u64, lat_ns: &[u64], counters: Vec<u64>) -> ShardResult {
        let mut r = ShardResult { ok, counters, ..Default::default() };
        for &v in lat_ns {
            r.hist.record(v).unwrap();
        }
        r
    }

    #[test]
    fn merge_adds_counts_histograms_and_counters() {
        let a = result(3, &[1000, 2000], vec![1, 2]);
        let b = result(4, &[3000], vec![10, 20, 30]);
        let m = a.merge(b);
        assert_eq!(m.ok, 7);
        assert_eq!(m.hist.len(), 3);
        assert_eq!(m.counters, vec![11, 22, 30]);
    }

    #[test]
    fn summary_json_has_rate_and_percentiles() {
        let s = Summary {
            mode: "tcp-rr",
            unit: "requests",
            target: "127.0.0.1:1".into(),
            shards: 1,
            connections: 1,
            elapsed: Duration::from_secs(2),
            result: result(100, &[1_000_000; 10], vec![]),
            extra: vec![],
        };
        let j = s.to_json();
        assert_eq!(j["ok"], 100);
        assert_eq!(j["rate_per_s"], 50.0);
        let p99 = j["latency_us"]["p99"].as_f64().unwrap();
        assert!((p99 - 1000.0).abs() < 2.0, "{p99}");
    }
}
