//! The PROXY protocol parser on arbitrary first bytes of a connection: it
//! must never panic, a success must be re-emittable and re-parse to the
//! same header, and every proper prefix of a header must read as
//! incomplete.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netstack::wire::proxy::{self, Addresses, Command, ProxyError};

fuzz_target!(|data: &[u8]| {
    let parsed = match proxy::parse(data) {
        Ok(parsed) => parsed,
        Err(ProxyError::Incomplete { needed }) => {
            assert!(needed >= 1, "Incomplete must ask for at least one byte");
            return;
        }
        Err(_) => return,
    };
    assert!(parsed.header_len <= data.len());
    assert_eq!(parsed.raw(), &data[..parsed.header_len]);

    let cut = &data[..parsed.header_len - 1];
    match proxy::parse(cut) {
        Err(ProxyError::Incomplete { needed }) => assert!(cut.len() + needed <= parsed.header_len),
        other => panic!("a header cut short by one byte gave {other:?}"),
    }

    // The zero-copy readers must agree with the owned header (which skips
    // the TLVs of LOCAL and UNSPEC headers).
    let has_tlvs = parsed.header.command == Command::Proxy && parsed.header.addresses != Addresses::None;
    if let Some(view) = parsed.v2_view().filter(|_| has_tlvs) {
        let tlvs: Vec<_> = view.tlvs().map_while(Result::ok).map(|t| t.to_tlv()).collect();
        assert_eq!(tlvs, parsed.header.tlvs);
    }
    if let Some(Ok(ssl)) = parsed.header.ssl() {
        for sub in ssl.sub_tlvs() {
            let _ = sub;
        }
    }

    let mut out = Vec::new();
    let len = parsed.header.emit(&mut out).expect("a parsed header can be emitted");
    assert_eq!(len, out.len());
    let again = proxy::parse(&out).expect("an emitted header parses");
    assert_eq!(again.header, parsed.header);
    assert_eq!(again.header_len, out.len());
});
