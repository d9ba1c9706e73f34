//! The Internet checksum (RFC 1071) and the IPv4/IPv6 pseudo-headers that
//! UDP and TCP checksums cover.
//!
//! Sums are kept *unfolded-then-folded* and *uncomplemented* ([`data`],
//! [`combine`]) so that the parts of a checksum (pseudo-header, header,
//! payload) can be summed separately and added; only the final value is
//! complemented ([`finish`]). The ones-complement sum does not depend on
//! where the 16-bit words are split, as long as each part but the last has
//! an even length.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::IpProtocol;

/// The ones-complement sum of `data` read as big-endian 16-bit words, folded
/// to 16 bits and not complemented. An odd trailing byte counts as the high
/// byte of a word whose low byte is zero.
pub fn data(data: &[u8]) -> u16 {
    let mut words = data.chunks_exact(2);
    // A u64 cannot overflow: it would take 2^48 words.
    let mut sum: u64 = words.by_ref().map(|w| u64::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    fold(sum)
}

/// Adds partial sums (each from [`data`] or a pseudo-header helper).
pub fn combine(sums: &[u16]) -> u16 {
    fold(sums.iter().map(|&s| u64::from(s)).sum())
}

/// The value to store in a checksum field: the complement of the sum.
pub fn finish(sum: u16) -> u16 {
    !sum
}

/// Whether bytes whose sum (stored checksum included) is `sum` are intact:
/// a correct checksum makes the total all ones.
pub fn is_valid(sum: u16) -> bool {
    sum == 0xffff
}

fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 0xffff.
    sum as u16
}

/// The sum of the IPv4 pseudo-header (RFC 768): source, destination, zero,
/// protocol, and the upper-layer length.
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, length: u16) -> u16 {
    let [s0, s1, s2, s3] = src.octets();
    let [d0, d1, d2, d3] = dst.octets();
    let [l0, l1] = length.to_be_bytes();
    data(&[s0, s1, s2, s3, d0, d1, d2, d3, 0, protocol.0, l0, l1])
}

/// The sum of the IPv6 pseudo-header (RFC 8200 section 8.1): source,
/// destination, 32-bit upper-layer length, three zero bytes, next header.
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: IpProtocol, length: u32) -> u16 {
    let mut tail = [0u8; 8];
    tail[..4].copy_from_slice(&length.to_be_bytes());
    tail[7] = next_header.0;
    combine(&[data(&src.octets()), data(&dst.octets()), data(&tail)])
}

/// The addresses an upper-layer checksum covers, with the IP version that
/// decides both the pseudo-header layout and whether a zero UDP checksum is
/// allowed. Get one from [`crate::wire::ipv4::Repr::pseudo_header`] or
/// [`crate::wire::ipv6::Repr::pseudo_header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PseudoHeader {
    /// An IPv4 source and destination.
    V4 {
        /// Source address.
        src: Ipv4Addr,
        /// Destination address.
        dst: Ipv4Addr,
    },
    /// An IPv6 source and destination.
    V6 {
        /// Source address.
        src: Ipv6Addr,
        /// Destination address.
        dst: Ipv6Addr,
    },
}

impl PseudoHeader {
    /// The pseudo-header sum for an upper-layer packet of `protocol` and
    /// `length` bytes. The caller keeps `length` within the protocol's own
    /// length field (16 bits for UDP), so the IPv4 truncation never bites.
    pub fn sum(&self, protocol: IpProtocol, length: usize) -> u16 {
        match *self {
            Self::V4 { src, dst } => pseudo_header_v4(src, dst, protocol, length as u16),
            Self::V6 { src, dst } => pseudo_header_v6(src, dst, protocol, length as u32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The example from RFC 1071 section 3: the sum of these words is ddf2.
    #[test]
    fn rfc1071_example() {
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(data(&bytes), 0xddf2);
        assert_eq!(finish(data(&bytes)), 0x220d);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(data(&[0x12]), 0x1200);
        assert_eq!(data(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(data(&[]), 0);
    }

    #[test]
    fn carries_wrap_around() {
        assert_eq!(data(&[0xff, 0xff, 0x00, 0x01]), 0x0001);
        assert_eq!(data(&[0xff; 1 << 17]), 0xffff);
    }

    #[test]
    fn pseudo_header_v4_matches_the_spelled_out_bytes() {
        let (src, dst) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let bytes = [10, 0, 0, 1, 10, 0, 0, 2, 0, 17, 0, 15];
        assert_eq!(pseudo_header_v4(src, dst, IpProtocol::UDP, 15), data(&bytes));
    }

    #[test]
    fn pseudo_header_v6_matches_the_spelled_out_bytes() {
        let src: Ipv6Addr = "fd00::1".parse().unwrap();
        let dst: Ipv6Addr = "fd00::2".parse().unwrap();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src.octets());
        bytes.extend_from_slice(&dst.octets());
        bytes.extend_from_slice(&[0, 1, 0, 15, 0, 0, 0, 17]);
        assert_eq!(pseudo_header_v6(src, dst, IpProtocol::UDP, 0x1_000f), data(&bytes));
    }

    /// The straightforward definition, to check the fast path against.
    fn reference(bytes: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for (i, b) in bytes.iter().enumerate() {
            sum += if i % 2 == 0 { u32::from(*b) << 8 } else { u32::from(*b) };
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    proptest! {
        #[test]
        fn matches_reference(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            prop_assert_eq!(data(&bytes), reference(&bytes));
        }

        #[test]
        fn split_at_even_offsets_combines(bytes in proptest::collection::vec(any::<u8>(), 0..600), at in 0usize..300) {
            let at = (at * 2).min(bytes.len() & !1);
            let (a, b) = bytes.split_at(at);
            prop_assert_eq!(combine(&[data(a), data(b)]), data(&bytes));
        }

        #[test]
        fn stored_checksum_makes_the_sum_valid(mut bytes in proptest::collection::vec(any::<u8>(), 2..200)) {
            bytes[0] = 0;
            bytes[1] = 0;
            let c = finish(data(&bytes));
            bytes[..2].copy_from_slice(&c.to_be_bytes());
            prop_assert!(is_valid(data(&bytes)));
        }
    }
}
