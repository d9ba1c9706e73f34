//! Test vectors: the examples of statsd_exporter's README ("Metric Mapping
//! and Configuration" onwards) and the cases of `pkg/mapper/mapper_test.go`,
//! restated as data, then the Go behaviours found reading the source.

use std::time::Duration;

use super::*;
use MetricClass::{Counter, Gauge, Observer as Timer};

fn load(yaml: &str) -> Mapper {
    Mapper::from_yaml(yaml).unwrap_or_else(|e| panic!("does not load: {e}\n{yaml}"))
}

/// What a name should become.
#[derive(Debug)]
enum Want {
    Drop,
    /// Not matched: the escaped name.
    Unmapped(&'static str),
    /// Matched: name and labels in file order.
    Named(&'static str, &'static [(&'static str, &'static str)]),
}
use Want::{Drop as Dropped, Named, Unmapped};

type Case = (&'static str, MetricClass, Want);

fn check(yaml: &str, cases: &[Case]) {
    let m = load(yaml);
    for (name, class, want) in cases {
        let got = m.map(name, *class);
        let ok = match (&got, want) {
            (Outcome::Drop, Dropped) => true,
            (Outcome::Map(g), Unmapped(n)) => !g.matched && g.name == *n && g.labels.is_empty(),
            (Outcome::Map(g), Named(n, labels)) => {
                let labels: Vec<(String, String)> =
                    labels.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect();
                g.matched && g.name == *n && g.labels == labels
            }
            _ => false,
        };
        assert!(ok, "{name:?} as {class:?}: got {got:?}, want {want:?}\n{yaml}");
    }
}

fn mapped<'a>(m: &'a Mapper, name: &str, class: MetricClass) -> Mapped<'a> {
    match m.map(name, class) {
        Outcome::Map(got) => got,
        Outcome::Drop => panic!("{name} dropped"),
    }
}

const README_GLOBS: &str = include_str!("../../../tests/data/readme_globs.yml");

#[test]
fn readme_glob_matching() {
    check(
        README_GLOBS,
        &[
            (
                "test.dispatcher.FooProcessor.send.success",
                Counter,
                Named(
                    "dispatcher_events_total",
                    &[
                        ("processor", "FooProcessor"),
                        ("action", "send"),
                        ("outcome", "success"),
                        ("job", "test_dispatcher"),
                    ],
                ),
            ),
            (
                "foo_product.signup.facebook.failure",
                Counter,
                Named(
                    "signup_events_total",
                    &[("provider", "facebook"), ("outcome", "failure"), ("job", "foo_product_server")],
                ),
            ),
            ("test.web-server.foo.bar", Counter, Unmapped("test_web_server_foo_bar")),
        ],
    );
    check(
        "mappings:\n- match: \"test.*.*.counter\"\n  name: \"${2}_total\"\n  labels:\n    provider: \"$1\"\n",
        &[("test.aws.requests.counter", Counter, Named("requests_total", &[("provider", "aws")]))],
    );
}

#[test]
fn readme_regex_matching() {
    let yaml = r#"
mappings:
- match: "test\\.(\\w+)\\.(\\w+)\\.counter"
  match_type: regex
  name: "${2}_total"
  labels:
    provider: "$1"
- match: "(.*)\\.(.*)--(.*)\\.status\\.(.*)\\.count"
  match_type: regex
  name: "request_total"
  labels:
    hostname: "$1"
    exec: "$2"
    protocol: "$3"
    code: "$4"
"#;
    check(
        yaml,
        &[
            ("test.aws.requests.counter", Counter, Named("requests_total", &[("provider", "aws")])),
            (
                "web1.nginx--http.status.200.count",
                Counter,
                Named(
                    "request_total",
                    &[("hostname", "web1"), ("exec", "nginx"), ("protocol", "http"), ("code", "200")],
                ),
            ),
        ],
    );
    // The README's own warning: `\w` unescaped in a double-quoted YAML
    // string (and its first regex example's `\.`) is a YAML error.
    for bad in [
        "mappings:\n- match: \"test\\\\.(\\w+)\\\\.(\\w+)\\\\.counter\"\n  match_type: regex\n  name: \"${2}_total\"\n",
        "mappings:\n- match: \"(.*)\\\\.(.*)--(.*)\\\\.status\\.(.*)\\\\.count\"\n  match_type: regex\n  name: x_total\n",
    ] {
        let err = Mapper::from_yaml(bad).expect_err("bad escape");
        assert!(err.starts_with("yaml: line 2:"), "{err}");
    }
    // Special match group 0: the whole name, escaped as a name, raw as a label.
    check(
        "mappings:\n- match: \".+\"\n  match_type: regex\n  name: \"$0\"\n  labels:\n    statsd_metric_name: \"$0\"\n",
        &[("my.statsd_counter", Counter, Named("my_statsd_counter", &[("statsd_metric_name", "my.statsd_counter")]))],
    );
}

#[test]
fn readme_help_honor_labels_ttl_scale() {
    let m = load(
        r#"
mappings:
- match: "http.request.*"
  help: "Total number of http requests"
  name: "http_requests_total"
  labels:
    code: "$1"
- match: foo.latency_ms
  name: foo_latency_seconds
  scale: 0.001
- match: bar.processed_kb
  name: bar_processed_bytes
  scale: 1024
- match: baz.latency_us
  name: baz_latency_seconds
  scale: 1e-6
- match: ttl.*
  name: with_ttl
  ttl: 1m20s
  honor_labels: true
  labels:
    site: "$1"
"#,
    );
    let got = mapped(&m, "http.request.200", Counter);
    assert_eq!(
        (got.help, got.labels.clone()),
        (Some("Total number of http requests"), vec![("code".into(), "200".into())])
    );
    assert!(!got.honor_labels && got.ttl == Duration::ZERO && got.scale.is_none());
    assert_eq!(mapped(&m, "foo.latency_ms", Timer).scale, Some(0.001));
    assert_eq!(mapped(&m, "bar.processed_kb", Counter).scale, Some(1024.0));
    assert_eq!(mapped(&m, "baz.latency_us", Timer).scale, Some(1e-6));
    let got = mapped(&m, "ttl.a", Gauge);
    assert_eq!((got.ttl, got.honor_labels, got.help), (Duration::from_secs(80), true, None));
    let unmatched = mapped(&m, "other", Counter);
    assert_eq!((unmatched.matched, unmatched.ttl, unmatched.scale), (false, Duration::ZERO, None));
}

#[test]
fn readme_observers() {
    let m = load(
        r#"
mappings:
- match: "test.timing.*.*.*"
  observer_type: summary
  name: "my_timer"
  labels:
    provider: "$2"
    outcome: "$3"
    job: "${1}_server"
  summary_options:
    quantiles:
      - quantile: 0.99
        error: 0.001
      - quantile: 0.95
        error: 0.01
      - quantile: 0.9
        error: 0.05
      - quantile: 0.5
        error: 0.005
    max_age: 30s
    age_buckets: 3
    buf_cap: 1000
- match: "test.histo.*.*.*"
  observer_type: histogram
  histogram_options:
    buckets: [ 0.01, 0.025, 0.05, 0.1 ]
    native_histogram_bucket_factor: 1.1
    native_histogram_max_buckets: 256
  name: "my_histo"
  labels:
    provider: "$2"
"#,
    );
    let got = mapped(&m, "test.timing.a.b.c", Timer);
    assert_eq!(
        got.labels,
        [("provider".into(), "b".into()), ("outcome".into(), "c".into()), ("job".into(), "a_server".into())]
    );
    assert_eq!(
        *got.observer,
        Observer::Summary {
            quantiles: vec![(0.5, 0.005), (0.9, 0.05), (0.95, 0.01), (0.99, 0.001)],
            max_age: Duration::from_secs(30),
            age_buckets: 3,
        }
    );
    let got = mapped(&m, "test.histo.a.b.c", Timer);
    assert_eq!(*got.observer, Observer::Histogram { buckets: vec![0.01, 0.025, 0.05, 0.1] });
    // Unmatched: the defaults (summary, default quantiles, 10 m, 5 buckets).
    assert_eq!(mapped(&m, "x", Timer).observer, Mapper::empty().map("x", Timer).observer());
}

impl Outcome<'_> {
    fn observer(&self) -> &Observer {
        match self {
            Outcome::Map(m) => m.observer,
            Outcome::Drop => panic!("dropped"),
        }
    }
}

#[test]
fn readme_drop_metric_type_and_ordering() {
    check(
        r#"
mappings:
# This metric would match as normal.
- match: "test.timing.*.*.*"
  name: "my_timer"
  labels:
    provider: "$2"
    outcome: "$3"
    job: "${1}_server"
# Any metric not matched will be dropped because "." matches all metrics.
- match: "."
  match_type: regex
  action: drop
  name: "dropped"
"#,
        &[
            (
                "test.timing.a.b.c",
                Timer,
                Named("my_timer", &[("provider", "b"), ("outcome", "c"), ("job", "a_server")]),
            ),
            ("anything.else", Counter, Dropped),
        ],
    );
    check(
        "mappings:\n- match: \"test.foo.*\"\n  name: \"test_foo\"\n  match_metric_type: counter\n  labels:\n    provider: \"$1\"\n",
        &[
            ("test.foo.aws", Counter, Named("test_foo", &[("provider", "aws")])),
            ("test.foo.aws", Gauge, Unmapped("test_foo_aws")),
            ("test.foo.aws", Timer, Unmapped("test_foo_aws")),
        ],
    );
    // "List more specific matches before wildcards": each line wins its names.
    let ordered = "mappings:\n- {match: a.b.c, name: abc}\n- {match: a.b.*, name: ab_}\n- {match: a.*.d, name: a_d}\n- {match: a.*.*, name: a__}\n";
    let cases: &[Case] = &[
        ("a.b.c", Counter, Named("abc", &[])),
        ("a.b.d", Counter, Named("ab_", &[])),
        ("a.x.d", Counter, Named("a_d", &[])),
        ("a.x.y", Counter, Named("a__", &[])),
    ];
    check(ordered, cases);
    // "you can disable mapping ordering altogether": same result here.
    check(&format!("defaults:\n  glob_disable_ordering: true\n{ordered}"), cases);
}

/// `mapper_test.go`'s scenarios that load, as (what, file, cases).
const GO_SCENARIOS: &[(&str, &str, &[Case])] = &[
    (
        "several mappings, twelve captures, a template past the captures",
        r#"---
mappings:
- match: test.dispatcher.*.*.*
  name: "dispatch_events"
  labels: {processor: "$1", action: "$2", result: "$3", job: "test_dispatcher"}
- match: test.my-dispatch-host01.name.dispatcher.*.*.*
  name: "host_dispatch_events"
  labels: {processor: "$1", action: "$2", result: "$3", job: "test_dispatcher"}
- match: request_time.*.*.*.*.*.*.*.*.*.*.*.*
  name: "tyk_http_request"
  labels:
    method_and_path: "${1}"
    response_code: "${2}"
    apikey: "${3}"
    apiversion: "${4}"
    apiname: "${5}"
    apiid: "${6}"
    ipv4_t1: "${7}"
    ipv4_t2: "${8}"
    ipv4_t3: "${9}"
    ipv4_t4: "${10}"
    orgid: "${11}"
    oauthid: "${12}"
- match: "*.*"
  name: "catchall"
  labels: {first: "$1", second: "$2", third: "$3", job: "$1-$2-$3"}
- match: (.*)\.(.*)-(.*)\.(.*)
  match_type: regex
  name: "proxy_requests_total"
  labels: {job: "$1", protocol: "$2", endpoint: "$3", result: "$4"}
"#,
        &[
            (
                "test.dispatcher.FooProcessor.send.succeeded",
                Counter,
                Named("dispatch_events", &[("processor", "FooProcessor"), ("action", "send"), ("result", "succeeded"), ("job", "test_dispatcher")]),
            ),
            (
                "test.my-dispatch-host01.name.dispatcher.FooProcessor.send.succeeded",
                Counter,
                Named("host_dispatch_events", &[("processor", "FooProcessor"), ("action", "send"), ("result", "succeeded"), ("job", "test_dispatcher")]),
            ),
            (
                "request_time.get/threads/1/posts.200.00000000.nonversioned.discussions.a11bbcdf0ac64ec243658dc64b7100fb.172.20.0.1.12ba97b7eaa1a50001000001.",
                Counter,
                Named(
                    "tyk_http_request",
                    &[
                        ("method_and_path", "get/threads/1/posts"),
                        ("response_code", "200"),
                        ("apikey", "00000000"),
                        ("apiversion", "nonversioned"),
                        ("apiname", "discussions"),
                        ("apiid", "a11bbcdf0ac64ec243658dc64b7100fb"),
                        ("ipv4_t1", "172"),
                        ("ipv4_t2", "20"),
                        ("ipv4_t3", "0"),
                        ("ipv4_t4", "1"),
                        ("orgid", "12ba97b7eaa1a50001000001"),
                        ("oauthid", ""),
                    ],
                ),
            ),
            ("foo.bar", Counter, Named("catchall", &[("first", "foo"), ("second", "bar"), ("third", ""), ("job", "foo-bar-")])),
            ("foo.bar.baz", Counter, Unmapped("foo_bar_baz")),
            (
                "proxy-1.http-goober.success",
                Counter,
                Named("proxy_requests_total", &[("job", "proxy-1"), ("protocol", "http"), ("endpoint", "goober"), ("result", "success")]),
            ),
        ],
    ),
    (
        "backtracking without ordering",
        "defaults:\n  glob_disable_ordering: true\nmappings:\n- match: backtrack.*.bbb\n  name: testb\n  labels: {label: \"${1}_foo\"}\n- match: backtrack.justatest.aaa\n  name: testa\n  labels: {label: \"${1}_foo\"}\n",
        &[
            ("backtrack.good.bbb", Counter, Named("testb", &[("label", "good_foo")])),
            ("backtrack.justatest.bbb", Counter, Named("testb", &[("label", "justatest_foo")])),
            ("backtrack.justatest.aaa", Counter, Named("testa", &[("label", "_foo")])),
        ],
    ),
    (
        "a failed starred rule leaves no captures behind",
        "defaults:\n  glob_disable_ordering: false\nmappings:\n- match: '*.dummy.*'\n  name: metric_one\n  labels: {system: $1, attribute: $2}\n- match: 'full.name.*'\n  name: metric_two\n  labels: {system: static, attribute: $1}\n",
        &[
            ("whatever.dummy.test", Counter, Named("metric_one", &[("system", "whatever"), ("attribute", "test")])),
            ("full.name.anothertest", Counter, Named("metric_two", &[("system", "static"), ("attribute", "anothertest")])),
        ],
    ),
    (
        "super sets without ordering: the most specific wins",
        "defaults:\n  glob_disable_ordering: true\nmappings:\n- match: noorder.*.*\n  name: testa\n  labels: {label: \"${1}_foo\"}\n- match: noorder.*.bbb\n  name: testb\n  labels: {label: \"${1}_foo\"}\n- match: noorder.ccc.bbb\n  name: testc\n  labels: {label: ccc_foo}\n",
        &[
            ("noorder.good.bbb", Counter, Named("testb", &[("label", "good_foo")])),
            ("noorder.ccc.bbb", Counter, Named("testc", &[("label", "ccc_foo")])),
        ],
    ),
    (
        "super sets with ordering: the first wins",
        "defaults:\n  glob_disable_ordering: false\nmappings:\n- match: order.*.*\n  name: testa\n  labels: {label: \"${1}_foo\"}\n- match: order.*.bbb\n  name: testb\n  labels: {label: \"${1}_foo\"}\n",
        &[("order.good.bbb", Counter, Named("testa", &[("label", "good_foo")]))],
    ),
    (
        "$1_foo is one reference, to nothing; ${1}_foo is the capture",
        "mappings:\n- match: test.*\n  name: name\n  labels: {label: \"$1_foo\"}\n- match: best.*\n  name: name\n  labels: {label: \"${1}_foo\"}\n",
        &[
            ("test.a", Counter, Named("name", &[("label", "")])),
            ("best.a", Counter, Named("name", &[("label", "a_foo")])),
        ],
    ),
    (
        "components with and starting with digits, issue 328",
        "mappings:\n- match: test.99.myapp.*\n  name: name\n  labels: {label: \"${1}_foo\"}\n- match: test.99test.myapp.*\n  name: name\n  labels: {label: \"${1}_foo\"}\n- match: kafka.server.FetcherStats.brokerHost.hostname.brokerPort.9092.clientId.ReplicaFetcherThread-0-1.BytesPerSec.1MinuteRate.gauge\n  name: example_name\n",
        &[
            ("test.99.myapp.create", Counter, Named("name", &[("label", "create_foo")])),
            ("test.99test.myapp.create", Counter, Named("name", &[("label", "create_foo")])),
            (
                "kafka.server.FetcherStats.brokerHost.hostname.brokerPort.9092.clientId.ReplicaFetcherThread-0-1.BytesPerSec.1MinuteRate.gauge",
                Counter,
                Named("example_name", &[]),
            ),
        ],
    ),
    (
        "a single component",
        "mappings:\n- match: '*'\n  name: single_segment\n  labels: {label: \"${1}\"}\n",
        &[
            ("test", Counter, Named("single_segment", &[("label", "test")])),
            ("two.parts", Counter, Unmapped("two_parts")),
        ],
    ),
    (
        "dashes in the glob, a capture in the name",
        "---\nmappings:\n- match: \"foo--bar.*\"\n  name: \"foo_bar_${1}\"\n  labels: {}\n",
        &[("foo--bar.count", Counter, Named("foo_bar_count", &[]))],
    ),
    (
        "names built from captures, glob and regex",
        "---\nmappings:\n- match: test1.*.*\n  name: \"$1\"\n  labels: {}\n- match: test2.*.*\n  name: \"${1}_$2\"\n  labels: {}\n- match: test3\\.(\\w+)\\.(\\w+)\n  match_type: regex\n  name: \"${2}_$1\"\n  labels: {}\n",
        &[
            ("test1.total_requests.count", Counter, Named("total_requests", &[])),
            ("test2.total_requests.count", Counter, Named("total_requests_count", &[])),
            ("test3.total_requests.count", Counter, Named("count_total_requests", &[])),
        ],
    ),
    ("no mappings", "", &[("test.a", Counter, Unmapped("test_a"))]),
    (
        "no trailing newline",
        "mappings:\n- match: test.*\n  name: \"name\"\n  labels:\n    label: \"${1}_foo\"",
        &[("test.a", Counter, Named("name", &[("label", "a_foo")]))],
    ),
    (
        "a quoted leading star",
        "mappings:\n- match: \"*.test.*\"\n  name: \"name\"\n  labels:\n    label: \"${2}_foo\"",
        &[("foo.test.a", Counter, Named("name", &[("label", "a_foo")]))],
    ),
    (
        "one glob per metric type",
        "mappings:\n- match: test.foo.*\n  name: test_foo_sum\n  match_metric_type: counter\n- match: test.foo.*\n  name: test_foo_current\n  match_metric_type: gauge\n",
        &[
            ("test.foo.test", Counter, Named("test_foo_sum", &[])),
            ("test.foo.test", Gauge, Named("test_foo_current", &[])),
            ("test.foo.test", Timer, Unmapped("test_foo_test")),
        ],
    ),
    (
        "not matched",
        "mappings:\n- match: foo.*.*\n  observer_type: summary\n  name: foo\n  labels: {}\n",
        &[("test.1.2", Counter, Unmapped("test_1_2"))],
    ),
    (
        "captures around a literal, issue 256",
        "mappings:\n- match: p.*.*.c.*\n  match_type: glob\n  name: issue_256\n  labels: {one: $1, two: $2, three: $3}\n",
        &[("p.one.two.c.three", Counter, Named("issue_256", &[("one", "one"), ("two", "two"), ("three", "three")]))],
    ),
    (
        "a regex drops everything",
        "mappings:\n- match: .\n  match_type: regex\n  name: \"drop\"\n  action: drop",
        &[("test.a", Counter, Dropped), ("abc", Gauge, Dropped)],
    ),
    (
        "a glob before a drop-all regex",
        "mappings:\n- match: web.*\n  name: \"web\"\n  labels:\n    site: \"$1\"\n- match: .\n  match_type: regex\n  name: \"drop\"\n  action: drop",
        &[("test.a", Counter, Dropped), ("web.localhost", Counter, Named("web", &[("site", "localhost")]))],
    ),
    (
        "one glob, many names (issue 273)",
        "mappings:\n- match: aa.bb.*.*\n  name: \"aa_bb_${1}_total\"\n  labels:\n    app: \"$2\"\n",
        &[
            ("aa.bb.aa.myapp", Counter, Named("aa_bb_aa_total", &[("app", "myapp")])),
            ("aa.bb.bb.myapp", Counter, Named("aa_bb_bb_total", &[("app", "myapp")])),
            ("aa.bb.cc.myapp", Counter, Named("aa_bb_cc_total", &[("app", "myapp")])),
            ("aa.bb.dd.myapp", Counter, Named("aa_bb_dd_total", &[("app", "myapp")])),
        ],
    ),
];

#[test]
fn go_scenarios() {
    for (what, yaml, cases) in GO_SCENARIOS {
        assert!(Mapper::from_yaml(yaml).is_ok(), "{what}");
        check(yaml, cases);
    }
    // Loads twice in a row give the same answers (Go reuses its cache).
    let m = load(GO_SCENARIOS[0].1);
    assert_eq!(m.map("foo.bar", Counter), m.clone().map("foo.bar", Counter));
}

/// Files statsd_exporter refuses, and a piece of the message.
const BAD_FILES: &[(&str, &str)] = &[
    ("mappings:\n- match: bad!!metric-line.*.*\n  name: foo\n", "invalid match: bad!!metric-line.*.*"),
    ("mappings:\n- match: test.*.*\n  name: \"0foo\"\n", "metric name '0foo' doesn't match regex"),
    ("mappings:\n- match: test.*.*\n  labels:\n    this: \"$1\"\n", "metric mapping didn't set a metric name"),
    ("mappings:\n- match: a.*\n  name: \"\"\n  action: drop\n", "mapping 0 (match \"a.*\"): metric mapping didn't set a metric name"),
    ("mappings:\n- match: *.test.*\n  name: name\n", "yaml: line 2:"),
    ("mappings:\n- match: *\\.foo\n  match_type: regex\n  labels: {bar: foo}\n", "yaml: line 2:"),
    ("mappings:\n- match: test.*.*\n  observer_type: wrong\n  name: foo\n", "invalid observer type 'wrong'"),
    (
        "mappings:\n- match: test.*.*\n  observer_type: summary\n  name: foo\n  quantiles:\n    - quantile: 0.42\n      error: 0.04\n",
        "line 5: mappings[0]: field quantiles not found in type mapper.MetricMapping",
    ),
    ("mappings:\n- match: test.*.*\n  match_metric_type: wrong\n  name: foo\n", "invalid metric type 'wrong'"),
    ("mappings:\n- match: \"*\\\\.foo\"\n  match_type: regex\n  name: foo\n", "invalid regex *\\.foo in mapping"),
    ("mappings:\n- match: test.*.*\n  name: foo\n  action: xyz\n", "invalid action type \"xyz\""),
    ("mappings:\n- match: a.*\n  name: foo\n  timer_type: histogram\n", "field timer_type not found in type mapper.MetricMapping"),
    ("defaults:\n  timer_type: histogram\n", "field timer_type not found in type mapper.MapperConfigDefaults"),
    ("mappings:\n- match: a.*\n  name: foo\n  buckets: [1, 2]\n", "field buckets not found"),
    ("mapping:\n- match: a.*\n  name: foo\n", "field mapping not found in type mapper.MetricMapper"),
    ("mappings:\n- match: a.*\n  name: foo\n  name: bar\n", "line 4: mappings[0]: field name already set"),
    ("mappings:\n- match: a.*\n  name: foo\n  labels: {ab: x, ab: y}\n", "key \"ab\" already set in map"),
    ("mappings:\n- match: a.*\n  name: foo\n  labels: {a: x}\n", "invalid label key: a"),
    ("mappings:\n- match: a.*\n  name: foo\n  labels: {1ab: x}\n", "invalid label key: 1ab"),
    ("mappings:\n- match: a.*\n  name: foo\n  match_type: fuzzy\n", "invalid match type \"fuzzy\""),
    ("mappings:\n- match: client_*_x\n  name: foo\n", "invalid match: client_*_x"),
    ("mappings:\n- match: a.*\n  name: \"${name}\"\n", "metric name '${name}' doesn't match"),
    ("mappings:\n- match: a.*\n  name: a.b\n", "metric name 'a.b' doesn't match"),
    ("mappings:\n- match: a.*\n  name: foo\n  ttl: 10\n  scale: x\n", "mappings[0].scale: cannot unmarshal !!str `x` into float64"),
    ("mappings:\n- match: a.*\n  name: foo\n  ttl: 10 s\n", "cannot unmarshal !!str `10 s` into time.Duration"),
    ("mappings:\n- match: a.*\n  name: foo\n  honor_labels: \"true\"\n", "into bool"),
    ("mappings:\n- match: a.*\n  name: foo\n  labels: [a, b]\n", "cannot unmarshal !!seq into prometheus.Labels"),
    ("mappings:\n- match: a.*\n  name: foo\n  summary_options:\n    age_buckets: -1\n", "into uint32"),
    ("mappings: {a: b}\n", "cannot unmarshal !!map into []mapper.MetricMapping"),
    ("just text\n", "cannot unmarshal !!str `just text` into mapper.MetricMapper"),
    (
        "mappings:\n- match: a.*\n  name: foo\n  observer_type: histogram\n  summary_options: {}\n",
        "cannot use histogram observer and summary options at the same time",
    ),
    (
        "defaults:\n  observer_type: histogram\nmappings:\n- match: a.*\n  name: foo\n  summary_options: {max_age: 1m}\n",
        "cannot use histogram observer and summary options at the same time",
    ),
    (
        "mappings:\n- match: a.*\n  name: foo\n  observer_type: summary\n  histogram_options: {buckets: [1]}\n",
        "cannot use summary observer and histogram options at the same time",
    ),
    ("mappings:\n- match: a.*\n  name: foo\n- match: \"\"\n  name: bar\n", "mapping 1 (match \"\"): invalid match: "),
];

#[test]
fn go_refuses() {
    for (yaml, want) in BAD_FILES {
        match Mapper::from_yaml(yaml) {
            Ok(_) => panic!("loads, but Go refuses it:\n{yaml}"),
            Err(e) => assert!(e.contains(want), "error {e:?} lacks {want:?}\n{yaml}"),
        }
    }
    // The mapping's index and match lead validation errors.
    let err = Mapper::from_yaml("mappings:\n- {match: a.*, name: ok}\n- {match: b.*, name: \"0x\"}\n")
        .expect_err("bad");
    assert!(err.starts_with("mapping 1 (match \"b.*\"): metric name '0x'"), "{err}");
}

/// (what, file, the observer of an observer metric `t.x`)
fn observer_cases() -> Vec<(&'static str, &'static str, Observer)> {
    let summary = |quantiles: &[(f64, f64)], max_age_secs: u64, age_buckets: u32| Observer::Summary {
        quantiles: quantiles.to_vec(),
        max_age: Duration::from_secs(max_age_secs),
        age_buckets,
    };
    let default_q: &[(f64, f64)] = &[(0.5, 0.05), (0.9, 0.01), (0.99, 0.001)];
    let mine: &[(f64, f64)] = &[(0.42, 0.04), (0.7, 0.002)];
    let theirs: &[(f64, f64)] = &[(0.9, 0.1), (0.99, 0.01)];
    let histogram = |b: &[f64]| Observer::Histogram { buckets: b.to_vec() };
    vec![
        ("summary with quantiles", "mappings:\n- match: t.*\n  observer_type: summary\n  name: foo\n  summary_options: {quantiles: [{quantile: 0.42, error: 0.04}, {quantile: 0.7, error: 0.002}]}\n", summary(mine, 600, 5)),
        ("summary, nothing given", "mappings:\n- match: t.*\n  observer_type: summary\n  name: foo\n", summary(default_q, 600, 5)),
        ("summary options", "mappings:\n- match: t.*\n  observer_type: summary\n  name: foo\n  summary_options: {quantiles: [{quantile: 0.42, error: 0.04}, {quantile: 0.7, error: 0.002}], max_age: 5m, age_buckets: 2, buf_cap: 1000}\n", summary(mine, 300, 2)),
        ("default summary options", "defaults:\n summary_options: {quantiles: [{quantile: 0.42, error: 0.04}, {quantile: 0.7, error: 0.002}], max_age: 5m, age_buckets: 2, buf_cap: 1000}\nmappings:\n- match: t.*\n  observer_type: summary\n  name: foo\n", summary(mine, 300, 2)),
        ("default summary options, no quantiles", "defaults:\n summary_options: {max_age: 5m, age_buckets: 2, buf_cap: 1000}\nmappings:\n- match: t.*\n  observer_type: summary\n  name: foo\n", summary(default_q, 300, 2)),
        ("mapping overrides defaults", "defaults:\n summary_options: {quantiles: [{quantile: 0.042, error: 0.4}], max_age: 15m, age_buckets: 3}\nmappings:\n- match: t.*\n  observer_type: summary\n  name: foo\n  summary_options: {quantiles: [{quantile: 0.42, error: 0.04}, {quantile: 0.7, error: 0.002}], max_age: 5m, age_buckets: 2}\n", summary(mine, 300, 2)),
        ("quantiles from the mapping, the rest from defaults", "defaults:\n summary_options: {quantiles: [{quantile: 0.9, error: 0.1}, {quantile: 0.99, error: 0.01}], max_age: 15m, age_buckets: 3}\nmappings:\n- match: t.*\n  observer_type: summary\n  name: foo\n  summary_options: {quantiles: [{quantile: 0.42, error: 0.04}, {quantile: 0.7, error: 0.002}]}\n", summary(mine, 900, 3)),
        ("max_age from the mapping, the rest from defaults", "defaults:\n summary_options: {quantiles: [{quantile: 0.9, error: 0.1}, {quantile: 0.99, error: 0.01}], max_age: 15m, age_buckets: 3}\nmappings:\n- match: t.*\n  observer_type: summary\n  name: foo\n  summary_options: {max_age: 5m}\n", summary(theirs, 300, 3)),
        ("no observer type anywhere: the mapping's options as they are", "defaults:\n summary_options: {quantiles: [{quantile: 0.9, error: 0.1}, {quantile: 0.99, error: 0.01}], max_age: 15m, age_buckets: 3}\nmappings:\n- match: t.*\n  name: foo\n  summary_options: {max_age: 5m}\n", summary(theirs, 300, 5)),
        ("no observer type, no options: the defaults'", "defaults:\n summary_options: {max_age: 15m, age_buckets: 3}\nmappings:\n- match: t.*\n  name: foo\n", summary(default_q, 900, 3)),
        ("no observer type, histogram options ignored", "mappings:\n- match: t.*\n  name: foo\n  histogram_options: {buckets: [1]}\n", summary(default_q, 600, 5)),
        ("explicit empty observer type is summary", "defaults:\n  observer_type: histogram\nmappings:\n- match: t.*\n  name: foo\n  observer_type: \"\"\n", summary(default_q, 600, 5)),
        ("histogram buckets", "mappings:\n- match: t.*\n  observer_type: histogram\n  name: foo\n  histogram_options:\n    buckets: [0.1, 1, 10, 100, 1000]\n", histogram(&[0.1, 1.0, 10.0, 100.0, 1000.0])),
        ("default histogram buckets", "defaults:\n  histogram_options:\n    buckets: [0.1, 1, 10, 100, 1000]\nmappings:\n- match: t.*\n  observer_type: histogram\n  name: foo\n", histogram(&[0.1, 1.0, 10.0, 100.0, 1000.0])),
        ("empty default buckets: DefBuckets", "defaults:\n  histogram_options:\n    buckets: []\nmappings:\n- match: t.*\n  observer_type: histogram\n  name: foo\n", histogram(&load::DEFAULT_BUCKETS)),
        ("mapping buckets over default buckets", "defaults:\n  histogram_options:\n    buckets: [0.2, 2, 20, 200, 2000]\nmappings:\n- match: t.*\n  observer_type: histogram\n  name: foo\n  histogram_options:\n    buckets: [0.1, 1, 10, 100, 1000]\n", histogram(&[0.1, 1.0, 10.0, 100.0, 1000.0])),
        ("default observer type histogram", "defaults:\n  observer_type: histogram\n  histogram_options: {buckets: [0.2, 2, 20, 200]}\nmappings:\n- match: t.*\n  name: foo\n", histogram(&[0.2, 2.0, 20.0, 200.0])),
        ("unsorted buckets, +Inf, repeats", "mappings:\n- match: t.*\n  observer_type: histogram\n  name: foo\n  histogram_options: {buckets: [10, 1, .inf, 1, 5]}\n", histogram(&[1.0, 5.0, 10.0])),
        ("repeated quantile: the last error", "mappings:\n- match: t.*\n  observer_type: summary\n  name: foo\n  summary_options: {quantiles: [{quantile: 0.9, error: 0.1}, {quantile: 0.5, error: 0.05}, {quantile: 0.9, error: 0.2}]}\n", summary(&[(0.5, 0.05), (0.9, 0.2)], 600, 5)),
        ("anchors and merge keys", "defaults:\n  summary_options: &opts {max_age: 1m, age_buckets: 4}\nmappings:\n- match: t.*\n  observer_type: summary\n  name: foo\n  summary_options:\n    <<: *opts\n    age_buckets: 2\n", summary(default_q, 60, 2)),
    ]
}

#[test]
fn observer_options_as_go() {
    for (what, yaml, want) in observer_cases() {
        let m = load(yaml);
        assert_eq!(*mapped(&m, "t.x", Timer).observer, want, "{what}");
    }
}

#[test]
fn globs_before_regexes_then_regexes_in_order() {
    check(
        r#"
mappings:
- match: "^a\\.(.*)$"
  match_type: regex
  name: regex_first
- match: "a.*"
  name: glob_second
- match: "foo"
  match_type: regex
  name: unanchored
- match: "^g\\.(\\w+)$"
  match_type: regex
  match_metric_type: gauge
  name: gauges_only
- match: "^g\\.(\\w+)$"
  match_type: regex
  name: "others_$1"
"#,
        &[
            ("a.x", Counter, Named("glob_second", &[])),
            ("a.x.y", Counter, Named("regex_first", &[])),
            ("xfooy", Counter, Named("unanchored", &[])),
            ("g.q", Gauge, Named("gauges_only", &[])),
            ("g.q", Counter, Named("others_q", &[])),
        ],
    );
    // `defaults: match_type: regex` makes every mapping without its own a regex.
    check(
        "defaults:\n  match_type: regex\nmappings:\n- {match: \"^x(\\\\d+)$\", name: \"x_$1\"}\n- {match: \"y.*\", name: y, match_type: glob}\n",
        &[("x12", Counter, Named("x_12", &[])), ("y.z", Counter, Named("y", &[]))],
    );
}

#[test]
fn go_trie_quirks_kept() {
    // A glob that is a prefix of an earlier one never matches (Go attaches
    // a mapping only to a state the glob creates)...
    check(
        "mappings:\n- {match: a.b.c, name: abc}\n- {match: a.b, name: ab}\n",
        &[("a.b.c", Counter, Named("abc", &[])), ("a.b", Counter, Unmapped("a_b"))],
    );
    // ...the other way round both do.
    check(
        "mappings:\n- {match: a.b, name: ab}\n- {match: a.b.c, name: abc}\n",
        &[("a.b.c", Counter, Named("abc", &[])), ("a.b", Counter, Named("ab", &[]))],
    );
    // A repeated glob keeps the first mapping but takes its own rank.
    check(
        "mappings:\n- {match: a.*, name: first}\n- {match: a.b, name: second}\n- {match: a.*, name: third}\n",
        &[("a.b", Counter, Named("second", &[])), ("a.c", Counter, Named("first", &[]))],
    );
    // Per class: a glob with a metric type and the same glob without.
    check(
        "mappings:\n- {match: a.*, name: counters, match_metric_type: counter}\n- {match: a.*, name: all}\n",
        &[("a.q", Counter, Named("counters", &[])), ("a.q", Gauge, Named("all", &[]))],
    );
    // A name component that is literally `*` takes the `*` state as a
    // literal, without a capture: the captures shift.
    check(
        "mappings:\n- {match: a.*.*, name: n, labels: {one: $1, two: $2}}\n",
        &[
            ("a.*.b", Counter, Named("n", &[("one", "b"), ("two", "")])),
            ("a.x.b", Counter, Named("n", &[("one", "x"), ("two", "b")])),
        ],
    );
    // `*` takes empty components; a name made empty stays empty.
    check(
        "mappings:\n- {match: \"*.x\", name: \"$1\", labels: {first: \"${1}\"}}\n",
        &[(".x", Counter, Named("", &[("first", "")])), ("a.x", Counter, Named("a", &[("first", "a")]))],
    );
}

#[test]
fn ttl_rules_as_go() {
    let m = load(
        "defaults:\n  ttl: 1m2s\nmappings:\n- {match: a.*, name: a}\n- {match: b.*, name: b, ttl: 5s}\n- {match: c.*, name: c, ttl: 0s}\n- {match: d.*, name: d, ttl: 60}\n",
    );
    let ttl = |name| mapped(&m, name, Counter).ttl;
    assert_eq!(ttl("a.x"), Duration::from_secs(62));
    assert_eq!(ttl("b.x"), Duration::from_secs(5));
    // A zero TTL cannot opt out of a positive default in Go.
    assert_eq!(ttl("c.x"), Duration::from_secs(62));
    // An integer is nanoseconds (time.Duration in yaml.v2).
    assert_eq!(ttl("d.x"), Duration::from_nanos(60));
    assert_eq!(ttl("unmatched"), Duration::from_secs(62));
    // A negative default: mappings keep theirs, unmatched metrics expire
    // at once (the exporter applies any non-zero default there).
    let m = load("defaults:\n  ttl: -1s\nmappings:\n- {match: a.*, name: a}\n");
    assert_eq!(mapped(&m, "a.x", Counter).ttl, Duration::ZERO);
    assert_eq!(mapped(&m, "other", Counter).ttl, Duration::from_nanos(1));
}

#[test]
fn yaml_as_go_reads_it() {
    let m = load(
        r#"
mappings:
- &base
  match: a.*
  name: a_total
  honor_labels: yes
  labels: {env: prod, code: 200, empty: ~, flag: true}
- <<: *base
  match: b.*
  labels: {svc: $1}
- match: c.*
  name: c
  scale: ~
  observer_type: ~
  action: ~
---
mappings: [this document is never read
"#,
    );
    let a = mapped(&m, "a.x", Counter);
    assert!(a.honor_labels);
    let want: Vec<(String, String)> = [("env", "prod"), ("code", "200"), ("empty", ""), ("flag", "true")]
        .map(|(k, v)| (k.into(), v.into()))
        .into();
    assert_eq!(a.labels, want);
    let b = mapped(&m, "b.y", Counter);
    assert_eq!((b.name.as_str(), b.honor_labels), ("a_total", true));
    assert_eq!(b.labels.last(), Some(&("svc".into(), "y".into())));
    assert_eq!(b.labels.len(), 5);
    assert_eq!(
        mapped(&m, "a.x", Counter).labels.len(),
        4,
        "the anchor's labels are not changed by the merge"
    );
    let c = mapped(&m, "c.z", Timer);
    assert_eq!((c.scale, c.observer), (None, Mapper::empty().map("q", Timer).observer()));
    assert_eq!(m.len(), 3);
}

#[test]
fn empty_and_defaults() {
    let empty = Mapper::empty();
    assert!(empty.is_empty() && Mapper::default().is_empty());
    let got = mapped(&empty, "0day.users-online", Gauge);
    assert_eq!((got.name.as_str(), got.matched, got.help), ("_0day_users_online", false, None));
    let want = Observer::Summary {
        quantiles: vec![(0.5, 0.05), (0.9, 0.01), (0.99, 0.001)],
        max_age: Duration::from_secs(600),
        age_buckets: 5,
    };
    assert_eq!(*got.observer, want);
    for text in ["", "---\n", "~\n", "# nothing\n", "defaults:\nmappings:\n"] {
        let m = load(text);
        assert!(m.is_empty(), "{text:?}");
        assert_eq!(*m.map("x", Timer).observer(), want, "{text:?}");
    }
    let m = load("defaults:\n  observer_type: histogram\n");
    assert_eq!(
        *m.map("x", Timer).observer(),
        Observer::Histogram { buckets: load::DEFAULT_BUCKETS.to_vec() }
    );
}

const MAPPING50: &str = include_str!("../../../tests/data/mapping50.yml");

#[test]
fn fifty_mapping_file() {
    let m = load(MAPPING50);
    assert_eq!(m.len(), 50);
    check(
        MAPPING50,
        &[
            ("debug.foo", Counter, Dropped),
            ("debug.foo.bar", Timer, Dropped),
            ("tmp.anything.at.all", Gauge, Dropped),
            ("cache.x.tmp", Counter, Dropped),
            (
                "http.api.GET.200.requests",
                Counter,
                Named("http_requests_total", &[("service", "api"), ("method", "GET"), ("code", "200")]),
            ),
            ("http.api.GET.200.requests", Gauge, Unmapped("http_api_GET_200_requests")),
            (
                "orders_replica2.lag_ms",
                Gauge,
                Named("db_replica_lag_seconds", &[("database", "orders"), ("replica", "2")]),
            ),
            ("shop.cart.add", Counter, Named("cart_add_total", &[])),
            (
                "legacy.billing.invoices.created",
                Counter,
                Named("legacy_events_total", &[("app", "billing"), ("metric", "invoices.created")]),
            ),
            (
                "jvm.api.gc.G1.time",
                Timer,
                Named("jvm_gc_collection_seconds", &[("service", "api"), ("gc", "G1")]),
            ),
            (
                "jvm.api.threads.blocked",
                Gauge,
                Named("jvm_threads", &[("service", "api"), ("state", "blocked")]),
            ),
            ("jvm.api.threads.blocked", Counter, Unmapped("jvm_api_threads_blocked")),
            (
                "web1.nginx--http.status.200.count",
                Counter,
                Named(
                    "request_total",
                    &[("hostname", "web1"), ("exec", "nginx"), ("protocol", "http"), ("code", "200")],
                ),
            ),
            (
                "k8s.prod.api-7d9.restarts",
                Counter,
                Named("kube_pod_restarts_total", &[("namespace", "prod"), ("pod", "api-7d9")]),
            ),
            (
                "mobile.signup.google.success",
                Counter,
                Named(
                    "signup_events_total",
                    &[("provider", "google"), ("outcome", "success"), ("job", "mobile_server")],
                ),
            ),
            ("unknown.metric", Counter, Unmapped("unknown_metric")),
        ],
    );
    let latency = mapped(&m, "http.api.GET.200.latency", Timer);
    assert_eq!((latency.scale, latency.ttl), (Some(0.001), Duration::from_secs(600)));
    assert!(matches!(latency.observer, Observer::Histogram { buckets } if buckets.len() == 9));
    let query = mapped(&m, "db.orders.query.select.duration", Timer);
    assert_eq!(
        *query.observer,
        Observer::Summary {
            quantiles: vec![(0.5, 0.05), (0.95, 0.01), (0.99, 0.001)],
            max_age: Duration::from_secs(60),
            age_buckets: 3
        }
    );
    let exposure = mapped(&m, "ab.exp1.blue.exposure", Counter);
    assert!(exposure.honor_labels && exposure.labels.len() == 3);
    assert_eq!(mapped(&m, "checkout", Counter).help, None);
    assert_eq!(mapped(&m, "shop.checkout.pay.ok", Counter).help, Some("Checkout funnel events."));
    assert_eq!(mapped(&m, "cron.backup.last_success", Gauge).ttl, Duration::from_secs(600));
    let other = mapped(&m, "unknown.metric", Timer);
    assert!(
        matches!(other.observer, Observer::Summary { max_age, .. } if *max_age == Duration::from_secs(300))
    );
}

/// The glob semantics restated without a trie, for ordering on: among the
/// distinct globs, the one a name reaches is the mapping that first wrote
/// exactly that glob, unless an earlier glob already passed through it
/// (then none); its rank is the last mapping with that glob; the lowest
/// rank among the globs matching the name wins.
fn reference(globs: &[String], name: &str) -> Option<(usize, Vec<String>)> {
    let parts: Vec<&str> = name.split('.').collect();
    let mut best: Option<(usize, usize, Vec<String>)> = None;
    for (i, g) in globs.iter().enumerate() {
        let gp: Vec<&str> = g.split('.').collect();
        let first_through = globs.iter().position(|o| {
            let op: Vec<&str> = o.split('.').collect();
            op.len() >= gp.len() && op[..gp.len()] == gp[..]
        });
        let last_same = globs.iter().rposition(|o| o == g);
        let (Some(owner), Some(rank)) = (first_through, last_same) else { continue };
        let matches = gp.len() == parts.len() && gp.iter().zip(&parts).all(|(g, p)| *g == "*" || g == p);
        if owner != i || !matches {
            continue;
        }
        let caps = gp.iter().zip(&parts).filter(|(g, _)| **g == "*").map(|(_, p)| (*p).to_string()).collect();
        if best.as_ref().is_none_or(|(r, _, _)| rank < *r) {
            best = Some((rank, i, caps));
        }
    }
    best.map(|(_, i, caps)| (i, caps))
}

proptest::proptest! {
    /// Any name, any class: no panic, and a name that only escaping can
    /// produce when nothing matched.
    #[test]
    fn map_never_panics(name in proptest::prop_oneof!["\\PC{0,40}", "[a-z0-9_*.-]{0,30}", "(\\.|a|\\*){0,12}"]) {
        static MAPPERS: std::sync::LazyLock<Vec<Mapper>> = std::sync::LazyLock::new(|| {
            vec![
                load(MAPPING50),
                load(GO_SCENARIOS[0].1),
                load("defaults: {glob_disable_ordering: true}\nmappings:\n- {match: \"*.*.*\", name: a}\n- {match: a.*.b, name: b}\n- {match: \"(.)(.)?\", match_type: regex, name: \"${2}$1x\", labels: {lbl: \"$9${x}\"}}\n"),
            ]
        });
        for m in MAPPERS.iter() {
            for class in [Counter, Gauge, Timer] {
                if let Outcome::Map(got) = m.map(&name, class) {
                    proptest::prop_assert!(got.matched || got.name == escape_metric_name(&name));
                    proptest::prop_assert!(got.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                }
            }
        }
    }

    /// With ordering on, the trie search agrees with the restatement above.
    #[test]
    fn globs_agree_with_the_reference(
        globs in proptest::collection::vec("(a|b|\\*)(\\.(a|b|\\*)){0,2}", 1..7),
        name in "(a|b|c|)(\\.(a|b|c|)){0,3}",
    ) {
        let mut yaml = String::from("mappings:\n");
        for (i, g) in globs.iter().enumerate() {
            yaml.push_str(&format!("- {{match: \"{g}\", name: m{i}, labels: {{c1: \"${{1}}\", c2: \"${{2}}\", c3: \"${{3}}\"}}}}\n"));
        }
        let m = load(&yaml);
        let got = match m.map(&name, Counter) {
            Outcome::Map(g) if g.matched => Some((g.name, g.labels.into_iter().map(|(_, v)| v).collect::<Vec<_>>())),
            _ => None,
        };
        let want = reference(&globs, &name).map(|(i, caps)| {
            let stars = caps.len();
            let mut vals: Vec<String> = caps;
            vals.resize(3, String::new());
            // Captures past the glob's own `*` count are not references.
            for v in vals.iter_mut().skip(stars) {
                v.clear();
            }
            (format!("m{i}"), vals)
        });
        proptest::prop_assert_eq!(got, want, "{}", yaml);
    }
}

proptest::proptest! {
    /// Loading never panics: YAML-ish noise, and the 50-mapping file with a
    /// slice cut out or a character changed.
    #[test]
    fn from_yaml_never_panics(
        noise in "[-:?&*!|>'\"%@{}\\[\\],#<~ \n\ta-z0-9.$\\\\]{0,160}",
        cut in 0usize..MAPPING50.len(),
        len in 0usize..40,
        with in proptest::char::any(),
    ) {
        let _ = Mapper::from_yaml(&noise);
        let (start, end) = (cut, (cut + len).min(MAPPING50.len()));
        if MAPPING50.is_char_boundary(start) && MAPPING50.is_char_boundary(end) {
            let _ = Mapper::from_yaml(&format!("{}{}", &MAPPING50[..start], &MAPPING50[end..]));
            let _ = Mapper::from_yaml(&format!("{}{with}{}", &MAPPING50[..start], &MAPPING50[(start + 1).min(end.max(start + 1)).min(MAPPING50.len())..]));
        }
    }
}
