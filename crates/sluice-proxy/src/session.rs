//! The per-request state the engine hands to every phase.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{request, HeaderValue, StatusCode};
use sluice_core::body::BodyStats;
use sluice_core::{Body, ConnectionInfo, HttpProtocol, Incoming};
use sluice_upstream::Backend;
use tokio::time::Instant;

/// One request going through the proxy.
///
/// `req` is the downstream request head as received (phases may change it before it is
/// forwarded; the upstream request is built from it). The rest records what happened, for
/// later phases and the access log.
#[derive(Debug)]
pub struct Session {
    /// The downstream request head.
    pub req: request::Parts,
    body: Option<Incoming>,
    first_frame: Option<http_body::Frame<bytes::Bytes>>,
    body_stats: Option<Arc<BodyStats>>,
    body_limits: sluice_core::body::BodyLimits,
    client: SocketAddr,
    conn: Arc<ConnectionInfo>,
    started: Instant,
    request_id: HeaderValue,
    trace: crate::trace::TraceContext,
    pub(crate) retries: u32,
    pub(crate) failed_peer: Option<Arc<Backend>>,
    pub(crate) upstream_addr: Option<SocketAddr>,
    pub(crate) upstream_reused: bool,
    pub(crate) upstream_time: Option<Duration>,
    pub(crate) status: Option<StatusCode>,
    pub(crate) bytes_out: u64,
    pub(crate) body_rewritten: bool,
    upstream_timeouts: Option<sluice_upstream::RequestTimeouts>,
}

impl Session {
    pub(crate) fn new(req: request::Parts, body: Incoming, conn: Arc<ConnectionInfo>) -> Self {
        static X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
        let request_id = match req.headers.get(&X_REQUEST_ID) {
            Some(id) if !id.is_empty() && id.len() <= 200 => id.clone(),
            _ => new_request_id(),
        };
        static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
        let trace = crate::trace::TraceContext::from_header(req.headers.get(&TRACEPARENT));
        Self {
            trace,
            req,
            body: Some(body),
            first_frame: None,
            body_stats: None,
            body_limits: Default::default(),
            client: conn.client_addr,
            conn,
            started: Instant::now(),
            request_id,
            retries: 0,
            failed_peer: None,
            upstream_addr: None,
            upstream_reused: false,
            upstream_time: None,
            body_rewritten: false,
            status: None,
            bytes_out: 0,
            upstream_timeouts: None,
        }
    }

    /// The client connection.
    pub fn connection(&self) -> &Arc<ConnectionInfo> {
        &self.conn
    }

    /// The client's address: the connection's peer (or the address its PROXY protocol
    /// header named), unless a filter set the real client behind trusted proxies.
    pub fn client_addr(&self) -> SocketAddr {
        self.client
    }

    /// Sets the client's address (the real client behind trusted proxies); the port is
    /// kept when the address is the connection's own, else 0 (unknown).
    pub fn set_client_ip(&mut self, ip: std::net::IpAddr) {
        if ip != self.client.ip() {
            self.client = SocketAddr::new(ip, 0);
        }
    }

    /// Limits the request body: at most `max` bytes (`413` beyond), and at most `idle`
    /// between two reads (`408` beyond). Call it before the body is read (from
    /// `request_filter`).
    pub fn limit_body(&mut self, limits: sluice_core::body::BodyLimits) {
        self.body_limits = limits;
    }

    /// What the request body failed with, once it failed.
    pub fn body_failure(&self) -> Option<sluice_core::body::BodyFailure> {
        self.body_stats.as_ref().and_then(|s| s.failure())
    }

    /// The downstream protocol.
    pub fn protocol(&self) -> HttpProtocol {
        self.conn.protocol
    }

    /// `https` on TLS connections, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.conn.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The host the client asked for (Host header, or the HTTP/2 authority), without the
    /// port. Not lower-cased.
    pub fn host(&self) -> Option<&str> {
        let raw = match self.req.headers.get(http::header::HOST) {
            Some(h) => h.to_str().ok()?,
            None => self.req.uri.authority()?.as_str(),
        };
        Some(strip_port(raw))
    }

    /// The authority the request is for and the origin is sent: the Host field (or the
    /// HTTP/2 `:authority`) with its port, lower-cased by request validation. Cache keys
    /// and anything else that must tell two origins' answers apart use this, not
    /// [`host`](Self::host), which drops the port.
    pub fn authority(&self) -> Option<&str> {
        match self.req.headers.get(http::header::HOST) {
            Some(h) => h.to_str().ok(),
            None => self.req.uri.authority().map(|a| a.as_str()),
        }
    }

    /// Gives this request its own upstream response timeouts instead of its group's (a
    /// long-lived stream, a gRPC call's deadline). Call it before the upstream is chosen.
    pub fn set_upstream_timeouts(&mut self, timeouts: sluice_upstream::RequestTimeouts) {
        self.upstream_timeouts = Some(timeouts);
    }

    /// The request's own upstream response timeouts, if a phase set them.
    pub fn upstream_timeouts(&self) -> Option<sluice_upstream::RequestTimeouts> {
        self.upstream_timeouts
    }

    /// The request path.
    pub fn path(&self) -> &str {
        self.req.uri.path()
    }

    /// The request id: the client's `X-Request-Id` if it sent a sane one, else a new
    /// random one. Sent upstream and echoed in the response.
    pub fn request_id(&self) -> &HeaderValue {
        &self.request_id
    }

    /// The W3C trace this request belongs to (continued from the client's `traceparent`,
    /// or started here).
    pub fn trace(&self) -> &crate::trace::TraceContext {
        &self.trace
    }

    /// How many times the request was retried on another server so far.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The server whose connect attempt failed just before this retry.
    pub fn failed_peer(&self) -> Option<&Arc<Backend>> {
        self.failed_peer.as_ref()
    }

    /// Time since the request head was received.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The upstream server the request was last sent to.
    pub fn upstream_addr(&self) -> Option<SocketAddr> {
        self.upstream_addr
    }

    /// Whether the last upstream connection was reused from the pool.
    pub fn upstream_reused(&self) -> bool {
        self.upstream_reused
    }

    /// Time from starting the upstream attempt to receiving the response head.
    pub fn upstream_time(&self) -> Option<Duration> {
        self.upstream_time
    }

    /// The status sent downstream (once known).
    pub fn status(&self) -> Option<StatusCode> {
        self.status
    }

    /// Request body bytes received from the client.
    pub fn bytes_in(&self) -> u64 {
        self.body_stats.as_ref().map_or(0, |s| s.bytes())
    }

    /// Response body bytes sent to the client.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out
    }

    /// Whether reading the request body failed.
    pub(crate) fn body_errored(&self) -> bool {
        self.body_stats.as_ref().is_some_and(|s| s.errored())
    }

    /// Says that the response body filter changes the body's length (compression, a body
    /// replaced by a cached one): the response is then sent without the original length,
    /// and the body filter is called at the end even when the original body is empty.
    /// Call it from `response_filter` (after removing `Content-Length`, or setting the new one).
    pub fn rewrite_body(&mut self) {
        self.body_rewritten = true;
    }

    /// Whether [`rewrite_body`](Self::rewrite_body) was called.
    pub fn body_rewritten(&self) -> bool {
        self.body_rewritten
    }

    /// Whether the request has a body that is still to be forwarded.
    pub fn has_body(&self) -> bool {
        use http_body::Body as _;
        self.first_frame.is_some() || self.body.as_ref().is_some_and(|b| !b.is_end_stream())
    }

    /// Copies the head's target and field values out of the connection's read buffer, which
    /// they otherwise share: the buffer (8 KiB or more) then is not held for as long as the
    /// request lives beside the one the connection reads the body into. Worth one small
    /// copy for requests with a body, which may take long to arrive (slow uploads);
    /// a bodiless request is usually answered before it matters.
    pub(crate) fn compact_head(&mut self) {
        let headers = &mut self.req.headers;
        let total: usize = headers.values().map(HeaderValue::len).sum::<usize>() + self.request_id.len();
        let mut buf = bytes::BytesMut::with_capacity(total);
        for value in headers.values() {
            buf.extend_from_slice(value.as_bytes());
        }
        buf.extend_from_slice(self.request_id.as_bytes());
        let buf = buf.freeze();
        let mut at = 0;
        for value in headers.values_mut() {
            let end = at + value.len();
            if let Ok(mut copy) = HeaderValue::from_maybe_shared(buf.slice(at..end)) {
                copy.set_sensitive(value.is_sensitive());
                *value = copy;
            }
            at = end;
        }
        if let Ok(id) = HeaderValue::from_maybe_shared(buf.slice(at..)) {
            self.request_id = id;
        }
        if let Ok(uri) = http::Uri::try_from(self.req.uri.to_string()) {
            self.req.uri = uri;
        }
    }

    /// Waits for the first chunk of the request body (if there is a body), so that a
    /// body whose framing is broken from the start (an invalid first chunk size) is
    /// rejected with 400 before any origin is contacted. Answers `100 Continue` to a
    /// client that asked for it.
    pub async fn read_body_start(&mut self) -> sluice_error::Result<()> {
        use http_body_util::BodyExt;
        use sluice_error::{Error, ErrorKind};
        if self.first_frame.is_some() || !self.has_body() {
            return Ok(());
        }
        let Some(body) = self.body.as_mut() else { return Ok(()) };
        let limits = self.body_limits;
        let frame = match limits.idle {
            Some(idle) => match tokio::time::timeout(idle, body.frame()).await {
                Ok(frame) => frame,
                Err(_) => {
                    return Err(Error::explain(
                        ErrorKind::ClientTimeout,
                        format!("no request body received for {idle:?} (body-read-timeout)"),
                    ))
                }
            },
            None => body.frame().await,
        };
        match frame {
            Some(Ok(frame)) => {
                if let (Some(max), Some(data)) = (limits.max, frame.data_ref()) {
                    if data.len() as u64 > max {
                        return Err(Error::explain(
                            ErrorKind::RequestBodyTooLarge,
                            format!("the request body is larger than {max} bytes"),
                        ));
                    }
                }
                self.first_frame = Some(frame);
                Ok(())
            }
            Some(Err(e)) => Err(Error::because(ErrorKind::InvalidRequest, "reading the request body", e)),
            None => Ok(()),
        }
    }

    /// Takes the request body for forwarding (empty if there is none or it was taken).
    pub fn take_body(&mut self) -> Body {
        use http_body::Body as _;
        let first = self.first_frame.take();
        let body = match (self.body.take(), first) {
            (Some(b), Some(first)) => Body::incoming_after(first, b),
            (Some(b), None) if !b.is_end_stream() => Body::incoming(b),
            _ => return Body::empty(),
        };
        let stats = Arc::new(BodyStats::default());
        self.body_stats = Some(stats.clone());
        body.with_stats(stats).with_limits(self.body_limits)
    }
}

/// Removes a `:port` suffix (keeping IPv6 brackets intact).
pub(crate) fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.find(']') {
            Some(end) => &host[..end + 2],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    }
}

/// 32 lowercase hex digits from a fast thread-local generator.
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = fastrand::u128(..);
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((n >> (i * 4)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }

    #[test]
    fn request_ids_are_unique_hex() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }
}
