//! Response compression end to end: the coding chosen by q-values and decoded by real
//! decoders to the origin's exact bytes (streamed and sized bodies, HTTP/1.1 and h2c),
//! every response that must pass untouched, Vary and weak ETags, HEAD agreeing with GET,
//! and decompression for clients that cannot decode what the origin sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use common::*;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Frame;

/// The page the origin serves: about 200 KiB of table markup.
fn page() -> &'static [u8] {
    static PAGE: OnceLock<Vec<u8>> = OnceLock::new();
    PAGE.get_or_init(|| {
        let mut html = String::from("<!doctype html>\n<html><head><title>Orders</title></head><body><table>\n");
        for i in 0..3000u32 {
            html.push_str(&format!(
                "<tr><td class=\"id\">{i}</td><td class=\"name\">customer {}</td><td>{}.{:02} EUR</td></tr>\n",
                i * 7919 % 1000,
                i % 97,
                i % 100
            ));
        }
        html.push_str("</table></body></html>\n");
        html.into_bytes()
    })
}

/// The page as the origin stores it gzipped (sent with `Content-Encoding: gzip`).
fn gzipped_page() -> &'static [u8] {
    static GZIPPED: OnceLock<Vec<u8>> = OnceLock::new();
    GZIPPED.get_or_init(|| {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(page()).unwrap();
        encoder.finish().unwrap()
    })
}

fn image() -> Bytes {
    (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect::<Vec<u8>>().into()
}

fn html(body: OriginBody) -> Response<OriginBody> {
    Response::builder()
        .header("content-type", "text/html; charset=utf-8")
        .header("etag", "\"v1\"")
        .header("accept-ranges", "bytes")
        .body(body)
        .unwrap()
}

/// What the origin answers, by path (`/decoded/...` is the same as `/...`).
fn answer(path: &str, range: bool) -> Response<OriginBody> {
    match path {
        // Streamed in 8 KiB chunks, without a length.
        "/page" => html(frames(page().chunks(8 * 1024).map(|c| Frame::data(Bytes::from_static(c))).collect())),
        "/page-length" => html(full(page())),
        "/small" => html(full(&b"<p>small</p>"[..])),
        "/image" => Response::builder().header("content-type", "image/png").body(full(image())).unwrap(),
        "/no-transform" => Response::builder()
            .header("content-type", "text/html")
            .header("cache-control", "public, no-transform")
            .body(full(page()))
            .unwrap(),
        "/encoded" => Response::builder()
            .header("content-type", "text/html")
            .header("content-encoding", "gzip")
            .header("etag", "\"gz1\"")
            .body(full(gzipped_page()))
            .unwrap(),
        "/range" if range => Response::builder()
            .status(StatusCode::PARTIAL_CONTENT)
            .header("content-type", "text/html")
            .header("content-range", format!("bytes 0-99/{}", page().len()))
            .body(full(&page()[..100]))
            .unwrap(),
        "/range" => html(full(page())),
        _ => Response::builder().status(StatusCode::NOT_FOUND).body(full("")).unwrap(),
    }
}

fn handler() -> Handler {
    Arc::new(|req: Request<hyper::body::Incoming>| {
        let path = req.uri().path().trim_start_matches("/decoded").to_owned();
        let range = req.headers().contains_key("range");
        Box::pin(async move { answer(&path, range) })
    })
}

fn config(origin: SocketAddr) -> String {
    format!(
        r#"
server {{ access-log "off" }}
listener "127.0.0.1:0"
upstream "origins" {{ server "{origin}" }}
site "*" {{
    compress
    route "/" {{ proxy "origins" }}
    route "/decoded" {{
        proxy "origins"
        compress {{ decompress #true }}
    }}
}}
"#
    )
}

async fn setup() -> (Origin, Proxy) {
    let origin = Origin::start(false, handler()).await;
    let proxy = Proxy::start(&config(origin.addr)).await;
    (origin, proxy)
}

/// One request on a new HTTP/1.1 connection; returns status, headers and body.
async fn fetch(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Bytes) {
    let mut client = h1_client(addr).await;
    let mut req = Request::builder().method(method).uri(path).header("host", "example.test");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = client.send_request(req.body(full("")).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
}

/// Decodes with the reference decoders, not Sluice's.
fn decode(coding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => {
            flate2::read::GzDecoder::new(body).read_to_end(&mut out).unwrap();
        }
        "br" => {
            brotli::Decompressor::new(body, 4096).read_to_end(&mut out).unwrap();
        }
        "zstd" => out = zstd::decode_all(body).unwrap(),
        other => panic!("unexpected coding {other:?}"),
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q_values_choose_the_coding_and_real_decoders_get_the_origin_bytes_back() {
    let (_origin, proxy) = setup().await;
    for (accept, expected) in [
        ("gzip", "gzip"),
        ("x-gzip", "gzip"),
        ("br;q=0.9, gzip;q=0.8", "br"),
        ("gzip;q=0.5, zstd", "zstd"),
        ("zstd;q=0, br;q=0.2, gzip;q=0.1", "br"),
        // Equal preferences: the server's order (zstd, br, gzip).
        ("gzip, deflate, br, zstd", "zstd"),
        ("*", "zstd"),
    ] {
        for path in ["/page", "/page-length"] {
            let (status, headers, body) = fetch(proxy.addr(), Method::GET, path, &[("accept-encoding", accept)]).await;
            let what = format!("{path} with Accept-Encoding: {accept}");
            assert_eq!(status, StatusCode::OK, "{what}");
            assert_eq!(headers["content-encoding"], expected, "{what}");
            assert_eq!(headers["vary"], "accept-encoding", "{what}");
            assert_eq!(headers["etag"], "W/\"v1\"", "{what}: a strong ETag becomes weak");
            assert!(!headers.contains_key("content-length"), "{what}");
            assert!(!headers.contains_key("accept-ranges"), "{what}");
            assert!(body.len() < page().len() / 3, "{what}: {} bytes", body.len());
            assert!(decode(expected, &body) == page(), "{what}: the decoded body differs from the origin's");
        }
    }

    // The same over h2c.
    let mut h2 = h2_client(proxy.addr()).await;
    for coding in ["br", "zstd", "gzip"] {
        let req = Request::get("http://example.test/page").header("accept-encoding", coding).body(full("")).unwrap();
        let resp = h2.send_request(req).await.unwrap();
        assert_eq!(resp.headers()["content-encoding"], coding);
        assert!(!resp.headers().contains_key("content-length"));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(decode(coding, &body) == page(), "h2c {coding}: the decoded body differs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_accepts_no_coding_gets_identity_with_vary() {
    let (_origin, proxy) = setup().await;
    for accept in [None, Some("identity"), Some("deflate"), Some("gzip;q=0, br;q=0, zstd;q=0")] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept-encoding", a)).into_iter().collect();
        let (status, headers, body) = fetch(proxy.addr(), Method::GET, "/page-length", &headers).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!headers.contains_key("content-encoding"), "{accept:?}");
        assert_eq!(headers["vary"], "accept-encoding", "{accept:?}: caches must know the response varies");
        assert_eq!(headers["etag"], "\"v1\"", "{accept:?}");
        assert_eq!(headers["content-length"], page().len().to_string().as_str());
        assert!(body == page());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_must_not_be_compressed_passes_untouched() {
    let (_origin, proxy) = setup().await;
    let all = [("accept-encoding", "gzip, br, zstd")];

    let (_, headers, body) = fetch(proxy.addr(), Method::GET, "/small", &all).await;
    assert!(!headers.contains_key("content-encoding"), "below min-size");
    assert_eq!(body, "<p>small</p>");

    let (_, headers, body) = fetch(proxy.addr(), Method::GET, "/image", &all).await;
    assert!(!headers.contains_key("content-encoding") && !headers.contains_key("vary"), "image/png");
    assert_eq!(body, image());

    let (_, headers, body) = fetch(proxy.addr(), Method::GET, "/no-transform", &all).await;
    assert!(!headers.contains_key("content-encoding"), "no-transform");
    assert!(body == page());

    let no_transform = [("accept-encoding", "gzip"), ("cache-control", "no-transform")];
    let (_, headers, _) = fetch(proxy.addr(), Method::GET, "/page", &no_transform).await;
    assert!(!headers.contains_key("content-encoding"), "no-transform in the request");

    // Already encoded by the origin: its bytes exactly, whatever the client accepts.
    for accept in ["gzip, br, zstd", "br"] {
        let (_, headers, body) = fetch(proxy.addr(), Method::GET, "/encoded", &[("accept-encoding", accept)]).await;
        assert_eq!(headers["content-encoding"], "gzip", "{accept}");
        assert_eq!(headers["etag"], "\"gz1\"", "{accept}");
        assert!(body == gzipped_page(), "{accept}: the origin's bytes are passed through");
    }

    // Range requests: a 206, and a 200 from an origin that ignored the Range.
    let ranged = [("accept-encoding", "gzip"), ("range", "bytes=0-99")];
    let (status, headers, body) = fetch(proxy.addr(), Method::GET, "/range", &ranged).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert!(!headers.contains_key("content-encoding"));
    assert_eq!(headers["content-range"], format!("bytes 0-99/{}", page().len()).as_str());
    assert_eq!(body, &page()[..100]);
    let (status, headers, body) = fetch(proxy.addr(), Method::GET, "/page", &ranged).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!headers.contains_key("content-encoding"), "a Range request is never compressed");
    assert!(body == page());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_gets_the_same_headers_as_get() {
    let (_origin, proxy) = setup().await;
    for (path, accept) in [("/page-length", "br"), ("/page-length", "identity"), ("/decoded/encoded", "identity")] {
        let request = [("accept-encoding", accept)];
        let (_, get, _) = fetch(proxy.addr(), Method::GET, path, &request).await;
        let (status, head, body) = fetch(proxy.addr(), Method::HEAD, path, &request).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.is_empty());
        for name in ["content-encoding", "vary", "etag", "content-type", "content-length", "accept-ranges"] {
            assert_eq!(head.get(name), get.get(name), "{path} {accept}: `{name}` differs between HEAD and GET");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decompress_gives_identity_to_clients_that_cannot_decode() {
    let (_origin, proxy) = setup().await;
    for accept in [None, Some("br")] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept-encoding", a)).into_iter().collect();
        let (status, headers, body) = fetch(proxy.addr(), Method::GET, "/decoded/encoded", &headers).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!headers.contains_key("content-encoding"), "{accept:?}");
        assert!(!headers.contains_key("content-length"), "{accept:?}");
        assert_eq!(headers["vary"], "accept-encoding", "{accept:?}");
        assert_eq!(headers["etag"], "W/\"gz1\"", "{accept:?}");
        assert!(body == page(), "{accept:?}: the decoded body differs from the origin's page");
    }
    // A client that accepts gzip gets the origin's bytes.
    let (_, headers, body) = fetch(proxy.addr(), Method::GET, "/decoded/encoded", &[("accept-encoding", "gzip")]).await;
    assert_eq!(headers["content-encoding"], "gzip");
    assert_eq!(headers["vary"], "accept-encoding");
    assert!(body == gzipped_page());
}
