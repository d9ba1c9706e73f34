//! PROXY protocol v1: one line of ASCII text,
//! `PROXY TCP4 192.0.2.7 198.51.100.1 51000 443\r\n`, at most 107 bytes.
//!
//! The line is only read once its CRLF is in, but a wrong prefix or
//! protocol field is rejected as soon as its bytes arrive, so a client that
//! sends something else is turned away without waiting for 107 bytes.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use super::{token, Addresses, Command, Header, ProxyError, Transport, V1_MAX_LEN};

const PREFIX: &[u8] = b"PROXY ";
const PROTOCOLS: [&[u8]; 3] = [b"TCP4", b"TCP6", b"UNKNOWN"];

/// Reads a v1 line from the start of `buf`; returns the header and the
/// length of the line, CRLF included.
pub(super) fn parse(buf: &[u8]) -> Result<(Header, usize), ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let n = window.len().min(PREFIX.len());
    if window[..n] != PREFIX[..n] {
        return Err(ProxyError::NotProxy);
    }
    let after_prefix = &window[n..];
    let Some(cr) = find_line_end(window)? else {
        check_protocol_start(after_prefix)?;
        return Err(ProxyError::Incomplete { needed: 1 });
    };
    // The prefix holds no CR or LF, so the line end is after it.
    let line = window.get(PREFIX.len()..cr).ok_or(ProxyError::NotProxy)?;
    let consumed = cr + 2;

    let mut fields = line.split(|&b| b == b' ');
    let protocol = fields.next().unwrap_or_default();
    let v6 = match protocol {
        // The spec has receivers ignore whatever follows UNKNOWN.
        b"UNKNOWN" => return Ok((Header::unknown(), consumed)),
        b"TCP4" => false,
        b"TCP6" => true,
        other => return Err(ProxyError::V1BadProtocol { token: token(other) }),
    };
    let mut f: [&[u8]; 4] = [&[]; 4];
    let mut found = 0;
    for field in fields {
        if let Some(slot) = f.get_mut(found) {
            *slot = field;
        }
        found += 1;
    }
    if found != 4 {
        return Err(ProxyError::V1BadFields { found });
    }
    let [src, dst, src_port, dst_port] = f;
    let (src_port, dst_port) = (port(src_port)?, port(dst_port)?);
    let addresses = if v6 {
        Addresses::V6 {
            src: SocketAddrV6::new(addr::<Ipv6Addr>(src, "IPv6")?, src_port, 0, 0),
            dst: SocketAddrV6::new(addr::<Ipv6Addr>(dst, "IPv6")?, dst_port, 0, 0),
        }
    } else {
        Addresses::V4 {
            src: SocketAddrV4::new(addr::<Ipv4Addr>(src, "IPv4")?, src_port),
            dst: SocketAddrV4::new(addr::<Ipv4Addr>(dst, "IPv4")?, dst_port),
        }
    };
    let header = Header {
        version: super::Version::V1,
        command: Command::Proxy,
        transport: Transport::Stream,
        addresses,
        tlvs: Vec::new(),
    };
    Ok((header, consumed))
}

/// The offset of the CR of the terminating CRLF, `None` if the line may
/// still end in bytes not read yet.
fn find_line_end(window: &[u8]) -> Result<Option<usize>, ProxyError> {
    match window.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(at) if window[at] == b'\n' => Err(ProxyError::V1BadLineEnding { at }),
        Some(at) => match window.get(at + 1) {
            Some(b'\n') => Ok(Some(at)),
            Some(_) => Err(ProxyError::V1BadLineEnding { at }),
            // The LF would be byte 108.
            None if at + 1 >= V1_MAX_LEN => Err(ProxyError::V1LineTooLong),
            None => Ok(None),
        },
        None if window.len() >= V1_MAX_LEN => Err(ProxyError::V1LineTooLong),
        None => Ok(None),
    }
}

fn check_protocol_start(rest: &[u8]) -> Result<(), ProxyError> {
    let end = rest.iter().position(|&b| b == b' ' || b == b'\r');
    let field = &rest[..end.unwrap_or(rest.len())];
    let fits = match end {
        Some(_) => PROTOCOLS.contains(&field),
        None => PROTOCOLS.iter().any(|p| p.starts_with(field)),
    };
    if fits {
        Ok(())
    } else {
        Err(ProxyError::V1BadProtocol { token: token(field) })
    }
}

fn addr<A: std::str::FromStr>(field: &[u8], family: &'static str) -> Result<A, ProxyError> {
    std::str::from_utf8(field)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ProxyError::V1BadAddress { family, token: token(field) })
}

fn port(field: &[u8]) -> Result<u16, ProxyError> {
    let canonical = matches!(field, [b'0'] | [b'1'..=b'9', ..])
        && field.len() <= 5
        && field.iter().all(u8::is_ascii_digit);
    if canonical {
        // At most five digits, so the u32 cannot overflow.
        let value = field.iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
        if let Ok(port) = u16::try_from(value) {
            return Ok(port);
        }
    }
    Err(ProxyError::V1BadPort { token: token(field) })
}

fn line(header: &Header) -> String {
    match (header.command, header.transport, header.addresses) {
        (Command::Proxy, Transport::Stream, Addresses::V4 { src, dst }) => {
            format!("PROXY TCP4 {} {} {} {}\r\n", src.ip(), dst.ip(), src.port(), dst.port())
        }
        (Command::Proxy, Transport::Stream, Addresses::V6 { src, dst }) => {
            format!("PROXY TCP6 {} {} {} {}\r\n", src.ip(), dst.ip(), src.port(), dst.port())
        }
        _ => "PROXY UNKNOWN\r\n".to_owned(),
    }
}

pub(super) fn emit(header: &Header, out: &mut Vec<u8>) -> usize {
    let line = line(header);
    out.extend_from_slice(line.as_bytes());
    line.len()
}

pub(super) fn emitted_len(header: &Header) -> usize {
    line(header).len()
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Version};
    use super::*;

    fn ok(line: &[u8]) -> Header {
        let parsed = parse(line).unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(line)));
        assert_eq!(parsed.header_len, line.len());
        parsed.header
    }

    fn err(line: &[u8]) -> ProxyError {
        parse(line).unwrap_err()
    }

    fn tcp4(src: &str, dst: &str) -> Header {
        Header::proxy_v4(src.parse().unwrap(), dst.parse().unwrap()).with_version(Version::V1)
    }

    #[test]
    fn spec_examples_both_ways() {
        let cases: [(&[u8], Header); 3] = [
            (
                b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
                tcp4("192.168.0.1:56324", "192.168.0.11:443"),
            ),
            (
                b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
                tcp4("255.255.255.255:65535", "255.255.255.255:65535"),
            ),
            (b"PROXY UNKNOWN\r\n", Header::unknown()),
        ];
        for (bytes, header) in cases {
            assert_eq!(ok(bytes), header);
            let mut out = Vec::new();
            assert_eq!(header.emit(&mut out).unwrap(), bytes.len());
            assert_eq!(out, bytes);
            assert_eq!(header.buffer_len().unwrap(), bytes.len());
        }
    }

    #[test]
    fn longest_lines() {
        let tcp6 = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(tcp6.len(), 104);
        let h = ok(tcp6);
        let all = SocketAddrV6::new(Ipv6Addr::from([0xff; 16]), 65535, 0, 0);
        assert_eq!(h, Header::proxy_v6(all, all).with_version(Version::V1));

        // The spec's worst case: UNKNOWN with the longest addresses, 107 bytes.
        let unknown = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(unknown.len(), V1_MAX_LEN);
        assert_eq!(ok(unknown), Header::unknown());

        let mut too_long = unknown[..105].to_vec();
        too_long.extend_from_slice(b"5\r\n");
        assert_eq!(err(&too_long), ProxyError::V1LineTooLong);
        assert_eq!(err(&too_long[..107]), ProxyError::V1LineTooLong);
        assert_eq!(err(&too_long[..106]), ProxyError::Incomplete { needed: 1 });
        assert_eq!(err(&[b'P'; 200][..]), ProxyError::NotProxy);
    }

    #[test]
    fn ipv6_forms() {
        let h = ok(b"PROXY TCP6 2001:db8::1 ::ffff:192.0.2.1 1 2\r\n");
        let Addresses::V6 { src, dst } = h.addresses else { panic!("{h:?}") };
        assert_eq!(src.ip(), &"2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(dst.ip(), &Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        let mut out = Vec::new();
        h.emit(&mut out).unwrap();
        assert_eq!(out, b"PROXY TCP6 2001:db8::1 ::ffff:192.0.2.1 1 2\r\n");
    }

    #[test]
    fn unknown_ignores_the_rest_of_the_line() {
        assert_eq!(ok(b"PROXY UNKNOWN whatever \x01 it says\r\n"), Header::unknown());
        assert!(matches!(err(b"PROXY UNKNOWNX\r\n"), ProxyError::V1BadProtocol { .. }));
    }

    #[test]
    fn leading_zeros_are_rejected() {
        // 010 could be read as octal 8; std refuses to guess and so do we.
        assert!(matches!(err(b"PROXY TCP4 010.0.0.1 10.0.0.2 1 2\r\n"), ProxyError::V1BadAddress { .. }));
        assert!(matches!(err(b"PROXY TCP4 10.0.0.1 10.0.0.2 0443 2\r\n"), ProxyError::V1BadPort { .. }));
        assert_eq!(ok(b"PROXY TCP4 0.0.0.0 10.0.0.2 0 2\r\n"), tcp4("0.0.0.0:0", "10.0.0.2:2"));
    }

    #[test]
    fn bad_ports() {
        for p in ["65536", "99999", "100000", "-1", "+1", "1a", "", " 1", "0x10"] {
            let line = format!("PROXY TCP4 10.0.0.1 10.0.0.2 {p} 2\r\n");
            let e = err(line.as_bytes());
            assert!(
                matches!(e, ProxyError::V1BadPort { .. } | ProxyError::V1BadFields { .. }),
                "{p:?}: {e:?}"
            );
        }
        assert_eq!(
            err(b"PROXY TCP4 10.0.0.1 10.0.0.2 1 65536\r\n"),
            ProxyError::V1BadPort { token: "65536".into() }
        );
    }

    #[test]
    fn bad_addresses_and_fields() {
        let cases: [(&[u8], ProxyError); 9] = [
            (
                b"PROXY TCP4 ::1 10.0.0.2 1 2\r\n",
                ProxyError::V1BadAddress { family: "IPv4", token: "::1".into() },
            ),
            (
                b"PROXY TCP6 10.0.0.1 ::1 1 2\r\n",
                ProxyError::V1BadAddress { family: "IPv6", token: "10.0.0.1".into() },
            ),
            (
                b"PROXY TCP4 10.0.0 10.0.0.2 1 2\r\n",
                ProxyError::V1BadAddress { family: "IPv4", token: "10.0.0".into() },
            ),
            (b"PROXY TCP4 10.0.0.1 10.0.0.2 1\r\n", ProxyError::V1BadFields { found: 3 }),
            (b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2 3\r\n", ProxyError::V1BadFields { found: 5 }),
            (b"PROXY TCP4 10.0.0.1  10.0.0.2 1 2\r\n", ProxyError::V1BadFields { found: 5 }),
            (b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2 \r\n", ProxyError::V1BadFields { found: 5 }),
            (b"PROXY TCP4\r\n", ProxyError::V1BadFields { found: 0 }),
            (b"PROXY \r\n", ProxyError::V1BadProtocol { token: String::new() }),
        ];
        for (line, expected) in cases {
            assert_eq!(err(line), expected, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn line_endings() {
        assert_eq!(err(b"PROXY UNKNOWN\n"), ProxyError::V1BadLineEnding { at: 13 });
        assert_eq!(err(b"PROXY UNKNOWN\rX"), ProxyError::V1BadLineEnding { at: 13 });
        assert_eq!(err(b"PROXY UNKNOWN\r"), ProxyError::Incomplete { needed: 1 });
    }

    #[test]
    fn wrong_starts_fail_before_the_line_ends() {
        assert_eq!(err(b"PROXY HTTP"), ProxyError::V1BadProtocol { token: "HTTP".into() });
        assert_eq!(err(b"PROXY TCP5 "), ProxyError::V1BadProtocol { token: "TCP5".into() });
        assert_eq!(err(b"PROXY TCP4\r"), ProxyError::Incomplete { needed: 1 });
        assert_eq!(err(b"PROXY TCP4\r\n"), ProxyError::V1BadFields { found: 0 });
        assert_eq!(err(b"PROXY TCP44"), ProxyError::V1BadProtocol { token: "TCP44".into() });
        assert_eq!(err(b"PROXY UNKNOWN-"), ProxyError::V1BadProtocol { token: "UNKNOWN-".into() });
        assert_eq!(err(b"PROXY TCP"), ProxyError::Incomplete { needed: 1 });
        assert_eq!(err(b"PROXy"), ProxyError::NotProxy);
        assert_eq!(err(b"proxy tcp4 "), ProxyError::NotProxy);
        assert_eq!(err(b"POST / HTTP/1.1\r\n"), ProxyError::NotProxy);
    }

    #[test]
    fn what_emit_v1_cannot_say_becomes_unknown() {
        let v4 = tcp4("10.0.0.1:1", "10.0.0.2:2");
        let lossy = [
            Header::local(),
            v4.clone().with_transport(Transport::Dgram),
            Header::proxy_unix(Default::default(), Default::default()),
        ];
        for h in lossy {
            assert!(!h.fits_v1());
            let mut out = Vec::new();
            h.emit_v1(&mut out);
            assert_eq!(out, b"PROXY UNKNOWN\r\n");
        }
        let with_tlv = v4.clone().with_tlv(0xe0, vec![1]);
        assert!(!with_tlv.fits_v1() && v4.fits_v1() && Header::unknown().fits_v1());
        let mut out = Vec::new();
        with_tlv.emit_v1(&mut out);
        assert_eq!(out, b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n");
    }
}
