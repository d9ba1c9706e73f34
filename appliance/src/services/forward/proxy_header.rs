//! PROXY protocol at the edges of a relay: reading the header a load
//! balancer in front of us sends (`--accept-proxy`), and writing one to the
//! upstream (`--proxy-protocol v1|v2`) so it learns the real client.

use std::io;
use std::net::SocketAddr;

use netstack::tcp::TcpStream;
use netstack::wire::proxy::{self, Addresses, Header, ProxyError};

/// Which PROXY protocol version to send upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The text form.
    V1,
    /// The binary form.
    V2,
}

impl std::str::FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "v1" | "1" => Ok(Version::V1),
            "v2" | "2" => Ok(Version::V2),
            other => Err(format!("{other:?}: expected v1 or v2")),
        }
    }
}

/// The header announcing `client` -> `local` to the upstream.
pub fn encode(version: Version, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let header = Header::proxy(client, local);
    let mut out = Vec::with_capacity(64);
    match version {
        Version::V1 => {
            header.emit_v1(&mut out);
        }
        Version::V2 => {
            if header.emit_v2(&mut out).is_err() {
                // Cannot happen for two IP addresses without TLVs; send the
                // always-valid LOCAL form rather than nothing.
                out.clear();
                let _ = Header::local().emit_v2(&mut out);
            }
        }
    }
    out
}

/// The longest header we wait for (v2 with TLVs can be larger than v1's
/// 107 bytes; beyond this a client is not speaking PROXY protocol to us).
const MAX_HEADER: usize = 4096;

/// What the inbound header said, and the stream bytes that came after it.
#[derive(Debug)]
pub struct Inbound {
    /// The real client, when the header carried IP addresses.
    pub client: Option<SocketAddr>,
    /// The address the client connected to, as the header said: passed on
    /// when we announce the client upstream, so a chain of proxies keeps
    /// the original destination.
    pub dest: Option<SocketAddr>,
    /// Bytes received after the header: the start of the client's stream.
    pub rest: Vec<u8>,
}

/// Reads and strips the PROXY header at the start of `conn`, within
/// `timeout` (a client that sends part of a header and stops is cut off,
/// as HAProxy's `timeout client` does) and 4 KiB. A timeout
/// is `ErrorKind::TimedOut`.
pub async fn read_inbound(conn: &TcpStream, timeout: std::time::Duration) -> Result<Inbound, io::Error> {
    match shard::time::timeout(timeout, read_header(conn)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no complete PROXY header within {timeout:?}"),
        )),
    }
}

async fn read_header(conn: &TcpStream) -> Result<Inbound, io::Error> {
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    loop {
        match proxy::parse(&buf) {
            Ok(parsed) => {
                let (client, dest) = match parsed.header.addresses {
                    Addresses::V4 { src, dst } => (Some(SocketAddr::V4(src)), Some(SocketAddr::V4(dst))),
                    Addresses::V6 { src, dst } => (Some(SocketAddr::V6(src)), Some(SocketAddr::V6(dst))),
                    _ => (None, None),
                };
                let rest = buf[parsed.header_len..].to_vec();
                return Ok(Inbound { client, dest, rest });
            }
            Err(ProxyError::Incomplete { needed }) if buf.len() + needed <= MAX_HEADER => {
                // Read in chunks: whatever arrives past the header is the
                // client's first bytes, handed on in `rest`.
                let (n, got) = conn.recv(Vec::with_capacity(512)).await;
                if n? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed inside the PROXY header",
                    ));
                }
                buf.extend_from_slice(&got);
            }
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_both_versions_and_they_parse_back() {
        let client: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let local: SocketAddr = "198.51.100.1:80".parse().unwrap();
        let v1 = encode(Version::V1, client, local);
        assert_eq!(v1, b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 80\r\n");
        for bytes in [v1, encode(Version::V2, client, local)] {
            let parsed = proxy::parse(&bytes).unwrap();
            assert_eq!(parsed.header_len, bytes.len());
            assert!(
                matches!(parsed.header.addresses, Addresses::V4 { src, .. } if SocketAddr::V4(src) == client)
            );
        }
    }

    #[test]
    fn version_names() {
        assert_eq!("v1".parse::<Version>(), Ok(Version::V1));
        assert_eq!("v2".parse::<Version>(), Ok(Version::V2));
        assert!("v3".parse::<Version>().unwrap_err().contains("v1 or v2"));
    }
}
