//! The mapping file as a YAML tree, read with the rules of the Go library
//! statsd_exporter decodes it with (`go.yaml.in/yaml/v2`, strict mode):
//!
//! - only the first document counts; anchors and aliases work, and `<<`
//!   merge keys merge into a struct or a map in place, later keys winning;
//! - a key a struct does not have, or a key given twice in one mapping, is an
//!   error (`UnmarshalStrict`); so is a label given twice, merges included;
//! - plain scalars resolve as YAML 1.1 does there: `yes`/`no`/`on`/`off` are
//!   booleans, `0x1F`, `0o17`, `017`, `0b101` and `1_000` integers, `1e-6`
//!   a float but `1e6` a string (the exponent needs a sign), `~`, `null` and
//!   nothing at all null;
//! - a string field takes any scalar's text (`code: 200` is `"200"`), null
//!   gives `""`; an integer into a duration is nanoseconds, a float into an
//!   integer is truncated.
//!
//! Errors name the line, the field's path and, where a type is wrong, the
//! Go type statsd_exporter would have decoded into.

use std::cell::Cell;
use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

/// A node's index in [`Doc`].
pub(super) type Id = usize;

#[derive(Debug)]
enum Kind {
    Scalar { text: String, plain: bool, tag: Option<String> },
    Seq(Vec<Id>),
    Map(Vec<(Id, Id)>),
}

#[derive(Debug)]
struct Node {
    kind: Kind,
    line: usize,
}

/// What a scalar resolves to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str,
}

/// Merges inside merges: deeper than this is an anchor that merges itself.
const MAX_MERGE_DEPTH: u32 = 32;
/// Keys visited in all, merged ones counted each time: bounds the work an
/// adversarial fan-out of aliases into merges can cause.
const MAX_MERGED_KEYS: usize = 1 << 20;
/// The int64 range, as Go compares floats against it.
const TWO_TO_63: f64 = 9_223_372_036_854_775_808.0;

/// A parsed document: nodes in an arena, aliases sharing their anchor's node.
#[derive(Debug)]
pub(super) struct Doc {
    nodes: Vec<Node>,
    root: Option<Id>,
    budget: Cell<usize>,
}

/// A sequence or mapping being built, and a mapping's key waiting for its value.
struct Open {
    id: Id,
    key: Option<Id>,
}

impl Doc {
    /// Parses the first document of `text`; no document at all is `root() == None`.
    pub(super) fn parse(text: &str) -> Result<Doc, String> {
        let mut doc = Doc { nodes: Vec::new(), root: None, budget: Cell::new(MAX_MERGED_KEYS) };
        let mut parser = Parser::new_from_str(text);
        let mut open: Vec<Open> = Vec::new();
        let mut anchors: HashMap<usize, Id> = HashMap::new();
        loop {
            let (event, mark) =
                parser.next_token().map_err(|e| format!("yaml: line {}: {}", e.marker().line(), e.info()))?;
            let line = mark.line();
            let (kind, anchor) = match event {
                Event::StreamEnd | Event::DocumentEnd => break,
                Event::Nothing | Event::StreamStart | Event::DocumentStart => continue,
                Event::SequenceEnd | Event::MappingEnd => {
                    open.pop();
                    continue;
                }
                Event::Alias(anchor) => {
                    let id = *anchors
                        .get(&anchor)
                        .ok_or_else(|| format!("yaml: line {line}: unknown anchor referenced"))?;
                    doc.attach(open.last_mut(), id);
                    continue;
                }
                Event::Scalar(text, style, anchor, tag) => {
                    let plain = style == TScalarStyle::Plain;
                    let tag = tag.map(|t| short_tag(&t.handle, &t.suffix));
                    (Kind::Scalar { text, plain, tag }, anchor)
                }
                Event::SequenceStart(anchor, _) => (Kind::Seq(Vec::new()), anchor),
                Event::MappingStart(anchor, _) => (Kind::Map(Vec::new()), anchor),
            };
            let opens = !matches!(kind, Kind::Scalar { .. });
            let id = doc.nodes.len();
            doc.nodes.push(Node { kind, line });
            if anchor > 0 {
                anchors.insert(anchor, id);
            }
            doc.attach(open.last_mut(), id);
            if opens {
                open.push(Open { id, key: None });
            }
        }
        Ok(doc)
    }

    /// Adds `id` to the innermost open collection, or makes it the root.
    fn attach(&mut self, parent: Option<&mut Open>, id: Id) {
        let Some(parent) = parent else {
            self.root.get_or_insert(id);
            return;
        };
        match &mut self.nodes[parent.id].kind {
            Kind::Seq(items) => items.push(id),
            Kind::Map(entries) => match parent.key.take() {
                Some(key) => entries.push((key, id)),
                None => parent.key = Some(id),
            },
            Kind::Scalar { .. } => {}
        }
    }

    /// The document's top node, if there is a document.
    pub(super) fn root(&self) -> Option<Id> {
        self.root
    }

    /// The line `id` starts on (1-based).
    pub(super) fn line(&self, id: Id) -> usize {
        self.nodes[id].line
    }

    fn value(&self, id: Id) -> Result<Value, String> {
        match &self.nodes[id].kind {
            Kind::Scalar { text, plain, tag } => {
                resolve(text, *plain, tag.as_deref()).map_err(|e| format!("line {}: {e}", self.line(id)))
            }
            _ => Ok(Value::Str),
        }
    }

    /// Go's short tag of a node, for messages.
    fn tag_of(&self, id: Id) -> String {
        match &self.nodes[id].kind {
            Kind::Seq(_) => "!!seq".into(),
            Kind::Map(_) => "!!map".into(),
            Kind::Scalar { text, plain, tag } => match (tag, resolve(text, *plain, tag.as_deref())) {
                (Some(t), _) => t.clone(),
                (None, Ok(Value::Null)) => "!!null".into(),
                (None, Ok(Value::Bool(_))) => "!!bool".into(),
                (None, Ok(Value::Int(_))) => "!!int".into(),
                (None, Ok(Value::Float(_))) => "!!float".into(),
                (None, _) => "!!str".into(),
            },
        }
    }

    /// "cannot unmarshal" for `id` read as Go type `ty` at `path`.
    pub(super) fn type_error(&self, id: Id, path: &str, ty: &str) -> String {
        let shown = match &self.nodes[id].kind {
            Kind::Scalar { text, .. } => format!(" `{text}`"),
            _ => String::new(),
        };
        format!("line {}: {path}: cannot unmarshal {}{shown} into {ty}", self.line(id), self.tag_of(id))
    }

    /// Whether yaml.v2 skips decoding `id` altogether (its `prepare` check:
    /// `~`, `null`, nothing, or `!!null`). Decoders with their own logic
    /// (the enum-like fields, `scale`, option structs) keep their zero value
    /// then, where `Null` or `NULL` reach them as an empty value.
    pub(super) fn is_absent(&self, id: Id) -> bool {
        match &self.nodes[id].kind {
            Kind::Scalar { tag: Some(t), .. } => t == "!!null",
            Kind::Scalar { text, plain, tag: None } => {
                text == "null" || text == "~" || (*plain && text.is_empty())
            }
            _ => false,
        }
    }

    /// Whether `id` resolves to null (any spelling).
    pub(super) fn is_null(&self, id: Id) -> bool {
        matches!(self.value(id), Ok(Value::Null))
    }

    /// A string field: any scalar's text, `""` for null.
    pub(super) fn string(&self, id: Id, path: &str) -> Result<String, String> {
        match (&self.nodes[id].kind, self.value(id)?) {
            (Kind::Scalar { .. }, Value::Null) => Ok(String::new()),
            (Kind::Scalar { text, .. }, _) => Ok(text.clone()),
            _ => Err(self.type_error(id, path, "string")),
        }
    }

    /// A `bool` field.
    pub(super) fn bool(&self, id: Id, path: &str) -> Result<bool, String> {
        match self.value(id)? {
            Value::Null => Ok(false),
            Value::Bool(b) if self.is_scalar(id) => Ok(b),
            _ => Err(self.type_error(id, path, "bool")),
        }
    }

    /// A `float64` field.
    pub(super) fn f64(&self, id: Id, path: &str) -> Result<f64, String> {
        #[allow(clippy::cast_precision_loss)]
        match self.value(id)? {
            Value::Null => Ok(0.0),
            Value::Int(i) if self.is_scalar(id) => Ok(i as f64),
            Value::Float(f) if self.is_scalar(id) => Ok(f),
            _ => Err(self.type_error(id, path, "float64")),
        }
    }

    /// A `uint32` field.
    pub(super) fn u32(&self, id: Id, path: &str) -> Result<u32, String> {
        let fits = match self.value(id)? {
            Value::Null => Some(0),
            Value::Int(i) => u32::try_from(i).ok(),
            // Truncated toward zero, as Go converts.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Value::Float(f) if (0.0..4_294_967_296.0).contains(&f) => Some(f as u32),
            _ => None,
        };
        fits.filter(|_| self.is_scalar(id)).ok_or_else(|| self.type_error(id, path, "uint32"))
    }

    /// A `time.Duration` field, in nanoseconds: a Go duration string, or an
    /// integer (or truncated float) number of nanoseconds.
    pub(super) fn duration(&self, id: Id, path: &str) -> Result<i64, String> {
        let ns = match self.value(id)? {
            Value::Null => Some(0),
            Value::Int(i) => i64::try_from(i).ok(),
            // Go's range test, then a truncating conversion.
            #[allow(clippy::cast_possible_truncation)]
            Value::Float(f) if (-TWO_TO_63..TWO_TO_63).contains(&f) => Some(f as i64),
            Value::Str => match &self.nodes[id].kind {
                Kind::Scalar { text, .. } => super::duration::parse_go_duration(text).ok(),
                _ => None,
            },
            _ => None,
        };
        ns.filter(|_| self.is_scalar(id)).ok_or_else(|| self.type_error(id, path, "time.Duration"))
    }

    fn is_scalar(&self, id: Id) -> bool {
        matches!(self.nodes[id].kind, Kind::Scalar { .. })
    }

    /// A sequence field's items; `None` for null.
    pub(super) fn seq(&self, id: Id, path: &str, ty: &str) -> Result<Option<&[Id]>, String> {
        match &self.nodes[id].kind {
            Kind::Seq(items) => Ok(Some(items)),
            _ if self.is_null(id) => Ok(None),
            _ => Err(self.type_error(id, path, ty)),
        }
    }

    /// Whether `id` is a mapping.
    pub(super) fn is_map(&self, id: Id) -> bool {
        matches!(self.nodes[id].kind, Kind::Map(_))
    }

    /// Walks a mapping decoded into Go struct `ty`, calling `field` with each
    /// key (one of `known`) and its value in the order Go assigns them;
    /// `<<` merges are walked in place. An unknown key, or a key twice in
    /// one mapping, is an error.
    pub(super) fn fields(
        &self,
        id: Id,
        path: &str,
        ty: &str,
        known: &[&str],
        field: &mut dyn FnMut(&str, Id) -> Result<(), String>,
    ) -> Result<(), String> {
        self.walk(id, path, ty, true, 0, &mut |key, key_id, value| {
            if !known.contains(&key) {
                return Err(format!(
                    "line {}: {path}: field {key} not found in type {ty} (known: {})",
                    self.line(key_id),
                    known.join(", ")
                ));
            }
            field(key, value)
        })
    }

    /// A map's entries (`labels`) appended to `out`, merges in place; a key
    /// already in `out` is an error.
    pub(super) fn entries_into(
        &self,
        id: Id,
        path: &str,
        ty: &str,
        out: &mut Vec<(String, String)>,
    ) -> Result<(), String> {
        self.walk(id, path, ty, false, 0, &mut |key, key_id, value| {
            if out.iter().any(|(k, _)| k == key) {
                return Err(format!("line {}: {path}: key {key:?} already set in map", self.line(key_id)));
            }
            let value = self.string(value, &format!("{path}.{key}"))?;
            out.push((key.to_string(), value));
            Ok(())
        })
    }

    /// The entries of mapping `id` in order, merges (`<<: *a`, `<<: [*a, *b]`)
    /// expanded where they stand, earlier sources of a list winning. With
    /// `strict_struct`, a key twice among one mapping's own keys is an error
    /// (merged keys are another decode in Go, checked among themselves).
    fn walk(
        &self,
        id: Id,
        path: &str,
        ty: &str,
        strict_struct: bool,
        depth: u32,
        each: &mut dyn FnMut(&str, Id, Id) -> Result<(), String>,
    ) -> Result<(), String> {
        let Kind::Map(entries) = &self.nodes[id].kind else {
            return Err(self.type_error(id, path, ty));
        };
        if depth > MAX_MERGE_DEPTH {
            return Err(format!(
                "line {}: {path}: merges nest too deep (an anchor that contains itself?)",
                self.line(id)
            ));
        }
        let mut seen: Vec<String> = Vec::new();
        for &(key, value) in entries {
            let left = self.budget.get().checked_sub(1).ok_or_else(|| {
                format!("line {}: {path}: too many keys through anchors and merges", self.line(key))
            })?;
            self.budget.set(left);
            if self.is_merge(key) {
                for source in self.merge_sources(value, path)? {
                    self.walk(source, path, ty, strict_struct, depth + 1, each)?;
                }
                continue;
            }
            let name = match &self.nodes[key].kind {
                Kind::Scalar { .. } => self.string(key, path)?,
                _ => return Err(self.type_error(key, path, "string")),
            };
            if strict_struct {
                if seen.contains(&name) {
                    return Err(format!(
                        "line {}: {path}: field {name} already set in type {ty}",
                        self.line(key)
                    ));
                }
                seen.push(name.clone());
            }
            each(&name, key, value)?;
        }
        Ok(())
    }

    fn is_merge(&self, id: Id) -> bool {
        match &self.nodes[id].kind {
            Kind::Scalar { text, plain, tag } => {
                text == "<<" && (*plain || tag.as_deref() == Some("!!merge"))
            }
            _ => false,
        }
    }

    /// The mappings a `<<` value merges, in the order they are applied.
    fn merge_sources(&self, value: Id, path: &str) -> Result<Vec<Id>, String> {
        let want = || {
            format!(
                "line {}: {path}: map merge requires map or sequence of maps as the value",
                self.line(value)
            )
        };
        match &self.nodes[value].kind {
            Kind::Map(_) => Ok(vec![value]),
            Kind::Seq(items) if items.iter().all(|&i| self.is_map(i)) => {
                Ok(items.iter().rev().copied().collect())
            }
            _ => Err(want()),
        }
    }
}

/// `!!int` for the standard tags, the tag as written otherwise.
fn short_tag(handle: &str, suffix: &str) -> String {
    let full = format!("{handle}{suffix}");
    match full.strip_prefix("tag:yaml.org,2002:") {
        Some(rest) => format!("!!{rest}"),
        None => full,
    }
}

/// yaml.v2's `resolve` for one scalar.
fn resolve(text: &str, plain: bool, tag: Option<&str>) -> Result<Value, String> {
    let Some(tag) = tag else {
        return Ok(if plain { resolve_plain(text) } else { Value::Str });
    };
    let want = match tag {
        "!!null" => "!!null",
        "!!bool" => "!!bool",
        "!!int" => "!!int",
        "!!float" => "!!float",
        _ => return Ok(Value::Str),
    };
    let got = resolve_plain(text);
    let got_tag = match got {
        Value::Null => "!!null",
        Value::Bool(_) => "!!bool",
        Value::Int(_) => "!!int",
        Value::Float(_) => "!!float",
        Value::Str => "!!str",
    };
    if got_tag == want {
        Ok(got)
    } else {
        Err(format!("cannot decode {got_tag} `{text}` as a {want}"))
    }
}

/// An untagged plain scalar, YAML 1.1 as yaml.v2 reads it (timestamps,
/// which only matter to time fields, stay strings).
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Value::Bool(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Value::Bool(false)
        }
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        _ => {}
    }
    match text.as_bytes()[0] {
        b'.' => go_float(text).map_or(Value::Str, Value::Float),
        b'+' | b'-' | b'0'..=b'9' => {
            let plain: String = text.chars().filter(|&c| c != '_').collect();
            if let Some(i) = go_int(&plain) {
                Value::Int(i)
            } else if yaml_style_float(&plain) {
                go_float(&plain).map_or(Value::Str, Value::Float)
            } else {
                Value::Str
            }
        }
        _ => Value::Str,
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)`, then `ParseUint(s, 0, 64)`.
fn go_int(s: &str) -> Option<i128> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    let value = if neg { -i128::from(magnitude) } else { i128::from(magnitude) };
    // ParseUint takes no sign; ParseInt stops at the int64 range.
    let unsigned_only = value > i128::from(i64::MAX);
    (value >= i128::from(i64::MIN) && !(unsigned_only && s.starts_with(['+', '-']))).then_some(value)
}

/// yaml.v2's `^[-+]?[0-9]*\.?[0-9]+([eE][-+][0-9]+)?$`.
fn yaml_style_float(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(at) => (&s[..at], Some(&s[at + 1..])),
        None => (s, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or(("", mantissa));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = digits(int) && !frac.is_empty() && digits(frac);
    let exponent_ok =
        exponent.is_none_or(|e| e.strip_prefix(['-', '+']).is_some_and(|d| !d.is_empty() && digits(d)));
    mantissa_ok && exponent_ok
}

/// Go's `strconv.ParseFloat` on what reaches it here; out of range is an
/// error there (so the scalar stays a string).
fn go_float(s: &str) -> Option<f64> {
    let f: f64 = s.parse().ok()?;
    f.is_finite().then_some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_plain_scalars_as_yaml_v2() {
        for (text, want) in [
            ("", Value::Null),
            ("~", Value::Null),
            ("NULL", Value::Null),
            ("yes", Value::Bool(true)),
            ("Off", Value::Bool(false)),
            ("y", Value::Bool(true)),
            ("12", Value::Int(12)),
            ("-12", Value::Int(-12)),
            ("+7", Value::Int(7)),
            ("1_000", Value::Int(1000)),
            ("0x1F", Value::Int(31)),
            ("0o17", Value::Int(15)),
            ("017", Value::Int(15)),
            ("0b101", Value::Int(5)),
            ("-0b101", Value::Int(-5)),
            ("18446744073709551615", Value::Int(18_446_744_073_709_551_615)),
            ("09", Value::Float(9.0)),
            ("0.5", Value::Float(0.5)),
            (".5", Value::Float(0.5)),
            ("1e-6", Value::Float(1e-6)),
            ("1E+3", Value::Float(1000.0)),
            ("1e6", Value::Str),
            ("1.", Value::Str),
            ("1e+999", Value::Str),
            (".inf", Value::Float(f64::INFINITY)),
            ("-.Inf", Value::Float(f64::NEG_INFINITY)),
            ("10s", Value::Str),
            ("-", Value::Str),
            ("abc", Value::Str),
            ("True", Value::Bool(true)),
            ("tRUE", Value::Str),
        ] {
            assert_eq!(resolve_plain(text), want, "{text:?}");
        }
        assert!(matches!(resolve_plain(".nan"), Value::Float(f) if f.is_nan()));
    }

    #[test]
    fn tree_keeps_order_aliases_and_lines() {
        let doc = Doc::parse("a: &x [1, 2]\nb: *x\nc:\n  d: e\n---\nignored: [").expect("parse");
        let root = doc.root().expect("root");
        let mut seen = Vec::new();
        doc.fields(root, "top", "T", &["a", "b", "c"], &mut |k, v| {
            seen.push((k.to_string(), doc.line(v)));
            Ok(())
        })
        .expect("fields");
        assert_eq!(seen, [("a".into(), 1), ("b".into(), 1), ("c".into(), 4)]);
    }

    #[test]
    fn strictness_and_merges() {
        let doc = Doc::parse("a: 1\na: 2\n").expect("parse");
        let err = doc.fields(0, "top", "T", &["a"], &mut |_, _| Ok(())).expect_err("dup");
        assert!(err.contains("field a already set in type T"), "{err}");

        let doc = Doc::parse("b: 1\n").expect("parse");
        let err = doc.fields(0, "top", "T", &["a"], &mut |_, _| Ok(())).expect_err("unknown");
        assert!(err.starts_with("line 1: top: field b not found in type T"), "{err}");

        let doc = Doc::parse("base: &b {a: 1, c: 2}\nit:\n  <<: *b\n  a: 3\n").expect("parse");
        let Kind::Map(top) = &doc.nodes[0].kind else { panic!() };
        let it = top[1].1;
        let mut got = Vec::new();
        doc.fields(it, "it", "T", &["a", "c"], &mut |k, v| {
            got.push(format!("{k}={}", doc.string(v, "x").expect("str")));
            Ok(())
        })
        .expect("merge");
        assert_eq!(got, ["a=1", "c=2", "a=3"]);

        let doc = Doc::parse("a: &s {<<: *s}\n").expect("parse");
        let Kind::Map(top) = &doc.nodes[0].kind else { panic!() };
        assert!(doc.fields(top[0].1, "a", "T", &["x"], &mut |_, _| Ok(())).is_err());
    }

    #[test]
    fn typed_fields() {
        let doc = Doc::parse("[10s, 60, 1.9, yes, '5', 1m30s, -1, x, 2.5]").expect("parse");
        let Kind::Seq(items) = &doc.nodes[0].kind else { panic!() };
        let i = |n: usize| items[n];
        assert_eq!(doc.duration(i(0), "p"), Ok(10_000_000_000));
        assert_eq!(doc.duration(i(1), "p"), Ok(60));
        assert_eq!(doc.duration(i(2), "p"), Ok(1));
        assert_eq!(doc.bool(i(3), "p"), Ok(true));
        assert!(doc.bool(i(4), "p").is_err());
        assert_eq!(doc.string(i(4), "p"), Ok("5".into()));
        assert_eq!(doc.string(i(1), "p"), Ok("60".into()));
        assert_eq!(doc.duration(i(5), "p"), Ok(90_000_000_000));
        assert!(doc.u32(i(6), "p").is_err());
        assert_eq!(doc.u32(i(8), "p"), Ok(2));
        let err = doc.f64(i(7), "scale").expect_err("str");
        assert_eq!(err, "line 1: scale: cannot unmarshal !!str `x` into float64");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = Doc::parse("a: \"x\\.y\"\n").expect_err("bad escape");
        assert!(err.starts_with("yaml: line 1:"), "{err}");
        let err = Doc::parse("a: *nope\n").expect_err("unknown alias");
        assert!(err.starts_with("yaml: line 1:"), "{err}");
        assert!(Doc::parse("").expect("empty").root().is_none());
        assert!(Doc::parse("# only a comment\n").expect("comment").root().is_none());
    }
}
