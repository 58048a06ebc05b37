//! Timeouts and failures: each maps to its documented response, and connect failures are
//! retried once on another server. Time-dependent tests run on tokio's paused clock: the
//! clock jumps to the next timer whenever every task waits, so no test sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;

use common::*;
use http::Request;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An address where nothing listens.
async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A TCP server that accepts, reads the request, and then does `then` with the socket.
async fn raw_origin<F, Fut>(then: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let then = std::sync::Arc::new(then);
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let then = then.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                then(s).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refused_is_502() {
    let proxy = Proxy::start(&simple_config(&[dead_addr().await], "")).await;
    let (status, headers, body) = get(proxy.addr(), "/").await;
    assert_eq!(status, 502);
    assert_eq!(body, "502 Bad Gateway\n");
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_connect_is_retried_on_another_server() {
    let live = Origin::named("live").await;
    let proxy = Proxy::start(&simple_config(&[dead_addr().await, live.addr], "")).await;
    for _ in 0..6 {
        let (status, _, body) = get(proxy.addr(), "/").await;
        assert_eq!(status, 200);
        assert_eq!(body, "live");
    }
    assert_eq!(live.requests(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_before_the_response_is_502_and_not_retried() {
    let addr = raw_origin(|s| async move { drop(s) }).await;
    let proxy = Proxy::start(&simple_config(&[addr], "")).await;
    let (status, _, _) = get(proxy.addr(), "/").await;
    assert_eq!(status, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_the_origin_is_502() {
    let addr = raw_origin(|mut s| async move {
        let _ = s.write_all(b"NOT HTTP AT ALL\r\n\r\n").await;
    })
    .await;
    let proxy = Proxy::start(&simple_config(&[addr], "")).await;
    assert_eq!(get(proxy.addr(), "/").await.0, 502);
}

#[tokio::test(start_paused = true)]
async fn upstream_first_byte_timeout_is_504() {
    let addr = raw_origin(|s| async move {
        std::future::pending::<()>().await;
        drop(s);
    })
    .await;
    let proxy = Proxy::start(&simple_config(&[addr], "timeouts first-byte=\"5s\"")).await;
    let started = tokio::time::Instant::now();
    let (status, _, body) = get(proxy.addr(), "/").await;
    assert_eq!(status, 504);
    assert_eq!(body, "504 Gateway Timeout\n");
    assert!(started.elapsed() >= std::time::Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn upstream_read_idle_timeout_cuts_the_body() {
    let addr = raw_origin(|mut s| async move {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial").await;
        std::future::pending::<()>().await;
    })
    .await;
    let proxy = Proxy::start(&simple_config(&[addr], "timeouts read-idle=\"3s\"")).await;
    let mut client = h1_client(proxy.addr()).await;
    let resp = client.send_request(Request::get("/").header("host", "a.test").body(full("")).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200, "the head was already forwarded");
    let started = tokio::time::Instant::now();
    assert!(resp.into_body().collect().await.is_err(), "the body ends with an error, not silently short");
    assert!(started.elapsed() >= std::time::Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_route_is_404() {
    let origin = Origin::named("x").await;
    let config = format!(
        r#"
server {{ access-log "off" }}
listener "127.0.0.1:0"
upstream "o" {{ server "{}" }}
site "api.example" {{
    route "/api" {{ proxy "o" }}
}}
"#,
        origin.addr
    );
    let proxy = Proxy::start(&config).await;
    let (status, _, body) = get(proxy.addr(), "/").await;
    assert_eq!(status, 404, "no site matches example.test");
    assert_eq!(body, "404 Not Found\n");
    let mut c = h1_client(proxy.addr()).await;
    let resp =
        c.send_request(Request::get("/other").header("host", "api.example").body(full("")).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 404, "the site matches but no route does");
    assert_eq!(origin.requests(), 0);
}

#[tokio::test(start_paused = true)]
async fn slowloris_heads_are_cut_off_by_the_header_read_timeout() {
    let origin = Origin::named("x").await;
    let config = simple_config(&[origin.addr], "")
        .replace("listener \"127.0.0.1:0\"", "listener \"127.0.0.1:0\" { header-read-timeout \"10s\" }");
    let proxy = Proxy::start(&config).await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ").await.unwrap();
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0, "connection closed without a response");
    assert!(started.elapsed() >= std::time::Duration::from_secs(10));
    assert_eq!(origin.requests(), 0);
}

#[tokio::test(start_paused = true)]
async fn idle_keepalive_connections_are_closed() {
    let origin = Origin::named("x").await;
    let config = simple_config(&[origin.addr], "")
        .replace("listener \"127.0.0.1:0\"", "listener \"127.0.0.1:0\" { keepalive-timeout \"20s\" }");
    let proxy = Proxy::start(&config).await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"x") {
        let n = s.read(&mut buf).await.unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    let idle_since = tokio::time::Instant::now();
    let n = s.read(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0, "closed after the idle timeout");
    let idle = idle_since.elapsed();
    assert!(idle >= std::time::Duration::from_secs(20) && idle < std::time::Duration::from_secs(40), "{idle:?}");
}

#[tokio::test(start_paused = true)]
async fn a_slow_response_is_not_cut_by_the_keepalive_timeout() {
    let origin = Origin::start(
        false,
        std::sync::Arc::new(|_req| {
            Box::pin(async move {
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                http::Response::new(full("late but fine"))
            })
        }),
    )
    .await;
    let config = simple_config(&[origin.addr], "")
        .replace("listener \"127.0.0.1:0\"", "listener \"127.0.0.1:0\" { keepalive-timeout \"5s\" }");
    let proxy = Proxy::start(&config).await;
    let (status, _, body) = get(proxy.addr(), "/").await;
    assert_eq!(status, 200);
    assert_eq!(body, "late but fine");
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_released_its_session_and_still_serves_the_next_request() {
    let origin = Origin::named("again").await;
    let proxy = Proxy::start(&simple_config(&[origin.addr], "")).await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut buf = [0u8; 1024];
    for round in 0..3 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"again") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "round {round}: connection closed");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200 OK"), "round {round}");
        // Longer than the 1 s idle release, shorter than the 75 s keep-alive timeout.
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
    assert_eq!(origin.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_byte_timer_waits_for_a_slow_upload_to_finish() {
    // 10 bytes, one every 0.5 s: 5 s of upload against a 2 s first-byte timeout.
    let origin = Origin::start(
        false,
        std::sync::Arc::new(|req: Request<hyper::body::Incoming>| {
            Box::pin(async move { http::Response::new(full(format!("got {}", drain(req.into_body()).await))) })
        }),
    )
    .await;
    let proxy = Proxy::start(&simple_config(&[origin.addr], "timeouts first-byte=\"2s\"")).await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nConnection: close\r\n\r\n").await.unwrap();
    for _ in 0..10 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        s.write_all(b"x").await.unwrap();
    }
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("got 10"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_dies_after_its_head_never_yields_an_empty_reply() {
    let addr = raw_origin(|mut s| async move {
        let mut body = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec();
        body.extend_from_slice(&[b'a'; 500]);
        let _ = s.write_all(&body).await;
        drop(s);
    })
    .await;
    let proxy = Proxy::start(&simple_config(&[addr], "")).await;
    for i in 0..30 {
        let out = raw(proxy.addr(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 200"), "attempt {i}: {out:?}");
        assert!(out.ends_with(&"a".repeat(500)), "attempt {i}: the bytes that arrived are sent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_whose_origin_dies_mid_stream_ends_unavailable() {
    let addr = raw_origin(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/grpc\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n\0\0\0\0\x02hi\r\n")
            .await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        drop(s);
    })
    .await;
    let proxy = Proxy::start(&simple_config(&[addr], "")).await;
    let mut client = h2_client(proxy.addr()).await;
    let req = Request::post("http://example.test/pkg.Service/Method")
        .header("te", "trailers")
        .header("content-type", "application/grpc")
        .body(full(&b"\0\0\0\0\x02hi"[..]))
        .unwrap();
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.expect("the stream ends with trailers, not a reset");
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers["grpc-status"], "14", "UNAVAILABLE, as a direct client would see");
}
