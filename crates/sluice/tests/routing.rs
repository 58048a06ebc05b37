//! Configuration features end to end: sites by host, routes by path and method, respond,
//! redirect, header edits, path rewriting and Host override.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;

use common::*;
use http::{Method, Request};
use http_body_util::BodyExt;

async fn send(addr: SocketAddr, method: Method, host: &str, path: &str) -> http::Response<bytes::Bytes> {
    let mut c = h1_client(addr).await;
    let req = Request::builder().method(method).uri(path).header("host", host).body(full("")).unwrap();
    let resp = c.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    http::Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

fn config(api: SocketAddr, web: SocketAddr) -> String {
    format!(
        r#"
server {{ access-log "off" }}
listener "127.0.0.1:0" name="main"
listener "127.0.0.1:0" name="other"

upstream "api" {{ server "{api}" }}
upstream "web" {{ server "{web}" }}

site "example.com" "*.example.com" {{
    listen "main"
    request-headers {{
        set "X-Site" "example"
        remove "X-Drop-Me"
    }}
    response-headers {{
        set "X-Frame-Options" "DENY"
    }}
    route "/" {{ proxy "web" }}
    route "/api" {{
        proxy "api" strip-prefix=#true
        request-headers {{ add "X-Route" "api" }}
        response-headers {{ set "X-Route-Response" "api" }}
    }}
    route "/v1" {{
        methods "POST"
        proxy "api" rewrite-prefix="/internal/v1" host="api.internal"
    }}
    route "/healthz" exact=#true {{
        respond 200 "ok\n" {{
            header "Cache-Control" "no-store"
        }}
    }}
    route "/old" {{
        redirect 301 "https://{{host}}/new{{query}}"
    }}
}}

site "*" {{
    listen "main"
    route "/" {{ respond 404 "unknown site\n" }}
}}

site "*" {{
    listen "other"
    route "/" {{ respond 200 "other listener\n" }}
}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_routes_and_actions() {
    let api = Origin::named("api").await;
    let web = Origin::named("web").await;
    let proxy = Proxy::start(&config(api.addr, web.addr)).await;
    let main = proxy.addrs[0];

    // Exact host, prefix route, site + route header edits, prefix strip.
    let mut c = h1_client(main).await;
    let req = Request::get("/api/users?page=2")
        .header("host", "example.com")
        .header("x-drop-me", "1")
        .body(full(""))
        .unwrap();
    let resp = c.send_request(req).await.unwrap();
    assert_eq!(resp.headers()["x-route-response"], "api");
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "api");
    let head = api.last_head();
    assert_eq!(head.uri, "/users?page=2");
    assert_eq!(head.headers["x-site"], "example");
    assert_eq!(head.headers["x-route"], "api");
    assert!(head.headers.get("x-drop-me").is_none());
    assert_eq!(head.headers["host"], "example.com");

    // Wildcard host, longest prefix falls back to "/".
    let r = send(main, Method::GET, "www.example.com", "/apix").await;
    assert_eq!(r.body(), "web", "prefixes are segment-aware");
    assert_eq!(web.last_head().uri, "/apix");

    // Method-restricted route with rewrite and Host override; GET falls through to "/".
    let r = send(main, Method::POST, "example.com", "/v1/orders").await;
    assert_eq!(r.body(), "api");
    let head = api.last_head();
    assert_eq!(head.uri, "/internal/v1/orders");
    assert_eq!(head.headers["host"], "api.internal");
    assert_eq!(send(main, Method::GET, "example.com", "/v1/orders").await.body(), "web");

    // Exact respond route with headers; a longer path is not an exact match.
    let r = send(main, Method::GET, "example.com", "/healthz").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.body(), "ok\n");
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["x-frame-options"], "DENY", "site response headers apply to respond too");
    assert_eq!(send(main, Method::GET, "example.com", "/healthz/x").await.body(), "web");

    // Redirect with placeholders.
    let r = send(main, Method::GET, "example.com:8080", "/old/page?a=1").await;
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"], "https://example.com/new?a=1");

    // Default site on this listener, and another listener's own site.
    let r = send(main, Method::GET, "unknown.test", "/").await;
    assert_eq!((r.status().as_u16(), r.body().as_ref()), (404, &b"unknown site\n"[..]));
    let r = send(proxy.addrs[1], Method::GET, "example.com", "/").await;
    assert_eq!(r.body(), "other listener\n", "sites are bound to their listeners");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_are_respected() {
    let a = Origin::named("a").await;
    let b = Origin::named("b").await;
    let config = format!(
        r#"
server {{ access-log "off" }}
listener "127.0.0.1:0"
upstream "o" {{
    server "{}" weight=3
    server "{}" weight=1
}}
site "*" {{ route "/" {{ proxy "o" }} }}
"#,
        a.addr, b.addr
    );
    let proxy = Proxy::start(&config).await;
    for _ in 0..8 {
        get(proxy.addr(), "/").await;
    }
    assert_eq!((a.requests(), b.requests()), (6, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_spellings_of_a_path_cannot_walk_around_a_route() {
    let origin = Origin::named("origin").await;
    let text = format!(
        "server {{ access-log \"off\" }}\nlistener \"127.0.0.1:0\"\nupstream \"o\" {{ server \"{}\" }}\nsite \"*\" {{\n route \"/admin\" {{ respond 403 \"denied\" }}\n route \"/\" {{ proxy \"o\" }}\n}}\n",
        origin.addr
    );
    let proxy = Proxy::start(&text).await;
    for path in ["/admin", "/%61dmin", "/%61%64%6D%69%6E/x", "/a/../admin", "//admin", "/x/%2e%2e/admin", "/./admin"] {
        // Raw bytes: no client library normalizes first.
        let answer =
            raw(proxy.addr(), format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 403") && answer.ends_with("denied"), "{path}: {answer}");
    }
    // The origin gets the normalized path too (a naive origin cannot be fooled either).
    let answer =
        raw(proxy.addr(), b"GET /public/./x/../%7Euser?q=%2e HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(origin.last_head().uri, "/public/~user?q=%2e", "the query is left alone");
    proxy.shutdown().await;
}
