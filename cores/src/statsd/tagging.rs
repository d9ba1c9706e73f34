//! Tags added to every metric line of a payload (the origin a Unix socket
//! client is known by: `pid:N`, `container_id:ID`), before it is parsed:
//! into the line's `|#` section when it has one, else as a new one. Events
//! and service checks pass through untouched.
//!
//! ```
//! let mut out = Vec::new();
//! cores::statsd::tagging::add_tags(b"a:1|c|#env:prod\nb:2|ms", b"pid:7", &mut out);
//! assert_eq!(out, b"a:1|c|#env:prod,pid:7\nb:2|ms|#pid:7");
//! ```

/// Copies `payload` into `out` with `tags` (comma-separated, not empty)
/// added to each metric line.
pub fn add_tags(payload: &[u8], tags: &[u8], out: &mut Vec<u8>) {
    out.clear();
    for (i, line) in payload.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        let body = line.strip_suffix(b"\r").unwrap_or(line);
        if body.is_empty() || body.starts_with(b"_e{") || body.starts_with(b"_sc|") {
            out.extend_from_slice(line);
            continue;
        }
        match find(body, b"|#") {
            Some(at) => {
                let start = at + 2;
                let end = body[start..].iter().position(|&b| b == b'|').map_or(body.len(), |p| start + p);
                out.extend_from_slice(&body[..end]);
                if end > start {
                    out.push(b',');
                }
                out.extend_from_slice(tags);
                out.extend_from_slice(&body[end..]);
            }
            None => {
                out.extend_from_slice(body);
                out.extend_from_slice(b"|#");
                out.extend_from_slice(tags);
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statsd::parse::{parse_line, Line};

    fn tagged(payload: &str) -> String {
        let mut out = Vec::new();
        add_tags(payload.as_bytes(), b"pid:42", &mut out);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn into_the_tag_section_or_a_new_one() {
        assert_eq!(tagged("a:1|c"), "a:1|c|#pid:42");
        assert_eq!(tagged("a:1|c|@0.5|#x:y|c:abc|T123"), "a:1|c|@0.5|#x:y,pid:42|c:abc|T123");
        assert_eq!(tagged("a:1|c|#"), "a:1|c|#pid:42");
        assert_eq!(tagged("a:1|c\r\n\nb:2|g\n"), "a:1|c|#pid:42\n\nb:2|g|#pid:42\n");
        assert_eq!(tagged("_e{1,1}:a|b\n_sc|x|0"), "_e{1,1}:a|b\n_sc|x|0");
    }

    #[test]
    fn what_comes_out_parses_with_the_tag() {
        for line in ["a:1|c", "a:1|c|#x:y", "a:1:2:3|ms|@0.1|c:cid|#x"] {
            let out = tagged(line);
            let Ok(Line::Metric(m)) = parse_line(out.as_bytes(), 1024) else { panic!("{out}") };
            assert!(m.tag_iter().any(|t| t == b"pid:42"), "{out}");
        }
    }
}
