//! Downstream and upstream protocols end to end: keep-alive, chunked, 100-continue, HEAD,
//! h2c on the same port, upgrades, the shared pool, h2c upstreams, streaming, trailers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_shape_alternates_between_two_origins() {
    let a = Origin::named("hello from origin A\n").await;
    let b = Origin::named("hello from origin B\n").await;
    let proxy = Proxy::start(&simple_config(&[a.addr, b.addr], "")).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (status, headers, body) = get(proxy.addr(), "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["via"], "1.1 sluice");
        seen.push(String::from_utf8(body.to_vec()).unwrap());
    }
    assert_eq!(seen[0], seen[2]);
    assert_eq!(seen[1], seen[3]);
    assert_ne!(seen[0], seen[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_requests_share_client_and_upstream_connections() {
    let origin = Origin::named("ok").await;
    let proxy = Proxy::start(&simple_config(&[origin.addr], "")).await;
    let mut client = h1_client(proxy.addr()).await;
    for _ in 0..20 {
        client.ready().await.unwrap();
        let resp =
            client.send_request(Request::get("/").header("host", "a.test").body(full("")).unwrap()).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
    }
    // Sequential requests from different client connections reuse the pooled connection too.
    for _ in 0..5 {
        assert_eq!(get(proxy.addr(), "/").await.0, 200);
    }
    assert_eq!(origin.requests(), 25);
    assert_eq!(origin.connections(), 1, "the upstream connection is pooled and reused");
}

fn echo_handler() -> Handler {
    Arc::new(|req: Request<hyper::body::Incoming>| {
        Box::pin(async move {
            let te = req.headers().get("transfer-encoding").map(|v| v.to_str().unwrap().to_string());
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let mut resp = Response::new(full(body));
            if let Some(te) = te {
                resp.headers_mut().insert("x-origin-saw-te", te.parse().unwrap());
            }
            resp
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_request_bodies_are_forwarded() {
    let origin = Origin::start(false, echo_handler()).await;
    let proxy = Proxy::start(&simple_config(&[origin.addr], "")).await;
    let out = raw(
        proxy.addr(),
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(out.ends_with("hello world"), "{out}");
    assert!(out.contains("x-origin-saw-te: chunked"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let origin = Origin::start(false, echo_handler()).await;
    let proxy = Proxy::start(&simple_config(&[origin.addr], "")).await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue\r\n"));
    s.write_all(b"data").await.unwrap();
    let mut rest = vec![0u8; 4096];
    let mut got = String::new();
    while !got.ends_with("data") {
        let n = s.read(&mut rest).await.unwrap();
        assert!(n > 0, "connection closed early: {got}");
        got.push_str(&String::from_utf8_lossy(&rest[..n]));
    }
    assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
    assert!(origin.last_head().headers.get("expect").is_none(), "Expect is handled by the proxy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_responses_keep_length_and_have_no_body() {
    let origin = Origin::named("twelve bytes").await;
    let proxy = Proxy::start(&simple_config(&[origin.addr], "")).await;
    let out = raw(proxy.addr(), b"HEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(out.contains("content-length: 12"), "{out}");
    assert!(out.ends_with("\r\n\r\n"), "no body after the head: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_works_on_the_http1_port() {
    let origin = Origin::named("over h2").await;
    let proxy = Proxy::start(&simple_config(&[origin.addr], "")).await;
    let mut client = h2_client(proxy.addr()).await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let req = Request::get(format!("http://example.test/{}", 1)).body(full("")).unwrap();
        let fut = client.send_request(req);
        tasks.push(tokio::spawn(async move {
            let resp = fut.await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.headers()["via"], "1.1 sluice");
            resp.into_body().collect().await.unwrap().to_bytes()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), "over h2");
    }
    let head = origin.last_head();
    assert_eq!(head.headers["host"], "example.test", "the :authority becomes Host for HTTP/1.1 origins");
    assert_eq!(head.headers["via"], "2 sluice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upstreams_are_multiplexed_on_one_connection() {
    let origin = Origin::start(
        true,
        Arc::new(|req: Request<hyper::body::Incoming>| {
            Box::pin(async move {
                assert_eq!(req.version(), http::Version::HTTP_2);
                Response::new(full("h2 origin"))
            })
        }),
    )
    .await;
    let proxy = Proxy::start(&simple_config(&[origin.addr], "protocol \"h2c\"")).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let addr = proxy.addr();
        tasks.push(tokio::spawn(async move { get(addr, "/").await }));
    }
    for t in tasks {
        let (status, _, body) = t.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, "h2 origin");
    }
    assert_eq!(origin.requests(), 20);
    assert_eq!(origin.connections(), 1);
    assert_eq!(origin.last_head().headers.get("host"), None, "h2 carries the host in :authority");
    assert_eq!(origin.last_head().uri.authority().unwrap().as_str(), "example.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_style_trailers_pass_through_h2_end_to_end() {
    let origin = Origin::start(
        true,
        Arc::new(|req: Request<hyper::body::Incoming>| {
            Box::pin(async move {
                assert_eq!(req.headers()["te"], "trailers");
                let collected = req.into_body().collect().await.unwrap();
                let req_trailers = collected.trailers().cloned().expect("request trailers reach the origin");
                let data = collected.to_bytes();
                let echoed = req_trailers.get("x-client-trailer").unwrap().clone();
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", "0".parse().unwrap());
                trailers.insert("x-echo", echoed);
                let body = frames(vec![Frame::data(data), Frame::trailers(trailers)]);
                let mut resp = Response::new(body);
                resp.headers_mut().insert("content-type", "application/grpc".parse().unwrap());
                resp
            })
        }),
    )
    .await;
    let proxy = Proxy::start(&simple_config(&[origin.addr], "protocol \"h2c\"")).await;
    let mut client = h2_client(proxy.addr()).await;
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-client-trailer", "abc".parse().unwrap());
    let body = frames(vec![Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi")), Frame::trailers(trailers)]);
    let req = Request::post("http://example.test/pkg.Service/Method")
        .header("te", "trailers")
        .header("content-type", "application/grpc")
        .body(body)
        .unwrap();
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("response trailers reach the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-echo"], "abc");
    assert_eq!(collected.to_bytes(), &b"\0\0\0\0\x02hi"[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_are_tunnelled_both_ways() {
    let origin = Origin::start(
        false,
        Arc::new(|mut req: Request<hyper::body::Incoming>| {
            Box::pin(async move {
                assert_eq!(req.headers()["upgrade"], "websocket");
                let on = hyper::upgrade::on(&mut req);
                tokio::spawn(async move {
                    let upgraded = on.await.unwrap();
                    let mut io = hyper_util::rt::TokioIo::new(upgraded);
                    let mut buf = [0u8; 5];
                    io.read_exact(&mut buf).await.unwrap();
                    assert_eq!(&buf, b"ping!");
                    io.write_all(b"pong!").await.unwrap();
                });
                let mut resp = Response::new(full(""));
                *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                resp.headers_mut().insert("upgrade", "websocket".parse().unwrap());
                resp.headers_mut().insert("connection", "upgrade".parse().unwrap());
                resp
            })
        }),
    )
    .await;
    let proxy = Proxy::start(&simple_config(&[origin.addr], "")).await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 Switching Protocols"), "{head}");
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head}");
    s.write_all(b"ping!").await.unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways_with_bounded_memory() {
    const LEN: u64 = 256 * 1024 * 1024;
    let origin = Origin::start(
        false,
        Arc::new(|req: Request<hyper::body::Incoming>| {
            Box::pin(async move {
                if req.method() == http::Method::PUT {
                    let n = drain(req.into_body()).await;
                    Response::new(full(n.to_string()))
                } else {
                    Response::new(generated(LEN))
                }
            })
        }),
    )
    .await;
    let proxy = Proxy::start(&simple_config(&[origin.addr], "")).await;
    let before = rss_kib();
    let mut client = h1_client(proxy.addr()).await;
    let resp =
        client.send_request(Request::get("/big").header("host", "a.test").body(full("")).unwrap()).await.unwrap();
    assert_eq!(drain(resp.into_body()).await, LEN);
    client.ready().await.unwrap();
    let resp =
        client.send_request(Request::put("/big").header("host", "a.test").body(generated(LEN)).unwrap()).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, LEN.to_string());
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    // Client, proxy and origin all live in this process: 512 MiB went through it.
    assert!(grown_mib < 64, "RSS grew by {grown_mib} MiB while streaming");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_client_bodies_reach_http1_origins() {
    let origin = Origin::start(false, echo_handler()).await;
    let proxy = Proxy::start(&simple_config(&[origin.addr], "")).await;
    let mut client = h2_client(proxy.addr()).await;
    let req = Request::post("http://example.test/upload").body(full("h2 body to an h1 origin")).unwrap();
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "h2 body to an h1 origin");
    assert_eq!(origin.last_head().version, http::Version::HTTP_11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodiless_responses_return_their_connection_to_the_pool() {
    let origin = Origin::start(
        false,
        Arc::new(|req: Request<hyper::body::Incoming>| {
            Box::pin(async move {
                let mut resp = Response::new(full(""));
                if req.uri().path() == "/204" {
                    *resp.status_mut() = StatusCode::NO_CONTENT;
                } else if req.uri().path() == "/304" {
                    *resp.status_mut() = StatusCode::NOT_MODIFIED;
                }
                resp
            })
        }),
    )
    .await;
    let proxy = Proxy::start(&simple_config(&[origin.addr], "")).await;
    let mut client = h1_client(proxy.addr()).await;
    for (method, path, status) in
        [("HEAD", "/", 200), ("GET", "/204", 204), ("GET", "/304", 304), ("GET", "/", 200), ("HEAD", "/", 200)]
    {
        client.ready().await.unwrap();
        let req = Request::builder().method(method).uri(path).header("host", "a.test").body(full("")).unwrap();
        let resp = client.send_request(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{method} {path}");
        resp.into_body().collect().await.unwrap();
    }
    assert_eq!(origin.requests(), 5);
    assert_eq!(origin.connections(), 1, "every bodiless response returned its connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnels_keep_working_through_the_drain_and_are_waited_for() {
    let origin = Origin::start(
        false,
        Arc::new(|mut req: Request<hyper::body::Incoming>| {
            Box::pin(async move {
                let on = hyper::upgrade::on(&mut req);
                tokio::spawn(async move {
                    // Echo until the client closes.
                    let mut io = hyper_util::rt::TokioIo::new(on.await.unwrap());
                    let mut buf = [0u8; 64];
                    loop {
                        match io.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if io.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
                let mut resp = Response::new(full(""));
                *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                resp.headers_mut().insert("upgrade", "websocket".parse().unwrap());
                resp.headers_mut().insert("connection", "upgrade".parse().unwrap());
                resp
            })
        }),
    )
    .await;
    let config =
        simple_config(&[origin.addr], "").replace("access-log \"off\"", "access-log \"off\"\nshutdown-grace \"20s\"");
    let proxy = Proxy::start(&config).await;
    let addr = proxy.addr();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));

    // Shut down while the tunnel is open: the drain waits for it.
    let shutdown = tokio::spawn(proxy.shutdown());
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(refused, "no new connections during the drain");
    let mut shutdown = shutdown;
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(500), &mut shutdown).await.is_err(),
        "the open tunnel holds the drain"
    );
    s.write_all(b"still there?").await.unwrap();
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still there?", "the tunnel works during the grace period");
    drop(s);
    assert!(shutdown.await.unwrap(), "drained in time once the tunnel closed");
}

/// An h2c client that accepts header blocks up to 1 MiB (the default is 16 KiB).
async fn roomy_h2_client(addr: std::net::SocketAddr) -> hyper::client::conn::http2::SendRequest<OriginBody> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .max_header_list_size(1 << 20)
        .handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_grpc_trailers_and_heads_pass_whole_or_fail_visibly() {
    // The origin sends a head field and a trailer field of the size the path asks for.
    let origin = Origin::start(
        true,
        Arc::new(|req: Request<hyper::body::Incoming>| {
            Box::pin(async move {
                let kib: usize = req.uri().path().trim_start_matches('/').parse().unwrap();
                let big = "t".repeat(kib * 1024);
                let mut trailers = http::HeaderMap::new();
                trailers.insert("x-big", big.parse().unwrap());
                trailers.insert("grpc-status", "0".parse().unwrap());
                let body = frames(vec![Frame::data(Bytes::from_static(b"\0\0\0\0\x00")), Frame::trailers(trailers)]);
                let mut resp = Response::new(body);
                resp.headers_mut().insert("content-type", "application/grpc".parse().unwrap());
                if req.headers().contains_key("x-big-head") {
                    resp.headers_mut().insert("x-big-head", big.parse().unwrap());
                }
                resp
            })
        }),
    )
    .await;
    let proxy = Proxy::start(&simple_config(&[origin.addr], "protocol \"h2c\"")).await;
    let mut client = roomy_h2_client(proxy.addr()).await;
    let call = |kib: usize, big_head: bool| {
        let mut req = Request::post(format!("http://example.test/{kib}"))
            .header("te", "trailers")
            .header("content-type", "application/grpc");
        if big_head {
            req = req.header("x-big-head", "1");
        }
        req.body(full(&b"\0\0\0\0\x00"[..])).unwrap()
    };
    // 20 KiB of trailers (over h2's 16 KiB default): every field arrives.
    let resp = client.send_request(call(20, false)).await.unwrap();
    let trailers = resp.into_body().collect().await.unwrap().trailers().cloned().unwrap();
    assert_eq!(trailers["x-big"].len(), 20 * 1024);
    assert_eq!(trailers["grpc-status"], "0");
    // 100 KiB (over max-header-size): not cut silently, the call fails.
    let resp = client.send_request(call(100, false)).await.unwrap();
    let trailers = resp.into_body().collect().await.unwrap().trailers().cloned().unwrap();
    assert_eq!(trailers["grpc-status"], "13", "{trailers:?}");
    assert!(trailers.get("x-big").is_none());
    // A 20 KiB response head is passed (it used to be a 502); 100 KiB is a 502.
    let resp = client.send_request(call(20, true)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-big-head"].len(), 20 * 1024);
    let resp = client.send_request(call(100, true)).await.unwrap();
    assert_eq!(resp.status(), 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_deadlines_and_streaming_routes_replace_the_upstream_timeouts() {
    // The origin waits 1.5 s before its head, and 1.5 s more before the last message.
    let origin = Origin::start(
        true,
        Arc::new(|_req: Request<hyper::body::Incoming>| {
            Box::pin(async move {
                tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
                let (tx, rx) = tokio::sync::mpsc::channel::<Frame<Bytes>>(2);
                tokio::spawn(async move {
                    let _ = tx.send(Frame::data(Bytes::from_static(b"\0\0\0\0\x00"))).await;
                    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    let _ = tx.send(Frame::trailers(trailers)).await;
                });
                let mut resp = Response::new(channel_body(rx));
                resp.headers_mut().insert("content-type", "application/grpc".parse().unwrap());
                resp
            })
        }),
    )
    .await;
    let config = simple_config(&[origin.addr], "protocol \"h2c\"\n    timeouts first-byte=\"1s\" read-idle=\"1s\"")
        .replace(
            "route \"/\" { proxy \"origins\" }",
            "route \"/stream\" { proxy \"origins\" streaming=#true }\n    route \"/capped\" { proxy \"origins\" grpc-timeout-max=\"1s\" }\n    route \"/\" { proxy \"origins\" grpc-timeout-max=\"30s\" }",
        );
    let proxy = Proxy::start(&config).await;
    let mut client = h2_client(proxy.addr()).await;
    let call = |path: &str, deadline: Option<&str>| {
        let mut req = Request::post(format!("http://example.test{path}"))
            .header("te", "trailers")
            .header("content-type", "application/grpc");
        if let Some(d) = deadline {
            req = req.header("grpc-timeout", d);
        }
        req.body(full(&b"\0\0\0\0\x00"[..])).unwrap()
    };
    // The group's timeouts alone: the slow head is a 504.
    let resp = client.send_request(call("/pkg.Svc/Call", None)).await.unwrap();
    assert_eq!(resp.status(), 504);
    // The client's deadline allows it: the whole call passes, quiet gap included.
    let resp = client.send_request(call("/pkg.Svc/Call", Some("10S"))).await.unwrap();
    assert_eq!(resp.status(), 200);
    let trailers = resp.into_body().collect().await.unwrap().trailers().cloned().unwrap();
    assert_eq!(trailers["grpc-status"], "0");
    // The deadline counts only up to the route's grpc-timeout-max (1 s here).
    let resp = client.send_request(call("/capped/Call", Some("10S"))).await.unwrap();
    assert_eq!(resp.status(), 504);
    // A streaming route: no first-byte or idle timeout at all.
    let resp = client.send_request(call("/stream/Call", None)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let trailers = resp.into_body().collect().await.unwrap().trailers().cloned().unwrap();
    assert_eq!(trailers["grpc-status"], "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_groups_max_header_size_bounds_response_heads() {
    let origin = Origin::start(
        false,
        Arc::new(|req: Request<hyper::body::Incoming>| {
            Box::pin(async move {
                let kib: usize = req.uri().path().trim_start_matches('/').parse().unwrap();
                let mut resp = Response::new(full("ok"));
                resp.headers_mut().insert("x-big", "h".repeat(kib * 1024).parse().unwrap());
                resp
            })
        }),
    )
    .await;
    let proxy = Proxy::start(&simple_config(&[origin.addr], "max-header-size \"16KiB\"")).await;
    assert_eq!(get(proxy.addr(), "/10").await.0, 200);
    assert_eq!(get(proxy.addr(), "/20").await.0, 502);
}
