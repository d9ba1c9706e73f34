//! What a shard spends per statsd line once the datagram is in memory:
//! parse, canonical key, hash, table update, counters (the aggregate
//! service's own ingest, `cores::statsd::aggregator::Aggregator::ingest`,
//! one instance owning every key), against the peer a bare receive loop
//! does on the same bytes: counting newlines.
//!
//! `cargo bench -p appliance --bench ingest` prints ns per line for each
//! mix and the ratio to counting; then, with a flush per 1M lines, ns per
//! line when flushing to Graphite text and when keeping Prometheus series
//! named by a 50-mapping statsd_exporter file (`map/ing`: that over
//! ingest alone). `-- --passes N` runs a fixed amount of
//! work instead of timing (for `valgrind --tool=callgrind`, whose
//! instruction counts do not depend on what else the machine is doing).
//!
//! The datagrams are what `appliance loadgen statsd` sends: 20 lines each,
//! 1000 keys per type. Under `cargo test --all-targets` (no `--bench`
//! argument) it is a smoke test: one pass, checking every line applied.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cores::hash::hash64;
use cores::statsd::aggregator::{Aggregator, Settings};
use cores::statsd::graphite::Format;
use cores::statsd::mapping::Mapper;
use cores::statsd::parse::{parse_line, Line};
use cores::statsd::table::{canonical_key, Table};
use loadgen::statsd::{parse_types, LineGen};

const PER_DATAGRAM: usize = 20;
const DATAGRAMS: usize = 5_000;
const KEYS: u32 = 1000;
/// Lines per flush in the flushing columns: a shard taking 100,000 lines/s
/// with the default 10 s interval.
const FLUSH_EVERY_LINES: usize = 1_000_000;

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
    aggregator_with(None)
}

/// statsd_exporter's mapping file of 50 mappings (globs, regexes, drops,
/// observer options).
const MAPPING50: &str = include_str!("../../cores/tests/data/mapping50.yml");

/// [`aggregator`], keeping Prometheus series named by `mapping` (and no
/// Graphite text) when one is given.
fn aggregator_with(mapping: Option<&str>) -> Aggregator {
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
        graphite: true,
        prometheus: None,
        relays: Vec::new(),
        format,
    };
    let settings = match mapping {
        Some(text) => {
            let mapper = Mapper::from_yaml(text).expect("the bench's mapping file loads");
            Settings { graphite: false, prometheus: Some(Arc::new(mapper)), ..settings }
        }
        None => settings,
    };
    Aggregator::new(0, 1, settings)
}

/// Ingests a datagram and, after `every` datagrams, flushes:
/// ns per line of both.
#[inline(never)]
fn ingest_and_flush(agg: &mut Aggregator, data: &[u8], flush: bool, ts: &mut u64) -> u64 {
    let n = ingest(agg, data);
    if flush {
        *ts += 10;
        black_box(agg.flush_slice(0..cores::statsd::table::PARTS, *ts, true));
    }
    n
}

/// One round's ns per line: count, table, ingest, +graphite, +map50.
type Round = (f64, f64, f64, f64, f64);

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
    println!(
        "{:<20} {:>9} {:>9} {:>9} {:>7} {:>10} {:>10} {:>7}",
        "mix", "count \\n", "table", "ingest", "ratio", "+graphite", "+map50", "map/ing"
    );
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
        // With a flush per pass: to Graphite text, or to Prometheus series
        // named by a 50-mapping file.
        let (mut graphite, mut mapped) = (aggregator(), aggregator_with(Some(MAPPING50)));
        let mut ts = 0u64;
        let every = FLUSH_EVERY_LINES / PER_DATAGRAM;
        let mut rounds = Vec::new();
        for _ in 0..if passes > 0 { 1 } else { 5 } {
            let bare = measure(&dgrams, passes, budget, count_lines);
            let core = measure(&dgrams, passes, budget, |d| table_only(&mut table, &mut key, d));
            let full = measure(&dgrams, passes, budget, |d| ingest(&mut agg, d));
            let mut i = 0;
            let gr = measure(&dgrams, passes, budget, |d| {
                i += 1;
                ingest_and_flush(&mut graphite, d, i % every == 0, &mut ts)
            });
            let mut i = 0;
            let map = measure(&dgrams, passes, budget, |d| {
                i += 1;
                ingest_and_flush(&mut mapped, d, i % every == 0, &mut ts)
            });
            rounds.push((bare, core, full, gr, map));
        }
        // Each column's median over the rounds; the ratio's median too.
        let median = |f: &dyn Fn(&Round) -> f64| {
            let mut v: Vec<f64> = rounds.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (bare, core, full) = (median(&|r| r.0), median(&|r| r.1), median(&|r| r.2));
        let (gr, map, ratio) = (median(&|r| r.3), median(&|r| r.4), median(&|r| r.4 / r.2));
        println!(
            "{name:<20} {bare:>9.1} {core:>9.1} {full:>9.1} {:>6.1}x {gr:>10.1} {map:>10.1} {:>6.2}x",
            full / bare,
            ratio
        );
        mapped.flush_slice(0..cores::statsd::table::PARTS, ts + 10, true);
        assert!(mapped.prometheus().is_some_and(|s| !s.families.is_empty()), "{name}: series kept");
    }
}
