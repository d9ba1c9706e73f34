//! The mapping file decoded field by field as statsd_exporter's Go structs
//! take it (`MetricMapper`, `MapperConfigDefaults`, `MetricMapping`,
//! `SummaryOptions`, `HistogramOptions`), before defaults and validation.
//! Field names, the `invalid ... type` messages and what an empty or null
//! value means follow `pkg/mapper/{mapping,mapper_defaults,observer,match,
//! action,metric_type}.go`.

use super::yaml::{Doc, Id};
use super::MetricClass;

/// `observer_type`: unset (inherit the default) differs from an explicit
/// `""`, which Go's `ObserverType.UnmarshalYAML` turns into `summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum ObserverKind {
    #[default]
    Unset,
    Summary,
    Histogram,
}

/// `match_type`; an explicit `""` is `glob`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum MatchKind {
    #[default]
    Unset,
    Glob,
    Regex,
}

/// `action`; an explicit `""` is `map`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum ActionKind {
    #[default]
    Unset,
    Map,
    Drop,
}

/// `summary_options`; durations in nanoseconds, zero meaning "not given".
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct RawSummary {
    pub quantiles: Vec<(f64, f64)>,
    pub max_age: i64,
    pub age_buckets: u32,
    /// Accepted and ignored: the stream buffer of Go's summary.
    pub buf_cap: u32,
}

/// `histogram_options`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct RawHistogram {
    pub buckets: Vec<f64>,
    /// Accepted and ignored: Prometheus native histograms.
    pub native_factor: f64,
    /// Accepted and ignored, as `native_factor`.
    pub native_max: u32,
}

/// `defaults:`.
#[derive(Debug, Clone, Default)]
pub(super) struct RawDefaults {
    pub observer: ObserverKind,
    pub match_kind: MatchKind,
    pub glob_disable_ordering: bool,
    pub ttl: i64,
    pub summary: RawSummary,
    pub histogram: RawHistogram,
}

/// One entry of `mappings:`.
#[derive(Debug, Clone, Default)]
pub(super) struct RawMapping {
    pub pattern: String,
    pub name: String,
    /// In file order.
    pub labels: Vec<(String, String)>,
    pub honor_labels: bool,
    pub observer: ObserverKind,
    pub match_kind: MatchKind,
    pub help: String,
    pub action: ActionKind,
    pub class: Option<MetricClass>,
    pub ttl: i64,
    /// `None` when absent or `~`: present-but-empty options still count
    /// for the histogram/summary conflict checks, as in Go.
    pub summary: Option<RawSummary>,
    pub histogram: Option<RawHistogram>,
    pub scale: Option<f64>,
}

/// The whole file.
#[derive(Debug, Clone, Default)]
pub(super) struct RawConfig {
    pub defaults: RawDefaults,
    pub mappings: Vec<RawMapping>,
}

const TOP_FIELDS: &[&str] = &["defaults", "mappings"];
const DEFAULTS_FIELDS: &[&str] =
    &["observer_type", "match_type", "glob_disable_ordering", "ttl", "summary_options", "histogram_options"];
const MAPPING_FIELDS: &[&str] = &[
    "match",
    "name",
    "labels",
    "honor_labels",
    "observer_type",
    "match_type",
    "help",
    "action",
    "match_metric_type",
    "ttl",
    "summary_options",
    "histogram_options",
    "scale",
];
const SUMMARY_FIELDS: &[&str] = &["quantiles", "max_age", "age_buckets", "buf_cap"];
const HISTOGRAM_FIELDS: &[&str] =
    &["buckets", "native_histogram_bucket_factor", "native_histogram_max_buckets"];

/// Decodes a mapping file's text.
pub(super) fn decode(text: &str) -> Result<RawConfig, String> {
    let doc = Doc::parse(text)?;
    let mut config = RawConfig::default();
    let Some(root) = doc.root() else { return Ok(config) };
    if doc.is_null(root) {
        return Ok(config);
    }
    doc.fields(root, "top level", "mapper.MetricMapper", TOP_FIELDS, &mut |key, v| match key {
        "defaults" => defaults_into(&doc, v, &mut config.defaults),
        _ => {
            let items = doc.seq(v, "mappings", "[]mapper.MetricMapping")?.unwrap_or_default();
            config.mappings = items
                .iter()
                .enumerate()
                .map(|(i, &item)| mapping(&doc, item, &format!("mappings[{i}]")))
                .collect::<Result<_, _>>()?;
            Ok(())
        }
    })?;
    Ok(config)
}

fn defaults_into(doc: &Doc, id: Id, d: &mut RawDefaults) -> Result<(), String> {
    if doc.is_null(id) {
        *d = RawDefaults::default();
        return Ok(());
    }
    doc.fields(id, "defaults", "mapper.MapperConfigDefaults", DEFAULTS_FIELDS, &mut |key, v| {
        let path = format!("defaults.{key}");
        match key {
            "observer_type" => d.observer = observer_kind(doc, v, &path)?,
            "match_type" => d.match_kind = match_kind(doc, v, &path)?,
            "glob_disable_ordering" => d.glob_disable_ordering = doc.bool(v, &path)?,
            "ttl" => d.ttl = doc.duration(v, &path)?,
            "summary_options" if doc.is_null(v) => d.summary = RawSummary::default(),
            "summary_options" => summary_into(doc, v, &path, &mut d.summary)?,
            "histogram_options" if doc.is_null(v) => d.histogram = RawHistogram::default(),
            _ => histogram_into(doc, v, &path, &mut d.histogram)?,
        }
        Ok(())
    })
}

fn mapping(doc: &Doc, id: Id, path: &str) -> Result<RawMapping, String> {
    let mut m = RawMapping::default();
    if doc.is_null(id) {
        return Ok(m);
    }
    doc.fields(id, path, "mapper.MetricMapping", MAPPING_FIELDS, &mut |key, v| {
        let p = format!("{path}.{key}");
        match key {
            "match" => m.pattern = doc.string(v, &p)?,
            "name" => m.name = doc.string(v, &p)?,
            "labels" if doc.is_null(v) => m.labels.clear(),
            "labels" => doc.entries_into(v, &p, "prometheus.Labels", &mut m.labels)?,
            "honor_labels" => m.honor_labels = doc.bool(v, &p)?,
            "observer_type" => m.observer = observer_kind(doc, v, &p)?,
            "match_type" => m.match_kind = match_kind(doc, v, &p)?,
            "help" => m.help = doc.string(v, &p)?,
            "action" => m.action = action_kind(doc, v, &p)?,
            "match_metric_type" => m.class = metric_class(doc, v, &p)?,
            "ttl" => m.ttl = doc.duration(v, &p)?,
            "summary_options" => {
                option_into(doc, v, &p, &mut m.summary, summary_into)?;
            }
            "histogram_options" => {
                option_into(doc, v, &p, &mut m.histogram, histogram_into)?;
            }
            _ => m.scale = scale(doc, v, &p)?,
        }
        Ok(())
    })?;
    Ok(m)
}

/// A pointer field (`*SummaryOptions`): `~` leaves it nil, `Null` gives
/// zeroed options (yaml.v2 allocates before it sees the null), a mapping
/// decodes into what is there (so merges add up).
fn option_into<T: Default>(
    doc: &Doc,
    id: Id,
    path: &str,
    slot: &mut Option<T>,
    decode: fn(&Doc, Id, &str, &mut T) -> Result<(), String>,
) -> Result<(), String> {
    if doc.is_absent(id) {
        *slot = None;
    } else if doc.is_null(id) {
        *slot = Some(T::default());
    } else {
        decode(doc, id, path, slot.get_or_insert_with(T::default))?;
    }
    Ok(())
}

fn summary_into(doc: &Doc, id: Id, path: &str, s: &mut RawSummary) -> Result<(), String> {
    doc.fields(id, path, "mapper.SummaryOptions", SUMMARY_FIELDS, &mut |key, v| {
        let p = format!("{path}.{key}");
        match key {
            "quantiles" => {
                let items = doc.seq(v, &p, "[]mapper.MetricObjective")?.unwrap_or_default();
                s.quantiles = items
                    .iter()
                    .enumerate()
                    .map(|(i, &q)| objective(doc, q, &format!("{p}[{i}]")))
                    .collect::<Result<_, _>>()?;
            }
            "max_age" => s.max_age = doc.duration(v, &p)?,
            "age_buckets" => s.age_buckets = doc.u32(v, &p)?,
            _ => s.buf_cap = doc.u32(v, &p)?,
        }
        Ok(())
    })
}

fn objective(doc: &Doc, id: Id, path: &str) -> Result<(f64, f64), String> {
    let (mut quantile, mut error) = (0.0, 0.0);
    if !doc.is_null(id) {
        doc.fields(id, path, "mapper.MetricObjective", &["quantile", "error"], &mut |key, v| {
            let p = format!("{path}.{key}");
            match key {
                "quantile" => quantile = doc.f64(v, &p)?,
                _ => error = doc.f64(v, &p)?,
            }
            Ok(())
        })?;
    }
    Ok((quantile, error))
}

fn histogram_into(doc: &Doc, id: Id, path: &str, h: &mut RawHistogram) -> Result<(), String> {
    doc.fields(id, path, "mapper.HistogramOptions", HISTOGRAM_FIELDS, &mut |key, v| {
        let p = format!("{path}.{key}");
        match key {
            "buckets" => {
                let items = doc.seq(v, &p, "[]float64")?.unwrap_or_default();
                h.buckets = items
                    .iter()
                    .enumerate()
                    .map(|(i, &b)| doc.f64(b, &format!("{p}[{i}]")))
                    .collect::<Result<_, _>>()?;
            }
            "native_histogram_bucket_factor" => h.native_factor = doc.f64(v, &p)?,
            _ => h.native_max = doc.u32(v, &p)?,
        }
        Ok(())
    })
}

/// The string an enum-like field's `UnmarshalYAML` sees, or `None` when
/// yaml.v2 never calls it (`~`, `null`, nothing).
fn enum_text(doc: &Doc, id: Id, path: &str) -> Result<Option<String>, String> {
    if doc.is_absent(id) {
        return Ok(None);
    }
    doc.string(id, path).map(Some)
}

fn observer_kind(doc: &Doc, id: Id, path: &str) -> Result<ObserverKind, String> {
    Ok(match enum_text(doc, id, path)?.as_deref() {
        None => ObserverKind::Unset,
        Some("histogram") => ObserverKind::Histogram,
        Some("summary" | "") => ObserverKind::Summary,
        Some(other) => {
            return Err(format!(
                "line {}: {path}: invalid observer type '{other}' (summary or histogram)",
                doc.line(id)
            ))
        }
    })
}

fn match_kind(doc: &Doc, id: Id, path: &str) -> Result<MatchKind, String> {
    Ok(match enum_text(doc, id, path)?.as_deref() {
        None => MatchKind::Unset,
        Some("regex") => MatchKind::Regex,
        Some("glob" | "") => MatchKind::Glob,
        Some(other) => {
            return Err(format!(
                "line {}: {path}: invalid match type {other:?} (glob or regex)",
                doc.line(id)
            ))
        }
    })
}

fn action_kind(doc: &Doc, id: Id, path: &str) -> Result<ActionKind, String> {
    Ok(match enum_text(doc, id, path)?.as_deref() {
        None => ActionKind::Unset,
        Some("drop") => ActionKind::Drop,
        Some("map" | "") => ActionKind::Map,
        Some(other) => {
            return Err(format!("line {}: {path}: invalid action type {other:?} (map or drop)", doc.line(id)))
        }
    })
}

fn metric_class(doc: &Doc, id: Id, path: &str) -> Result<Option<MetricClass>, String> {
    Ok(match enum_text(doc, id, path)?.as_deref() {
        None => None,
        Some("counter") => Some(MetricClass::Counter),
        Some("gauge") => Some(MetricClass::Gauge),
        Some("observer") => Some(MetricClass::Observer),
        Some(other) => {
            return Err(format!(
                "line {}: {path}: invalid metric type '{other}' (counter, gauge or observer)",
                doc.line(id)
            ))
        }
    })
}

/// `scale` (Go's `MaybeFloat64`): `~` leaves it unset; anything else sets
/// it, `Null` to zero.
fn scale(doc: &Doc, id: Id, path: &str) -> Result<Option<f64>, String> {
    if doc.is_absent(id) {
        return Ok(None);
    }
    doc.f64(id, path).map(Some)
}
