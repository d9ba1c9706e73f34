//! Routing TLS by server name without terminating it: the server name
//! (SNI) read from the client's ClientHello ([`server_name`], parsed with
//! `tls-parser`), and the routes by exact name or `*.suffix` wildcard
//! ([`Routes`]).
//!
//! The ClientHello is read from the first TLS record only (at most
//! [`MAX_HELLO`] bytes): one whose handshake spans several records is
//! reported as [`Hello::Malformed`], like anything that is not a TLS
//! handshake. Nothing is decrypted (nothing is encrypted yet); the bytes
//! read are relayed to the upstream as they came.

use std::collections::HashMap;

use tls_parser::{TlsExtension, TlsMessage, TlsMessageHandshake};

/// The most a ClientHello read takes: one TLS record (5-byte header and up
/// to 2^14 bytes of payload).
pub const MAX_HELLO: usize = 5 + (1 << 14);

/// What the first bytes of a connection say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// Not enough bytes yet: at least this many more are needed.
    Incomplete(usize),
    /// A ClientHello with this server name (lowercase, no trailing dot).
    Name(String),
    /// A ClientHello without a server name.
    NoName,
    /// Not a TLS ClientHello (or one this reader declines), and why.
    Malformed(&'static str),
}

/// Reads the server name of the ClientHello at the start of `buf`.
pub fn server_name(buf: &[u8]) -> Hello {
    if buf.len() < 5 {
        return Hello::Incomplete(5 - buf.len());
    }
    if buf[0] != 0x16 || buf[1] != 3 {
        return Hello::Malformed("not a TLS handshake record");
    }
    let len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    if len == 0 || 5 + len > MAX_HELLO {
        return Hello::Malformed("TLS record length out of range");
    }
    if buf.len() < 5 + len {
        return Hello::Incomplete(5 + len - buf.len());
    }
    let Ok((_, plain)) = tls_parser::parse_tls_plaintext(&buf[..5 + len]) else {
        return Hello::Malformed("ClientHello does not parse (or spans several records)");
    };
    let Some(TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello))) = plain.msg.first() else {
        return Hello::Malformed("the first handshake message is not a ClientHello");
    };
    let Some(ext) = hello.ext else { return Hello::NoName };
    let Ok((_, extensions)) = tls_parser::parse_tls_extensions(ext) else {
        return Hello::Malformed("ClientHello extensions do not parse");
    };
    for e in extensions {
        if let TlsExtension::SNI(names) = e {
            // Type 0 is host_name, the only type defined.
            return match names.iter().find(|(kind, _)| kind.0 == 0) {
                Some((_, name)) => match normalize(name) {
                    Some(n) => Hello::Name(n),
                    None => Hello::Malformed("server name is not a DNS name"),
                },
                None => Hello::NoName,
            };
        }
    }
    Hello::NoName
}

/// A DNS name, lowercased, without a trailing dot; `None` if it is not one
/// (RFC 6066 allows only host names, never addresses or wildcards).
fn normalize(name: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(name).ok()?.trim_end_matches('.');
    let ok = !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    ok.then(|| text.to_ascii_lowercase())
}

/// Server names to route indexes: exact names first, then the wildcard
/// with the longest matching suffix (`*.example.com` matches
/// `a.example.com` and `a.b.example.com`, not `example.com`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    exact: HashMap<String, usize>,
    /// `(".example.com", route)`, longest suffix first.
    wildcard: Vec<(String, usize)>,
}

impl Routes {
    /// Routes from `(patterns, route)` pairs; a pattern is a DNS name or
    /// `*.` and one. A pattern given twice, or not a name, is an error.
    pub fn new<'a>(routes: impl IntoIterator<Item = (&'a [String], usize)>) -> Result<Routes, String> {
        let mut r = Routes::default();
        for (patterns, route) in routes {
            for p in patterns {
                let (wild, name) = match p.strip_prefix("*.") {
                    Some(rest) => (true, rest),
                    None => (false, p.as_str()),
                };
                let Some(name) = normalize(name.as_bytes()) else {
                    return Err(format!("{p:?}: expected a server name or *.name"));
                };
                let taken = if wild {
                    let suffix = format!(".{name}");
                    let dup = r.wildcard.iter().any(|(s, _)| *s == suffix);
                    r.wildcard.push((suffix, route));
                    dup
                } else {
                    r.exact.insert(name, route).is_some()
                };
                if taken {
                    return Err(format!("{p:?}: given twice"));
                }
            }
        }
        r.wildcard.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        Ok(r)
    }

    /// The route for `name` (as [`server_name`] gives it), if any.
    pub fn route(&self, name: &str) -> Option<usize> {
        if let Some(r) = self.exact.get(name) {
            return Some(*r);
        }
        self.wildcard.iter().find(|(suffix, _)| name.ends_with(suffix.as_str())).map(|(_, r)| *r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello record (TLS 1.2 framing) with `sni` if given.
    pub(crate) fn client_hello(sni: Option<&[u8]>) -> Vec<u8> {
        let mut ext = Vec::new();
        if let Some(name) = sni {
            let list_len = 3 + name.len();
            ext.extend_from_slice(&[0, 0]);
            ext.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
            ext.extend_from_slice(&(list_len as u16).to_be_bytes());
            ext.push(0);
            ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
            ext.extend_from_slice(name);
        }
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 2, 0x13, 0x01]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![1];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn reads_the_name_at_any_split() {
        let rec = client_hello(Some(b"API.Example.com."));
        for cut in 0..rec.len() {
            assert!(matches!(server_name(&rec[..cut]), Hello::Incomplete(n) if n > 0), "cut {cut}");
        }
        assert_eq!(server_name(&rec), Hello::Name("api.example.com".into()));
        let mut more = rec.clone();
        more.extend_from_slice(b"application data after the hello");
        assert_eq!(
            server_name(&more),
            Hello::Name("api.example.com".into()),
            "bytes past the record are ignored"
        );
    }

    #[test]
    fn absent_and_bad_names_are_told_apart() {
        assert_eq!(server_name(&client_hello(None)), Hello::NoName);
        assert!(matches!(server_name(&client_hello(Some(b"10.0.0.1:443"))), Hello::Malformed(_)));
        assert!(matches!(server_name(&client_hello(Some(b"a..b"))), Hello::Malformed(_)));
        assert!(matches!(server_name(b"GET / HTTP/1.1\r\n\r\n"), Hello::Malformed(_)));
        let mut cut = client_hello(Some(b"x.example"));
        let n = cut.len();
        cut[4] = cut[4].wrapping_sub(10); // record shorter than the handshake inside
        assert!(matches!(server_name(&cut[..n - 10]), Hello::Malformed(_)));
        assert!(
            matches!(server_name(&[0x16, 3, 1, 0xff, 0xff]), Hello::Malformed(_)),
            "longer than one record"
        );
    }

    #[test]
    fn routes_exact_first_then_longest_wildcard() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (a, b, c) =
            (s(&["api.example.com"]), s(&["*.example.com"]), s(&["*.eu.example.com", "Shop.Example.org"]));
        let r = Routes::new([(a.as_slice(), 1), (b.as_slice(), 2), (c.as_slice(), 3)]).expect("routes");
        assert_eq!(r.route("api.example.com"), Some(1));
        assert_eq!(r.route("www.example.com"), Some(2));
        assert_eq!(r.route("a.eu.example.com"), Some(3));
        assert_eq!(r.route("shop.example.org"), Some(3));
        assert_eq!(r.route("example.com"), None);
        assert_eq!(r.route("badexample.com"), None);
        let dup = s(&["api.example.com"]);
        assert!(Routes::new([(a.as_slice(), 1), (dup.as_slice(), 2)]).unwrap_err().contains("twice"));
        let bad = s(&["*"]);
        assert!(Routes::new([(bad.as_slice(), 1)]).is_err());
    }

    proptest::proptest! {
        /// Whatever the bytes, the reader answers, never panics, and never
        /// asks for more than one record.
        #[test]
        fn any_bytes_get_an_answer(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            if let Hello::Incomplete(n) = server_name(&bytes) {
                proptest::prop_assert!(bytes.len() + n <= MAX_HELLO);
            }
        }
    }
}
