//! What the proxy must refuse to forward, over real sockets (issue 15): Host rules (two,
//! none, invalid, the absolute form's authority), Transfer-Encoding rules, TRACE, HTTP/2
//! field rules (whitespace, upper case, connection-specific fields, `te`, pseudo-headers,
//! `host` against `:authority`), the cache key's port, GET bodies, fragments, underscore
//! twins of identity headers, duplicate credentials, the h2c preface and the WebSocket
//! close. Each test is named after what broke.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::h2raw::{code, hpack_literal, kind, request_block, RawH2};
use common::*;
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `admin.example` is blocked at the edge; everything else is proxied to `origin`.
fn edge_config(origin: SocketAddr, listener: &str) -> String {
    format!(
        r#"
server {{ access-log "off" }}
listener "127.0.0.1:0" {{
{listener}
}}
upstream "origin" {{ server "{origin}" }}
site "admin.example" {{
    route "/" {{ respond 403 "blocked" }}
}}
site "*" {{
    route "/traced" {{
        methods "GET" "TRACE"
        proxy "origin"
    }}
    route "/" {{ proxy "origin" }}
}}
"#
    )
}

/// An origin that answers with the Host it saw and the length of the body it read.
async fn echo_origin() -> Origin {
    Origin::start(
        false,
        Arc::new(|req: Request<hyper::body::Incoming>| {
            Box::pin(async move {
                let host = req.headers().get("host").map(|h| h.to_str().unwrap().to_owned()).unwrap_or_default();
                let n = drain(req.into_body()).await;
                let mut r = Response::new(full(format!("host={host} body={n}")));
                r.headers_mut().insert("cache-control", "max-age=60".parse().unwrap());
                r
            })
        }),
    )
    .await
}

fn status_of(answer: &str) -> &str {
    answer.get(9..12).unwrap_or(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_headers_are_refused_instead_of_routed_by_the_first() {
    let origin = echo_origin().await;
    let proxy = Proxy::start(&edge_config(origin.addr, "")).await;
    let answer = raw(proxy.addr(), b"GET /x HTTP/1.1\r\nHost: public.example\r\nHost: admin.example\r\n\r\n").await;
    assert_eq!(status_of(&answer), "400", "{answer}");
    assert_eq!(origin.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_host_is_refused() {
    let origin = echo_origin().await;
    let proxy = Proxy::start(&edge_config(origin.addr, "")).await;
    let answer = raw(proxy.addr(), b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(status_of(&answer), "400", "{answer}");
    let answer = raw(proxy.addr(), b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello").await;
    assert_eq!(status_of(&answer), "400", "{answer}");
    assert_eq!(origin.requests(), 0);
    // HTTP/1.0 may leave Host out.
    let answer = raw(proxy.addr(), b"GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(status_of(&answer), "200", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_host_is_refused_not_forwarded() {
    let origin = echo_origin().await;
    let proxy = Proxy::start(&edge_config(origin.addr, "")).await;
    for host in ["evil.example/x", "a b", "a:99999", "[::1", "a\\b", ""] {
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let answer = raw(proxy.addr(), request.as_bytes()).await;
        assert_eq!(status_of(&answer), "400", "Host {host:?}: {answer}");
    }
    assert_eq!(origin.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_absolute_form_authority_decides_routing_and_host() {
    let origin = echo_origin().await;
    let proxy = Proxy::start(&edge_config(origin.addr, "")).await;
    // The blocked site cannot be reached by naming another one in Host...
    let answer = raw(
        proxy.addr(),
        b"GET http://admin.example/abs HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), "403", "{answer}");
    // ...and the origin is sent the target's authority, not a silently dropped one.
    let answer =
        raw(proxy.addr(), b"GET http://Other.example/abs HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&answer), "200", "{answer}");
    assert!(answer.ends_with("host=other.example body=0"), "{answer}");
    let head = origin.last_head();
    assert_eq!(head.uri.path(), "/abs");
    assert_eq!(head.headers.get_all("host").iter().count(), 1);
    assert_eq!(head.headers["x-forwarded-host"], "other.example");
    // Userinfo and other schemes are refused.
    for target in ["http://user@other.example/", "ftp://other.example/"] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n");
        let answer = raw(proxy.addr(), request.as_bytes()).await;
        assert_eq!(status_of(&answer), "400", "{target}: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragment_in_the_target_is_refused_not_forwarded_as_an_empty_target() {
    let origin = echo_origin().await;
    let proxy = Proxy::start(&edge_config(origin.addr, "")).await;
    for request in
        ["GET http://127.0.0.1:18090#/admin HTTP/1.1\r\nHost: a\r\n\r\n", "GET /x#/admin HTTP/1.1\r\nHost: a\r\n\r\n"]
    {
        let answer = raw(proxy.addr(), request.as_bytes()).await;
        assert_eq!(status_of(&answer), "400", "{request:?}: {answer}");
    }
    assert_eq!(origin.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_or_odd_transfer_encoding_is_refused() {
    let origin = echo_origin().await;
    let proxy = Proxy::start(&edge_config(origin.addr, "")).await;
    let body = "5\r\nhello\r\n0\r\n\r\n";
    for (te, want) in [
        ("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "400"),
        ("Transfer-Encoding: ,chunked\r\n", "400"),
        ("Transfer-Encoding: chunked, chunked\r\n", "400"),
        ("Transfer-Encoding: chunked;ext=1\r\n", "400"),
        ("Transfer-Encoding: gzip, chunked\r\n", "501"),
    ] {
        let request = format!("POST / HTTP/1.1\r\nHost: a\r\n{te}\r\n{body}");
        let answer = raw(proxy.addr(), request.as_bytes()).await;
        assert_eq!(status_of(&answer), want, "{te:?}: {answer}");
        assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    }
    let answer = raw(proxy.addr(), b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").await;
    assert_eq!(status_of(&answer), "400", "HTTP/1.0 with Transfer-Encoding: {answer}");
    assert_eq!(origin.requests(), 0);
    // The one accepted form still works.
    let request =
        format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}");
    let answer = raw(proxy.addr(), request.as_bytes()).await;
    assert!(answer.ends_with("body=5"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_is_refused_unless_the_route_names_it() {
    let origin = echo_origin().await;
    let proxy = Proxy::start(&edge_config(origin.addr, "")).await;
    let answer =
        raw(proxy.addr(), b"TRACE / HTTP/1.1\r\nHost: a\r\nCookie: session=secret\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&answer), "405", "{answer}");
    assert_eq!(origin.requests(), 0);
    let answer = raw(proxy.addr(), b"TRACE /traced HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&answer), "200", "{answer}");
    assert_eq!(origin.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_with_a_chunked_body_keeps_its_body() {
    let origin = echo_origin().await;
    let proxy = Proxy::start(&edge_config(origin.addr, "")).await;
    let answer = raw(
        proxy.addr(),
        b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.ends_with("body=5"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_twins_of_identity_headers_are_dropped_unless_allowed() {
    let origin = echo_origin().await;
    let proxy = Proxy::start(&edge_config(origin.addr, "")).await;
    let (status, _, _) = send(proxy.addr(), "GET", "/", &[("x_user_id", "admin"), ("x-user-id", "alice")]).await;
    assert_eq!(status, 200);
    let head = origin.last_head();
    assert!(head.headers.get("x_user_id").is_none());
    assert_eq!(head.headers["x-user-id"], "alice");
    let allowing = Proxy::start(&edge_config(origin.addr, "underscores-in-headers #true")).await;
    send(allowing.addr(), "GET", "/", &[("x_user_id", "admin")]).await;
    assert_eq!(origin.last_head().headers["x_user_id"], "admin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_credentials_are_refused() {
    let origin = echo_origin().await;
    let proxy = Proxy::start(&edge_config(origin.addr, "")).await;
    let answer = raw(
        proxy.addr(),
        b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Basic YTpi\r\nAuthorization: Basic Yzpk\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), "400", "{answer}");
    assert_eq!(origin.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_key_holds_the_port_the_origin_is_sent() {
    let origin = echo_origin().await;
    let config = format!(
        r#"
server {{ access-log "off" }}
listener "127.0.0.1:0"
upstream "origin" {{ server "{}" }}
site "*" {{
    cache
    route "/" {{ proxy "origin" }}
}}
"#,
        origin.addr
    );
    let proxy = Proxy::start(&config).await;
    let addr = proxy.addr();
    let get = |host: &'static str| async move {
        let mut c = h1_client(addr).await;
        let req = Request::get("/x1").header("host", host).body(full("")).unwrap();
        let resp = c.send_request(req).await.unwrap();
        String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    };
    assert_eq!(get("victim.example:1337").await, "host=victim.example:1337 body=0");
    assert_eq!(get("victim.example").await, "host=victim.example body=0");
    // Case is not a second key: the host is lower-cased before keying and forwarding.
    assert_eq!(get("VICTIM.example").await, "host=victim.example body=0");
    assert_eq!(origin.requests(), 2);
}

/// Sends one request block on a raw h2c connection; answers whether the stream was reset
/// (with which code) or answered (with the first byte of its HPACK status, 0x8c for 400).
async fn h2_verdict(addr: SocketAddr, block: &[u8]) -> String {
    let mut h2 = RawH2::connect(addr).await.unwrap();
    let id = h2.next_stream_id();
    h2.headers(id, block, true, true).unwrap();
    h2.flush().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let frame = match tokio::time::timeout_at(deadline, h2.read_frame()).await {
            Ok(Ok(Some(f))) => f,
            other => return format!("no answer: {other:?}"),
        };
        if frame.stream_id != id {
            if frame.is_goaway() {
                return format!("goaway {}", code::name(frame.goaway_code().unwrap_or(0)));
            }
            continue;
        }
        if frame.is_rst() {
            return format!("reset {}", code::name(frame.rst_code().unwrap_or(0)));
        }
        if frame.kind == kind::HEADERS {
            return match frame.payload.first() {
                Some(0x8c) => "400".to_owned(),
                Some(0x88) => "200".to_owned(),
                other => format!("status byte {other:?}"),
            };
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_that_break_the_field_rules_are_refused() {
    let origin = echo_origin().await;
    let proxy = Proxy::start(&edge_config(origin.addr, "")).await;
    let addr = proxy.addr();
    assert_eq!(h2_verdict(addr, &request_block("GET", "/", "a", &[("test1", "ok")])).await, "200");
    let before = origin.requests();
    // RFC 9113 8.2.1: leading or trailing whitespace.
    assert_eq!(h2_verdict(addr, &request_block("GET", "/", "a", &[("test1", "\ta\t")])).await, "400");
    assert_eq!(h2_verdict(addr, &request_block("GET", "/", "a", &[("test1", "a ")])).await, "400");
    // RFC 9113 8.3.1: a host that names another authority.
    assert_eq!(h2_verdict(addr, &request_block("GET", "/", "secure.test", &[("host", "other")])).await, "400");
    // Upper-case names, connection-specific fields, te other than trailers.
    for (name, value) in [("Test1", "a"), ("connection", "close"), ("transfer-encoding", "chunked"), ("te", "gzip")] {
        let verdict = h2_verdict(addr, &request_block("GET", "/", "a", &[(name, value)])).await;
        assert!(verdict.starts_with("reset") || verdict.starts_with("goaway"), "{name}: {verdict}");
    }
    // Pseudo-headers after a regular field, repeated, or missing.
    let mut late = request_block("GET", "/", "a", &[("x", "1")]);
    hpack_literal(":path", "/again", &mut late);
    let mut missing = Vec::new();
    hpack_literal(":method", "GET", &mut missing);
    hpack_literal(":scheme", "http", &mut missing);
    hpack_literal(":authority", "a", &mut missing);
    for block in [late, missing] {
        let verdict = h2_verdict(addr, &block).await;
        assert!(verdict.starts_with("reset") || verdict.starts_with("goaway"), "{verdict}");
    }
    assert_eq!(origin.requests(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_h2c_preface_gets_a_goaway_not_an_http1_400() {
    let origin = echo_origin().await;
    let proxy = Proxy::start(&edge_config(origin.addr, "")).await;
    let answer = raw_bytes(proxy.addr(), b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n").await;
    assert_eq!(answer, [0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], "{:?}", String::from_utf8_lossy(&answer));
}

async fn raw_bytes(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_tunnel_passes_the_origins_close_on() {
    // An origin that accepts the upgrade, says `bye` and closes its side.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            head.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nbye")
            .await
            .unwrap();
        s.shutdown().await.unwrap();
        // Keep reading until the proxy passes the client's close on.
        while s.read(&mut buf).await.unwrap_or(0) > 0 {}
    });
    let proxy = Proxy::start(&edge_config(origin, "")).await;
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client
        .write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(read.is_ok(), "no EOF after the origin closed; got {text:?}");
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(text.ends_with("bye"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_that_spell_a_protected_route_differently_cannot_walk_around_it() {
    let origin = echo_origin().await;
    let config = |listener: &str| {
        format!(
            r#"
server {{ access-log "off" }}
listener "127.0.0.1:0" {{
{listener}
}}
upstream "origin" {{ server "{}" }}
site "*" {{
    route "/admin" {{ respond 403 "blocked" }}
    route "/" {{ proxy "origin" }}
}}
"#,
            origin.addr
        )
    };
    let status = |addr: SocketAddr, path: &'static str| async move {
        let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        status_of(&raw(addr, request.as_bytes()).await).to_owned()
    };
    let strict = Proxy::start(&config("")).await;
    for (path, want) in [
        ("/admin;x", "403"),
        ("/admin;x/y", "403"),
        ("/admin%2f", "400"),
        ("/%2fadmin", "400"),
        ("/x/..%2fadmin", "400"),
        ("/\\admin", "400"),
        ("/%5cadmin", "400"),
        ("/admin%00", "400"),
        ("/ADMIN", "200"),
    ] {
        assert_eq!(status(strict.addr(), path).await, want, "{path}");
    }
    let decoding = Proxy::start(&config("escaped-slashes \"decode\"\ncase-insensitive-paths #true")).await;
    for (path, want) in [
        ("/admin%2f", "403"),
        ("/%2fadmin", "403"),
        ("/x/..%2fadmin", "403"),
        ("/\\admin", "403"),
        ("/ADMIN", "403"),
        ("/admin%00", "400"),
    ] {
        assert_eq!(status(decoding.addr(), path).await, want, "{path}");
    }
    let keeping = Proxy::start(&config("escaped-slashes \"keep\"")).await;
    assert_eq!(status(keeping.addr(), "/%2fadmin").await, "200");
    assert_eq!(origin.last_head().uri.path(), "/%2Fadmin", "forwarded as sent (escape upper-cased)");
}
