//! statsd_exporter's mapping file (`--statsd.mapping-config`, the
//! `mapping.yml` of prometheus/statsd_exporter), taken as it is: what
//! Prometheus name, labels, observer, TTL and scale a statsd metric gets.
//!
//! ```
//! use cores::statsd::mapping::{Mapper, MetricClass, Outcome};
//! let m = Mapper::from_yaml(r#"
//! mappings:
//! - match: "test.dispatcher.*.*.*"
//!   name: "dispatcher_events_total"
//!   labels: {processor: "$1", action: "$2", outcome: "$3", job: "test_dispatcher"}
//! "#).unwrap();
//! let Outcome::Map(got) = m.map("test.dispatcher.FooProcessor.send.success", MetricClass::Counter) else { panic!() };
//! assert_eq!(got.name, "dispatcher_events_total");
//! assert_eq!(got.labels[0], ("processor".into(), "FooProcessor".into()));
//! let Outcome::Map(other) = m.map("test.web-server.foo.bar", MetricClass::Counter) else { panic!() };
//! assert_eq!((other.name.as_str(), other.matched), ("test_web_server_foo_bar", false));
//! ```
//!
//! Everything of the file format is supported, with Go's meaning (checked
//! against statsd_exporter's `pkg/mapper`, `pkg/exporter` and
//! `pkg/registry`):
//!
//! - `defaults:` `observer_type`, `match_type`, `glob_disable_ordering`,
//!   `ttl`, `summary_options`, `histogram_options`; `mappings:` with
//!   `match`, `name`, `labels`, `honor_labels`, `observer_type`,
//!   `match_type` (`glob`, `regex`), `help`, `action` (`map`, `drop`),
//!   `match_metric_type` (`counter`, `gauge`, `observer`: statsd timers,
//!   histograms and distributions), `ttl`, `summary_options` (`quantiles`
//!   of `{quantile, error}`, `max_age`, `age_buckets`, `buf_cap`),
//!   `histogram_options` (`buckets`, `native_histogram_bucket_factor`,
//!   `native_histogram_max_buckets`), `scale`. Any other key is an error
//!   naming it, as Go's strict decoding makes it (so the old `timer_type`,
//!   `buckets` and `quantiles` keys are refused, as there). YAML is read as
//!   Go's `yaml.v2` reads it (see the `yaml` submodule): `yes` is true, a
//!   label `200` is the string `"200"`, `ttl: 60` is 60 ns.
//! - Load-time checks: label names `[a-zA-Z_][a-zA-Z0-9_]+` (two characters
//!   at least, as in Go), a `name` in every mapping (drops too) made of
//!   `[a-zA-Z0-9_]` and `$n`/`${n}` (so `${name}` is refused in a name, but
//!   fine in label values), globs of whole-component `*`s (`client_*_x` is
//!   refused), regexes that compile, no summary options with a histogram
//!   observer nor the reverse.
//! - Globs (see the `glob` submodule): a `*` is one whole component, a name
//!   needs as many components as the glob, the first matching glob in the
//!   file wins (unless `glob_disable_ordering`). Every glob mapping is tried
//!   before any regex mapping, whatever the file order.
//! - Regexes (see the `goregex` submodule): Go syntax, unanchored, tried in
//!   file order, `$1`/`${1}`/`${name}` expanded as Go does; a regex that
//!   matches a name of another `match_metric_type` is skipped.
//! - `name` after expansion is escaped with [`escape_metric_name`]; an empty
//!   result is returned empty (the exporter counts and drops it).
//! - Defaults: summary observer with quantiles 0.5/0.05, 0.9/0.01,
//!   0.99/0.001, `max_age` 10 minutes, `age_buckets` 5; histogram buckets
//!   Prometheus' `DefBuckets`; no TTL. A mapping's TTL of zero takes a
//!   positive default TTL.
//!
//! Go's glob quirks are kept (a glob that is a prefix of an earlier one
//! never matches; see the `glob` submodule), since they decide which
//! mapping a name gets.
//!
//! Deviations from Go: `buf_cap` and the native histogram options are
//! accepted and ignored (nothing here uses them); labels keep file order
//! (Go has a map); a load reports the first error, in its own words with
//! Go's phrase inside. And, only for files Go handles badly: histogram
//! buckets are sorted and deduplicated (Go's client panics on unsorted
//! ones) and NaN is refused; a negative `max_age` is refused; a `%` in a
//! glob's name or label template stays literal (Go runs the template
//! through `Sprintf`); a few regexes Go refuses compile here (see the
//! `goregex` submodule).

mod config;
mod duration;
mod escape;
mod glob;
mod goregex;
mod load;
mod yaml;

#[cfg(test)]
mod tests;

use std::time::Duration;

use regex::Regex;

pub use escape::escape_metric_name;

/// statsd_exporter's match_metric_type classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricClass {
    /// statsd counters (`c`).
    Counter,
    /// statsd gauges (`g`).
    Gauge,
    /// statsd timers (`ms`), histograms (`h`) and distributions (`d`).
    Observer,
}

/// How a mapped observer metric is exposed.
#[derive(Debug, Clone, PartialEq)]
pub enum Observer {
    /// A histogram with these upper bounds.
    Histogram {
        /// Sorted ascending, `+Inf` not included.
        buckets: Vec<f64>,
    },
    /// A summary.
    Summary {
        /// (quantile, allowed error), sorted by quantile.
        quantiles: Vec<(f64, f64)>,
        /// How long an observation counts.
        max_age: Duration,
        /// Buckets the `max_age` window is kept in.
        age_buckets: u32,
    },
}

/// A loaded mapping file.
#[derive(Debug, Clone)]
pub struct Mapper {
    /// In file order.
    mappings: Vec<Mapping>,
    /// The glob mappings; `None` when there are none.
    trie: Option<glob::Trie>,
    /// Indexes of the regex mappings, in file order.
    regexes: Vec<usize>,
    default_observer: Observer,
    default_ttl: Duration,
}

/// One compiled mapping.
#[derive(Debug, Clone)]
struct Mapping {
    matcher: Matcher,
    drop: bool,
    class: Option<MetricClass>,
    honor_labels: bool,
    help: Option<String>,
    observer: Observer,
    ttl: Duration,
    scale: Option<f64>,
}

#[derive(Debug, Clone)]
enum Matcher {
    Glob { name: glob::Template, labels: Vec<(String, glob::Template)> },
    Regex { re: Regex, name: Vec<goregex::Piece>, labels: Vec<(String, Vec<goregex::Piece>)> },
}

/// What a statsd metric becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<'a> {
    /// `action: drop` matched.
    Drop,
    /// A mapping matched, or none did (then `matched` is false, name is the
    /// escaped statsd name, labels empty, everything else from the defaults).
    Map(Mapped<'a>),
}

/// A metric's Prometheus identity and options.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped<'a> {
    /// The Prometheus metric name, already escaped with
    /// [`escape_metric_name`] (as the exporter does with the mapping's name).
    /// Empty when the mapping produced an empty name (the exporter counts
    /// that as an error and drops the event; the caller does that).
    pub name: String,
    /// The mapping's labels, expanded, in file order (the caller merges them
    /// over tag labels).
    pub labels: Vec<(String, String)>,
    /// Tags win over the mapping's labels of the same name.
    pub honor_labels: bool,
    /// Whether a mapping matched.
    pub matched: bool,
    /// The mapping's `help`, if it has one.
    pub help: Option<&'a str>,
    /// The mapping's observer, else the defaults'.
    pub observer: &'a Observer,
    /// Zero: never expires.
    pub ttl: Duration,
    /// What to multiply values by.
    pub scale: Option<f64>,
}

impl Mapper {
    /// Parses a mapping file's text. Errors name the line or the mapping
    /// (index and `match`) and what is wrong.
    pub fn from_yaml(text: &str) -> Result<Mapper, String> {
        load::load(text)
    }

    /// No mappings, statsd_exporter's defaults (what runs without
    /// `--statsd.mapping-config`).
    pub fn empty() -> Mapper {
        Mapper {
            mappings: Vec::new(),
            trie: None,
            regexes: Vec::new(),
            default_observer: Observer::Summary {
                quantiles: load::DEFAULT_QUANTILES.to_vec(),
                max_age: load::DEFAULT_MAX_AGE,
                age_buckets: load::DEFAULT_AGE_BUCKETS,
            },
            default_ttl: Duration::ZERO,
        }
    }

    /// Number of mappings.
    pub fn len(&self) -> usize {
        self.mappings.len()
    }

    /// Whether there are no mappings.
    pub fn is_empty(&self) -> bool {
        self.mappings.is_empty()
    }

    /// The outcome for one statsd metric name of one class: globs first,
    /// then regexes in file order, else unmapped.
    pub fn map(&self, name: &str, class: MetricClass) -> Outcome<'_> {
        if let Some((index, caps)) = self.trie.as_ref().and_then(|t| t.find(name, class)) {
            let m = &self.mappings[index];
            if let Matcher::Glob { name: template, labels } = &m.matcher {
                if m.drop {
                    return Outcome::Drop;
                }
                let labels = labels.iter().map(|(k, t)| (k.clone(), t.format(&caps))).collect();
                return self.matched(m, &template.format(&caps), labels);
            }
        }
        for m in self.regexes.iter().map(|&i| &self.mappings[i]) {
            let Matcher::Regex { re, name: template, labels } = &m.matcher else { continue };
            let Some(caps) = re.captures(name) else { continue };
            if m.class.is_some_and(|c| c != class) {
                continue;
            }
            if m.drop {
                return Outcome::Drop;
            }
            let labels = labels.iter().map(|(k, t)| (k.clone(), goregex::expand(t, re, &caps))).collect();
            return self.matched(m, &goregex::expand(template, re, &caps), labels);
        }
        Outcome::Map(Mapped {
            name: escape_metric_name(name),
            labels: Vec::new(),
            honor_labels: false,
            matched: false,
            help: None,
            observer: &self.default_observer,
            ttl: self.default_ttl,
            scale: None,
        })
    }

    fn matched<'a>(&'a self, m: &'a Mapping, name: &str, labels: Vec<(String, String)>) -> Outcome<'a> {
        Outcome::Map(Mapped {
            name: escape_metric_name(name),
            labels,
            honor_labels: m.honor_labels,
            matched: true,
            help: m.help.as_deref(),
            observer: &m.observer,
            ttl: m.ttl,
            scale: m.scale,
        })
    }
}

impl Default for Mapper {
    fn default() -> Mapper {
        Mapper::empty()
    }
}
