//! Prometheus text exposition (format 0.0.4), written by hand: families with
//! `# HELP` and `# TYPE`, samples with escaped label values, histograms with
//! cumulative `le` buckets.
//!
//! Metrics themselves are plain integers owned by each shard (no atomics on
//! the hot path); a scrape gathers every shard's snapshot with
//! `shard::map_reduce` and writes them here. Each family carries a `shard`
//! label per shard plus `shard="all"` for the sum, so a dashboard can read
//! the total without a query (and `sum without (shard)` must exclude
//! `shard="all"`).

use std::fmt::Write as _;

/// The kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (name ends in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Bucketed observations.
    Histogram,
    /// Quantiles of observations.
    Summary,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }
}

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label set: `(name, value)` pairs.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

/// An exposition being written.
///
/// Samples are kept with their family, so a family announced again later
/// (the same counter of a second service) still comes out as one group, as
/// the text format requires of every line of a metric.
#[derive(Debug, Default)]
pub struct Exposition {
    /// Each family's name and text (its HELP, TYPE and samples so far), in
    /// the order first announced.
    families: Vec<(String, String)>,
    /// The family samples are written to now (`family` chose it).
    current: Option<usize>,
    /// Samples written before any family.
    loose: String,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts a family, or goes back to it: each name is announced once,
    /// and the samples written next join it wherever it was announced.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        debug_assert!(valid_name(name), "bad metric name {name}");
        debug_assert!(
            kind != Kind::Counter || !name.starts_with("appliance_") || name.ends_with("_total"),
            "counter {name} needs _total"
        );
        if let Some(i) = self.families.iter().position(|(f, _)| f == name) {
            self.current = Some(i);
            return self;
        }
        let mut text = String::new();
        let _ = writeln!(text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(text, "# TYPE {name} {}", kind.as_str());
        self.families.push((name.to_string(), text));
        self.current = Some(self.families.len() - 1);
        self
    }

    /// The text the next sample goes to: the current family's.
    fn out(&mut self, sample: &str) -> &mut String {
        match self.current.and_then(|i| self.families.get_mut(i)) {
            Some((family, text)) => {
                debug_assert!(sample.starts_with(family.as_str()), "{sample} written under {family}");
                text
            }
            None => &mut self.loose,
        }
    }

    /// Writes one sample (of the family announced last).
    pub fn sample(&mut self, name: &str, labels: Labels<'_>, value: f64) -> &mut Self {
        let out = self.out(name);
        out.push_str(name);
        write_labels(out, labels, None);
        let _ = writeln!(out, " {}", format_value(value));
        self
    }

    /// Writes a family with one sample per shard (`shard="i"`) and their sum
    /// (`shard="all"`), each with the extra `labels`.
    pub fn per_shard(&mut self, name: &str, kind: Kind, help: &str, labels: Labels<'_>, values: &[u64]) {
        self.family(name, kind, help);
        let ids: Vec<String> = (0..values.len()).map(|i| i.to_string()).collect();
        let sum = values.iter().sum::<u64>();
        let shards = ids.iter().map(String::as_str).chain(["all"]);
        for (id, v) in shards.zip(values.iter().copied().chain([sum])) {
            let mut all = Vec::with_capacity(labels.len() + 1);
            all.extend_from_slice(labels);
            all.push(("shard", id));
            self.sample(name, &all, v as f64);
        }
    }

    /// Writes a histogram: `bounds` are the bucket upper bounds (ascending),
    /// `counts` the per-bucket (non-cumulative) counts with one extra
    /// overflow bucket at the end, `sum` the sum of observations.
    pub fn histogram(&mut self, name: &str, labels: Labels<'_>, bounds: &[f64], counts: &[u64], sum: f64) {
        debug_assert_eq!(counts.len(), bounds.len() + 1);
        let out = self.out(name);
        let mut cumulative = 0u64;
        let les = bounds.iter().map(|b| format_value(*b)).chain(["+Inf".to_string()]);
        for (i, le) in les.enumerate() {
            cumulative += counts.get(i).copied().unwrap_or(0);
            out.push_str(name);
            out.push_str("_bucket");
            write_labels(out, labels, Some(("le", &le)));
            let _ = writeln!(out, " {cumulative}");
        }
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, cumulative as f64);
    }

    /// Writes a summary: each `(quantile, value)`, then `_sum` and `_count`.
    pub fn summary(
        &mut self,
        name: &str,
        labels: Labels<'_>,
        quantiles: &[(f64, f64)],
        sum: f64,
        count: f64,
    ) {
        let out = self.out(name);
        for (q, v) in quantiles {
            out.push_str(name);
            write_labels(out, labels, Some(("quantile", &format_value(*q))));
            let _ = writeln!(out, " {}", format_value(*v));
        }
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, count);
    }

    /// The text.
    pub fn finish(self) -> String {
        let mut out = self.loose;
        for (_, text) in self.families {
            out.push_str(&text);
        }
        out
    }
}

/// Writes `{labels,extra}` (nothing when both are empty).
fn write_labels(out: &mut String, labels: Labels<'_>, extra: Option<(&str, &str)>) {
    if labels.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels.iter().copied().chain(extra) {
        debug_assert!(valid_name(k), "bad label name {k}");
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Whether `name` is a valid metric or label name.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_families_samples_and_escapes() {
        let mut e = Exposition::new();
        e.per_shard("appliance_x_total", Kind::Counter, "Things.\nMore", &[("svc", "a\"b\\c\nd")], &[1, 2]);
        e.family("appliance_x_total", Kind::Counter, "again");
        e.family("appliance_g", Kind::Gauge, "A gauge.").sample("appliance_g", &[], 0.5);
        let text = e.finish();
        let want = "# HELP appliance_x_total Things.\\nMore\n# TYPE appliance_x_total counter\n\
            appliance_x_total{svc=\"a\\\"b\\\\c\\nd\",shard=\"0\"} 1\n\
            appliance_x_total{svc=\"a\\\"b\\\\c\\nd\",shard=\"1\"} 2\n\
            appliance_x_total{svc=\"a\\\"b\\\\c\\nd\",shard=\"all\"} 3\n\
            # HELP appliance_g A gauge.\n# TYPE appliance_g gauge\nappliance_g 0.5\n";
        assert_eq!(text, want);
    }

    /// A family announced again (the same counter of a second service)
    /// gets its samples in its one group, after the first service's.
    #[test]
    fn a_family_announced_again_stays_one_group() {
        let mut e = Exposition::new();
        for svc in ["a", "b"] {
            e.per_shard("appliance_x_total", Kind::Counter, "X.", &[("service", svc)], &[1]);
            e.per_shard("appliance_y", Kind::Gauge, "Y.", &[("service", svc)], &[2]);
        }
        let text = e.finish();
        let names: Vec<&str> =
            text.lines().filter(|l| !l.starts_with('#')).map(|l| &l[..l.find('{').unwrap_or(0)]).collect();
        assert_eq!(names, ["appliance_x_total"; 4].into_iter().chain(["appliance_y"; 4]).collect::<Vec<_>>());
        assert_eq!(text.matches("# TYPE").count(), 2, "{text}");
        let b = text.find("appliance_x_total{service=\"b\",shard=\"0\"} 1").expect("b's sample");
        assert!(b < text.find("# TYPE appliance_y").expect("y"), "{text}");
    }

    #[test]
    fn histogram_is_cumulative() {
        let mut e = Exposition::new();
        e.family("h_seconds", Kind::Histogram, "h");
        e.histogram("h_seconds", &[("u", "x")], &[0.001, 0.01], &[2, 3, 4], 1.5);
        let text = e.finish();
        assert!(text.contains("h_seconds_bucket{u=\"x\",le=\"0.001\"} 2\n"), "{text}");
        assert!(text.contains("h_seconds_bucket{u=\"x\",le=\"0.01\"} 5\n"), "{text}");
        assert!(text.contains("h_seconds_bucket{u=\"x\",le=\"+Inf\"} 9\n"), "{text}");
        assert!(text.contains("h_seconds_count{u=\"x\"} 9\n"), "{text}");
        assert!(text.contains("h_seconds_sum{u=\"x\"} 1.5\n"), "{text}");
    }

    #[test]
    fn summary_has_quantiles_then_sum_and_count() {
        let mut e = Exposition::new();
        e.family("rpc_seconds", Kind::Summary, "s");
        e.summary("rpc_seconds", &[("m", "get")], &[(0.5, 0.25), (0.99, f64::NAN)], 7.5, 30.0);
        let text = e.finish();
        let want = "# HELP rpc_seconds s\n# TYPE rpc_seconds summary\n\
            rpc_seconds{m=\"get\",quantile=\"0.5\"} 0.25\n\
            rpc_seconds{m=\"get\",quantile=\"0.99\"} NaN\n\
            rpc_seconds_sum{m=\"get\"} 7.5\nrpc_seconds_count{m=\"get\"} 30\n";
        assert_eq!(text, want);
    }

    #[test]
    fn names() {
        assert!(valid_name("appliance_a:b_1"));
        assert!(!valid_name("1abc"));
        assert!(!valid_name("a-b"));
        assert!(!valid_name(""));
    }
}
