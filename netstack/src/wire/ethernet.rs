//! Ethernet II frames: destination, source, ethertype, payload; with at most
//! one IEEE 802.1Q (TPID 0x8100) or 802.1ad (TPID 0x88a8) VLAN tag between
//! the source address and the ethertype.
//!
//! A frame with two tags (QinQ) reads as its outer tag, an [`Frame::ethertype`]
//! of 0x8100 (the inner tag's TPID) and a payload that starts with the inner
//! tag's TCI; peel it with [`Vlan::parse`] if needed. The frame check sequence
//! is not part of the buffer: NICs strip it.

use std::fmt;

use super::error::need;
use super::{Error, Layer};

/// A 48-bit MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Address(pub [u8; 6]);

impl Address {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Self = Self([0xff; 6]);

    /// Whether this is the broadcast address.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Whether the group bit (least significant bit of the first octet) is
    /// set; broadcast is a multicast address.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Whether this is an individual (unicast) address.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// The 16-bit type of an Ethernet payload.
///
/// A newtype so that types this crate does not name round-trip unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EtherType(pub u16);

impl EtherType {
    /// IPv4.
    pub const IPV4: Self = Self(0x0800);
    /// ARP.
    pub const ARP: Self = Self(0x0806);
    /// IEEE 802.1Q VLAN tag (customer tag).
    pub const VLAN: Self = Self(0x8100);
    /// IPv6.
    pub const IPV6: Self = Self(0x86dd);
    /// IEEE 802.1ad VLAN tag (service tag, the outer tag of QinQ).
    pub const QINQ: Self = Self(0x88a8);

    /// Whether a VLAN tag follows when this type sits in the TPID position.
    pub fn is_vlan_tpid(self) -> bool {
        self == Self::VLAN || self == Self::QINQ
    }
}

impl fmt::Display for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04x}", self.0)
    }
}

/// A VLAN tag: the tag protocol identifier and the tag control information.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Vlan {
    /// [`EtherType::VLAN`] (802.1Q) or [`EtherType::QINQ`] (802.1ad).
    pub tpid: EtherType,
    /// Priority code point, 3 bits (0..=7).
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN identifier, 12 bits (0..=4095).
    pub vid: u16,
}

impl Vlan {
    /// Decodes a 2-byte TCI that followed `tpid`.
    pub fn from_tci(tpid: EtherType, tci: u16) -> Self {
        Self { tpid, pcp: (tci >> 13) as u8, dei: tci & 0x1000 != 0, vid: tci & 0x0fff }
    }

    /// The 2-byte TCI. Out-of-range `pcp` and `vid` bits are masked off.
    pub fn tci(&self) -> u16 {
        (u16::from(self.pcp & 0x7) << 13) | (u16::from(self.dei) << 12) | (self.vid & 0x0fff)
    }

    /// Reads the TCI at the start of `bytes` (the payload of a frame whose
    /// ethertype is a VLAN TPID, for the inner tag of QinQ); returns the tag
    /// and the ethertype that follows it.
    pub fn parse(tpid: EtherType, bytes: &[u8]) -> Result<(Self, EtherType), Error> {
        match bytes {
            [t0, t1, e0, e1, ..] => Ok((
                Self::from_tci(tpid, u16::from_be_bytes([*t0, *t1])),
                EtherType(u16::from_be_bytes([*e0, *e1])),
            )),
            _ => Err(Error::Truncated { layer: Layer::Ethernet, needed: 4, got: bytes.len() }),
        }
    }
}

mod field {
    use std::ops::Range;

    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    /// The ethertype of an untagged frame, or the TPID of a tagged one.
    pub const TYPE_OR_TPID: Range<usize> = 12..14;
    pub const UNTAGGED_PAYLOAD: usize = 14;
    pub const TCI: Range<usize> = 14..16;
    pub const TAGGED_TYPE: Range<usize> = 16..18;
    pub const TAGGED_PAYLOAD: usize = 18;
}

/// Length of an untagged Ethernet II header.
pub const HEADER_LEN: usize = field::UNTAGGED_PAYLOAD;
/// Length of an Ethernet II header with one VLAN tag.
pub const TAGGED_HEADER_LEN: usize = field::TAGGED_PAYLOAD;

/// A view of an Ethernet II frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checking it; for frames about to be written.
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Checks that the buffer holds the whole header, tag included; after
    /// that no accessor panics.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        need(Layer::Ethernet, HEADER_LEN, len)?;
        need(Layer::Ethernet, self.header_len(), len)
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn read_u16(&self, range: std::ops::Range<usize>) -> u16 {
        let b = &self.buffer.as_ref()[range];
        u16::from_be_bytes([b[0], b[1]])
    }

    fn read_addr(&self, range: std::ops::Range<usize>) -> Address {
        let mut a = [0u8; 6];
        a.copy_from_slice(&self.buffer.as_ref()[range]);
        Address(a)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Address {
        self.read_addr(field::DESTINATION)
    }

    /// Source address.
    pub fn src_addr(&self) -> Address {
        self.read_addr(field::SOURCE)
    }

    fn type_or_tpid(&self) -> EtherType {
        EtherType(self.read_u16(field::TYPE_OR_TPID))
    }

    /// The VLAN tag, if the frame carries one.
    pub fn vlan(&self) -> Option<Vlan> {
        let tpid = self.type_or_tpid();
        tpid.is_vlan_tpid().then(|| Vlan::from_tci(tpid, self.read_u16(field::TCI)))
    }

    /// The type of the payload: the ethertype after the VLAN tag if there is
    /// one.
    pub fn ethertype(&self) -> EtherType {
        if self.type_or_tpid().is_vlan_tpid() {
            EtherType(self.read_u16(field::TAGGED_TYPE))
        } else {
            self.type_or_tpid()
        }
    }

    /// Length of the header: 14, or 18 with a VLAN tag.
    pub fn header_len(&self) -> usize {
        if self.type_or_tpid().is_vlan_tpid() {
            TAGGED_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// The payload: everything after the header. Ethernet has no length
    /// field, so short payloads include the padding up to the 60-byte
    /// minimum frame; the IP header's length says where the packet ends.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Address) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr.0);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Address) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr.0);
    }

    /// Writes or removes the VLAN tag. This moves where the ethertype and
    /// payload are, so call it before [`Self::set_ethertype`] and before
    /// writing the payload. A tag needs a buffer of [`TAGGED_HEADER_LEN`].
    pub fn set_vlan(&mut self, vlan: Option<Vlan>) {
        let buf = self.buffer.as_mut();
        match vlan {
            Some(tag) => {
                buf[field::TYPE_OR_TPID].copy_from_slice(&tag.tpid.0.to_be_bytes());
                buf[field::TCI].copy_from_slice(&tag.tci().to_be_bytes());
            }
            // Any non-TPID value marks the frame untagged; the real
            // ethertype is written by set_ethertype.
            None => buf[field::TYPE_OR_TPID].copy_from_slice(&EtherType::IPV4.0.to_be_bytes()),
        }
    }

    /// Sets the payload type, after the VLAN tag if the frame has one.
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        let range = if self.type_or_tpid().is_vlan_tpid() { field::TAGGED_TYPE } else { field::TYPE_OR_TPID };
        self.buffer.as_mut()[range].copy_from_slice(&ethertype.0.to_be_bytes());
    }

    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
}

/// The meaning of an Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Destination address.
    pub dst_addr: Address,
    /// Source address.
    pub src_addr: Address,
    /// Type of the payload (after the VLAN tag, if any). Without a tag, a
    /// VLAN TPID here makes the frame read back as tagged.
    pub ethertype: EtherType,
    /// The VLAN tag, if any.
    pub vlan: Option<Vlan>,
}

impl Repr {
    /// Reads a checked frame.
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Result<Self, Error> {
        frame.check_len()?;
        Ok(Self {
            dst_addr: frame.dst_addr(),
            src_addr: frame.src_addr(),
            ethertype: frame.ethertype(),
            vlan: frame.vlan(),
        })
    }

    /// Length of the header this writes.
    pub fn header_len(&self) -> usize {
        if self.vlan.is_some() {
            TAGGED_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Length of the header this writes; Ethernet has no length field, so
    /// the payload is whatever the buffer holds after it.
    pub fn buffer_len(&self) -> usize {
        self.header_len()
    }

    /// Writes the header; the payload is left as it is.
    ///
    /// A `vlan` whose `tpid` is not a VLAN TPID would read back as an
    /// untagged frame, so it is written as 802.1Q.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut Frame<T>) -> Result<(), Error> {
        need(Layer::Ethernet, self.header_len(), frame.buffer.as_ref().len())?;
        frame.set_dst_addr(self.dst_addr);
        frame.set_src_addr(self.src_addr);
        frame.set_vlan(self.vlan.map(|v| {
            if v.tpid.is_vlan_tpid() {
                v
            } else {
                Vlan { tpid: EtherType::VLAN, ..v }
            }
        }));
        frame.set_ethertype(self.ethertype);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An ARP request (who-has 10.0.0.2 tell 10.0.0.1), as captured: the
    /// 42 bytes of ARP frame with the padding a NIC adds up to 60 bytes.
    const ARP_FRAME: [u8; 60] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // destination: broadcast
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // source
        0x08, 0x06, // ARP
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // htype, ptype, hlen, plen, request
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 10, 0, 0, 1, // sender
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 0, 0, 2, // target
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // padding
    ];

    /// A tagged frame: VLAN 100, priority 5, carrying IPv6 (payload elided).
    const TAGGED_HEADER: [u8; 20] = [
        0x33, 0x33, 0x00, 0x00, 0x00, 0x01, // destination: IPv6 all-nodes multicast
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // source
        0x81, 0x00, 0xa0, 0x64, // 802.1Q, PCP 5, DEI 0, VID 100
        0x86, 0xdd, // IPv6
        0xde, 0xad,
    ];

    fn arp_repr() -> Repr {
        Repr {
            dst_addr: Address::BROADCAST,
            src_addr: Address([2, 0, 0, 0, 0, 1]),
            ethertype: EtherType::ARP,
            vlan: None,
        }
    }

    fn tagged_repr() -> Repr {
        Repr {
            dst_addr: Address([0x33, 0x33, 0, 0, 0, 1]),
            src_addr: Address([2, 0, 0, 0, 0, 1]),
            ethertype: EtherType::IPV6,
            vlan: Some(Vlan { tpid: EtherType::VLAN, pcp: 5, dei: false, vid: 100 }),
        }
    }

    #[test]
    fn deconstruct_untagged() {
        let frame = Frame::new_checked(&ARP_FRAME[..]).unwrap();
        assert_eq!(frame.dst_addr(), Address::BROADCAST);
        assert!(frame.dst_addr().is_broadcast() && frame.dst_addr().is_multicast());
        assert!(frame.src_addr().is_unicast());
        assert_eq!(frame.ethertype(), EtherType::ARP);
        assert_eq!(frame.vlan(), None);
        assert_eq!(frame.header_len(), 14);
        assert_eq!(frame.payload().len(), 46);
        assert_eq!(Repr::parse(&frame).unwrap(), arp_repr());
        assert_eq!(frame.src_addr().to_string(), "02:00:00:00:00:01");
    }

    #[test]
    fn construct_untagged() {
        let mut buf = [0xa5u8; 60];
        let mut frame = Frame::new_unchecked(&mut buf[..]);
        arp_repr().emit(&mut frame).unwrap();
        frame.payload_mut().copy_from_slice(&ARP_FRAME[14..]);
        assert_eq!(buf, ARP_FRAME);
    }

    #[test]
    fn deconstruct_tagged() {
        let frame = Frame::new_checked(&TAGGED_HEADER[..]).unwrap();
        assert_eq!(frame.vlan(), Some(Vlan { tpid: EtherType::VLAN, pcp: 5, dei: false, vid: 100 }));
        assert_eq!(frame.ethertype(), EtherType::IPV6);
        assert_eq!(frame.header_len(), 18);
        assert_eq!(frame.payload(), &[0xde, 0xad]);
        assert_eq!(Repr::parse(&frame).unwrap(), tagged_repr());
    }

    #[test]
    fn construct_tagged() {
        let mut buf = [0u8; 20];
        let mut frame = Frame::new_unchecked(&mut buf[..]);
        tagged_repr().emit(&mut frame).unwrap();
        frame.payload_mut().copy_from_slice(&[0xde, 0xad]);
        assert_eq!(buf, TAGGED_HEADER);
    }

    #[test]
    fn qinq_exposes_the_outer_tag_and_the_inner_can_be_peeled() {
        let bytes = [
            1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, // addresses
            0x88, 0xa8, 0x00, 0x0a, // 802.1ad, VID 10
            0x81, 0x00, 0x30, 0x14, // 802.1Q, PCP 1, DEI 1, VID 20
            0x08, 0x00, // IPv4
        ];
        let frame = Frame::new_checked(&bytes[..]).unwrap();
        assert_eq!(frame.vlan(), Some(Vlan { tpid: EtherType::QINQ, pcp: 0, dei: false, vid: 10 }));
        assert_eq!(frame.ethertype(), EtherType::VLAN);
        let (inner, ethertype) = Vlan::parse(frame.ethertype(), frame.payload()).unwrap();
        assert_eq!(inner, Vlan { tpid: EtherType::VLAN, pcp: 1, dei: true, vid: 20 });
        assert_eq!(ethertype, EtherType::IPV4);
        assert!(Vlan::parse(EtherType::VLAN, &[0x00, 0x01, 0x08]).is_err());
    }

    #[test]
    fn emit_into_a_short_buffer_fails() {
        let mut buf = [0u8; 17];
        let err = tagged_repr().emit(&mut Frame::new_unchecked(&mut buf[..])).unwrap_err();
        assert_eq!(err, Error::Truncated { layer: Layer::Ethernet, needed: 18, got: 17 });
    }

    #[test]
    fn truncation_at_every_length_errors() {
        for n in 0..TAGGED_HEADER.len() {
            let r = Frame::new_checked(&TAGGED_HEADER[..n]);
            assert_eq!(r.is_ok(), n >= 18, "length {n}");
        }
        for n in 0..14 {
            assert!(Frame::new_checked(&ARP_FRAME[..n]).is_err());
        }
    }

    fn arb_repr() -> impl Strategy<Value = Repr> {
        let vlan = prop_oneof![Just(EtherType::VLAN), Just(EtherType::QINQ)]
            .prop_flat_map(|tpid| (Just(tpid), 0u8..8, any::<bool>(), 0u16..4096))
            .prop_map(|(tpid, pcp, dei, vid)| Vlan { tpid, pcp, dei, vid });
        (any::<[u8; 6]>(), any::<[u8; 6]>(), any::<u16>(), proptest::option::of(vlan))
            // An untagged frame whose ethertype is a TPID would read back as tagged.
            .prop_filter("ethertype is a TPID", |(_, _, t, vlan)| {
                vlan.is_some() || !EtherType(*t).is_vlan_tpid()
            })
            .prop_map(|(d, s, t, vlan)| Repr {
                dst_addr: Address(d),
                src_addr: Address(s),
                ethertype: EtherType(t),
                vlan,
            })
    }

    proptest! {
        #[test]
        fn round_trip(repr in arb_repr(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut buf = vec![0u8; repr.buffer_len() + payload.len()];
            let mut frame = Frame::new_unchecked(&mut buf[..]);
            repr.emit(&mut frame).unwrap();
            frame.payload_mut().copy_from_slice(&payload);
            let frame = Frame::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(Repr::parse(&frame).unwrap(), repr);
            prop_assert_eq!(frame.payload(), &payload[..]);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(frame) = Frame::new_checked(&bytes[..]) {
                let _ = (frame.dst_addr(), frame.src_addr(), frame.ethertype(), frame.vlan(), frame.payload());
                let repr = Repr::parse(&frame).unwrap();
                prop_assert_eq!(repr.header_len() + frame.payload().len(), bytes.len());
            }
        }
    }
}
