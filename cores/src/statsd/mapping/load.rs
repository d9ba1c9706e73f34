//! From the decoded file to a [`Mapper`]: the checks and defaults of
//! statsd_exporter's `MetricMapper.InitFromYAMLString` (`pkg/mapper/
//! mapper.go`), and the option merging its registry does when it creates a
//! histogram or summary (`pkg/registry/registry.go`), done once at load.

use std::time::Duration;

use super::config::{
    self, ActionKind, MatchKind, ObserverKind, RawConfig, RawDefaults, RawMapping, RawSummary,
};
use super::glob::{Template, Trie};
use super::{goregex, Mapper, Mapping, Matcher, Observer};

/// Prometheus' `DefBuckets`.
pub(super) const DEFAULT_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// statsd_exporter's `defaultQuantiles`: (quantile, allowed error).
pub(super) const DEFAULT_QUANTILES: [(f64, f64); 3] = [(0.5, 0.05), (0.9, 0.01), (0.99, 0.001)];
/// client_golang's `DefMaxAge`, for a zero `max_age`.
pub(super) const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);
/// client_golang's `DefAgeBuckets`, for a zero `age_buckets`.
pub(super) const DEFAULT_AGE_BUCKETS: u32 = 5;

const METRIC_NAME_RE: &str = r"^([a-zA-Z_]|(\$\{?\d+\}?))([a-zA-Z0-9_]|(\$\{?\d+\}?))*$";

/// Parses, checks and compiles a mapping file.
pub(super) fn load(text: &str) -> Result<Mapper, String> {
    let RawConfig { mut defaults, mappings: raw } = config::decode(text)?;
    if defaults.histogram.buckets.is_empty() {
        defaults.histogram.buckets = DEFAULT_BUCKETS.to_vec();
    }
    if defaults.summary.quantiles.is_empty() {
        defaults.summary.quantiles = DEFAULT_QUANTILES.to_vec();
    }
    if defaults.match_kind == MatchKind::Unset {
        defaults.match_kind = MatchKind::Glob;
    }
    let mut trie = Trie::new(defaults.glob_disable_ordering);
    let mut globs: Vec<&str> = Vec::new();
    let mut mappings = Vec::with_capacity(raw.len());
    let mut regexes = Vec::new();
    for (i, m) in raw.iter().enumerate() {
        let context = format!("mapping {i} (match {:?})", m.pattern);
        let compiled = compile(i, m, &defaults, &mut trie).map_err(|e| format!("{context}: {e}"))?;
        match compiled.matcher {
            Matcher::Glob { .. } => globs.push(&m.pattern),
            Matcher::Regex { .. } => regexes.push(i),
        }
        mappings.push(compiled);
    }
    trie.finish(&globs);
    let default_observer = match defaults.observer {
        ObserverKind::Histogram => histogram(&defaults.histogram.buckets)?,
        ObserverKind::Summary | ObserverKind::Unset => {
            summary(&defaults.summary.quantiles, defaults.summary.max_age, defaults.summary.age_buckets)
                .map_err(|e| format!("defaults: {e}"))?
        }
    };
    Ok(Mapper {
        mappings,
        trie: (!globs.is_empty()).then_some(trie),
        regexes,
        default_observer,
        default_ttl: ttl(defaults.ttl),
    })
}

/// Checks mapping `index` and compiles it, in Go's order of checks.
fn compile(index: usize, m: &RawMapping, d: &RawDefaults, trie: &mut Trie) -> Result<Mapping, String> {
    if let Some((key, _)) = m.labels.iter().find(|(k, _)| !label_name_ok(k)) {
        return Err(format!("invalid label key: {key} (label names are [a-zA-Z_][a-zA-Z0-9_]+)"));
    }
    if m.name.is_empty() {
        return Err("metric mapping didn't set a metric name".into());
    }
    if !metric_name_ok(&m.name) {
        return Err(format!("metric name '{}' doesn't match regex '{METRIC_NAME_RE}'", m.name));
    }
    let match_kind = if m.match_kind == MatchKind::Unset { d.match_kind } else { m.match_kind };
    let matcher = if match_kind == MatchKind::Regex {
        let re = goregex::compile(&m.pattern)
            .map_err(|e| format!("invalid regex {} in mapping: {e}", m.pattern))?;
        let labels = m.labels.iter().map(|(k, v)| (k.clone(), goregex::template(v))).collect();
        Matcher::Regex { re, name: goregex::template(&m.name), labels }
    } else {
        if !glob_ok(&m.pattern) {
            return Err(format!("invalid match: {}", m.pattern));
        }
        let captures = trie.add(&m.pattern, m.class, index);
        let labels = m.labels.iter().map(|(k, v)| (k.clone(), Template::new(v, captures))).collect();
        Matcher::Glob { name: Template::new(&m.name, captures), labels }
    };
    Ok(Mapping {
        matcher,
        drop: m.action == ActionKind::Drop,
        class: m.class,
        honor_labels: m.honor_labels,
        help: (!m.help.is_empty()).then(|| m.help.clone()),
        observer: observer(m, d)?,
        ttl: ttl(if m.ttl == 0 && d.ttl > 0 { d.ttl } else { m.ttl }),
        scale: m.scale,
    })
}

/// The observer a mapping's timers, histograms and distributions get.
fn observer(m: &RawMapping, d: &RawDefaults) -> Result<Observer, String> {
    let kind = if m.observer == ObserverKind::Unset { d.observer } else { m.observer };
    match kind {
        ObserverKind::Histogram => {
            if m.summary.is_some() {
                return Err("cannot use histogram observer and summary options at the same time".into());
            }
            let own = m.histogram.as_ref().map(|h| h.buckets.as_slice()).filter(|b| !b.is_empty());
            histogram(own.unwrap_or(&d.histogram.buckets))
        }
        ObserverKind::Summary => {
            if m.histogram.is_some() {
                return Err("cannot use summary observer and histogram options at the same time".into());
            }
            // Go fills each option the mapping left at zero from the defaults.
            let own = m.summary.clone().unwrap_or_default();
            let pick = |mine: i64, theirs: i64| if mine == 0 { theirs } else { mine };
            let quantiles = if own.quantiles.is_empty() { &d.summary.quantiles } else { &own.quantiles };
            let age_buckets = if own.age_buckets == 0 { d.summary.age_buckets } else { own.age_buckets };
            summary(quantiles, pick(own.max_age, d.summary.max_age), age_buckets)
        }
        ObserverKind::Unset => {
            // No observer type anywhere: Go's registry makes a summary with
            // the mapping's quantiles if any, and the mapping's other
            // options as they are if it has options at all.
            let RawSummary { quantiles, max_age, age_buckets, .. } = m.summary.as_ref().unwrap_or(&d.summary);
            let quantiles = if quantiles.is_empty() { &d.summary.quantiles } else { quantiles };
            summary(quantiles, *max_age, *age_buckets)
        }
    }
}

/// Buckets as the client library takes them: sorted, each once, a final
/// `+Inf` implied. Go's client panics at the first observation on unsorted
/// or repeated buckets; they are sorted here, and NaN is refused.
fn histogram(buckets: &[f64]) -> Result<Observer, String> {
    if buckets.iter().any(|b| b.is_nan()) {
        return Err(format!("histogram buckets {buckets:?}: NaN is not a bucket"));
    }
    let mut buckets: Vec<f64> = buckets.iter().copied().filter(|b| *b != f64::INFINITY).collect();
    buckets.sort_by(f64::total_cmp);
    buckets.dedup();
    Ok(Observer::Histogram { buckets })
}

/// A summary as the client library makes it: objectives are a map (a
/// repeated quantile keeps the last error given), zero age options take the
/// library's defaults.
fn summary(quantiles: &[(f64, f64)], max_age: i64, age_buckets: u32) -> Result<Observer, String> {
    let mut objectives: Vec<(f64, f64)> = Vec::with_capacity(quantiles.len());
    for &(q, e) in quantiles {
        match objectives.iter_mut().find(|(have, _)| *have == q) {
            Some(slot) => slot.1 = e,
            None => objectives.push((q, e)),
        }
    }
    objectives.sort_by(|a, b| a.0.total_cmp(&b.0));
    let max_age = match u64::try_from(max_age) {
        Ok(0) => DEFAULT_MAX_AGE,
        Ok(ns) => Duration::from_nanos(ns),
        Err(_) => return Err(format!("summary max_age {max_age}ns: must not be negative")),
    };
    let age_buckets = if age_buckets == 0 { DEFAULT_AGE_BUCKETS } else { age_buckets };
    Ok(Observer::Summary { quantiles: objectives, max_age, age_buckets })
}

/// A Go TTL: zero never expires; a negative one expires at the first sweep
/// after each update in Go, which the shortest duration reproduces.
fn ttl(ns: i64) -> Duration {
    match u64::try_from(ns) {
        Ok(ns) => Duration::from_nanos(ns),
        Err(_) => Duration::from_nanos(1),
    }
}

/// Go's `labelNameRE`, `^[a-zA-Z_][a-zA-Z0-9_]+$`: two characters at least.
fn label_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Go's `metricNameRE`: name characters (no leading digit) and `$n`,
/// `${n}` references (`${n` and `$n}` pass too).
fn metric_name_ok(name: &str) -> bool {
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let mut j = i + 1 + usize::from(b.get(i + 1) == Some(&b'{'));
            let digits = b[j..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return false;
            }
            j += digits;
            i = j + usize::from(b.get(j) == Some(&b'}'));
        } else if b[i].is_ascii_alphabetic() || b[i] == b'_' || (i > 0 && b[i].is_ascii_digit()) {
            i += 1;
        } else {
            return false;
        }
    }
    !b.is_empty()
}

/// Go's `metricLineRE` for globs: dot-separated components, each `*` or
/// `[a-zA-Z0-9_-]+` not starting with `-` (nor, for the first, a digit).
/// A `*` inside a component (`client_*_x`) is refused, as in Go.
fn glob_ok(glob: &str) -> bool {
    glob.split('.').enumerate().all(|(i, part)| {
        let mut chars = part.chars();
        let first_ok = |c: char| c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit());
        part == "*"
            || (chars.next().is_some_and(first_ok)
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_and_label_rules_as_go() {
        for (name, ok) in [
            ("foo", true),
            ("foo_bar_1", true),
            ("_x", true),
            ("0foo", false),
            ("$1", true),
            ("${1}_total", true),
            ("${1", true),
            ("$1}", true),
            ("$0", true),
            ("a$2b", true),
            ("${name}", false),
            ("$x", false),
            ("a:b", false),
            ("a.b", false),
            ("a-b", false),
            ("", false),
        ] {
            assert_eq!(metric_name_ok(name), ok, "{name:?}");
        }
        for (label, ok) in
            [("ab", true), ("_a", true), ("a", false), ("1a", false), ("a-b", false), ("a1", true)]
        {
            assert_eq!(label_name_ok(label), ok, "{label:?}");
        }
        for (glob, ok) in [
            ("a.b.c", true),
            ("*", true),
            ("*.x.*", true),
            ("test.99.myapp.*", true),
            ("test.99test.x", true),
            ("foo--bar.*", true),
            ("9a.b", false),
            ("a..b", false),
            ("", false),
            ("client_*_x", false),
            ("a.*b", false),
            ("bad!!metric-line.*.*", false),
            ("a.-b", false),
            ("a.b.", false),
        ] {
            assert_eq!(glob_ok(glob), ok, "{glob:?}");
        }
    }
}
