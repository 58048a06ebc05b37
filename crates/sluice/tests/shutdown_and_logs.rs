//! Graceful shutdown of idle connections (HTTP/1.1 and HTTP/2 GOAWAY), and the access log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::sync::Arc;

use http::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_keepalive_and_sends_goaway() {
    let origin = Origin::named("x").await;
    let proxy = Proxy::start(&simple_config(&[origin.addr], "")).await;
    let addr = proxy.addr();

    // An idle HTTP/1.1 keep-alive connection that already served a request.
    let mut h1 = TcpStream::connect(addr).await.unwrap();
    h1.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let mut got = Vec::new();
    while !got.ends_with(b"x") {
        let n = h1.read(&mut buf).await.unwrap();
        got.extend_from_slice(&buf[..n]);
    }

    // An idle HTTP/2 connection.
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let h2_conn = tokio::spawn(conn);
    let resp = h2.send_request(Request::get("http://a/").body(full("")).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);

    assert!(proxy.shutdown().await, "everything drained within the grace period");
    assert_eq!(h1.read(&mut buf).await.unwrap(), 0, "idle HTTP/1.1 connection closed");
    h2_conn.await.unwrap().expect("HTTP/2 connection ended cleanly with GOAWAY");
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_have_the_documented_fields() {
    let origin = Origin::named("hello").await;
    let dir = std::env::temp_dir().join(format!("sluice-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (format, path) in [("json", dir.join("access.json")), ("text", dir.join("access.log"))] {
        let _ = std::fs::remove_file(&path);
        let config = simple_config(&[origin.addr], "").replace(
            "server { access-log \"off\" }",
            &format!("server {{ access-log \"{}\" format=\"{format}\" }}", path.display()),
        );
        let proxy = Proxy::start(&config).await;
        let mut c = h1_client(proxy.addr()).await;
        let req = Request::post("/upload?x=1").header("host", "logs.example").body(full("12345")).unwrap();
        let resp = c.send_request(req).await.unwrap();
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        http_body_util::BodyExt::collect(resp.into_body()).await.unwrap();
        let (status, _, _) = get(proxy.addr(), "/missing").await;
        assert_eq!(status, 200);
        assert!(proxy.shutdown().await);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let first = lines[0];
        if format == "json" {
            for field in [
                "\"time\":\"20",
                "\"client\":\"127.0.0.1:",
                "\"method\":\"POST\"",
                "\"host\":\"logs.example\"",
                "\"path\":\"/upload?x=1\"",
                "\"status\":200",
                "\"bytes_in\":5",
                "\"bytes_out\":5",
                &format!("\"upstream\":\"{}\"", origin.addr),
                "\"upstream_time_ms\":",
                "\"total_time_ms\":",
                &format!("\"request_id\":\"{id}\""),
                "\"trace_id\":\"",
            ] {
                assert!(first.contains(field), "{field} missing in {first}");
            }
            assert!(first.starts_with('{') && first.ends_with('}'));
        } else {
            assert!(first.starts_with("127.0.0.1 - - [20"), "{first}");
            assert!(first.contains("\"POST /upload?x=1 HTTP/1.1\" 200 5"), "{first}");
            assert!(first.contains(&format!("upstream={}", origin.addr)), "{first}");
            assert!(first.contains("bytes_in=5"), "{first}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cancelled_before_its_response_head_is_logged_once() {
    // The origin never answers; the client resets its HTTP/2 stream.
    let origin = Origin::start(
        false,
        Arc::new(|_req| {
            Box::pin(async move {
                std::future::pending::<()>().await;
                Response::new(full(""))
            })
        }),
    )
    .await;
    let path = std::env::temp_dir().join(format!("sluice-cancel-log-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let config = simple_config(&[origin.addr], "").replace(
        "server { access-log \"off\" }",
        &format!("server {{ access-log \"{}\" format=\"json\" }}", path.display()),
    );
    let proxy = Proxy::start(&config).await;
    let mut h2 = h2_client(proxy.addr()).await;
    let call = h2.send_request(Request::post("http://grpc.example/pkg.Svc/Call").body(full("x")).unwrap());
    until("the origin has the request", || origin.requests() == 1).await;
    drop(call);
    assert!(proxy.shutdown().await);
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains("\"status\":499") && lines[0].contains("client_gone"), "{}", lines[0]);
}
