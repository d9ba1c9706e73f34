//! A shard's aggregation table: sans-IO, fed with parsed lines and flushed
//! by the caller once per interval.
//!
//! A key is the metric's type, name and sorted tags, stored once as one
//! boxed byte string ([`canonical_key`]: a type byte, the name, then `|tag`
//! per tag in byte order; `|` can occur in neither a name nor a tag, so the
//! encoding is unambiguous). Per key the table keeps an [`Agg`]:
//!
//! - counters: the sum of `value / rate` over the interval;
//! - gauges: the last value; a `+N`/`-N` delta adjusts it, in arrival order.
//!   Gauges persist across intervals (they keep reporting their last value);
//! - timers, histograms, distributions: a [`Sketch`] (a sample sent at
//!   `@rate` weighs `1/rate`);
//! - sets: a [`UniqueSet`].
//!
//! The same table serves as a *partial* (what a shard received this
//! interval for keys another shard owns, shipped whole at flush time,
//! see [`Table::drain`]) and as an *owner's* table (partials merged in with
//! [`Table::merge`], reported and reset by [`Table::flush`]).
//!
//! Limits: at most `max_keys` keys; a new key beyond that is refused and
//! counted while existing keys keep working. A key not updated for more
//! than `max_idle` flushes is deleted; until then counters, timers and sets
//! report zero and gauges their last value (as etsy statsd does).
//!
//! Memory per counter key: a hash-table slot of 40 bytes (16 for the boxed
//! key, 24 for the entry) plus one control byte, at a load factor between
//! 7/16 and 7/8, plus the key's own heap block (its length rounded up by
//! the allocator, ~32-48 bytes for typical names): ~100-150 bytes.
//! `examples/aggregate_memory.rs` measures it.

use hashbrown::HashTable;

use super::parse::{Metric, MetricType, Value};
use super::set::UniqueSet;
use super::sketch::Sketch;
use crate::hash::hash64;

/// One key's aggregate for the current interval (and a gauge's value).
#[derive(Debug, Clone, PartialEq)]
pub enum Agg {
    /// Sum of `value / rate`.
    Counter(f64),
    /// The gauge's value; `absolute` says whether an absolute value was
    /// seen (if not, in a partial, `value` is a sum of deltas to apply).
    Gauge {
        /// Current value (or accumulated delta).
        value: f64,
        /// An absolute value was set.
        absolute: bool,
    },
    /// Timer / histogram / distribution samples.
    Sampled(Box<Sketch>),
    /// Set members.
    Set(Box<UniqueSet>),
}

impl Agg {
    /// A new aggregate of `kind`; timers keep up to `exact` samples as
    /// they came.
    fn new(kind: MetricType, exact: u32) -> Agg {
        match kind {
            MetricType::Counter => Agg::Counter(0.0),
            MetricType::Gauge => Agg::Gauge { value: 0.0, absolute: false },
            MetricType::Set => Agg::Set(Box::default()),
            _ => Agg::Sampled(Box::new(Sketch::with_exact(exact))),
        }
    }

    /// Samples held as they came.
    fn exact_len(&self) -> usize {
        match self {
            Agg::Sampled(s) => s.exact_len(),
            _ => 0,
        }
    }

    fn apply(&mut self, v: Value<'_>, rate: f64) {
        match (self, v) {
            (Agg::Counter(sum), Value::Number(x)) => *sum += x / rate,
            (Agg::Gauge { value, absolute }, Value::Number(x)) => {
                *value = x;
                *absolute = true;
            }
            (Agg::Gauge { value, .. }, Value::Delta(d)) => *value += d,
            (Agg::Sampled(s), Value::Number(x)) => s.add(x, 1.0 / rate),
            (Agg::Set(s), Value::Member(m)) => s.insert(m),
            // The parser pairs each value kind with its metric type.
            _ => {}
        }
    }

    /// Folds a later partial into this aggregate.
    fn merge(&mut self, later: &Agg) {
        match (self, later) {
            (Agg::Counter(a), Agg::Counter(b)) => *a += b,
            (Agg::Gauge { value, absolute }, Agg::Gauge { value: v, absolute: abs }) => {
                if *abs {
                    *value = *v;
                    *absolute = true;
                } else {
                    *value += v;
                }
            }
            (Agg::Sampled(a), Agg::Sampled(b)) => a.merge(b),
            (Agg::Set(a), Agg::Set(b)) => a.merge(b),
            // Keys include the type, so both sides always match.
            _ => {}
        }
    }

    /// Starts a new interval: counters, samples and sets restart; a gauge
    /// keeps its value.
    fn reset(&mut self) {
        match self {
            Agg::Counter(sum) => *sum = 0.0,
            Agg::Gauge { .. } => {}
            Agg::Sampled(s) => {
                if s.count() > 0.0 {
                    **s = s.emptied();
                }
            }
            Agg::Set(s) => {
                if s.count() > 0 {
                    **s = UniqueSet::new();
                }
            }
        }
    }

    /// The aggregate as a flush reports it.
    pub fn as_flushed(&self) -> Flushed<'_> {
        match self {
            Agg::Counter(sum) => Flushed::Counter(*sum),
            Agg::Gauge { value, .. } => Flushed::Gauge(*value),
            Agg::Sampled(s) => Flushed::Sampled(s),
            Agg::Set(s) => Flushed::Set(s),
        }
    }

    /// Heap bytes held besides the table slot.
    pub fn heap_bytes(&self) -> usize {
        match self {
            Agg::Counter(_) | Agg::Gauge { .. } => 0,
            Agg::Sampled(s) => std::mem::size_of::<Sketch>() + s.heap_bytes(),
            Agg::Set(s) => std::mem::size_of::<UniqueSet>() + s.heap_bytes(),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    agg: Agg,
    /// Flushes since the last update (0: updated this interval).
    idle: u32,
    /// The key's slice for sliced flushes (fits the entry's padding).
    part: u8,
}

/// Keys are spread over this many parts by the top bits of their hash, so
/// a large table can be flushed in slices ([`Table::flush_parts`]) with the
/// output of each slice written before the next is formatted.
pub const PARTS: u8 = 64;

fn part_of(hash: u64) -> u8 {
    (hash >> 58) as u8
}

/// A key as the table stores it, taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyView<'a> {
    /// The metric type.
    pub kind: MetricType,
    /// The name.
    pub name: &'a [u8],
    /// The sorted tags, `|`-separated (empty when none).
    pub tags: &'a [u8],
}

impl<'a> KeyView<'a> {
    /// Takes a [`canonical_key`] apart; `None` if it is not one.
    pub fn parse(key: &'a [u8]) -> Option<KeyView<'a>> {
        let (&t, rest) = key.split_first()?;
        let kind = *MetricType::ALL.get(usize::from(t.checked_sub(b'0')?))?;
        let (name, tags) = match rest.iter().position(|&b| b == b'|') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        Some(KeyView { kind, name, tags })
    }

    /// The tags one by one, sorted.
    pub fn tag_iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.tags.split(|&b| b == b'|').filter(|t| !t.is_empty())
    }
}

/// Writes `m`'s key into `out` (cleared first): a type byte (`'0'` + the
/// index in [`MetricType::ALL`]), the name, then `|tag` for each tag in
/// byte order (duplicates kept). No allocation beyond `out`'s growth.
pub fn canonical_key(m: &Metric<'_>, out: &mut Vec<u8>) {
    canonical_key_keeping(m, out, |_| true);
}

/// [`canonical_key`] with only the tags `keep` accepts (tags stripped by
/// [`super::rules::Rules`]).
pub fn canonical_key_keeping(m: &Metric<'_>, out: &mut Vec<u8>, keep: impl Fn(&[u8]) -> bool) {
    out.clear();
    // `MetricType` is declared in the order of `MetricType::ALL`.
    out.push(b'0' + m.kind as u8);
    out.extend_from_slice(m.name);
    if m.tags.is_empty() {
        return;
    }
    // Tags are few: sort references to them on the stack.
    let mut few: [&[u8]; 16] = [&[]; 16];
    let mut n = 0;
    for tag in m.tag_iter().filter(|t| keep(t)) {
        if n == few.len() {
            let mut many: Vec<&[u8]> = m.tag_iter().filter(|t| keep(t)).collect();
            many.sort_unstable();
            return push_tags(out, &many);
        }
        few[n] = tag;
        n += 1;
    }
    few[..n].sort_unstable();
    push_tags(out, &few[..n]);
}

fn push_tags(out: &mut Vec<u8>, tags: &[&[u8]]) {
    for tag in tags {
        out.push(b'|');
        out.extend_from_slice(tag);
    }
}

/// Why a table refused something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A new key beyond `max_keys`.
    TableFull,
}

/// A flushed value, borrowed from the table for the duration of a flush.
#[derive(Debug, Clone, Copy)]
pub enum Flushed<'a> {
    /// A counter's sum over the interval.
    Counter(f64),
    /// A gauge's value.
    Gauge(f64),
    /// The interval's samples.
    Sampled(&'a Sketch),
    /// The interval's distinct members.
    Set(&'a UniqueSet),
}

/// A shard's table of keys.
#[derive(Debug)]
pub struct Table {
    /// Keys and their entries, placed by [`hash64`] of the key (the hash
    /// the caller already computed for ownership, so a line hashes once).
    map: HashTable<(Box<[u8]>, Entry)>,
    max_keys: usize,
    max_idle: u32,
    /// Samples a timer key keeps as they came, per interval.
    exact: u32,
    /// Samples the whole table keeps as they came at most, and how many it
    /// holds: past the budget, keys that get samples give theirs up.
    exact_budget: usize,
    exact_held: usize,
}

/// Samples a table keeps as they came, across its keys, by default: 16
/// bytes each, so 16 MiB per shard at most.
pub const EXACT_BUDGET: usize = 1 << 20;

impl Table {
    /// A table of at most `max_keys` keys whose keys are deleted after more
    /// than `max_idle` flushes without an update.
    pub fn new(max_keys: usize, max_idle: u32) -> Table {
        Table {
            map: HashTable::new(),
            max_keys,
            max_idle,
            exact: 0,
            exact_budget: EXACT_BUDGET,
            exact_held: 0,
        }
    }

    /// Timer keys keep up to `per_key` samples as they came each interval
    /// (their figures then are etsy's exactly), within `budget` samples for
    /// the whole table. 0: sketches only. New keys and new intervals
    /// follow it.
    pub fn set_exact(&mut self, per_key: u32, budget: usize) {
        self.exact = per_key;
        self.exact_budget = budget;
    }

    /// New limits (a reload): a table above `max_keys` keeps its keys and
    /// refuses new ones until it is below.
    pub fn set_limits(&mut self, max_keys: usize, max_idle: u32) {
        self.max_keys = max_keys;
        self.max_idle = max_idle;
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table holds no key.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Adds the samples of `m`, whose [`canonical_key`] is `key`.
    pub fn apply(&mut self, key: &[u8], m: &Metric<'_>) -> Result<(), Refused> {
        self.apply_hashed(key, hash64(key), m)
    }

    /// [`Table::apply`] when the caller already has `hash64(key)`.
    pub fn apply_hashed(&mut self, key: &[u8], hash: u64, m: &Metric<'_>) -> Result<(), Refused> {
        let (exact, spent) = (self.exact, self.exact_held >= self.exact_budget);
        let entry = match self.map.find_mut(slot_hash(hash), |(k, _)| **k == *key) {
            Some((_, e)) => e,
            None => self.insert(key.into(), hash, Agg::new(m.kind, exact))?,
        };
        entry.idle = 0;
        let Agg::Sampled(sketch) = &mut entry.agg else {
            // Counters, gauges and sets keep no samples: nothing to count.
            for v in m.values() {
                entry.agg.apply(v, m.rate);
            }
            return Ok(());
        };
        let before = sketch.exact_len();
        if spent {
            sketch.give_up_exact();
        }
        for v in m.values() {
            if let Value::Number(x) = v {
                sketch.add(x, 1.0 / m.rate);
            }
        }
        let after = sketch.exact_len();
        self.exact_held = (self.exact_held + after).saturating_sub(before);
        Ok(())
    }

    /// Adds a key known to be absent.
    fn insert(&mut self, key: Box<[u8]>, hash: u64, agg: Agg) -> Result<&mut Entry, Refused> {
        if self.map.len() >= self.max_keys {
            return Err(Refused::TableFull);
        }
        let entry = Entry { agg, idle: 0, part: part_of(hash) };
        Ok(&mut self.map.insert_unique(slot_hash(hash), (key, entry), rehash).into_mut().1)
    }

    /// Folds a partial aggregate (from [`Table::drain`] on another shard)
    /// into the key's aggregate.
    pub fn merge(&mut self, key: Box<[u8]>, partial: Agg) -> Result<(), Refused> {
        let hash = hash64(&key);
        let (exact, spent) = (self.exact, self.exact_held >= self.exact_budget);
        let give_up = |agg: &mut Agg| {
            if let (true, Agg::Sampled(s)) = (spent, agg) {
                s.give_up_exact();
            }
        };
        let (before, after) = match self.map.find_mut(slot_hash(hash), |(k, _)| *k == key) {
            Some((_, e)) => {
                let before = e.agg.exact_len();
                give_up(&mut e.agg);
                e.agg.merge(&partial);
                e.idle = 0;
                (before, e.agg.exact_len())
            }
            None => {
                // A gauge first seen as deltas starts from zero, which is
                // what merging the deltas into a fresh gauge gives.
                let mut fresh = Agg::new(kind_of(&key), exact);
                give_up(&mut fresh);
                fresh.merge(&partial);
                let after = fresh.exact_len();
                self.insert(key, hash, fresh)?;
                (0, after)
            }
        };
        self.exact_held = (self.exact_held + after).saturating_sub(before);
        Ok(())
    }

    /// Takes every key and aggregate out, leaving the table empty (a
    /// shard's partials for keys other shards own).
    pub fn drain(&mut self) -> impl Iterator<Item = (Box<[u8]>, Agg)> + '_ {
        self.exact_held = 0;
        self.map.drain().map(|(k, e)| (k, e.agg))
    }

    /// Gives back the memory of an emptied table (after [`Table::drain`]),
    /// so a burst of keys does not pin its peak size.
    pub fn release_memory(&mut self) {
        self.map.shrink_to_fit(rehash);
    }

    /// Reports every live key to `emit`, then starts a new interval:
    /// deletes keys idle for more than `max_idle` flushes, resets the
    /// rest. Returns the number of keys deleted.
    pub fn flush(&mut self, emit: impl FnMut(KeyView<'_>, Flushed<'_>)) -> usize {
        self.flush_parts(0..PARTS, emit)
    }

    /// [`Table::flush`] for the keys whose part is in `parts` only. Keys
    /// added between two slices are flushed this interval if their part
    /// is still to come, else next interval: never twice, never lost.
    pub fn flush_parts(
        &mut self,
        parts: std::ops::Range<u8>,
        mut emit: impl FnMut(KeyView<'_>, Flushed<'_>),
    ) -> usize {
        self.flush_keys(parts, |_, view, value, _| emit(view, value))
    }

    /// [`Table::flush_parts`], giving each key also as stored and whether
    /// it was updated this interval (an idle key repeats its gauge, and
    /// flushes a zero count).
    pub fn flush_keys(
        &mut self,
        parts: std::ops::Range<u8>,
        mut emit: impl FnMut(&[u8], KeyView<'_>, Flushed<'_>, bool),
    ) -> usize {
        let before = self.map.len();
        let max_idle = self.max_idle;
        let mut released = 0;
        self.map.retain(|(key, e)| {
            if !parts.contains(&e.part) {
                return true;
            }
            released += e.agg.exact_len();
            if e.idle > max_idle {
                return false;
            }
            if let Some(view) = KeyView::parse(key) {
                emit(key, view, e.agg.as_flushed(), e.idle == 0);
            }
            e.agg.reset();
            e.idle = e.idle.saturating_add(1);
            true
        });
        self.exact_held = self.exact_held.saturating_sub(released);
        before - self.map.len()
    }

    /// Approximate bytes held: table slots at capacity, key blocks and
    /// aggregate heaps (allocator overhead not included).
    pub fn approx_bytes(&self) -> usize {
        let slot = std::mem::size_of::<(Box<[u8]>, Entry)>() + 1;
        let heap: usize = self.map.iter().map(|(k, e)| k.len() + e.agg.heap_bytes()).sum();
        self.map.capacity() * slot + heap
    }
}

/// The table's hash of a key whose [`hash64`] is `hash`. Every key in an
/// owner's table has the same `hash % shards`, so with 2^k shards the low k
/// bits (where the table starts probing) would be constant; the rotation
/// puts independent bits there.
fn slot_hash(hash: u64) -> u64 {
    hash.rotate_left(32)
}

/// Where a slot goes when the table grows or shrinks.
fn rehash(slot: &(Box<[u8]>, Entry)) -> u64 {
    slot_hash(hash64(&slot.0))
}

fn kind_of(key: &[u8]) -> MetricType {
    KeyView::parse(key).map_or(MetricType::Counter, |v| v.kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statsd::parse::{parse_line, Line};

    fn feed(t: &mut Table, lines: &str) {
        let mut key = Vec::new();
        for l in lines.lines() {
            let Ok(Line::Metric(m)) = parse_line(l.as_bytes(), 1024) else { panic!("{l}") };
            canonical_key(&m, &mut key);
            t.apply(&key, &m).unwrap();
        }
    }

    /// Flushes into (name, tags, value) with sketches as (count, sum).
    fn flush(t: &mut Table) -> Vec<(String, String, f64, f64)> {
        let mut out = Vec::new();
        t.flush(|k, v| {
            let name = String::from_utf8_lossy(k.name).into_owned();
            let tags = String::from_utf8_lossy(k.tags).into_owned();
            out.push(match v {
                Flushed::Counter(c) => (name, tags, c, 0.0),
                Flushed::Gauge(g) => (name, tags, g, 0.0),
                Flushed::Sampled(s) => (name, tags, s.count(), s.sum()),
                Flushed::Set(n) => (name, tags, n.count() as f64, 0.0),
            })
        });
        out.sort_by(|a, b| a.partial_cmp(b).unwrap());
        out
    }

    fn row(name: &str, tags: &str, a: f64, b: f64) -> (String, String, f64, f64) {
        (name.into(), tags.into(), a, b)
    }

    /// How many samples of `name`'s timer the table kept as they came
    /// (None: it answers from the sketch).
    fn kept(t: &mut Table, name: &str) -> Option<usize> {
        let mut found = None;
        t.flush(|k, v| {
            if let (true, Flushed::Sampled(s)) = (k.name == name.as_bytes(), v) {
                found = Some(s.exact().map(<[_]>::len));
            }
        });
        found.flatten()
    }

    #[test]
    fn exact_samples_within_the_key_bound_and_the_table_budget() {
        let mut t = Table::new(100, 5);
        t.set_exact(10, 15);
        let lines = |name: &str, n: usize| (1..=n).map(|i| format!("{name}:{i}|ms\n")).collect::<String>();
        feed(&mut t, &lines("a", 10));
        feed(&mut t, &lines("b", 10));
        feed(&mut t, &lines("c", 11));
        // a kept its 10; b reached the budget (15 held) and gave its 5 up;
        // c was over its own bound of 10.
        let mut seen = std::collections::HashMap::new();
        t.flush(|k, v| {
            if let Flushed::Sampled(s) = v {
                seen.insert(String::from_utf8_lossy(k.name).into_owned(), s.exact().map(<[_]>::len));
            }
        });
        assert_eq!(seen["a"], Some(10));
        assert_eq!(seen["b"], None);
        assert_eq!(seen["c"], None);
        // A new interval: the budget is back.
        feed(&mut t, &lines("b", 3));
        assert_eq!(kept(&mut t, "b"), Some(3));
    }

    #[test]
    fn partials_keep_their_samples_when_all_fit() {
        let mut owner = Table::new(100, 5);
        owner.set_exact(10, 100);
        let mut other = Table::new(100, 0);
        other.set_exact(10, 100);
        feed(&mut owner, "t:1|ms\nt:2|ms\nt:3|ms\nt:4|ms\n");
        feed(&mut other, "t:5|ms\nt:6|ms\nt:7|ms\n");
        let partials: Vec<_> = other.drain().collect();
        for (k, v) in partials {
            owner.merge(k, v).unwrap();
        }
        assert_eq!(kept(&mut owner, "t"), Some(7));
        // A partial from a shard keeping none (a sketch only): the sketch answers.
        let mut plain = Table::new(100, 0);
        feed(&mut owner, "t:1|ms\n");
        feed(&mut plain, "t:9|ms\n");
        for (k, v) in plain.drain().collect::<Vec<_>>() {
            owner.merge(k, v).unwrap();
        }
        assert_eq!(kept(&mut owner, "t"), None);
    }

    #[test]
    fn key_is_type_name_and_sorted_tags() {
        let key = |l: &str| {
            let Ok(Line::Metric(m)) = parse_line(l.as_bytes(), 1024) else { panic!() };
            let mut k = Vec::new();
            canonical_key(&m, &mut k);
            k
        };
        assert_eq!(key("a:1|c|#z,b:1,m"), key("a:1|c|#b:1,m,z"));
        assert_eq!(key("a:1|c|#b,a,b"), b"0a|a|b|b");
        assert_ne!(key("a:1|c"), key("a:1|g"));
        assert_ne!(key("a:1|c|#x"), key("a:1|c"));
        let k = key("some.name:1|ms|#y:2,x:1");
        let v = KeyView::parse(&k).unwrap();
        assert_eq!((v.kind, v.name, v.tags), (MetricType::Timer, &b"some.name"[..], &b"x:1|y:2"[..]));
        assert_eq!(v.tag_iter().collect::<Vec<_>>(), [&b"x:1"[..], b"y:2"]);
        // Past the tags sorted on the stack.
        let many: Vec<String> = (0..40).rev().map(|i| format!("t{i:02}")).collect();
        let sorted: Vec<String> = (0..40).map(|i| format!("t{i:02}")).collect();
        assert_eq!(key(&format!("m:1|c|#{}", many.join(","))), format!("0m|{}", sorted.join("|")).as_bytes());
        // The type byte is the index in `MetricType::ALL`.
        for (i, kind) in MetricType::ALL.into_iter().enumerate() {
            assert_eq!(
                KeyView::parse(&key(&format!("n:1|{}", kind.code()))).map(|v| v.kind),
                Some(kind),
                "{i}"
            );
        }
    }

    #[test]
    fn interval_semantics() {
        let mut t = Table::new(100, 10);
        feed(
            &mut t,
            "c:1|c\nc:2|c|@0.5\nc:1|c|#t\n\
             g:10|g\ng:+5|g\ng:-3|g\n\
             d:-2|g\n\
             ms:10:20|ms|@0.5\nms:30|ms\n\
             s:a|s\ns:b|s\ns:a|s",
        );
        assert_eq!(
            flush(&mut t),
            [
                row("c", "", 5.0, 0.0),
                row("c", "t", 1.0, 0.0),
                row("d", "", -2.0, 0.0),
                row("g", "", 12.0, 0.0),
                row("ms", "", 5.0, 90.0),
                row("s", "", 2.0, 0.0),
            ]
        );
        // Next interval: counters, samples and sets restart at zero, gauges
        // keep their value and take deltas from it.
        feed(&mut t, "g:+1|g");
        assert_eq!(
            flush(&mut t),
            [
                row("c", "", 0.0, 0.0),
                row("c", "t", 0.0, 0.0),
                row("d", "", -2.0, 0.0),
                row("g", "", 13.0, 0.0),
                row("ms", "", 0.0, 0.0),
                row("s", "", 0.0, 0.0),
            ]
        );
    }

    #[test]
    fn partials_merge_in_order() {
        // Shard A saw part of the interval, shard B the rest; the owner
        // merges A's partial, then B's.
        let (mut a, mut b, mut owner) = (Table::new(100, 1), Table::new(100, 1), Table::new(100, 1));
        feed(&mut owner, "g:100|g\nc:1|c");
        feed(&mut a, "c:2|c\ng:+1|g\nms:1|ms\ns:x|s");
        feed(&mut b, "c:3|c|@0.5\ng:50|g\ng:-5|g\nms:3|ms\ns:y|s\ns:x|s");
        for (k, v) in a.drain().chain(b.drain()).collect::<Vec<_>>() {
            owner.merge(k, v).unwrap();
        }
        assert!(a.is_empty() && b.is_empty());
        assert_eq!(
            flush(&mut owner),
            [
                row("c", "", 9.0, 0.0),
                row("g", "", 45.0, 0.0),
                row("ms", "", 2.0, 4.0),
                row("s", "", 2.0, 0.0)
            ]
        );
        // A delta-only partial for a gauge the owner never saw starts at 0.
        let mut p = Table::new(10, 1);
        feed(&mut p, "new:-4|g\nnew:+1|g");
        let mut o = Table::new(10, 1);
        for (k, v) in p.drain().collect::<Vec<_>>() {
            o.merge(k, v).unwrap();
        }
        assert_eq!(flush(&mut o), [row("new", "", -3.0, 0.0)]);
    }

    #[test]
    fn max_keys_refuses_only_new_keys() {
        let mut t = Table::new(2, 10);
        feed(&mut t, "a:1|c\nb:1|c");
        let Ok(Line::Metric(m)) = parse_line(b"c:1|c", 64) else { panic!() };
        let mut k = Vec::new();
        canonical_key(&m, &mut k);
        assert_eq!(t.apply(&k, &m), Err(Refused::TableFull));
        assert_eq!(t.merge(k.clone().into(), Agg::Counter(1.0)), Err(Refused::TableFull));
        feed(&mut t, "a:5|c");
        assert_eq!(flush(&mut t), [row("a", "", 6.0, 0.0), row("b", "", 1.0, 0.0)]);
    }

    #[test]
    fn sliced_flushes_report_each_key_once() {
        let mut t = Table::new(1000, 10);
        let lines: String = (0..300).map(|i| format!("k{i}:1|c\n")).collect();
        feed(&mut t, &lines);
        let mut seen = Vec::new();
        for p in 0..PARTS / 8 {
            // A key arriving between slices: counted exactly once overall.
            feed(&mut t, &format!("late{p}:1|c"));
            t.flush_parts(p * 8..(p + 1) * 8, |k, v| {
                if let Flushed::Counter(c) = v {
                    seen.push((String::from_utf8_lossy(k.name).into_owned(), c));
                }
            });
        }
        let late_now: f64 = flush(&mut t).iter().filter(|r| r.0.starts_with("late")).map(|r| r.2).sum();
        let late_then: f64 = seen.iter().filter(|r| r.0.starts_with("late")).map(|r| r.1).sum();
        assert_eq!(late_now + late_then, 8.0);
        let mut names: Vec<&String> = seen.iter().filter(|r| r.0.starts_with('k')).map(|r| &r.0).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 300);
        assert!(seen.iter().filter(|r| r.0.starts_with('k')).all(|r| r.1 == 1.0));
    }

    #[test]
    fn idle_keys_are_deleted() {
        let mut t = Table::new(10, 2);
        feed(&mut t, "a:1|c\ng:7|g");
        assert_eq!(flush(&mut t).len(), 2);
        feed(&mut t, "a:1|c");
        assert_eq!(flush(&mut t).len(), 2);
        // g has now been idle for 1, then 2 flushes: still reported.
        assert_eq!(flush(&mut t), [row("a", "", 0.0, 0.0), row("g", "", 7.0, 0.0)]);
        assert_eq!(flush(&mut t), [row("a", "", 0.0, 0.0)]);
        assert_eq!(t.len(), 1);
        assert_eq!(flush(&mut t), []);
        assert!(t.is_empty());
        // max_idle 0: reported only for intervals with updates.
        let mut t = Table::new(10, 0);
        feed(&mut t, "a:1|c");
        assert_eq!(flush(&mut t).len(), 1);
        assert_eq!(flush(&mut t).len(), 0);
    }
}
