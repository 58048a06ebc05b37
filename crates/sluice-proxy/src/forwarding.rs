//! Header hygiene: what changes between the downstream and the upstream message.
//!
//! Towards the origin: hop-by-hop headers are removed (the fixed list and every header
//! named in `Connection`), `Expect` is answered by the proxy itself, `X-Forwarded-For` gets
//! the client address appended, `X-Forwarded-Proto`/`-Host` are set to what this proxy saw
//! (a client cannot choose them), `Via` is appended, `X-Request-Id` is propagated, and the
//! client's Host is kept. Towards the client: hop-by-hop headers are removed and `Via`
//! appended.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{request, response, Method, Request, StatusCode, Uri, Version};
use sluice_core::HttpProtocol;
use sluice_upstream::UpstreamProtocol;

use crate::Session;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether the request asks for a protocol upgrade (WebSocket and others).
pub fn is_upgrade_request(req: &request::Parts) -> bool {
    req.version == Version::HTTP_11
        && req.headers.contains_key(header::UPGRADE)
        && connection_has(&req.headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Which hop-by-hop (and proxy-handled) headers a message carries, found in one pass
/// over its header names so that the common message, which has few or none, costs no
/// hash lookups for the absent ones.
#[derive(Debug, Default, Clone, Copy)]
struct HopHeaders {
    connection: bool,
    keep_alive: bool,
    proxy_connection: bool,
    transfer_encoding: bool,
    upgrade: bool,
    te: bool,
    expect: bool,
}

impl HopHeaders {
    fn scan(headers: &HeaderMap) -> Self {
        let mut found = Self::default();
        for name in headers.keys() {
            if *name == header::CONNECTION {
                found.connection = true;
            } else if *name == header::TRANSFER_ENCODING {
                found.transfer_encoding = true;
            } else if *name == header::UPGRADE {
                found.upgrade = true;
            } else if *name == header::TE {
                found.te = true;
            } else if *name == header::EXPECT {
                found.expect = true;
            } else if *name == KEEP_ALIVE {
                found.keep_alive = true;
            } else if *name == PROXY_CONNECTION {
                found.proxy_connection = true;
            }
        }
        found
    }
}

/// Removes hop-by-hop headers; keeps `Upgrade`/`Connection: upgrade` when `keep_upgrade`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    remove_found(headers, HopHeaders::scan(headers), keep_upgrade);
}

fn remove_found(headers: &mut HeaderMap, found: HopHeaders, keep_upgrade: bool) {
    if found.connection {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // The usual tokens name no other header (keep-alive is removed below anyway):
            // skipping them keeps the common case free of allocation.
            .filter(|t| !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("close"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            if keep_upgrade && name == header::UPGRADE {
                continue;
            }
            // Never let `Connection` strip the forwarding headers this proxy is about to set.
            if name != X_FORWARDED_FOR && name != X_REQUEST_ID {
                headers.remove(&name);
            }
        }
        headers.remove(header::CONNECTION);
    }
    if found.keep_alive {
        headers.remove(&KEEP_ALIVE);
    }
    if found.proxy_connection {
        headers.remove(&PROXY_CONNECTION);
    }
    if found.transfer_encoding {
        headers.remove(header::TRANSFER_ENCODING);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if found.upgrade {
        headers.remove(header::UPGRADE);
    }
}

/// Builds the request head sent upstream from the session's downstream head.
pub fn upstream_request(session: &Session, protocol: UpstreamProtocol, upgrade: bool) -> request::Parts {
    let down = &session.req;
    let (mut up, ()) = Request::new(()).into_parts();
    up.method = down.method.clone();
    up.headers = down.headers.clone();
    let headers = &mut up.headers;
    // Room for the forwarding headers below: one growth instead of several.
    headers.reserve(7);

    let found = HopHeaders::scan(headers);
    // TE is hop-by-hop, but `TE: trailers` must reach gRPC origins.
    let wants_trailers = found.te
        && headers
            .get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    remove_found(headers, found, upgrade);
    if found.te {
        headers.remove(header::TE);
    }
    if wants_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if found.expect {
        headers.remove(header::EXPECT);
    }

    // X-Forwarded-For: append the client address to any list already there. The address
    // is formatted once per connection (`ConnectionInfo::client_ip`), so the usual request,
    // which brings no X-Forwarded-For of its own, only shares those bytes.
    let client_ip = session.connection().client_ip();
    if headers.contains_key(&X_FORWARDED_FOR) {
        let mut xff = String::with_capacity(64);
        for prior in headers.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()) {
            xff.push_str(prior);
            xff.push_str(", ");
        }
        xff.push_str(client_ip.to_str().unwrap_or(""));
        if let Ok(v) = HeaderValue::try_from(xff) {
            headers.insert(&X_FORWARDED_FOR, v);
        }
    } else {
        headers.insert(&X_FORWARDED_FOR, client_ip.clone());
    }
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(session.scheme()));
    let host_value = down
        .headers
        .get(header::HOST)
        .cloned()
        .or_else(|| down.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
    if let Some(host) = &host_value {
        headers.insert(&X_FORWARDED_HOST, host.clone());
    }
    let via = match session.protocol() {
        HttpProtocol::Http1 if down.version == Version::HTTP_10 => "1.0 sluice",
        HttpProtocol::Http1 => "1.1 sluice",
        HttpProtocol::Http2 => "2 sluice",
    };
    headers.append(header::VIA, HeaderValue::from_static(via));
    headers.insert(&X_REQUEST_ID, session.request_id().clone());
    // W3C trace context: this hop's traceparent; a tracestate only goes with a trace the
    // client really sent.
    headers.insert(&TRACEPARENT, session.trace().upstream_header());
    if !session.trace().continued() {
        headers.remove(&TRACESTATE);
    }

    // PathAndQuery is backed by shared bytes: cloning it does not copy the path.
    let path = down
        .uri
        .path_and_query()
        .filter(|p| !p.as_str().is_empty())
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    match protocol {
        UpstreamProtocol::Http1 => {
            up.version = Version::HTTP_11;
            merge_cookie_crumbs(headers);
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(path);
            up.uri = Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"));
            if !headers.contains_key(header::HOST) {
                if let Some(host) = host_value {
                    headers.insert(header::HOST, host);
                }
            }
            // hyper sends a GET or HEAD whose body has no known length without its body
            // (it assumes such methods have none); the client sent one, so it is framed
            // explicitly instead of being dropped.
            if matches!(up.method, Method::GET | Method::HEAD)
                && session.has_body()
                && !headers.contains_key(header::CONTENT_LENGTH)
            {
                headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
            }
        }
        UpstreamProtocol::H2c | UpstreamProtocol::H2 => {
            up.version = Version::HTTP_2;
            let authority = host_value.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("localhost");
            let scheme = if protocol == UpstreamProtocol::H2 { "https" } else { "http" };
            up.uri = Uri::builder()
                .scheme(scheme)
                .authority(authority)
                .path_and_query(path)
                .build()
                .unwrap_or_else(|_| Uri::from_static("/"));
            headers.remove(header::HOST);
        }
    }
    up
}

/// HTTP/2 clients may send each cookie as a field of its own; HTTP/1.1 origins expect one
/// `Cookie` line, so the crumbs are joined with "; " (RFC 9113 8.2.3).
fn merge_cookie_crumbs(headers: &mut http::HeaderMap) {
    let mut crumbs = headers.get_all(header::COOKIE).iter();
    if crumbs.next().is_none() || crumbs.next().is_none() {
        return;
    }
    let mut joined = Vec::with_capacity(256);
    for crumb in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(crumb.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// Cleans a response head from upstream before it goes downstream.
pub fn downstream_response(session: &Session, response: &mut response::Parts) {
    let upgraded = response.status == StatusCode::SWITCHING_PROTOCOLS;
    response.headers.reserve(2);
    remove_hop_by_hop(&mut response.headers, upgraded);
    let via = match response.version {
        Version::HTTP_2 => "2 sluice",
        Version::HTTP_10 => "1.0 sluice",
        _ => "1.1 sluice",
    };
    response.headers.append(header::VIA, HeaderValue::from_static(via));
    if !response.headers.contains_key(&X_REQUEST_ID) {
        response.headers.insert(&X_REQUEST_ID, session.request_id().clone());
    }
    response.version = Version::default();
}

/// Methods that may be replayed on another connection (RFC 9110 section 9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}
