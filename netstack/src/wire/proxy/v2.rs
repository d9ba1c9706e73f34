//! PROXY protocol v2: a fixed 16-byte header (signature, version and
//! command, family and transport, length of the rest), an address block
//! whose size the family fixes, then TLVs up to the length.
//!
//! [`Packet`] is the zero-copy view: the fixed header and the INET/INET6
//! address blocks are read as `#[repr(C)]` bytemuck structs, and
//! [`Packet::tlvs`] walks the TLVs without copying. [`Ssl`] decodes the
//! value of the `SSL` TLV, which nests sub-TLVs of its own.

use bytemuck::{Pod, Zeroable};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use super::crc32c::Crc32c;
use super::{
    kind, Addresses, Command, Header, ProxyError, Tlv, Transport, UnixPath, Version, UNIX_PATH_LEN,
    V2_HEADER_LEN, V2_SIGNATURE,
};

/// The version nibble of every v2 header.
pub const VERSION: u8 = 2;
/// Command nibble: a connection of the proxy's own.
pub const CMD_LOCAL: u8 = 0x0;
/// Command nibble: a relayed connection.
pub const CMD_PROXY: u8 = 0x1;
/// Family nibble: unspecified (no address block is read).
pub const AF_UNSPEC: u8 = 0x0;
/// Family nibble: IPv4, a 12-byte address block.
pub const AF_INET: u8 = 0x1;
/// Family nibble: IPv6, a 36-byte address block.
pub const AF_INET6: u8 = 0x2;
/// Family nibble: UNIX, a 216-byte address block.
pub const AF_UNIX: u8 = 0x3;
/// Transport nibble: unspecified.
pub const TRANSPORT_UNSPEC: u8 = 0x0;
/// Transport nibble: stream.
pub const TRANSPORT_STREAM: u8 = 0x1;
/// Transport nibble: datagram.
pub const TRANSPORT_DGRAM: u8 = 0x2;
/// Length of the IPv4 address block.
pub const INET_BLOCK_LEN: usize = std::mem::size_of::<Ipv4Block>();
/// Length of the IPv6 address block.
pub const INET6_BLOCK_LEN: usize = std::mem::size_of::<Ipv6Block>();
/// Length of the UNIX address block.
pub const UNIX_BLOCK_LEN: usize = 2 * UNIX_PATH_LEN;

/// The family/transport bytes a `PROXY` header may carry; the spec has
/// receivers drop anything else.
const VALID_FAMS: [u8; 7] = [0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32];

/// The fixed 16 bytes of every v2 header, as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct FixedHeader {
    /// [`V2_SIGNATURE`].
    pub signature: [u8; 12],
    /// Version (high nibble, 2) and command (low nibble).
    pub ver_cmd: u8,
    /// Address family (high nibble) and transport (low nibble).
    pub fam: u8,
    /// Length of everything after these 16 bytes, big-endian.
    pub len: [u8; 2],
}

/// The IPv4 address block (family `INET`), as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct Ipv4Block {
    /// Source address.
    pub src_addr: [u8; 4],
    /// Destination address.
    pub dst_addr: [u8; 4],
    /// Source port, big-endian.
    pub src_port: [u8; 2],
    /// Destination port, big-endian.
    pub dst_port: [u8; 2],
}

/// The IPv6 address block (family `INET6`), as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct Ipv6Block {
    /// Source address.
    pub src_addr: [u8; 16],
    /// Destination address.
    pub dst_addr: [u8; 16],
    /// Source port, big-endian.
    pub src_port: [u8; 2],
    /// Destination port, big-endian.
    pub dst_port: [u8; 2],
}

// The UNIX block (two 108-byte paths) is not a Pod struct: bytemuck only
// implements Pod for arrays of listed lengths unless its
// `min_const_generics` feature is on, and 108 is not listed. It is read as
// two slices instead.

mod field {
    use std::ops::Range;

    pub const FIXED: Range<usize> = 0..16;
    pub const SIGNATURE: Range<usize> = 0..12;
    pub const VER_CMD: usize = 12;
    pub const FAM: usize = 13;
    pub const ADDRESSES: usize = 16;
}

/// The size of the address block of family nibble `af`; `None` for
/// `UNSPEC` (whose block, if any, is skipped unread) and unknown families.
pub fn block_len(af: u8) -> Option<usize> {
    match af {
        AF_INET => Some(INET_BLOCK_LEN),
        AF_INET6 => Some(INET6_BLOCK_LEN),
        AF_UNIX => Some(UNIX_BLOCK_LEN),
        _ => None,
    }
}

/// Checks what of the fixed header `buf` holds: signature, version, and
/// (as soon as the bytes are there, so bad input fails before it is whole)
/// command and, for `PROXY`, family.
fn check_start(buf: &[u8], strict: bool) -> Result<(), ProxyError> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] != V2_SIGNATURE[..n] {
        return Err(ProxyError::NotProxy);
    }
    if let Some(&ver_cmd) = buf.get(field::VER_CMD) {
        if ver_cmd >> 4 != VERSION {
            return Err(ProxyError::V2BadVersion { version: ver_cmd >> 4 });
        }
        let command = ver_cmd & 0x0f;
        if strict && command > CMD_PROXY {
            return Err(ProxyError::V2BadCommand { command });
        }
        match buf.get(field::FAM) {
            Some(&fam) if strict && command == CMD_PROXY && !VALID_FAMS.contains(&fam) => {
                return Err(ProxyError::V2BadFamily { fam });
            }
            _ => {}
        }
    }
    Ok(())
}

/// A view of a v2 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; for headers about to be written.
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, ProxyError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the signature and version, and that the buffer holds the
    /// whole header (it may hold more: the stream that follows); after
    /// that no accessor panics. Command, family and TLVs are not checked:
    /// the accessors report them as found.
    pub fn check_len(&self) -> Result<(), ProxyError> {
        let buf = self.buffer.as_ref();
        check_start(buf, false)?;
        let missing = V2_HEADER_LEN.saturating_sub(buf.len());
        if missing > 0 {
            return Err(ProxyError::Incomplete { needed: missing });
        }
        match self.total_len().checked_sub(buf.len()) {
            Some(needed) if needed > 0 => Err(ProxyError::Incomplete { needed }),
            _ => Ok(()),
        }
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The fixed 16 bytes.
    pub fn fixed(&self) -> &FixedHeader {
        bytemuck::from_bytes(&self.buffer.as_ref()[field::FIXED])
    }

    /// The version nibble (2 once checked).
    pub fn version(&self) -> u8 {
        self.fixed().ver_cmd >> 4
    }

    /// The command nibble: [`CMD_LOCAL`], [`CMD_PROXY`], or an invalid value.
    pub fn command(&self) -> u8 {
        self.fixed().ver_cmd & 0x0f
    }

    /// The whole family/transport byte.
    pub fn fam(&self) -> u8 {
        self.fixed().fam
    }

    /// The family nibble ([`AF_INET`] and so on).
    pub fn family(&self) -> u8 {
        self.fam() >> 4
    }

    /// The transport nibble ([`TRANSPORT_STREAM`] and so on).
    pub fn transport(&self) -> u8 {
        self.fam() & 0x0f
    }

    /// The length field: bytes after the fixed header.
    pub fn len(&self) -> u16 {
        u16::from_be_bytes(self.fixed().len)
    }

    /// Whether nothing follows the fixed header.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Length of the whole header.
    pub fn total_len(&self) -> usize {
        V2_HEADER_LEN + usize::from(self.len())
    }

    /// Everything after the fixed header, up to the length: addresses and TLVs.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::ADDRESSES..self.total_len()]
    }

    /// The IPv4 address block, if the family is `INET` and the length covers it.
    pub fn ipv4_block(&self) -> Option<&Ipv4Block> {
        let bytes = self.payload().get(..INET_BLOCK_LEN).filter(|_| self.family() == AF_INET)?;
        bytemuck::try_from_bytes(bytes).ok()
    }

    /// The IPv6 address block, if the family is `INET6` and the length covers it.
    pub fn ipv6_block(&self) -> Option<&Ipv6Block> {
        let bytes = self.payload().get(..INET6_BLOCK_LEN).filter(|_| self.family() == AF_INET6)?;
        bytemuck::try_from_bytes(bytes).ok()
    }

    /// The source and destination path fields, if the family is `UNIX`
    /// and the length covers them.
    pub fn unix_paths(&self) -> Option<(&[u8; UNIX_PATH_LEN], &[u8; UNIX_PATH_LEN])> {
        if self.family() != AF_UNIX {
            return None;
        }
        let payload = self.payload();
        let src = payload.get(..UNIX_PATH_LEN)?.try_into().ok()?;
        let dst = payload.get(UNIX_PATH_LEN..UNIX_BLOCK_LEN)?.try_into().ok()?;
        Some((src, dst))
    }

    /// The TLVs after the address block. Empty when the family has no
    /// block this crate reads (`UNSPEC`, unknown) or the length does not
    /// cover the block.
    pub fn tlvs(&self) -> TlvIter<'_> {
        let start = block_len(self.family()).unwrap_or(usize::MAX);
        let bytes = self.payload().get(start..).unwrap_or_default();
        TlvIter::new(bytes, V2_HEADER_LEN + start.min(self.payload().len()))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// The fixed 16 bytes, mutably.
    pub fn fixed_mut(&mut self) -> &mut FixedHeader {
        bytemuck::from_bytes_mut(&mut self.buffer.as_mut()[field::FIXED])
    }

    /// Writes the signature.
    pub fn set_signature(&mut self) {
        self.buffer.as_mut()[field::SIGNATURE].copy_from_slice(&V2_SIGNATURE);
    }

    /// Writes version 2 and the command nibble (low 4 bits of `command`).
    pub fn set_command(&mut self, command: u8) {
        self.fixed_mut().ver_cmd = (VERSION << 4) | (command & 0x0f);
    }

    /// Writes the family/transport byte.
    pub fn set_fam(&mut self, fam: u8) {
        self.fixed_mut().fam = fam;
    }

    /// Writes the length field. Changing it can break the guarantee of
    /// [`Packet::check_len`].
    pub fn set_len(&mut self, len: u16) {
        self.fixed_mut().len = len.to_be_bytes();
    }

    /// Everything after the fixed header, up to the length, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len();
        &mut self.buffer.as_mut()[field::ADDRESSES..end]
    }

    /// The IPv4 address block, mutably (same conditions as [`Packet::ipv4_block`]).
    pub fn ipv4_block_mut(&mut self) -> Option<&mut Ipv4Block> {
        let inet = self.family() == AF_INET;
        let bytes = self.payload_mut().get_mut(..INET_BLOCK_LEN).filter(|_| inet)?;
        bytemuck::try_from_bytes_mut(bytes).ok()
    }

    /// The IPv6 address block, mutably (same conditions as [`Packet::ipv6_block`]).
    pub fn ipv6_block_mut(&mut self) -> Option<&mut Ipv6Block> {
        let inet6 = self.family() == AF_INET6;
        let bytes = self.payload_mut().get_mut(..INET6_BLOCK_LEN).filter(|_| inet6)?;
        bytemuck::try_from_bytes_mut(bytes).ok()
    }
}

/// A TLV in place: type, value, and where it sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlvRef<'a> {
    /// The type byte ([`kind`]).
    pub kind: u8,
    /// The value.
    pub value: &'a [u8],
    /// Offset of the type byte from the start of the header (for SSL
    /// sub-TLVs, from the start of the SSL value).
    pub offset: usize,
}

impl TlvRef<'_> {
    /// An owned copy.
    pub fn to_tlv(&self) -> Tlv {
        Tlv { kind: self.kind, value: self.value.to_vec() }
    }
}

/// Walks a run of TLVs. Yields an error, then stops, at a TLV that runs
/// past the end of the run.
#[derive(Debug, Clone)]
pub struct TlvIter<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: usize,
    failed: bool,
}

impl<'a> TlvIter<'a> {
    /// TLVs in `bytes`, which start `base` bytes into the enclosing block
    /// (for the offsets in [`TlvRef`] and errors).
    pub fn new(bytes: &'a [u8], base: usize) -> Self {
        Self { bytes, pos: 0, base, failed: false }
    }
}

impl<'a> Iterator for TlvIter<'a> {
    type Item = Result<TlvRef<'a>, ProxyError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.bytes.get(self.pos..).filter(|r| !r.is_empty() && !self.failed)?;
        let offset = self.base + self.pos;
        let parsed = match rest {
            [kind, l0, l1, tail @ ..] => {
                let len = usize::from(u16::from_be_bytes([*l0, *l1]));
                tail.get(..len).map(|value| TlvRef { kind: *kind, value, offset }).ok_or(3 + len)
            }
            _ => Err(3),
        };
        Some(match parsed {
            Ok(tlv) => {
                self.pos += 3 + tlv.value.len();
                Ok(tlv)
            }
            Err(needed) => {
                self.failed = true;
                Err(ProxyError::V2BadTlv { offset, needed, remaining: rest.len() })
            }
        })
    }
}

impl std::iter::FusedIterator for TlvIter<'_> {}

/// The value of an `SSL` TLV: client flags, verify result, sub-TLVs
/// ([`kind::SSL_VERSION`], [`kind::SSL_CN`] and so on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ssl<'a> {
    /// Bit field of [`Ssl::CLIENT_SSL`], [`Ssl::CLIENT_CERT_CONN`], [`Ssl::CLIENT_CERT_SESS`].
    pub client: u8,
    /// Zero if the client presented a certificate that verified, non-zero otherwise.
    pub verify: u32,
    sub_tlvs: &'a [u8],
}

impl<'a> Ssl<'a> {
    /// The client connected over TLS.
    pub const CLIENT_SSL: u8 = 0x01;
    /// The client presented a certificate on this connection.
    pub const CLIENT_CERT_CONN: u8 = 0x02;
    /// The client presented a certificate at least once in this TLS session.
    pub const CLIENT_CERT_SESS: u8 = 0x04;
    const PREFIX_LEN: usize = 5;

    /// Decodes an `SSL` TLV value.
    pub fn parse(value: &'a [u8]) -> Result<Self, ProxyError> {
        match value {
            [client, v0, v1, v2, v3, sub_tlvs @ ..] => {
                Ok(Self { client: *client, verify: u32::from_be_bytes([*v0, *v1, *v2, *v3]), sub_tlvs })
            }
            _ => Err(ProxyError::V2BadSsl { len: value.len() }),
        }
    }

    /// Encodes an `SSL` TLV value.
    pub fn encode(client: u8, verify: u32, sub_tlvs: &[Tlv]) -> Vec<u8> {
        let mut out = vec![client];
        out.extend_from_slice(&verify.to_be_bytes());
        for tlv in sub_tlvs {
            push_tlv(&mut out, tlv.kind, &tlv.value);
        }
        out
    }

    /// The sub-TLVs, with offsets from the start of the SSL value.
    pub fn sub_tlvs(&self) -> TlvIter<'a> {
        TlvIter::new(self.sub_tlvs, Self::PREFIX_LEN)
    }

    /// The value of the first sub-TLV of type `kind` (before any malformed one).
    pub fn sub_tlv(&self, kind: u8) -> Option<&'a [u8]> {
        self.sub_tlvs().map_while(Result::ok).find(|t| t.kind == kind).map(|t| t.value)
    }

    /// Whether the client connected over TLS and its certificate verified.
    pub fn is_verified(&self) -> bool {
        self.client & Self::CLIENT_SSL != 0 && self.verify == 0
    }
}

/// Appends one TLV; the caller has checked that `value` fits 16 bits.
fn push_tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
}

/// The CRC-32C of a header whose CRC32C value, at `at`, counts as zeros.
fn crc_with_hole(header: &[u8], at: usize) -> u32 {
    let mut crc = Crc32c::new();
    crc.update(header.get(..at).unwrap_or_default());
    crc.update(&[0; 4]);
    crc.update(header.get(at + 4..).unwrap_or_default());
    crc.finish()
}

/// Reads a v2 header from the start of `buf`; returns it and its length.
pub(super) fn parse(buf: &[u8]) -> Result<(Header, usize), ProxyError> {
    check_start(buf, true)?;
    let packet = Packet::new_checked(buf)?;
    let header = Header::parse_v2(&packet)?;
    Ok((header, packet.total_len()))
}

impl Header {
    /// Reads the header a checked v2 view holds, verifying its CRC32C TLV
    /// if it has one.
    pub fn parse_v2<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self, ProxyError> {
        packet.check_len()?;
        match packet.command() {
            CMD_LOCAL => return Ok(Self::local()),
            CMD_PROXY => {}
            command => return Err(ProxyError::V2BadCommand { command }),
        }
        let transport = match packet.transport() {
            TRANSPORT_STREAM => Transport::Stream,
            TRANSPORT_DGRAM => Transport::Dgram,
            _ => Transport::Unspec,
        };
        let too_short =
            |family, needed| ProxyError::V2AddressTooShort { family, needed, len: usize::from(packet.len()) };
        let addresses = match packet.fam() {
            0x00 => return Ok(Self { command: Command::Proxy, ..Self::local() }),
            0x11 | 0x12 => {
                let b = packet.ipv4_block().ok_or_else(|| too_short("INET", INET_BLOCK_LEN))?;
                Addresses::V4 {
                    src: SocketAddrV4::new(Ipv4Addr::from(b.src_addr), u16::from_be_bytes(b.src_port)),
                    dst: SocketAddrV4::new(Ipv4Addr::from(b.dst_addr), u16::from_be_bytes(b.dst_port)),
                }
            }
            0x21 | 0x22 => {
                let b = packet.ipv6_block().ok_or_else(|| too_short("INET6", INET6_BLOCK_LEN))?;
                Addresses::V6 {
                    src: SocketAddrV6::new(Ipv6Addr::from(b.src_addr), u16::from_be_bytes(b.src_port), 0, 0),
                    dst: SocketAddrV6::new(Ipv6Addr::from(b.dst_addr), u16::from_be_bytes(b.dst_port), 0, 0),
                }
            }
            0x31 | 0x32 => {
                let (src, dst) = packet.unix_paths().ok_or_else(|| too_short("UNIX", UNIX_BLOCK_LEN))?;
                Addresses::Unix { src: UnixPath(*src), dst: UnixPath(*dst) }
            }
            fam => return Err(ProxyError::V2BadFamily { fam }),
        };

        let mut tlvs = Vec::new();
        let mut crc = None;
        for tlv in packet.tlvs() {
            let tlv = tlv?;
            if tlv.kind == kind::CRC32C {
                let stored: [u8; 4] = tlv
                    .value
                    .try_into()
                    .map_err(|_| ProxyError::V2BadCrc32cLength { len: tlv.value.len() })?;
                if crc.replace((tlv.offset + 3, u32::from_be_bytes(stored))).is_some() {
                    return Err(ProxyError::V2DuplicateCrc32c);
                }
            }
            tlvs.push(tlv.to_tlv());
        }
        if let Some((at, stored)) = crc {
            let whole = packet.buffer.as_ref().get(..packet.total_len()).unwrap_or_default();
            let computed = crc_with_hole(whole, at);
            if computed != stored {
                return Err(ProxyError::V2Crc32cMismatch { stored, computed });
            }
        }
        Ok(Self { version: Version::V2, command: Command::Proxy, transport, addresses, tlvs })
    }
}

/// What [`emit`] writes after the fixed header: the family byte and the
/// address block length, or `None` for a bare 16-byte header.
fn layout(header: &Header) -> Result<Option<(u8, usize)>, ProxyError> {
    let af = match (header.command, header.addresses) {
        (Command::Local, _) | (_, Addresses::None) => return Ok(None),
        (Command::Proxy, Addresses::V4 { .. }) => AF_INET,
        (Command::Proxy, Addresses::V6 { .. }) => AF_INET6,
        (Command::Proxy, Addresses::Unix { .. }) => AF_UNIX,
    };
    let transport = match header.transport {
        Transport::Stream => TRANSPORT_STREAM,
        Transport::Dgram => TRANSPORT_DGRAM,
        Transport::Unspec => return Err(ProxyError::V2NoTransport),
    };
    Ok(block_len(af).map(|len| ((af << 4) | transport, len)))
}

pub(super) fn emitted_len(header: &Header) -> Result<usize, ProxyError> {
    let Some((_, block)) = layout(header)? else {
        return Ok(V2_HEADER_LEN);
    };
    let mut crcs = 0;
    let mut len = block;
    for tlv in &header.tlvs {
        if tlv.kind == kind::CRC32C {
            crcs += 1;
            len += 3 + 4;
        } else {
            len += 3 + tlv.value.len();
        }
    }
    if crcs > 1 {
        return Err(ProxyError::V2DuplicateCrc32c);
    }
    if len > usize::from(u16::MAX) {
        return Err(ProxyError::V2TooLong { len });
    }
    Ok(V2_HEADER_LEN + len)
}

pub(super) fn emit(header: &Header, out: &mut Vec<u8>) -> Result<usize, ProxyError> {
    // Every check happens here, before `out` is touched.
    let total = emitted_len(header)?;
    let start = out.len();
    let (command, fam) = match layout(header)? {
        None if header.command == Command::Local => (CMD_LOCAL, 0),
        None => (CMD_PROXY, 0),
        Some((fam, _)) => (CMD_PROXY, fam),
    };
    let fixed = FixedHeader {
        signature: V2_SIGNATURE,
        ver_cmd: (VERSION << 4) | command,
        fam,
        // emitted_len bounds the total by 16 + u16::MAX.
        len: ((total - V2_HEADER_LEN) as u16).to_be_bytes(),
    };
    out.extend_from_slice(bytemuck::bytes_of(&fixed));
    if fam == 0 {
        return Ok(total);
    }
    match header.addresses {
        Addresses::V4 { src, dst } => out.extend_from_slice(bytemuck::bytes_of(&Ipv4Block {
            src_addr: src.ip().octets(),
            dst_addr: dst.ip().octets(),
            src_port: src.port().to_be_bytes(),
            dst_port: dst.port().to_be_bytes(),
        })),
        Addresses::V6 { src, dst } => out.extend_from_slice(bytemuck::bytes_of(&Ipv6Block {
            src_addr: src.ip().octets(),
            dst_addr: dst.ip().octets(),
            src_port: src.port().to_be_bytes(),
            dst_port: dst.port().to_be_bytes(),
        })),
        Addresses::Unix { src, dst } => {
            out.extend_from_slice(src.raw());
            out.extend_from_slice(dst.raw());
        }
        Addresses::None => {}
    }
    let mut crc_at = None;
    for tlv in &header.tlvs {
        if tlv.kind == kind::CRC32C {
            crc_at = Some(out.len() + 3 - start);
            push_tlv(out, tlv.kind, &[0; 4]);
        } else {
            push_tlv(out, tlv.kind, &tlv.value);
        }
    }
    if let Some(at) = crc_at {
        let crc = crc_with_hole(out.get(start..).unwrap_or_default(), at);
        if let Some(slot) = out.get_mut(start + at..start + at + 4) {
            slot.copy_from_slice(&crc.to_be_bytes());
        }
    }
    Ok(total)
}

#[cfg(test)]
#[path = "tests_v2.rs"]
mod tests;
