//! UDP headers (RFC 768): ports, length against the buffer, and the
//! checksum over the IPv4 or IPv6 pseudo-header.
//!
//! A zero checksum means "not computed" over IPv4 and is accepted there;
//! over IPv6 the checksum is mandatory (RFC 8200 section 8.1) and zero is
//! rejected. A computed checksum of zero is sent as 0xffff, its
//! ones-complement twin. Jumbograms (length 0 over IPv6) are not supported.

use super::checksum::{self, PseudoHeader};
use super::error::need;
use super::{Error, IpProtocol, Layer};

mod field {
    use std::ops::Range;

    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
    pub const PAYLOAD: usize = 8;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = field::PAYLOAD;
/// The largest payload the 16-bit length field leaves room for.
pub const MAX_PAYLOAD_LEN: usize = u16::MAX as usize - HEADER_LEN;

/// A view of a UDP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; for datagrams about to be written.
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the length field covers the header and fits the buffer;
    /// after that no accessor panics. The checksum needs the IP addresses,
    /// so it is checked by [`Self::verify_checksum`] and [`Repr::parse`].
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        need(Layer::Udp, HEADER_LEN, len)?;
        let udp_len = usize::from(self.len());
        if udp_len < HEADER_LEN {
            return Err(Error::BadLength { layer: Layer::Udp, value: udp_len, min: HEADER_LEN });
        }
        need(Layer::Udp, udp_len, len)
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn read_u16(&self, range: std::ops::Range<usize>) -> u16 {
        let b = &self.buffer.as_ref()[range];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        self.read_u16(field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        self.read_u16(field::DST_PORT)
    }

    /// Length of header and payload, from the length field.
    pub fn len(&self) -> u16 {
        self.read_u16(field::LENGTH)
    }

    /// Whether the datagram has no payload.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// The stored checksum; 0 means none was computed (IPv4 only).
    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM)
    }

    fn sum(&self, pseudo: &PseudoHeader) -> u16 {
        let len = usize::from(self.len());
        checksum::combine(&[pseudo.sum(IpProtocol::UDP, len), checksum::data(&self.buffer.as_ref()[..len])])
    }

    /// Whether the checksum matches the datagram and `pseudo`. A zero
    /// checksum passes over IPv4 (none computed) and fails over IPv6.
    pub fn verify_checksum(&self, pseudo: &PseudoHeader) -> bool {
        if self.checksum() == 0 {
            return matches!(pseudo, PseudoHeader::V4 { .. });
        }
        checksum::is_valid(self.sum(pseudo))
    }

    /// The payload: up to the length field, so anything after it in the
    /// buffer is excluded.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..usize::from(self.len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn write_u16(&mut self, range: std::ops::Range<usize>, value: u16) {
        self.buffer.as_mut()[range].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the source port.
    pub fn set_src_port(&mut self, port: u16) {
        self.write_u16(field::SRC_PORT, port);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, port: u16) {
        self.write_u16(field::DST_PORT, port);
    }

    /// Sets the length field. Changing it can break the guarantee of
    /// [`Packet::check_len`].
    pub fn set_len(&mut self, len: u16) {
        self.write_u16(field::LENGTH, len);
    }

    /// Sets the stored checksum (0 for none, IPv4 only).
    pub fn set_checksum(&mut self, checksum: u16) {
        self.write_u16(field::CHECKSUM, checksum);
    }

    /// Computes the checksum over `pseudo`, the header and the payload, and
    /// stores it; call it after the payload is in place.
    pub fn fill_checksum(&mut self, pseudo: &PseudoHeader) {
        self.set_checksum(0);
        let sum = checksum::finish(self.sum(pseudo));
        // 0 on the wire means "no checksum"; 0xffff is the same value in
        // ones-complement arithmetic.
        self.set_checksum(if sum == 0 { 0xffff } else { sum });
    }

    /// The payload (up to the length field), mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[field::PAYLOAD..end]
    }
}

/// The meaning of a UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Repr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Length of the payload in bytes.
    pub payload_len: usize,
}

impl Repr {
    /// Reads a datagram: checks its lengths and its checksum against `pseudo`.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>, pseudo: &PseudoHeader) -> Result<Self, Error> {
        packet.check_len()?;
        if !packet.verify_checksum(pseudo) {
            return Err(Error::Checksum { layer: Layer::Udp });
        }
        Ok(Self {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: packet.payload().len(),
        })
    }

    /// Length of the header.
    pub fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Length of header and payload.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the header, lets `emit_payload` write the payload into the
    /// `payload_len` bytes after it, then fills the checksum over both. Pass
    /// `|_| {}` when the payload is already in place. Fails, leaving the
    /// buffer alone, if it is shorter than [`Self::buffer_len`] or the
    /// payload does not fit the length field.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        pseudo: &PseudoHeader,
        emit_payload: impl FnOnce(&mut [u8]),
    ) -> Result<(), Error> {
        let len = u16::try_from(self.buffer_len()).map_err(|_| Error::TooLong {
            layer: Layer::Udp,
            len: self.buffer_len(),
            max: u16::MAX.into(),
        })?;
        need(Layer::Udp, self.buffer_len(), packet.buffer.as_ref().len())?;
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(len);
        emit_payload(packet.payload_mut());
        packet.fill_checksum(pseudo);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::wire::{ethernet, ipv4, ipv6, EtherType};
    use proptest::prelude::*;

    /// A whole frame as a capture shows it: 02:00:00:00:00:01 ->
    /// 02:00:00:00:00:02, IPv4 10.0.0.1 -> 10.0.0.2 (DF, TTL 64, ident 1),
    /// UDP 1234 -> 8125, payload "foo:1|c", padded to the 60-byte Ethernet
    /// minimum. Both checksums computed independently of this crate.
    const FRAME_V4: [u8; 60] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, // Ethernet
        0x45, 0x00, 0x00, 0x23, 0x00, 0x01, 0x40, 0x00, 0x40, 0x11, 0x26, 0xc7, // IPv4...
        0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, // ...addresses
        0x04, 0xd2, 0x1f, 0xbd, 0x00, 0x0f, 0x5d, 0x18, // UDP: ports, length 15, checksum
        b'f', b'o', b'o', b':', b'1', b'|', b'c', // payload
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // padding
    ];

    /// The same datagram over IPv6, fd00::1 -> fd00::2.
    const DATAGRAM_V6: [u8; 15] =
        [0x04, 0xd2, 0x1f, 0xbd, 0x00, 0x0f, 0x77, 0x16, b'f', b'o', b'o', b':', b'1', b'|', b'c'];

    const PAYLOAD: &[u8] = b"foo:1|c";

    fn v4() -> PseudoHeader {
        PseudoHeader::V4 { src: Ipv4Addr::new(10, 0, 0, 1), dst: Ipv4Addr::new(10, 0, 0, 2) }
    }

    fn v6() -> PseudoHeader {
        PseudoHeader::V6 { src: "fd00::1".parse().unwrap(), dst: "fd00::2".parse().unwrap() }
    }

    fn repr() -> Repr {
        Repr { src_port: 1234, dst_port: 8125, payload_len: PAYLOAD.len() }
    }

    fn eth() -> ethernet::Repr {
        ethernet::Repr {
            dst_addr: ethernet::Address([2, 0, 0, 0, 0, 2]),
            src_addr: ethernet::Address([2, 0, 0, 0, 0, 1]),
            ethertype: EtherType::IPV4,
            vlan: None,
        }
    }

    fn ip() -> ipv4::Repr {
        ipv4::Repr {
            src_addr: Ipv4Addr::new(10, 0, 0, 1),
            dst_addr: Ipv4Addr::new(10, 0, 0, 2),
            protocol: IpProtocol::UDP,
            payload_len: 15,
            ident: 1,
            ..ipv4::Repr::default()
        }
    }

    #[test]
    fn deconstruct_frame() {
        let frame = ethernet::Frame::new_checked(&FRAME_V4[..]).unwrap();
        assert_eq!(ethernet::Repr::parse(&frame).unwrap(), eth());
        let packet = ipv4::Packet::new_checked(frame.payload()).unwrap();
        let ip_repr = ipv4::Repr::parse(&packet).unwrap();
        assert_eq!(ip_repr, ip());
        let udp = Packet::new_checked(packet.payload()).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port(), udp.len(), udp.checksum()), (1234, 8125, 15, 0x5d18));
        assert!(udp.verify_checksum(&ip_repr.pseudo_header()));
        assert_eq!(Repr::parse(&udp, &ip_repr.pseudo_header()).unwrap(), repr());
        assert_eq!(udp.payload(), PAYLOAD);
    }

    #[test]
    fn construct_frame() {
        let mut buf = [0u8; 60];
        let mut frame = ethernet::Frame::new_unchecked(&mut buf[..]);
        eth().emit(&mut frame).unwrap();
        let mut packet = ipv4::Packet::new_unchecked(frame.payload_mut());
        ip().emit(&mut packet).unwrap();
        let mut udp = Packet::new_unchecked(packet.payload_mut());
        repr().emit(&mut udp, &ip().pseudo_header(), |p| p.copy_from_slice(PAYLOAD)).unwrap();
        assert_eq!(buf, FRAME_V4);
    }

    #[test]
    fn ipv6_datagram_both_ways() {
        let udp = Packet::new_checked(&DATAGRAM_V6[..]).unwrap();
        assert_eq!(Repr::parse(&udp, &v6()).unwrap(), repr());
        // The IPv4 pseudo-header gives another sum.
        assert_eq!(Repr::parse(&udp, &v4()), Err(Error::Checksum { layer: Layer::Udp }));

        let mut buf = [0u8; 15];
        buf[8..].copy_from_slice(PAYLOAD);
        repr().emit(&mut Packet::new_unchecked(&mut buf[..]), &v6(), |_| {}).unwrap();
        assert_eq!(buf, DATAGRAM_V6);

        // Inside the IPv6 packet the pseudo-header comes from the IP repr.
        let mut whole = [0u8; 55];
        let ip = ipv6::Repr {
            src_addr: "fd00::1".parse::<Ipv6Addr>().unwrap(),
            dst_addr: "fd00::2".parse().unwrap(),
            next_header: IpProtocol::UDP,
            payload_len: 15,
            ..ipv6::Repr::default()
        };
        let mut p = ipv6::Packet::new_unchecked(&mut whole[..]);
        ip.emit(&mut p).unwrap();
        p.payload_mut().copy_from_slice(&DATAGRAM_V6);
        let p = ipv6::Packet::new_checked(&whole[..]).unwrap();
        let ip = ipv6::Repr::parse(&p).unwrap();
        assert!(Repr::parse(&Packet::new_checked(p.payload()).unwrap(), &ip.pseudo_header()).is_ok());
    }

    #[test]
    fn corrupt_checksum_is_detected() {
        for i in 0..15 {
            if (4..6).contains(&i) {
                continue; // the length field: a truncation, tested below
            }
            let mut bytes = DATAGRAM_V6;
            bytes[i] ^= 0x01;
            let udp = Packet::new_checked(&bytes[..]).unwrap();
            assert_eq!(Repr::parse(&udp, &v6()), Err(Error::Checksum { layer: Layer::Udp }), "byte {i}");
        }
        // A change in the pseudo-header (here the source address) too.
        let other = PseudoHeader::V4 { src: Ipv4Addr::new(10, 0, 0, 3), dst: Ipv4Addr::new(10, 0, 0, 2) };
        let udp = Packet::new_checked(&FRAME_V4[34..49]).unwrap();
        assert!(udp.verify_checksum(&v4()));
        assert!(!udp.verify_checksum(&other));
    }

    #[test]
    fn zero_checksum_means_none_over_ipv4_only() {
        let mut bytes = DATAGRAM_V6;
        bytes[6] = 0;
        bytes[7] = 0;
        let udp = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Repr::parse(&udp, &v4()).unwrap(), repr());
        assert_eq!(Repr::parse(&udp, &v6()), Err(Error::Checksum { layer: Layer::Udp }));
    }

    #[test]
    fn computed_zero_is_sent_as_ffff() {
        // Pick a payload word that makes the sum 0xffff, so the complement is 0.
        let mut buf = [0u8; 10];
        let r = Repr { src_port: 1, dst_port: 2, payload_len: 2 };
        r.emit(&mut Packet::new_unchecked(&mut buf[..]), &v4(), |_| {}).unwrap();
        let partial = checksum::combine(&[v4().sum(IpProtocol::UDP, 10), checksum::data(&buf[..6])]);
        buf[8..].copy_from_slice(&(!partial).to_be_bytes());
        let mut udp = Packet::new_unchecked(&mut buf[..]);
        udp.fill_checksum(&v4());
        assert_eq!(udp.checksum(), 0xffff);
        assert!(udp.verify_checksum(&v4()));
        assert_eq!(Repr::parse(&udp, &v4()).unwrap(), r);
    }

    #[test]
    fn lengths_are_checked() {
        let mut short = DATAGRAM_V6;
        short[5] = 7;
        assert_eq!(
            Packet::new_checked(&short[..]).unwrap_err(),
            Error::BadLength { layer: Layer::Udp, value: 7, min: 8 }
        );
        let mut long = DATAGRAM_V6;
        long[5] = 16;
        assert_eq!(
            Packet::new_checked(&long[..]).unwrap_err(),
            Error::Truncated { layer: Layer::Udp, needed: 16, got: 15 }
        );
        for n in 0..DATAGRAM_V6.len() {
            assert!(Packet::new_checked(&DATAGRAM_V6[..n]).is_err(), "length {n}");
        }
        let mut buf = [0u8; 14];
        assert!(repr().emit(&mut Packet::new_unchecked(&mut buf[..]), &v4(), |_| {}).is_err());
        assert_eq!(buf, [0; 14]);
        let big = Repr { payload_len: MAX_PAYLOAD_LEN + 1, ..repr() };
        assert!(matches!(
            big.emit(&mut Packet::new_unchecked(&mut buf[..]), &v4(), |_| {}),
            Err(Error::TooLong { .. })
        ));
    }

    #[test]
    fn frame_truncated_at_every_length_never_parses_whole() {
        // Padding aside, every cut loses a layer.
        for n in 0..49 {
            let bytes = &FRAME_V4[..n];
            let whole = ethernet::Frame::new_checked(bytes).ok().and_then(|f| {
                let p = ipv4::Packet::new_checked(f.payload()).ok()?;
                let ip = ipv4::Repr::parse(&p).ok()?;
                let u = Packet::new_checked(p.payload()).ok()?;
                Repr::parse(&u, &ip.pseudo_header()).ok()
            });
            assert_eq!(whole, None, "length {n}");
        }
    }

    fn arb_pseudo() -> impl Strategy<Value = PseudoHeader> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<[u8; 4]>())
                .prop_map(|(s, d)| PseudoHeader::V4 { src: s.into(), dst: d.into() }),
            (any::<[u8; 16]>(), any::<[u8; 16]>())
                .prop_map(|(s, d)| PseudoHeader::V6 { src: s.into(), dst: d.into() }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(
            src_port in any::<u16>(),
            dst_port in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..100),
            pseudo in arb_pseudo(),
        ) {
            let repr = Repr { src_port, dst_port, payload_len: payload.len() };
            let mut buf = vec![0u8; repr.buffer_len()];
            repr.emit(&mut Packet::new_unchecked(&mut buf[..]), &pseudo, |p| p.copy_from_slice(&payload)).unwrap();
            let udp = Packet::new_checked(&buf[..]).unwrap();
            prop_assert_ne!(udp.checksum(), 0);
            prop_assert_eq!(Repr::parse(&udp, &pseudo).unwrap(), repr);
            prop_assert_eq!(udp.payload(), &payload[..]);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40), pseudo in arb_pseudo()) {
            if let Ok(udp) = Packet::new_checked(&bytes[..]) {
                let _ = (udp.payload(), udp.verify_checksum(&pseudo), udp.is_empty());
                let _ = Repr::parse(&udp, &pseudo);
            }
        }
    }
}
