//! The PROXY protocol (HAProxy's `proxy-protocol.txt`), versions 1 and 2:
//! the header a load balancer puts in front of a forwarded connection to
//! tell the backend who the client was.
//!
//! [`parse`] takes the first bytes read from a connection, tells v1 (a text
//! line) from v2 (binary, [`v2`]) and returns the [`Header`] and how
//! many bytes it took; the application data starts right after. When the
//! bytes so far are a valid start of a header, it returns
//! [`ProxyError::Incomplete`] with a lower bound on the bytes still to read,
//! so a reader never has to consume past the header. [`Header::emit`] writes
//! one, for the sending side of the balancer.
//!
//! ```
//! use netstack::wire::proxy::{self, Addresses, Header, ProxyError, Version};
//!
//! # fn main() -> Result<(), ProxyError> {
//! let header = Header::proxy("192.0.2.7:51000".parse().unwrap(), "198.51.100.1:443".parse().unwrap())
//!     .with_tlv(proxy::kind::AUTHORITY, b"example.com".to_vec());
//! let mut stream = Vec::new();
//! header.emit(&mut stream)?;
//! stream.extend_from_slice(b"GET / HTTP/1.1\r\n");
//!
//! // The receiving side, after a short first read:
//! assert!(matches!(proxy::parse(&stream[..10]), Err(ProxyError::Incomplete { needed: 6 })));
//! let parsed = proxy::parse(&stream)?;
//! assert_eq!(parsed.header, header);
//! assert!(matches!(parsed.header.addresses, Addresses::V4 { .. }));
//! assert_eq!(&stream[parsed.header_len..], b"GET / HTTP/1.1\r\n");
//! # Ok(()) }
//! ```
//!
//! Choices where the spec leaves room, all on the strict side since the
//! header comes from a trusted peer and anything odd is a misconfiguration:
//!
//! * v1 addresses must be in the form `std` parses: IPv4 dotted quads with
//!   no leading zeros (`010.0.0.1` is rejected, as it could be octal);
//!   ports are decimal 0..=65535 with no sign and no leading zeros. Fields
//!   are separated by exactly one space. A bare LF, or a CR not followed by
//!   LF, is an error rather than a reason to wait for more bytes.
//! * v2 `LOCAL` headers, and `PROXY` headers with the `UNSPEC` family, carry
//!   no addresses: everything after the 16 fixed bytes is skipped unread, TLVs
//!   included, as the spec tells receivers to ignore that block.
//! * A v2 `CRC32C` TLV is verified when present; a second one is an error.

mod crc32c;
mod v1;
pub mod v2;

use std::fmt;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};

/// The longest v1 header, CRLF included (the spec's limit).
pub const V1_MAX_LEN: usize = 107;
/// The shortest v1 header: `PROXY UNKNOWN\r\n`.
pub const V1_MIN_LEN: usize = 15;
/// The 12 bytes every v2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Length of the fixed part of a v2 header (signature, version/command,
/// family/transport, length).
pub const V2_HEADER_LEN: usize = 16;
/// Length of a v2 `UNIX` path field.
pub const UNIX_PATH_LEN: usize = 108;

/// TLV types (the `type` byte of a v2 TLV) named by the spec.
pub mod kind {
    /// Application-Layer Protocol Negotiation: the protocol, as in TLS ALPN.
    pub const ALPN: u8 = 0x01;
    /// The host name the client asked for (TLS SNI or similar), UTF-8.
    pub const AUTHORITY: u8 = 0x02;
    /// CRC-32C of the whole header, 4 bytes, big-endian.
    pub const CRC32C: u8 = 0x03;
    /// Padding, to be ignored.
    pub const NOOP: u8 = 0x04;
    /// An opaque connection identifier, at most 128 bytes.
    pub const UNIQUE_ID: u8 = 0x05;
    /// TLS details: client flags, verify result, then sub-TLVs ([`super::v2::Ssl`]).
    pub const SSL: u8 = 0x20;
    /// SSL sub-TLV: the TLS version, as text.
    pub const SSL_VERSION: u8 = 0x21;
    /// SSL sub-TLV: the client certificate's Common Name.
    pub const SSL_CN: u8 = 0x22;
    /// SSL sub-TLV: the cipher, as text.
    pub const SSL_CIPHER: u8 = 0x23;
    /// SSL sub-TLV: the certificate's signature algorithm.
    pub const SSL_SIG_ALG: u8 = 0x24;
    /// SSL sub-TLV: the certificate's key algorithm.
    pub const SSL_KEY_ALG: u8 = 0x25;
    /// The network namespace name, US-ASCII.
    pub const NETNS: u8 = 0x30;
    /// First type of the range for application-specific data.
    pub const MIN_CUSTOM: u8 = 0xe0;
    /// Last type of the range for application-specific data.
    pub const MAX_CUSTOM: u8 = 0xef;
    /// First type of the range for experiments.
    pub const MIN_EXPERIMENT: u8 = 0xf0;
    /// Last type of the range for experiments.
    pub const MAX_EXPERIMENT: u8 = 0xf7;
}

/// Why a PROXY header could not be read (or, for the `V2` emit variants, written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The input is a valid start of a header but ends early; read at least `needed` more bytes.
    #[error("PROXY header incomplete: read at least {needed} more bytes")]
    Incomplete {
        /// A lower bound on the bytes still missing; reading this many never goes past the header.
        needed: usize,
    },
    /// The input starts with neither `PROXY ` (v1) nor the v2 signature.
    #[error("not a PROXY protocol header: the connection starts with neither \"PROXY \" nor the v2 signature (is the peer set to send one?)")]
    NotProxy,
    /// A v1 line has no CRLF within the 107 bytes the spec allows.
    #[error("PROXY v1: no CRLF within the first {V1_MAX_LEN} bytes")]
    V1LineTooLong,
    /// A v1 line has an LF without CR before it, or a CR without LF after it.
    #[error("PROXY v1: stray CR or LF at byte {at} (the line must end with CRLF)")]
    V1BadLineEnding {
        /// Offset of the stray byte.
        at: usize,
    },
    /// The v1 protocol field is not `TCP4`, `TCP6` or `UNKNOWN`.
    #[error("PROXY v1: protocol {token:?} is not TCP4, TCP6 or UNKNOWN")]
    V1BadProtocol {
        /// The field as received (lossy UTF-8).
        token: String,
    },
    /// A v1 `TCP4`/`TCP6` line does not have exactly four fields after the protocol, one space apart.
    #[error("PROXY v1: {found} fields after the protocol, expected 4 separated by single spaces")]
    V1BadFields {
        /// How many (possibly empty) fields were found.
        found: usize,
    },
    /// A v1 address is not a valid address of the family the protocol field names.
    #[error("PROXY v1: {token:?} is not a valid {family} address")]
    V1BadAddress {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// The field as received (lossy UTF-8).
        token: String,
    },
    /// A v1 port is not a decimal number 0..=65535 without sign or leading zeros.
    #[error("PROXY v1: port {token:?} is not a number from 0 to 65535 without leading zeros")]
    V1BadPort {
        /// The field as received (lossy UTF-8).
        token: String,
    },
    /// The v2 version nibble is not 2.
    #[error("PROXY v2: version {version} in the version/command byte, expected 2")]
    V2BadVersion {
        /// The version nibble found.
        version: u8,
    },
    /// The v2 command nibble is neither LOCAL (0) nor PROXY (1).
    #[error("PROXY v2: command {command} is neither LOCAL (0) nor PROXY (1)")]
    V2BadCommand {
        /// The command nibble found.
        command: u8,
    },
    /// The v2 family/transport byte of a PROXY header is not one the spec defines.
    #[error(
        "PROXY v2: family/transport byte 0x{fam:02x} is not one of 0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32"
    )]
    V2BadFamily {
        /// The byte found.
        fam: u8,
    },
    /// The v2 length is shorter than the address block of the family.
    #[error("PROXY v2: length {len} is shorter than the {needed}-byte {family} address block")]
    V2AddressTooShort {
        /// `INET`, `INET6` or `UNIX`.
        family: &'static str,
        /// Size of that family's address block.
        needed: usize,
        /// The length field.
        len: usize,
    },
    /// A v2 TLV (or SSL sub-TLV) runs past the end of the block that holds it.
    #[error("PROXY v2: TLV at byte {offset} needs {needed} bytes, only {remaining} left")]
    V2BadTlv {
        /// Offset of the TLV from the start of the header (of the SSL value for sub-TLVs).
        offset: usize,
        /// Bytes the TLV announces, its 3-byte type and length included.
        needed: usize,
        /// Bytes left in the block.
        remaining: usize,
    },
    /// A v2 `CRC32C` TLV whose value is not 4 bytes long.
    #[error("PROXY v2: CRC32C TLV is {len} bytes long, expected 4")]
    V2BadCrc32cLength {
        /// The value length found.
        len: usize,
    },
    /// A v2 header with more than one `CRC32C` TLV.
    #[error("PROXY v2: more than one CRC32C TLV")]
    V2DuplicateCrc32c,
    /// The v2 `CRC32C` TLV does not match the header.
    #[error("PROXY v2: CRC32C is 0x{stored:08x}, header sums to 0x{computed:08x} (corrupted in transit)")]
    V2Crc32cMismatch {
        /// The checksum in the TLV.
        stored: u32,
        /// The checksum of the header as received.
        computed: u32,
    },
    /// A v2 `SSL` TLV value shorter than its 5-byte client/verify prefix.
    #[error("PROXY v2: SSL TLV is {len} bytes long, shorter than its 5-byte prefix")]
    V2BadSsl {
        /// The value length found.
        len: usize,
    },
    /// (emit) Addresses with an unspecified transport have no v2 family/transport byte.
    #[error("PROXY v2: cannot emit addresses with an Unspec transport (use Stream or Dgram)")]
    V2NoTransport,
    /// (emit) The addresses and TLVs do not fit the 16-bit v2 length field.
    #[error(
        "PROXY v2: {len} bytes after the fixed header exceed the 65535 the length field allows (drop TLVs)"
    )]
    V2TooLong {
        /// The length the header would need.
        len: usize,
    },
}

/// The protocol version a header came in, or is to be emitted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// The text format.
    V1,
    /// The binary format.
    V2,
}

/// What the receiver should do with the addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// The connection was made by the proxy itself (a health check): use
    /// the connection's real endpoints. v2 only; v1 says `UNKNOWN`.
    Local,
    /// The connection is relayed for the client the addresses name.
    Proxy,
}

/// The transport of the relayed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Unknown or unspecified (v1 `UNKNOWN`, v2 `UNSPEC`, `LOCAL`).
    Unspec,
    /// A stream: TCP, or a UNIX stream socket.
    Stream,
    /// Datagrams: UDP, or a UNIX datagram socket (v2 only).
    Dgram,
}

/// A v2 `UNIX` address: a 108-byte path field, NUL-padded. Kept whole so
/// that abstract socket names (starting with NUL) survive.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnixPath(pub [u8; UNIX_PATH_LEN]);

impl UnixPath {
    /// A path padded with NULs; `None` if longer than 108 bytes.
    pub fn new(path: &[u8]) -> Option<Self> {
        let mut raw = [0u8; UNIX_PATH_LEN];
        raw.get_mut(..path.len())?.copy_from_slice(path);
        Some(Self(raw))
    }

    /// The path up to the first NUL (empty for an abstract name; see [`Self::raw`]).
    pub fn as_bytes(&self) -> &[u8] {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(UNIX_PATH_LEN);
        &self.0[..end]
    }

    /// All 108 bytes.
    pub fn raw(&self) -> &[u8; UNIX_PATH_LEN] {
        &self.0
    }
}

impl Default for UnixPath {
    fn default() -> Self {
        Self([0; UNIX_PATH_LEN])
    }
}

impl fmt::Debug for UnixPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UnixPath({:?})", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// The addresses a header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Addresses {
    /// None: v1 `UNKNOWN`, v2 `LOCAL`, or the v2 `UNSPEC` family.
    None,
    /// IPv4 source (the client) and destination (the address it connected to).
    V4 {
        /// The client.
        src: SocketAddrV4,
        /// The address the client connected to.
        dst: SocketAddrV4,
    },
    /// IPv6 source and destination; flow info and scope id are not carried.
    V6 {
        /// The client.
        src: SocketAddrV6,
        /// The address the client connected to.
        dst: SocketAddrV6,
    },
    /// UNIX socket paths (v2 only).
    Unix {
        /// The client's path.
        src: UnixPath,
        /// The path it connected to.
        dst: UnixPath,
    },
}

/// A v2 TLV, owned: type and value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tlv {
    /// The type byte ([`kind`] names the known ones); unknown types are kept.
    pub kind: u8,
    /// The value, at most 65535 bytes.
    pub value: Vec<u8>,
}

/// The meaning of a PROXY header, v1 or v2.
///
/// `parse(emit(h)) == h` holds for headers in the form `parse` returns:
/// `LOCAL`, and `PROXY` without addresses, come with `Transport::Unspec`
/// and no TLVs; addresses come with `Stream` or `Dgram`; IPv6 addresses
/// have zero flow info and scope id; v1 headers are `Proxy`, carry no TLVs,
/// and have addresses only with `Stream` (see [`Self::fits_v1`]). The
/// constructors build headers in that form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Header {
    /// The version it was parsed from, or is to be emitted in by [`Self::emit`].
    pub version: Version,
    /// `LOCAL` or `PROXY`.
    pub command: Command,
    /// The transport of the relayed connection.
    pub transport: Transport,
    /// Source and destination.
    pub addresses: Addresses,
    /// v2 TLVs in wire order, unknown types included.
    pub tlvs: Vec<Tlv>,
}

fn v6(addr: SocketAddrV6) -> SocketAddrV6 {
    SocketAddrV6::new(*addr.ip(), addr.port(), 0, 0)
}

impl Header {
    /// A v2 `PROXY` header for a TCP connection from `src` to `dst`. If one
    /// is IPv4 and the other IPv6 (a dual-stack listener), the IPv4 one is
    /// written as an IPv4-mapped IPv6 address.
    pub fn proxy(src: SocketAddr, dst: SocketAddr) -> Self {
        match (src, dst) {
            (SocketAddr::V4(s), SocketAddr::V4(d)) => Self::proxy_v4(s, d),
            (s, d) => {
                let six = |a: SocketAddr| match a {
                    SocketAddr::V4(a) => SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0),
                    SocketAddr::V6(a) => a,
                };
                Self::proxy_v6(six(s), six(d))
            }
        }
    }

    /// A v2 `PROXY` header for a TCP connection over IPv4.
    pub fn proxy_v4(src: SocketAddrV4, dst: SocketAddrV4) -> Self {
        Self::with_addresses(Addresses::V4 { src, dst })
    }

    /// A v2 `PROXY` header for a TCP connection over IPv6 (flow info and
    /// scope id are dropped: the format has no room for them).
    pub fn proxy_v6(src: SocketAddrV6, dst: SocketAddrV6) -> Self {
        Self::with_addresses(Addresses::V6 { src: v6(src), dst: v6(dst) })
    }

    /// A v2 `PROXY` header for a UNIX stream connection.
    pub fn proxy_unix(src: UnixPath, dst: UnixPath) -> Self {
        Self::with_addresses(Addresses::Unix { src, dst })
    }

    fn with_addresses(addresses: Addresses) -> Self {
        Self {
            version: Version::V2,
            command: Command::Proxy,
            transport: Transport::Stream,
            addresses,
            tlvs: Vec::new(),
        }
    }

    /// A v2 `LOCAL` header: a connection of the proxy's own, such as a
    /// health check.
    pub fn local() -> Self {
        Self {
            version: Version::V2,
            command: Command::Local,
            transport: Transport::Unspec,
            addresses: Addresses::None,
            tlvs: Vec::new(),
        }
    }

    /// A v1 `PROXY UNKNOWN` header: a relayed connection whose addresses
    /// cannot be told.
    pub fn unknown() -> Self {
        Self {
            version: Version::V1,
            command: Command::Proxy,
            transport: Transport::Unspec,
            addresses: Addresses::None,
            tlvs: Vec::new(),
        }
    }

    /// The same header, to be emitted as `version`.
    pub fn with_version(mut self, version: Version) -> Self {
        self.version = version;
        self
    }

    /// The same header with another transport (for UDP: `Transport::Dgram`).
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// The same header with a TLV appended.
    pub fn with_tlv(mut self, kind: u8, value: Vec<u8>) -> Self {
        self.tlvs.push(Tlv { kind, value });
        self
    }

    /// The same header with a `CRC32C` TLV appended, which [`Self::emit_v2`]
    /// fills with the checksum of the header.
    pub fn with_crc32c(self) -> Self {
        self.with_tlv(kind::CRC32C, vec![0; 4])
    }

    /// The value of the first TLV of type `kind`.
    pub fn tlv(&self, kind: u8) -> Option<&[u8]> {
        self.tlvs.iter().find(|t| t.kind == kind).map(|t| &t.value[..])
    }

    /// The `SSL` TLV, decoded, if there is one.
    pub fn ssl(&self) -> Option<Result<v2::Ssl<'_>, ProxyError>> {
        self.tlv(kind::SSL).map(v2::Ssl::parse)
    }

    /// Whether [`Self::emit_v1`] carries everything in this header: a
    /// `PROXY` header over TCP/IPv4 or TCP/IPv6, or one without addresses,
    /// and no TLVs.
    pub fn fits_v1(&self) -> bool {
        self.command == Command::Proxy
            && self.tlvs.is_empty()
            && match self.addresses {
                Addresses::V4 { .. } | Addresses::V6 { .. } => self.transport == Transport::Stream,
                Addresses::None => self.transport == Transport::Unspec,
                Addresses::Unix { .. } => false,
            }
    }

    /// Appends the header in the format its `version` names; returns the
    /// bytes written.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<usize, ProxyError> {
        match self.version {
            Version::V1 => Ok(self.emit_v1(out)),
            Version::V2 => self.emit_v2(out),
        }
    }

    /// Appends the header as a v1 line; returns the bytes written.
    ///
    /// v1 says less than v2: anything but a `PROXY` header with TCP over
    /// IPv4 or IPv6 is written as `PROXY UNKNOWN` (as HAProxy does for UNIX
    /// sockets), and TLVs are dropped. [`Self::fits_v1`] tells whether
    /// anything is lost.
    pub fn emit_v1(&self, out: &mut Vec<u8>) -> usize {
        v1::emit(self, out)
    }

    /// Appends the header in the binary format; returns the bytes written.
    ///
    /// `LOCAL` headers, and `PROXY` headers without addresses, are written
    /// as the 16 fixed bytes alone: receivers skip anything after them, so
    /// their TLVs are not written. A `CRC32C` TLV gets the checksum of the
    /// header, whatever value it held. Fails if there are addresses but no
    /// transport, more than one `CRC32C` TLV, or more than 65535 bytes of
    /// addresses and TLVs.
    pub fn emit_v2(&self, out: &mut Vec<u8>) -> Result<usize, ProxyError> {
        v2::emit(self, out)
    }

    /// The bytes [`Self::emit`] writes.
    pub fn buffer_len(&self) -> Result<usize, ProxyError> {
        match self.version {
            Version::V1 => Ok(v1::emitted_len(self)),
            Version::V2 => v2::emitted_len(self),
        }
    }
}

/// A header read from the start of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// What the header says.
    pub header: Header,
    /// Bytes the header takes: strip this many before handing the stream on.
    pub header_len: usize,
    raw: &'a [u8],
}

impl<'a> Parsed<'a> {
    /// The header's bytes.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// A view of the header's bytes, for v2, to read TLVs without copying.
    pub fn v2_view(&self) -> Option<v2::Packet<&'a [u8]>> {
        match self.header.version {
            Version::V1 => None,
            Version::V2 => v2::Packet::new_checked(self.raw).ok(),
        }
    }
}

/// Reads a PROXY header, v1 or v2, from the start of `buf` (the first bytes
/// of a connection; anything after the header is left alone).
///
/// Returns [`ProxyError::Incomplete`] while `buf` is a valid start of a
/// header that has not ended yet: read at least `needed` more bytes and
/// call again. For v2 `needed` is exact once the 16 fixed bytes are in; for
/// v1 it is 1 until the CRLF arrives.
pub fn parse(buf: &[u8]) -> Result<Parsed<'_>, ProxyError> {
    let (header, header_len) = match buf.first() {
        None => return Err(ProxyError::Incomplete { needed: 1 }),
        Some(b'P') => v1::parse(buf)?,
        Some(b'\r') => v2::parse(buf)?,
        Some(_) => return Err(ProxyError::NotProxy),
    };
    // Both parsers return a length within `buf`; `get` keeps that a
    // checked fact rather than a reason to panic.
    let raw = buf
        .get(..header_len)
        .ok_or_else(|| ProxyError::Incomplete { needed: header_len.saturating_sub(buf.len()) })?;
    Ok(Parsed { header, header_len, raw })
}

/// Lossy text of a field for an error message.
fn token(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
#[path = "tests_mod.rs"]
mod tests;
