//! The statsd / DogStatsD line parser: sans-IO, in place over received
//! bytes. A [`Metric`] borrows its name, values and tags from the datagram;
//! nothing is allocated per line.
//!
//! Grammar (one line; a datagram holds several, `\n`-separated, with a
//! trailing `\r` and empty lines tolerated):
//!
//! ```text
//! name:value[:value...]|type[|@rate][|#tag:v,tag2][|c:container][|T<unix ts>]
//! ```
//!
//! Types: `c` counter, `g` gauge (`+N`/`-N` is a delta), `ms` timer, `h`
//! histogram, `d` distribution, `s` set. Several values packed in one line
//! (`name:1:2:3|ms`, DogStatsD 1.1) are several samples. Other `x:`
//! extension fields (a lowercase letter and a colon, as the DogStatsD
//! `e:`/`card:` fields) are skipped for forward compatibility; any other
//! field drops the line. Events (`_e{`) and service checks (`_sc|`) are
//! recognised and returned whole so a relay can forward them as-is.
//!
//! A malformed line yields a [`DropReason`]; the lines around it are kept.
//! A line longer than the limit is dropped, never truncated.
//!
//! ```
//! use cores::statsd::parse::{Lines, Line, MetricType, Value};
//! let mut lines = Lines::new(b"hits:2|c|@0.5|#env:prod\nbad\n", 1024);
//! let Some(Ok(Line::Metric(m))) = lines.next() else { panic!() };
//! assert_eq!((m.name, m.kind, m.rate), (&b"hits"[..], MetricType::Counter, 0.5));
//! assert_eq!(m.values().collect::<Vec<_>>(), [Value::Number(2.0)]);
//! assert!(matches!(lines.next(), Some(Err(_))));
//! assert!(lines.next().is_none());
//! ```

use std::fmt;

/// A metric's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetricType {
    /// `c`: summed per interval, scaled by 1/rate.
    Counter,
    /// `g`: last value wins; `+N`/`-N` adjust it.
    Gauge,
    /// `ms`: samples summarised by a sketch.
    Timer,
    /// `h`: as a timer.
    Histogram,
    /// `d`: as a timer (global distribution).
    Distribution,
    /// `s`: unique values counted.
    Set,
}

impl MetricType {
    /// Every type, in a fixed order (for per-type tables and counters).
    pub const ALL: [MetricType; 6] = [
        MetricType::Counter,
        MetricType::Gauge,
        MetricType::Timer,
        MetricType::Histogram,
        MetricType::Distribution,
        MetricType::Set,
    ];

    /// The type's wire code (`c`, `g`, `ms`, `h`, `d`, `s`).
    pub fn code(self) -> &'static str {
        match self {
            MetricType::Counter => "c",
            MetricType::Gauge => "g",
            MetricType::Timer => "ms",
            MetricType::Histogram => "h",
            MetricType::Distribution => "d",
            MetricType::Set => "s",
        }
    }

    fn from_code(code: &[u8]) -> Option<MetricType> {
        Some(match code {
            b"c" => MetricType::Counter,
            b"g" => MetricType::Gauge,
            b"ms" => MetricType::Timer,
            b"h" => MetricType::Histogram,
            b"d" => MetricType::Distribution,
            b"s" => MetricType::Set,
            _ => return None,
        })
    }

    /// Whether samples go into a quantile sketch.
    pub fn is_sampled(self) -> bool {
        matches!(self, MetricType::Timer | MetricType::Histogram | MetricType::Distribution)
    }
}

/// Why a line was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Longer than the maximum line length.
    TooLong,
    /// Nothing before the `:`.
    EmptyName,
    /// No `:value` part.
    NoValue,
    /// A value is not a finite number (or an empty set member).
    BadValue,
    /// No `|type` field.
    NoType,
    /// The type is not one of c, g, ms, h, d, s.
    UnknownType,
    /// The sample rate is not a number in (0, 1].
    BadRate,
    /// An empty tag, an empty tag name, or a second tag field.
    BadTags,
    /// `T` is not followed by a unix timestamp.
    BadTimestamp,
    /// An unrecognised or repeated field after the type.
    BadField,
}

impl DropReason {
    /// Every reason, in the order of [`DropReason::index`].
    pub const ALL: [DropReason; 10] = [
        DropReason::TooLong,
        DropReason::EmptyName,
        DropReason::NoValue,
        DropReason::BadValue,
        DropReason::NoType,
        DropReason::UnknownType,
        DropReason::BadRate,
        DropReason::BadTags,
        DropReason::BadTimestamp,
        DropReason::BadField,
    ];

    /// A dense index for per-reason counters.
    pub fn index(self) -> usize {
        self as usize
    }

    /// A short snake_case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::TooLong => "too_long",
            DropReason::EmptyName => "empty_name",
            DropReason::NoValue => "no_value",
            DropReason::BadValue => "bad_value",
            DropReason::NoType => "no_type",
            DropReason::UnknownType => "unknown_type",
            DropReason::BadRate => "bad_rate",
            DropReason::BadTags => "bad_tags",
            DropReason::BadTimestamp => "bad_timestamp",
            DropReason::BadField => "bad_field",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One sample of a metric line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// A number (counter increment, gauge value, timer sample).
    Number(f64),
    /// A gauge adjustment (`+N` / `-N`).
    Delta(f64),
    /// A set member.
    Member(&'a [u8]),
}

/// A parsed metric line, borrowing from the received bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric<'a> {
    /// The name (never empty).
    pub name: &'a [u8],
    /// The type.
    pub kind: MetricType,
    /// The `:`-separated values, already validated (see [`Metric::values`]).
    pub raw_values: &'a [u8],
    /// Sample rate in (0, 1]; 1 when absent.
    pub rate: f64,
    /// The tags as sent, `,`-separated (empty when absent); each is
    /// non-empty and does not start with `:`.
    pub tags: &'a [u8],
    /// The `c:` container id, if any.
    pub container: Option<&'a [u8]>,
    /// The `T` unix timestamp, if any.
    pub timestamp: Option<u64>,
    /// The first value, parsed while validating (most lines have one).
    first: Value<'a>,
}

impl<'a> Metric<'a> {
    /// The samples of this line (one, or several when packed).
    pub fn values(&self) -> impl Iterator<Item = Value<'a>> + 'a {
        let kind = self.kind;
        // Every value was checked by `parse_line`, so none is skipped here.
        let rest = self.raw_values.split(|&b| b == b':').skip(1).filter_map(move |v| parse_value(v, kind));
        std::iter::once(self.first).chain(rest)
    }

    /// The tags, one by one.
    pub fn tag_iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.tags.split(|&b| b == b',').filter(|t| !t.is_empty())
    }
}

/// One accepted line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Line<'a> {
    /// A metric.
    Metric(Metric<'a>),
    /// A DogStatsD event (`_e{...`), the whole line.
    Event(&'a [u8]),
    /// A DogStatsD service check (`_sc|...`), the whole line.
    ServiceCheck(&'a [u8]),
}

/// The lines of a datagram (or of a TCP stream's complete lines).
#[derive(Debug, Clone)]
pub struct Lines<'a> {
    rest: &'a [u8],
    max_len: usize,
}

impl<'a> Lines<'a> {
    /// Iterates over `data`'s lines; lines longer than `max_len` bytes
    /// (without the line ending) are dropped as [`DropReason::TooLong`].
    pub fn new(data: &'a [u8], max_len: usize) -> Lines<'a> {
        Lines { rest: data, max_len }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = Result<Line<'a>, DropReason>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let (line, rest) = match self.rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
                None => (self.rest, &[][..]),
            };
            self.rest = rest;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.is_empty() {
                return Some(parse_line(line, self.max_len));
            }
        }
    }
}

/// Parses one line (without its line ending).
pub fn parse_line(line: &[u8], max_len: usize) -> Result<Line<'_>, DropReason> {
    if line.len() > max_len {
        return Err(DropReason::TooLong);
    }
    if line.starts_with(b"_e{") {
        return Ok(Line::Event(line));
    }
    if line.starts_with(b"_sc|") {
        return Ok(Line::ServiceCheck(line));
    }
    let mut fields = line.split(|&b| b == b'|');
    // `split` always yields at least one item.
    let head = fields.next().unwrap_or_default();
    let Some(colon) = head.iter().position(|&b| b == b':') else {
        return Err(if head.is_empty() { DropReason::EmptyName } else { DropReason::NoValue });
    };
    let (name, raw_values) = (&head[..colon], &head[colon + 1..]);
    if name.is_empty() {
        return Err(DropReason::EmptyName);
    }
    if raw_values.is_empty() {
        return Err(DropReason::NoValue);
    }
    let code = fields.next().ok_or(DropReason::NoType)?;
    let kind = MetricType::from_code(code).ok_or(if code.is_empty() {
        DropReason::NoType
    } else {
        DropReason::UnknownType
    })?;
    let mut values = raw_values.split(|&b| b == b':');
    let first = values.next().and_then(|v| parse_value(v, kind)).ok_or(DropReason::BadValue)?;
    if values.any(|v| parse_value(v, kind).is_none()) {
        return Err(DropReason::BadValue);
    }
    let mut metric =
        Metric { name, kind, raw_values, rate: 1.0, tags: &[], container: None, timestamp: None, first };
    parse_fields(&mut metric, fields)?;
    Ok(Line::Metric(metric))
}

/// The optional fields after the type; each may appear once.
fn parse_fields<'a>(m: &mut Metric<'a>, fields: impl Iterator<Item = &'a [u8]>) -> Result<(), DropReason> {
    let (mut rate, mut tags, mut ts) = (false, false, false);
    for field in fields {
        match field {
            [b'@', r @ ..] if !rate => {
                rate = true;
                m.rate = parse_f64(r).filter(|r| *r > 0.0 && *r <= 1.0).ok_or(DropReason::BadRate)?;
            }
            [b'#', t @ ..] if !tags => {
                tags = true;
                if t.split(|&b| b == b',').any(|tag| tag.is_empty() || tag[0] == b':') {
                    return Err(DropReason::BadTags);
                }
                m.tags = t;
            }
            [b'#', ..] => return Err(DropReason::BadTags),
            [b'c', b':', c @ ..] if m.container.is_none() => m.container = Some(c),
            [b'T', t @ ..] if !ts => {
                ts = true;
                m.timestamp = Some(parse_u64(t).ok_or(DropReason::BadTimestamp)?);
            }
            _ if is_extension(field) => {}
            _ => return Err(DropReason::BadField),
        }
    }
    Ok(())
}

/// `key:...` with a lowercase key other than `c` (which is the container).
fn is_extension(field: &[u8]) -> bool {
    match field.iter().position(|&b| b == b':') {
        Some(i) => i > 0 && field[..i] != *b"c" && field[..i].iter().all(u8::is_ascii_lowercase),
        None => false,
    }
}

fn parse_value(v: &[u8], kind: MetricType) -> Option<Value<'_>> {
    match kind {
        MetricType::Set => (!v.is_empty()).then_some(Value::Member(v)),
        MetricType::Gauge if matches!(v.first(), Some(b'+' | b'-')) => parse_f64(v).map(Value::Delta),
        _ => parse_f64(v).map(Value::Number),
    }
}

/// A finite decimal number: digits, one optional sign, `.`, exponent.
/// `inf`, `nan` and hex are refused (std's parser accepts the first two).
fn parse_f64(v: &[u8]) -> Option<f64> {
    if let Some(f) = parse_plain(v) {
        return Some(f);
    }
    if v.is_empty() || !v.iter().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
    {
        return None;
    }
    // Only ASCII got here, so this is valid UTF-8.
    let s = std::str::from_utf8(v).ok()?;
    s.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Powers of ten that are exact doubles.
const POW10: [f64; 19] =
    [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18];

/// The common case of [`parse_f64`] without std's general parser: an
/// optional sign, at most 19 digits with at most one `.`, no exponent,
/// and digits that make an integer below 2^53. Then the integer and the
/// power of ten are both exact doubles and one IEEE division rounds
/// correctly (Clinger's fast path), so the result is bit for bit what
/// `str::parse` gives. `None` for anything else (the general parser
/// decides).
fn parse_plain(v: &[u8]) -> Option<f64> {
    let (negative, digits) = match v.split_first()? {
        (b'-', rest) => (true, rest),
        (b'+', rest) => (false, rest),
        _ => (false, v),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let (mut mantissa, mut point, mut seen) = (0u64, None, 0usize);
    for (i, &b) in digits.iter().enumerate() {
        match b {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(b - b'0');
                seen += 1;
            }
            b'.' if point.is_none() => point = Some(i),
            _ => return None,
        }
    }
    if seen == 0 || mantissa > 1 << 53 {
        return None;
    }
    let decimals = point.map_or(0, |p| digits.len() - p - 1);
    let value = mantissa as f64 / POW10[decimals];
    Some(if negative { -value } else { value })
}

fn parse_u64(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn metric(line: &str) -> Metric<'_> {
        match parse_line(line.as_bytes(), 1024) {
            Ok(Line::Metric(m)) => m,
            other => panic!("{line:?}: {other:?}"),
        }
    }

    fn values(line: &str) -> Vec<Value<'_>> {
        metric(line).values().collect()
    }

    #[test]
    fn accepts_the_documented_examples() {
        use MetricType::*;
        use Value::*;
        // etsy statsd README and docs/metric_types.md.
        let cases: &[(&str, &str, MetricType, &[Value<'_>], f64)] = &[
            ("gorets:1|c", "gorets", Counter, &[Number(1.0)], 1.0),
            ("gorets:1|c|@0.1", "gorets", Counter, &[Number(1.0)], 0.1),
            ("glork:320|ms", "glork", Timer, &[Number(320.0)], 1.0),
            ("glork:320|ms|@0.1", "glork", Timer, &[Number(320.0)], 0.1),
            ("gaugor:333|g", "gaugor", Gauge, &[Number(333.0)], 1.0),
            ("gaugor:-10|g", "gaugor", Gauge, &[Delta(-10.0)], 1.0),
            ("gaugor:+4|g", "gaugor", Gauge, &[Delta(4.0)], 1.0),
            ("uniques:765|s", "uniques", Set, &[Member(b"765")], 1.0),
            ("a.b.c:0.5|h", "a.b.c", Histogram, &[Number(0.5)], 1.0),
            // DogStatsD datagram format docs.
            ("page.views:1|c", "page.views", Counter, &[Number(1.0)], 1.0),
            ("fuel.level:0.5|g", "fuel.level", Gauge, &[Number(0.5)], 1.0),
            ("song.length:240|h|@0.5", "song.length", Histogram, &[Number(240.0)], 0.5),
            ("users.uniques:1234|s", "users.uniques", Set, &[Member(b"1234")], 1.0),
            ("users.online:1|c|#country:china", "users.online", Counter, &[Number(1.0)], 1.0),
            ("users.online:1|c|@0.5|#country:china", "users.online", Counter, &[Number(1.0)], 0.5),
            ("request.size:512|d|#a,b:c", "request.size", Distribution, &[Number(512.0)], 1.0),
            ("packed:1:2:3|ms", "packed", Timer, &[Number(1.0), Number(2.0), Number(3.0)], 1.0),
            ("g:+1:-2:5|g", "g", Gauge, &[Delta(1.0), Delta(-2.0), Number(5.0)], 1.0),
            ("s:a:b|s", "s", Set, &[Member(b"a"), Member(b"b")], 1.0),
            ("neg:-3|c", "neg", Counter, &[Number(-3.0)], 1.0),
            ("exp:1e3|ms", "exp", Timer, &[Number(1000.0)], 1.0),
        ];
        for (line, name, kind, vals, rate) in cases {
            let m = metric(line);
            assert_eq!(m.name, name.as_bytes(), "{line}");
            assert_eq!(m.kind, *kind, "{line}");
            assert_eq!(m.values().collect::<Vec<_>>(), *vals, "{line}");
            assert_eq!(m.rate, *rate, "{line}");
        }
    }

    #[test]
    fn reads_tags_container_and_timestamp() {
        let m = metric("my.metric:1|g|#env:prod,role:db|c:abc123|T1656581400");
        assert_eq!(m.tags, b"env:prod,role:db");
        assert_eq!(m.tag_iter().collect::<Vec<_>>(), [&b"env:prod"[..], b"role:db"]);
        assert_eq!(m.container, Some(&b"abc123"[..]));
        assert_eq!(m.timestamp, Some(1_656_581_400));
        // Unknown `x:` extension fields are skipped.
        let m = metric("x:1|c|e:it-abc|card:low|#a");
        assert_eq!(m.tags, b"a");
    }

    #[test]
    fn rejects_malformed_lines_with_a_reason() {
        use DropReason::*;
        let cases: &[(&str, DropReason)] = &[
            (":1|c", EmptyName),
            ("name", NoValue),
            ("name:|c", NoValue),
            ("name:1", NoType),
            ("name:1|", NoType),
            ("name:1|x", UnknownType),
            ("name:1|msx", UnknownType),
            ("name:abc|c", BadValue),
            ("name:1::2|ms", BadValue),
            ("name:nan|g", BadValue),
            ("name:inf|c", BadValue),
            ("name:0x10|c", BadValue),
            ("name:1|c|@0", BadRate),
            ("name:1|c|@1.5", BadRate),
            ("name:1|c|@-0.5", BadRate),
            ("name:1|c|@", BadRate),
            ("name:1|c|@0.5|@0.5", BadField),
            ("name:1|c|#", BadTags),
            ("name:1|c|#a,,b", BadTags),
            ("name:1|c|#:v", BadTags),
            ("name:1|c|#a|#b", BadTags),
            ("name:1|c|Tabc", BadTimestamp),
            ("name:1|c|T", BadTimestamp),
            ("name:1|c|?", BadField),
            ("name:1|c|", BadField),
            ("s:|s", NoValue),
            ("s:a::b|s", BadValue),
        ];
        for (line, reason) in cases {
            assert_eq!(parse_line(line.as_bytes(), 1024), Err(*reason), "{line}");
        }
    }

    #[test]
    fn a_datagram_keeps_its_good_lines() {
        let data = b"a:1|c\n\nbad line\r\nb:2|g\r\n_e{5,4}:title|text|#t\n_sc|svc|0\nc:3|ms";
        let got: Vec<_> = Lines::new(data, 1024).collect();
        assert_eq!(got.len(), 6);
        assert!(matches!(got[0], Ok(Line::Metric(Metric { name: b"a", .. }))));
        assert_eq!(got[1], Err(DropReason::NoValue));
        assert!(matches!(got[2], Ok(Line::Metric(Metric { name: b"b", .. }))));
        assert_eq!(got[3], Ok(Line::Event(b"_e{5,4}:title|text|#t")));
        assert_eq!(got[4], Ok(Line::ServiceCheck(b"_sc|svc|0")));
        assert!(matches!(got[5], Ok(Line::Metric(Metric { name: b"c", .. }))));
    }

    #[test]
    fn long_lines_are_dropped_not_truncated() {
        let long = format!("{}:1|c", "x".repeat(100));
        let data = format!("ok:1|c\n{long}\nok2:1|c\n");
        let got: Vec<_> = Lines::new(data.as_bytes(), 64).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], Err(DropReason::TooLong));
        assert!(got[0].is_ok() && got[2].is_ok());
        // Exactly at the limit is fine; the `\r` does not count.
        let exact = format!("{}:1|c\r\n", "y".repeat(60));
        assert!(Lines::new(exact.as_bytes(), 64).all(|r| r.is_ok()));
    }

    #[test]
    fn gauge_sign_means_delta_only_for_gauges() {
        assert_eq!(values("c:+5|c"), [Value::Number(5.0)]);
        assert_eq!(values("g:+5|g"), [Value::Delta(5.0)]);
        assert_eq!(values("g:5|g"), [Value::Number(5.0)]);
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..256), max in 0usize..300) {
            for r in Lines::new(&data, max) {
                if let Ok(Line::Metric(m)) = r {
                    prop_assert!(!m.name.is_empty());
                    prop_assert!(m.rate > 0.0 && m.rate <= 1.0);
                    // Every validated value survives iteration.
                    prop_assert_eq!(m.values().count(), m.raw_values.split(|&b| b == b':').count());
                }
            }
        }

        /// The fast path gives std's answer bit for bit, and declines
        /// (never differs) where it cannot.
        #[test]
        fn plain_numbers_parse_exactly_as_std(
            sign in prop_oneof![Just(""), Just("-"), Just("+")],
            int in "[0-9]{0,17}",
            frac in proptest::option::of("[0-9]{0,12}"),
        ) {
            let text = match &frac {
                Some(f) => format!("{sign}{int}.{f}"),
                None => format!("{sign}{int}"),
            };
            let std = text.parse::<f64>().ok();
            if let Some(fast) = parse_plain(text.as_bytes()) {
                prop_assert_eq!(Some(fast.to_bits()), std.map(f64::to_bits), "{}", text);
            }
            prop_assert_eq!(parse_f64(text.as_bytes()).map(f64::to_bits), std.map(f64::to_bits), "{}", text);
        }

        #[test]
        fn statsd_like_input_never_panics(
            parts in proptest::collection::vec(
                prop_oneof![Just("a"), Just(":"), Just("|"), Just("1"), Just("-"), Just("+"), Just("."),
                    Just("c"), Just("g"), Just("ms"), Just("s"), Just("@"), Just("#"), Just(","), Just("\n"),
                    Just("T"), Just("e"), Just("_e{"), Just("_sc|"), Just("\r")], 0..40)
        ) {
            let data = parts.concat();
            let n = Lines::new(data.as_bytes(), 64).count();
            prop_assert!(n <= data.len());
        }

        #[test]
        fn emitted_lines_parse_back(
            name in "[a-z][a-z0-9._]{0,20}",
            vals in proptest::collection::vec(-1e9f64..1e9, 1..4),
            kind in prop_oneof![Just(MetricType::Counter), Just(MetricType::Timer),
                Just(MetricType::Histogram), Just(MetricType::Distribution)],
            rate in 0.01f64..=1.0,
            tags in proptest::collection::vec("[a-z]{1,5}(:[a-z0-9]{1,5})?", 0..3),
        ) {
            let joined: Vec<String> = vals.iter().map(|v| format!("{v}")).collect();
            let mut line = format!("{name}:{}|{}|@{rate}", joined.join(":"), kind.code());
            if !tags.is_empty() {
                line.push_str(&format!("|#{}", tags.join(",")));
            }
            let m = metric(&line);
            prop_assert_eq!(m.name, name.as_bytes());
            prop_assert_eq!(m.kind, kind);
            prop_assert_eq!(m.rate, rate);
            prop_assert_eq!(m.tag_iter().count(), tags.len());
            let got: Vec<Value<'_>> = m.values().collect();
            let want: Vec<Value<'_>> = vals.iter().map(|v| Value::Number(*v)).collect();
            prop_assert_eq!(got, want);
        }
    }
}
