//! Authentication by an external service (nginx's `auth_request`, Traefik's
//! `forwardAuth`): before the request goes on, a `GET` with the client's headers is sent
//! to a server of an upstream group (pooled, balanced and health-checked like any other),
//! with what the original request was in `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri`,
//! `-For` (and nginx's `X-Original-Method` / `X-Original-URI`).
//!
//! - A `2xx` answer lets the request through; the configured headers of the answer (say
//!   `X-User`) are copied into the request sent upstream. The client's own values of those
//!   headers are always removed first, so it cannot set them itself.
//! - Any other answer is sent to the client as it is (status, headers, body up to 64 KiB):
//!   a `401` with its `WWW-Authenticate`, a `302` to a login page, a `403`.
//! - A service that cannot be reached or answers too late is a `502`/`504`, like any
//!   upstream failure, and the request goes no further (fail closed).

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response};
use http_body_util::BodyExt as _;
use sluice_core::Body;
use sluice_proxy::{Error, ErrorKind, Result, Session};
use sluice_upstream::Upstream;

const MAX_ANSWER: usize = 64 * 1024;

static FORWARDED_HEADERS: [HeaderName; 7] = [
    HeaderName::from_static("x-forwarded-method"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-uri"),
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-original-method"),
    HeaderName::from_static("x-original-uri"),
];

/// One `forward-auth` rule.
#[derive(Debug)]
pub struct ForwardAuth {
    /// The authentication service.
    pub upstream: Arc<Upstream>,
    /// The path asked.
    pub path: http::uri::PathAndQuery,
    /// Time for its answer (connect included).
    pub timeout: Duration,
    /// Client headers sent; empty: all but hop-by-hop ones and the body's.
    pub request_headers: Vec<HeaderName>,
    /// Answer headers copied into the request.
    pub response_headers: Vec<HeaderName>,
}

impl ForwardAuth {
    /// `Ok(None)` lets the request through; `Ok(Some(answer))` refuses it with the
    /// service's answer; `Err` when the service cannot answer.
    pub async fn check(&self, session: &mut Session) -> Result<Option<Response<Body>>> {
        for name in &self.response_headers {
            session.req.headers.remove(name);
        }
        let request = self.request(session)?;
        let asked = async {
            let backend = self.upstream.select(Default::default(), None).ok_or_else(|| {
                Error::explain(
                    ErrorKind::NoUpstream,
                    format!("forward-auth: upstream `{}` has no server", self.upstream.name()),
                )
            })?;
            let conn = backend.checkout().await?;
            let response = conn.send(request, true).await?;
            let (parts, body) = response.into_parts();
            if parts.status.is_success() {
                return Ok((parts, bytes::Bytes::new()));
            }
            let body = http_body_util::Limited::new(body, MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| Error::explain(ErrorKind::UpstreamProtocol, format!("forward-auth answer body: {e}")))?
                .to_bytes();
            Ok::<_, Box<Error>>((parts, body))
        };
        let (parts, body) = match tokio::time::timeout(self.timeout, asked).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(Error::explain(
                    ErrorKind::UpstreamFirstByteTimeout,
                    format!("forward-auth: no answer within {:?}", self.timeout),
                ))
            }
        };
        if parts.status.is_success() {
            for name in &self.response_headers {
                for value in parts.headers.get_all(name) {
                    session.req.headers.append(name.clone(), value.clone());
                }
            }
            return Ok(None);
        }
        tracing::debug!(client = %session.client_addr(), status = parts.status.as_u16(), "refused by forward-auth");
        let mut answer = Response::new(Body::full(body));
        *answer.status_mut() = parts.status;
        for (name, value) in &parts.headers {
            if is_hop_or_framing(name) && name != header::CONTENT_TYPE && name != header::CONTENT_ENCODING {
                continue;
            }
            answer.headers_mut().append(name.clone(), value.clone());
        }
        answer.headers_mut().entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
        Ok(Some(answer))
    }

    fn request(&self, session: &Session) -> Result<Request<Body>> {
        let mut request = Request::new(Body::empty());
        let protocol = self.upstream.backends().first().map(|b| b.settings().protocol);
        let host = session
            .req
            .headers
            .get(header::HOST)
            .cloned()
            .or_else(|| session.req.uri.authority().and_then(|a| HeaderValue::try_from(a.as_str()).ok()));
        *request.uri_mut() = match (protocol, &host) {
            // HTTP/2 carries the authority in the request target.
            (Some(sluice_upstream::UpstreamProtocol::H2 | sluice_upstream::UpstreamProtocol::H2c), Some(h)) => {
                format!("http://{}{}", h.to_str().unwrap_or("localhost"), self.path)
                    .parse()
                    .map_err(|e| Error::because(ErrorKind::Internal, "forward-auth target", e))?
            }
            _ => http::Uri::from(self.path.clone()),
        };
        let headers = request.headers_mut();
        for (name, value) in &session.req.headers {
            let wanted = if self.request_headers.is_empty() {
                !is_hop_or_framing(name) && !FORWARDED_HEADERS.contains(name)
            } else {
                self.request_headers.contains(name)
            };
            if wanted {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Some(h) = host {
            headers.insert(header::HOST, h.clone());
            headers.insert(FORWARDED_HEADERS[2].clone(), h);
        }
        let method = HeaderValue::try_from(session.req.method.as_str()).unwrap_or(HeaderValue::from_static("GET"));
        let uri = session.req.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri = HeaderValue::try_from(uri).unwrap_or(HeaderValue::from_static("/"));
        headers.insert(FORWARDED_HEADERS[0].clone(), method.clone());
        headers.insert(FORWARDED_HEADERS[1].clone(), HeaderValue::from_static(session.scheme()));
        headers.insert(FORWARDED_HEADERS[3].clone(), uri.clone());
        if let Ok(ip) = HeaderValue::try_from(session.client_addr().ip().to_string()) {
            headers.insert(FORWARDED_HEADERS[4].clone(), ip);
        }
        headers.insert(FORWARDED_HEADERS[5].clone(), method);
        headers.insert(FORWARDED_HEADERS[6].clone(), uri);
        Ok(request)
    }
}

fn is_hop_or_framing(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "expect"
            | "content-length"
            | "content-type"
            | "content-encoding"
    )
}
