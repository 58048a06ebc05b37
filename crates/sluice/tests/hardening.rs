//! Protocol hardening over real sockets: request limits (URI length 414, header count 431
//! on HTTP/1 and HTTP/2, body size 413 by length, chunked and HTTP/2), slow clients (a
//! body that stalls gets 408, a client that stops reading is cut off by the send
//! timeout), and the HTTP/2 defences, each hammered by a raw frame client: Rapid Reset,
//! CONTINUATION floods, "MadeYouReset", slower cancel floods and the concurrent stream
//! limit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::h2raw::{code, flag, kind, request_block, RawH2};
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(origin: SocketAddr, listener: &str, site: &str) -> String {
    format!(
        r#"
server {{ access-log "off" }}
listener "127.0.0.1:0" {{
{listener}
}}
upstream "origin" {{ server "{origin}" }}
site "*" {{
{site}
    route "/" {{ proxy "origin" }}
}}
"#
    )
}

/// An origin that reads the whole request body and answers with its length.
async fn counting_origin() -> Origin {
    Origin::start(
        false,
        Arc::new(|req: Request<hyper::body::Incoming>| {
            Box::pin(async move {
                let n = drain(req.into_body()).await;
                Response::new(full(format!("got {n}")))
            })
        }),
    )
    .await
}

/// Sends `head` then reads the whole answer (until the server closes).
async fn raw_answer(addr: SocketAddr, bytes: &[u8]) -> String {
    raw(addr, bytes).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_request_targets_get_414_and_many_headers_431() {
    let origin = counting_origin().await;
    let proxy = Proxy::start(&config(origin.addr, "max-uri-length 300\nmax-headers 20", "")).await;
    let long = format!("/{}", "a".repeat(400));
    let (status, _, _) = send(proxy.addr(), "GET", &long, &[]).await;
    assert_eq!(status, StatusCode::URI_TOO_LONG);
    let ok = format!("/{}", "a".repeat(200));
    assert_eq!(send(proxy.addr(), "GET", &ok, &[]).await.0, StatusCode::OK);
    assert_eq!(origin.requests(), 1, "the long one never reached the origin");

    let mut head = String::from("GET / HTTP/1.1\r\nhost: x\r\n");
    for i in 0..30 {
        head.push_str(&format!("x-h{i}: v\r\n"));
    }
    head.push_str("\r\n");
    let answer = raw_answer(proxy.addr(), head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    // HTTP/2 (whose own limit is the header block's size): the same count, 431 on the
    // stream, and the connection goes on serving.
    let mut h2 = h2_client(proxy.addr()).await;
    let mut many = Request::get("http://x/");
    for i in 0..30 {
        many = many.header(format!("x-h{i}"), "v");
    }
    let resp = h2.send_request(many.body(full("")).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let resp = h2.send_request(Request::get("http://x/").header("x-one", "v").body(full("")).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Cookies split into one field each (as HTTP/2 allows) count as one field.
    let mut crumbs = Request::get("http://x/");
    for i in 0..30 {
        crumbs = crumbs.header("cookie", format!("c{i}=v"));
    }
    let resp = h2.send_request(crumbs.body(full("")).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(origin.requests(), 3, "the 431s never reached the origin");
    // The HTTP/1.1 origin got them as one Cookie line.
    let head = origin.last_head();
    let cookies: Vec<_> = head.headers.get_all("cookie").iter().collect();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let expected: Vec<String> = (0..30).map(|i| format!("c{i}=v")).collect();
    assert_eq!(cookies[0], expected.join("; ").as_str());
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_max_body_size_get_413_by_length_chunked_and_on_http2() {
    let origin = counting_origin().await;
    let proxy = Proxy::start(&config(origin.addr, "", "max-body-size 1000")).await;
    let addr = proxy.addr();

    // Declared length: refused before anything is read or sent upstream.
    let answer = raw_answer(addr, b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    assert_eq!(origin.requests(), 0);

    // Within the limit.
    let mut c = h1_client(addr).await;
    let resp =
        c.send_request(Request::post("/").header("host", "x").body(full(vec![b'x'; 1000])).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "got 1000");

    // Chunked, no length: cut off while streaming.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n").await.unwrap();
    for _ in 0..20 {
        if s.write_all(b"100\r\n").await.is_err() || s.write_all(&[b'y'; 256]).await.is_err() {
            break;
        }
        let _ = s.write_all(b"\r\n").await;
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");

    // HTTP/2: the same limit on a stream.
    let mut h2 = h2_client(addr).await;
    let resp = h2.send_request(Request::post("http://x/").body(full(vec![b'z'; 4000])).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_can_lift_its_sites_body_limit() {
    let origin = counting_origin().await;
    let kdl = format!(
        r#"
server {{ access-log "off" }}
listener "127.0.0.1:0"
upstream "origin" {{ server "{}" }}
site "*" {{
    max-body-size "1KiB"
    route "/upload" {{
        proxy "origin"
        max-body-size #false
    }}
    route "/" {{ proxy "origin" }}
}}
"#,
        origin.addr
    );
    let proxy = Proxy::start(&kdl).await;
    let mut c = h1_client(proxy.addr()).await;
    let big = vec![b'x'; 100_000];
    let resp =
        c.send_request(Request::post("/upload").header("host", "x").body(full(big.clone())).unwrap()).await.unwrap();
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "got 100000");
    let mut c = h1_client(proxy.addr()).await;
    let resp = c.send_request(Request::post("/").header("host", "x").body(full(big)).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_gets_408_and_a_slow_but_steady_one_passes() {
    let origin = counting_origin().await;
    let proxy = Proxy::start(&config(origin.addr, "body-read-timeout \"400ms\"", "")).await;
    let addr = proxy.addr();

    // 10 bytes announced, 2 sent, then silence.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nab").await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the proxy must give up on the stalled body");
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");

    // A byte every 100 ms never pauses for the timeout.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 8\r\nconnection: close\r\n\r\n").await.unwrap();
    for b in b"12345678" {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(&[*b]).await.unwrap();
    }
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200") && out.ends_with("got 8"), "{out}");
    proxy.shutdown().await;
}

/// A response body of `len` bytes that records when it is dropped (the proxy gave up).
fn tracked(len: u64, dropped: Arc<AtomicBool>) -> OriginBody {
    struct Tracked {
        inner: OriginBody,
        dropped: Arc<AtomicBool>,
    }
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }
    impl http_body::Body for Tracked {
        type Data = Bytes;
        type Error = Box<dyn std::error::Error + Send + Sync>;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            std::pin::Pin::new(&mut self.inner).poll_frame(cx)
        }
    }
    Tracked { inner: generated(len), dropped }.boxed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_by_the_send_timeout() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let origin = Origin::start(
        false,
        Arc::new(move |_req| {
            let flag = flag.clone();
            Box::pin(async move { Response::new(tracked(1 << 30, flag)) })
        }),
    )
    .await;
    let proxy = Proxy::start(&config(origin.addr, "send-timeout \"500ms\"", "")).await;
    // Ask for 1 GiB and never read a byte.
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let started = std::time::Instant::now();
    until("the proxy dropped the response of the client that does not read", || dropped.load(Ordering::SeqCst)).await;
    assert!(started.elapsed() >= Duration::from_millis(500));
    let open = proxy.server.as_ref().unwrap().control().current().listeners[0].stats.open.clone();
    until("the connection is closed", || open.load(Ordering::Relaxed) == 0).await;
    drop(s);
    proxy.shutdown().await;
}

/// A proxy in front of an origin counting its requests, for the HTTP/2 attacks.
async fn h2_target(listener: &str) -> (Proxy, Origin) {
    let origin = Origin::named("ok").await;
    let proxy = Proxy::start(&config(origin.addr, listener, "")).await;
    (proxy, origin)
}

/// The proxy still serves a well-behaved client after an attack.
async fn still_serving(addr: SocketAddr) {
    let (status, _, body) = send(addr, "GET", "/", &[]).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_floods_get_goaway_enhance_your_calm() {
    let (proxy, origin) = h2_target("").await;
    let mut h = RawH2::connect(proxy.addr()).await.unwrap();
    let block = request_block("GET", "/", "x", &[]);
    for _ in 0..10_000 {
        let id = h.next_stream_id();
        h.headers(id, &block, true, true).unwrap();
        h.rst_stream(id, code::CANCEL).unwrap();
    }
    let _ = h.flush_or_closed().await.unwrap();
    let outcome = h.read_until_goaway_or_close(Duration::from_secs(10)).await;
    assert_eq!(outcome.goaway, Some(code::ENHANCE_YOUR_CALM), "{outcome:?}");
    assert!(origin.requests() < 10_000, "{} of 10000 reached the origin", origin.requests());
    still_serving(proxy.addr()).await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_started_requests_over_and_over_closes_the_connection() {
    // A slower Rapid Reset: each request is served by the proxy before it is cancelled.
    let origin = Origin::start(
        false,
        Arc::new(|_req| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Response::new(full("late"))
            })
        }),
    )
    .await;
    let proxy = Proxy::start(&config(origin.addr, "http2 { max-client-resets 50; }", "")).await;
    let mut h = RawH2::connect(proxy.addr()).await.unwrap();
    let block = request_block("GET", "/", "x", &[]);
    let mut goaway = None;
    'streams: for _ in 0..200 {
        let id = h.next_stream_id();
        h.headers(id, &block, true, true).unwrap();
        if !h.flush_or_closed().await.unwrap() {
            break;
        }
        // Let the proxy start the request (or say GOAWAY), then cancel it.
        let wanted = (id / 2 + 1) as usize;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while origin.requests() < wanted {
            assert!(std::time::Instant::now() < deadline, "neither the request nor a GOAWAY came");
            match tokio::time::timeout(Duration::from_millis(5), h.read_frame()).await {
                Ok(Ok(Some(f))) if f.is_goaway() => {
                    goaway = f.goaway_code();
                    break 'streams;
                }
                Ok(Ok(None)) | Ok(Err(_)) => break 'streams,
                _ => {}
            }
        }
        h.rst_stream(id, code::CANCEL).unwrap();
        if !h.flush_or_closed().await.unwrap() {
            break;
        }
    }
    let outcome = h.read_until_goaway_or_close(Duration::from_secs(10)).await;
    assert!(goaway.is_some() || outcome.goaway.is_some() || outcome.closed, "{outcome:?}");
    assert!(origin.requests() <= 60, "{} requests reached the origin", origin.requests());
    let (status, _, body) = send(proxy.addr(), "GET", "/", &[]).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"late"[..]), "other clients are still served");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_floods_are_cut_off() {
    let (proxy, origin) = h2_target("max-header-size \"16KiB\"").await;
    let mut h = RawH2::connect(proxy.addr()).await.unwrap();
    let id = h.next_stream_id();
    h.headers(id, &request_block("GET", "/", "x", &[]), true, false).unwrap();
    let mut junk = Vec::new();
    common::h2raw::hpack_literal("x-flood", &"a".repeat(1000), &mut junk);
    // 10 MB of header block that never ends.
    for _ in 0..10_000 {
        h.continuation(id, &junk, false).unwrap();
    }
    let _ = h.flush_or_closed().await;
    let outcome = h.read_until_goaway_or_close(Duration::from_secs(10)).await;
    assert!(outcome.goaway.is_some() || outcome.closed, "{outcome:?}");
    assert!(!outcome.timed_out, "{outcome:?}");
    assert_eq!(origin.requests(), 0);
    // Empty CONTINUATION frames (no bytes to count against the size limit) too.
    let mut h = RawH2::connect(proxy.addr()).await.unwrap();
    let id = h.next_stream_id();
    h.headers(id, &request_block("GET", "/", "x", &[]), true, false).unwrap();
    for _ in 0..100_000 {
        h.continuation(id, &[], false).unwrap();
    }
    let _ = h.flush_or_closed().await;
    let outcome = h.read_until_goaway_or_close(Duration::from_secs(10)).await;
    assert!(outcome.goaway.is_some() || outcome.closed, "{outcome:?}");
    still_serving(proxy.addr()).await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_you_reset_floods_get_goaway() {
    let (proxy, origin) = h2_target("http2 { max-local-resets 100; }").await;
    // Each stream is malformed by the client (no `:method`), which the server must answer
    // by resetting it itself: h2 counts those resets and ends the connection past
    // `max-local-resets`, before hyper or an origin sees any of them.
    let mut h = RawH2::connect(proxy.addr()).await.unwrap();
    let mut block = Vec::new();
    for (name, value) in [(":scheme", "http"), (":path", "/"), (":authority", "x")] {
        common::h2raw::hpack_literal(name, value, &mut block);
    }
    for _ in 0..5_000 {
        let id = h.next_stream_id();
        h.headers(id, &block, true, true).unwrap();
    }
    let _ = h.flush_or_closed().await;
    let outcome = h.read_until_goaway_or_close(Duration::from_secs(10)).await;
    assert_eq!(outcome.goaway, Some(code::ENHANCE_YOUR_CALM), "{outcome:?}");
    // GOAWAY names the last stream it processed: about the 100th (ids are odd).
    assert!(outcome.goaway_last_stream.is_some_and(|last| last <= 2 * 101 + 1), "{outcome:?}");
    assert_eq!(origin.requests(), 0);
    // A zero WINDOW_UPDATE on a stream: h2 ends the whole connection at the first one.
    let mut h = RawH2::connect(proxy.addr()).await.unwrap();
    let post = request_block("POST", "/", "x", &[]);
    for _ in 0..5_000 {
        let id = h.next_stream_id();
        h.headers(id, &post, false, true).unwrap();
        h.window_update(id, 0).unwrap();
    }
    let _ = h.flush_or_closed().await;
    let outcome = h.read_until_goaway_or_close(Duration::from_secs(10)).await;
    assert_eq!(outcome.goaway, Some(code::PROTOCOL_ERROR), "{outcome:?}");
    // DATA after END_STREAM is another stream error the server must reset.
    let mut h = RawH2::connect(proxy.addr()).await.unwrap();
    let get = request_block("GET", "/", "x", &[]);
    for _ in 0..5_000 {
        let id = h.next_stream_id();
        h.headers(id, &get, true, true).unwrap();
        h.data(id, b"x", true).unwrap();
    }
    let _ = h.flush_or_closed().await;
    let outcome = h.read_until_goaway_or_close(Duration::from_secs(10)).await;
    assert!(outcome.goaway.is_some() || outcome.closed, "{outcome:?}");
    still_serving(proxy.addr()).await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrent_stream_limit_is_announced_and_enforced() {
    let started = Arc::new(AtomicUsize::new(0));
    let counter = started.clone();
    let origin = Origin::start(
        false,
        Arc::new(move |_req| {
            counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                Response::new(full("slow"))
            })
        }),
    )
    .await;
    let proxy = Proxy::start(&config(origin.addr, "http2 { max-concurrent-streams 8; }", "")).await;
    let mut h = RawH2::connect(proxy.addr()).await.unwrap();
    h.flush().await.unwrap();
    // The server's SETTINGS announce the limit.
    let settings = loop {
        let f = h.read_frame().await.unwrap().expect("settings");
        if f.kind == kind::SETTINGS && !f.has_flag(flag::ACK) {
            break f;
        }
    };
    let announced = settings
        .payload
        .chunks(6)
        .find(|s| u16::from_be_bytes([s[0], s[1]]) == common::h2raw::setting::MAX_CONCURRENT_STREAMS)
        .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
    assert_eq!(announced, Some(8));
    h.settings_ack().unwrap();
    let block = request_block("GET", "/", "x", &[]);
    for _ in 0..20 {
        let id = h.next_stream_id();
        h.headers(id, &block, true, true).unwrap();
    }
    h.flush().await.unwrap();
    let outcome = h.read_until_goaway_or_close(Duration::from_secs(1)).await;
    assert!(
        outcome.reset_codes.get(&code::REFUSED_STREAM).copied().unwrap_or(0) >= 12 || outcome.goaway.is_some(),
        "{outcome:?}"
    );
    assert!(started.load(Ordering::SeqCst) <= 8, "{} streams served at once", started.load(Ordering::SeqCst));
    proxy.shutdown().await;
}

#[tokio::test]
async fn hardening_options_are_checked() {
    for (bad, expect) in [
        ("listener \"127.0.0.1:0\" { max-uri-length 10 }", "between 256 bytes"),
        ("listener \"127.0.0.1:0\" { http2 { max-streams 3 } }", "unknown node `max-streams`"),
        ("listener \"127.0.0.1:0\" { connection-rate \"fast\" }", "invalid rate"),
        ("listener \"127.0.0.1:0\" { proxy-protocol { timeout \"1s\" } }", "needs the addresses"),
        ("listener \"127.0.0.1:0\" { real-ip { trusted \"10.1.2.3/8\" } }", "write \"10.0.0.0/8\""),
        (
            "listener \"127.0.0.1:0\"\nsite \"*\" { max-body-size \"lots\"\n route \"/\" { respond 200 } }",
            "invalid size",
        ),
    ] {
        let err = sluice_config::parse("t.kdl", bad).unwrap_err().render(false);
        assert!(err.contains(expect), "{bad}\n{err}");
        assert!(err.contains("t.kdl:"), "{err}");
    }
}
