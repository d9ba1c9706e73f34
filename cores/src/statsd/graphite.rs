//! Flush output in Graphite plaintext (`path value unix_ts\n`), with etsy
//! statsd's non-legacy names under `--prefix` (default `stats`):
//!
//! ```text
//! stats.counters.<k>.count  stats.counters.<k>.rate          (rate: per second)
//! stats.timers.<k>.{count,count_ps,sum,mean,median,std,upper,lower}
//! stats.timers.<k>.{upper_N,mean_N,sum_N}                     per --percentiles N
//! stats.gauges.<k>
//! stats.sets.<k>.count
//! ```
//!
//! Histograms and distributions flush like timers, under `timers`. A timer
//! without samples this interval reports only `count` and `count_ps` (0),
//! as etsy does. Percentile labels replace `.` by `_` (`99.9` → `upper_99_9`).
//! Names are cleaned as etsy does (whitespace → `_`, `/` → `-`, anything
//! but `[A-Za-z0-9_.-]` removed). DogStatsD tags become Graphite tags,
//! `path;k=v;k2=v2` in tag order; a tag without a value becomes `tag=true`;
//! `;`, `!`, `^`, `=`, `~` and whitespace inside tags become `_`.
//!
//! Accuracy: count, sum, mean, std, upper and lower are exact; `median`
//! and the `_N` figures come from the sketch, within 1 % relative (see
//! [`super::sketch`]).

use std::fmt::Write as _;

use super::parse::MetricType;
use super::table::{Flushed, KeyView};

/// A `--percentiles` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Percentile {
    /// In (0, 100].
    pub value: f64,
    /// The suffix (`90`, `99_9`).
    pub label: String,
}

/// Parses `--percentiles 50,90,95,99.9`.
pub fn parse_percentiles(list: &str) -> Result<Vec<Percentile>, String> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let value: f64 = item.parse().map_err(|_| format!("{item:?} is not a number"))?;
        if !(value > 0.0 && value <= 100.0) {
            return Err(format!("{item:?} is not in (0, 100]"));
        }
        out.push(Percentile { value, label: item.replace('.', "_") });
    }
    Ok(out)
}

/// What a flush needs besides the values.
#[derive(Debug, Clone)]
pub struct Format {
    /// The global prefix (`stats`); empty for none.
    pub prefix: String,
    /// Percentile thresholds for timers.
    pub percentiles: Vec<Percentile>,
    /// Interval length in seconds (for rates).
    pub interval_secs: f64,
}

/// Appends `key`'s lines for one flush at unix time `ts` to `out`;
/// returns the number of lines written.
pub fn write_key(out: &mut Vec<u8>, f: &Format, key: KeyView<'_>, value: Flushed<'_>, ts: u64) -> usize {
    let mut base = String::with_capacity(64);
    if !f.prefix.is_empty() {
        base.push_str(&f.prefix);
        base.push('.');
    }
    base.push_str(match key.kind {
        MetricType::Counter => "counters.",
        MetricType::Gauge => "gauges.",
        MetricType::Set => "sets.",
        _ => "timers.",
    });
    clean_name(key.name, &mut base);
    let mut tags = String::new();
    for tag in key.tag_iter() {
        graphite_tag(tag, &mut tags);
    }
    let mut w = Lines { out, base: &base, tags: &tags, ts, n: 0 };
    match value {
        Flushed::Counter(sum) => {
            w.line(".count", sum);
            w.line(".rate", sum / f.interval_secs);
        }
        Flushed::Gauge(v) => w.line("", v),
        Flushed::Set(n) => w.line(".count", n.count() as f64),
        Flushed::Sampled(s) => write_timer(&mut w, f, s),
    }
    w.n
}

fn write_timer(w: &mut Lines<'_>, f: &Format, s: &super::sketch::Sketch) {
    let count = s.count();
    w.line(".count", count);
    w.line(".count_ps", count / f.interval_secs);
    if let Some(kept) = s.exact() {
        // Every sample of the interval: etsy's figures (see `super::exact`).
        let e = super::exact::Samples::weighted(kept.to_vec());
        let (lower, upper) = e.lower_upper();
        let figures = [e.sum(), e.mean(), e.median(), e.std(), upper, lower];
        return write_figures(w, f, figures, |pct| e.threshold(pct));
    }
    let (Some(mean), Some(std), Some(lo), Some(hi), Some(median)) =
        (s.mean(), s.std(), s.min(), s.max(), s.quantile(0.5))
    else {
        return;
    };
    write_figures(w, f, [s.sum(), mean, median, std, hi, lo], |pct| s.threshold(pct));
}

/// A timer's figures after its count: `[sum, mean, median, std, upper,
/// lower]`, then each percentile's from `threshold`.
fn write_figures(
    w: &mut Lines<'_>,
    f: &Format,
    figures: [f64; 6],
    threshold: impl Fn(f64) -> Option<super::sketch::Threshold>,
) {
    for (suffix, v) in [".sum", ".mean", ".median", ".std", ".upper", ".lower"].into_iter().zip(figures) {
        w.line(suffix, v);
    }
    for p in &f.percentiles {
        if let Some(t) = threshold(p.value) {
            w.line_pct(".upper_", &p.label, t.upper);
            w.line_pct(".mean_", &p.label, t.mean);
            w.line_pct(".sum_", &p.label, t.sum);
        }
    }
}

struct Lines<'a> {
    out: &'a mut Vec<u8>,
    base: &'a str,
    tags: &'a str,
    ts: u64,
    n: usize,
}

impl Lines<'_> {
    fn line(&mut self, suffix: &str, v: f64) {
        self.line_pct(suffix, "", v);
    }

    fn line_pct(&mut self, suffix: &str, label: &str, v: f64) {
        // Graphite cannot store inf/NaN (a sum can overflow with absurd
        // sample rates such as @1e-300): leave the line out.
        if !v.is_finite() {
            return;
        }
        let mut s = String::with_capacity(self.base.len() + self.tags.len() + 40);
        // Writing to a String cannot fail.
        let _ = writeln!(s, "{}{suffix}{label}{} {} {}", self.base, self.tags, Num(v), self.ts);
        self.out.extend_from_slice(s.as_bytes());
        self.n += 1;
    }
}

/// A number as Graphite reads it: integers without a fraction, others in
/// Rust's shortest round-trip form (never an exponent).
struct Num(f64);

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = if self.0 == 0.0 { 0.0 } else { self.0 };
        write!(f, "{v}")
    }
}

/// etsy statsd's key cleaning.
fn clean_name(name: &[u8], out: &mut String) {
    let mut in_space = false;
    for &b in name {
        if b.is_ascii_whitespace() {
            if !in_space {
                out.push('_');
            }
            in_space = true;
            continue;
        }
        in_space = false;
        match b {
            b'/' => out.push('-'),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => out.push(char::from(b)),
            _ => {}
        }
    }
}

/// `;k=v` for the DogStatsD tag `k:v` (`;k=true` for a bare `k`).
fn graphite_tag(tag: &[u8], out: &mut String) {
    let (k, v) = match tag.iter().position(|&b| b == b':') {
        Some(i) => (&tag[..i], &tag[i + 1..]),
        None => (tag, &b"true"[..]),
    };
    out.push(';');
    clean_tag(k, out);
    out.push('=');
    if v.is_empty() {
        out.push_str("true");
    } else {
        clean_tag(v, out);
    }
}

fn clean_tag(s: &[u8], out: &mut String) {
    for c in String::from_utf8_lossy(s).chars() {
        match c {
            ';' | '!' | '^' | '=' | '~' => out.push('_'),
            c if c.is_whitespace() => out.push('_'),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statsd::sketch::Sketch;

    fn fmt() -> Format {
        Format {
            prefix: "stats".into(),
            percentiles: parse_percentiles("90,99.9").unwrap(),
            interval_secs: 10.0,
        }
    }

    fn lines(kind: MetricType, name: &str, tags: &str, v: Flushed<'_>) -> Vec<String> {
        let mut out = Vec::new();
        let key = KeyView { kind, name: name.as_bytes(), tags: tags.as_bytes() };
        let n = write_key(&mut out, &fmt(), key, v, 1_700_000_000);
        let text = String::from_utf8(out).unwrap();
        let v: Vec<String> = text.lines().map(str::to_owned).collect();
        assert_eq!(v.len(), n);
        v
    }

    #[test]
    fn counters_gauges_sets() {
        assert_eq!(
            lines(MetricType::Counter, "api.hits", "", Flushed::Counter(25.0)),
            ["stats.counters.api.hits.count 25 1700000000", "stats.counters.api.hits.rate 2.5 1700000000"]
        );
        assert_eq!(
            lines(MetricType::Gauge, "temp", "", Flushed::Gauge(-1.5)),
            ["stats.gauges.temp -1.5 1700000000"]
        );
        let mut users = crate::statsd::set::UniqueSet::new();
        for m in [&b"a"[..], b"b", b"c", b"a"] {
            users.insert(m);
        }
        assert_eq!(
            lines(MetricType::Set, "users", "", Flushed::Set(&users)),
            ["stats.sets.users.count 3 1700000000"]
        );
    }

    #[test]
    fn tags_and_cleaning() {
        assert_eq!(
            lines(MetricType::Gauge, "my metric/x$", "env:prod|flag|odd;k:v=w", Flushed::Gauge(1.0)),
            ["stats.gauges.my_metric-x;env=prod;flag=true;odd_k=v_w 1 1700000000"]
        );
    }

    #[test]
    fn timers() {
        let mut s = Sketch::new();
        for v in 1..=10 {
            s.add(f64::from(v), 1.0);
        }
        let got = lines(MetricType::Histogram, "t", "", Flushed::Sampled(&s));
        let names: Vec<&str> = got.iter().map(|l| l.split(' ').next().unwrap()).collect();
        assert_eq!(
            names,
            [
                "stats.timers.t.count",
                "stats.timers.t.count_ps",
                "stats.timers.t.sum",
                "stats.timers.t.mean",
                "stats.timers.t.median",
                "stats.timers.t.std",
                "stats.timers.t.upper",
                "stats.timers.t.lower",
                "stats.timers.t.upper_90",
                "stats.timers.t.mean_90",
                "stats.timers.t.sum_90",
                "stats.timers.t.upper_99_9",
                "stats.timers.t.mean_99_9",
                "stats.timers.t.sum_99_9",
            ]
        );
        let value = |name: &str| -> f64 {
            got.iter()
                .find(|l| l.starts_with(&format!("stats.timers.t.{name} ")))
                .unwrap()
                .split(' ')
                .nth(1)
                .unwrap()
                .parse()
                .unwrap()
        };
        assert_eq!((value("count"), value("count_ps"), value("sum"), value("mean")), (10.0, 1.0, 55.0, 5.5));
        assert_eq!(
            (value("upper"), value("lower"), value("upper_99_9"), value("sum_99_9")),
            (10.0, 1.0, 10.0, 55.0)
        );
        assert!((value("upper_90") - 9.0).abs() <= 0.09);
        // An empty interval: count and count_ps only.
        let empty = Sketch::new();
        assert_eq!(
            lines(MetricType::Timer, "t", "", Flushed::Sampled(&empty)),
            ["stats.timers.t.count 0 1700000000", "stats.timers.t.count_ps 0 1700000000"]
        );
    }

    /// Value of `stats.timers.t.<name>` in `got`.
    fn timer_value(got: &[String], name: &str) -> f64 {
        let prefix = format!("stats.timers.t.{name} ");
        let line =
            got.iter().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {name} in {got:?}"));
        line.split(' ').nth(1).and_then(|v| v.parse().ok()).expect("value")
    }

    /// The values 1..100 in one interval: etsy statsd's figures exactly
    /// (its process_metrics gives upper_90 90, mean_90 45.5, sum_90 4095;
    /// the sketch alone said 89.13), whatever the order they came in.
    #[test]
    fn a_few_samples_give_etsys_figures_exactly() {
        let mut s = Sketch::with_exact(1000);
        for v in (1..=100).rev() {
            s.add(f64::from(v), 1.0);
        }
        let f = Format { percentiles: parse_percentiles("50,90,95,99").unwrap(), ..fmt() };
        let mut out = Vec::new();
        let k = KeyView { kind: MetricType::Timer, name: b"t", tags: b"" };
        write_key(&mut out, &f, k, Flushed::Sampled(&s), 1_700_000_000);
        let got: Vec<String> = String::from_utf8(out).unwrap().lines().map(String::from).collect();
        for (name, want) in [
            ("count", 100.0),
            ("sum", 5050.0),
            ("mean", 50.5),
            ("median", 50.5),
            ("upper", 100.0),
            ("lower", 1.0),
            ("upper_90", 90.0),
            ("mean_90", 45.5),
            ("sum_90", 4095.0),
            ("upper_50", 50.0),
            ("sum_95", 4560.0),
            ("upper_99", 99.0),
        ] {
            assert_eq!(timer_value(&got, name), want, "{name}");
        }
    }

    /// A million samples: over the bound, the sketch answers, within its
    /// stated error, and the samples are no longer held.
    #[test]
    fn past_the_bound_the_sketch_answers_within_its_error() {
        let mut s = Sketch::with_exact(1000);
        for v in 1..=1_000_000 {
            s.add(f64::from(v), 1.0);
        }
        assert!(s.exact().is_none());
        assert_eq!(s.exact_len(), 0, "the kept samples were given back");
        let f = Format { percentiles: parse_percentiles("90").unwrap(), ..fmt() };
        let mut out = Vec::new();
        let k = KeyView { kind: MetricType::Timer, name: b"t", tags: b"" };
        write_key(&mut out, &f, k, Flushed::Sampled(&s), 1_700_000_000);
        let got: Vec<String> = String::from_utf8(out).unwrap().lines().map(String::from).collect();
        let upper = timer_value(&got, "upper_90");
        let alpha = crate::statsd::sketch::RELATIVE_ACCURACY;
        assert!((upper - 900_000.0).abs() <= alpha * 900_000.0, "{upper}");
        assert_eq!(timer_value(&got, "count"), 1_000_000.0);
    }

    #[test]
    fn non_finite_values_are_left_out() {
        assert!(lines(MetricType::Counter, "huge", "", Flushed::Counter(f64::INFINITY)).is_empty());
    }

    #[test]
    fn percentile_flag() {
        assert_eq!(
            parse_percentiles("50, 99.9").unwrap()[1],
            Percentile { value: 99.9, label: "99_9".into() }
        );
        assert!(parse_percentiles("0").is_err());
        assert!(parse_percentiles("101").is_err());
        assert!(parse_percentiles("x").is_err());
        assert!(parse_percentiles("").unwrap().is_empty());
    }
}
