//! Tests of the PROXY protocol framing code in `mod.rs`.
use super::*;
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

fn examples() -> Vec<Vec<u8>> {
    let mut out = vec![
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n".to_vec(),
        b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n".to_vec(),
        b"PROXY UNKNOWN\r\n".to_vec(),
        b"PROXY UNKNOWN anything at all\r\n".to_vec(),
    ];
    let v4 = Header::proxy("10.0.0.1:1234".parse().unwrap(), "10.0.0.2:80".parse().unwrap());
    let v6 = Header::proxy("[::1]:1".parse().unwrap(), "[::2]:2".parse().unwrap());
    let unix = Header::proxy_unix(UnixPath::new(b"/a").unwrap(), UnixPath::new(b"/b").unwrap());
    for h in [
        Header::local(),
        v4.clone(),
        v4.with_tlv(kind::AUTHORITY, b"example.com".to_vec()).with_crc32c(),
        v6.with_transport(Transport::Dgram).with_tlv(0xee, vec![7; 300]),
        unix,
    ] {
        let mut bytes = Vec::new();
        h.emit(&mut bytes).unwrap();
        out.push(bytes);
    }
    out
}

#[test]
fn every_prefix_is_incomplete_with_a_safe_bound() {
    for full in examples() {
        let v2 = full[0] == b'\r';
        for n in 0..full.len() {
            let needed = match parse(&full[..n]) {
                Err(ProxyError::Incomplete { needed }) => needed,
                other => panic!("{:?}[..{n}]: {other:?}", String::from_utf8_lossy(&full)),
            };
            assert!(needed >= 1 && n + needed <= full.len(), "{n} + {needed} > {}", full.len());
            if v2 {
                // Exact once the length field is in, up to it before; an
                // empty input could still be v1, whose shortest line is 15.
                let expected = match n {
                    0 => 1,
                    n if n < V2_HEADER_LEN => V2_HEADER_LEN - n,
                    n => full.len() - n,
                };
                assert_eq!(needed, expected, "prefix {n}");
            } else {
                assert_eq!(needed, 1);
            }
        }
        let parsed = parse(&full).unwrap();
        assert_eq!(parsed.header_len, full.len());
        assert_eq!(parsed.raw(), &full[..]);
    }
}

#[test]
fn data_after_the_header_is_left_alone() {
    for full in examples() {
        let mut stream = full.clone();
        stream.extend_from_slice(b"\r\n\r\n\0\r\nQUIT\nPROXY ");
        let parsed = parse(&stream).unwrap();
        assert_eq!(parsed.header_len, full.len());
        assert_eq!(parsed.header, parse(&full).unwrap().header);
    }
}

#[test]
fn dispatch() {
    assert_eq!(parse(b""), Err(ProxyError::Incomplete { needed: 1 }));
    assert_eq!(parse(b"P"), Err(ProxyError::Incomplete { needed: 1 }));
    assert_eq!(parse(b"\r"), Err(ProxyError::Incomplete { needed: 15 }));
    assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::NotProxy));
    assert_eq!(parse(&[0x16, 0x03, 0x01]), Err(ProxyError::NotProxy)); // a TLS ClientHello
    assert!(parse(b"PROXY UNKNOWN\r\n").unwrap().v2_view().is_none());
}

#[test]
fn mixed_families_become_ipv6() {
    let h = Header::proxy("10.0.0.1:1".parse().unwrap(), "[2001:db8::1]:2".parse().unwrap());
    let Addresses::V6 { src, .. } = h.addresses else { panic!("{h:?}") };
    assert_eq!(src.ip(), &Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
    let scoped = SocketAddrV6::new(Ipv6Addr::LOCALHOST, 1, 7, 3);
    let Addresses::V6 { src, .. } = Header::proxy_v6(scoped, scoped).addresses else { unreachable!() };
    assert_eq!((src.flowinfo(), src.scope_id()), (0, 0));
}

#[test]
fn errors_name_the_value() {
    let e = parse(b"PROXY TCP4 10.0.0.1 10.0.0.2 1 70000\r\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "PROXY v1: port \"70000\" is not a number from 0 to 65535 without leading zeros"
    );
    let e = parse(b"\r\n\r\n\0\r\nQUIT\n\x21\x15").unwrap_err();
    assert!(e.to_string().contains("0x15"), "{e}");
}

fn arb_v4() -> impl Strategy<Value = SocketAddrV4> {
    (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddrV4::new(ip.into(), port))
}

fn arb_v6() -> impl Strategy<Value = SocketAddrV6> {
    (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddrV6::new(ip.into(), port, 0, 0))
}

fn arb_unix() -> impl Strategy<Value = UnixPath> {
    proptest::collection::vec(any::<u8>(), UNIX_PATH_LEN).prop_map(|v| UnixPath::new(&v).unwrap_or_default())
}

fn arb_addresses() -> impl Strategy<Value = Addresses> {
    prop_oneof![
        (arb_v4(), arb_v4()).prop_map(|(src, dst)| Addresses::V4 { src, dst }),
        (arb_v6(), arb_v6()).prop_map(|(src, dst)| Addresses::V6 { src, dst }),
        (arb_unix(), arb_unix()).prop_map(|(src, dst)| Addresses::Unix { src, dst }),
    ]
}

fn arb_tlvs() -> impl Strategy<Value = Vec<Tlv>> {
    let tlv = (any::<u8>().prop_filter("CRC32C is filled by emit", |k| *k != kind::CRC32C), any::<Vec<u8>>())
        .prop_map(|(kind, value)| Tlv { kind, value });
    proptest::collection::vec(tlv, 0..6)
}

/// Headers in the form `parse` returns them.
fn arb_header() -> impl Strategy<Value = Header> {
    let with_addresses =
        (arb_addresses(), prop_oneof![Just(Transport::Stream), Just(Transport::Dgram)], arb_tlvs()).prop_map(
            |(addresses, transport, tlvs)| Header {
                version: Version::V2,
                command: Command::Proxy,
                transport,
                addresses,
                tlvs,
            },
        );
    let v1 = prop_oneof![
        (arb_v4(), arb_v4()).prop_map(|(s, d)| Header::proxy_v4(s, d)),
        (arb_v6(), arb_v6()).prop_map(|(s, d)| Header::proxy_v6(s, d)),
        Just(Header::unknown()),
    ]
    .prop_map(|h| h.with_version(Version::V1));
    prop_oneof![
        Just(Header::local()),
        Just(Header { command: Command::Proxy, ..Header::local() }),
        with_addresses,
        v1,
    ]
}

/// What a successful parse promises: the length is inside the input,
/// and writing the header back out reads back the same.
fn check_parsed(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(parsed) = parse(bytes) {
        prop_assert!(parsed.header_len <= bytes.len());
        let mut out = Vec::new();
        parsed.header.emit(&mut out).unwrap();
        prop_assert_eq!(parse(&out).unwrap().header, parsed.header);
    }
    Ok(())
}

proptest! {
    #[test]
    fn round_trip(header in arb_header(), trailing in any::<Vec<u8>>()) {
        let mut bytes = Vec::new();
        let len = header.emit(&mut bytes).unwrap();
        prop_assert_eq!(len, bytes.len());
        prop_assert_eq!(header.buffer_len().unwrap(), len);
        bytes.extend_from_slice(&trailing);
        let parsed = parse(&bytes).unwrap();
        prop_assert_eq!(parsed.header_len, len);
        prop_assert_eq!(&parsed.header, &header);
        if header.version == Version::V1 {
            prop_assert!(len <= V1_MAX_LEN && header.fits_v1());
        }
    }

    #[test]
    fn round_trip_with_crc32c(header in arb_header(), at in any::<proptest::sample::Index>()) {
        let mut header = header.with_version(Version::V2);
        let pos = at.index(header.tlvs.len() + 1);
        header.tlvs.insert(pos, Tlv { kind: kind::CRC32C, value: vec![0; 4] });
        let mut bytes = Vec::new();
        header.emit(&mut bytes).unwrap();
        let parsed = parse(&bytes).unwrap().header;
        let mut again = Vec::new();
        parsed.emit(&mut again).unwrap();
        prop_assert_eq!(again, bytes);
    }

    #[test]
    fn every_prefix_of_any_header_is_incomplete(header in arb_header()) {
        let mut bytes = Vec::new();
        header.emit(&mut bytes).unwrap();
        for n in 0..bytes.len() {
            match parse(&bytes[..n]) {
                Err(ProxyError::Incomplete { needed }) => prop_assert!(needed >= 1 && n + needed <= bytes.len()),
                other => prop_assert!(false, "prefix {}: {:?}", n, other),
            }
        }
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in any::<Vec<u8>>()) {
        check_parsed(&bytes)?;
    }

    #[test]
    fn never_panics_after_the_v2_signature(
        ver_cmd in prop_oneof![Just(0x20u8), Just(0x21), any::<u8>()],
        fam in prop_oneof![proptest::sample::select(&[0x00u8, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32][..]), any::<u8>()],
        tail in proptest::collection::vec(any::<u8>(), 0..300),
        len_from_tail in any::<bool>(),
        len in any::<u16>(),
    ) {
        let mut bytes = V2_SIGNATURE.to_vec();
        let len = if len_from_tail { tail.len() as u16 } else { len };
        bytes.extend_from_slice(&[ver_cmd, fam]);
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(&tail);
        check_parsed(&bytes)?;
        check_parsed(&bytes[..bytes.len().min(V2_HEADER_LEN + 5)])?;
    }

    #[test]
    fn never_panics_after_the_v1_prefix(
        proto in proptest::sample::select(&["TCP4 ", "TCP6 ", "UNKNOWN", "UNKNOWN ", ""][..]),
        tail in "[0-9a-f.: \r\n+-]{0,110}",
        raw in proptest::collection::vec(any::<u8>(), 0..110),
    ) {
        let line = format!("PROXY {proto}{tail}");
        check_parsed(line.as_bytes())?;
        check_parsed(format!("{line}\r\n").as_bytes())?;
        let mut bytes = b"PROXY ".to_vec();
        bytes.extend_from_slice(&raw);
        check_parsed(&bytes)?;
    }
}
