//! SNI routing for a forward: the ClientHello is read (bounded in bytes and
//! time) before an upstream is picked, its server name picks the pool
//! (`cores::sni`), and the bytes read are relayed first, as they came. TLS
//! is never terminated.

use std::io;
use std::time::Duration;

use cores::pool::upstream::{DnsName, UpstreamSpec};
use cores::sni::{Hello, Routes, MAX_HELLO};
use netstack::tcp::TcpStream;

/// What a connection without a usable server name gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// The default pool (`upstreams`).
    Default,
    /// Refused (reset).
    Refuse,
}

/// A forward's SNI routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniConfig {
    /// Server names to routes (route `r` is pool `r + 1`).
    pub routes: Routes,
    /// Each pool's upstream entries (`HOST:PORT` of a literal or of a
    /// name): pool 0 is the default pool, pool `r + 1` route `r`'s.
    pub pools: Vec<Vec<String>>,
    /// Connections without a usable name (absent, malformed, not TLS).
    pub missing: Missing,
    /// How long a client may take to send its ClientHello.
    pub hello_timeout: Duration,
}

/// Which upstream (by position in `upstreams`) is in which pool: `[pool][i]`.
pub(crate) fn members(sni: &SniConfig, upstreams: &[UpstreamSpec], names: &[DnsName]) -> Vec<Vec<bool>> {
    sni.pools
        .iter()
        .map(|entries| {
            upstreams
                .iter()
                .map(|u| {
                    entries.iter().any(|e| *e == u.name || names.iter().any(|n| n.label == *e && n.owns(u)))
                })
                .collect()
        })
        .collect()
}

/// Where a connection goes, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// A route matched: pool `r + 1`.
    Route(usize),
    /// A name no route has: the default pool.
    Unmatched,
    /// No usable name, sent to the default pool (`sni_missing = "default"`).
    MissingToDefault,
    /// No usable name, refused.
    Refused,
}

impl Decision {
    /// The pool to pick from, unless refused.
    pub(super) fn pool(self) -> Option<usize> {
        match self {
            Decision::Route(r) => Some(r + 1),
            Decision::Unmatched | Decision::MissingToDefault => Some(0),
            Decision::Refused => None,
        }
    }
}

/// Decides from a read ClientHello.
pub(super) fn decide(sni: &SniConfig, hello: &Hello) -> Decision {
    match hello {
        Hello::Name(name) => sni.routes.route(name).map_or(Decision::Unmatched, Decision::Route),
        _ if sni.missing == Missing::Refuse => Decision::Refused,
        _ => Decision::MissingToDefault,
    }
}

/// Reads until the ClientHello is complete (or shown not to be one): the
/// answer and every byte read (`early`, bytes already read, first). At
/// most [`MAX_HELLO`] bytes; `TimedOut` after `timeout`; a client that
/// closes first is `UnexpectedEof`.
pub(super) async fn read_hello(
    conn: &TcpStream,
    early: Vec<u8>,
    timeout: Duration,
) -> io::Result<(Hello, Vec<u8>)> {
    let read = async move {
        let mut buf = early;
        loop {
            match cores::sni::server_name(&buf) {
                Hello::Incomplete(needed) => {
                    let want = needed.min(MAX_HELLO - buf.len()).max(1);
                    let (n, got) = conn.recv(Vec::with_capacity(want.max(512))).await;
                    if n? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "closed inside the ClientHello",
                        ));
                    }
                    buf.extend_from_slice(&got);
                }
                done => return Ok((done, buf)),
            }
        }
    };
    match shard::time::timeout(timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, format!("no ClientHello within {timeout:?}"))),
    }
}
