//! `match_type: regex` with Go's meaning: the pattern in Go's RE2 syntax,
//! matched unanchored (Go calls `FindStringSubmatchIndex`; anchor with `^`
//! and `$` yourself), and `$1`, `${1}`, `$name`, `${name}` in the name and
//! label values expanded as Go's `Regexp.ExpandString` does.
//!
//! The `regex` crate's syntax is RE2's with a few differences, which
//! [`translate`] removes before compiling: `\d`, `\w`, `\s`, `\b` and `\B`
//! are ASCII in Go but Unicode here; `\Q...\E` and octal escapes (`\012`)
//! exist only in Go; an escaped punctuation character is always itself in
//! Go (`\<` is `<`, a word boundary here); inside a class, `[` is a literal
//! and `&&`, `--`, `~~` are not set operations in Go. What remains: Go
//! rejects a few patterns this accepts (repetition counts above 1000,
//! `(?x)`, `\u{...}`), never the other way round that we know of.

use std::sync::LazyLock;

use regex::{Captures, Regex};

/// Compiles a Go pattern; the error is the `regex` crate's message.
pub(super) fn compile(pattern: &str) -> Result<Regex, String> {
    Regex::new(&translate(pattern)).map_err(|e| e.to_string())
}

/// The Go pattern in the `regex` crate's syntax, with Go's meaning.
pub(super) fn translate(go: &str) -> String {
    let chars: Vec<char> = go.chars().collect();
    let mut out = String::with_capacity(go.len() + 16);
    let mut i = 0;
    let mut in_class = false;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match (c, in_class) {
            ('\\', _) => i = escape(&chars, i, in_class, &mut out),
            ('[', false) => {
                out.push('[');
                if chars.get(i) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                if chars.get(i) == Some(&']') {
                    out.push_str("\\]");
                    i += 1;
                }
                in_class = true;
            }
            (']', true) => {
                out.push(']');
                in_class = false;
            }
            ('[', true) => match posix_class(&chars[i - 1..]) {
                Some(len) => {
                    out.extend(&chars[i - 1..i - 1 + len]);
                    i += len - 1;
                }
                None => out.push_str("\\["),
            },
            ('&' | '~', true) => push_hex(&mut out, c),
            ('-', true) if chars.get(i) == Some(&'-') => {
                // `a--` is a range ending at `-` in Go, a set difference here.
                out.push('-');
                push_hex(&mut out, '-');
                i += 1;
            }
            _ => out.push(c),
        }
    }
    out
}

/// Translates the escape after a `\` at `chars[i - 1]`; returns the index
/// after it.
fn escape(chars: &[char], i: usize, in_class: bool, out: &mut String) -> usize {
    let Some(&c) = chars.get(i) else {
        // A trailing `\`: let the compiler report it.
        out.push('\\');
        return i;
    };
    let perl = |neg: bool, set: &str| match (neg, in_class) {
        (false, true) => set.to_string(),
        (false, false) => format!("[{set}]"),
        (true, _) => format!("[^{set}]"),
    };
    match c {
        'd' | 'D' => out.push_str(&perl(c == 'D', "0-9")),
        'w' | 'W' => out.push_str(&perl(c == 'W', "0-9A-Za-z_")),
        's' | 'S' => out.push_str(&perl(c == 'S', "\\t\\n\\f\\r ")),
        'b' | 'B' if !in_class => out.push_str(if c == 'b' { "(?-u:\\b)" } else { "(?-u:\\B)" }),
        'Q' => {
            let body: String = chars[i + 1..].iter().collect();
            let (quoted, rest) = body.split_once("\\E").unwrap_or((&body, ""));
            for q in quoted.chars() {
                push_hex(out, q);
            }
            return chars.len() - rest.chars().count();
        }
        '0'..='7' => {
            let digits = chars[i..].iter().take(3).take_while(|d| ('0'..='7').contains(d)).count();
            // `\1`..`\7` alone is a backreference, an error in both.
            if c != '0' && digits == 1 {
                out.push('\\');
                out.push(c);
                return i + 1;
            }
            let text: String = chars[i..i + digits].iter().collect();
            let code = u32::from_str_radix(&text, 8).unwrap_or(0);
            push_hex(out, char::from_u32(code).unwrap_or('\0'));
            return i + digits;
        }
        c if c.is_ascii_punctuation() => push_hex(out, c),
        _ => {
            out.push('\\');
            out.push(c);
        }
    }
    i + 1
}

/// `[:alpha:]` or `[:^alpha:]` at the start of `chars`: its length.
fn posix_class(chars: &[char]) -> Option<usize> {
    if chars.get(1) != Some(&':') {
        return None;
    }
    let end = chars.windows(2).skip(2).position(|w| w == [':', ']'])? + 2;
    let name = &chars[2..end];
    let name = name.strip_prefix(&['^']).unwrap_or(name);
    (!name.is_empty() && name.iter().all(char::is_ascii_lowercase)).then_some(end + 2)
}

fn push_hex(out: &mut String, c: char) {
    out.push_str(&format!("\\x{{{:X}}}", u32::from(c)));
}

/// A name or label template, split once at load.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Piece {
    Text(String),
    Group(usize),
    Named(String),
}

/// Go's name rule in `extract`: letters, digits (Unicode `L` and `Nd`) and `_`.
static NAME: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    Regex::new(r"^(?:\{([\p{L}\p{Nd}_]+)\}|([\p{L}\p{Nd}_]+))").expect("a constant pattern")
});

/// Splits `template` as Go's `Regexp.expand` reads it: `$$` is a `$`, a `$`
/// not followed by a well-formed reference is itself, a reference of digits
/// only (no leading zero, below 10^8) is a group number, others are names.
pub(super) fn template(template: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        text.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            text.push('$');
            rest = after;
            continue;
        }
        let reference = NAME
            .captures(rest)
            .and_then(|c| Some((c.get(0)?.end(), c.get(1).or_else(|| c.get(2))?.as_str())));
        let Some((whole, name)) = reference else {
            text.push('$');
            continue;
        };
        pieces.push(Piece::Text(std::mem::take(&mut text)));
        let number = name.bytes().all(|b| b.is_ascii_digit()) && !(name.len() > 1 && name.starts_with('0'));
        match name.parse::<usize>() {
            Ok(n) if number && n < 100_000_000 => pieces.push(Piece::Group(n)),
            _ => pieces.push(Piece::Named(name.to_string())),
        }
        rest = &rest[whole..];
    }
    text.push_str(rest);
    pieces.push(Piece::Text(text));
    pieces.retain(|p| !matches!(p, Piece::Text(t) if t.is_empty()));
    pieces
}

/// Fills a split template from a match: a group that did not take part, or
/// a name no group has, expands to nothing.
pub(super) fn expand(pieces: &[Piece], re: &Regex, caps: &Captures<'_>) -> String {
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Group(n) => out.push_str(caps.get(*n).map_or("", |m| m.as_str())),
            Piece::Named(name) => {
                let found = re
                    .capture_names()
                    .enumerate()
                    .find_map(|(i, n)| (n == Some(name.as_str())).then(|| caps.get(i)).flatten());
                out.push_str(found.map_or("", |m| m.as_str()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(pattern: &str, tpl: &str, input: &str) -> Option<String> {
        let re = compile(pattern).expect("compiles");
        let caps = re.captures(input)?;
        Some(expand(&template(tpl), &re, &caps))
    }

    #[test]
    fn go_meaning_of_escapes_and_classes() {
        // (Go pattern, input, whether Go finds a match)
        for (pattern, input, want) in [
            (r"^\d+$", "123", true),
            (r"^\d+$", "١٢٣", false),
            (r"^\w+$", "héllo", false),
            (r"^\w+$", "hello_1", true),
            (r"^\s$", "\u{b}", false),
            (r"^\s$", "\u{a0}", false),
            (r"^\S$", "é", true),
            (r"^[\d.]+$", "1.2", true),
            (r"^[^\d]+$", "abc", true),
            (r"^[\D]+$", "a1", false),
            (r"\bfoo\b", "éfooé", true),
            (r"\Qa.b\E", "axb", false),
            (r"\Qa.b\E", "a.b", true),
            (r"\Qa.b", "a.b", true),
            (r"^\<x\>$", "<x>", true),
            (r"^\101$", "A", true),
            (r"^\0$", "\0", true),
            (r"^[[]$", "[", true),
            (r"^[]a]+$", "]a", true),
            (r"^[a&&b]+$", "&", true),
            (r"^[[:alpha:]]+$", "abc", true),
            (r"^[[:^digit:]]+$", "abc", true),
            (r"^[a~~b]$", "~", true),
            (r"^[+--]$", ",", true),
            (r".", "test.a", true),
            (r"foo", "xfooy", true),
            (r"^foo$", "xfooy", false),
            (r"(?i)^FOO$", "foo", true),
        ] {
            let re = compile(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
            assert_eq!(re.is_match(input), want, "{pattern} ~ {input:?} ({})", translate(pattern));
        }
        for bad in [r"*\.foo", r"\1", r"(", r"[a", r"\8"] {
            assert!(compile(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expands_as_go() {
        let p = r"^(?P<svc>\w+)\.(\w+)(?:\.(x))?$";
        for (tpl, want) in [
            ("$1", "api"),
            ("${1}", "api"),
            ("$2_total", ""),
            ("${2}_total", "hits_total"),
            ("$svc", "api"),
            ("${svc}-$2", "api-hits"),
            ("$0", "api.hits"),
            ("$3", ""),
            ("$9", ""),
            ("$$1", "$1"),
            ("$", "$"),
            ("a$-b", "a$-b"),
            ("${1", "${1"),
            ("${}", "${}"),
            ("${a-b}", "${a-b}"),
            ("$01", ""),
            ("${01}", ""),
            ("$nope", ""),
            ("cost 5$", "cost 5$"),
            ("$é", ""),
        ] {
            assert_eq!(expand_str(p, tpl, "api.hits").as_deref(), Some(want), "{tpl:?}");
        }
    }
}
