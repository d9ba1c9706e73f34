//! statsd_exporter's `EscapeMetricName` (`pkg/mapper/escape.go`): what an
//! unmapped statsd name, a mapped name and a tag key go through before they
//! become Prometheus names.

/// statsd_exporter's `EscapeMetricName`: every character outside
/// `[a-zA-Z0-9_]` becomes one `_` (a multi-byte character too), a run of
/// dashes becomes a single `_`, and a leading digit gets a `_` in front.
/// The result is empty only for an empty name, and otherwise always matches
/// `[a-zA-Z_][a-zA-Z0-9_]*` (a `:` is escaped as well).
///
/// ```
/// use cores::statsd::mapping::escape_metric_name;
/// assert_eq!(escape_metric_name("test.web-server.foo"), "test_web_server_foo");
/// assert_eq!(escape_metric_name("0day"), "_0day");
/// assert_eq!(escape_metric_name("a---b"), "a_b");
/// ```
pub fn escape_metric_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    // Go keeps the previous character only for the dash rule; a skipped
    // dash leaves it at '-', so a run of any length collapses.
    let mut prev = None;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        } else if c == '-' && prev == Some('-') {
            continue;
        } else {
            out.push('_');
        }
        prev = Some(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape_metric_name;

    #[test]
    fn escapes_as_statsd_exporter() {
        // escape_test.go's scenarios, plus the edges of each rule.
        for (name, want) in [
            ("clean", "clean"),
            ("0starts_with_digit", "_0starts_with_digit"),
            ("with_underscore", "with_underscore"),
            ("with--doubledash", "with_doubledash"),
            ("with---multiple-dashes", "with_multiple_dashes"),
            ("with.dot", "with_dot"),
            ("with😱emoji", "with_emoji"),
            ("with.*.multiple", "with___multiple"),
            ("test.web-server.foo.bar", "test_web_server_foo_bar"),
            ("", ""),
            ("-", "_"),
            ("--", "_"),
            ("a-.-b", "a___b"),
            ("9", "_9"),
            ("ns:metric", "ns_metric"),
            ("héllo", "h_llo"),
            ("_x", "_x"),
        ] {
            assert_eq!(escape_metric_name(name), want, "{name:?}");
        }
    }

    proptest::proptest! {
        /// Never empty unless the input is, always a valid name, never
        /// longer in characters than the input plus the leading `_`.
        #[test]
        fn always_a_prometheus_name(name in "\\PC{0,40}") {
            let out = escape_metric_name(&name);
            proptest::prop_assert_eq!(out.is_empty(), name.is_empty());
            if let Some(first) = out.chars().next() {
                proptest::prop_assert!(first.is_ascii_alphabetic() || first == '_');
            }
            proptest::prop_assert!(out.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
            proptest::prop_assert!(out.chars().count() <= name.chars().count() + 1);
        }
    }
}
