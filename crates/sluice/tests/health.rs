//! Active health checks against real origins that fail on command: HTTP (status, body)
//! and TCP probes, the healthy/unhealthy thresholds, traffic leaving and coming back,
//! and what a group does when all its servers are down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::{Request, Response};

/// An origin answering `name`, whose `/healthz` answers 200 "ok" while `up` is true and 503
/// otherwise.
async fn toggled(name: &'static str, up: Arc<AtomicBool>) -> Origin {
    Origin::start(
        false,
        Arc::new(move |req: Request<hyper::body::Incoming>| {
            let up = up.clone();
            Box::pin(async move {
                if req.uri().path() == "/healthz" {
                    let ok = up.load(Ordering::SeqCst);
                    let mut r = Response::new(full(if ok { "ok" } else { "down" }));
                    if !ok {
                        *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    return r;
                }
                Response::new(full(name))
            })
        }),
    )
    .await
}

fn config(origins: &[SocketAddr], extra: &str) -> String {
    let servers: String = origins.iter().map(|a| format!("    server \"{a}\"\n")).collect();
    format!(
        "server {{ access-log \"off\" }}\nlistener \"127.0.0.1:0\"\nupstream \"origins\" {{\n{servers}{extra}\n}}\nsite \"*\" {{ route \"/\" {{ proxy \"origins\" }} }}\n"
    )
}

const FAST_CHECKS: &str =
    "interval \"30ms\"\n timeout \"1s\"\n jitter \"0s\"\n healthy-threshold 2\n unhealthy-threshold 2";

/// Waits (at most 10 s) until `cond` holds.
async fn bodies(addr: SocketAddr, n: usize) -> String {
    let mut out = String::new();
    for _ in 0..n {
        let (_, _, body) = get(addr, "/").await;
        out.push_str(std::str::from_utf8(&body).unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_check_takes_a_failing_origin_out_and_brings_it_back() {
    let a_up = Arc::new(AtomicBool::new(true));
    let a = toggled("a", a_up.clone()).await;
    let b = toggled("b", Arc::new(AtomicBool::new(true))).await;
    let checks = format!("    health-check {{\n http \"/healthz\" status=\"200\" body=\"ok\"\n {FAST_CHECKS}\n }}");
    let proxy = Proxy::start(&config(&[a.addr, b.addr], &checks)).await;
    let backend = proxy.server.as_ref().unwrap().upstreams()[0].backends()[0].clone();
    assert!(bodies(proxy.addr(), 4).await.contains('a'));
    until("a check ran", || backend.health().last_check().is_some()).await;

    a_up.store(false, Ordering::SeqCst);
    until("a is unhealthy", || !backend.health().checked_ok()).await;
    assert_eq!(bodies(proxy.addr(), 10).await, "bbbbbbbbbb");

    a_up.store(true, Ordering::SeqCst);
    until("a is healthy again", || backend.health().checked_ok()).await;
    assert!(bodies(proxy.addr(), 4).await.contains('a'));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_lacks_the_expected_text_fails_the_check() {
    let up = Arc::new(AtomicBool::new(true));
    let a = toggled("a", up).await;
    let checks = format!("    health-check {{\n http \"/healthz\" body=\"all good\"\n {FAST_CHECKS}\n }}");
    let proxy = Proxy::start(&config(&[a.addr], &checks)).await;
    let backend = proxy.server.as_ref().unwrap().upstreams()[0].backends()[0].clone();
    until("the body check fails", || !backend.health().checked_ok()).await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_server_is_down_the_group_fails_open_or_refuses() {
    // A port with nothing listening: the TCP check fails.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let checks = format!("    health-check {{\n tcp\n {FAST_CHECKS}\n }}");
    for (policy, expected) in [("refuse", 503), ("fail-open", 502)] {
        let text = config(&[dead], &format!("{checks}\n    when-all-down \"{policy}\""));
        let proxy = Proxy::start(&text).await;
        let backend = proxy.server.as_ref().unwrap().upstreams()[0].backends()[0].clone();
        until("the dead server is unhealthy", || !backend.health().checked_ok()).await;
        // Refuse answers 503 without trying; fail-open still tries it and reports the
        // connect failure as 502.
        assert_eq!(get(proxy.addr(), "/").await.0, expected, "{policy}");
        proxy.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_check_passes_for_a_listening_server() {
    let a = Origin::named("a").await;
    let checks = format!("    health-check {{\n tcp\n {FAST_CHECKS}\n }}");
    let proxy = Proxy::start(&config(&[a.addr], &checks)).await;
    let backend = proxy.server.as_ref().unwrap().upstreams()[0].backends()[0].clone();
    until("a check ran", || backend.health().last_check().is_some_and(|(_, ok)| ok)).await;
    assert!(backend.health().checked_ok());
    let (_, _, body) = get(proxy.addr(), "/").await;
    assert_eq!(&body[..], b"a");
    proxy.shutdown().await;
}

#[test]
fn health_check_mistakes_are_config_errors() {
    let base = |extra: &str| config(&["127.0.0.1:9".parse().unwrap()], extra);
    let err = sluice_config::parse("hc.kdl", &base("health-check { http \"/a\"; tcp; }")).unwrap_err().render(false);
    assert!(err.contains("either `http` or `tcp`"), "{err}");
    let err = sluice_config::parse("hc.kdl", &base("health-check { http \"/a\" status=\"300-200\"; }"))
        .unwrap_err()
        .render(false);
    assert!(err.contains("invalid status range `300-200`"), "{err}");
    let err = sluice_config::parse("hc.kdl", &base("health-check { http \"a\"; }")).unwrap_err().render(false);
    assert!(err.contains("must start with `/`"), "{err}");
    let ok =
        sluice_config::parse("hc.kdl", &base("health-check { http \"/h\" status=\"204\"; interval \"1s\"; }")).unwrap();
    let hc = ok.upstreams[0].health_check.as_ref().unwrap();
    assert_eq!(hc.interval, Duration::from_secs(1));
    assert_eq!(
        hc.probe,
        sluice_config::HealthProbe::Http {
            path: "/h".into(),
            status_min: 204,
            status_max: 204,
            body: None,
            host: None
        }
    );
}
