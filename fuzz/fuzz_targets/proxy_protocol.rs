//! The PROXY protocol parser (v1 text, v2 binary with TLVs and CRC32C) on arbitrary bytes.
//!
//! - It never panics.
//! - A header is recognised at its full length only: every shorter prefix of a complete
//!   header is "incomplete" (so a header split across reads is waited for, never refused),
//!   and the bytes after it do not change it.
//! - What it parses encodes back to a header that parses to the same thing (addresses
//!   compared in canonical form: an IPv4-mapped IPv6 address is written as IPv4; checksum
//!   values are recomputed).
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use sluice_core::proxy_protocol::{parse, tlv, Addresses, Header, Parsed};

fn canonical(h: &Header) -> Header {
    let canon = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let mut h = h.clone();
    h.addresses = h.addresses.map(|a| {
        let (s, d) = (canon(a.source), canon(a.destination));
        if s.is_ipv4() == d.is_ipv4() {
            Addresses { source: s, destination: d }
        } else {
            // Two families are written as IPv6.
            let v6 = |a: SocketAddr| match a.ip() {
                std::net::IpAddr::V4(v4) => SocketAddr::new(v4.to_ipv6_mapped().into(), a.port()),
                _ => a,
            };
            Addresses { source: v6(s), destination: v6(d) }
        }
    });
    for t in &mut h.tlvs {
        if t.kind == tlv::CRC32C {
            t.value.fill(0);
        }
    }
    h
}

fuzz_target!(|data: &[u8]| {
    let Ok(Parsed::Complete(header, len)) = parse(data) else { return };
    assert!(len <= data.len());
    assert_eq!(parse(&data[..len]), Ok(Parsed::Complete(header.clone(), len)), "trailing bytes changed the header");
    for k in 0..len {
        assert!(matches!(parse(&data[..k]), Ok(Parsed::Incomplete(_))), "a prefix of {k} bytes was not incomplete");
    }
    let encoded = header.encode();
    match parse(&encoded) {
        Ok(Parsed::Complete(again, n)) => {
            assert_eq!(n, encoded.len());
            assert_eq!(canonical(&again), canonical(&header), "encode/parse changed the header");
        }
        other => panic!("our own encoding of {header:?} does not parse: {other:?}"),
    }
});
