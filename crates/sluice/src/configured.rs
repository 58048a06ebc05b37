//! The server's [`Proxy`]: routing, header edits, respond/redirect and the access log,
//! all as filters chosen by the configuration.

use std::sync::Arc;
use std::time::Duration;

use http::header::HOST;
use http::uri::{Authority, Uri};
use http::{request, response};
use sluice_filters::access_log::AccessLog;

use crate::metrics::Metrics;
use crate::otlp::{Exporter, SpanRecord};
use crate::policy::ListenerPolicy;
use sluice_filters::cache::Lookup;
use sluice_filters::ratelimit::Decision as RateDecision;
use sluice_filters::router::{Matched, Router};
use sluice_proxy::{Backend, Error, ErrorKind, Flow, Proxy, Result, Session};

/// The proxy the `sluice` binary runs.
#[derive(Debug)]
pub struct ConfiguredProxy {
    router: Router,
    access_log: Option<Arc<AccessLog>>,
    metrics: Option<Arc<Metrics>>,
    tracer: Option<Arc<Exporter>>,
    /// Per-listener request limits and real-address rules, by listener slot.
    listeners: Vec<ListenerPolicy>,
}

/// Per-request state: which route matched.
#[derive(Debug, Default)]
pub struct RouteCtx {
    matched: Option<Matched>,
    /// A sticky-session cookie to set on the response (the server changed or was new).
    set_cookie: Option<http::HeaderValue>,
    /// Compresses (or decompresses) the response body.
    coder: Option<sluice_filters::compress::Coder>,
    /// The cache's part in a request that goes upstream.
    cache: Option<Box<sluice_filters::cache::Pending>>,
    /// The cache entry a hit is answered from (its compressed forms are kept with it).
    hit: Option<sluice_filters::cache::Hit>,
    /// A compressed body from the cache, sent instead of compressing again.
    compressed: Option<bytes::Bytes>,
    /// The compressed output being kept for the cache: coding and bytes so far.
    compressed_fill: Option<(&'static str, bytes::BytesMut)>,
    /// The route's in-flight slot, held until the response is done.
    in_flight: Option<sluice_filters::limits::InFlightGuard>,
}

impl ConfiguredProxy {
    /// A proxy from a built router, an optional access log and optional metrics.
    pub fn new(router: Router, access_log: Option<Arc<AccessLog>>, metrics: Option<Arc<Metrics>>) -> Self {
        Self { router, access_log, metrics, tracer: None, listeners: Vec::new() }
    }

    /// Applies these per-listener policies (indexed by listener slot).
    pub fn with_listeners(mut self, listeners: Vec<ListenerPolicy>) -> Self {
        self.listeners = listeners;
        self
    }

    /// Exports a span per request to this OTLP exporter.
    pub fn with_tracer(mut self, tracer: Option<Arc<Exporter>>) -> Self {
        self.tracer = tracer;
        self
    }

    /// The routing table.
    pub fn router(&self) -> &Router {
        &self.router
    }
}

/// Revalidates a stale cache entry in the background (`stale-while-revalidate`): one
/// request to a server of the route's upstream group, its answer handed to the cache.
async fn background_refresh(
    upstream: Arc<sluice_upstream::Upstream>,
    path: String,
    host: Option<http::HeaderValue>,
    refresh: sluice_filters::cache::Refresh,
) {
    use http_body_util::BodyExt as _;
    let fetched = async {
        let backend = upstream.select(Default::default(), None).ok_or("no server available")?;
        let conn = backend.checkout().await.map_err(|e| e.to_string())?;
        let uri = match (conn.protocol(), &host) {
            // HTTP/2 carries the authority in the request target.
            (sluice_upstream::UpstreamProtocol::H2 | sluice_upstream::UpstreamProtocol::H2c, Some(h)) => {
                format!("http://{}{path}", h.to_str().unwrap_or("localhost"))
            }
            _ => path,
        };
        let mut request = http::Request::new(sluice_core::Body::empty());
        *request.uri_mut() = uri.parse().map_err(|e: http::uri::InvalidUri| e.to_string())?;
        *request.headers_mut() = refresh.request_headers();
        for name in [http::header::CONNECTION, http::header::TE, http::header::UPGRADE, http::header::CONTENT_LENGTH] {
            request.headers_mut().remove(name);
        }
        if let Some(h) = &host {
            request.headers_mut().insert(HOST, h.clone());
        }
        let response = conn.send(request, true).await.map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let limit = usize::try_from(refresh.max_object()).unwrap_or(usize::MAX);
        let body = http_body_util::Limited::new(body, limit).collect().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((parts, body.to_bytes()))
    }
    .await;
    match fetched {
        Ok((parts, body)) => refresh.complete(parts.status, &parts.headers, body),
        Err(e) => tracing::debug!(error = %e, "background revalidation failed; the stale copy stays"),
    }
}

/// Holds a refused request for its limit's tarpit, if it has one (cut short when the
/// listener starts to drain, so that a shutdown does not wait for held refusals); answers
/// how long it held.
async fn tarpit(session: &Session, limit: &sluice_filters::ratelimit::RateLimit) -> Duration {
    if limit.tarpit.is_zero() {
        return Duration::ZERO;
    }
    let hold = limit.tarpit_hold();
    let started = tokio::time::Instant::now();
    match session.connection().drain_watcher() {
        Some(mut drain) => {
            tokio::select! {
                () = tokio::time::sleep(hold) => {}
                () = drain.triggered() => {}
            }
        }
        None => tokio::time::sleep(hold).await,
    }
    started.elapsed()
}

impl Proxy for ConfiguredProxy {
    type Ctx = RouteCtx;

    fn new_ctx(&self) -> RouteCtx {
        RouteCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RouteCtx) -> Result<Flow> {
        let listener = session.connection().listener_id;
        static DEFAULT_POLICY: std::sync::OnceLock<ListenerPolicy> = std::sync::OnceLock::new();
        let policy = self.listeners.get(listener).unwrap_or_else(|| DEFAULT_POLICY.get_or_init(Default::default));
        let target_len = session.req.uri.path_and_query().map_or(0, |p| p.as_str().len());
        if target_len > policy.max_uri_length {
            return Err(Error::explain(
                ErrorKind::UriTooLong,
                format!("request target of {target_len} bytes (max-uri-length {})", policy.max_uri_length),
            ));
        }
        if let Some(real_ip) = &policy.real_ip {
            let peer = session.connection().client_addr.ip();
            let client = real_ip.resolve(peer, &mut session.req.headers);
            session.set_client_ip(client);
        }
        // Route (and forward) the normalized path: `/%61dmin` and `/a/../admin` are `/admin`.
        let normalized = sluice_filters::normalize::checked(session.req.uri.path(), policy.escaped_slashes)
            .map_err(|why| Error::explain(ErrorKind::InvalidRequest, why))?;
        if let std::borrow::Cow::Owned(normal) = normalized {
            let path_and_query = match session.req.uri.query() {
                Some(q) => format!("{normal}?{q}"),
                None => normal,
            };
            let mut parts = session.req.uri.clone().into_parts();
            parts.path_and_query = path_and_query.parse().ok();
            if let Ok(uri) = Uri::from_parts(parts) {
                session.req.uri = uri;
            }
        }
        let matched = self
            .router
            .find_with(listener, session.host(), session.path(), &session.req.method, policy.case_insensitive_paths)
            .ok_or_else(|| Error::explain(ErrorKind::NoRoute, "no site or route matches"))?;
        ctx.matched = Some(matched);
        let route = self.router.route(matched);
        // TRACE echoes the request, cookies and credentials included, to whatever script
        // can read the answer: refused unless the route names it in `methods` (nginx
        // refuses it too).
        if session.req.method == http::Method::TRACE && !route.methods.contains(&http::Method::TRACE) {
            return Err(Error::explain(
                ErrorKind::Custom(405),
                "TRACE is refused (name it in the route's `methods` to allow it)",
            ));
        }
        if let Some(target) = &route.proxy {
            // A gRPC call's deadline replaces the group's response timeouts (up to
            // `grpc-timeout-max`); a streaming route has none of its own.
            let deadline = sluice_proxy::grpc::is_grpc(&session.req.headers)
                .then(|| sluice_proxy::grpc::timeout(&session.req.headers))
                .flatten()
                .map(|t| t.min(target.grpc_timeout_max));
            let timeouts = match deadline {
                Some(t) => Some(sluice_upstream::RequestTimeouts { first_byte: Some(t), read_idle: Some(t) }),
                None if target.streaming => {
                    Some(sluice_upstream::RequestTimeouts { first_byte: None, read_idle: None })
                }
                None => None,
            };
            if let Some(t) = timeouts {
                session.set_upstream_timeouts(t);
            }
        }
        if let Some(max) = route.max_body_size {
            let declared = session
                .req
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > max) {
                return Err(Error::explain(
                    ErrorKind::RequestBodyTooLarge,
                    format!("the request body is larger than {max} bytes"),
                ));
            }
        }
        session.limit_body(sluice_core::body::BodyLimits {
            max: route.max_body_size,
            idle: Some(policy.body_read_timeout),
        });
        // The rate limit comes before the in-flight limit: requests it delays or holds
        // (tarpit) must not take the slots of requests that are being served.
        if let Some(limit) = &route.rate_limit {
            // The sub-futures of this phase that only some routes need are boxed: the
            // request's future (held for its whole life, slow uploads included) then has the
            // size of the common path, not of its largest branch.
            match Box::pin(limit.decide(session.client_addr().ip(), &session.req.headers, matched.route)).await {
                RateDecision::Allow { .. } => {}
                RateDecision::Delay(wait) => Box::pin(tokio::time::sleep(wait)).await,
                RateDecision::Reject(retry_after) => {
                    tracing::debug!(limit = %limit.name, client = %session.client_addr(), "rate limited");
                    let held = Box::pin(tarpit(session, limit)).await;
                    return Ok(Flow::Respond(limit.reject(retry_after.saturating_sub(held))));
                }
            }
        }
        if let Some(limit) = &route.in_flight {
            match limit.try_acquire() {
                Some(slot) => ctx.in_flight = Some(slot),
                None => {
                    return Err(Error::explain(
                        ErrorKind::Overloaded,
                        format!("{} requests in flight on the route (max-in-flight)", limit.max()),
                    ))
                }
            }
        }
        if let Some(access) = &route.access {
            if let Some(refusal) = Box::pin(access.check(session)).await? {
                return Ok(Flow::Respond(refusal));
            }
        }
        let site = self.router.site(matched.site);
        for filter in &site.request_filters {
            if let Flow::Respond(response) = filter.on_request(session)? {
                return Ok(Flow::Respond(response));
            }
        }
        site.request_headers.apply(&mut session.req.headers);
        let route = self.router.route(matched);
        for filter in &route.request_filters {
            if let Flow::Respond(response) = filter.on_request(session)? {
                return Ok(Flow::Respond(response));
            }
        }
        if let Some(rule) = &route.cache {
            // Keyed on the authority with its port, exactly as the origin receives it: a
            // response made for `victim.example:1337` must not answer `victim.example`.
            let host = session.authority().unwrap_or("").to_owned();
            let req = &session.req;
            match Box::pin(rule.lookup(&req.method, &req.uri, session.scheme(), &host, &req.headers)).await {
                Lookup::Respond(mut response, hit) => {
                    // The stored response's request id was another request's.
                    response.headers_mut().insert("x-request-id", session.request_id().clone());
                    ctx.hit = hit;
                    return Ok(Flow::Respond(*response));
                }
                Lookup::RespondAndRefresh(mut response, refresh) => {
                    response.headers_mut().insert("x-request-id", session.request_id().clone());
                    if let Some(target) = &route.proxy {
                        let path = session.req.uri.path_and_query().map_or("/", |p| p.as_str());
                        let path = route.rewrite_path(path).into_owned();
                        let host = target
                            .host
                            .clone()
                            .or_else(|| session.req.headers.get(HOST).cloned())
                            .or_else(|| http::HeaderValue::try_from(host.as_str()).ok());
                        tokio::spawn(background_refresh(target.upstream.clone(), path, host, *refresh));
                    }
                    return Ok(Flow::Respond(*response));
                }
                Lookup::Forward(pending) => ctx.cache = Some(pending),
            }
        }
        if let Some(files) = &route.files {
            return Ok(Flow::Respond(files.serve(&session.req.method, &session.req.uri, &session.req.headers)));
        }
        Ok(Flow::Continue)
    }

    fn retry_policy(&self, _session: &Session, ctx: &RouteCtx) -> Option<Arc<sluice_proxy::retry::RetryPolicy>> {
        ctx.matched.and_then(|m| self.router.route(m).proxy.as_ref()).and_then(|t| t.retry.clone())
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut RouteCtx) -> Result<Arc<Backend>> {
        let route = ctx.matched.map(|m| self.router.route(m));
        let target = route
            .and_then(|r| r.proxy.as_ref())
            .ok_or_else(|| Error::explain(ErrorKind::Internal, "route has no upstream"))?;
        let upstream = &target.upstream;
        let sticky =
            target.sticky_cookie.as_deref().map(|name| (name, sluice_filters::affinity::cookie(session, name)));
        if let Some((_, Some(token))) = sticky {
            if let Some(b) = upstream.sticky(token, session.failed_peer()) {
                ctx.set_cookie = None;
                return Ok(b);
            }
        }
        let pick = target.affinity.as_ref().map(|k| k.pick(session)).unwrap_or_default();
        let chosen = upstream.select(pick, session.failed_peer()).ok_or_else(|| {
            Error::explain(ErrorKind::NoUpstream, format!("upstream `{}` has no server", upstream.name()))
        })?;
        // Sticky sessions: (re)pin the client to the server it got.
        if let Some((name, _)) = sticky {
            if let Some(token) = upstream.token_of(&chosen) {
                ctx.set_cookie = http::HeaderValue::try_from(format!("{name}={token}; Path=/; HttpOnly")).ok();
            }
        }
        Ok(chosen)
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut request::Parts,
        ctx: &mut RouteCtx,
    ) -> Result<()> {
        if let Some(pending) = &ctx.cache {
            pending.upstream_request(&mut upstream_request.headers);
        }
        let Some(route) = ctx.matched.map(|m| self.router.route(m)) else {
            return Ok(());
        };
        let Some(target) = &route.proxy else {
            return Ok(());
        };
        let path = upstream_request.uri.path_and_query().map_or("/", |p| p.as_str());
        let rewritten = route.rewrite_path(path);
        let new_path = match rewritten {
            std::borrow::Cow::Owned(p) => Some(p),
            std::borrow::Cow::Borrowed(_) => None,
        };
        if new_path.is_some() || target.host.is_some() {
            let mut parts = std::mem::take(&mut upstream_request.uri).into_parts();
            if let Some(p) = new_path {
                parts.path_and_query =
                    Some(p.parse().map_err(|e| Error::because(ErrorKind::InvalidRequest, "rewriting the path", e))?);
            }
            if let (Some(host), Some(_)) = (&target.host, &parts.authority) {
                parts.authority = Authority::try_from(host.as_bytes()).ok();
            }
            upstream_request.uri =
                Uri::from_parts(parts).map_err(|e| Error::because(ErrorKind::Internal, "rebuilding the URI", e))?;
        }
        if let Some(host) = &target.host {
            if upstream_request.uri.authority().is_none() {
                upstream_request.headers.insert(HOST, host.clone());
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut response::Parts,
        ctx: &mut RouteCtx,
    ) -> Result<()> {
        let Some(matched) = ctx.matched else {
            return Ok(());
        };
        for filter in &self.router.route(matched).response_filters {
            filter.on_response(session, response)?;
        }
        if let Some(rule) = &self.router.route(matched).cache {
            rule.strip_own_targeted(&mut response.headers);
        }
        if let Some(cookie) = ctx.set_cookie.take() {
            response.headers.append(http::header::SET_COOKIE, cookie);
        }
        self.router.site(matched.site).response_headers.apply(&mut response.headers);
        // Last, so that header edits (say, adding `no-transform`) are respected.
        if let Some(policy) = &self.router.route(matched).compress {
            ctx.coder = policy.start(&session.req.method, &session.req.headers, response);
            // A cache hit: each coding is compressed once and kept with the entry.
            if let (Some(coder), Some(hit)) = (&ctx.coder, &ctx.hit) {
                if !coder.is_decoder() {
                    let coding = coder.coding().token();
                    match hit.compressed(coding) {
                        Some(bytes) => {
                            response.headers.insert(http::header::CONTENT_LENGTH, bytes.len().into());
                            ctx.coder = None;
                            ctx.compressed = Some(bytes);
                        }
                        None => ctx.compressed_fill = Some((coding, bytes::BytesMut::new())),
                    }
                }
            }
            if ctx.coder.is_some() || ctx.compressed.is_some() {
                session.rewrite_body();
            }
        }
        Ok(())
    }

    fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut response::Parts,
        ctx: &mut RouteCtx,
    ) -> Result<()> {
        if let Some(pending) = &mut ctx.cache {
            pending.upstream_response(&session.req.method, &session.req.headers, upstream_response);
            if pending.replaces_body() {
                session.rewrite_body();
            }
        }
        Ok(())
    }

    fn error_response(
        &self,
        session: &Session,
        error: &Error,
        ctx: &mut RouteCtx,
    ) -> http::Response<sluice_core::Body> {
        // stale-if-error: a failed revalidation serves the stale copy.
        if let Some(stale) = ctx.cache.as_ref().and_then(|p| p.error_response(&session.req.headers)) {
            return stale;
        }
        sluice_proxy::error_response(error)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RouteCtx,
    ) -> Result<()> {
        if let Some(pending) = &mut ctx.cache {
            pending.body(body, end_of_stream);
        }
        if let Some(compressed) = &mut ctx.compressed {
            *body = if end_of_stream { Some(std::mem::take(compressed)) } else { None };
            return Ok(());
        }
        if let Some(coder) = &mut ctx.coder {
            *body = coder
                .process(body.take(), end_of_stream)
                .map_err(|e| Error::because(ErrorKind::UpstreamProtocol, "compressing the response body", e))?;
            if let (Some((coding, kept)), Some(hit)) = (&mut ctx.compressed_fill, &ctx.hit) {
                if let Some(out) = body.as_ref() {
                    kept.extend_from_slice(out);
                }
                if kept.len() as u64 > hit.max_object() {
                    ctx.compressed_fill = None;
                } else if end_of_stream {
                    hit.store_compressed(coding, std::mem::take(kept).freeze());
                }
            }
        }
        Ok(())
    }

    fn logging(&self, session: &Session, error: Option<&Error>, ctx: &mut RouteCtx) {
        if let Some(metrics) = &self.metrics {
            metrics.route(ctx.matched.map(|m| (m.site, m.route))).record(
                session.status().map(|s| s.as_u16()),
                session.elapsed(),
                session.upstream_time(),
                session.bytes_in(),
                session.bytes_out(),
                session.retries(),
            );
        }
        if let Some(log) = &self.access_log {
            log.log(session, error);
        }
        if let Some(tracer) = &self.tracer {
            if let Some(span) = SpanRecord::from_session(session, error) {
                tracer.record(span);
            }
        }
    }
}
