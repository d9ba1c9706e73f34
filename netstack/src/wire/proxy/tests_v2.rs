//! Tests of the PROXY protocol v2 code in `v2.rs`.
use super::super::parse as parse_any;
use super::*;

const SIG: [u8; 12] = V2_SIGNATURE;

fn with_sig(rest: &[u8]) -> Vec<u8> {
    let mut v = SIG.to_vec();
    v.extend_from_slice(rest);
    v
}

fn both_ways(bytes: &[u8], header: &Header) {
    let parsed = parse_any(bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&parsed.header, header);
    assert_eq!(parsed.header_len, bytes.len());
    let mut out = Vec::new();
    assert_eq!(header.emit(&mut out).unwrap(), bytes.len());
    assert_eq!(out, bytes);
    assert_eq!(header.buffer_len().unwrap(), bytes.len());
}

fn tcp4() -> Header {
    Header::proxy_v4("192.0.2.7:51000".parse().unwrap(), "198.51.100.1:443".parse().unwrap())
}

/// TCP over IPv4, 192.0.2.7:51000 -> 198.51.100.1:443, no TLVs.
const TCP4: [u8; 28] = [
    0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, // signature
    0x21, 0x11, 0x00, 0x0c, // v2 PROXY, INET STREAM, 12 bytes follow
    192, 0, 2, 7, 198, 51, 100, 1, // addresses
    0xc7, 0x38, 0x01, 0xbb, // ports 51000, 443
];

#[test]
fn tcp4_both_ways() {
    both_ways(&TCP4, &tcp4());
    let p = Packet::new_checked(&TCP4[..]).unwrap();
    assert_eq!((p.version(), p.command(), p.family(), p.transport(), p.len()), (2, 1, 1, 1, 12));
    let block = p.ipv4_block().unwrap();
    assert_eq!((block.src_addr, block.dst_port), ([192, 0, 2, 7], [0x01, 0xbb]));
    assert!(p.ipv6_block().is_none() && p.unix_paths().is_none());
    assert_eq!(p.tlvs().count(), 0);
}

#[test]
fn udp6_with_tlvs_both_ways() {
    let header = Header::proxy_v6("[2001:db8::1]:5353".parse().unwrap(), "[2001:db8::2]:53".parse().unwrap())
        .with_transport(Transport::Dgram)
        .with_tlv(kind::ALPN, b"h2".to_vec())
        .with_tlv(kind::AUTHORITY, b"example.com".to_vec())
        .with_tlv(0xe5, vec![]) // unknown, empty: kept
        .with_tlv(kind::NOOP, vec![0; 3]);
    let mut bytes = with_sig(&[0x21, 0x22, 0x00, 36 + 5 + 14 + 3 + 6]);
    bytes.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01]);
    bytes.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02]);
    bytes.extend_from_slice(&[0x14, 0xe9, 0x00, 0x35]);
    bytes.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
    bytes.extend_from_slice(&[0x02, 0x00, 0x0b]);
    bytes.extend_from_slice(b"example.com");
    bytes.extend_from_slice(&[0xe5, 0x00, 0x00]);
    bytes.extend_from_slice(&[0x04, 0x00, 0x03, 0, 0, 0]);
    both_ways(&bytes, &header);
    assert_eq!(header.tlv(kind::AUTHORITY), Some(&b"example.com"[..]));

    let p = Packet::new_checked(&bytes[..]).unwrap();
    let tlvs: Vec<_> = p.tlvs().map(Result::unwrap).collect();
    assert_eq!(tlvs.len(), 4);
    assert_eq!((tlvs[0].kind, tlvs[0].value, tlvs[0].offset), (kind::ALPN, &b"h2"[..], 52));
    assert_eq!((tlvs[2].kind, tlvs[2].value), (0xe5, &[][..]));
}

#[test]
fn unix_both_ways() {
    let header = Header::proxy_unix(
        UnixPath::new(b"/run/client.sock").unwrap(),
        UnixPath::new(b"/run/app.sock").unwrap(),
    );
    let mut bytes = with_sig(&[0x21, 0x31, 0x00, 0xd8]);
    let mut src = [0u8; 108];
    src[..16].copy_from_slice(b"/run/client.sock");
    let mut dst = [0u8; 108];
    dst[..13].copy_from_slice(b"/run/app.sock");
    bytes.extend_from_slice(&src);
    bytes.extend_from_slice(&dst);
    both_ways(&bytes, &header);
    let Addresses::Unix { src, .. } = header.addresses else { unreachable!() };
    assert_eq!(src.as_bytes(), b"/run/client.sock");
    assert_eq!(format!("{src:?}"), "UnixPath(\"/run/client.sock\")");
    assert!(UnixPath::new(&[b'a'; 109]).is_none());
    // An abstract name (leading NUL) keeps its bytes in `raw`.
    let abs = UnixPath::new(b"\0abstract").unwrap();
    assert_eq!((abs.as_bytes(), &abs.raw()[1..9]), (&b""[..], &b"abstract"[..]));
}

#[test]
fn local_both_ways_and_its_block_is_skipped() {
    let bytes = with_sig(&[0x20, 0x00, 0x00, 0x00]);
    both_ways(&bytes, &Header::local());
    // A LOCAL header may still carry a block; it is skipped, not read.
    let mut with_block = with_sig(&[0x20, 0x11, 0x00, 0x0f]);
    with_block.extend_from_slice(&TCP4[16..]);
    with_block.extend_from_slice(&[0xff, 0x00, 0x09]); // even a broken TLV
    let parsed = parse_any(&with_block).unwrap();
    assert_eq!((parsed.header, parsed.header_len), (Header::local(), 31));
    // And a LOCAL header's family is not checked.
    assert_eq!(parse_any(&with_sig(&[0x20, 0xff, 0x00, 0x00])).unwrap().header, Header::local());
    // A LOCAL header with addresses and TLVs is still written bare.
    let mut out = Vec::new();
    Header { command: Command::Local, ..tcp4().with_crc32c() }.emit(&mut out).unwrap();
    assert_eq!(out, bytes);
}

#[test]
fn unspec_family_skips_the_block() {
    let mut bytes = with_sig(&[0x21, 0x00, 0x00, 0x04]);
    bytes.extend_from_slice(&[1, 2, 3, 4]);
    let parsed = parse_any(&bytes).unwrap();
    let expected = Header { command: Command::Proxy, ..Header::local() };
    assert_eq!((&parsed.header, parsed.header_len), (&expected, 20));
    let mut out = Vec::new();
    expected.emit(&mut out).unwrap();
    assert_eq!(out, with_sig(&[0x21, 0x00, 0x00, 0x00]));
}

/// A header an AWS Network Load Balancer sent (published in AWS's
/// elastic-load-balancing-tools test suite): CRC32C, the AWS VPC
/// endpoint TLV (0xea), and NOOP padding.
const AWS_NLB: [u8; 100] = [
    0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, // signature
    0x21, 0x11, 0x00, 0x54, // v2 PROXY, TCP4, 84 bytes
    0xac, 0x1f, 0x07, 0x71, 0xac, 0x1f, 0x0a, 0x1f, 0xc8, 0xf2, 0x00,
    0x50, // 172.31.7.113:51442 -> 172.31.10.31:80
    0x03, 0x00, 0x04, 0xe8, 0xd6, 0x89, 0x2d, // CRC32C
    0xea, 0x00, 0x17, 0x01, b'v', b'p', b'c', b'e', b'-', b'0', b'8', b'd', b'2', b'b', b'f', b'1', b'5',
    b'f', b'a', b'c', b'5', b'0', b'0', b'1', b'c', b'9', // AWS: subtype 1, VPC endpoint id
    0x04, 0x00, 0x24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, // NOOP, 36 bytes
];

#[test]
fn aws_nlb_header_with_crc32c() {
    let parsed = parse_any(&AWS_NLB).unwrap();
    let h = &parsed.header;
    assert_eq!(
        h.addresses,
        Addresses::V4 { src: "172.31.7.113:51442".parse().unwrap(), dst: "172.31.10.31:80".parse().unwrap() }
    );
    let kinds: Vec<u8> = h.tlvs.iter().map(|t| t.kind).collect();
    assert_eq!(kinds, [kind::CRC32C, 0xea, kind::NOOP]);
    assert_eq!(h.tlv(kind::CRC32C), Some(&[0xe8, 0xd6, 0x89, 0x2d][..]));
    assert_eq!(h.tlv(0xea).map(|v| &v[1..]), Some(&b"vpce-08d2bf15fac5001c9"[..]));
    let mut out = Vec::new();
    h.emit(&mut out).unwrap();
    assert_eq!(out, AWS_NLB);
    assert_eq!(parsed.v2_view().unwrap().tlvs().count(), 3);
}

#[test]
fn crc32c_mismatch_is_detected() {
    let mut bytes = AWS_NLB;
    bytes[19] ^= 1; // the source address
    assert!(matches!(parse_any(&bytes), Err(ProxyError::V2Crc32cMismatch { .. })));
    let mut bytes = AWS_NLB;
    bytes[99] = 1; // the padding is covered too
    assert!(matches!(parse_any(&bytes), Err(ProxyError::V2Crc32cMismatch { .. })));
}

#[test]
fn crc32c_is_filled_on_emit() {
    let header = tcp4().with_tlv(kind::UNIQUE_ID, b"abc".to_vec()).with_crc32c();
    let mut out = Vec::new();
    header.emit(&mut out).unwrap();
    let parsed = parse_any(&out).unwrap().header;
    assert_ne!(parsed.tlv(kind::CRC32C), Some(&[0u8; 4][..]));
    // The parsed header holds the real checksum and so re-emits the same bytes.
    let mut again = Vec::new();
    parsed.emit(&mut again).unwrap();
    assert_eq!(again, out);
}

/// HAProxy with a client certificate (from go-proxyproto's test suite):
/// an SSL TLV with version and CN sub-TLVs.
const HAPROXY_SSL: [u8; 80] = [
    0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11, 0x00,
    0x40, // fixed
    0x7f, 0x00, 0x00, 0x01, 0x7f, 0x00, 0x00, 0x01, 0xcc, 0x8a, 0x23, 0x2e, // 127.0.0.1:52362 -> :9006
    0x20, 0x00, 0x31, 0x07, 0x00, 0x00, 0x00, 0x00, // SSL: client 7, verify 0
    0x21, 0x00, 0x07, b'T', b'L', b'S', b'v', b'1', b'.', b'3', // version
    0x22, 0x00, 0x1f, b'E', b'x', b'a', b'm', b'p', b'l', b'e', b' ', b'C', b'o', b'm', b'm', b'o', b'n',
    b' ', b'N', b'a', b'm', b'e', b' ', b'C', b'l', b'i', b'e', b'n', b't', b' ', b'C', b'e', b'r',
    b't', // CN
];

#[test]
fn ssl_tlv() {
    let header = parse_any(&HAPROXY_SSL).unwrap().header;
    let ssl = header.ssl().unwrap().unwrap();
    assert_eq!((ssl.client, ssl.verify), (7, 0));
    assert!(ssl.is_verified());
    assert_eq!(ssl.sub_tlv(kind::SSL_VERSION), Some(&b"TLSv1.3"[..]));
    assert_eq!(ssl.sub_tlv(kind::SSL_CN), Some(&b"Example Common Name Client Cert"[..]));
    assert_eq!(ssl.sub_tlv(kind::SSL_CIPHER), None);
    assert_eq!(ssl.sub_tlvs().next().unwrap().unwrap().offset, 5);

    let value = Ssl::encode(
        7,
        0,
        &[
            Tlv { kind: kind::SSL_VERSION, value: b"TLSv1.3".to_vec() },
            Tlv { kind: kind::SSL_CN, value: b"Example Common Name Client Cert".to_vec() },
        ],
    );
    let built = Header::proxy_v4("127.0.0.1:52362".parse().unwrap(), "127.0.0.1:9006".parse().unwrap())
        .with_tlv(kind::SSL, value);
    both_ways(&HAPROXY_SSL, &built);

    assert_eq!(Ssl::parse(&[1, 0, 0, 0]), Err(ProxyError::V2BadSsl { len: 4 }));
    let broken = Ssl::parse(&[1, 0, 0, 0, 0, 0x21, 0x00, 0x05, b'x']).unwrap();
    assert_eq!(
        broken.sub_tlvs().next(),
        Some(Err(ProxyError::V2BadTlv { offset: 5, needed: 8, remaining: 4 }))
    );
    assert!(!Ssl::parse(&[1, 0, 0, 0, 1]).unwrap().is_verified());
}

#[test]
fn malformed_headers() {
    let cases: Vec<(Vec<u8>, ProxyError)> = vec![
        (with_sig(&[0x11, 0x11, 0x00, 0x00]), ProxyError::V2BadVersion { version: 1 }),
        (with_sig(&[0x22, 0x11, 0x00, 0x00]), ProxyError::V2BadCommand { command: 2 }),
        (with_sig(&[0x21, 0x10, 0x00, 0x0c]), ProxyError::V2BadFamily { fam: 0x10 }),
        (with_sig(&[0x21, 0x13, 0x00, 0x0c]), ProxyError::V2BadFamily { fam: 0x13 }),
        (with_sig(&[0x21, 0x41, 0x00, 0x0c]), ProxyError::V2BadFamily { fam: 0x41 }),
        (with_sig(&[0x21, 0x01]), ProxyError::V2BadFamily { fam: 0x01 }),
        (
            [&with_sig(&[0x21, 0x21, 0x00, 0x0c])[..], &[0; 12]].concat(),
            ProxyError::V2AddressTooShort { family: "INET6", needed: 36, len: 12 },
        ),
        (
            [&with_sig(&[0x21, 0x11, 0x00, 0x0e])[..], &TCP4[16..], &[0x01, 0x00]].concat(),
            ProxyError::V2BadTlv { offset: 28, needed: 3, remaining: 2 },
        ),
        (
            [&with_sig(&[0x21, 0x11, 0x00, 0x10])[..], &TCP4[16..], &[0x01, 0x00, 0x02, b'h']].concat(),
            ProxyError::V2BadTlv { offset: 28, needed: 5, remaining: 4 },
        ),
        (
            [&with_sig(&[0x21, 0x11, 0x00, 0x10])[..], &TCP4[16..], &[0x03, 0x00, 0x01, 0]].concat(),
            ProxyError::V2BadCrc32cLength { len: 1 },
        ),
        (
            [
                &with_sig(&[0x21, 0x11, 0x00, 0x1a])[..],
                &TCP4[16..],
                &[3, 0, 4, 0, 0, 0, 0, 3, 0, 4, 0, 0, 0, 0],
            ]
            .concat(),
            ProxyError::V2DuplicateCrc32c,
        ),
        (b"\r\n\r\n\0\r\nQUIX".to_vec(), ProxyError::NotProxy),
        (b"\r\nGET".to_vec(), ProxyError::NotProxy),
    ];
    for (bytes, expected) in cases {
        assert_eq!(parse_any(&bytes).unwrap_err(), expected, "{bytes:02x?}");
    }
}

#[test]
fn the_view_reports_what_it_finds() {
    // The view does not judge command or family; parse does.
    let bytes = with_sig(&[0x2f, 0x13, 0x00, 0x00]);
    let p = Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!((p.command(), p.family(), p.transport()), (0xf, 1, 3));
    assert!(p.ipv4_block().is_none());
    assert_eq!(Header::parse_v2(&p), Err(ProxyError::V2BadCommand { command: 0xf }));
    assert_eq!(
        Packet::new_checked(&with_sig(&[0x21, 0x11, 0x00, 0x0c])[..]).unwrap_err(),
        ProxyError::Incomplete { needed: 12 }
    );
}

#[test]
fn setters_build_a_header() {
    let mut buf = [0u8; 28];
    let mut p = Packet::new_unchecked(&mut buf[..]);
    p.set_signature();
    p.set_command(CMD_PROXY);
    p.set_fam(0x11);
    p.set_len(12);
    *p.ipv4_block_mut().unwrap() = *Packet::new_checked(&TCP4[..]).unwrap().ipv4_block().unwrap();
    assert!(p.ipv6_block_mut().is_none());
    assert_eq!(buf, TCP4);
}

#[test]
fn emit_errors_leave_the_output_alone() {
    let mut out = vec![9];
    let no_transport = tcp4().with_transport(Transport::Unspec);
    assert_eq!(no_transport.emit(&mut out), Err(ProxyError::V2NoTransport));
    let two_crcs = tcp4().with_crc32c().with_crc32c();
    assert_eq!(two_crcs.emit(&mut out), Err(ProxyError::V2DuplicateCrc32c));
    let too_long = tcp4().with_tlv(0xe0, vec![0; 65_535 - 12 - 3 + 1]);
    assert_eq!(too_long.emit(&mut out), Err(ProxyError::V2TooLong { len: 65_536 }));
    assert_eq!(out, [9]);
    let just_fits = tcp4().with_tlv(0xe0, vec![0; 65_535 - 12 - 3]);
    assert_eq!(just_fits.emit(&mut out), Ok(16 + 65_535));
    assert_eq!(parse_any(&out[1..]).unwrap().header, just_fits);
}
