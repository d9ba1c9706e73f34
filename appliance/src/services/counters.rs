//! Writing counter sets (declared once with `cores::counter_set!`) into a
//! Prometheus exposition: every field becomes a sample of its family, with
//! the caller's labels and the field's own.

use cores::counters::{Field, Measure};
use ops::metrics::{Exposition, Kind, Labels};

/// The exposition kind of a measure.
fn kind(m: Measure) -> Kind {
    match m {
        Measure::Counter => Kind::Counter,
        Measure::Gauge | Measure::Flag | Measure::Newest => Kind::Gauge,
    }
}

/// One row of a set: the labels that tell it apart (`shard="0"`,
/// `upstream="a"`) and its values, in [`Field`] order.
pub(crate) type Row<'a> = (Vec<(&'a str, &'a str)>, Vec<u64>);

/// Writes every field of a set for each row, labelled `labels`, then the
/// field's own label, then the row's. Families come in declaration order,
/// each with all its rows.
pub(crate) fn rows(e: &mut Exposition, fields: &[Field], labels: Labels<'_>, rows: &[Row<'_>]) {
    for (i, f) in fields.iter().enumerate() {
        e.family(f.family, kind(f.measure), f.help);
        for (row, values) in rows {
            let all: Vec<(&str, &str)> =
                labels.iter().copied().chain(f.label).chain(row.iter().copied()).collect();
            e.sample(f.family, &all, values.get(i).copied().unwrap_or(0) as f64);
        }
    }
}

/// A set's counters as a JSON object, by field name (for `/status`).
pub(crate) fn as_json(fields: &[Field], values: &[u64]) -> serde_json::Value {
    let map = fields.iter().zip(values).map(|(f, v)| (f.name.to_owned(), serde_json::json!(v)));
    serde_json::Value::Object(map.collect())
}

/// The upper bound of the bucket holding quantile `q` of a histogram with
/// `bounds` (ascending) and `counts` (one per bound, then the overflow);
/// `None` when empty or when it falls in the overflow.
pub(crate) fn bucket_quantile(bounds: &[u64], counts: &[u64], q: f64) -> Option<u64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (bound, n) in bounds.iter().zip(counts) {
        seen += n;
        if seen >= rank {
            return Some(*bound);
        }
    }
    None
}

/// Writes every field of a set once per shard (`shard="i"`, the set's
/// values of shard i) and for their total (`shard="all"`, merged as each
/// field's measure says), labelled as [`rows`] does.
pub(crate) fn per_shard(e: &mut Exposition, fields: &[Field], labels: Labels<'_>, per_shard: &[Vec<u64>]) {
    let mut total = vec![0u64; fields.len()];
    for values in per_shard {
        for ((t, v), f) in total.iter_mut().zip(values).zip(fields) {
            f.measure.merge(t, *v);
        }
    }
    let ids: Vec<String> = (0..per_shard.len()).map(|i| i.to_string()).collect();
    let shards = ids.iter().map(String::as_str).chain(["all"]);
    let all: Vec<Row<'_>> = shards
        .zip(per_shard.iter().chain([&total]))
        .map(|(id, v)| (vec![("shard", id)], v.clone()))
        .collect();
    rows(e, fields, labels, &all);
}

#[cfg(test)]
mod tests {
    use super::*;

    cores::counter_set! {
        /// A set to write.
        pub struct Demo {
            ok: Counter("t_results_total", result = "ok") "Results.",
            failed: Counter("t_results_total", result = "failed") "Results.",
            up: Flag("t_up") "Up.",
        }
    }

    #[test]
    fn bucket_quantiles_are_upper_bounds() {
        let bounds = [10, 100, 1000];
        assert_eq!(bucket_quantile(&bounds, &[0, 0, 0, 0], 0.5), None);
        assert_eq!(bucket_quantile(&bounds, &[5, 4, 1, 0], 0.5), Some(10));
        assert_eq!(bucket_quantile(&bounds, &[5, 4, 1, 0], 0.9), Some(100));
        assert_eq!(bucket_quantile(&bounds, &[5, 4, 1, 0], 0.99), Some(1000));
        assert_eq!(bucket_quantile(&bounds, &[0, 0, 0, 3], 0.5), None, "over every bound");
        let json = as_json(Demo::FIELDS, &[1, 2, 1]);
        assert_eq!(json["failed"], 2);
    }

    #[test]
    fn per_shard_writes_each_field_in_its_family_with_a_total() {
        let mut e = Exposition::new();
        let shards = [Demo { ok: 1, up: 1, ..Default::default() }, Demo { ok: 2, failed: 3, up: 0 }];
        let values: Vec<Vec<u64>> = shards.iter().map(Demo::values).collect();
        per_shard(&mut e, Demo::FIELDS, &[("service", "s")], &values);
        let text = e.finish();
        assert_eq!(text.matches("# TYPE t_results_total counter").count(), 1, "{text}");
        assert!(text.contains("# TYPE t_up gauge"), "{text}");
        for want in [
            "t_results_total{service=\"s\",result=\"ok\",shard=\"0\"} 1\n",
            "t_results_total{service=\"s\",result=\"ok\",shard=\"all\"} 3\n",
            "t_results_total{service=\"s\",result=\"failed\",shard=\"1\"} 3\n",
            "t_up{service=\"s\",shard=\"all\"} 1\n",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        let results = text.lines().filter(|l| l.starts_with("t_results_total")).count();
        assert_eq!(results, 6, "two fields of one family, three rows each: {text}");
    }
}
