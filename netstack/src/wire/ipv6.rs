//! The fixed 40-byte IPv6 header (RFC 8200): version, traffic class, flow
//! label, payload length against the buffer, next header, hop limit,
//! addresses.
//!
//! Extension headers are not walked: [`Packet::next_header`] is the value in
//! the fixed header, and when it names an extension header (hop-by-hop,
//! routing, fragment, destination options) the payload starts with that
//! header, not with UDP. Jumbograms (payload length 0 with a hop-by-hop
//! Jumbo Payload option) are not supported: their payload reads as empty.
//! IPv6 has no header checksum; upper layers cover the addresses through
//! the pseudo-header.

use std::net::Ipv6Addr;

use super::checksum::PseudoHeader;
use super::error::need;
use super::{Error, IpProtocol, Layer};

mod field {
    use std::ops::Range;

    /// Version (4 bits), traffic class (8), flow label (20).
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Range<usize> = 8..24;
    pub const DST_ADDR: Range<usize> = 24..40;
    pub const PAYLOAD: usize = 40;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = field::PAYLOAD;
/// The largest payload the 16-bit payload length can announce.
pub const MAX_PAYLOAD_LEN: usize = u16::MAX as usize;

/// A view of an IPv6 packet.
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

    /// Checks the version and that the fixed header and the announced
    /// payload fit the buffer; after that no accessor panics.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        need(Layer::Ipv6, HEADER_LEN, len)?;
        if self.version() != 6 {
            return Err(Error::BadVersion { layer: Layer::Ipv6, got: self.version(), expected: 6 });
        }
        need(Layer::Ipv6, HEADER_LEN + usize::from(self.payload_len()), len)
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn ver_tc_flow(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VER_TC_FLOW];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    fn read_addr(&self, range: std::ops::Range<usize>) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[range]);
        Ipv6Addr::from(a)
    }

    /// The version nibble (6 once checked).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Traffic class (DSCP and ECN).
    pub fn traffic_class(&self) -> u8 {
        (self.ver_tc_flow() >> 20) as u8
    }

    /// Flow label (20 bits).
    pub fn flow_label(&self) -> u32 {
        self.ver_tc_flow() & 0x000f_ffff
    }

    /// Payload length in bytes (extension headers included).
    pub fn payload_len(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::PAYLOAD_LEN];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The header after this one: an upper-layer protocol or an extension
    /// header, which this view does not walk.
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::NEXT_HEADER])
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        self.read_addr(field::SRC_ADDR)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        self.read_addr(field::DST_ADDR)
    }

    /// The payload: the payload length's worth of bytes after the fixed
    /// header (link-layer padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..HEADER_LEN + usize::from(self.payload_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version, traffic class and flow label (20 bits; higher bits are
    /// dropped) together, as they share one 32-bit word.
    pub fn set_ver_tc_flow(&mut self, version: u8, traffic_class: u8, flow_label: u32) {
        let word =
            (u32::from(version & 0x0f) << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&word.to_be_bytes());
    }

    /// Sets the payload length. Changing it can break the guarantee of
    /// [`Packet::check_len`].
    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::PAYLOAD_LEN].copy_from_slice(&len.to_be_bytes());
    }

    /// Sets the next header.
    pub fn set_next_header(&mut self, next_header: IpProtocol) {
        self.buffer.as_mut()[field::NEXT_HEADER] = next_header.0;
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hop_limit;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// The payload (up to the payload length), mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[field::PAYLOAD..end]
    }
}

/// The meaning of the fixed IPv6 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// The header after the fixed one (not walked if an extension header).
    pub next_header: IpProtocol,
    /// Payload length in bytes.
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
}

impl Default for Repr {
    /// Unspecified addresses, no payload, hop limit 64.
    fn default() -> Self {
        Self {
            src_addr: Ipv6Addr::UNSPECIFIED,
            dst_addr: Ipv6Addr::UNSPECIFIED,
            next_header: IpProtocol::IPV6_NO_NEXT,
            payload_len: 0,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        }
    }
}

impl Repr {
    /// Reads a checked packet.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self, Error> {
        packet.check_len()?;
        Ok(Self {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        })
    }

    /// The pseudo-header for the payload's checksum (valid when
    /// `next_header` is the upper-layer protocol itself).
    pub fn pseudo_header(&self) -> PseudoHeader {
        PseudoHeader::V6 { src: self.src_addr, dst: self.dst_addr }
    }

    /// Length of the fixed header.
    pub fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Length of header and payload.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the header; the payload is left as it is. Fails if the buffer
    /// is shorter than [`Self::buffer_len`] or the payload does not fit the
    /// length field. Flow label bits beyond 20 are dropped.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) -> Result<(), Error> {
        let payload_len = u16::try_from(self.payload_len).map_err(|_| Error::TooLong {
            layer: Layer::Ipv6,
            len: self.payload_len,
            max: MAX_PAYLOAD_LEN,
        })?;
        need(Layer::Ipv6, self.buffer_len(), packet.buffer.as_ref().len())?;
        packet.set_ver_tc_flow(6, self.traffic_class, self.flow_label);
        packet.set_payload_len(payload_len);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// fd00::1 -> fd00::2, UDP, hop limit 64, traffic class 0xb8 (EF),
    /// flow label 0x12345, carrying the datagram 1234 -> 8125 "foo:1|c".
    const PACKET: [u8; 55] = [
        0x6b, 0x81, 0x23, 0x45, // v6, TC 0xb8, flow 0x12345
        0x00, 0x0f, 0x11, 0x40, // payload length 15, UDP, hop limit 64
        0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // fd00::1
        0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // fd00::2
        0x04, 0xd2, 0x1f, 0xbd, 0x00, 0x0f, 0x77, 0x16, // UDP header
        b'f', b'o', b'o', b':', b'1', b'|', b'c',
    ];

    fn repr() -> Repr {
        Repr {
            src_addr: "fd00::1".parse().unwrap(),
            dst_addr: "fd00::2".parse().unwrap(),
            next_header: IpProtocol::UDP,
            payload_len: 15,
            hop_limit: 64,
            traffic_class: 0xb8,
            flow_label: 0x12345,
        }
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!((p.version(), p.traffic_class(), p.flow_label()), (6, 0xb8, 0x12345));
        assert_eq!((p.payload_len(), p.next_header(), p.hop_limit()), (15, IpProtocol::UDP, 64));
        assert_eq!(p.src_addr(), "fd00::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "fd00::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.payload(), &PACKET[40..]);
        assert_eq!(Repr::parse(&p).unwrap(), repr());
    }

    #[test]
    fn construct() {
        let mut buf = [0xffu8; 55];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        repr().emit(&mut p).unwrap();
        p.payload_mut().copy_from_slice(&PACKET[40..]);
        assert_eq!(buf, PACKET);
    }

    #[test]
    fn padding_is_not_payload_and_lengths_are_checked() {
        let mut padded = PACKET.to_vec();
        padded.push(0);
        assert_eq!(Packet::new_checked(&padded[..]).unwrap().payload(), &PACKET[40..]);
        let mut v4 = PACKET;
        v4[0] = 0x4b;
        assert_eq!(
            Packet::new_checked(&v4[..]).unwrap_err(),
            Error::BadVersion { layer: Layer::Ipv6, got: 4, expected: 6 }
        );
        let mut long = PACKET;
        long[5] = 16;
        assert_eq!(
            Packet::new_checked(&long[..]).unwrap_err(),
            Error::Truncated { layer: Layer::Ipv6, needed: 56, got: 55 }
        );
    }

    #[test]
    fn extension_headers_are_reported_not_walked() {
        let mut hbh = PACKET;
        hbh[6] = IpProtocol::HOP_BY_HOP.0;
        let p = Packet::new_checked(&hbh[..]).unwrap();
        assert_eq!(p.next_header(), IpProtocol::HOP_BY_HOP);
        assert_eq!(p.payload(), &PACKET[40..]);
    }

    #[test]
    fn truncation_at_every_length_errors() {
        for n in 0..PACKET.len() {
            assert!(Packet::new_checked(&PACKET[..n]).is_err(), "length {n}");
        }
    }

    #[test]
    fn emit_checks_lengths() {
        let mut buf = [0u8; 54];
        assert_eq!(
            repr().emit(&mut Packet::new_unchecked(&mut buf[..])),
            Err(Error::Truncated { layer: Layer::Ipv6, needed: 55, got: 54 })
        );
        let big = Repr { payload_len: MAX_PAYLOAD_LEN + 1, ..repr() };
        assert!(matches!(big.emit(&mut Packet::new_unchecked(&mut buf[..])), Err(Error::TooLong { .. })));
    }

    fn arb_repr() -> impl Strategy<Value = Repr> {
        (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u8>(),
            0usize..200,
            any::<u8>(),
            any::<u8>(),
            0u32..1 << 20,
        )
            .prop_map(|(s, d, nh, payload_len, hop_limit, traffic_class, flow_label)| Repr {
                src_addr: s.into(),
                dst_addr: d.into(),
                next_header: IpProtocol(nh),
                payload_len,
                hop_limit,
                traffic_class,
                flow_label,
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
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.payload(), p.src_addr(), p.dst_addr(), p.flow_label(), p.traffic_class());
                let _ = Repr::parse(&p).unwrap();
            }
        }

        #[test]
        fn never_panics_after_a_valid_start(tail in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut bytes = vec![0x60];
            bytes.extend_from_slice(&tail);
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                prop_assert_eq!(p.payload().len(), usize::from(p.payload_len()));
            }
        }
    }
}
