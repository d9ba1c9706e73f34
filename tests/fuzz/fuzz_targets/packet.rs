//! The packet-header views on arbitrary bytes, as a frame from the wire
//! and, so the fuzzer need not find an Ethernet header first, as a bare
//! IPv4 or IPv6 packet. No view may panic once `new_checked` accepted the
//! bytes; every `Repr` that parses must emit and re-parse to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netstack::wire::checksum::PseudoHeader;
use netstack::wire::{ethernet, ipv4, ipv6, udp, EtherType, IpProtocol};

fuzz_target!(|data: &[u8]| {
    ethernet_chain(data);
    ipv4_chain(data);
    ipv6_chain(data);
});

fn ethernet_chain(data: &[u8]) {
    let Ok(frame) = ethernet::Frame::new_checked(data) else { return };
    let repr = ethernet::Repr::parse(&frame).expect("a checked frame parses");
    let mut buf = vec![0; repr.buffer_len()];
    repr.emit(&mut ethernet::Frame::new_unchecked(&mut buf[..])).expect("sized buffer");
    let again = ethernet::Frame::new_checked(&buf[..]).expect("emitted frame checks");
    assert_eq!(ethernet::Repr::parse(&again), Ok(repr));
    assert_eq!(&buf[..], &data[..repr.header_len()]);

    if let Some(vlan) = frame.vlan() {
        let _ = ethernet::Vlan::parse(vlan.tpid, frame.payload());
    }
    match frame.ethertype() {
        EtherType::IPV4 => ipv4_chain(frame.payload()),
        EtherType::IPV6 => ipv6_chain(frame.payload()),
        _ => {}
    }
}

fn ipv4_chain(data: &[u8]) {
    let Ok(packet) = ipv4::Packet::new_checked(data) else { return };
    let _ = (packet.options(), packet.verify_checksum(), packet.src_addr(), packet.frag_offset());
    let Ok(repr) = ipv4::Repr::parse(&packet) else { return };
    let mut buf = vec![0; repr.buffer_len()];
    let mut out = ipv4::Packet::new_unchecked(&mut buf[..]);
    repr.emit(&mut out).expect("a parsed header fits");
    out.payload_mut().copy_from_slice(packet.payload());
    let again = ipv4::Packet::new_checked(&buf[..]).expect("emitted packet checks");
    assert_eq!(ipv4::Repr::parse(&again), Ok(repr));
    assert_eq!(again.payload(), packet.payload());

    if repr.protocol == IpProtocol::UDP && !repr.is_fragment() {
        udp_chain(packet.payload(), repr.pseudo_header());
    }
}

fn ipv6_chain(data: &[u8]) {
    let Ok(packet) = ipv6::Packet::new_checked(data) else { return };
    let repr = ipv6::Repr::parse(&packet).expect("a checked IPv6 header parses");
    let mut buf = vec![0; repr.buffer_len()];
    let mut out = ipv6::Packet::new_unchecked(&mut buf[..]);
    repr.emit(&mut out).expect("a parsed header fits");
    out.payload_mut().copy_from_slice(packet.payload());
    assert_eq!(&buf[..], &data[..repr.buffer_len()]);
    let again = ipv6::Packet::new_checked(&buf[..]).expect("emitted packet checks");
    assert_eq!(ipv6::Repr::parse(&again), Ok(repr));

    if repr.next_header == IpProtocol::UDP {
        udp_chain(packet.payload(), repr.pseudo_header());
    }
}

fn udp_chain(data: &[u8], pseudo: PseudoHeader) {
    let Ok(datagram) = udp::Packet::new_checked(data) else { return };
    let _ = (datagram.src_port(), datagram.payload(), datagram.verify_checksum(&pseudo));
    let Ok(repr) = udp::Repr::parse(&datagram, &pseudo) else { return };
    let mut buf = vec![0; repr.buffer_len()];
    repr.emit(&mut udp::Packet::new_unchecked(&mut buf[..]), &pseudo, |p| p.copy_from_slice(datagram.payload()))
        .expect("a parsed header fits");
    let again = udp::Packet::new_checked(&buf[..]).expect("emitted datagram checks");
    assert_eq!(udp::Repr::parse(&again, &pseudo), Ok(repr));
    // A valid non-zero checksum has one representation, so the bytes match.
    if datagram.checksum() != 0 {
        assert_eq!(&buf[..], &data[..repr.buffer_len()]);
    }
}
