//! Request validation on arbitrary heads: bytes parsed as an HTTP/1.1 request head (the
//! way hyper's parser, httparse, reads it) or as an HTTP/2 one, then run through
//! `sluice_proxy::validate::head`, and paths through `normalize::checked`.
//!
//! - Nothing panics.
//! - What is accepted is what may be forwarded: one Host, a valid `uri-host[:port]`,
//!   lower case; at most one Transfer-Encoding, exactly `chunked` at the end; at most one
//!   Authorization; no HTTP/2 value with surrounding whitespace; no underscored names.
//! - Validation is idempotent: an accepted head passes again, unchanged.
//! - A checked path has no NUL and, when escaped slashes are decoded or refused, no
//!   `%2F`, `%5C` or `\` left.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::HttpProtocol;
use sluice_filters::normalize::{checked, EscapedSlashes};

fn parts(data: &[u8]) -> Option<http::request::Parts> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(data).ok()?;
    let mut b = http::Request::builder().method(req.method?).uri(req.path?);
    b = b.version(if req.version? == 1 { http::Version::HTTP_11 } else { http::Version::HTTP_10 });
    for h in req.headers.iter() {
        b = b.header(h.name, h.value);
    }
    Some(b.body(()).ok()?.into_parts().0)
}

fn accepted_is_forwardable(head: &http::request::Parts, protocol: HttpProtocol) {
    let hosts: Vec<_> = head.headers.get_all(http::header::HOST).iter().collect();
    assert!(hosts.len() <= 1, "two Host fields accepted");
    for host in &hosts {
        assert!(sluice_proxy::validate::valid_authority(host.as_bytes()), "invalid Host {host:?} accepted");
        assert!(!host.as_bytes().iter().any(u8::is_ascii_uppercase), "Host not lower-cased: {host:?}");
    }
    if protocol == HttpProtocol::Http1 && head.version == http::Version::HTTP_11 {
        assert_eq!(hosts.len(), 1, "HTTP/1.1 without Host accepted");
    }
    let te: Vec<_> = head.headers.get_all(http::header::TRANSFER_ENCODING).iter().collect();
    assert!(te.len() <= 1);
    if let Some(te) = te.first() {
        assert!(te.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked"), "Transfer-Encoding {te:?} accepted");
    }
    assert!(head.headers.get_all(http::header::AUTHORIZATION).iter().count() <= 1);
    assert!(!head.headers.keys().any(|n| n.as_str().contains('_')));
    if protocol == HttpProtocol::Http2 {
        for v in head.headers.values() {
            let v = v.as_bytes();
            assert!(!matches!(v.first(), Some(b' ' | b'\t')) && !matches!(v.last(), Some(b' ' | b'\t')));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else { return };
    let protocol = if selector & 1 == 0 { HttpProtocol::Http1 } else { HttpProtocol::Http2 };
    if let Some(mut head) = parts(bytes) {
        if protocol == HttpProtocol::Http2 {
            head.version = http::Version::HTTP_2;
        }
        if sluice_proxy::validate::head(&mut head, protocol, false).is_ok() {
            accepted_is_forwardable(&head, protocol);
            let (uri, headers) = (head.uri.clone(), head.headers.clone());
            assert!(sluice_proxy::validate::head(&mut head, protocol, false).is_ok(), "not idempotent");
            assert_eq!((head.uri.clone(), head.headers.clone()), (uri, headers), "second pass changed the head");
        }
    }
    if let Ok(path) = std::str::from_utf8(bytes) {
        let policy = match selector >> 1 & 3 {
            0 => EscapedSlashes::Reject,
            1 => EscapedSlashes::Decode,
            _ => EscapedSlashes::Keep,
        };
        if let Ok(out) = checked(path, policy) {
            assert!(!out.contains("%00"), "{out:?}");
            if policy != EscapedSlashes::Keep {
                let lower = out.to_ascii_lowercase();
                assert!(!lower.contains("%2f") && !lower.contains("%5c") && !out.contains('\\'), "{path:?} -> {out:?}");
            }
        }
    }
});
