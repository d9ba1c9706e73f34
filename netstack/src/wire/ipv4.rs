//! IPv4 headers (RFC 791): version and header length checks, total length
//! against the buffer, the header checksum, fragmentation fields.
//!
//! Options are skipped, not decoded: [`Packet::options`] exposes their bytes,
//! [`Repr`] drops them and [`Repr::emit`] writes a 20-byte header. The
//! payload ends where the total length says, not where the buffer ends, so
//! Ethernet padding is never mistaken for data. A fragment's payload is only
//! part of an upper-layer packet: check [`Repr::is_fragment`] before reading
//! a UDP header from it.

use std::net::Ipv4Addr;

use super::checksum::{self, PseudoHeader};
use super::error::need;
use super::{Error, IpProtocol, Layer};

mod field {
    use std::ops::Range;

    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLAGS_FRAG_OFFSET: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC_ADDR: Range<usize> = 12..16;
    pub const DST_ADDR: Range<usize> = 16..20;
    pub const OPTIONS: usize = 20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = field::OPTIONS;
/// The largest payload a 16-bit total length leaves room for behind a 20-byte header.
pub const MAX_PAYLOAD_LEN: usize = u16::MAX as usize - HEADER_LEN;

const FLAG_DONT_FRAG: u16 = 0x4000;
const FLAG_MORE_FRAGS: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; for packets about to be written.
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the version, that the header length covers the fixed header
    /// and fits the buffer, and that the total length covers the header and
    /// fits the buffer; after that no accessor panics. The checksum is not
    /// checked here (see [`Self::verify_checksum`] and [`Repr::parse`]).
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        need(Layer::Ipv4, HEADER_LEN, len)?;
        if self.version() != 4 {
            return Err(Error::BadVersion { layer: Layer::Ipv4, got: self.version(), expected: 4 });
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(Error::BadLength { layer: Layer::Ipv4, value: header_len, min: HEADER_LEN });
        }
        need(Layer::Ipv4, header_len, len)?;
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(Error::BadLength { layer: Layer::Ipv4, value: total_len, min: header_len });
        }
        need(Layer::Ipv4, total_len, len)
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn read_u16(&self, range: std::ops::Range<usize>) -> u16 {
        let b = &self.buffer.as_ref()[range];
        u16::from_be_bytes([b[0], b[1]])
    }

    fn read_addr(&self, range: std::ops::Range<usize>) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[range];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The version nibble (4 once checked).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL times four), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Differentiated services code point (6 bits).
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// Explicit congestion notification (2 bits).
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    /// Total length of header and payload, in bytes.
    pub fn total_len(&self) -> u16 {
        self.read_u16(field::LENGTH)
    }

    /// Identification, for reassembly.
    pub fn ident(&self) -> u16 {
        self.read_u16(field::IDENT)
    }

    /// The don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.read_u16(field::FLAGS_FRAG_OFFSET) & FLAG_DONT_FRAG != 0
    }

    /// The more-fragments flag.
    pub fn more_frags(&self) -> bool {
        self.read_u16(field::FLAGS_FRAG_OFFSET) & FLAG_MORE_FRAGS != 0
    }

    /// Fragment offset in units of 8 bytes.
    pub fn frag_offset(&self) -> u16 {
        self.read_u16(field::FLAGS_FRAG_OFFSET) & FRAG_OFFSET_MASK
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// The stored header checksum.
    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        self.read_addr(field::SRC_ADDR)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        self.read_addr(field::DST_ADDR)
    }

    /// The raw options (between the fixed header and the payload).
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..self.header_len()]
    }

    /// Whether the header checksum matches the header, options included.
    pub fn verify_checksum(&self) -> bool {
        checksum::is_valid(checksum::data(&self.buffer.as_ref()[..self.header_len()]))
    }

    /// The payload: from the end of the header to the total length, so
    /// trailing link-layer padding is excluded.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn write_u16(&mut self, range: std::ops::Range<usize>, value: u16) {
        self.buffer.as_mut()[range].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the version nibble.
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (version << 4);
    }

    /// Sets the header length in bytes; rounded down to a multiple of four,
    /// at most 60.
    pub fn set_header_len(&mut self, len: usize) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((len / 4).min(15) as u8);
    }

    /// Sets the DSCP (6 bits; higher bits are dropped).
    pub fn set_dscp(&mut self, dscp: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0x03) | (dscp << 2);
    }

    /// Sets the ECN bits (2 bits; higher bits are dropped).
    pub fn set_ecn(&mut self, ecn: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0xfc) | (ecn & 0x03);
    }

    /// Sets the total length. Changing it can break the guarantee of
    /// [`Packet::check_len`].
    pub fn set_total_len(&mut self, len: u16) {
        self.write_u16(field::LENGTH, len);
    }

    /// Sets the identification.
    pub fn set_ident(&mut self, ident: u16) {
        self.write_u16(field::IDENT, ident);
    }

    /// Sets the flags (the reserved bit cleared) and the fragment offset in
    /// units of 8 bytes (13 bits; higher bits are dropped).
    pub fn set_fragmentation(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let mut v = offset & FRAG_OFFSET_MASK;
        if dont_frag {
            v |= FLAG_DONT_FRAG;
        }
        if more_frags {
            v |= FLAG_MORE_FRAGS;
        }
        self.write_u16(field::FLAGS_FRAG_OFFSET, v);
    }

    /// Sets the time to live.
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the protocol of the payload.
    pub fn set_protocol(&mut self, protocol: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol.0;
    }

    /// Sets the stored checksum (see [`Self::fill_checksum`]).
    pub fn set_checksum(&mut self, checksum: u16) {
        self.write_u16(field::CHECKSUM, checksum);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Computes the header checksum over the header and options and stores
    /// it; call it after every other header field is written.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::data(&self.buffer.as_ref()[..self.header_len()]);
        self.set_checksum(checksum::finish(sum));
    }

    /// The payload (up to the total length), mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}

/// The meaning of an IPv4 header (options aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Protocol of the payload.
    pub protocol: IpProtocol,
    /// Length of the payload in bytes (total length minus header length).
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// Differentiated services code point (6 bits).
    pub dscp: u8,
    /// Explicit congestion notification (2 bits).
    pub ecn: u8,
    /// Identification.
    pub ident: u16,
    /// Don't-fragment flag.
    pub dont_frag: bool,
    /// More-fragments flag.
    pub more_frags: bool,
    /// Fragment offset in units of 8 bytes (13 bits).
    pub frag_offset: u16,
}

impl Default for Repr {
    /// Unspecified addresses, no payload, TTL 64, don't-fragment set: the
    /// values a sender fills in for a fresh unfragmented packet.
    fn default() -> Self {
        Self {
            src_addr: Ipv4Addr::UNSPECIFIED,
            dst_addr: Ipv4Addr::UNSPECIFIED,
            protocol: IpProtocol::default(),
            payload_len: 0,
            ttl: 64,
            dscp: 0,
            ecn: 0,
            ident: 0,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
        }
    }
}

impl Repr {
    /// Reads a packet: checks its lengths and its header checksum.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self, Error> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(Error::Checksum { layer: Layer::Ipv4 });
        }
        Ok(Self {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: packet.payload().len(),
            ttl: packet.ttl(),
            dscp: packet.dscp(),
            ecn: packet.ecn(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
            more_frags: packet.more_frags(),
            frag_offset: packet.frag_offset(),
        })
    }

    /// Whether the payload is a fragment rather than a whole upper-layer packet.
    pub fn is_fragment(&self) -> bool {
        self.more_frags || self.frag_offset != 0
    }

    /// The pseudo-header for the payload's checksum.
    pub fn pseudo_header(&self) -> PseudoHeader {
        PseudoHeader::V4 { src: self.src_addr, dst: self.dst_addr }
    }

    /// Length of the header this writes (no options).
    pub fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Length of header and payload.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the header, checksum included; the payload is left as it is.
    /// Fails if the buffer is shorter than [`Self::buffer_len`] or the
    /// payload does not fit the total length field. Bits beyond a field's
    /// width (`dscp`, `ecn`, `frag_offset`) are dropped.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) -> Result<(), Error> {
        if self.payload_len > MAX_PAYLOAD_LEN {
            return Err(Error::TooLong { layer: Layer::Ipv4, len: self.buffer_len(), max: u16::MAX.into() });
        }
        need(Layer::Ipv4, self.buffer_len(), packet.buffer.as_ref().len())?;
        packet.set_version(4);
        packet.set_header_len(HEADER_LEN);
        packet.set_dscp(self.dscp);
        packet.set_ecn(self.ecn);
        // Checked against MAX_PAYLOAD_LEN above.
        packet.set_total_len(self.buffer_len() as u16);
        packet.set_ident(self.ident);
        packet.set_fragmentation(self.dont_frag, self.more_frags, self.frag_offset);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 10.0.0.1 -> 10.0.0.2, UDP, DF, TTL 64, ident 1, carrying the datagram
    /// 1234 -> 8125 "foo:1|c". Checksums computed independently.
    const PACKET: [u8; 35] = [
        0x45, 0x00, 0x00, 0x23, // v4, IHL 5, DSCP 0, total length 35
        0x00, 0x01, 0x40, 0x00, // ident 1, DF, offset 0
        0x40, 0x11, 0x26, 0xc7, // TTL 64, UDP, header checksum
        0x0a, 0x00, 0x00, 0x01, // 10.0.0.1
        0x0a, 0x00, 0x00, 0x02, // 10.0.0.2
        0x04, 0xd2, 0x1f, 0xbd, 0x00, 0x0f, 0x5d, 0x18, // UDP header
        b'f', b'o', b'o', b':', b'1', b'|', b'c',
    ];

    fn repr() -> Repr {
        Repr {
            src_addr: Ipv4Addr::new(10, 0, 0, 1),
            dst_addr: Ipv4Addr::new(10, 0, 0, 2),
            protocol: IpProtocol::UDP,
            payload_len: 15,
            ttl: 64,
            ident: 1,
            ..Repr::default()
        }
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!((p.version(), p.header_len(), p.dscp(), p.ecn()), (4, 20, 0, 0));
        assert_eq!(
            (p.total_len(), p.ident(), p.dont_frag(), p.more_frags(), p.frag_offset()),
            (35, 1, true, false, 0)
        );
        assert_eq!((p.ttl(), p.protocol(), p.checksum()), (64, IpProtocol::UDP, 0x26c7));
        assert_eq!((p.src_addr(), p.dst_addr()), (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)));
        assert!(p.verify_checksum());
        assert_eq!(p.options(), &[] as &[u8]);
        assert_eq!(p.payload(), &PACKET[20..]);
        assert_eq!(Repr::parse(&p).unwrap(), repr());
        assert!(!repr().is_fragment());
    }

    #[test]
    fn construct() {
        let mut buf = [0xffu8; 35];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        repr().emit(&mut p).unwrap();
        p.payload_mut().copy_from_slice(&PACKET[20..]);
        assert_eq!(buf, PACKET);
    }

    #[test]
    fn padding_after_total_length_is_not_payload() {
        let mut padded = PACKET.to_vec();
        padded.extend_from_slice(&[0; 11]);
        let p = Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.payload(), &PACKET[20..]);
        assert_eq!(Repr::parse(&p).unwrap().payload_len, 15);
    }

    #[test]
    fn options_are_skipped_and_covered_by_the_checksum() {
        // Same packet with a Router Alert option: IHL 6, total length 39.
        let mut bytes = PACKET[..20].to_vec();
        bytes[0] = 0x46;
        bytes[3] = 39;
        bytes.extend_from_slice(&[0x94, 0x04, 0x00, 0x00]);
        bytes.extend_from_slice(&PACKET[20..]);
        let mut p = Packet::new_unchecked(&mut bytes[..]);
        p.fill_checksum();
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[0x94, 0x04, 0x00, 0x00]);
        assert_eq!(p.payload(), &PACKET[20..]);
        assert_eq!(Repr::parse(&p).unwrap(), repr());
        // The option bytes are under the checksum.
        bytes[21] ^= 1;
        assert_eq!(
            Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()),
            Err(Error::Checksum { layer: Layer::Ipv4 })
        );
    }

    #[test]
    fn corrupt_checksum_is_detected() {
        for i in 0..20 {
            let mut bytes = PACKET;
            bytes[i] ^= 0x10;
            match Packet::new_checked(&bytes[..]) {
                // Flipping the version or IHL or length bits may fail earlier.
                Err(_) => assert!(i < 4, "byte {i}"),
                Ok(p) => assert_eq!(Repr::parse(&p), Err(Error::Checksum { layer: Layer::Ipv4 }), "byte {i}"),
            }
        }
    }

    #[test]
    fn bad_headers_are_named() {
        let mut v6 = PACKET;
        v6[0] = 0x65;
        assert_eq!(
            Packet::new_checked(&v6[..]).unwrap_err(),
            Error::BadVersion { layer: Layer::Ipv4, got: 6, expected: 4 }
        );
        let mut short_ihl = PACKET;
        short_ihl[0] = 0x44;
        assert_eq!(
            Packet::new_checked(&short_ihl[..]).unwrap_err(),
            Error::BadLength { layer: Layer::Ipv4, value: 16, min: 20 }
        );
        let mut short_total = PACKET;
        short_total[3] = 19;
        assert_eq!(
            Packet::new_checked(&short_total[..]).unwrap_err(),
            Error::BadLength { layer: Layer::Ipv4, value: 19, min: 20 }
        );
        let mut long_total = PACKET;
        long_total[3] = 36;
        assert_eq!(
            Packet::new_checked(&long_total[..]).unwrap_err(),
            Error::Truncated { layer: Layer::Ipv4, needed: 36, got: 35 }
        );
        let mut long_ihl = PACKET;
        long_ihl[0] = 0x4f;
        assert_eq!(
            Packet::new_checked(&long_ihl[..21]).unwrap_err(),
            Error::Truncated { layer: Layer::Ipv4, needed: 60, got: 21 }
        );
    }

    #[test]
    fn truncation_at_every_length_errors() {
        for n in 0..PACKET.len() {
            assert!(Packet::new_checked(&PACKET[..n]).is_err(), "length {n}");
        }
    }

    #[test]
    fn emit_checks_lengths() {
        let mut buf = [0u8; 34];
        assert_eq!(
            repr().emit(&mut Packet::new_unchecked(&mut buf[..])),
            Err(Error::Truncated { layer: Layer::Ipv4, needed: 35, got: 34 })
        );
        let big = Repr { payload_len: MAX_PAYLOAD_LEN + 1, ..repr() };
        assert!(matches!(big.emit(&mut Packet::new_unchecked(&mut buf[..])), Err(Error::TooLong { .. })));
    }

    fn arb_repr() -> impl Strategy<Value = Repr> {
        (
            (any::<[u8; 4]>(), any::<[u8; 4]>(), any::<u8>(), 0usize..200, any::<u8>()),
            (0u8..64, 0u8..4, any::<u16>(), any::<bool>(), any::<bool>(), 0u16..0x2000),
        )
            .prop_map(|((s, d, proto, payload_len, ttl), (dscp, ecn, ident, df, mf, off))| Repr {
                src_addr: s.into(),
                dst_addr: d.into(),
                protocol: IpProtocol(proto),
                payload_len,
                ttl,
                dscp,
                ecn,
                ident,
                dont_frag: df,
                more_frags: mf,
                frag_offset: off,
            })
    }

    proptest! {
        #[test]
        fn round_trip(repr in arb_repr(), pad in 0usize..8) {
            let mut buf = vec![0u8; repr.buffer_len() + pad];
            repr.emit(&mut Packet::new_unchecked(&mut buf[..])).unwrap();
            let p = Packet::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(Repr::parse(&p).unwrap(), repr);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.options(), p.payload(), p.verify_checksum(), p.src_addr(), p.dst_addr(), p.frag_offset());
                let _ = Repr::parse(&p);
            }
        }

        #[test]
        fn never_panics_after_a_valid_start(tail in proptest::collection::vec(any::<u8>(), 0..80), ihl in 0u8..16) {
            let mut bytes = vec![0x40 | ihl];
            bytes.extend_from_slice(&tail);
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.options(), p.payload(), Repr::parse(&p));
            }
        }
    }
}
