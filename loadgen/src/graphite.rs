//! `loadgen statsd --verify-graphite`: a Graphite plaintext sink that sums
//! what an aggregator flushes and checks it exactly against what was sent.
//!
//! Counters are read the way etsy statsd names them without legacy
//! namespacing: `<prefix>.counters.<key>.count <value> <timestamp>`, one
//! line per key per flush interval; the totals are summed over intervals.
//! Tags (`;k=v`, after the path or, as etsy writes them, before `.count`)
//! are dropped, so the tagged series of one key sum together. [`Totals`]
//! is the sans-IO part; [`Sink`] is a plain thread that accepts
//! connections (an aggregator may connect once per flush) and hands the
//! lines over.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The statsd key of a counter's `.count` series (after the prefix), with
/// tags dropped wherever they sit: Graphite's `key.count;k=v` or etsy's
/// `key;k=v.count`. Series of one key with different tags sum together.
fn counter_key(path: Option<&str>) -> Option<&str> {
    let path = path?;
    let (name, tags) = path.split_once(';').unwrap_or((path, ""));
    match name.strip_suffix(".count") {
        Some(key) => Some(key),
        None if tags.ends_with(".count") => Some(name),
        None => None,
    }
}

/// Counter totals received so far.
#[derive(Debug)]
pub struct Totals {
    counters_prefix: String,
    sums: HashMap<String, f64>,
    /// Lines read.
    pub lines: u64,
    /// Lines that were not `path value timestamp`.
    pub malformed: u64,
}

/// How the received totals compare with what was sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Counter keys sent.
    pub keys: usize,
    /// Keys whose received total equals the sent total exactly.
    pub exact: usize,
    /// Keys never seen.
    pub missing: usize,
    /// Keys received that were never sent.
    pub unexpected: usize,
    /// Sum of every counter value sent.
    pub sent_total: u64,
    /// Sum of every counter value received for keys that were sent.
    pub received_total: f64,
}

impl Verdict {
    /// Fraction of keys counted exactly.
    pub fn exact_fraction(&self) -> f64 {
        if self.keys == 0 {
            return 0.0;
        }
        self.exact as f64 / self.keys as f64
    }

    /// The verdict as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "counter_keys": self.keys,
            "exact_keys": self.exact,
            "exact_fraction": self.exact_fraction(),
            "missing_keys": self.missing,
            "unexpected_keys": self.unexpected,
            "sent_total": self.sent_total,
            "received_total": self.received_total,
            "received_fraction": if self.sent_total == 0 { 0.0 } else { self.received_total / self.sent_total as f64 },
        })
    }
}

impl Totals {
    /// Totals for an aggregator flushing under `prefix` (etsy: `stats`).
    pub fn new(prefix: &str) -> Totals {
        let counters_prefix =
            if prefix.is_empty() { "counters.".to_owned() } else { format!("{prefix}.counters.") };
        Totals { counters_prefix, sums: HashMap::new(), lines: 0, malformed: 0 }
    }

    /// Reads one plaintext line; true when a counter total changed.
    pub fn feed_line(&mut self, line: &str) -> bool {
        self.lines += 1;
        let mut f = line.split_ascii_whitespace();
        let (Some(path), Some(value), Some(_ts), None) = (f.next(), f.next(), f.next(), f.next()) else {
            self.malformed += 1;
            return false;
        };
        let Ok(value) = value.parse::<f64>() else {
            self.malformed += 1;
            return false;
        };
        let Some(key) = counter_key(path.strip_prefix(&self.counters_prefix)) else {
            return false;
        };
        let sum = self.sums.entry(key.to_owned()).or_insert(0.0);
        *sum += value;
        value != 0.0
    }

    /// Compares with the totals sent, per key.
    pub fn compare(&self, expected: &HashMap<String, u64>) -> Verdict {
        let mut v = Verdict {
            keys: expected.len(),
            exact: 0,
            missing: 0,
            unexpected: self.sums.keys().filter(|k| !expected.contains_key(*k)).count(),
            sent_total: expected.values().sum(),
            received_total: 0.0,
        };
        for (key, &sent) in expected {
            match self.sums.get(key) {
                None => v.missing += 1,
                Some(&got) => {
                    v.received_total += got;
                    if (got - sent as f64).abs() < 0.5 {
                        v.exact += 1;
                    }
                }
            }
        }
        v
    }
}

/// A listening Graphite sink.
#[derive(Debug)]
pub struct Sink {
    /// Where it listens.
    pub addr: SocketAddr,
    lines: mpsc::Receiver<String>,
    totals: Totals,
}

impl Sink {
    /// Listens on `addr` and starts accepting in the background.
    pub fn start(addr: SocketAddr, prefix: &str) -> std::io::Result<Sink> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new().name("graphite-sink".into()).spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                let tx = tx.clone();
                let _ = std::thread::Builder::new().name("graphite-conn".into()).spawn(move || {
                    for line in BufReader::new(conn).lines().map_while(Result::ok) {
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                });
            }
        })?;
        Ok(Sink { addr, lines: rx, totals: Totals::new(prefix) })
    }

    /// Reads flushes until every key is exact, or the totals have not
    /// changed for `settle`, or `limit` has passed (both from now: call it
    /// when the load has ended).
    pub fn verify(&mut self, expected: &HashMap<String, u64>, settle: Duration, limit: Duration) -> Verdict {
        let end = Instant::now() + limit;
        let mut last_change = Instant::now();
        loop {
            let verdict = self.totals.compare(expected);
            if verdict.keys > 0 && verdict.exact == verdict.keys {
                return verdict;
            }
            let until = end.min(last_change + settle);
            let Some(wait) = until.checked_duration_since(Instant::now()) else { return verdict };
            let mut changed = match self.lines.recv_timeout(wait) {
                Ok(line) => self.totals.feed_line(&line),
                Err(mpsc::RecvTimeoutError::Timeout) => false,
                Err(mpsc::RecvTimeoutError::Disconnected) => return verdict,
            };
            // Take everything already queued before comparing again.
            while let Ok(line) = self.lines.try_recv() {
                changed |= self.totals.feed_line(&line);
            }
            if changed {
                last_change = Instant::now();
            }
        }
    }

    /// What was read so far.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn sums_counter_counts_over_flushes_and_ignores_the_rest() {
        let mut t = Totals::new("stats");
        for line in [
            "stats.counters.lg.c.1.count 5 1700000000",
            "stats.counters.lg.c.1.rate 0.5 1700000000",
            "stats.timers.lg.ms.1.count 3 1700000000",
            "stats.gauges.lg.g.1 7 1700000000",
            "stats.counters.lg.c.1.count 2 1700000010",
            "stats.counters.lg.c.2.count;env=x 3 1700000010",
            "stats.counters.lg.c.2;env=y.count 1 1700000010",
            "stats.counters.lg.c.2;env=y.rate 1 1700000010",
            "stats.counters.lg.c.3.count 0 1700000010",
            "garbage",
        ] {
            t.feed_line(line);
        }
        let v = t.compare(&expected(&[("lg.c.1", 7), ("lg.c.2", 4), ("lg.c.9", 1)]));
        assert_eq!((v.keys, v.exact, v.missing, v.unexpected), (3, 2, 1, 1));
        assert_eq!(t.malformed, 1);
        assert_eq!(v.sent_total, 12);
        assert_eq!(v.received_total, 11.0);
    }

    #[test]
    fn one_off_is_not_exact() {
        let mut t = Totals::new("stats");
        t.feed_line("stats.counters.k.count 99 1");
        let v = t.compare(&expected(&[("k", 100)]));
        assert_eq!(v.exact, 0);
        assert!(v.exact_fraction() < 1.0);
    }

    #[test]
    fn sink_reads_lines_from_several_connections() {
        use std::io::Write as _;
        let mut sink = Sink::start("127.0.0.1:0".parse().unwrap(), "stats").unwrap();
        for part in [3u64, 4] {
            let mut c = std::net::TcpStream::connect(sink.addr).unwrap();
            writeln!(c, "stats.counters.a.count {part} 1").unwrap();
        }
        let v = sink.verify(&expected(&[("a", 7)]), Duration::from_secs(5), Duration::from_secs(10));
        assert_eq!(v.exact, 1);
    }
}
