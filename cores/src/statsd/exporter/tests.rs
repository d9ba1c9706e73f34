use super::*;
use crate::statsd::parse::{parse_line, Line};
use crate::statsd::table::{canonical_key, Table};

/// A table and an exporter fed by hand: `lines` go in, then a flush at
/// `ts` feeds the exporter.
struct Rig {
    table: Table,
    exporter: Exporter,
    stats: AggregateStats,
}

impl Rig {
    fn new(mapping: &str) -> Rig {
        let mapper = Mapper::from_yaml(mapping).expect("mapping");
        let mut table = Table::new(10_000, 100);
        table.set_exact(1000, 1 << 20);
        Rig { table, exporter: Exporter::new(Arc::new(mapper), 10_000), stats: AggregateStats::default() }
    }

    fn interval(&mut self, lines: &str, ts: u64) -> &mut Self {
        let mut key = Vec::new();
        for l in lines.lines().filter(|l| !l.is_empty()) {
            let Ok(Line::Metric(m)) = parse_line(l.as_bytes(), 1024) else { panic!("{l}") };
            canonical_key(&m, &mut key);
            self.table.apply(&key, &m).expect("room");
        }
        let Rig { table, exporter, stats } = self;
        exporter.begin_flush(ts, stats);
        table.flush_keys(0..crate::statsd::table::PARTS, |key, view, v, fresh| {
            exporter.observe(key, view, v, fresh, stats)
        });
        self
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot::merge(vec![self.exporter.snapshot()])
    }

    /// The value of the series `name{labels}` (a counter's or gauge's).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let snap = self.snapshot();
        let f = snap.families.iter().find(|f| f.name == name)?;
        let s = f.series.iter().find(|s| same_labels(&s.labels, labels))?;
        match s.value {
            SnapValue::Counter(v) | SnapValue::Gauge(v) => Some(v),
            _ => None,
        }
    }
}

fn same_labels(have: &[(String, String)], want: &[(&str, &str)]) -> bool {
    have.len() == want.len() && want.iter().all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
}

/// The README's glob example, then mappings of each kind.
const DISPATCHER: &str = concat!(
    include_str!("../../../tests/data/readme_globs.yml"),
    r#"- match: "debug.*"
  action: drop
  name: "dropped"
- match: "rpc.*"
  observer_type: histogram
  histogram_options:
    buckets: [0.01, 0.05, 0.1]
  name: "rpc_duration_seconds"
  labels:
    method: "$1"
- match: "api.latency"
  observer_type: summary
  summary_options:
    quantiles:
      - quantile: 0.5
        error: 0.05
      - quantile: 0.9
        error: 0.01
    max_age: 30s
    age_buckets: 3
  name: "api_latency_seconds"
- match: "short.*"
  ttl: 20s
  name: "short_lived"
  labels:
    which: "$1"
"#
);

#[test]
fn counters_add_up_across_intervals_with_labels_from_the_mapping_and_the_tags() {
    let mut r = Rig::new(DISPATCHER);
    r.interval("test.dispatcher.FooProcessor.send.success:3|c\ntest.dispatcher.FooProcessor.send.success:2|c|#region:eu", 10);
    r.interval("test.dispatcher.FooProcessor.send.success:4|c", 20);
    let l = [
        ("processor", "FooProcessor"),
        ("action", "send"),
        ("outcome", "success"),
        ("job", "test_dispatcher"),
    ];
    assert_eq!(r.value("dispatcher_events_total", &l), Some(7.0));
    let mut tagged = l.to_vec();
    tagged.push(("region", "eu"));
    assert_eq!(r.value("dispatcher_events_total", &tagged), Some(2.0));
    assert_eq!(r.value("signup_events_total", &[]), None, "nothing sent there yet");
    r.interval("foo_product.signup.facebook.failure:1|c", 30);
    let want = [("provider", "facebook"), ("job", "foo_product_server"), ("outcome", "failure")];
    assert_eq!(r.value("signup_events_total", &want), Some(1.0));
}

#[test]
fn unmapped_names_are_escaped_and_counted() {
    let mut r = Rig::new("mappings: []");
    r.interval("web.hits-per/sec:5|c\n3xx.count:1|g", 10);
    assert_eq!(r.value("web_hits_per_sec", &[]), Some(5.0));
    assert_eq!(r.value("_3xx_count", &[]), Some(1.0));
    assert_eq!(r.stats.prom_unmapped, 2);
}

#[test]
fn gauges_take_the_interval_value_and_an_idle_key_neither_moves_nor_refreshes() {
    let mut r = Rig::new("mappings: []");
    r.interval("temp:20|g\ntemp:+5|g", 10);
    assert_eq!(r.value("temp", &[]), Some(25.0));
    r.interval("temp:-1|g", 20);
    assert_eq!(r.value("temp", &[]), Some(24.0));
    r.interval("", 30);
    let snap = r.snapshot();
    let updated = snap.families[0].series[0].updated;
    assert_eq!(updated, 20, "an idle interval is not an update");
}

#[test]
fn timers_are_observed_in_seconds_into_the_mapping_histogram() {
    let mut r = Rig::new(DISPATCHER);
    let lines: String = [5, 20, 20, 70, 300].iter().map(|ms| format!("rpc.get:{ms}|ms\n")).collect();
    r.interval(&lines, 10);
    r.interval("rpc.get:1|ms\nrpc.get:200|h", 20);
    let snap = r.snapshot();
    let f = snap.families.iter().find(|f| f.name == "rpc_duration_seconds").expect("family");
    assert_eq!(f.kind, FamilyKind::Histogram(vec![0.01, 0.05, 0.1]));
    let s = &f.series[0];
    assert_eq!(s.labels, [("method".to_string(), "get".to_string())]);
    // 5 ms and 1 ms under 0.01 s; 20, 20 under 0.05; 70 under 0.1; 300
    // ms over; and `200|h` is 200 (not milliseconds): over.
    let SnapValue::Histogram { counts, sum } = &s.value else { panic!("{s:?}") };
    assert_eq!(counts, &[2.0, 2.0, 1.0, 2.0]);
    assert!((sum - (0.415 + 0.001 + 200.0)).abs() < 1e-9, "{sum}");
}

#[test]
fn a_summary_reports_quantiles_over_its_window() {
    let mut r = Rig::new(DISPATCHER);
    let lines: String = (1..=100).map(|ms| format!("api.latency:{ms}|ms\n")).collect();
    r.interval(&lines, 10);
    let snap = r.snapshot();
    let f = snap.families.iter().find(|f| f.name == "api_latency_seconds").expect("family");
    let s = &f.series[0];
    let q = s.value.quantiles(&[0.5, 0.9]);
    assert!((q[0].1 - 0.050).abs() <= 0.050 * 0.011, "{q:?}");
    assert!((q[1].1 - 0.090).abs() <= 0.090 * 0.011, "{q:?}");
    let SnapValue::Summary { sum, count, .. } = s.value else { panic!() };
    assert_eq!(count, 100.0);
    assert!((sum - 5.050).abs() < 1e-9);
    // 30 s later the window has moved past those samples: the quantiles
    // are NaN, the sum and count stay.
    r.interval("api.latency:1000|ms", 45);
    let q = r.snapshot().families[0].series[0].value.quantiles(&[0.5]);
    assert_eq!(q[0].1, 1.0, "only the newest sample is in the window");
    r.interval("", 100);
    let snap = r.snapshot();
    let s = &snap.families[0].series[0];
    assert!(s.value.quantiles(&[0.5])[0].1.is_nan());
    assert!(matches!(s.value, SnapValue::Summary { count, .. } if count == 101.0));
}

#[test]
fn drops_conflicts_and_negative_counters_are_counted_not_shown() {
    let mut r = Rig::new(DISPATCHER);
    r.interval("debug.thing:1|c\nclash:1|c", 10);
    r.interval("clash:1|g\nneg:-3|c", 20);
    assert_eq!(r.stats.prom_mapping_drops, 1);
    assert_eq!(r.stats.prom_conflicts, 1, "a gauge under a counter's name");
    assert_eq!(r.stats.prom_errors, 1, "a negative counter sum");
    assert_eq!(r.value("clash", &[]), Some(1.0));
    assert!(r.snapshot().families.iter().all(|f| f.name != "dropped" && f.name != "neg"));
}

#[test]
fn a_histogram_name_blocks_its_sample_names() {
    let mut r = Rig::new(DISPATCHER);
    r.interval("rpc.get:1|ms", 10);
    r.interval("rpc_duration_seconds_count:1|c\nrpc_duration_seconds_bucket:1|g", 20);
    assert_eq!(r.stats.prom_conflicts, 2);
}

#[test]
fn series_expire_after_their_ttl_and_come_back_from_zero() {
    let mut r = Rig::new(DISPATCHER);
    r.interval("short.a:2|c\nlong:1|c", 10);
    r.interval("", 30);
    assert_eq!(r.value("short_lived", &[("which", "a")]), Some(2.0), "20 s after: still within the ttl");
    r.interval("", 40);
    assert_eq!(r.value("short_lived", &[("which", "a")]), None, "30 s after: gone");
    assert_eq!(r.value("long", &[]), Some(1.0), "no ttl: kept");
    assert_eq!(r.stats.prom_series_expired, 1);
    r.interval("short.a:1|c", 50);
    assert_eq!(r.value("short_lived", &[("which", "a")]), Some(1.0));
}

#[test]
fn series_are_bounded() {
    let mut r = Rig::new("mappings: []");
    r.exporter.reconfigure(r.exporter.mapper.clone(), 3);
    let lines: String = (0..5).map(|i| format!("k{i}:1|c\n")).collect();
    r.interval(&lines, 10);
    assert_eq!(r.exporter.series.len(), 3);
    assert_eq!(r.stats.prom_series_refused, 2);
    assert_eq!(r.stats.prom_series, 3);
}

#[test]
fn a_reload_maps_keys_again() {
    let mut r = Rig::new("mappings: []");
    r.interval("a.b:1|c", 10);
    let renamed =
        Mapper::from_yaml("mappings:\n- match: \"a.*\"\n  name: \"renamed\"\n  labels:\n    part: \"$1\"\n")
            .expect("mapping");
    r.exporter.reconfigure(Arc::new(renamed), 10_000);
    r.interval("a.b:1|c", 20);
    assert_eq!(r.value("a_b", &[]), Some(1.0));
    assert_eq!(r.value("renamed", &[("part", "b")]), Some(1.0));
}

#[test]
fn shards_snapshots_merge_by_series() {
    let mapping =
        "mappings:\n- match: \"*.req\"\n  name: \"req_total\"\n- match: \"*.temp\"\n  name: \"temp\"\n";
    let mut a = Rig::new(mapping);
    let mut b = Rig::new(mapping);
    a.interval("x.req:2|c\nx.temp:1|g", 10);
    b.interval("y.req:3|c", 10);
    b.interval("y.temp:7|g", 20);
    let merged = Snapshot::merge(vec![a.exporter.snapshot(), b.exporter.snapshot()]);
    let value = |name: &str| {
        let f = merged.families.iter().find(|f| f.name == name).expect(name);
        assert_eq!(f.series.len(), 1);
        match f.series[0].value {
            SnapValue::Counter(v) | SnapValue::Gauge(v) => v,
            _ => f64::NAN,
        }
    };
    assert_eq!(value("req_total"), 5.0, "counters add");
    assert_eq!(value("temp"), 7.0, "the newer gauge wins");
    let names: Vec<&str> = merged.families.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["req_total", "temp"], "sorted");
}

/// Tags become labels by their escaped key; a tag without a value (or an
/// empty value) is left out and counted; the mapping's labels win
/// over a tag of the same name unless `honor_labels`.
#[test]
fn tags_become_labels_and_the_mapping_wins_unless_it_honors_them() {
    let mapping = "mappings:\n- match: \"a.*\"\n  name: \"a_total\"\n  labels:\n    job: \"$1\"\n\
                   - match: \"h.*\"\n  name: \"h_total\"\n  honor_labels: true\n  labels:\n    job: \"$1\"\n";
    let mut r = Rig::new(mapping);
    r.interval("a.x:1|c|#job:tag,bare,nokey:,my-tag:v\nh.x:1|c|#job:tag", 10);
    assert_eq!(r.value("a_total", &[("job", "x"), ("my_tag", "v")]), Some(1.0), "{:?}", r.snapshot());
    assert_eq!(r.value("h_total", &[("job", "tag")]), Some(1.0), "honor_labels keeps the tag's");
    assert_eq!(r.stats.prom_errors, 2, "bare and nokey: are left out and counted");
}
