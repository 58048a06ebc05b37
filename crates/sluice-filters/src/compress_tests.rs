use std::io::{Read, Write};

use http::header::HeaderName;

use super::*;

fn request(headers: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
    }
    map
}

fn accept(value: &str) -> HeaderMap {
    request(&[("accept-encoding", value)])
}

fn response(status: u16, headers: &[(&str, &str)]) -> response::Parts {
    let mut r = http::Response::new(());
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    *r.headers_mut() = request(headers);
    r.into_parts().0
}

fn html(length: &str) -> response::Parts {
    response(200, &[("content-type", "text/html; charset=utf-8"), ("content-length", length), ("etag", "\"v1\"")])
}

fn values<'h>(headers: &'h HeaderMap, name: &str) -> Vec<&'h str> {
    headers.get_all(name).iter().map(|v| v.to_str().unwrap()).collect()
}

/// Text that compresses like a real page: repetitive markup around varying numbers.
fn page(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        let row = format!("<tr><td class=\"id\">{i}</td><td class=\"v\">{}</td></tr>\n", i * 7919 % 1000);
        out.extend_from_slice(row.as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

fn decode_with_reference(coding: Coding, compressed: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        Coding::Gzip => {
            flate2::read::GzDecoder::new(compressed).read_to_end(&mut out).unwrap();
        }
        Coding::Brotli => {
            brotli::Decompressor::new(compressed, 4096).read_to_end(&mut out).unwrap();
        }
        Coding::Zstd => out = zstd::decode_all(compressed).unwrap(),
    }
    out
}

fn encode_with_reference(coding: Coding, plain: &[u8]) -> Vec<u8> {
    match coding {
        Coding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(plain).unwrap();
            e.finish().unwrap()
        }
        Coding::Brotli => {
            let mut e = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
            e.write_all(plain).unwrap();
            e.into_inner()
        }
        Coding::Zstd => zstd::encode_all(plain, 3).unwrap(),
    }
}

/// Runs `chunks` through `coder`; `separate_end` ends with `(None, true)` instead of
/// marking the last chunk.
fn run(coder: &mut Coder, chunks: &[&[u8]], separate_end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let end = !separate_end && i + 1 == chunks.len();
        if let Some(bytes) = coder.process(Some(Bytes::copy_from_slice(chunk)), end).unwrap() {
            out.extend_from_slice(&bytes);
        }
    }
    if separate_end || chunks.is_empty() {
        if let Some(bytes) = coder.process(None, true).unwrap() {
            out.extend_from_slice(&bytes);
        }
    }
    out
}

// --- negotiation ---

#[test]
fn no_accept_encoding_means_identity() {
    assert_eq!(negotiate(&HeaderMap::new(), &Coding::DEFAULT_ORDER), None);
    assert_eq!(negotiate(&accept(""), &Coding::DEFAULT_ORDER), None);
    assert_eq!(negotiate(&accept("identity"), &Coding::DEFAULT_ORDER), None);
    assert_eq!(negotiate(&accept("deflate, compress"), &Coding::DEFAULT_ORDER), None);
}

#[test]
fn equal_q_values_follow_the_server_order() {
    let browser = accept("gzip, deflate, br, zstd");
    assert_eq!(negotiate(&browser, &Coding::DEFAULT_ORDER), Some(Coding::Zstd));
    assert_eq!(negotiate(&browser, &[Coding::Gzip, Coding::Brotli]), Some(Coding::Gzip));
    assert_eq!(negotiate(&browser, &[Coding::Brotli]), Some(Coding::Brotli));
    assert_eq!(negotiate(&accept("*"), &Coding::DEFAULT_ORDER), Some(Coding::Zstd));
    assert_eq!(negotiate(&browser, &[]), None);
}

#[test]
fn the_highest_q_value_wins() {
    assert_eq!(negotiate(&accept("br;q=0.9, gzip;q=1"), &Coding::DEFAULT_ORDER), Some(Coding::Gzip));
    assert_eq!(negotiate(&accept("gzip;q=0.5, zstd"), &Coding::DEFAULT_ORDER), Some(Coding::Zstd));
    assert_eq!(negotiate(&accept("gzip;q=0, br;q=0.001"), &Coding::DEFAULT_ORDER), Some(Coding::Brotli));
    assert_eq!(negotiate(&accept("zstd;q=0, *;q=0.3"), &Coding::DEFAULT_ORDER), Some(Coding::Brotli));
    assert_eq!(negotiate(&accept("*;q=0.5, gzip"), &Coding::DEFAULT_ORDER), Some(Coding::Gzip));
    // Several header lines are one list.
    let mut two = accept("gzip;q=0.5");
    two.append(ACCEPT_ENCODING, HeaderValue::from_static("br"));
    assert_eq!(negotiate(&two, &Coding::DEFAULT_ORDER), Some(Coding::Brotli));
}

#[test]
fn q_zero_is_not_acceptable() {
    assert_eq!(negotiate(&accept("gzip;q=0"), &Coding::DEFAULT_ORDER), None);
    assert_eq!(negotiate(&accept("*;q=0"), &Coding::DEFAULT_ORDER), None);
    assert_eq!(negotiate(&accept("*, zstd;q=0, br;q=0.0"), &Coding::DEFAULT_ORDER), Some(Coding::Gzip));
    assert_eq!(negotiate(&accept("gzip;q=0.000"), &Coding::DEFAULT_ORDER), None);
}

#[test]
fn tokens_and_parameters_in_any_case_and_spacing() {
    assert_eq!(negotiate(&accept("GZIP"), &Coding::DEFAULT_ORDER), Some(Coding::Gzip));
    assert_eq!(negotiate(&accept("x-gzip"), &Coding::DEFAULT_ORDER), Some(Coding::Gzip));
    assert_eq!(negotiate(&accept(" gzip ; Q=0.8 ,br ; q = 0.7 "), &Coding::DEFAULT_ORDER), Some(Coding::Gzip));
    assert_eq!(negotiate(&accept("Br;q=1.0"), &Coding::DEFAULT_ORDER), Some(Coding::Brotli));
    assert_eq!(negotiate(&accept(",, zstd ,"), &Coding::DEFAULT_ORDER), Some(Coding::Zstd));
}

#[test]
fn malformed_elements_are_skipped() {
    assert_eq!(negotiate(&accept("gzip;q=2"), &Coding::DEFAULT_ORDER), None);
    assert_eq!(negotiate(&accept("gzip;q=0.1234"), &Coding::DEFAULT_ORDER), None);
    assert_eq!(negotiate(&accept("gzip;q=abc, br"), &Coding::DEFAULT_ORDER), Some(Coding::Brotli));
    assert_eq!(negotiate(&accept("gzip;level=9"), &Coding::DEFAULT_ORDER), Some(Coding::Gzip));
}

#[test]
fn a_preferred_identity_beats_a_tolerated_coding() {
    assert_eq!(negotiate(&accept("gzip;q=0.5, identity"), &Coding::DEFAULT_ORDER), None);
    assert_eq!(negotiate(&accept("gzip;q=0.4, *;q=0.5"), &[Coding::Gzip]), None);
    // A tie goes to the coding: fewer bytes for the same preference.
    assert_eq!(negotiate(&accept("gzip;q=0.5, identity;q=0.5"), &Coding::DEFAULT_ORDER), Some(Coding::Gzip));
    assert_eq!(negotiate(&accept("gzip, identity;q=0"), &Coding::DEFAULT_ORDER), Some(Coding::Gzip));
}

#[test]
fn q_values_are_read_exactly() {
    assert_eq!(qvalue("0"), Some(0));
    assert_eq!(qvalue("0."), Some(0));
    assert_eq!(qvalue("0.5"), Some(500));
    assert_eq!(qvalue("0.05"), Some(50));
    assert_eq!(qvalue("0.125"), Some(125));
    assert_eq!(qvalue("1"), Some(1000));
    assert_eq!(qvalue("1.000"), Some(1000));
    for bad in ["1.5", "1.001", ".5", "0.1234", "2", "-0", "0.x", "", "0,5"] {
        assert_eq!(qvalue(bad), None, "{bad:?}");
    }
}

#[test]
fn coding_tokens() {
    for coding in Coding::DEFAULT_ORDER {
        assert_eq!(Coding::from_token(coding.token()), Some(coding));
        assert_eq!(coding.to_string(), coding.token());
    }
    assert_eq!(Coding::from_token("X-GZIP"), Some(Coding::Gzip));
    assert_eq!(Coding::from_token("deflate"), None);
}

#[test]
fn levels_are_brought_into_range() {
    let levels = Levels { gzip: 0, brotli: 12, zstd: 22 };
    assert_eq!(levels.of(Coding::Gzip), 1);
    assert_eq!(levels.of(Coding::Brotli), 11);
    assert_eq!(levels.of(Coding::Zstd), 19, "levels over 19 need windows RFC 9659 forbids");
    assert_eq!(Levels::default().of(Coding::Gzip), 5);
    assert_eq!(Levels::default().of(Coding::Brotli), 4);
    assert_eq!(Levels::default().of(Coding::Zstd), 3);
}

// --- head edits ---

#[test]
fn a_compressed_response_gets_its_head_edited() {
    let policy = CompressPolicy::default();
    let mut r = response(
        200,
        &[
            ("content-type", "text/html"),
            ("content-length", "5000"),
            ("etag", "\"v1\""),
            ("accept-ranges", "bytes"),
            ("content-digest", "sha-256=:AAAA:"),
            ("vary", "Origin"),
        ],
    );
    let coder = policy.start(&Method::GET, &accept("gzip"), &mut r).unwrap();
    assert_eq!(coder.coding(), Coding::Gzip);
    assert!(!coder.is_decoder());
    assert_eq!(r.headers["content-encoding"], "gzip");
    assert!(!r.headers.contains_key("content-length"));
    assert!(!r.headers.contains_key("accept-ranges"));
    assert!(!r.headers.contains_key("content-digest"));
    assert_eq!(r.headers["etag"], "W/\"v1\"");
    assert_eq!(values(&r.headers, "vary"), ["Origin", "accept-encoding"]);
}

#[test]
fn weak_etags_and_a_covering_vary_are_kept() {
    let policy = CompressPolicy::default();
    for vary in ["Accept-Encoding", "cookie, ACCEPT-ENCODING", "*"] {
        let mut r = response(200, &[("content-type", "text/css"), ("etag", "W/\"x\""), ("vary", vary)]);
        assert!(policy.start(&Method::GET, &accept("br"), &mut r).is_some());
        assert_eq!(r.headers["etag"], "W/\"x\"");
        assert_eq!(values(&r.headers, "vary"), [vary], "{vary}");
    }
}

#[test]
fn a_client_without_a_coding_still_gets_vary() {
    let policy = CompressPolicy::default();
    for request in [HeaderMap::new(), accept("identity"), accept("deflate"), accept("gzip;q=0")] {
        let mut r = html("5000");
        assert!(policy.start(&Method::GET, &request, &mut r).is_none());
        assert_eq!(values(&r.headers, "vary"), ["accept-encoding"]);
        assert_eq!(r.headers["etag"], "\"v1\"", "untouched content keeps its strong validator");
        assert_eq!(r.headers["content-length"], "5000");
        assert!(!r.headers.contains_key("content-encoding"));
    }
}

#[test]
fn unknown_length_bodies_are_compressed() {
    let policy = CompressPolicy::default();
    let mut r = response(200, &[("content-type", "application/json")]);
    assert_eq!(policy.start(&Method::POST, &accept("zstd"), &mut r).map(|c| c.coding()), Some(Coding::Zstd));
    assert_eq!(r.headers["content-encoding"], "zstd");
    let mut r = response(404, &[("content-type", "text/html"), ("content-length", "300")]);
    assert!(policy.start(&Method::GET, &accept("gzip"), &mut r).is_some(), "error pages are compressed too");
}

#[test]
fn every_skip_rule_leaves_the_head_untouched() {
    let policy = CompressPolicy::default();
    let gzip = accept("gzip, br, zstd");
    let cases = [
        ("101", response(101, &[("content-type", "text/html")]), gzip.clone()),
        ("204", response(204, &[("content-type", "text/html")]), gzip.clone()),
        ("304", response(304, &[("content-type", "text/html"), ("etag", "\"v1\"")]), gzip.clone()),
        ("206", response(206, &[("content-type", "text/html"), ("content-range", "bytes 0-999/5000")]), gzip.clone()),
        (
            "content-range on a 200",
            response(200, &[("content-type", "text/html"), ("content-range", "bytes 0-999/1000")]),
            gzip.clone(),
        ),
        ("range request", html("5000"), request(&[("accept-encoding", "gzip"), ("range", "bytes=0-10")])),
        (
            "no-transform response",
            response(200, &[("content-type", "text/html"), ("cache-control", "public, No-Transform")]),
            gzip.clone(),
        ),
        (
            "no-transform request",
            html("5000"),
            request(&[("accept-encoding", "gzip"), ("cache-control", "no-transform")]),
        ),
        ("already encoded", response(200, &[("content-type", "text/html"), ("content-encoding", "br")]), gzip.clone()),
        (
            "unknown coding",
            response(200, &[("content-type", "text/html"), ("content-encoding", "deflate")]),
            gzip.clone(),
        ),
        ("image", response(200, &[("content-type", "image/png"), ("content-length", "5000")]), gzip.clone()),
        ("no type", response(200, &[("content-length", "5000")]), gzip.clone()),
        ("small", html("255"), gzip.clone()),
        ("empty", html("0"), gzip.clone()),
        ("trailers", response(200, &[("content-type", "text/html"), ("trailer", "x-checksum")]), gzip.clone()),
    ];
    for (what, mut r, request) in cases {
        let before = r.headers.clone();
        assert!(policy.start(&Method::GET, &request, &mut r).is_none(), "{what}");
        assert_eq!(r.headers, before, "{what}");
    }
}

#[test]
fn the_minimum_size_is_inclusive() {
    let policy = CompressPolicy::default();
    let mut r = html("256");
    assert!(policy.start(&Method::GET, &accept("gzip"), &mut r).is_some());
    let big =
        CompressPolicy::new(Coding::DEFAULT_ORDER.to_vec(), Levels::default(), 10_000, vec!["text/*".into()], false);
    let mut r = html("9999");
    assert!(big.start(&Method::GET, &accept("gzip"), &mut r).is_none());
}

#[test]
fn types_match_exactly_or_by_prefix_in_any_case() {
    let policy = CompressPolicy::new(
        vec![Coding::Gzip],
        Levels::default(),
        0,
        vec!["text/*".into(), "Application/JSON".into()],
        false,
    );
    for (content_type, expected) in [
        ("text/markdown; charset=utf-8", true),
        ("TEXT/HTML", true),
        ("application/json", true),
        ("application/json;charset=utf-8", true),
        ("application/jsonx", false),
        ("application/javascript", false),
        ("textual/plain", false),
    ] {
        let mut r = response(200, &[("content-type", content_type)]);
        assert_eq!(policy.start(&Method::GET, &accept("gzip"), &mut r).is_some(), expected, "{content_type}");
    }
    let everything = CompressPolicy::new(vec![Coding::Gzip], Levels::default(), 0, vec!["*/*".into()], false);
    let mut r = response(200, &[("content-type", "image/png")]);
    assert!(everything.start(&Method::GET, &accept("gzip"), &mut r).is_some());
}

#[test]
fn head_gets_the_same_head_as_get_and_no_coder() {
    let policy = CompressPolicy::default();
    for request in [accept("br"), accept("identity")] {
        let mut get = html("5000");
        let mut head = html("5000");
        let coder = policy.start(&Method::GET, &request, &mut get);
        assert!(policy.start(&Method::HEAD, &request, &mut head).is_none());
        assert_eq!(head.headers, get.headers);
        assert_eq!(coder.is_some(), get.headers.contains_key("content-encoding"));
    }
}

#[test]
fn decompression_for_clients_that_do_not_accept_the_origin_coding() {
    let policy = CompressPolicy::new(Coding::DEFAULT_ORDER.to_vec(), Levels::default(), 256, vec![], true);
    let encoded = || {
        response(
            200,
            &[
                ("content-type", "image/png"),
                ("content-encoding", "x-gzip"),
                ("content-length", "40"),
                ("etag", "\"z\""),
            ],
        )
    };
    let mut r = encoded();
    let coder = policy.start(&Method::GET, &accept("br"), &mut r).unwrap();
    assert!(coder.is_decoder());
    assert_eq!(coder.coding(), Coding::Gzip);
    assert!(!r.headers.contains_key("content-encoding"));
    assert!(!r.headers.contains_key("content-length"));
    assert_eq!(r.headers["etag"], "W/\"z\"");
    assert_eq!(values(&r.headers, "vary"), ["accept-encoding"]);

    let mut head = encoded();
    assert!(policy.start(&Method::HEAD, &HeaderMap::new(), &mut head).is_none());
    assert_eq!(head.headers, r.headers);

    // A client that accepts it gets the origin's bytes, with Vary.
    let mut r = encoded();
    assert!(policy.start(&Method::GET, &accept("gzip"), &mut r).is_none());
    assert_eq!(r.headers["content-encoding"], "x-gzip");
    assert_eq!(r.headers["content-length"], "40");
    assert_eq!(values(&r.headers, "vary"), ["accept-encoding"]);

    // Without `decompress`, nothing changes.
    let mut r = encoded();
    let before = r.headers.clone();
    assert!(CompressPolicy::default().start(&Method::GET, &HeaderMap::new(), &mut r).is_none());
    assert_eq!(r.headers, before);

    // Several codings are not undone.
    let mut r = response(200, &[("content-encoding", "gzip, br")]);
    assert!(policy.start(&Method::GET, &HeaderMap::new(), &mut r).is_none());
}

// --- bodies ---

#[test]
fn multi_chunk_bodies_round_trip_through_real_decoders() {
    let body = page(200_000);
    let chunks: [&[u8]; 5] = [&body[..1], &body[1..100], &body[100..16_484], &body[16_484..150_000], &body[150_000..]];
    for coding in Coding::DEFAULT_ORDER {
        for level in [1, Levels::default().of(coding), 9] {
            // Both ways a body can end: data marked last, or a separate empty last call.
            let separate_end = level == 1;
            let mut coder = Coder::encoder(coding, level).unwrap();
            let compressed = run(&mut coder, &chunks, separate_end);
            assert!(compressed.len() < body.len() / 3, "{coding} {level}: {} bytes", compressed.len());
            assert!(decode_with_reference(coding, &compressed) == body, "{coding} level {level}: round trip differs");
            assert_eq!(coder.process(None, true).unwrap(), None, "finished");
        }
    }
}

#[test]
fn each_chunk_is_decodable_as_soon_as_it_is_sent() {
    let body = page(40_000);
    let (first, second) = body.split_at(16_384);
    for coding in Coding::DEFAULT_ORDER {
        let mut coder = Coder::encoder(coding, Levels::default().of(coding)).unwrap();
        let out = coder.process(Some(Bytes::copy_from_slice(first)), false).unwrap().unwrap();
        // A streaming decoder given only what was sent so far recovers the whole first chunk.
        // (brotli's write-side decoder keeps up to a buffer of output back until more input
        // comes, so the reference reader checks brotli.)
        let decoded = if coding == Coding::Brotli {
            partial_brotli(&out)
        } else {
            let mut decoder = Coder::decoder(coding).unwrap();
            decoder.process(Some(out.clone()), false).unwrap().unwrap().to_vec()
        };
        assert_eq!(&decoded[..], first, "{coding}: output held back");
        let rest = run(&mut coder, &[second], false);
        let mut all = out.to_vec();
        all.extend_from_slice(&rest);
        assert_eq!(decode_with_reference(coding, &all), body);
    }
}

#[test]
fn empty_bodies_make_valid_empty_streams() {
    for coding in Coding::DEFAULT_ORDER {
        let mut coder = Coder::encoder(coding, 3).unwrap();
        assert_eq!(coder.process(Some(Bytes::new()), false).unwrap(), None);
        let out = coder.process(None, true).unwrap().unwrap_or_default();
        assert_eq!(decode_with_reference(coding, &out), b"", "{coding}");
    }
}

#[test]
fn decoders_restore_the_origin_bytes_from_any_chunking() {
    let body = page(100_000);
    for coding in Coding::DEFAULT_ORDER {
        let compressed = encode_with_reference(coding, &body);
        for size in [1, 7, 1000, compressed.len()] {
            let chunks: Vec<&[u8]> = compressed.chunks(size).collect();
            let mut coder = Coder::decoder(coding).unwrap();
            assert_eq!(run(&mut coder, &chunks, size == 7), body, "{coding}, chunks of {size}");
        }
    }
}

#[test]
fn an_empty_encoded_body_decodes_to_nothing() {
    for coding in Coding::DEFAULT_ORDER {
        let mut coder = Coder::decoder(coding).unwrap();
        assert_eq!(coder.process(None, true).unwrap(), None);
    }
}

#[test]
fn corrupt_and_truncated_input_fails_the_decoder() {
    let body = page(50_000);
    for coding in Coding::DEFAULT_ORDER {
        let compressed = encode_with_reference(coding, &body);
        let mut coder = Coder::decoder(coding).unwrap();
        let truncated = Bytes::copy_from_slice(&compressed[..compressed.len() / 2]);
        let fed = coder.process(Some(truncated), false);
        let finished = fed.and_then(|_| coder.process(None, true));
        // The zstd crate's write decoder does not say whether its last frame was complete;
        // a body cut short in transit still fails, at the HTTP layer.
        if coding != Coding::Zstd {
            assert!(finished.is_err(), "{coding}: a truncated stream must not end cleanly");
            assert_eq!(coder.process(None, true).unwrap(), None, "{coding}: done after an error");
        }

        let mut coder = Coder::decoder(coding).unwrap();
        let garbage = Bytes::from_static(b"this is not compressed at all, not even a little bit");
        assert!(coder.process(Some(garbage), true).is_err(), "{coding}");
    }
}

#[test]
fn a_decompression_bomb_is_refused() {
    let zeros = Bytes::from(vec![0u8; 1 << 20]);
    for coding in Coding::DEFAULT_ORDER {
        let mut encoder = Coder::encoder(coding, 1).unwrap();
        let mut bomb = Vec::new();
        for i in 0..(MAX_DECODED_PER_CHUNK >> 20) + 1 {
            let last = i == MAX_DECODED_PER_CHUNK >> 20;
            bomb.extend_from_slice(&encoder.process(Some(zeros.clone()), last).unwrap().unwrap_or_default());
        }
        assert!(bomb.len() < 100_000, "{coding}: {} bytes", bomb.len());
        let mut coder = Coder::decoder(coding).unwrap();
        let err = coder.process(Some(Bytes::from(bomb)), false).unwrap_err();
        assert!(err.to_string().contains("decompression bomb"), "{coding}: {err}");
    }
}

#[test]
fn coders_can_live_in_a_request_context() {
    // The per-request context must be Send (a coder lives in it); a policy is shared by
    // every worker thread through the routing table.
    fn send<T: Send + 'static>() {}
    fn shared<T: Send + Sync + 'static>() {}
    send::<Coder>();
    shared::<CompressPolicy>();
}

/// What brotli's reference reader decodes from an unfinished stream.
fn partial_brotli(data: &[u8]) -> Vec<u8> {
    use std::io::Read as _;
    let mut reader = brotli::Decompressor::new(data, 4096);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // It reports the missing end of the stream as an error once everything else is out.
    while let Ok(n) = reader.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}
