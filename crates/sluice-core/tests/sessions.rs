//! HTTP/1 session release: with the listener "crowded" (release_above = 0) every idle
//! moment ends hyper's session; requests, pipelining and keep-alive must not notice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use sluice_core::guard::GuardConfig;
use sluice_core::listener::{self, ListenerSettings};
use sluice_core::{shutdown, Body, ConnectionInfo, HttpService, Incoming};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Echo;

impl HttpService for Echo {
    type Body = Body;
    async fn call(&self, req: http::Request<Incoming>, conn: &Arc<ConnectionInfo>) -> http::Response<Body> {
        let mut resp = http::Response::new(Body::full(format!("path={}", req.uri().path())));
        resp.headers_mut().insert("x-session", conn.sessions().into());
        resp
    }
}

async fn start(release_above: usize) -> std::net::SocketAddr {
    let socket = listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let settings = Arc::new(ListenerSettings {
        max_connections: 100,
        guard: GuardConfig {
            max_header_size: 8192,
            header_read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(10),
            idle_release: Some(Duration::from_secs(1)),
            release_above,
            ..Default::default()
        },
        ..ListenerSettings::new(0, "t")
    });
    let (trigger, watcher) = shutdown::channel();
    tokio::spawn(async move {
        let _trigger = trigger;
        listener::serve(socket, settings, Arc::new(Echo), watcher).await.unwrap();
    });
    addr
}

async fn read_responses(s: &mut TcpStream, n: usize) -> String {
    let mut out = String::new();
    let mut buf = [0u8; 4096];
    while out.matches("HTTP/1.1 200 OK").count() < n || !out.ends_with(&format!("path=/{}", n - 1)) {
        let read = s.read(&mut buf).await.unwrap();
        assert!(read > 0, "closed early: {out}");
        out.push_str(&String::from_utf8_lossy(&buf[..read]));
    }
    out
}

#[tokio::test]
async fn released_sessions_keep_serving_sequential_and_pipelined_requests() {
    for release_above in [0, 1000] {
        let addr = start(release_above).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        for i in 0..3 {
            s.write_all(format!("GET /{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes()).await.unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).ends_with(&format!("path=/{i}")));
        }
        let mut p = TcpStream::connect(addr).await.unwrap();
        p.write_all(
            b"GET /0 HTTP/1.1\r\nHost: a\r\n\r\nGET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .await
        .unwrap();
        let out = read_responses(&mut p, 3).await;
        assert!(out.contains("path=/0") && out.contains("path=/1") && out.contains("path=/2"), "{out}");
    }
}

#[tokio::test]
async fn a_released_connection_still_rejects_smuggling_attempts() {
    let addr = start(0).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /0 HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).ends_with("path=/0"));
    s.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 400"), "{}", String::from_utf8_lossy(&out));
}

async fn get_session(s: &mut TcpStream, path: &str) -> u64 {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes()).await.unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(&format!("path={path}")) {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let line = got.lines().find(|l| l.starts_with("x-session: ")).unwrap();
    line["x-session: ".len()..].trim().parse().unwrap()
}

#[tokio::test]
async fn crowded_listeners_release_the_session_after_every_response() {
    let addr = start(0).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(get_session(&mut s, "/a").await, 1);
    assert_eq!(get_session(&mut s, "/b").await, 2);
    assert_eq!(get_session(&mut s, "/c").await, 3);
}

#[tokio::test(start_paused = true)]
async fn quiet_listeners_release_the_session_after_a_second_of_idleness() {
    let addr = start(1000).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(get_session(&mut s, "/a").await, 1);
    assert_eq!(get_session(&mut s, "/b").await, 1, "busy connections keep their session");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(get_session(&mut s, "/c").await, 2, "idle for 3 s: a new session");
    // The keep-alive timeout (10 s here) still closes the connection after release.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).await.unwrap_or(0), 0);
}
