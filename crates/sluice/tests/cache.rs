//! The HTTP cache (RFC 9111) over real sockets, against origins that count their requests:
//! hits and misses with `Cache-Status` and `Age`, what is never stored, `Vary`, revalidation
//! with 304, the client's conditional requests, HEAD and Range from a cached GET, request
//! coalescing under 100 concurrent misses, stale-while-revalidate and stale-if-error,
//! purges by key and by tag, the object size limit, and the disk tier across a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pki;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;

fn config(origin: SocketAddr, server_cache: &str, rule: &str) -> String {
    format!(
        r#"server {{
    access-log "off"
    admin "127.0.0.1:0"
    {server_cache}
}}
listener "127.0.0.1:0"
upstream "origins" {{ server "{origin}" }}
site "*" {{
    cache {{ {rule} }}
    route "/" {{ proxy "origins" }}
    route "/nocache" {{
        proxy "origins"
        cache #false
    }}
}}
"#
    )
}

fn cache_status(h: &HeaderMap) -> String {
    h.get("cache-status").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

/// An origin answering every request with `headers` and a body naming the request count.
async fn origin(headers: &'static [(&'static str, &'static str)]) -> Origin {
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    Origin::start(
        false,
        Arc::new(move |req: Request<hyper::body::Incoming>| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            Box::pin(async move {
                let mut r = Response::new(full(format!("response {n} for {}", req.uri().path())));
                for (k, v) in headers {
                    r.headers_mut().insert(*k, v.parse().unwrap());
                }
                r
            })
        }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_responses_are_served_from_the_cache_with_age_and_cache_status() {
    let origin = origin(&[("cache-control", "max-age=60"), ("etag", "\"v1\"")]).await;
    let proxy = Proxy::start(&config(origin.addr, "", "")).await;
    let addr = proxy.addr();
    let (status, h, body) = send(addr, "GET", "/a?x=1", &[]).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"response 1 for /a"[..]));
    assert!(cache_status(&h).contains("fwd=miss") && cache_status(&h).contains("stored"), "{h:?}");
    let (_, h, body) = send(addr, "GET", "/a?x=1", &[("x-request-id", "second-request")]).await;
    assert_eq!(body, b"response 1 for /a");
    assert!(cache_status(&h).starts_with("sluice; hit; ttl="), "{h:?}");
    assert_eq!(h["x-request-id"], "second-request", "a hit carries its own request id");
    assert!(h.contains_key("age"));
    assert_eq!(origin.requests(), 1);
    // Another query is another object.
    assert_eq!(send(addr, "GET", "/a?x=2", &[]).await.2, b"response 2 for /a");
    // HEAD from the cached GET.
    let (status, h, body) = send(addr, "HEAD", "/a?x=1", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
    assert_eq!(h["content-length"], "17");
    // Range from the cached object.
    let (status, h, body) = send(addr, "GET", "/a?x=1", &[("range", "bytes=0-7")]).await;
    assert_eq!((status, body.as_slice()), (StatusCode::PARTIAL_CONTENT, &b"response"[..]));
    assert_eq!(h["content-range"], "bytes 0-7/17");
    let (status, h, body) = send(addr, "GET", "/a?x=1", &[("range", "bytes=0-1,4-5")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert!(h["content-type"].to_str().unwrap().starts_with("multipart/byteranges; boundary="));
    assert_eq!(h["content-length"], body.len().to_string());
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("content-range: bytes 0-1/17\r\n\r\nre\r\n"), "{text}");
    assert!(text.contains("content-range: bytes 4-5/17\r\n\r\non\r\n"), "{text}");
    // The client's own validators, answered from the cache.
    let (status, _, body) = send(addr, "GET", "/a?x=1", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    // A route with `cache #false`.
    send(addr, "GET", "/nocache", &[]).await;
    send(addr, "GET", "/nocache", &[]).await;
    assert_eq!(origin.requests(), 4, "x=2 once, /nocache twice, nothing else");
    // A successful POST to the URL invalidates what is stored for it (RFC 9111 §4.4).
    send(addr, "POST", "/a?x=2", &[]).await;
    until_async_miss(addr, "/a?x=2").await;
    // A request with no-cache goes to the origin (revalidation: no validators sent here
    // would still be a full fetch; the origin is asked).
    send(addr, "GET", "/a?x=1", &[("cache-control", "no-cache")]).await;
    assert_eq!(origin.requests(), 7, "the POST, the refetch after it, and the no-cache request");
    proxy.shutdown().await;
}

/// Waits until `path` is a miss (the invalidation runs in the background).
async fn until_async_miss(addr: SocketAddr, path: &str) {
    for _ in 0..100 {
        let (_, h, _) = send(addr, "GET", path, &[]).await;
        if cache_status(&h).contains("fwd=miss") {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{path} is still served from the cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_and_override_lifetimes_apply_by_status() {
    // No freshness information at all: not reusable, unless default-ttl says so.
    let bare = origin(&[]).await;
    let proxy = Proxy::start(&config(bare.addr, "", "")).await;
    send(proxy.addr(), "GET", "/d", &[]).await;
    send(proxy.addr(), "GET", "/d", &[]).await;
    assert_eq!(bare.requests(), 2);
    proxy.shutdown().await;
    let proxy = Proxy::start(&config(bare.addr, "", "default-ttl 200 404 \"1m\"")).await;
    send(proxy.addr(), "GET", "/d", &[]).await;
    let (_, h, _) = send(proxy.addr(), "GET", "/d", &[]).await;
    assert!(cache_status(&h).contains("hit; ttl=5"), "{h:?}");
    assert_eq!(bare.requests(), 3);
    proxy.shutdown().await;
    // override-ttl replaces the origin's max-age=0.
    let zero = origin(&[("cache-control", "max-age=0")]).await;
    let proxy = Proxy::start(&config(zero.addr, "", "override-ttl 200 \"1h\"")).await;
    send(proxy.addr(), "GET", "/o", &[]).await;
    send(proxy.addr(), "GET", "/o", &[]).await;
    assert_eq!(zero.requests(), 1);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_must_not_be_shared_is_not_stored() {
    for headers in [
        &[("cache-control", "no-store")][..],
        &[("cache-control", "private, max-age=60")][..],
        &[("cache-control", "max-age=60"), ("set-cookie", "session=secret")][..],
        &[("cache-control", "max-age=60"), ("vary", "*")][..],
    ] {
        let headers: &'static [(&'static str, &'static str)] = Box::leak(headers.to_vec().into_boxed_slice());
        let origin = origin(headers).await;
        let proxy = Proxy::start(&config(origin.addr, "", "")).await;
        let (_, h, _) = send(proxy.addr(), "GET", "/p", &[]).await;
        assert!(cache_status(&h).contains("detail="), "{headers:?}: {h:?}");
        send(proxy.addr(), "GET", "/p", &[]).await;
        assert_eq!(origin.requests(), 2, "{headers:?}");
        proxy.shutdown().await;
    }
    // Authorization: not shared unless the origin says so.
    let origin = origin(&[("cache-control", "max-age=60")]).await;
    let proxy = Proxy::start(&config(origin.addr, "", "")).await;
    send(proxy.addr(), "GET", "/p", &[("authorization", "Bearer a")]).await;
    send(proxy.addr(), "GET", "/p", &[("authorization", "Bearer b")]).await;
    assert_eq!(origin.requests(), 2);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_keeps_one_variant_per_header_value() {
    let origin = Origin::start(
        false,
        Arc::new(|req: Request<hyper::body::Incoming>| {
            let lang = req.headers().get("accept-language").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
            Box::pin(async move {
                let mut r = Response::new(full(format!("hello in {lang}")));
                r.headers_mut().insert("cache-control", "max-age=60".parse().unwrap());
                r.headers_mut().insert("vary", "Accept-Language".parse().unwrap());
                r
            })
        }),
    )
    .await;
    let proxy = Proxy::start(&config(origin.addr, "", "")).await;
    let addr = proxy.addr();
    assert_eq!(send(addr, "GET", "/v", &[("accept-language", "de")]).await.2, b"hello in de");
    assert_eq!(send(addr, "GET", "/v", &[("accept-language", "fr")]).await.2, b"hello in fr");
    assert_eq!(origin.requests(), 2);
    for _ in 0..2 {
        assert_eq!(send(addr, "GET", "/v", &[("accept-language", "de")]).await.2, b"hello in de");
        assert_eq!(send(addr, "GET", "/v", &[("accept-language", "fr")]).await.2, b"hello in fr");
    }
    assert_eq!(origin.requests(), 2, "both variants are served from the cache");
    proxy.shutdown().await;
}

/// An origin whose responses are stale at once but carry a validator; it answers a matching
/// `If-None-Match` with 304 and records what it received.
async fn revalidating_origin(extra: &'static str, fail_after: usize) -> Origin {
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    Origin::start(
        false,
        Arc::new(move |req: Request<hyper::body::Incoming>| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let matched = req.headers().get("if-none-match").is_some_and(|v| v == "\"v1\"");
            Box::pin(async move {
                let mut r = if n > fail_after {
                    let mut r = Response::new(full("origin broke"));
                    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    return r;
                } else if matched {
                    let mut r = Response::new(full(""));
                    *r.status_mut() = StatusCode::NOT_MODIFIED;
                    r
                } else {
                    Response::new(full("the body"))
                };
                r.headers_mut().insert("etag", "\"v1\"".parse().unwrap());
                r.headers_mut().insert("cache-control", format!("max-age=0{extra}").parse().unwrap());
                r
            })
        }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_entries_are_revalidated_and_a_304_refreshes_them() {
    let origin = revalidating_origin("", usize::MAX).await;
    let proxy = Proxy::start(&config(origin.addr, "", "")).await;
    let addr = proxy.addr();
    assert_eq!(send(addr, "GET", "/r", &[]).await.2, b"the body");
    let (status, h, body) = send(addr, "GET", "/r", &[]).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"the body"[..]), "the cached body after a 304");
    assert!(cache_status(&h).contains("fwd=stale") && cache_status(&h).contains("fwd-status=304"), "{h:?}");
    assert_eq!(h["content-length"], "8");
    assert_eq!(origin.requests(), 2);
    assert_eq!(origin.last_head().headers["if-none-match"], "\"v1\"", "the cache sent its validator");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_serves_the_stale_copy_when_the_origin_fails() {
    let origin = revalidating_origin(", stale-if-error=60", 1).await;
    let proxy = Proxy::start(&config(origin.addr, "", "")).await;
    let addr = proxy.addr();
    assert_eq!(send(addr, "GET", "/e", &[]).await.2, b"the body");
    let (status, h, body) = send(addr, "GET", "/e", &[]).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"the body"[..]));
    assert!(cache_status(&h).contains("stale-if-error") && cache_status(&h).contains("fwd-status=500"), "{h:?}");
    // The origin gone altogether: the same.
    drop(origin);
    let (status, h, body) = send(addr, "GET", "/e", &[]).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"the body"[..]), "{h:?}");
    assert!(cache_status(&h).contains("stale-if-error"), "{h:?}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_misses_reach_the_origin_once() {
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let origin = Origin::start(
        false,
        Arc::new(move |_req| {
            let mut release = release_rx.clone();
            Box::pin(async move {
                let _ = release.wait_for(|r| *r).await;
                let mut r = Response::new(full("shared answer"));
                r.headers_mut().insert("cache-control", "max-age=60".parse().unwrap());
                r
            })
        }),
    )
    .await;
    let proxy = Proxy::start(&config(origin.addr, "", "lock-timeout \"10s\"")).await;
    let addr = proxy.addr();
    let mut clients = Vec::new();
    for _ in 0..100 {
        clients.push(tokio::spawn(async move { send(addr, "GET", "/hot", &[]).await }));
    }
    until("the first miss reached the origin", || origin.requests() >= 1).await;
    // Give the other 99 time to arrive and queue behind it (they must not reach the origin).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    release_tx.send(true).unwrap();
    let mut collapsed = 0;
    for c in clients {
        let (status, h, body) = c.await.unwrap();
        assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"shared answer"[..]));
        collapsed += usize::from(cache_status(&h).contains("collapsed"));
    }
    assert_eq!(origin.requests(), 1, "one upstream fetch for 100 concurrent misses");
    assert_eq!(collapsed, 99);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_answers_at_once_and_refreshes_in_the_background() {
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let origin = Origin::start(
        false,
        Arc::new(move |_req| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let mut release = release_rx.clone();
            Box::pin(async move {
                if n > 1 {
                    let _ = release.wait_for(|r| *r).await;
                }
                let mut r = Response::new(full(format!("version {n}")));
                r.headers_mut().insert("cache-control", "max-age=0, stale-while-revalidate=60".parse().unwrap());
                r
            })
        }),
    )
    .await;
    let proxy = Proxy::start(&config(origin.addr, "", "")).await;
    let addr = proxy.addr();
    assert_eq!(send(addr, "GET", "/s", &[]).await.2, b"version 1");
    // Stale: answered at once with the stale copy, and revalidated in the background.
    let (_, h, body) = send(addr, "GET", "/s", &[]).await;
    assert_eq!(body, b"version 1");
    assert!(cache_status(&h).contains("stale-while-revalidate"), "{h:?}");
    until("the background refresh reached the origin", || origin.requests() == 2).await;
    // While it runs (the origin holds it), others get the stale copy too, and no second
    // refresh starts.
    let (_, h, body) = send(addr, "GET", "/s", &[]).await;
    assert_eq!(body, b"version 1");
    assert!(cache_status(&h).contains("stale-while-revalidate"), "{h:?}");
    assert_eq!(origin.requests(), 2);
    release_tx.send(true).unwrap();
    // The refreshed copy shows up without any client having waited for the origin.
    let mut refreshed = false;
    for _ in 0..200 {
        if send(addr, "GET", "/s", &[]).await.2 != b"version 1" {
            refreshed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(refreshed, "the background refresh stored the new version");
    proxy.shutdown().await;
}

async fn admin_post(admin: SocketAddr, path: &str) -> (u16, String) {
    let mut c = h1_client(admin).await;
    let resp = c.send_request(Request::post(path).header("host", "localhost").body(full("")).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    (status, String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_by_key_and_by_tag() {
    let origin = origin(&[("cache-control", "max-age=60"), ("surrogate-key", "product-7 all")]).await;
    let proxy = Proxy::start(&config(origin.addr, "", "")).await;
    let addr = proxy.addr();
    let admin = proxy.server.as_ref().unwrap().admin_addr().unwrap();
    send(addr, "GET", "/p/1", &[]).await;
    send(addr, "GET", "/p/2", &[]).await;
    send(addr, "GET", "/p/1", &[]).await;
    assert_eq!(origin.requests(), 2);
    let (status, body) = admin_post(admin, "/cache/purge?key=http%3A%2F%2Fexample.test%2Fp%2F1").await;
    assert_eq!((status, body.as_str()), (200, "{\"purged\":1}"));
    send(addr, "GET", "/p/1", &[]).await;
    send(addr, "GET", "/p/2", &[]).await;
    assert_eq!(origin.requests(), 3, "only /p/1 was purged");
    let (status, body) = admin_post(admin, "/cache/purge?tag=product-7").await;
    assert_eq!((status, body.as_str()), (200, "{\"purged\":2}"));
    send(addr, "GET", "/p/1", &[]).await;
    send(addr, "GET", "/p/2", &[]).await;
    assert_eq!(origin.requests(), 5);
    assert_eq!(admin_post(admin, "/cache/purge").await.0, 400);
    // The cache's counters are in /metrics.
    let mut c = h1_client(admin).await;
    let resp =
        c.send_request(Request::get("/metrics").header("host", "localhost").body(full("")).unwrap()).await.unwrap();
    let text = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(text.contains("sluice_cache_lookups_total{tier=\"memory\",result=\"hit\"}"), "{text}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_objects_bypass_and_the_disk_tier_survives_a_restart() {
    let dir = pki::temp_dir("cache-disk");
    let big = Box::leak(vec![b'x'; 4096].into_boxed_slice());
    let big: &'static [u8] = big;
    let origin = Origin::start(
        false,
        Arc::new(move |req: Request<hyper::body::Incoming>| {
            let body = if req.uri().path() == "/big" { bytes::Bytes::from_static(big) } else { "small one".into() };
            Box::pin(async move {
                let mut r = Response::new(full(body));
                r.headers_mut().insert("cache-control", "max-age=600".parse().unwrap());
                r
            })
        }),
    )
    .await;
    let store = format!(
        "cache {{\n memory \"1MiB\"\n max-object \"1KiB\"\n disk \"{}\" size=\"1MiB\"\n }}",
        dir.join("cache").display()
    );
    let text = config(origin.addr, &store, "");
    let proxy = Proxy::start(&text).await;
    send(proxy.addr(), "GET", "/big", &[]).await;
    send(proxy.addr(), "GET", "/big", &[]).await;
    assert_eq!(origin.requests(), 2, "larger than max-object: not cached");
    send(proxy.addr(), "GET", "/small", &[]).await;
    until("the entry is on disk", || {
        walk(&dir.join("cache")).iter().any(|p| p.extension().is_none() && p.components().count() > 0)
    })
    .await;
    proxy.shutdown().await;

    // A new process (a new server, same directory): the entry is still there.
    let proxy = Proxy::start(&text).await;
    let (_, h, body) = send(proxy.addr(), "GET", "/small", &[]).await;
    assert_eq!(body, b"small one");
    assert!(cache_status(&h).contains("hit"), "{h:?}");
    assert_eq!(origin.requests(), 3);
    proxy.shutdown().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn cache_mistakes_are_config_errors() {
    let cases = [
        ("cache { default-ttl 99 \"1m\" }", "99"),
        ("cache { default-ttl 200 \"soon\" }", "duration"),
        ("cache { default-ttl \"1m\" }", "needs 2 arguments"),
        ("cache { lock-timout \"1s\" }", "lock-timeout"),
        ("cache { key-headers \"bad header\" }", "is not a header name"),
    ];
    for (block, expected) in cases {
        let text =
            format!("listener \"127.0.0.1:0\"\nsite \"*\" {{\n    {block}\n    route \"/\" {{ respond 200 }}\n}}\n");
        let err = sluice_config::parse("cache.kdl", &text).unwrap_err().render(false);
        assert!(err.contains(expected) && err.contains("cache.kdl:3:"), "{block}: {err}");
    }
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    use std::io::Read as _;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data).read_to_end(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_coding_of_a_cached_object_is_compressed_once() {
    let page: &'static str = Box::leak("<p>a compressible page</p>\n".repeat(100).into_boxed_str());
    let origin = Origin::start(
        false,
        Arc::new(move |_req| {
            Box::pin(async move {
                let mut r = Response::new(full(page));
                r.headers_mut().insert("cache-control", "max-age=60".parse().unwrap());
                r.headers_mut().insert("content-type", "text/html".parse().unwrap());
                r
            })
        }),
    )
    .await;
    let text = config(origin.addr, "", "").replace("    cache {", "    compress\n    cache {");
    let proxy = Proxy::start(&text).await;
    let addr = proxy.addr();
    let server = proxy.server.as_ref().unwrap();
    let inserts = || server.control().current().cache.as_ref().unwrap().store().memory().stats().inserts;
    let gzip = [("accept-encoding", "gzip")];

    let (_, h, body) = send(addr, "GET", "/page", &gzip).await;
    assert_eq!(h["content-encoding"], "gzip");
    assert_eq!(gunzip(&body), page.as_bytes(), "a miss: stored as identity, sent compressed");
    assert_eq!(inserts(), 1);
    // The first hit compresses and keeps the gzip form; the next ones reuse it.
    let (_, _, first) = send(addr, "GET", "/page", &gzip).await;
    assert_eq!(inserts(), 2);
    let (_, h, again) = send(addr, "GET", "/page", &gzip).await;
    assert_eq!(inserts(), 2, "not compressed again");
    assert_eq!(again, first);
    assert_eq!(gunzip(&again), page.as_bytes());
    assert_eq!(h["content-encoding"], "gzip");
    assert_eq!(h["content-length"], again.len().to_string());
    assert!(cache_status(&h).contains("hit"));
    // Another coding is another form; identity is the stored body itself.
    let (_, h, _) = send(addr, "GET", "/page", &[("accept-encoding", "br")]).await;
    assert_eq!(h["content-encoding"], "br");
    assert_eq!(inserts(), 3);
    let (_, h, body) = send(addr, "GET", "/page", &[]).await;
    assert!(h.get("content-encoding").is_none());
    assert_eq!(body, page.as_bytes());
    assert_eq!(origin.requests(), 1);
    proxy.shutdown().await;
}

/// An origin that answers its first request with `headers` and then, for every later
/// request, reads the head and drops the connection without answering.
async fn dying_origin(headers: &'static [(&'static str, &'static str)], reset: bool) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let answered = answered.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let mut head = Vec::new();
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    if answered.swap(true, std::sync::atomic::Ordering::SeqCst) {
                        if reset {
                            // Linger 0: the close sends RST instead of FIN.
                            let _ = socket2::SockRef::from(&s).set_linger(Some(std::time::Duration::ZERO));
                        }
                        return; // drops the connection before any answer
                    }
                    let mut answer = String::from("HTTP/1.1 200 OK\r\ncontent-length: 8\r\n");
                    for (k, v) in headers {
                        answer.push_str(&format!("{k}: {v}\r\n"));
                    }
                    answer.push_str("\r\nthe body");
                    let _ = s.write_all(answer.as_bytes()).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_covers_an_origin_that_drops_the_connection() {
    for reset in [false, true] {
        let addr = dying_origin(&[("cache-control", "max-age=1, stale-if-error=60")], reset).await;
        let proxy = Proxy::start(&config(addr, "", "")).await;
        assert_eq!(send(proxy.addr(), "GET", "/d", &[]).await.2, b"the body");
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        let (status, h, body) = send(proxy.addr(), "GET", "/d", &[]).await;
        assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"the body"[..]), "reset {reset}: {h:?}");
        assert!(cache_status(&h).contains("stale-if-error"), "{h:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_valued_age_counts_by_its_first_member_and_an_invalid_one_is_not_stored() {
    let origin = origin(&[("cache-control", "max-age=3600"), ("age", "7200, 0")]).await;
    let proxy = Proxy::start(&config(origin.addr, "", "")).await;
    send(proxy.addr(), "GET", "/age", &[]).await;
    let (_, h, _) = send(proxy.addr(), "GET", "/age", &[]).await;
    assert!(!cache_status(&h).contains("hit; ttl"), "served as fresh: {h:?}");
    assert_eq!(origin.requests(), 2);
    let invalid = origin_with(&[("cache-control", "max-age=3600"), ("age", "soon")]).await;
    let proxy = Proxy::start(&config(invalid.addr, "", "")).await;
    let (_, h, _) = send(proxy.addr(), "GET", "/age", &[]).await;
    assert!(cache_status(&h).contains("detail=age"), "{h:?}");
    send(proxy.addr(), "GET", "/age", &[]).await;
    assert_eq!(invalid.requests(), 2);
}

async fn origin_with(headers: &'static [(&'static str, &'static str)]) -> Origin {
    origin(headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_204_is_reused() {
    let origin = Origin::start(
        false,
        Arc::new(|_req: Request<hyper::body::Incoming>| {
            Box::pin(async move {
                let mut r = Response::new(full(""));
                *r.status_mut() = StatusCode::NO_CONTENT;
                r.headers_mut().insert("cache-control", "max-age=60".parse().unwrap());
                r
            })
        }),
    )
    .await;
    let proxy = Proxy::start(&config(origin.addr, "", "")).await;
    assert_eq!(send(proxy.addr(), "GET", "/204", &[]).await.0, StatusCode::NO_CONTENT);
    let (status, h, _) = send(proxy.addr(), "GET", "/204", &[]).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(cache_status(&h).starts_with("sluice; hit"), "{h:?}");
    assert_eq!(origin.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targeted_cache_control_takes_precedence_over_cache_control() {
    // CDN-Cache-Control (RFC 9213) decides for this cache and is passed on.
    let origin = origin(&[("cache-control", "no-store"), ("cdn-cache-control", "max-age=60")]).await;
    let proxy = Proxy::start(&config(origin.addr, "", "")).await;
    send(proxy.addr(), "GET", "/t", &[]).await;
    let (_, h, _) = send(proxy.addr(), "GET", "/t", &[]).await;
    assert!(cache_status(&h).starts_with("sluice; hit"), "{h:?}");
    assert_eq!(h["cdn-cache-control"], "max-age=60");
    assert_eq!(h["cache-control"], "no-store", "Cache-Control is for the caches after this one");
    assert_eq!(origin.requests(), 1);
    let refused = origin_with(&[("cache-control", "max-age=60"), ("cdn-cache-control", "no-store")]).await;
    let proxy = Proxy::start(&config(refused.addr, "", "")).await;
    send(proxy.addr(), "GET", "/t", &[]).await;
    send(proxy.addr(), "GET", "/t", &[]).await;
    assert_eq!(refused.requests(), 2);
    // A field of this cache's own comes first, and is not passed on.
    let own = origin_with(&[("cdn-cache-control", "no-store"), ("sluice-cache-control", "max-age=60")]).await;
    let rule = "targeted-cache-control \"sluice-cache-control\" \"cdn-cache-control\"";
    let proxy = Proxy::start(&config(own.addr, "", rule)).await;
    send(proxy.addr(), "GET", "/t", &[]).await;
    let (_, h, _) = send(proxy.addr(), "GET", "/t", &[]).await;
    assert!(cache_status(&h).starts_with("sluice; hit"), "{h:?}");
    assert!(h.get("sluice-cache-control").is_none());
    assert_eq!(own.requests(), 1);
}
