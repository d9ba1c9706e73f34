//! Cost control before aggregation: metrics dropped by name pattern, and
//! tag keys stripped (a request id or a user id as a tag makes a new key
//! per request).
//!
//! Patterns are globs over the dot-separated name, as statsd_exporter's
//! mapping globs: `*` matches any run of characters within one part (never
//! a `.`), everything else matches itself. `debug.*` drops `debug.x` but
//! not `debug.x.y`; `*.tmp.*` drops `a.tmp.b`.
//!
//! ```
//! use cores::statsd::rules::Rules;
//! let r = Rules::new(&["debug.*".into()], &["request_id".into()]).unwrap();
//! assert!(r.drops(b"debug.x") && !r.drops(b"debug.x.y"));
//! assert!(!r.keeps_tag(b"request_id:42") && r.keeps_tag(b"env:prod"));
//! ```

/// Patterns at most, and their length: rules are checked per line.
pub const MAX_RULES: usize = 256;
const MAX_PATTERN: usize = 256;

/// The drop patterns and the tag keys to strip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    drop: Vec<Vec<u8>>,
    strip: Vec<Vec<u8>>,
}

impl Rules {
    /// Rules from glob patterns and tag keys; an empty or over-long
    /// pattern, or more than [`MAX_RULES`], is an error.
    pub fn new(drop: &[String], strip: &[String]) -> Result<Rules, String> {
        if drop.len() + strip.len() > MAX_RULES {
            return Err(format!("{} rules: {MAX_RULES} at most", drop.len() + strip.len()));
        }
        for p in drop.iter().chain(strip) {
            if p.is_empty() || p.len() > MAX_PATTERN {
                return Err(format!("{p:?}: a pattern is 1 to {MAX_PATTERN} bytes"));
            }
        }
        if let Some(k) = strip.iter().find(|k| k.contains(':') || k.contains(',')) {
            return Err(format!("{k:?}: a tag key has no ':' or ','"));
        }
        Ok(Rules {
            drop: drop.iter().map(|p| p.as_bytes().to_vec()).collect(),
            strip: strip.iter().map(|k| k.as_bytes().to_vec()).collect(),
        })
    }

    /// Whether a metric named `name` is dropped.
    pub fn drops(&self, name: &[u8]) -> bool {
        self.drop.iter().any(|p| glob(p, name))
    }

    /// Whether tag `tag` (`key:value` or a bare `key`) is kept.
    pub fn keeps_tag(&self, tag: &[u8]) -> bool {
        let key = tag.split(|&b| b == b':').next().unwrap_or(tag);
        !self.strip.iter().any(|k| k.as_slice() == key)
    }

    /// Whether any tag is stripped at all (so the key needs filtering).
    pub fn strips(&self) -> bool {
        !self.strip.is_empty()
    }
}

/// `pattern` against `name`: `*` is any run without a `.`. Iterative with
/// one backtrack point per part, so linear in practice and never recursive.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    // The last `*` seen and where in `name` it started matching.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if p < pattern.len() && pattern[p] == name[n] {
            p += 1;
            n += 1;
        } else if let Some((sp, sn)) = star.filter(|&(_, sn)| name[sn] != b'.') {
            // Let the star take one more character (never a dot).
            star = Some((sp, sn + 1));
            p = sp + 1;
            n = sn + 1;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_stay_within_a_part() {
        for (p, n, want) in [
            ("debug.*", "debug.x", true),
            ("debug.*", "debug.x.y", false),
            ("debug.*", "debug.", true),
            ("*.tmp.*", "a.tmp.b", true),
            ("*.tmp.*", "a.b.tmp.c", false),
            ("api.*.latency", "api.users.latency", true),
            ("api.*.latency", "api.users.v2.latency", false),
            ("api.*s", "api.users", true),
            ("api.*s", "api.user", false),
            ("exact.name", "exact.name", true),
            ("exact.name", "exact.names", false),
            ("*", "anything", true),
            ("*", "two.parts", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axx.byyc", false),
        ] {
            assert_eq!(glob(p.as_bytes(), n.as_bytes()), want, "{p} ~ {n}");
        }
    }

    #[test]
    fn tags_by_key() {
        let r = Rules::new(&[], &["request_id".into(), "user".into()]).expect("rules");
        assert!(!r.keeps_tag(b"request_id:1") && !r.keeps_tag(b"user") && !r.keeps_tag(b"user:x"));
        assert!(r.keeps_tag(b"request_idx:1") && r.keeps_tag(b"env:user"));
        assert!(Rules::new(&[], &["a:b".into()]).is_err());
        assert!(Rules::new(&["".into()], &[]).is_err());
        assert!(Rules::new(&vec!["x".into(); MAX_RULES + 1], &[]).is_err());
    }

    proptest::proptest! {
        /// A pattern without `*` matches only itself; any name matches the
        /// pattern made of its parts as stars.
        #[test]
        fn literals_and_stars(name in "[a-z]{1,4}(\\.[a-z]{1,4}){0,3}") {
            proptest::prop_assert!(glob(name.as_bytes(), name.as_bytes()));
            let stars: Vec<&str> = name.split('.').map(|_| "*").collect();
            proptest::prop_assert!(glob(stars.join(".").as_bytes(), name.as_bytes()));
            let fewer = stars[1..].join(".");
            proptest::prop_assert!(stars.len() == 1 || !glob(fewer.as_bytes(), name.as_bytes()));
        }
    }
}
