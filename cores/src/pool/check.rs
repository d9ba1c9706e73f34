//! What an active health check says and expects after it connects, as
//! HAProxy's `tcp-check send` / `expect string`: the bytes to send (as an
//! operator writes them, with escapes), and a bounded search of the reply.

/// What an active check says and expects beyond the connect, as HAProxy's
/// `tcp-check send` / `expect string`: e.g. `PING\r\n` and `+PONG` for
/// Redis, or an HTTP request line and `HTTP/1.1 200`. Empty: the connect
/// alone is the check.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Exchange {
    /// Bytes sent once connected (may be empty: a banner check).
    pub send: Vec<u8>,
    /// What the response must contain; `None`: sending is enough.
    pub expect: Option<Expect>,
}

impl Exchange {
    /// How much of a response a check reads before it gives up looking:
    /// a status line or a short reply sits well within it.
    pub const WINDOW: usize = 4096;

    /// Whether the check is a bare connect.
    pub fn is_connect_only(&self) -> bool {
        self.send.is_empty() && self.expect.is_none()
    }
}

/// Decodes the escapes an operator writes in a flag or a TOML string for a
/// check's bytes: `\r`, `\n`, `\t`, `\0`, `\\` and `\xHH`. Anything else
/// after a backslash is an error naming it.
pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex = [bytes.next(), bytes.next()];
                let digits = match hex {
                    [Some(h), Some(l)] => {
                        std::str::from_utf8(&[h, l]).ok().and_then(|d| u8::from_str_radix(d, 16).ok())
                    }
                    _ => None,
                };
                out.push(digits.ok_or("\\x needs two hex digits (e.g. \\x00)")?);
            }
            Some(c) => {
                return Err(format!("unknown escape \\{} (use \\r, \\n, \\t, \\0, \\\\ or \\xHH)", c as char))
            }
            None => return Err("a trailing backslash (write \\\\ for one)".into()),
        }
    }
    Ok(out)
}

/// The outcome of matching a check's response so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// The expected bytes were found: the check passed.
    Yes,
    /// They cannot appear any more: the check failed.
    No,
    /// Not yet: read more (on end of stream, treat as [`Match::No`]).
    NeedMore,
}

/// A send/expect check's expectation: `needle` must appear within the first
/// `within` bytes of the response. Bounding the window bounds what a check
/// buffers, whatever the upstream sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    needle: Vec<u8>,
    within: usize,
}

impl Expect {
    /// Expects `needle` within the first `within` bytes (raised to the
    /// needle's length, the least window in which it can appear).
    pub fn new(needle: impl Into<Vec<u8>>, within: usize) -> Self {
        let needle = needle.into();
        let within = within.max(needle.len());
        Self { needle, within }
    }

    /// How many bytes of the response the check needs at most.
    pub fn window(&self) -> usize {
        self.within
    }

    /// Matches the response received so far (from its first byte; bytes
    /// beyond the window are ignored).
    pub fn matches(&self, received: &[u8]) -> Match {
        let window = &received[..received.len().min(self.within)];
        if self.needle.is_empty() || window.windows(self.needle.len()).any(|w| w == self.needle) {
            Match::Yes
        } else if received.len() >= self.within {
            Match::No
        } else {
            Match::NeedMore
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_decode_as_an_operator_writes_them() {
        assert_eq!(unescape(r"PING\r\n").unwrap(), b"PING\r\n");
        assert_eq!(unescape("PING\r\n").unwrap(), b"PING\r\n", "real control characters pass");
        assert_eq!(unescape(r"a\\b\x00\x7f\t").unwrap(), b"a\\b\0\x7f\t");
        assert!(unescape(r"\q").unwrap_err().contains(r"\q"));
        assert!(unescape(r"\x4").is_err());
        assert!(unescape(r"\xzz").is_err());
        assert!(unescape("trailing\\").is_err());
    }

    #[test]
    fn expect_matches_within_the_window() {
        let e = Expect::new(&b"+PONG"[..], 16);
        assert_eq!(e.matches(b""), Match::NeedMore);
        assert_eq!(e.matches(b"+PO"), Match::NeedMore);
        assert_eq!(e.matches(b"+PONG\r\n"), Match::Yes);
        assert_eq!(e.matches(b"xxxxxxxx+PONG"), Match::Yes);
        assert_eq!(e.matches(b"-ERR unknown command"), Match::No);
        assert_eq!(e.matches(b"xxxxxxxxxxxxxx+PONG"), Match::No, "starts inside the window, ends outside");
        assert_eq!(e.matches(b"xxxxxxxxxxx+PONG"), Match::Yes, "ends exactly at the window's end");
        let tight = Expect::new(&b"HTTP/1.1 200"[..], 0);
        assert_eq!(tight.window(), 12);
        assert_eq!(tight.matches(b"HTTP/1.1 200 OK"), Match::Yes);
        assert_eq!(tight.matches(b"HTTP/1.1 503 "), Match::No);
        assert_eq!(Expect::new(Vec::new(), 0).matches(b""), Match::Yes);
    }

    proptest! {
        #[test]
        fn expect_never_panics_and_agrees_with_a_plain_search(
            needle in proptest::collection::vec(0u8..4, 0..5),
            within in 0usize..12,
            received in proptest::collection::vec(0u8..4, 0..20),
        ) {
            let e = Expect::new(needle.clone(), within);
            let w = e.window();
            let found = (0..=received.len().min(w)).any(|start| {
                received.len().min(w) >= start + needle.len() && received[start..start + needle.len()] == needle[..]
            });
            let expected = if found { Match::Yes } else if received.len() >= w { Match::No } else { Match::NeedMore };
            prop_assert_eq!(e.matches(&received), expected);
        }
    }
}
