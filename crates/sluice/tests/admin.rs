//! The admin API over real sockets: liveness, readiness, the config's hash, upstream state,
//! Prometheus metrics (checked with a text-format parser for each family), and the bearer
//! token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::BodyExt;

async fn admin_get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, http::HeaderMap, Bytes) {
    let mut c = h1_client(addr).await;
    let mut req = Request::get(path).header("host", "localhost");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = c.send_request(req.body(full("")).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    (parts.status.as_u16(), parts.headers, body.collect().await.unwrap().to_bytes())
}

/// A Prometheus text-format parser, strict enough to catch malformed output: every sample
/// belongs to a family declared with `# TYPE`, names and labels are well formed, values
/// are numbers. Returns samples by `name{labels}`.
fn parse_prometheus(text: &str) -> (HashMap<String, String>, HashMap<String, f64>) {
    let mut types = HashMap::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'), "bad name: {line}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|f| types.get(*f).is_some_and(|k| k == "histogram")))
            .unwrap_or(name);
        assert!(types.contains_key(family), "sample before its # TYPE: {line}");
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "bad labels: {line}");
                for pair in labels[1..labels.len() - 1].split("\",") {
                    let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("bad label: {line}"));
                    assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad label name: {line}");
                    assert!(!v.is_empty() || pair.ends_with("=\""), "{line}");
                }
            }
        }
        samples.insert(series.to_owned(), value);
    }
    (types, samples)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_report_the_running_proxy() {
    let origin = Origin::named("hello").await;
    let config = format!(
        "server {{\n    access-log \"off\"\n    admin \"127.0.0.1:0\"\n}}\nlistener \"127.0.0.1:0\" name=\"public\"\nupstream \"origins\" {{ server \"{}\" }}\nsite \"example.test\" {{\n    route \"/\" {{ proxy \"origins\" }}\n    route \"/ping\" exact=#true {{ respond 204 }}\n}}\n",
        origin.addr
    );
    let proxy = Proxy::start(&config).await;
    let admin = proxy.server.as_ref().unwrap().admin_addr().unwrap();
    for _ in 0..3 {
        assert_eq!(get(proxy.addr(), "/").await.0, 200);
    }
    assert_eq!(get(proxy.addr(), "/ping").await.0, 204);

    let (status, _, body) = admin_get(admin, "/live", None).await;
    assert_eq!((status, &body[..]), (200, &b"{\"live\":true}"[..]));
    assert_eq!(admin_get(admin, "/ready", None).await.0, 200);
    let (_, _, body) = admin_get(admin, "/config", None).await;
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        body.contains("\"hash\":\"") && body.contains("\"loaded_at\":\"20") && body.contains("\"sites\":1"),
        "{body}"
    );
    let (_, _, body) = admin_get(admin, "/upstreams", None).await;
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(body.starts_with("[{\"name\":\"origins\""), "{body}");
    assert!(body.contains(&format!("\"address\":\"{}\"", origin.addr)) && body.contains("\"requests\":3"), "{body}");
    assert!(body.contains("\"available\":true") && body.contains("\"check\":\"healthy\""), "{body}");

    let (status, headers, body) = admin_get(admin, "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let (types, samples) = parse_prometheus(std::str::from_utf8(&body).unwrap());
    for family in [
        "sluice_requests_total",
        "sluice_request_duration_seconds",
        "sluice_upstream_duration_seconds",
        "sluice_request_bytes_total",
        "sluice_response_bytes_total",
        "sluice_retries_total",
        "sluice_connections_open",
        "sluice_connections_accepted_total",
        "sluice_tls_handshakes_total",
        "sluice_tls_handshake_failures_total",
        "sluice_upstream_requests_total",
        "sluice_upstream_connections_total",
        "sluice_upstream_reused_requests_total",
        "sluice_upstream_in_flight",
        "sluice_upstream_idle_connections",
        "sluice_upstream_available",
        "sluice_upstream_ejections_total",
        "sluice_health_checks_total",
        "sluice_health_check_failures_total",
        "sluice_upstream_rejected_total",
        "sluice_config_reloads_total",
    ] {
        assert!(types.contains_key(family), "family {family} missing");
    }
    let route = "site=\"example.test\",route=\"/\",upstream=\"origins\"";
    assert_eq!(samples[&format!("sluice_requests_total{{{route},status=\"2xx\"}}")], 3.0);
    assert_eq!(samples[&format!("sluice_request_duration_seconds_count{{{route}}}")], 3.0);
    assert_eq!(samples[&format!("sluice_upstream_duration_seconds_count{{{route}}}")], 3.0);
    let ping = "site=\"example.test\",route=\"/ping\",upstream=\"-\"";
    assert_eq!(samples[&format!("sluice_requests_total{{{ping},status=\"2xx\"}}")], 1.0);
    assert_eq!(samples[&format!("sluice_upstream_duration_seconds_count{{{ping}}}")], 0.0);
    assert_eq!(samples["sluice_connections_accepted_total{listener=\"public\"}"], 4.0);
    assert_eq!(
        samples[&format!("sluice_upstream_requests_total{{upstream=\"origins\",server=\"{}\"}}", origin.addr)],
        3.0
    );

    let (status, _, _) = admin_get(admin, "/nope", None).await;
    assert_eq!(status, 404);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_protects_every_endpoint() {
    let origin = Origin::named("hello").await;
    let config = simple_config(&[origin.addr], "").replace(
        "server { access-log \"off\" }",
        "server {\n    access-log \"off\"\n    admin \"127.0.0.1:0\" token=\"s3cret\"\n}",
    );
    let proxy = Proxy::start(&config).await;
    let admin = proxy.server.as_ref().unwrap().admin_addr().unwrap();
    for path in ["/live", "/metrics", "/upstreams"] {
        let (status, headers, _) = admin_get(admin, path, None).await;
        assert_eq!(status, 401, "{path}");
        assert_eq!(headers["www-authenticate"], "Bearer");
        assert_eq!(admin_get(admin, path, Some("wrong")).await.0, 401);
        assert_eq!(admin_get(admin, path, Some("s3cret")).await.0, 200, "{path}");
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_liner_serves_the_admin_api_with_admin() {
    let origin = Origin::named("hello").await;
    let (port, admin_port) = (free_port(), free_port());
    let (listen, admin, to) =
        (format!("127.0.0.1:{port}"), format!("127.0.0.1:{admin_port}"), format!("http://{}", origin.addr));
    let (mut child, _log) = tokio::task::spawn_blocking(move || {
        spawn_until_started(&["proxy", "--listen", &listen, "--to", &to, "--admin", &admin, "--access-log", "off"])
    })
    .await
    .unwrap();
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    assert_eq!(admin_get(admin_addr, "/live", None).await.0, 200);
    let (_, _, body) = admin_get(admin_addr, "/metrics", None).await;
    assert!(std::str::from_utf8(&body).unwrap().contains("# TYPE sluice_requests_total counter"));
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap().success());
}

async fn admin_post(addr: SocketAddr, path: &str) -> (u16, Bytes) {
    let mut c = h1_client(addr).await;
    let req = Request::post(path).header("host", "localhost").body(full("")).unwrap();
    let resp = c.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_can_drain_a_server_and_put_it_back() {
    let (a, b) = (Origin::named("a").await, Origin::named("b").await);
    let config = simple_config(&[a.addr, b.addr], "")
        .replace("server { access-log \"off\" }", "server {\n    access-log \"off\"\n    admin \"127.0.0.1:0\"\n}");
    let proxy = Proxy::start(&config).await;
    let admin = proxy.server.as_ref().unwrap().admin_addr().unwrap();
    let target = format!("/drain?upstream=origins&server={}", a.addr.to_string().replace(':', "%3A"));
    let (status, body) = admin_post(admin, &target).await;
    assert_eq!(status, 200, "{body:?}");
    assert!(std::str::from_utf8(&body).unwrap().contains("\"drained\":true"));
    for _ in 0..6 {
        assert_eq!(get(proxy.addr(), "/").await.2, "b");
    }
    let (_, _, upstreams) = admin_get(admin, "/upstreams", None).await;
    assert!(std::str::from_utf8(&upstreams).unwrap().contains("\"drained\":true"));
    assert_eq!(admin_post(admin, &target.replace("/drain", "/undrain")).await.0, 200);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(get(proxy.addr(), "/").await.2);
    }
    assert_eq!(seen.len(), 2);
    // Mistakes: unknown server, missing parameters, wrong method.
    assert_eq!(admin_post(admin, "/drain?upstream=origins&server=10.9.9.9:1").await.0, 404);
    assert_eq!(admin_post(admin, "/drain?upstream=origins").await.0, 400);
    assert_eq!(admin_get(admin, "/drain", None).await.0, 405);
    proxy.shutdown().await;
}

/// `method path` on the admin API with these headers; the status.
async fn admin_status(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut c = h1_client(addr).await;
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    c.send_request(req.body(full("")).unwrap()).await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_and_foreign_hosts_are_refused() {
    let origin = Origin::named("a").await;
    let config = simple_config(&[origin.addr], "")
        .replace("server { access-log \"off\" }", "server {\n    access-log \"off\"\n    admin \"127.0.0.1:0\"\n}");
    let proxy = Proxy::start(&config).await;
    let admin = proxy.admin();
    let own = admin.to_string();
    // A browser's no-cors POST from another site.
    for headers in [
        vec![("host", own.as_str()), ("origin", "http://evil.example"), ("content-type", "text/plain")],
        vec![("host", own.as_str()), ("sec-fetch-site", "cross-site")],
        vec![("host", "localhost"), ("origin", "null")],
    ] {
        for path in
            ["/reload", "/drain?upstream=origins&server=x", "/undrain?upstream=origins&server=x", "/cache/purge"]
        {
            assert_eq!(admin_status(admin, "POST", path, &headers).await, 403, "{path} {headers:?}");
        }
    }
    // DNS rebinding: a foreign name in Host cannot read anything without a token.
    for path in ["/config", "/metrics", "/upstreams"] {
        assert_eq!(admin_status(admin, "GET", path, &[("host", "evil.example:9901")]).await, 421, "{path}");
        assert_eq!(admin_status(admin, "GET", path, &[("host", own.as_str())]).await, 200, "{path}");
        assert_eq!(admin_status(admin, "GET", path, &[("host", "[::1]:9901")]).await, 200, "{path}");
    }
    // A same-origin request from the admin's own page, and curl, still work.
    let same = [("host", own.as_str()), ("origin", &format!("http://{own}")), ("sec-fetch-site", "same-origin")];
    assert_ne!(admin_status(admin, "POST", "/drain?upstream=origins&server=x", &same).await, 403);
    // With a token, any name may be used.
    let config = simple_config(&[origin.addr], "").replace(
        "server { access-log \"off\" }",
        "server {\n    access-log \"off\"\n    admin \"127.0.0.1:0\" token=\"t\"\n}",
    );
    let proxy = Proxy::start(&config).await;
    let headers = [("host", "admin.internal"), ("authorization", "Bearer t")];
    assert_eq!(admin_status(proxy.admin(), "GET", "/config", &headers).await, 200);
}
