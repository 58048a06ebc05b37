//! Load-balancing algorithms chosen in the config, observed through the proxy with real
//! origins: order (round-robin, smooth weighted), stickiness (Ketama, Maglev by header,
//! cookie, client IP), and load awareness (least requests, peak-EWMA).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::BodyExt;

/// A config balancing over `origins` (with weights) with the given `balance` line.
fn config(origins: &[(SocketAddr, u32)], balance: &str) -> String {
    let servers: String = origins.iter().map(|(a, w)| format!("    server \"{a}\" weight={w}\n")).collect();
    format!(
        "server {{ access-log \"off\" }}\nlistener \"127.0.0.1:0\"\nupstream \"origins\" {{\n{servers}    {balance}\n}}\nsite \"*\" {{ route \"/\" {{ proxy \"origins\" }} }}\n"
    )
}

async fn get_with(addr: SocketAddr, path: &str, header: Option<(&str, &str)>) -> Bytes {
    let mut c = h1_client(addr).await;
    let mut req = Request::get(path).header("host", "lb.test");
    if let Some((k, v)) = header {
        req = req.header(k, v);
    }
    let resp = c.send_request(req.body(full("")).unwrap()).await.unwrap();
    resp.into_body().collect().await.unwrap().to_bytes()
}

async fn sequence(addr: SocketAddr, n: usize) -> String {
    let mut out = String::new();
    for _ in 0..n {
        out.push_str(std::str::from_utf8(&get_with(addr, "/", None).await).unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_follows_nginx_and_plain_round_robin_ignores_weights() {
    let (a, b, c) = (Origin::named("a").await, Origin::named("b").await, Origin::named("c").await);
    let origins = [(a.addr, 5), (b.addr, 1), (c.addr, 1)];
    let proxy = Proxy::start(&config(&origins, "balance \"weighted-round-robin\"")).await;
    assert_eq!(sequence(proxy.addr(), 14).await, "aabacaaaabacaa");
    proxy.shutdown().await;
    let proxy = Proxy::start(&config(&origins, "balance \"round-robin\"")).await;
    assert_eq!(sequence(proxy.addr(), 6).await, "abcabc");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_spreads_requests_by_weight() {
    let (a, b) = (Origin::named("a").await, Origin::named("b").await);
    let proxy = Proxy::start(&config(&[(a.addr, 3), (b.addr, 1)], "balance \"random\"")).await;
    let s = sequence(proxy.addr(), 400).await;
    let share = s.matches('a').count() as f64 / 400.0;
    assert!((0.6..0.9).contains(&share), "a got {share} of the requests, want about 0.75");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hashing_keeps_each_key_on_one_origin() {
    let (a, b, c) = (Origin::named("a").await, Origin::named("b").await, Origin::named("c").await);
    let origins = [(a.addr, 1), (b.addr, 1), (c.addr, 1)];
    for (balance, header) in [
        ("balance \"ketama\" hash=\"header:X-User\"", "x-user"),
        ("balance \"maglev\" hash=\"cookie:session\"", "cookie"),
    ] {
        let proxy = Proxy::start(&config(&origins, balance)).await;
        let mut seen = std::collections::HashSet::new();
        for user in 0..30 {
            let value = if header == "cookie" { format!("theme=dark; session=u{user}") } else { format!("u{user}") };
            let first = get_with(proxy.addr(), "/", Some((header, &value))).await;
            for _ in 0..3 {
                assert_eq!(get_with(proxy.addr(), "/x", Some((header, &value))).await, first, "{balance}: user {user}");
            }
            seen.insert(first);
        }
        assert_eq!(seen.len(), 3, "{balance}: 30 keys should reach all 3 origins");
        proxy.shutdown().await;
    }
    // By client IP (the default key): every request from 127.0.0.1 goes to one origin.
    let proxy = Proxy::start(&config(&origins, "balance \"maglev\"")).await;
    let s = sequence(proxy.addr(), 20).await;
    assert!(s.chars().all(|ch| ch == s.chars().next().unwrap()), "{s}");
    proxy.shutdown().await;
}

/// An origin that answers `name` after `delay`.
async fn slow(name: &'static str, delay: Duration) -> Origin {
    Origin::start(
        false,
        Arc::new(move |_req| {
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Response::new(full(name))
            })
        }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_requests_sends_new_requests_away_from_a_busy_origin() {
    let busy = slow("s", Duration::from_millis(400)).await;
    let fast = Origin::named("f").await;
    let proxy = Proxy::start(&config(&[(busy.addr, 1), (fast.addr, 1)], "balance \"least-requests\"")).await;
    // Five requests stuck on the slow origin at most; the rest see it loaded.
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let addr = proxy.addr();
        tasks.push(tokio::spawn(async move { get_with(addr, "/", None).await }));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut slow_count = 0;
    for t in tasks {
        if t.await.unwrap() == "s" {
            slow_count += 1;
        }
    }
    // Random would give it about 15.
    assert!(slow_count <= 6, "the busy origin got {slow_count} of 30");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_ewma_learns_which_origin_is_slow() {
    let laggard = slow("s", Duration::from_millis(60)).await;
    let fast = Origin::named("f").await;
    let proxy = Proxy::start(&config(&[(laggard.addr, 1), (fast.addr, 1)], "balance \"peak-ewma\"")).await;
    let s = sequence(proxy.addr(), 30).await;
    // Each origin may be tried while its latency is unknown; after that the slow one loses.
    assert!(s.matches('s').count() <= 3, "{s}");
    proxy.shutdown().await;
}

#[test]
fn balance_mistakes_are_config_errors() {
    let base = |balance: &str| config(&[("127.0.0.1:9".parse().unwrap(), 1)], balance);
    let err = sluice_config::parse("lb.kdl", &base("balance \"least-request\"")).unwrap_err().render(false);
    assert!(err.contains("did you mean `least-requests`?"), "{err}");
    let err = sluice_config::parse("lb.kdl", &base("balance \"random\" hash=\"path\"")).unwrap_err().render(false);
    assert!(err.contains("`hash` only applies to the consistent-hashing algorithms"), "{err}");
    let err = sluice_config::parse("lb.kdl", &base("balance \"ketama\" hash=\"header:\"")).unwrap_err().render(false);
    assert!(err.contains("invalid hash key `header:`"), "{err}");
    let ok = sluice_config::parse("lb.kdl", &base("balance \"ketama\" hash=\"query:user\"")).unwrap();
    assert_eq!(ok.upstreams[0].balance.hash, sluice_config::HashKey::Query("user".into()));
}

/// An origin that answers every request with `status`.
async fn failing(status: u16) -> Origin {
    Origin::start(
        false,
        Arc::new(move |_req| {
            Box::pin(async move {
                let mut r = Response::new(full("failing"));
                *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                r
            })
        }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_5xx_eject_an_origin_until_its_time_is_up() {
    let (a, b) = (Origin::named("a").await, Origin::named("b").await);
    let bad = failing(503).await;
    let origins = [(a.addr, 1), (b.addr, 1), (bad.addr, 1)];
    let text = config(&origins, "outlier-detection consecutive-5xx=3 base-ejection=\"1h\" max-ejection=\"2h\"");
    let proxy = Proxy::start(&text).await;
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let mut c = h1_client(proxy.addr()).await;
        let resp = c.send_request(Request::get("/").header("host", "lb.test").body(full("")).unwrap()).await.unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(bad.requests(), 3, "ejected after its third 503");
    assert!(statuses[9..].iter().all(|&s| s == 200), "{statuses:?}");
    proxy.shutdown().await;
}

/// Sends `n` requests at once; returns their statuses, sorted.
async fn concurrent_statuses(addr: SocketAddr, n: usize) -> Vec<u16> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(async move {
                let mut c = h1_client(addr).await;
                let req = Request::get("/").header("host", "lb.test").body(full("")).unwrap();
                c.send_request(req).await.unwrap().status().as_u16()
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out.sort_unstable();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breakers_refuse_what_exceeds_the_limits_with_503() {
    // Long enough for every concurrent request to arrive while the first ones are held.
    let origin = slow("s", Duration::from_millis(1500)).await;
    let proxy = Proxy::start(&config(&[(origin.addr, 1)], "limits max-in-flight=2")).await;
    assert_eq!(concurrent_statuses(proxy.addr(), 6).await, [200, 200, 503, 503, 503, 503]);
    let group = proxy.server.as_ref().unwrap().upstreams()[0].clone();
    assert_eq!(group.limits().rejected(), 4);
    assert_eq!(group.limits().in_flight(), 0, "finished requests are no longer counted");
    proxy.shutdown().await;

    let proxy = Proxy::start(&config(&[(origin.addr, 1)], "limits max-connections=1 max-pending=0")).await;
    assert_eq!(concurrent_statuses(proxy.addr(), 3).await, [200, 503, 503]);
    proxy.shutdown().await;
}

async fn status_of(addr: SocketAddr, method: http::Method) -> (u16, Bytes) {
    let mut c = h1_client(addr).await;
    let req = Request::builder().method(method).uri("/").header("host", "lb.test").body(full("")).unwrap();
    let resp = c.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_statuses_are_retried_on_another_server_for_idempotent_requests() {
    let good = Origin::named("good").await;
    let bad = failing(503).await;
    let origins = [(good.addr, 1), (bad.addr, 1)];
    let retry = "balance \"round-robin\"\n    retry statuses=\"503\" budget=0\n    outlier-detection consecutive-5xx=0";
    let proxy = Proxy::start(&config(&origins, retry)).await;
    for _ in 0..6 {
        assert_eq!(status_of(proxy.addr(), http::Method::GET).await, (200, Bytes::from("good")));
    }
    // Round-robin gives the failing origin every other turn, and a retry takes a turn too:
    // requests 2 to 6 each tried it first.
    assert_eq!(bad.requests(), 5);
    // A POST is not idempotent: its 503 comes back as it is...
    let mut posts = Vec::new();
    for _ in 0..2 {
        posts.push(status_of(proxy.addr(), http::Method::POST).await.0);
    }
    posts.sort_unstable();
    assert_eq!(posts, [200, 503]);
    proxy.shutdown().await;
    // ...unless the policy opts in (requests without a body only).
    let opt_in = retry.replace("budget=0", "budget=0 non-idempotent=#true");
    let proxy = Proxy::start(&config(&origins, &opt_in)).await;
    for _ in 0..2 {
        assert_eq!(status_of(proxy.addr(), http::Method::POST).await.0, 200);
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_try_timeout_moves_a_hanging_request_to_another_server() {
    let hanging = slow("slow", Duration::from_secs(30)).await;
    let fast = Origin::named("fast").await;
    let origins = [(hanging.addr, 1), (fast.addr, 1)];
    let retry = "balance \"round-robin\"\n    retry per-try-timeout=\"200ms\" budget=0";
    let proxy = Proxy::start(&config(&origins, retry)).await;
    for _ in 0..2 {
        assert_eq!(status_of(proxy.addr(), http::Method::GET).await, (200, Bytes::from("fast")));
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_stops_retries_from_multiplying_load_on_a_failing_group() {
    let (x, y) = (failing(503).await, failing(503).await);
    let origins = [(x.addr, 1), (y.addr, 1)];
    let retry = "retry attempts=3 statuses=\"503\" budget=10 min-retries-per-second=0 backoff=\"0s\"\n    outlier-detection consecutive-5xx=0";
    let proxy = Proxy::start(&config(&origins, retry)).await;
    for _ in 0..40 {
        assert_eq!(status_of(proxy.addr(), http::Method::GET).await.0, 503);
    }
    let sent = x.requests() + y.requests();
    // Without a budget: 40 × 4 = 160. With 10 %: at most 4 retries.
    assert!((40..=44).contains(&sent), "{sent} requests reached the origins");
    proxy.shutdown().await;
}

async fn get_cookie(addr: SocketAddr, cookie: Option<&str>) -> (Bytes, Option<String>) {
    let mut c = h1_client(addr).await;
    let mut req = Request::get("/").header("host", "lb.test");
    if let Some(v) = cookie {
        req = req.header("cookie", v);
    }
    let resp = c.send_request(req.body(full("")).unwrap()).await.unwrap();
    let set = resp.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_owned());
    (resp.into_body().collect().await.unwrap().to_bytes(), set)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_sessions_pin_a_client_and_repin_when_its_server_goes_away() {
    let (a, b, c) = (Origin::named("a").await, Origin::named("b").await, Origin::named("c").await);
    let origins = [(a.addr, 1), (b.addr, 1), (c.addr, 1)];
    let proxy = Proxy::start(&config(&origins, "sticky cookie=\"srv\"")).await;
    let (first, set) = get_cookie(proxy.addr(), None).await;
    let set = set.expect("a new client gets the cookie");
    assert!(set.starts_with("srv=") && set.contains("Path=/") && set.contains("HttpOnly"), "{set}");
    let cookie = format!("theme=dark; {}", set.split(';').next().unwrap());
    for _ in 0..6 {
        let (body, again) = get_cookie(proxy.addr(), Some(&cookie)).await;
        assert_eq!(body, first, "pinned");
        assert_eq!(again, None, "no new cookie while the server is there");
    }
    // The pinned server goes away (its health checks fail): the client is moved to another
    // server and re-pinned there.
    let pinned = match &first[..] {
        b"a" => 0,
        b"b" => 1,
        _ => 2,
    };
    let group = proxy.server.as_ref().unwrap().upstreams()[0].clone();
    group.backends()[pinned].health().set_checked(false);
    let (moved, repin) = get_cookie(proxy.addr(), Some(&cookie)).await;
    assert_ne!(moved, first);
    let repin = repin.expect("re-pinned to the new server");
    let new_cookie = repin.split(';').next().unwrap().to_owned();
    assert_ne!(Some(new_cookie.as_str()), cookie.split("; ").nth(1));
    for _ in 0..3 {
        assert_eq!(get_cookie(proxy.addr(), Some(&new_cookie)).await, (moved.clone(), None));
    }
    proxy.shutdown().await;
}

/// An origin that sends a response head promising 1000 bytes, then 3 bytes, then closes.
async fn cut_short() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nabc").await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_cut_short_count_as_failures_and_eject() {
    let good = Origin::named("good").await;
    let bad = cut_short().await;
    let text = config(
        &[(good.addr, 1), (bad, 1)],
        "balance \"round-robin\"\n    outlier-detection consecutive-failures=2 base-ejection=\"1h\" max-ejection=\"2h\"",
    );
    let proxy = Proxy::start(&text).await;
    let group = proxy.server.as_ref().unwrap().upstreams()[0].clone();
    for _ in 0..4 {
        let mut c = h1_client(proxy.addr()).await;
        let req = Request::get("/").header("host", "lb.test").body(full("")).unwrap();
        if let Ok(resp) = c.send_request(req).await {
            // The cut-short body surfaces as an error to the client; the good one completes.
            let _ = resp.into_body().collect().await;
        }
    }
    let bad_backend = group.backends().into_iter().find(|b| b.addr() == bad).unwrap();
    assert!(bad_backend.health().ejected(sluice_upstream::health::now_ms()), "two cut-short bodies eject it");
    for _ in 0..4 {
        assert_eq!(get_with(proxy.addr(), "/", None).await, "good");
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_can_opt_in_to_retrying_non_idempotent_requests() {
    let good = Origin::named("good").await;
    let bad = failing(503).await;
    let text = config(
        &[(good.addr, 1), (bad.addr, 1)],
        "balance \"round-robin\"\n    retry statuses=\"503\" budget=0\n    outlier-detection consecutive-5xx=0",
    )
    .replace("route \"/\" { proxy \"origins\" }", "route \"/\" { proxy \"origins\" retry-non-idempotent=#true }");
    let proxy = Proxy::start(&text).await;
    for _ in 0..4 {
        assert_eq!(status_of(proxy.addr(), http::Method::POST).await.0, 200);
    }
    proxy.shutdown().await;

    let without_retry = config(&[(good.addr, 1)], "")
        .replace("route \"/\" { proxy \"origins\" }", "route \"/\" { proxy \"origins\" retry-non-idempotent=#true }");
    let err = sluice_config::parse("lb.kdl", &without_retry).unwrap_err().render(false);
    assert!(err.contains("needs a `retry` policy on upstream `origins`"), "{err}");
}
