//! One shard's share of an aggregator, sans I/O: lines in, partial
//! aggregates out to their owners, owned keys flushed slice by slice.
//!
//! Every key is owned by one of `shards` instances (`hash(key) % shards`).
//! An instance applies a line for a key it owns to its own table, and any
//! other line to a *partial* table (or, in records mode, to a batch of raw
//! lines for the owner); at flush time [`Aggregator::drain_partials`] gives
//! one batch per owner, which the owner [`Aggregator::merge`]s, and each
//! owner then [`Aggregator::flush_slice`]s its keys. How batches travel
//! between instances (cross-core rings, in the service) is not this
//! module's business, so N instances can run in one test with the exchange
//! done by hand, and the timestamps passed in.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;

use super::exporter::{Exporter, Snapshot};
use super::graphite::{self, Format};
use super::mapping::Mapper;
use super::origins::{OriginBy, OriginPolicy, Origins, Verdict as OriginVerdict};
use super::parse::{parse_line, Line};
use super::relay;
use super::rules::Rules;
use super::stats::AggregateStats;
use super::table::{canonical_key, canonical_key_keeping, Agg, Table, EXACT_BUDGET};
use crate::hash::hash64;

/// Events and service checks held for relays per instance and interval.
pub const PASSTHROUGH_LIMIT: usize = 1 << 20;

/// A batch of partial aggregates for one owner.
pub type Partials = Vec<(Box<[u8]>, Agg)>;

/// How an instance is set up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Keys this instance may own.
    pub max_keys: usize,
    /// Flushes a key may go without an update before it is deleted.
    pub max_idle_flushes: u32,
    /// Longer lines are dropped (counted).
    pub max_line: usize,
    /// Ship raw lines to their owners as they arrive (records mode) instead
    /// of aggregating them in a partial table.
    pub records: bool,
    /// Next-tier aggregators, for flushed keys and passed-through events.
    pub relays: Vec<SocketAddr>,
    /// Graphite naming and timer percentiles.
    pub format: Format,
    /// Samples a timer key keeps as they came per interval, for etsy's
    /// exact figures (0: the sketch only).
    pub exact_samples: u32,
    /// Metrics dropped by name and tag keys stripped, before aggregation.
    pub rules: Rules,
    /// Per-origin key limits, if any.
    pub origins: Option<OriginPolicy>,
    /// Write Graphite plaintext at flush (a Graphite upstream or stdout
    /// takes it).
    pub graphite: bool,
    /// Keep the owned keys as Prometheus series named by this mapping
    /// (see [`super::exporter`]).
    pub prometheus: Option<Arc<Mapper>>,
}

/// What one flushed slice produced.
#[derive(Debug, Default, PartialEq)]
pub struct Slice {
    /// Graphite plaintext.
    pub graphite: Vec<u8>,
    /// Its line count.
    pub lines: u64,
    /// One statsd payload per relay (events and service checks in the
    /// first relay's payload of an interval's first slice).
    pub relays: Vec<Vec<u8>>,
}

/// One instance. See the module docs.
#[derive(Debug)]
pub struct Aggregator {
    me: usize,
    shards: usize,
    owned: Table,
    partial: Table,
    stats: AggregateStats,
    key: Vec<u8>,
    passthrough: Vec<u8>,
    /// Records mode: raw lines waiting to be shipped, per owner.
    outgoing: Vec<Vec<u8>>,
    /// Per-origin key limits.
    origins: Option<Origins>,
    /// The owned keys as Prometheus series.
    exporter: Option<Exporter>,
    settings: Settings,
}

impl Aggregator {
    /// Instance `me` of `shards`.
    pub fn new(me: usize, shards: usize, settings: Settings) -> Aggregator {
        let shards = shards.max(1);
        let mut owned = Table::new(settings.max_keys, settings.max_idle_flushes);
        let mut partial = Table::new(settings.max_keys, 0);
        owned.set_exact(settings.exact_samples, EXACT_BUDGET);
        partial.set_exact(settings.exact_samples, EXACT_BUDGET);
        Aggregator {
            me,
            shards,
            owned,
            partial,
            stats: AggregateStats::default(),
            key: Vec::with_capacity(256),
            passthrough: Vec::new(),
            outgoing: (0..shards).map(|_| Vec::new()).collect(),
            origins: settings.origins.clone().map(Origins::new),
            exporter: settings.prometheus.clone().map(|m| Exporter::new(m, settings.max_keys)),
            settings,
        }
    }

    /// Parses `data` (whole lines) into this instance's tables, or, in
    /// records mode, the batches for the keys' owners.
    pub fn ingest(&mut self, data: &[u8]) {
        self.ingest_from(data, None);
    }

    /// [`Aggregator::ingest`] of lines `source` sent (for per-origin
    /// limits by source address).
    pub fn ingest_from(&mut self, data: &[u8], source: Option<IpAddr>) {
        let records = self.settings.records;
        let Aggregator {
            me,
            shards,
            owned,
            partial,
            stats,
            key,
            passthrough,
            outgoing,
            origins,
            settings,
            ..
        } = self;
        let mut ip = [0u8; 16];
        let source: Option<&[u8]> = source.map(|a| match a {
            IpAddr::V4(v4) => {
                ip[..4].copy_from_slice(&v4.octets());
                &ip[..4]
            }
            IpAddr::V6(v6) => {
                ip = v6.octets();
                &ip[..]
            }
        });
        for raw in raw_lines(data) {
            stats.lines += 1;
            match parse_line(raw, settings.max_line) {
                Err(reason) => stats.dropped[reason.index()] += 1,
                Ok(Line::Event(raw)) | Ok(Line::ServiceCheck(raw)) => {
                    if raw.starts_with(b"_e") {
                        stats.events += 1;
                    } else {
                        stats.service_checks += 1;
                    }
                    if !settings.relays.is_empty() && passthrough.len() + raw.len() < PASSTHROUGH_LIMIT {
                        passthrough.extend_from_slice(raw);
                        passthrough.push(b'\n');
                    } else if !settings.relays.is_empty() {
                        stats.relay_errors += 1;
                    }
                }
                Ok(Line::Metric(m)) => {
                    if settings.rules.drops(m.name) {
                        stats.rule_drops += 1;
                        continue;
                    }
                    keyed(&settings.rules, &m, key);
                    let hash = hash64(key);
                    if let Some(o) = origins.as_mut() {
                        let origin = match &o.policy().by {
                            OriginBy::Source => source,
                            OriginBy::Tag(name) => tag_value(&m, name),
                        };
                        if origin.is_some_and(|id| o.admit(id, hash) != OriginVerdict::Admit) {
                            stats.origin_refused += 1;
                            continue;
                        }
                    }
                    let owner = (hash % *shards as u64) as usize;
                    if records && owner != *me {
                        // The owner parses it again and counts it as a metric.
                        outgoing[owner].extend_from_slice(raw);
                        outgoing[owner].push(b'\n');
                        continue;
                    }
                    let table = if owner == *me { &mut *owned } else { &mut *partial };
                    match table.apply_hashed(key, hash, &m) {
                        Ok(()) => stats.metrics += 1,
                        Err(_) => stats.keys_refused += 1,
                    }
                }
            }
        }
    }

    /// Lines another instance received for keys this one owns (records
    /// mode; already counted as lines there, so each is a metric here).
    pub fn ingest_shipped(&mut self, data: &[u8]) {
        let Aggregator { owned, stats, key, settings, .. } = self;
        for raw in raw_lines(data) {
            if let Ok(Line::Metric(m)) = parse_line(raw, settings.max_line) {
                keyed(&settings.rules, &m, key);
                match owned.apply_hashed(key, hash64(key), &m) {
                    Ok(()) => stats.metrics += 1,
                    Err(_) => stats.keys_refused += 1,
                }
            }
        }
    }

    /// Records mode: the waiting batches of at least `min` bytes, by owner.
    pub fn take_records(&mut self, min: usize) -> Vec<(usize, Vec<u8>)> {
        let mut out = Vec::new();
        for (owner, b) in self.outgoing.iter_mut().enumerate() {
            if !b.is_empty() && b.len() >= min {
                out.push((owner, std::mem::take(b)));
            }
        }
        out
    }

    /// The partial aggregates gathered since the last flush, one batch per
    /// owner (index = owner; this instance's own is always empty).
    pub fn drain_partials(&mut self) -> Vec<Partials> {
        let mut batches: Vec<Partials> = (0..self.shards).map(|_| Vec::new()).collect();
        for (k, a) in self.partial.drain() {
            batches[(hash64(&k) % self.shards as u64) as usize].push((k, a));
        }
        self.partial.release_memory();
        batches
    }

    /// Merges a batch of partials for keys this instance owns.
    pub fn merge(&mut self, batch: Partials) {
        for (k, a) in batch {
            if self.owned.merge(k, a).is_err() {
                self.stats.keys_refused += 1;
            }
        }
    }

    /// Formats and resets the owned keys in `parts` (table parts, see
    /// `table::PARTS`) at timestamp `ts`. The first slice of an interval
    /// (`first`) also carries the passed-through events and counts the
    /// flush.
    pub fn flush_slice(&mut self, parts: Range<u8>, ts: u64, first: bool) -> Slice {
        let Aggregator { owned, stats, passthrough, settings, origins, exporter, .. } = self;
        let mut out = Slice { relays: vec![Vec::new(); settings.relays.len()], ..Slice::default() };
        if let (true, Some(e)) = (first, exporter.as_mut()) {
            e.begin_flush(ts, stats);
        }
        let expired = owned.flush_keys(parts, |key, k, v, fresh| {
            if settings.graphite {
                out.lines += graphite::write_key(&mut out.graphite, &settings.format, k, v, ts) as u64;
            }
            if let Some(i) = relay::pick(k, &settings.relays) {
                relay::write_key(&mut out.relays[i], k, v);
            }
            if let Some(e) = exporter.as_mut() {
                e.observe(key, k, v, fresh, stats);
            }
        });
        if first {
            if let Some(r) = out.relays.first_mut() {
                r.append(passthrough);
            }
            stats.flushes += 1;
            if let Some(o) = origins.as_mut() {
                o.new_interval();
            }
        }
        stats.keys_expired += expired as u64;
        out
    }

    /// The `n` origins with the most lines refused by the per-origin
    /// limits, raw (see [`super::origins::label`]), most first.
    pub fn origin_offenders(&self, n: usize) -> Vec<(Vec<u8>, u64)> {
        self.origins.as_ref().map(|o| o.offenders(n)).unwrap_or_default()
    }

    /// A copy of this instance's Prometheus series (`None` when it keeps
    /// none), for a scrape.
    pub fn prometheus(&self) -> Option<Snapshot> {
        self.exporter.as_ref().map(Exporter::snapshot)
    }

    /// Keys owned now.
    pub fn keys(&self) -> usize {
        self.owned.len()
    }

    /// The counters (lines, metrics, drops...; the shell adds its own).
    pub fn stats(&self) -> &AggregateStats {
        &self.stats
    }

    /// The counters, for the shell's own (datagrams, connections...).
    pub fn stats_mut(&mut self) -> &mut AggregateStats {
        &mut self.stats
    }

    /// Applies new settings from the next interval on (a reload); the
    /// exchange (records or partials) and the line length stay.
    pub fn reconfigure(&mut self, settings: Settings) {
        self.owned.set_limits(settings.max_keys, settings.max_idle_flushes);
        self.partial.set_limits(settings.max_keys, 0);
        self.owned.set_exact(settings.exact_samples, EXACT_BUDGET);
        self.partial.set_exact(settings.exact_samples, EXACT_BUDGET);
        match (self.origins.as_mut(), settings.origins.clone()) {
            (Some(o), Some(policy)) => o.set_policy(policy),
            (_, policy) => self.origins = policy.map(Origins::new),
        }
        match (self.exporter.as_mut(), settings.prometheus.clone()) {
            (Some(e), Some(mapper)) => e.reconfigure(mapper, settings.max_keys),
            (_, mapper) => self.exporter = mapper.map(|m| Exporter::new(m, settings.max_keys)),
        }
        self.settings =
            Settings { records: self.settings.records, max_line: self.settings.max_line, ..settings };
    }
}

/// The value of `m`'s tag `name` (`name:value`; empty for a bare `name`).
fn tag_value<'a>(m: &crate::statsd::parse::Metric<'a>, name: &[u8]) -> Option<&'a [u8]> {
    m.tag_iter().find_map(|t| match t.strip_prefix(name)? {
        [] => Some(&[][..]),
        [b':', value @ ..] => Some(value),
        _ => None,
    })
}

/// `m`'s key, without the tags `rules` strip.
fn keyed(rules: &Rules, m: &crate::statsd::parse::Metric<'_>, key: &mut Vec<u8>) {
    if rules.strips() {
        canonical_key_keeping(m, key, |t| rules.keeps_tag(t));
    } else {
        canonical_key(m, key);
    }
}

/// The non-empty lines of `data`, without `\n` or a trailing `\r` (as
/// `parse::Lines` splits them), raw.
fn raw_lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)).filter(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statsd::table::PARTS;
    use std::collections::HashMap;

    fn settings(records: bool) -> Settings {
        Settings {
            max_keys: 10_000,
            max_idle_flushes: 10,
            max_line: 4096,
            records,
            exact_samples: 0,
            rules: Rules::default(),
            origins: None,
            graphite: true,
            prometheus: None,
            relays: Vec::new(),
            format: Format {
                prefix: "stats".into(),
                percentiles: graphite::parse_percentiles("90").unwrap(),
                interval_secs: 10.0,
            },
        }
    }

    /// N instances in one process, the exchange done by hand, as the
    /// service does it over the mesh: every line goes to a pseudo-random
    /// instance (as SO_REUSEPORT spreads senders), partials or records move
    /// to their owners, every owner flushes. What comes out is exactly what
    /// went in, whatever the instance count and exchange.
    fn run(n: usize, records: bool, lines: &[String]) -> HashMap<String, f64> {
        run_with(n, &settings(records), lines)
    }

    fn run_with(n: usize, settings: &Settings, lines: &[String]) -> HashMap<String, f64> {
        let mut shards: Vec<Aggregator> = (0..n).map(|me| Aggregator::new(me, n, settings.clone())).collect();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for line in lines {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            shards[(seed % n as u64) as usize].ingest(line.as_bytes());
        }
        for from in 0..n {
            for (owner, batch) in shards[from].take_records(0) {
                shards[owner].ingest_shipped(&batch);
            }
            for (owner, batch) in shards[from].drain_partials().into_iter().enumerate() {
                assert!(owner != from || batch.is_empty(), "no partials for oneself");
                shards[owner].merge(batch);
            }
        }
        let mut seen = HashMap::new();
        for shard in &mut shards {
            let out = shard.flush_slice(0..PARTS, 1_700_000_000, true);
            for l in String::from_utf8(out.graphite).unwrap().lines() {
                let mut f = l.split(' ');
                let (path, value) =
                    (f.next().unwrap().to_string(), f.next().unwrap().parse::<f64>().unwrap());
                assert!(seen.insert(path.clone(), value).is_none(), "{path} flushed by two owners");
            }
        }
        let total: u64 = shards.iter().map(|s| s.stats().lines).sum();
        assert_eq!(total, lines.len() as u64, "every line counted once");
        seen
    }

    fn workload() -> Vec<String> {
        let mut lines = Vec::new();
        for i in 0..600 {
            lines.push(format!("hits.k{}:1|c", i % 37));
            lines.push(format!("lat.t{}:{}|ms", i % 5, i % 100));
        }
        // A gauge's last value depends on arrival order across instances
        // (as it does across shards): one per key keeps the result exact.
        for k in 0..3 {
            lines.push(format!("g.k{k}:{}|g", k * 10));
        }
        lines.push("bad line".into());
        lines
    }

    /// Each source gets its own budget of new keys per interval; what is
    /// refused is counted and its source named among the offenders; a new
    /// interval restores the budget.
    #[test]
    fn per_origin_key_limits() {
        let mut s = settings(false);
        s.origins = Some(OriginPolicy { by: OriginBy::Source, keys: 3, max_origins: 100 });
        let mut a = Aggregator::new(0, 1, s);
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let lines: String = (0..10).map(|i| format!("k{i}:1|c\n")).collect();
        a.ingest_from(lines.as_bytes(), Some(x));
        a.ingest_from(b"k0:1|c\nk1:1|c\n", Some(y));
        a.ingest_from(lines.as_bytes(), None);
        assert_eq!(a.stats().origin_refused, 7, "x: 3 of 10 keys; y within; no source: not limited");
        assert_eq!(a.origin_offenders(5), vec![(vec![10, 0, 0, 1], 7)]);
        assert_eq!(crate::statsd::origins::label(&OriginBy::Source, &[10, 0, 0, 1]), "10.0.0.1");
        a.flush_slice(0..crate::statsd::table::PARTS, 1, true);
        a.ingest_from(b"k9:1|c\n", Some(x));
        assert_eq!(a.stats().origin_refused, 7, "a new interval, a new budget");
        // In records mode the limits apply where the lines are received,
        // before they are shipped to their owners.
        let mut r = settings(true);
        r.origins = Some(OriginPolicy { by: OriginBy::Source, keys: 3, max_origins: 100 });
        let mut shipping = Aggregator::new(0, 4, r);
        shipping.ingest_from(lines.as_bytes(), Some(x));
        assert_eq!(shipping.stats().origin_refused, 7);
        let shipped: usize = shipping
            .take_records(0)
            .iter()
            .map(|(_, b)| b.split(|&c| c == b'\n').filter(|l| !l.is_empty()).count())
            .sum();
        let kept_here = shipping.keys();
        assert_eq!(shipped + kept_here, 3, "only the admitted lines go on");
        let mut t = settings(false);
        t.origins = Some(OriginPolicy { by: OriginBy::Tag(b"service".to_vec()), keys: 1, max_origins: 100 });
        let mut b = Aggregator::new(0, 1, t);
        b.ingest(b"a:1|c|#service:web\nb:1|c|#service:web\nc:1|c|#service:db\nd:1|c\n");
        assert_eq!(b.stats().origin_refused, 1);
        assert_eq!(b.origin_offenders(1), vec![(b"web".to_vec(), 1)]);
    }

    /// Drop rules and stripped tags act the same whatever the instance
    /// count and exchange (records are keyed again by their owner).
    #[test]
    fn rules_drop_by_name_and_strip_tags_before_aggregation() {
        let lines: Vec<String> = (0..90)
            .flat_map(|i| {
                [
                    format!("api.hits:1|c|#request_id:{i},env:prod"),
                    "debug.noise:1|c|#env:prod".to_string(),
                    "debug.deep.kept:1|c".to_string(),
                ]
            })
            .collect();
        for records in [false, true] {
            let mut s = settings(records);
            s.rules = Rules::new(&["debug.*".into()], &["request_id".into()]).expect("rules");
            for n in [1, 3] {
                let got = run_with(n, &s, &lines);
                assert_eq!(got.get("stats.counters.api.hits.count;env=prod"), Some(&90.0), "{records} {n}");
                assert!(!got.keys().any(|k| k.contains("request_id")), "{got:?}");
                assert!(!got.keys().any(|k| k.contains("debug.noise")));
                assert_eq!(got.get("stats.counters.debug.deep.kept.count"), Some(&90.0), "one part only");
            }
        }
    }

    #[test]
    fn any_instance_count_and_exchange_gives_the_single_instance_result() {
        let lines = workload();
        let one = run(1, false, &lines);
        assert_eq!(one["stats.counters.hits.k0.count"], 17.0);
        // Sums of floats may round differently when merged in another
        // order: equal to 1e-12, relative.
        let same = |a: &HashMap<String, f64>, what: &str| {
            assert_eq!(a.len(), one.len(), "{what}: the same paths");
            for (path, v) in &one {
                let w = a[path];
                assert!((v - w).abs() <= 1e-12 * v.abs().max(1.0), "{what}: {path} {v} != {w}");
            }
        };
        for n in [2, 3, 4, 7] {
            same(&run(n, false, &lines), &format!("{n} instances, partials"));
            same(&run(n, true, &lines), &format!("{n} instances, records"));
        }
    }
}
