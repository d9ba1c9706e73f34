//! What a shard spends per statsd line once the datagram is in memory:
//! parse, canonical key, hash, table update, counters (the aggregate
//! service's own ingest, `cores::statsd::aggregator::Aggregator::ingest`,
//! one instance owning every key), against the peer a bare receive loop
//! does on the same bytes: counting newlines.
//!
//! `cargo bench -p appliance --bench ingest` prints ns per line for each
//! mix and the ratio to counting. `-- --passes N` runs a fixed amount of
//! work instead of timing (for `valgrind --tool=callgrind`, whose
//! instruction counts do not depend on what else the machine is doing).
//!
//! The datagrams are what `appliance loadgen statsd` sends: 20 lines each,
//! 1000 keys per type. Under `cargo test --all-targets` (no `--bench`
//! argument) it is a smoke test: one pass, checking every line applied.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cores::hash::hash64;
use cores::statsd::aggregator::{Aggregator, Settings};
use cores::statsd::graphite::Format;
use cores::statsd::parse::{parse_line, Line};
use cores::statsd::table::{canonical_key, Table};
use loadgen::statsd::{parse_types, LineGen};

const PER_DATAGRAM: usize = 20;
const DATAGRAMS: usize = 5_000;
const KEYS: u32 = 1000;

fn datagrams(types: &str, tags: bool) -> Vec<Vec<u8>> {
    let types = parse_types(types).unwrap_or_default();
    let mut gen = LineGen::new(types, KEYS, tags, 3);
    (0..DATAGRAMS)
        .map(|_| {
            let mut d = Vec::with_capacity(1024);
            for i in 0..PER_DATAGRAM {
                if i > 0 {
                    d.push(b'\n');
                }
                gen.next_line(&mut d);
            }
            d
        })
        .collect()
}

/// The bare loop's work: newline-terminated lines, plus an unterminated last.
#[inline(never)]
fn count_lines(data: &[u8]) -> u64 {
    let n = data.iter().filter(|&&b| b == b'\n').count() as u64;
    n + u64::from(data.last().is_some_and(|&b| b != b'\n'))
}

/// The shard's work per datagram: what the service calls.
#[inline(never)]
fn ingest(agg: &mut Aggregator, data: &[u8]) -> u64 {
    let before = agg.stats().metrics;
    agg.ingest(data);
    agg.stats().metrics - before
}

/// The core of it alone: parse, canonical key, hash, table update, as the
/// earlier figures measured it (kept for comparison across versions).
#[inline(never)]
fn table_only(table: &mut Table, key: &mut Vec<u8>, data: &[u8]) -> u64 {
    let mut applied = 0;
    for raw in data.split(|&b| b == b'\n') {
        if let Ok(Line::Metric(m)) = parse_line(raw, 1024) {
            canonical_key(&m, key);
            if table.apply_hashed(key, hash64(key), &m).is_ok() {
                applied += 1;
            }
        }
    }
    applied
}

/// One instance that owns every key (a one-shard aggregator).
fn aggregator() -> Aggregator {
    let format = Format { prefix: "stats".into(), percentiles: Vec::new(), interval_secs: 10.0 };
    let settings = Settings {
        max_keys: 1_000_000,
        max_idle_flushes: u32::MAX,
        max_line: 1024,
        records: false,
        // The default: each timer key keeps its first 1000 samples of an
        // interval as they came (this bench never flushes, so past them
        // every sample takes the sketch's path, as a busy key does).
        exact_samples: 1000,
        rules: cores::statsd::rules::Rules::default(),
        origins: None,
        relays: Vec::new(),
        format,
    };
    Aggregator::new(0, 1, settings)
}

/// Runs `pass` over every datagram, `passes` times or (when `passes` is 0)
/// for about `budget`; returns ns per line.
fn measure(dgrams: &[Vec<u8>], passes: usize, budget: Duration, mut pass: impl FnMut(&[u8]) -> u64) -> f64 {
    let lines = (dgrams.len() * PER_DATAGRAM) as f64;
    let start = Instant::now();
    let mut done = 0usize;
    let mut seen = 0u64;
    while (passes > 0 && done < passes) || (passes == 0 && start.elapsed() < budget) {
        for d in dgrams {
            seen += pass(black_box(d));
        }
        done += 1;
    }
    black_box(seen);
    start.elapsed().as_nanos() as f64 / (lines * done as f64)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = !args.iter().any(|a| a == "--bench" || a == "--passes");
    let passes = args
        .iter()
        .position(|a| a == "--passes")
        .and_then(|i| args.get(i + 1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(usize::from(quick));
    let budget = Duration::from_millis(700);
    println!("ingest: ns per line over {DATAGRAMS} datagrams of {PER_DATAGRAM} lines, {KEYS} keys per type");
    println!("{:<28} {:>10} {:>10} {:>10} {:>8}", "mix", "count \\n", "table", "ingest", "ratio");
    for (name, types, tags) in
        [("counters", "c", false), ("counters, tagged", "c", true), ("every type", "c,g,ms,h,d,s", false)]
    {
        let dgrams = datagrams(types, tags);
        let mut agg = aggregator();
        let (mut table, mut key) = (Table::new(1_000_000, u32::MAX), Vec::with_capacity(256));
        let warm: u64 = dgrams.iter().map(|d| table_only(&mut table, &mut key, d)).sum();
        assert_eq!(warm, (DATAGRAMS * PER_DATAGRAM) as u64, "{name}: lines applied to the table");
        // Warm the table (the steady state has every key); every line is
        // a valid metric, so every one must apply.
        let applied: u64 = dgrams.iter().map(|d| ingest(&mut agg, d)).sum();
        assert_eq!(applied, (DATAGRAMS * PER_DATAGRAM) as u64, "{name}: lines applied");
        let mut rounds = Vec::new();
        for _ in 0..if passes > 0 { 1 } else { 5 } {
            let bare = measure(&dgrams, passes, budget, count_lines);
            let core = measure(&dgrams, passes, budget, |d| table_only(&mut table, &mut key, d));
            let full = measure(&dgrams, passes, budget, |d| ingest(&mut agg, d));
            rounds.push((bare, core, full));
        }
        rounds.sort_by(|a, b| a.2.total_cmp(&b.2));
        let (bare, core, full) = rounds[rounds.len() / 2];
        println!("{name:<28} {bare:>10.1} {core:>10.1} {full:>10.1} {:>7.1}x", full / bare);
    }
}
