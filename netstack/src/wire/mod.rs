//! Wire formats: reading and writing the bytes of the protocols the
//! appliance speaks, with no I/O.
//!
//! Every format comes at two levels, as in smoltcp's `wire`:
//!
//! * a **view** (`Packet<T: AsRef<[u8]>>`, `Frame<T>`) over a borrowed or
//!   owned buffer, with field accessors and, for `T: AsMut<[u8]>`, setters.
//!   `new_checked` validates every length the accessors rely on, so once it
//!   returns `Ok` no accessor panics, whatever the bytes were. Use it for
//!   anything that came from the network. `new_unchecked` is for buffers the
//!   caller is about to fill (emit), and its accessors may panic on a buffer
//!   that is too short.
//! * a **`Repr`**: the owned, plain-data meaning of a header, `parse`d from a
//!   checked view and `emit`ted back into one; `parse(emit(x)) == x`.
//!
//! | module | format |
//! | --- | --- |
//! | [`proxy`] | PROXY protocol v1 (text) and v2 (binary), as an L4 load balancer sends and receives it |
//! | [`ethernet`] | Ethernet II frames, with one optional 802.1Q/802.1ad VLAN tag |
//! | [`ipv4`] | IPv4 headers (options skipped), header checksum |
//! | [`ipv6`] | the fixed IPv6 header (extension headers are not walked) |
//! | [`udp`] | UDP headers, checksum over the IPv4 or IPv6 pseudo-header |
//! | [`checksum`] | the RFC 1071 Internet checksum |
//!
//! A UDP datagram from an Ethernet frame, checked at each layer:
//!
//! ```
//! use netstack::wire::{ethernet, ipv4, udp, EtherType, IpProtocol};
//!
//! # fn frame_bytes() -> Vec<u8> {
//! #     let mut buf = vec![0u8; 14 + 20 + 8 + 7];
//! #     let payload = b"foo:1|c";
//! #     let ip = ipv4::Repr {
//! #         src_addr: [10, 0, 0, 1].into(), dst_addr: [10, 0, 0, 2].into(),
//! #         protocol: IpProtocol::UDP, payload_len: 8 + payload.len(), ..ipv4::Repr::default()
//! #     };
//! #     let eth = ethernet::Repr { src_addr: ethernet::Address([2, 0, 0, 0, 0, 1]),
//! #         dst_addr: ethernet::Address([2, 0, 0, 0, 0, 2]), ethertype: EtherType::IPV4, vlan: None };
//! #     let mut f = ethernet::Frame::new_unchecked(&mut buf[..]);
//! #     eth.emit(&mut f).unwrap();
//! #     let mut p = ipv4::Packet::new_unchecked(f.payload_mut());
//! #     ip.emit(&mut p).unwrap();
//! #     let mut u = udp::Packet::new_unchecked(p.payload_mut());
//! #     udp::Repr { src_port: 1234, dst_port: 8125, payload_len: payload.len() }
//! #         .emit(&mut u, &ip.pseudo_header(), |p| p.copy_from_slice(payload)).unwrap();
//! #     buf
//! # }
//! # fn main() -> Result<(), netstack::wire::Error> {
//! let bytes = frame_bytes();
//! let frame = ethernet::Frame::new_checked(&bytes[..])?;
//! assert_eq!(frame.ethertype(), EtherType::IPV4);
//! let packet = ipv4::Packet::new_checked(frame.payload())?;
//! let ip = ipv4::Repr::parse(&packet)?; // verifies the header checksum
//! let datagram = udp::Packet::new_checked(packet.payload())?;
//! let repr = udp::Repr::parse(&datagram, &ip.pseudo_header())?; // and the UDP one
//! assert_eq!((repr.dst_port, datagram.payload()), (8125, &b"foo:1|c"[..]));
//! # Ok(()) }
//! ```

pub mod checksum;
mod error;
pub mod ethernet;
pub mod ipv4;
pub mod ipv6;
pub mod proxy;
pub mod udp;

pub use error::{Error, Layer};
pub use ethernet::EtherType;

use std::fmt;

/// The protocol number carried in IPv4's `protocol` and IPv6's `next
/// header` field.
///
/// A newtype rather than an enum so that numbers this crate does not name
/// survive a parse/emit round trip unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    /// IPv6 Hop-by-Hop Options extension header.
    pub const HOP_BY_HOP: Self = Self(0);
    /// ICMP for IPv4.
    pub const ICMP: Self = Self(1);
    /// TCP.
    pub const TCP: Self = Self(6);
    /// UDP.
    pub const UDP: Self = Self(17);
    /// IPv6 Routing extension header.
    pub const IPV6_ROUTING: Self = Self(43);
    /// IPv6 Fragment extension header.
    pub const IPV6_FRAGMENT: Self = Self(44);
    /// ICMP for IPv6.
    pub const ICMPV6: Self = Self(58);
    /// IPv6 "no next header".
    pub const IPV6_NO_NEXT: Self = Self(59);
    /// IPv6 Destination Options extension header.
    pub const IPV6_DEST_OPTS: Self = Self(60);
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ICMP => f.write_str("ICMP"),
            Self::TCP => f.write_str("TCP"),
            Self::UDP => f.write_str("UDP"),
            Self::ICMPV6 => f.write_str("ICMPv6"),
            Self(n) => write!(f, "protocol {n}"),
        }
    }
}
