//! The admin API: a small HTTP/1.1 service on its own listener (loopback by default),
//! optionally behind a bearer token. JSON everywhere except `/metrics` (Prometheus text).
//! Reference: docs/admin-api.md.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use sluice_core::{Body, ConnectionInfo, HttpService, Incoming};
use sluice_filters::access_log::push_json_str;

use crate::metrics;
use crate::server::{Control, ReloadError};

/// The admin HTTP service: it reports on (and reloads) the server's current generation.
#[derive(Debug, Clone)]
pub struct AdminService(pub Arc<Control>);

fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Body::full(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r.headers_mut().insert(header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    r
}

impl AdminService {
    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let generation = self.0.current();
        let Some(token) = generation.config.server.admin.as_ref().and_then(|a| a.token.as_ref()) else {
            return true;
        };
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
    }

    fn upstreams_json(&self) -> String {
        let now = sluice_upstream::health::now_ms();
        let mut out = String::from("[");
        for (gi, g) in self.0.current().upstreams.iter().enumerate() {
            if gi > 0 {
                out.push(',');
            }
            out.push_str("{\"name\":");
            push_json_str(&mut out, g.name());
            let _ = write!(
                out,
                ",\"algorithm\":\"{:?}\",\"in_flight\":{},\"rejected\":{},\"servers\":[",
                g.algorithm(),
                g.limits().in_flight(),
                g.limits().rejected()
            );
            for (bi, b) in g.backends().iter().enumerate() {
                if bi > 0 {
                    out.push(',');
                }
                let h = b.health();
                out.push_str("{\"address\":");
                push_json_str(&mut out, b.name());
                let last_check = match h.last_check() {
                    Some((at, ok)) => format!("{{\"passed\":{ok},\"ms_ago\":{}}}", now.saturating_sub(at)),
                    None => "null".to_owned(),
                };
                let stats = b.stats();
                let _ = write!(
                    out,
                    ",\"ip\":\"{}\",\"weight\":{},\"drained\":{},\"available\":{},\"ejected\":{},\"ejections\":{},\"check\":\"{}\",\"last_check\":{last_check},\"in_flight\":{},\"latency_ewma_ms\":{:.3},\"requests\":{},\"connections\":{},\"reused\":{},\"idle\":{}}}",
                    b.addr(),
                    b.weight(),
                    h.drained(),
                    h.available(now),
                    h.ejected(now),
                    h.ejections_total(),
                    if h.checked_ok() { "healthy" } else { "unhealthy" },
                    stats.in_flight(),
                    stats.latency_ewma_us() / 1000.0,
                    stats.requests.load(Ordering::Relaxed),
                    stats.connects.load(Ordering::Relaxed),
                    stats.reused.load(Ordering::Relaxed),
                    b.idle_connections(),
                );
            }
            out.push_str("]}");
        }
        out.push(']');
        out
    }
}

impl AdminService {
    /// `POST /cache/purge?key=URL` (every variant stored for that URL) or `?tag=TAG`
    /// (every entry whose `Surrogate-Key`/`Cache-Tag` names it).
    async fn purge(&self, query: &str) -> Response<Body> {
        let Some(cache) = self.0.current().cache.clone() else {
            return json(StatusCode::NOT_FOUND, "{\"error\":\"no site or route caches\"}".into());
        };
        let param = |name: &str| {
            query.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                (k == name).then(|| percent_decode(v))
            })
        };
        let (what, purged) = match (param("key"), param("tag")) {
            (Some(key), None) => (format!("key {key}"), cache.purge_key(&key).await),
            (None, Some(tag)) => (format!("tag {tag}"), cache.purge_tag(tag).await),
            _ => {
                return json(
                    StatusCode::BAD_REQUEST,
                    "{\"error\":\"give key= (like http://example.com/path?q) or tag=\"}".into(),
                )
            }
        };
        tracing::info!(what = %what, purged, "cache purged through the admin API");
        json(StatusCode::OK, format!("{{\"purged\":{purged}}}"))
    }

    /// `POST /reload`: reloads the configuration file; 200 with the new version, or 400
    /// (invalid file, with its diagnostics) / 500 (cannot be applied) and nothing changed.
    async fn reload(&self) -> Response<Body> {
        match self.0.reload().await {
            Ok(done) => {
                let list = |addrs: &[std::net::SocketAddr]| {
                    addrs.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(",")
                };
                json(
                    StatusCode::OK,
                    format!(
                        "{{\"reloaded\":true,\"version\":{},\"hash\":\"{}\",\"listeners_added\":[{}],\"listeners_removed\":[{}]}}",
                        done.version,
                        done.hash,
                        list(&done.added),
                        list(&done.removed)
                    ),
                )
            }
            Err(e) => {
                let status = match e {
                    ReloadError::Invalid(_) => StatusCode::BAD_REQUEST,
                    ReloadError::NoFile => StatusCode::CONFLICT,
                    ReloadError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
                };
                let mut out = String::from("{\"reloaded\":false,\"error\":");
                push_json_str(&mut out, &e.to_string());
                out.push('}');
                json(status, out)
            }
        }
    }

    /// `POST /drain?upstream=NAME&server=KEY` (and `/undrain`): an operator takes a server
    /// out of (or back into) rotation; requests in flight on it finish.
    fn drain(&self, query: &str, drain: bool) -> Response<Body> {
        let param = |name: &str| {
            query.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                (k == name).then(|| percent_decode(v))
            })
        };
        let (Some(upstream), Some(server)) = (param("upstream"), param("server")) else {
            return json(
                StatusCode::BAD_REQUEST,
                "{\"error\":\"give upstream= and server= (as in /upstreams)\"}".into(),
            );
        };
        let found = self.0.current().upstreams.iter().find(|g| g.name() == upstream).and_then(|g| {
            g.backends().into_iter().find(|b| b.key() == server || b.name() == server || b.addr().to_string() == server)
        });
        let Some(backend) = found else {
            return json(StatusCode::NOT_FOUND, "{\"error\":\"no such upstream server\"}".into());
        };
        backend.health().set_drained(drain);
        tracing::info!(upstream = %upstream, server = %backend.key(), drained = drain, "server drained through the admin API");
        let mut out = String::from("{\"upstream\":");
        push_json_str(&mut out, &upstream);
        out.push_str(",\"server\":");
        push_json_str(&mut out, backend.key());
        let _ = write!(out, ",\"drained\":{drain}}}");
        json(StatusCode::OK, out)
    }
}

/// Decodes `%XX` escapes (and `+` as a space) in a query value.
fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the request names the admin listener itself in Host: its own address, a
/// loopback address or `localhost` (with any port).
fn local_host(req: &Request<Incoming>, conn: &ConnectionInfo) -> bool {
    let Some(host) = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()) else {
        // HTTP/1.0 without Host: nothing a browser sends.
        return req.version() == http::Version::HTTP_10;
    };
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !host.ends_with(']') && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip == conn.local_addr.ip(),
        Err(_) => false,
    }
}

/// Whether a browser says the request comes from another site: `Sec-Fetch-Site` other
/// than `same-origin` or `none`, or an `Origin` whose host is not the request's Host. A
/// `no-cors` form post or fetch from `evil.example` carries one of them; curl and
/// scripts send neither.
fn cross_site(req: &Request<Incoming>) -> bool {
    if let Some(site) = req.headers().get("sec-fetch-site") {
        if site != "same-origin" && site != "none" {
            return true;
        }
    }
    let Some(origin) = req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return false;
    };
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    origin == "null" || !origin_host.eq_ignore_ascii_case(host)
}

/// Compares without stopping at the first difference (the token is a secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl HttpService for AdminService {
    type Body = Body;

    async fn call(&self, req: Request<Incoming>, conn: &Arc<ConnectionInfo>) -> Response<Body> {
        let has_token = self.0.current().config.server.admin.as_ref().is_some_and(|a| a.token.is_some());
        if !has_token && !local_host(&req, conn) {
            // DNS rebinding: a page on `evil.example` that resolves to 127.0.0.1 reads
            // the API with its own name in Host.
            return json(
                StatusCode::MISDIRECTED_REQUEST,
                "{\"error\":\"without a token the admin API answers only to its own address or a loopback name in Host; set admin token=... to reach it by another name\"}".into(),
            );
        }
        if req.method() == Method::POST && cross_site(&req) {
            return json(StatusCode::FORBIDDEN, "{\"error\":\"cross-site requests are refused\"}".into());
        }
        if !self.authorized(&req) {
            let mut r = json(StatusCode::UNAUTHORIZED, "{\"error\":\"a bearer token is required\"}".into());
            r.headers_mut().insert(header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
            return r;
        }
        let path = req.uri().path();
        let known =
            ["/live", "/ready", "/config", "/upstreams", "/metrics", "/reload", "/drain", "/undrain", "/cache/purge"];
        if !known.contains(&path) {
            return json(StatusCode::NOT_FOUND, format!("{{\"error\":\"no such endpoint\",\"endpoints\":{known:?}}}"));
        }
        if path == "/drain" || path == "/undrain" || path == "/reload" || path == "/cache/purge" {
            if req.method() != Method::POST {
                let mut r = json(StatusCode::METHOD_NOT_ALLOWED, "{\"error\":\"use POST\"}".into());
                r.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static("POST"));
                return r;
            }
            if path == "/reload" {
                return self.reload().await;
            }
            if path == "/cache/purge" {
                return self.purge(req.uri().query().unwrap_or("")).await;
            }
            return self.drain(req.uri().query().unwrap_or(""), path == "/drain");
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = json(StatusCode::METHOD_NOT_ALLOWED, "{\"error\":\"use GET\"}".into());
            r.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let g = self.0.current();
        match path {
            "/live" => json(StatusCode::OK, "{\"live\":true}".into()),
            "/ready" => json(StatusCode::OK, "{\"ready\":true}".into()),
            "/config" => {
                let (ok, failed) = self.0.reload_counts();
                let c = &g.config;
                let mut addresses = String::new();
                for (i, a) in self.0.local_addrs().iter().enumerate() {
                    addresses.push_str(if i == 0 { "\"" } else { ",\"" });
                    let _ = write!(addresses, "{a}\"");
                }
                json(
                    StatusCode::OK,
                    format!(
                        "{{\"version\":{},\"hash\":\"{}\",\"loaded_at\":\"{}\",\"listeners\":{},\"addresses\":[{addresses}],\"upstreams\":{},\"sites\":{},\"reloads\":{{\"succeeded\":{ok},\"failed\":{failed}}}}}",
                        g.version,
                        g.hash,
                        g.loaded_at,
                        c.listeners.len(),
                        c.upstreams.len(),
                        c.sites.len()
                    ),
                )
            }
            "/upstreams" => json(StatusCode::OK, self.upstreams_json()),
            _ => {
                let mut text = metrics::render(&g.metrics, &g.listeners, &g.upstreams, self.0.reload_counts());
                if let Some(cache) = &g.cache {
                    metrics::render_cache(&mut text, cache.store());
                }
                metrics::render_security(&mut text, g.proxy.proxy().router(), &g.listeners, g.redis.as_deref());
                if let Some(tracer) = self.0.tracer() {
                    metrics::render_spans(&mut text, tracer.exported(), tracer.failed(), tracer.dropped());
                }
                let mut r = Response::new(Body::full(Bytes::from(text)));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(super::percent_decode("10.0.0.1%3A8080"), "10.0.0.1:8080");
        assert_eq!(super::percent_decode("a+b%2Fc%"), "a b/c%");
        assert_eq!(super::percent_decode("%zz"), "%zz");
    }
}
