//! Datagrams from an AF_XDP socket: one NIC receive queue's frames, checked
//! here because nothing in the kernel checked them.
//!
//! The XDP program redirects what looks like UDP to the service's port
//! (`crate::xdp::program`); this backend parses every frame again with the
//! crate's checked wire views (Ethernet, IPv4 or IPv6, UDP), verifies the
//! IPv4 header checksum and the UDP checksum (AF_XDP frames skip the
//! kernel's checks, and a NIC's checksum offload says nothing to us in copy
//! mode), and hands the payload on in the frame it arrived in: no copy.
//! A frame that fails a check is dropped and counted by reason
//! ([`FrameDrops`]); the rest of the burst goes on.
//!
//! It receives only: replies and relays go through kernel sockets.

use std::cell::Cell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::rc::Rc;

use super::{DatagramBackend, Outgoing, Received};
use crate::wire::{ethernet, ipv4, ipv6, udp, EtherType, IpProtocol};
use crate::xdp::socket::{XskFrame, XskSocket, XskStats};

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameDrop {
    /// Shorter than its headers, or than a length field says.
    Malformed,
    /// The IPv4 header checksum is wrong.
    IpChecksum,
    /// The UDP checksum is wrong (or missing over IPv6).
    UdpChecksum,
    /// Not UDP to our port (the program should not have sent it: an IPv6
    /// extension header, a fragment, another port).
    NotOurs,
}

impl FrameDrop {
    /// Every reason, in [`FrameDrop::index`] order.
    pub const ALL: [FrameDrop; 4] =
        [FrameDrop::Malformed, FrameDrop::IpChecksum, FrameDrop::UdpChecksum, FrameDrop::NotOurs];

    /// A small index, for counters.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The reason as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            FrameDrop::Malformed => "malformed",
            FrameDrop::IpChecksum => "ip_checksum",
            FrameDrop::UdpChecksum => "udp_checksum",
            FrameDrop::NotOurs => "not_ours",
        }
    }
}

/// Frames dropped by reason.
#[derive(Debug, Default)]
struct FrameDrops([Cell<u64>; FrameDrop::ALL.len()]);

impl FrameDrops {
    fn count(&self, why: FrameDrop) {
        let c = &self.0[why.index()];
        c.set(c.get() + 1);
    }

    fn get(&self, why: FrameDrop) -> u64 {
        self.0[why.index()].get()
    }
}

/// The UDP payload of a frame to `port`, and who sent it: the byte range
/// of the payload within `frame`, after every length and checksum held.
pub(crate) fn datagram(frame: &[u8], port: u16) -> Result<(Range<usize>, SocketAddr), FrameDrop> {
    let eth = ethernet::Frame::new_checked(frame).map_err(|_| FrameDrop::Malformed)?;
    let at = eth.header_len();
    let ip = eth.payload();
    // The checked views guarantee these ranges lie within `ip`.
    let (ip_len, source, pseudo, protocol, packet) = match eth.ethertype() {
        EtherType::IPV4 => {
            let p = ipv4::Packet::new_checked(ip).map_err(|_| FrameDrop::Malformed)?;
            let repr = ipv4::Repr::parse(&p).map_err(|e| match e {
                crate::wire::Error::Checksum { .. } => FrameDrop::IpChecksum,
                _ => FrameDrop::Malformed,
            })?;
            if repr.is_fragment() {
                return Err(FrameDrop::NotOurs);
            }
            let (start, end) = (p.header_len(), usize::from(p.total_len()));
            (start, IpAddr::V4(repr.src_addr), repr.pseudo_header(), repr.protocol, &ip[start..end])
        }
        EtherType::IPV6 => {
            let p = ipv6::Packet::new_checked(ip).map_err(|_| FrameDrop::Malformed)?;
            let repr = ipv6::Repr::parse(&p).map_err(|_| FrameDrop::Malformed)?;
            let (start, end) = (repr.header_len(), repr.header_len() + repr.payload_len);
            (start, IpAddr::V6(repr.src_addr), repr.pseudo_header(), repr.next_header, &ip[start..end])
        }
        _ => return Err(FrameDrop::NotOurs),
    };
    if protocol != IpProtocol::UDP {
        return Err(FrameDrop::NotOurs);
    }
    let u = udp::Packet::new_checked(packet).map_err(|_| FrameDrop::Malformed)?;
    let repr = udp::Repr::parse(&u, &pseudo).map_err(|e| match e {
        crate::wire::Error::Checksum { .. } => FrameDrop::UdpChecksum,
        _ => FrameDrop::Malformed,
    })?;
    if repr.dst_port != port {
        return Err(FrameDrop::NotOurs);
    }
    let start = at + ip_len + repr.header_len();
    Ok((start..start + repr.payload_len, SocketAddr::new(source, repr.src_port)))
}

/// Datagrams to `port` from one AF_XDP socket; see the module docs.
#[derive(Debug)]
pub struct XdpUdp {
    socket: Rc<XskSocket>,
    port: u16,
    /// The interface's own address: a unicast frame to another (a router's
    /// or a promiscuous port's traffic) is not ours to take.
    mac: Option<[u8; 6]>,
    frames: Vec<XskFrame>,
    drops: Rc<FrameDrops>,
}

/// What a service reads of a receiving [`XdpUdp`] (for its metrics) while
/// the backend itself is inside the receive loop.
#[derive(Debug, Clone)]
pub struct XdpCounters {
    socket: Rc<XskSocket>,
    drops: Rc<FrameDrops>,
}

impl XdpCounters {
    /// The receive queue the socket is bound to.
    pub fn queue(&self) -> u32 {
        self.socket.queue()
    }

    /// The socket's counters (frames received, fill ring starvation, the
    /// kernel's drops).
    pub fn stats(&self) -> io::Result<XskStats> {
        self.socket.stats()
    }

    /// Frames dropped for `why`.
    pub fn dropped(&self, why: FrameDrop) -> u64 {
        self.drops.get(why)
    }
}

impl XdpUdp {
    /// Receives the datagrams to `port` that reach `socket`.
    pub fn new(socket: XskSocket, port: u16) -> XdpUdp {
        XdpUdp { socket: Rc::new(socket), port, mac: None, frames: Vec::new(), drops: Rc::default() }
    }

    /// Takes only frames to `mac` (the interface's address), broadcast or
    /// multicast; other unicast frames are dropped as not ours.
    pub fn only_to(mut self, mac: [u8; 6]) -> XdpUdp {
        self.mac = Some(mac);
        self
    }

    /// A handle on the counters that stays current.
    pub fn counters(&self) -> XdpCounters {
        XdpCounters { socket: self.socket.clone(), drops: self.drops.clone() }
    }

    /// Checks the frames taken from the ring; the good ones go to `out`.
    fn sort(&mut self, out: &mut Vec<Received<XskFrame>>) -> usize {
        let mut n = 0;
        for mut frame in self.frames.drain(..) {
            let to = frame.as_ref().get(..6);
            // The group bit of the first octet marks broadcast and multicast.
            if let (Some(mac), Some(to)) = (self.mac, to) {
                if to != mac && to[0] & 1 == 0 {
                    self.drops.count(FrameDrop::NotOurs);
                    continue;
                }
            }
            match datagram(frame.as_ref(), self.port) {
                Ok((payload, source)) => {
                    frame.narrow(payload);
                    out.push(Received { buf: frame, source: Some(source), truncated: false });
                    n += 1;
                }
                // Dropping the frame gives it back to the fill ring.
                Err(why) => self.drops.count(why),
            }
        }
        n
    }
}

impl DatagramBackend for XdpUdp {
    type Buf = XskFrame;

    async fn recv_burst(&mut self, out: &mut Vec<Received<XskFrame>>, max: usize) -> io::Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        loop {
            self.socket.try_recv(&mut self.frames, max);
            let n = self.sort(out);
            if n > 0 {
                return Ok(n);
            }
            self.socket.readable().await?;
        }
    }

    async fn send_burst(&mut self, burst: &mut Vec<Outgoing>) -> io::Result<usize> {
        burst.clear();
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the AF_XDP backend only receives; send through the service's kernel socket",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// An Ethernet + IPv4 (or IPv6) + UDP frame carrying `payload` to `port`.
    fn frame(v6: bool, payload: &[u8], port: u16) -> Vec<u8> {
        let (ethertype, ip_len) = if v6 { (EtherType::IPV6, 40) } else { (EtherType::IPV4, 20) };
        let eth = ethernet::Repr {
            src_addr: ethernet::Address([2, 0, 0, 0, 0, 1]),
            dst_addr: ethernet::Address([2, 0, 0, 0, 0, 2]),
            ethertype,
            vlan: None,
        };
        let mut buf = vec![0u8; 14 + ip_len + 8 + payload.len()];
        let mut f = ethernet::Frame::new_unchecked(&mut buf[..]);
        eth.emit(&mut f).expect("eth");
        let (l4_len, udp) =
            (8 + payload.len(), udp::Repr { src_port: 4000, dst_port: port, payload_len: payload.len() });
        let (ip_bytes, pseudo) = if v6 {
            let ip = ipv6::Repr {
                src_addr: "fd00::1".parse().expect("addr"),
                dst_addr: "fd00::2".parse().expect("addr"),
                next_header: IpProtocol::UDP,
                payload_len: l4_len,
                ..ipv6::Repr::default()
            };
            ip.emit(&mut ipv6::Packet::new_unchecked(f.payload_mut())).expect("ip");
            (f.payload_mut(), ip.pseudo_header())
        } else {
            let ip = ipv4::Repr {
                src_addr: Ipv4Addr::new(10, 0, 0, 1),
                dst_addr: Ipv4Addr::new(10, 0, 0, 2),
                protocol: IpProtocol::UDP,
                payload_len: l4_len,
                ..ipv4::Repr::default()
            };
            ip.emit(&mut ipv4::Packet::new_unchecked(f.payload_mut())).expect("ip");
            (f.payload_mut(), ip.pseudo_header())
        };
        let mut u = udp::Packet::new_unchecked(&mut ip_bytes[ip_len..]);
        udp.emit(&mut u, &pseudo, |b| b.copy_from_slice(payload)).expect("udp");
        buf
    }

    fn v4_frame(payload: &[u8], port: u16) -> Vec<u8> {
        frame(false, payload, port)
    }

    fn v6_frame(payload: &[u8], port: u16) -> Vec<u8> {
        frame(true, payload, port)
    }

    #[test]
    fn ipv6_frames_are_checked_the_same_way() {
        let f = v6_frame(b"a:1|c", 8125);
        let (range, from) = datagram(&f, 8125).expect("valid");
        assert_eq!((&f[range], from), (&b"a:1|c"[..], "[fd00::1]:4000".parse().expect("addr")));
        let mut no_sum = f.clone();
        no_sum[14 + 40 + 6..14 + 40 + 8].copy_from_slice(&[0, 0]);
        assert_eq!(datagram(&no_sum, 8125), Err(FrameDrop::UdpChecksum), "IPv6 requires the checksum");
        let mut extension = f.clone();
        extension[14 + 6] = 0; // hop-by-hop options: not walked
        assert_eq!(datagram(&extension, 8125), Err(FrameDrop::NotOurs));
        let mut long = f.clone();
        long[14 + 4..14 + 6].copy_from_slice(&1000u16.to_be_bytes()); // payload length past the frame
        assert_eq!(datagram(&long, 8125), Err(FrameDrop::Malformed));
    }

    #[test]
    fn a_good_frame_yields_its_payload_and_sender() {
        let f = v4_frame(b"a:1|c\nb:2|c", 8125);
        let (range, from) = datagram(&f, 8125).expect("valid");
        assert_eq!(&f[range], b"a:1|c\nb:2|c");
        assert_eq!(from, "10.0.0.1:4000".parse().expect("addr"));
    }

    #[test]
    fn every_damage_is_dropped_by_its_reason() {
        let good = v4_frame(b"a:1|c", 8125);
        assert_eq!(datagram(&good, 8126), Err(FrameDrop::NotOurs));
        assert_eq!(datagram(&good[..20], 8125), Err(FrameDrop::Malformed));
        assert_eq!(datagram(&good[..good.len() - 2], 8125), Err(FrameDrop::Malformed), "cut payload");
        let mut bad_ip = good.clone();
        bad_ip[14 + 8] ^= 0x40; // TTL, covered by the header checksum
        assert_eq!(datagram(&bad_ip, 8125), Err(FrameDrop::IpChecksum));
        let mut bad_udp = good.clone();
        *bad_udp.last_mut().expect("payload") ^= 0x01;
        assert_eq!(datagram(&bad_udp, 8125), Err(FrameDrop::UdpChecksum));
        let mut fragment = good.clone();
        fragment[14 + 6] |= 0x20; // more fragments
        let len = fragment.len();
        // Keep the IPv4 checksum right so the fragment bit is what counts.
        let mut p = ipv4::Packet::new_unchecked(&mut fragment[14..len]);
        p.fill_checksum();
        assert_eq!(datagram(&fragment, 8125), Err(FrameDrop::NotOurs));
    }

    proptest::proptest! {
        /// Whatever the bytes, a frame is parsed or dropped with a reason,
        /// and a payload range is always inside the frame.
        #[test]
        fn any_bytes_are_safe(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            if let Ok((range, _)) = datagram(&bytes, 8125) {
                proptest::prop_assert!(range.end <= bytes.len());
            }
        }

        /// Any length field of a good frame set to anything is parsed or
        /// dropped, never read past the frame (the IPv4 total length, the
        /// IPv6 payload length, the UDP length).
        #[test]
        fn lying_length_fields_are_safe(v6 in proptest::prelude::any::<bool>(), len in proptest::prelude::any::<u16>(), which in 0usize..2) {
            let mut f = if v6 { v6_frame(b"k:1|c", 8125) } else { v4_frame(b"k:1|c", 8125) };
            let at = match (v6, which) {
                (false, 0) => 14 + 2,
                (true, 0) => 14 + 4,
                (false, _) => 14 + 20 + 4,
                (true, _) => 14 + 40 + 4,
            };
            f[at..at + 2].copy_from_slice(&len.to_be_bytes());
            if let Ok((range, _)) = datagram(&f, 8125) {
                proptest::prop_assert!(range.end <= f.len());
            }
        }

        /// A good frame with one flipped bit is never taken with a payload
        /// other than the one sent: checksums catch what lengths do not.
        #[test]
        fn one_flipped_bit_is_caught(at in 14usize..46, bit in 0u8..8) {
            let payload = b"k:1|c";
            let mut f = v4_frame(payload, 8125);
            let at = at.min(f.len() - 1);
            f[at] ^= 1 << bit;
            if let Ok((range, _)) = datagram(&f, 8125) {
                proptest::prop_assert_eq!(&f[range], &payload[..]);
            }
        }
    }
}
