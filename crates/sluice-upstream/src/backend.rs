//! Backends and their share of the connection pool.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use http::{Request, Response};
use http_body::Body as _;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use sluice_core::deadline::Deadline;
use sluice_core::Body;
use sluice_error::{Error, ErrorKind, Result};
use tokio::time::Instant;

use crate::body::{H1Driver, UpstreamBody};
use crate::connect;
use crate::health::{now_ms, GroupHealth, Health, Outcome};
use crate::limits::GroupLimits;
use crate::tls::{Stream, TlsConnector};
use sluice_core::proxy_protocol::{Header as ProxyHeader, Version as ProxyVersion};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::OwnedSemaphorePermit;

pub(crate) type H1Sender = http1::SendRequest<Body>;
pub(crate) type H1Connection = http1::Connection<TokioIo<Stream>, Body>;

/// Protocol spoken to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive; one request at a time per connection.
    Http1,
    /// HTTP/2 over cleartext with prior knowledge; one multiplexed connection.
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`); one multiplexed connection.
    H2,
}

/// Keep-alive pool limits.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Idle connections kept per backend.
    pub max_idle: usize,
    /// Idle connections older than this are closed.
    pub idle_timeout: Duration,
}

/// Timeouts towards a backend.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// Request sent until response head received.
    pub first_byte: Duration,
    /// Longest pause between two reads of the response body.
    pub read_idle: Duration,
}

/// The response timeouts of one request, when they differ from its group's: `None` is no
/// limit. A long-lived stream (gRPC streaming, server-sent events) has neither; a gRPC call
/// has its `grpc-timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTimeouts {
    /// Request sent until response head received.
    pub first_byte: Option<Duration>,
    /// Longest pause between two reads of the response body.
    pub read_idle: Option<Duration>,
}

impl From<Timeouts> for RequestTimeouts {
    fn from(t: Timeouts) -> Self {
        Self { first_byte: Some(t.first_byte), read_idle: Some(t.read_idle) }
    }
}

/// Everything about how to talk to a backend.
#[derive(Debug, Clone)]
pub struct BackendSettings {
    /// Protocol.
    pub protocol: UpstreamProtocol,
    /// Pool limits.
    pub pool: PoolSettings,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// TLS client of the backend's group; `None` for plain text.
    pub tls: Option<Arc<TlsConnector>>,
    /// Connections start with a PROXY protocol header of this version (before TLS).
    pub proxy_protocol: Option<ProxyVersion>,
    /// Largest response head and trailer block accepted (RFC 9113 §6.5.2 size: names,
    /// values and 32 bytes per field); larger ones fail the request visibly.
    pub max_header_size: usize,
}

impl Default for BackendSettings {
    fn default() -> Self {
        Self {
            protocol: UpstreamProtocol::Http1,
            pool: PoolSettings { max_idle: 128, idle_timeout: Duration::from_secs(60) },
            timeouts: Timeouts {
                connect: Duration::from_secs(5),
                first_byte: Duration::from_secs(60),
                read_idle: Duration::from_secs(60),
            },
            tls: None,
            proxy_protocol: None,
            max_header_size: 64 * 1024,
        }
    }
}

/// Connection and request counters of a backend, and what load balancing needs to know.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Connections opened.
    pub connects: AtomicU64,
    /// Requests sent on a pooled (reused) connection.
    pub reused: AtomicU64,
    /// Requests sent.
    pub requests: AtomicU64,
    in_flight: AtomicU64,
    /// Peak-EWMA of the time to the response head, in µs, as `f64` bits.
    ewma_bits: AtomicU64,
    /// When `ewma_bits` was last updated, in ms since [`clock_start`].
    ewma_at_ms: AtomicU64,
}

/// Decay time of the latency average: a past peak weighs 1/e after this long.
const EWMA_DECAY_MS: f64 = 10_000.0;

fn clock_start() -> std::time::Instant {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *START.get_or_init(std::time::Instant::now)
}

impl BackendStats {
    /// Requests sent whose response has not finished (or failed) yet.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request as outstanding.
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Ends an outstanding request.
    pub fn request_finished(&self) {
        let _ = self.in_flight.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Adds one response-head latency to the peak-EWMA: a slower response takes over at
    /// once, faster ones pull the average down over ~10 s.
    pub fn observe_latency(&self, latency: Duration) {
        let now = std::time::Instant::now();
        self.observe_latency_at(now.checked_sub(latency).unwrap_or(now), now);
    }

    /// [`BackendStats::observe_latency`] for a request sent at `sent` and answered at
    /// `answered` (two clock readings the caller already has).
    pub(crate) fn observe_latency_at(&self, sent: std::time::Instant, answered: std::time::Instant) {
        let rtt = answered.saturating_duration_since(sent).as_secs_f64() * 1e6;
        let now = u64::try_from(answered.saturating_duration_since(clock_start()).as_millis()).unwrap_or(u64::MAX);
        let last = self.ewma_at_ms.swap(now, Ordering::Relaxed);
        let current = f64::from_bits(self.ewma_bits.load(Ordering::Relaxed));
        let next = if rtt > current || current == 0.0 {
            rtt
        } else {
            let w = (-(now.saturating_sub(last) as f64) / EWMA_DECAY_MS).exp();
            current * w + rtt * (1.0 - w)
        };
        self.ewma_bits.store(next.to_bits(), Ordering::Relaxed);
    }

    /// The peak-EWMA latency in µs; 0 until a response was seen (new backends get tried).
    pub fn latency_ewma_us(&self) -> f64 {
        f64::from_bits(self.ewma_bits.load(Ordering::Relaxed))
    }
}

/// Keeps a request counted in [`BackendStats::in_flight`] (and in its group's in-flight
/// count, for the circuit breaker) until dropped.
pub(crate) struct Outstanding(Arc<Backend>);

impl Outstanding {
    pub(crate) fn backend(&self) -> &Arc<Backend> {
        &self.0
    }

    /// Counts a request, unless the group's in-flight limit refuses it.
    pub(crate) fn start(backend: &Arc<Backend>) -> Result<Self> {
        if let Some(limits) = backend.limits.get() {
            limits.start_request()?;
        }
        backend.stats.request_started();
        Ok(Self(backend.clone()))
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.stats.request_finished();
        if let Some(limits) = self.0.limits.get() {
            limits.finish_request();
        }
    }
}

/// An HTTP/1 connection: the request handle and the connection state machine, boxed once
/// when connected so that checkouts and returns to the pool move a pointer, not ~800 bytes.
pub(crate) struct H1 {
    pub(crate) sender: H1Sender,
    pub(crate) conn: H1Connection,
    /// First-byte and read-idle timeouts of whichever request uses the connection: one
    /// lazily re-armed timer per connection rather than a timer-wheel update per request.
    pub(crate) deadline: Deadline,
    /// The group's connection-limit permit, released when the connection closes.
    pub(crate) _permit: Option<OwnedSemaphorePermit>,
    /// The PROXY protocol header the connection started with: it may only carry requests
    /// of the client connection the header names.
    pub(crate) proxy_header: Option<Box<[u8]>>,
}

impl H1 {
    /// Drives the connection once and says whether it can take a request now: false when
    /// the origin closed it or it is still busy with the previous exchange.
    pub(crate) fn ready_now(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        if Pin::new(&mut self.conn).poll(cx).is_ready() {
            return false;
        }
        matches!(self.sender.poll_ready(cx), Poll::Ready(Ok(())))
    }

    /// Like [`H1::ready_now`] but waits for a busy connection to finish.
    pub(crate) fn poll_settled(&mut self, cx: &mut std::task::Context<'_>) -> Poll<bool> {
        if Pin::new(&mut self.conn).poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        self.sender.poll_ready(cx).map(|r| r.is_ok())
    }
}

struct IdleH1 {
    h1: Box<H1>,
    since: Instant,
}

/// One origin server and its idle connections.
pub struct Backend {
    name: String,
    key: String,
    addr: SocketAddr,
    weight: u32,
    settings: BackendSettings,
    idle: Mutex<Vec<IdleH1>>,
    /// The shared h2c connection; the async lock also makes concurrent first requests
    /// wait for one connection attempt instead of each opening their own.
    h2: tokio::sync::Mutex<Option<http2::SendRequest<Body>>>,
    stats: BackendStats,
    health: Arc<Health>,
    /// The group's passive-checking policy, set when the backend joins an [`crate::Upstream`].
    group: std::sync::OnceLock<Arc<GroupHealth>>,
    /// The group's circuit breakers, set when the backend joins an [`crate::Upstream`].
    limits: std::sync::OnceLock<Arc<GroupLimits>>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .field("weight", &self.weight)
            .finish()
    }
}

impl Backend {
    /// A backend at `addr`; `name` is how it was written (for logs).
    pub fn new(name: impl Into<String>, addr: SocketAddr, weight: u32, settings: BackendSettings) -> Self {
        let name = name.into();
        let key = if name.parse::<SocketAddr>().is_ok() { name.clone() } else { format!("{name}/{}", addr.ip()) };
        Self {
            key,
            name,
            addr,
            weight: weight.max(1),
            settings,
            idle: Mutex::new(Vec::new()),
            h2: tokio::sync::Mutex::new(None),
            stats: BackendStats::default(),
            health: Arc::new(Health::default()),
            group: std::sync::OnceLock::new(),
            limits: std::sync::OnceLock::new(),
        }
    }

    /// The address as configured (`host:port`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What identifies the backend among a group's: the configured address, plus the
    /// resolved IP when the name is a DNS name (one name can give several backends).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The resolved socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Relative weight.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Protocol, pool and timeouts.
    pub fn settings(&self) -> &BackendSettings {
        &self.settings
    }

    /// Connection counters.
    pub fn stats(&self) -> &BackendStats {
        &self.stats
    }

    /// Health: ejection by passive checks and the active checks' verdict.
    pub fn health(&self) -> &Health {
        &self.health
    }

    pub(crate) fn health_arc(&self) -> Arc<Health> {
        self.health.clone()
    }

    pub(crate) fn join_group(&self, group: Arc<GroupHealth>, limits: Arc<GroupLimits>) {
        let _ = self.group.set(group);
        let _ = self.limits.set(limits);
    }

    /// Counts the outcome of one request for passive health checking, and ejects the
    /// backend when its group's policy says so (and the group's cap allows).
    pub fn record(&self, outcome: Outcome) {
        let Some(group) = self.group.get() else { return };
        if !self.health.needs_clock(outcome, &group.policy) {
            self.health.record_success_fast();
            return;
        }
        let now = now_ms();
        if self.health.record(outcome, &group.policy, now) && group.may_eject(now) {
            let time = self.health.eject(&group.policy, now);
            tracing::warn!(
                upstream = %group.name,
                backend = %self.name,
                ejected_for = ?time,
                ejections = self.health.ejections(),
                "ejecting a failing backend"
            );
        }
    }

    /// Idle HTTP/1 connections currently pooled.
    pub fn idle_connections(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// A connection ready for one request: a pooled one if any is still usable, else a new
    /// one. Connect failures are retryable errors.
    pub async fn checkout(self: &Arc<Self>) -> Result<UpstreamConn> {
        self.checkout_for(None).await
    }

    /// Like [`checkout`](Self::checkout), for a request of the client connection that
    /// `proxy_header` (an encoded PROXY protocol header) names, when the backend's group
    /// sends the PROXY protocol: new connections start with that header, and pooled ones
    /// are reused only if they started with the same. Without a header, such a group's
    /// connections start with a `LOCAL` (v2) or `UNKNOWN` (v1) header.
    pub async fn checkout_for(self: &Arc<Self>, proxy_header: Option<&[u8]>) -> Result<UpstreamConn> {
        // Admission first: a request the circuit breaker refuses must not open a connection.
        let outstanding = Outstanding::start(self)?;
        let mut conn = self.checkout_inner(proxy_header).await?;
        conn.outstanding = Some(outstanding);
        Ok(conn)
    }

    async fn checkout_inner(self: &Arc<Self>, proxy_header: Option<&[u8]>) -> Result<UpstreamConn> {
        let proxy_header = proxy_header.filter(|_| self.settings.proxy_protocol.is_some());
        match self.settings.protocol {
            UpstreamProtocol::Http1 => {
                while let Some(mut idle) = self.take_idle(proxy_header) {
                    // Let the connection notice a close from the origin, then ask if it is ready.
                    let ready = poll_fn(|cx| Poll::Ready(idle.h1.ready_now(cx))).await;
                    if ready {
                        return Ok(self.h1_conn(idle.h1, true));
                    }
                }
                // Connecting (TCP, TLS, PROXY header) is boxed: its large future is paid
                // for only when the pool has nothing, not in every request's future.
                let h1 = Box::pin(self.connect_h1_with(false, proxy_header))
                    .await
                    .inspect_err(|_| self.record(Outcome::Failure))?;
                Ok(self.h1_conn(h1, false))
            }
            UpstreamProtocol::H2c | UpstreamProtocol::H2 => {
                let mut slot = self.h2.lock().await;
                if let Some(sender) = slot.as_ref().filter(|s| !s.is_closed()) {
                    let kind = Kind::H2(sender.clone());
                    return Ok(UpstreamConn { backend: self.clone(), kind, reused: true, outstanding: None });
                }
                let sender = Box::pin(self.connect_h2()).await.inspect_err(|_| self.record(Outcome::Failure))?;
                *slot = Some(sender.clone());
                Ok(UpstreamConn { backend: self.clone(), kind: Kind::H2(sender), reused: false, outstanding: None })
            }
        }
    }

    /// A new HTTP/1 connection that is never pooled, for protocol upgrades (WebSocket).
    /// `proxy_header` is as for [`checkout_for`](Self::checkout_for).
    pub async fn connect_for_upgrade(self: &Arc<Self>, proxy_header: Option<&[u8]>) -> Result<UpstreamConn> {
        let proxy_header = proxy_header.filter(|_| self.settings.proxy_protocol.is_some());
        let h1 =
            Box::pin(self.connect_h1_with(true, proxy_header)).await.inspect_err(|_| self.record(Outcome::Failure))?;
        Ok(UpstreamConn { backend: self.clone(), kind: Kind::Upgrade(h1), reused: false, outstanding: None })
    }

    /// Closes idle connections past the idle timeout; returns how many were closed.
    pub fn evict_expired(&self) -> usize {
        let timeout = self.settings.pool.idle_timeout;
        let expired: Vec<IdleH1> = match self.idle.lock() {
            Ok(mut idle) => {
                let now = Instant::now();
                let (keep, old): (Vec<_>, Vec<_>) = idle.drain(..).partition(|c| now - c.since < timeout);
                *idle = keep;
                old
            }
            Err(_) => Vec::new(),
        };
        expired.len()
    }

    fn h1_conn(self: &Arc<Self>, h1: Box<H1>, reused: bool) -> UpstreamConn {
        UpstreamConn { backend: self.clone(), kind: Kind::H1(h1), reused, outstanding: None }
    }

    fn take_idle(&self, proxy_header: Option<&[u8]>) -> Option<IdleH1> {
        let timeout = self.settings.pool.idle_timeout;
        let now = Instant::now();
        let mut idle = self.idle.lock().ok()?;
        if self.settings.proxy_protocol.is_some() {
            // Only a connection that started with the same header (the same client
            // connection, or none) may carry this request; the most recent one first.
            let at =
                idle.iter().rposition(|c| c.h1.proxy_header.as_deref() == proxy_header && now - c.since < timeout)?;
            return Some(idle.remove(at));
        }
        while let Some(c) = idle.pop() {
            if now - c.since < timeout {
                return Some(c);
            }
            // Most recently used is on top: everything below is older, so expired too.
            idle.clear();
        }
        None
    }

    pub(crate) fn put_idle(&self, h1: Box<H1>) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.settings.pool.max_idle {
                idle.push(IdleH1 { h1, since: Instant::now() });
            } else if self.settings.proxy_protocol.is_some() && self.settings.pool.max_idle > 0 {
                // Connections are per client here: the oldest client's gives way.
                idle.remove(0);
                idle.push(IdleH1 { h1, since: Instant::now() });
            }
        }
    }

    /// A TCP connection, with the TLS handshake done when the group uses TLS. `http1`
    /// asks for HTTP/1.1 by ALPN whatever the group's protocol (for upgrades).
    /// A group that sends the PROXY protocol gets `proxy_header` first (a `LOCAL` header
    /// when `None`).
    pub(crate) async fn connect_stream(&self, http1: bool, proxy_header: Option<&[u8]>) -> Result<Stream> {
        let mut tcp = connect::tcp(self.addr, self.settings.timeouts.connect).await?;
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        if let Some(version) = self.settings.proxy_protocol {
            let local;
            let header = match proxy_header {
                Some(h) => h,
                None => {
                    local = ProxyHeader::local(version).encode();
                    &local
                }
            };
            let timeout = self.settings.timeouts.connect;
            match tokio::time::timeout(timeout, tcp.write_all(header)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Err(Error::because(
                        ErrorKind::ConnectFailed,
                        format!("sending the PROXY protocol header to {}", self.addr),
                        e,
                    ))
                }
                Err(_) => {
                    return Err(Error::explain(
                        ErrorKind::ConnectTimeout,
                        format!("sending the PROXY protocol header to {}: stalled for {timeout:?}", self.addr),
                    ))
                }
            }
        }
        let Some(tls) = &self.settings.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let name = tls.name_for(&self.name)?;
        let timeout = self.settings.timeouts.connect;
        match tokio::time::timeout(timeout, tls.connect(name, tcp, http1)).await {
            Ok(result) => result,
            Err(_) => Err(Error::explain(
                ErrorKind::ConnectTimeout,
                format!("TLS handshake with {}: no answer in {timeout:?}", self.addr),
            )),
        }
    }

    /// A permit from the group's connection limit (none when unlimited).
    async fn connection_permit(&self) -> Result<Option<OwnedSemaphorePermit>> {
        match self.limits.get() {
            Some(limits) => limits.connection_permit(self.settings.timeouts.connect).await,
            None => Ok(None),
        }
    }

    async fn connect_h1_with(&self, force_http1: bool, proxy_header: Option<&[u8]>) -> Result<Box<H1>> {
        let permit = self.connection_permit().await?;
        let stream = self.connect_stream(force_http1, proxy_header).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::because(ErrorKind::ConnectFailed, format!("handshake with {}", self.addr), e))?;
        Ok(Box::new(H1 {
            sender,
            conn,
            deadline: Deadline::default(),
            _permit: permit,
            proxy_header: proxy_header.map(Box::from),
        }))
    }

    async fn connect_h2(&self) -> Result<http2::SendRequest<Body>> {
        let permit = self.connection_permit().await?;
        let stream = self.connect_stream(false, None).await?;
        if matches!(stream, Stream::Tls(_)) && stream.alpn() != Some(b"h2") {
            return Err(Error::explain(
                ErrorKind::UpstreamTls,
                format!("{} did not agree to HTTP/2 (ALPN h2); use protocol \"http1\" for this upstream", self.addr),
            ));
        }
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(2 << 20)
            // h2 drops (silently) the fields of a trailer block past this limit and only
            // fails a response head over it. It is set well above `max-header-size`,
            // which Sluice checks itself on heads and trailers and fails visibly.
            .max_header_list_size(h2_header_list_limit(self.settings.max_header_size))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::because(ErrorKind::ConnectFailed, format!("HTTP/2 handshake with {}", self.addr), e))?;
        let addr = self.addr;
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(upstream = %addr, error = %e, "HTTP/2 connection ended");
            }
        });
        Ok(sender)
    }
}

enum Kind {
    H1(Box<H1>),
    H2(http2::SendRequest<Body>),
    Upgrade(Box<H1>),
}

/// A connection checked out of a backend for one request.
pub struct UpstreamConn {
    backend: Arc<Backend>,
    kind: Kind,
    reused: bool,
    /// Counts the request from checkout to the end of its response.
    outstanding: Option<Outstanding>,
}

impl std::fmt::Debug for UpstreamConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConn").field("backend", &self.backend).field("reused", &self.reused).finish()
    }
}

impl UpstreamConn {
    /// Whether this connection served requests before.
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// The backend it belongs to.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// The protocol of the connection.
    pub fn protocol(&self) -> UpstreamProtocol {
        match self.kind {
            Kind::H2(_) => self.backend.settings.protocol,
            _ => UpstreamProtocol::Http1,
        }
    }

    /// Sends `request` and waits (at most the first-byte timeout) for the response head.
    ///
    /// The response body streams from the origin; for HTTP/1 it also drives the
    /// connection and puts it back in the pool when it ends. An error on a reused
    /// connection before any response is marked retryable when `replayable` (the request
    /// had no body), since the origin most likely closed the idle connection first.
    pub async fn send(self, request: Request<Body>, replayable: bool) -> Result<Response<UpstreamBody>> {
        let timeouts = self.backend.settings.timeouts.into();
        self.send_with(request, replayable, timeouts).await
    }

    /// [`send`](Self::send) with this request's own response timeouts.
    pub async fn send_with(
        self,
        request: Request<Body>,
        replayable: bool,
        timeouts: RequestTimeouts,
    ) -> Result<Response<UpstreamBody>> {
        let backend = self.backend.clone();
        let mut result = self.send_inner(request, replayable, timeouts).await;
        if let Ok(response) = &result {
            let size = header_list_size(response.headers());
            if size > backend.settings.max_header_size {
                result = Err(oversized(backend.addr, backend.settings.max_header_size, "response head", size));
            }
        }
        match &mut result {
            Ok(response) if response.status().is_server_error() => backend.record(Outcome::ServerError),
            Ok(response) if response.body().is_end_stream() => backend.record(Outcome::Success),
            // Otherwise success is decided by the body: it counts once the body is complete,
            // and a body cut short counts as a failure.
            Ok(response) => response.body_mut().record_success_at_end(),
            // Retryable here means a pooled connection the origin had closed: not its fault.
            Err(e) if e.retryable() => {}
            Err(_) => backend.record(Outcome::Failure),
        }
        result
    }

    async fn send_inner(
        self,
        request: Request<Body>,
        replayable: bool,
        timeouts: RequestTimeouts,
    ) -> Result<Response<UpstreamBody>> {
        let UpstreamConn { backend, kind, reused, outstanding } = self;
        backend.stats.requests.fetch_add(1, Ordering::Relaxed);
        let sent_at = Instant::now();
        if reused {
            backend.stats.reused.fetch_add(1, Ordering::Relaxed);
        }
        let body = request.body().stats().cloned();
        let max_header = backend.settings.max_header_size;
        let classify = |e: hyper::Error| upstream_error(e, &backend, reused && replayable);
        match kind {
            Kind::H1(mut h1) => {
                let mut conn_done = false;
                let fut = h1.sender.send_request(request);
                let mut fut = std::pin::pin!(fut);
                let mut timer = FirstByte::new(body, timeouts.first_byte);
                let waited = poll_fn(|cx| {
                    if !conn_done && Pin::new(&mut h1.conn).poll(cx).is_ready() {
                        conn_done = true;
                    }
                    if let Poll::Ready(r) = fut.as_mut().poll(cx) {
                        return Poll::Ready(Some(r));
                    }
                    timer.poll_expired(&mut h1.deadline, conn_done, cx).map(|()| None)
                })
                .await;
                h1.deadline.clear();
                let response = match waited {
                    Some(r) => r.map_err(classify)?,
                    None => return Err(first_byte_timeout(&backend, timeouts.first_byte.unwrap_or_default())),
                };
                backend.stats.observe_latency_at(sent_at.into_std(), std::time::Instant::now());
                let mut driver = (!conn_done).then(|| H1Driver { h1, backend: backend.clone() });
                if response.body().is_end_stream() {
                    // No body (HEAD, 204, 304, empty): one more turn settles the connection
                    // into idle, so it goes back to the pool now.
                    if let Some(mut d) = driver.take() {
                        let ready = poll_fn(|cx| Poll::Ready(d.h1.ready_now(cx))).await;
                        if ready {
                            backend.put_idle(d.h1);
                        } else {
                            driver = Some(d);
                        }
                    }
                }
                Ok(response
                    .map(|b| UpstreamBody::new(b, driver, timeouts.read_idle, backend.addr, outstanding, max_header)))
            }
            Kind::H2(mut sender) => {
                let fut = sender.send_request(request);
                let mut fut = std::pin::pin!(fut);
                let mut timer = FirstByte::new(body, timeouts.first_byte);
                let mut deadline = Deadline::default();
                let waited = poll_fn(|cx| {
                    if let Poll::Ready(r) = fut.as_mut().poll(cx) {
                        return Poll::Ready(Some(r));
                    }
                    timer.poll_expired(&mut deadline, false, cx).map(|()| None)
                })
                .await;
                let response = match waited {
                    Some(r) => r.map_err(classify)?,
                    None => return Err(first_byte_timeout(&backend, timeouts.first_byte.unwrap_or_default())),
                };
                backend.stats.observe_latency_at(sent_at.into_std(), std::time::Instant::now());
                Ok(response
                    .map(|b| UpstreamBody::new(b, None, timeouts.read_idle, backend.addr, outstanding, max_header)))
            }
            Kind::Upgrade(h1) => {
                let addr = backend.addr;
                let H1 { mut sender, conn, .. } = *h1;
                tokio::spawn(async move {
                    if let Err(e) = conn.with_upgrades().await {
                        tracing::debug!(upstream = %addr, error = %e, "upgraded connection ended");
                    }
                });
                let limit = timeouts.first_byte.unwrap_or(backend.settings.timeouts.first_byte);
                let waited = tokio::time::timeout(limit, sender.send_request(request)).await;
                let response = match waited {
                    Ok(r) => r.map_err(classify)?,
                    Err(_) => return Err(first_byte_timeout(&backend, limit)),
                };
                // A tunnel is not a request in flight: it may last for hours.
                drop(outstanding);
                Ok(response.map(|b| UpstreamBody::new(b, None, timeouts.read_idle, backend.addr, None, max_header)))
            }
        }
    }
}

/// What the HTTP/2 client advertises and enforces: four times the configured size, at
/// least 256 KiB (see `connect_h2`).
fn h2_header_list_limit(max: usize) -> u32 {
    u32::try_from(max.saturating_mul(4).max(256 * 1024)).unwrap_or(u32::MAX)
}

/// The size of a header block by RFC 9113 §6.5.2: each field's name and value plus 32.
pub fn header_list_size(headers: &http::HeaderMap) -> usize {
    headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 32).sum()
}

/// A response head or trailer block from `addr` over `max-header-size` (logged: the
/// request fails visibly, and the operator should know which origin did it).
pub(crate) fn oversized(addr: SocketAddr, max: usize, what: &str, size: usize) -> Box<Error> {
    tracing::warn!(upstream = %addr, size, max, "{what} too large");
    Error::explain(
        ErrorKind::UpstreamProtocol,
        format!("{what} of {size} bytes from {addr} is over max-header-size {max}"),
    )
}

/// The first-byte timer of one request: armed once the request has been sent in full (a
/// slow upload is bounded by the body timeout, not by the origin's), never when the
/// request has no limit (a long-lived stream).
struct FirstByte {
    body: Option<Arc<sluice_core::body::BodyStats>>,
    limit: Option<Duration>,
    armed: bool,
}

impl FirstByte {
    fn new(body: Option<Arc<sluice_core::body::BodyStats>>, limit: Option<Duration>) -> Self {
        Self { body, limit, armed: false }
    }

    /// Ready when the limit has passed since the body ended; `force` arms it at once (the
    /// connection ended, so the body will not).
    fn poll_expired(&mut self, deadline: &mut Deadline, force: bool, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if !self.armed {
            if !force && self.body.as_ref().is_some_and(|b| b.poll_done(cx).is_pending()) {
                return Poll::Pending;
            }
            self.armed = true;
            match self.limit {
                Some(limit) => deadline.set(Instant::now() + limit),
                None => deadline.clear(),
            }
        }
        deadline.poll_expired(cx)
    }
}

fn first_byte_timeout(backend: &Backend, after: Duration) -> Box<Error> {
    Error::explain(
        ErrorKind::UpstreamFirstByteTimeout,
        format!("no response head from {} within {after:?}", backend.addr),
    )
}

/// Sorts a hyper client error into Sluice's kinds.
pub(crate) fn upstream_error(e: hyper::Error, backend: &Backend, stale_retry_ok: bool) -> Box<Error> {
    let kind = if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        ErrorKind::UpstreamProtocol
    } else if e.is_timeout() {
        ErrorKind::UpstreamReadTimeout
    } else {
        ErrorKind::UpstreamReset
    };
    let closed_early = e.is_canceled() || e.is_incomplete_message() || e.is_closed();
    let mut err = Error::because(kind, format!("request to {}", backend.addr), e);
    if stale_retry_ok && closed_early {
        err.set_retryable(true);
    }
    err
}
