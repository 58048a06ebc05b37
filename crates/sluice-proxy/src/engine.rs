//! The engine: runs the phases of a [`Proxy`] for each request, in a straight line with
//! one error exit.

use std::sync::Arc;

use http::header::{HeaderValue, CONNECTION};
use http::{Method, Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use sluice_core::{Body, ConnectionInfo, HttpProtocol, HttpService, Incoming};
use sluice_error::{Error, ErrorKind, Result};
use sluice_upstream::UpstreamBody;
use tokio::time::Instant;

use crate::body::{Finish, ProxyBody};
use crate::forwarding;
use crate::retry::RetryPolicy;
use crate::{Flow, Proxy, Session};

/// Turns a [`Proxy`] into a service the listeners can serve.
#[derive(Debug)]
pub struct HttpProxy<P> {
    proxy: Arc<P>,
    max_retries: u32,
}

impl<P: Proxy> HttpProxy<P> {
    /// Wraps `proxy`; a failed connect is retried once on another server by default.
    pub fn new(proxy: P) -> Self {
        Self { proxy: Arc::new(proxy), max_retries: 1 }
    }

    /// Sets how many times a request whose connection attempt failed is retried.
    pub fn with_max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// The wrapped proxy.
    pub fn proxy(&self) -> &Arc<P> {
        &self.proxy
    }

    async fn run(&self, session: &mut Session, ctx: &mut P::Ctx) -> Result<Outcome> {
        if session.req.method == Method::CONNECT {
            return Err(Error::explain(ErrorKind::Custom(405), "CONNECT is not supported"));
        }
        crate::validate::request(session)?;
        // HTTP/1 heads with more fields never get here (hyper answers 431 itself). HTTP/2
        // clients may send each cookie as a field of its own (RFC 9113 8.2.3): they count
        // as the one `cookie` line HTTP/1 would have had (looked up only past the limit).
        let headers = &session.req.headers;
        let max = session.connection().max_headers;
        if headers.len() > max {
            let cookies = headers.get_all(http::header::COOKIE).iter().count();
            let fields = headers.len() - cookies.saturating_sub(1);
            if fields > max {
                return Err(Error::explain(
                    ErrorKind::RequestHeaderTooLarge,
                    format!("{fields} header fields (max-headers {max})"),
                ));
            }
        }
        match self.proxy.request_filter(session, ctx).await? {
            Flow::Continue => {}
            Flow::Respond(response) => {
                let (mut parts, body) = response.into_parts();
                session.status = Some(parts.status);
                self.proxy.response_filter(session, &mut parts, ctx).await?;
                session.status = Some(parts.status);
                return Ok(Outcome::Local(Response::from_parts(parts, body)));
            }
        }
        let upgrade = session.protocol() == HttpProtocol::Http1 && forwarding::is_upgrade_request(&session.req);
        if !upgrade {
            if session.has_body() {
                session.compact_head();
            }
            session.read_body_start().await?;
        }
        let policy = self.proxy.retry_policy(session, ctx);
        let max_retries = policy.as_ref().map_or(self.max_retries, |p| p.max_retries);
        if let Some(budget) = policy.as_ref().and_then(|p| p.budget.as_ref()) {
            budget.request();
        }
        let first_attempt = Instant::now();
        // Whether one more retry may start: within the count, the deadline and the budget.
        let may_retry = |retries: u32| {
            retries < max_retries
                && policy.as_ref().is_none_or(|p| {
                    p.deadline.is_none_or(|d| first_attempt.elapsed() < d)
                        && p.budget.as_ref().is_none_or(|b| b.try_retry())
                })
        };
        loop {
            let backend = self.proxy.upstream_peer(session, ctx).await?;
            session.upstream_addr = Some(backend.addr());
            let attempt = Instant::now();
            // A group that sends the PROXY protocol gets connections of this client's own.
            let proxy_header = backend.settings().proxy_protocol.map(|v| crate::proxy_protocol::header_for(session, v));
            let proxy_header = proxy_header.as_deref();
            let checkout = if upgrade {
                backend.connect_for_upgrade(proxy_header).await
            } else {
                backend.checkout_for(proxy_header).await
            };
            let conn = match checkout {
                Ok(conn) => conn,
                Err(e) if e.retryable() && may_retry(session.retries) => {
                    tracing::info!(upstream = %backend.addr(), error = %e, "connect failed, retrying on another server");
                    session.retries += 1;
                    session.failed_peer = Some(backend);
                    continue;
                }
                Err(e) => return Err(e),
            };
            session.upstream_reused = conn.reused();
            let mut parts = forwarding::upstream_request(session, conn.protocol(), upgrade);
            self.proxy.upstream_request_filter(session, &mut parts, ctx).await?;
            let idempotent = forwarding::is_idempotent(&parts.method);
            let replayable = !session.has_body() && idempotent;
            // What the policy may replay: no body, and idempotent unless it opts in.
            let policy_replayable =
                !upgrade && !session.has_body() && policy.as_ref().is_some_and(|p| idempotent || p.non_idempotent);
            let body = session.take_body();
            let request = Request::from_parts(parts, body);
            let timeouts = session.upstream_timeouts().unwrap_or_else(|| backend.settings().timeouts.into());
            let send = conn.send_with(request, replayable, timeouts);
            let sent = match policy.as_ref().and_then(|p| p.per_try_timeout) {
                Some(limit) => match tokio::time::timeout(limit, send).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::explain(
                        ErrorKind::UpstreamFirstByteTimeout,
                        format!("no response head from {} within the per-try timeout {limit:?}", backend.addr()),
                    )),
                },
                None => send.await,
            };
            let response = match sent {
                Ok(r) => r,
                Err(e) if e.retryable() && session.retries < max_retries => {
                    tracing::debug!(upstream = %backend.addr(), error = %e, "pooled connection failed, retrying");
                    session.retries += 1;
                    continue;
                }
                Err(e) if session.body_errored() => {
                    let kind = match session.body_failure() {
                        Some(sluice_core::body::BodyFailure::TooLarge) => ErrorKind::RequestBodyTooLarge,
                        Some(sluice_core::body::BodyFailure::Timeout) => ErrorKind::ClientTimeout,
                        _ => ErrorKind::InvalidRequest,
                    };
                    return Err(Error::explain(kind, format!("request body: {e}")));
                }
                Err(e)
                    if policy_replayable
                        && policy.as_ref().is_some_and(|p| p.on_reset)
                        && may_retry(session.retries) =>
                {
                    session.retries += 1;
                    tracing::info!(upstream = %backend.addr(), error = %e, retry = session.retries, "no response, retrying on another server");
                    self.backoff(policy.as_deref(), session.retries).await;
                    session.failed_peer = Some(backend);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let status = response.status().as_u16();
            if policy_replayable
                && policy.as_ref().is_some_and(|p| p.retries_status(status))
                && may_retry(session.retries)
            {
                session.retries += 1;
                tracing::info!(upstream = %backend.addr(), status, retry = session.retries, "retrying on another server");
                drop(response);
                self.backoff(policy.as_deref(), session.retries).await;
                session.failed_peer = Some(backend);
                continue;
            }
            session.upstream_time = Some(attempt.elapsed());
            let (mut parts, body) = response.into_parts();
            if upgrade && parts.status == StatusCode::SWITCHING_PROTOCOLS {
                tunnel(session, &mut parts);
            }
            forwarding::downstream_response(session, &mut parts);
            if upgrade && parts.status != StatusCode::SWITCHING_PROTOCOLS {
                // The origin refused the upgrade; the framing guard stopped following this
                // client connection at the upgrade request, so it must not carry another.
                parts.headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            session.status = Some(parts.status);
            self.proxy.upstream_response_filter(session, &mut parts, ctx)?;
            self.proxy.response_filter(session, &mut parts, ctx).await?;
            session.status = Some(parts.status);
            return Ok(Outcome::Upstream(Response::from_parts(parts, body)));
        }
    }
}

impl<P: Proxy> HttpProxy<P> {
    async fn backoff(&self, policy: Option<&RetryPolicy>, retry: u32) {
        if let Some(p) = policy {
            let wait = p.backoff_for(retry);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

enum Outcome {
    Upstream(Response<UpstreamBody>),
    Local(Response<Body>),
}

/// Joins the client's and the origin's upgraded connections once both switch protocols.
fn tunnel(session: &mut Session, upstream: &mut http::response::Parts) {
    let client = session.client_addr();
    let (Some(down_on), Some(up_on)) =
        (session.req.extensions.remove::<OnUpgrade>(), upstream.extensions.remove::<OnUpgrade>())
    else {
        tracing::warn!(%client, "upgrade accepted by the origin but a side cannot be upgraded");
        return;
    };
    // Held for the tunnel's life: a drain (shutdown, binary upgrade) waits for the tunnel
    // within its grace period instead of cutting it at once.
    let drain = session.connection().drain_watcher();
    tokio::spawn(async move {
        let _drain = drain;
        let (down, up) = match tokio::try_join!(down_on, up_on) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(%client, error = %e, "upgrade failed");
                return;
            }
        };
        let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
        match tokio::io::copy_bidirectional(&mut down, &mut up).await {
            Ok((to_up, to_down)) => tracing::debug!(%client, to_up, to_down, "tunnel closed"),
            Err(e) => tracing::debug!(%client, error = %e, "tunnel ended with an error"),
        }
    });
}

/// A request without a response yet (see `HttpProxy::call`).
struct Unanswered<P: Proxy> {
    proxy: Arc<P>,
    state: Option<(Session, P::Ctx)>,
}

impl<P: Proxy> Drop for Unanswered<P> {
    fn drop(&mut self) {
        if let Some((mut session, mut ctx)) = self.state.take() {
            session.status = Some(StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST));
            let error = Error::explain(ErrorKind::ClientGone, "client went away before the response head");
            self.proxy.logging(&session, Some(&error), &mut ctx);
        }
    }
}

impl<P: Proxy> HttpService for HttpProxy<P> {
    type Body = ProxyBody<P>;

    async fn call(&self, request: Request<Incoming>, conn: &Arc<ConnectionInfo>) -> Response<ProxyBody<P>> {
        let (parts, body) = request.into_parts();
        let session = Session::new(parts, body, conn.clone());
        let ctx = self.proxy.new_ctx();
        // Until a response exists, the request is logged by this guard if the client goes
        // away (an HTTP/2 reset, a closed connection) and the future is dropped: every
        // request gets exactly one log line.
        let mut pending = Unanswered { proxy: self.proxy.clone(), state: Some((session, ctx)) };
        let outcome = match pending.state.as_mut() {
            Some((session, ctx)) => self.run(session, ctx).await,
            None => return Response::new(ProxyBody::empty()),
        };
        let Some((mut session, mut ctx)) = pending.state.take() else {
            return Response::new(ProxyBody::empty());
        };
        let proxy = self.proxy.clone();
        match outcome {
            Ok(Outcome::Upstream(response)) => {
                let (parts, body) = response.into_parts();
                let finish = Box::new(Finish { proxy, session, ctx, error: None });
                Response::from_parts(parts, ProxyBody::upstream(body, finish))
            }
            Ok(Outcome::Local(response)) => {
                let (parts, body) = response.into_parts();
                let finish = Box::new(Finish { proxy, session, ctx, error: None });
                Response::from_parts(parts, ProxyBody::local(body, finish))
            }
            Err(error) => {
                if error.side() == sluice_error::Side::Upstream {
                    tracing::warn!(client = %session.client_addr(), path = session.path(), error = %error, "proxying failed");
                } else {
                    tracing::debug!(client = %session.client_addr(), path = session.path(), error = %error, "request failed");
                }
                let response = self.proxy.error_response(&session, &error, &mut ctx);
                session.status = Some(response.status());
                let (parts, body) = response.into_parts();
                let finish = Box::new(Finish { proxy, session, ctx, error: Some(error) });
                Response::from_parts(parts, ProxyBody::local(body, finish))
            }
        }
    }
}
