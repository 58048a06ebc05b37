//! The Sluice runtime: everything between a listening socket and a request handler.
//!
//! - [`listener`]: binding sockets and the accept loop (connection limits, shutdown);
//! - [`server`]: one client connection, HTTP/1.1 or HTTP/2 (detected from the preface or
//!   chosen by the transport, e.g. ALPN later), graceful shutdown, keep-alive;
//! - [`guard`]: the byte-level HTTP/1 request framing guard in front of hyper's parser
//!   (rejects smuggling-prone framing) and the header/keep-alive timeouts;
//! - [`deadline`]: lazily re-armed timers for per-request timeouts on long-lived objects;
//! - [`body`]: the one body type used for requests sent upstream and responses sent down;
//! - [`shutdown`]: the process-wide shutdown signal and connection drain tracking;
//! - [`time`]: wall-clock dates for logs and reports;
//! - [`proxy_protocol`]: PROXY protocol v1/v2 headers (read on listeners, written to origins);
//! - [`tls`]: TLS termination (SNI, ALPN, client certificates, reload) and certificate loading.
//!
//! The request path itself (phases, forwarding) lives in `sluice-proxy`; this crate only
//! calls an [`HttpService`].

pub mod body;
pub mod cidr;
pub mod conn_limit;
pub mod deadline;
pub mod gcra;
pub mod guard;
pub mod listener;
pub mod proxy_protocol;
pub mod server;
pub mod shutdown;
pub mod time;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

pub use body::Body;
pub use hyper::body::Incoming;

/// An error type erased for bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The HTTP version a downstream connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpProtocol {
    /// HTTP/1.0 or HTTP/1.1.
    Http1,
    /// HTTP/2.
    Http2,
}

/// What the proxy knows about one client connection; shared by all its requests.
#[derive(Debug)]
pub struct ConnectionInfo {
    /// The client's address: the TCP peer's, or the one its PROXY protocol header names.
    pub client_addr: SocketAddr,
    /// The TCP peer's address (the load balancer's when a PROXY protocol header was read).
    pub peer_addr: SocketAddr,
    /// The PROXY protocol header the connection started with.
    pub proxy_header: Option<Box<proxy_protocol::Header>>,
    /// The local address the client connected to.
    pub local_addr: SocketAddr,
    /// Index of the listener in the configuration (routing tables are per listener).
    pub listener_id: usize,
    /// What the TLS handshake established; `None` on plain-text connections.
    pub tls: Option<tls::server::TlsInfo>,
    /// The protocol spoken on this connection.
    pub protocol: HttpProtocol,
    client_ip: http::HeaderValue,
    in_flight: AtomicUsize,
    finished: AtomicU64,
    sessions: AtomicU64,
    /// Woken when a request finishes (the framing guard waits on it to release idle
    /// sessions on crowded listeners).
    pub(crate) idle_waker: atomic_waker::AtomicWaker,
    /// The listener's drain signal, for work that outlives the connection's HTTP session
    /// (an upgraded tunnel) and must be waited for by a graceful shutdown.
    drain: Option<shutdown::Shutdown>,
    /// Header fields a request may carry (hyper enforces it on HTTP/1; the proxy engine
    /// checks it on HTTP/2, whose only limit of its own is the header block's size).
    pub max_headers: usize,
    /// Whether header names with an underscore are forwarded (by default they are dropped;
    /// see `sluice_proxy::validate`).
    pub underscores_in_headers: bool,
    /// HTTP/2 streams the client cancelled before their response, in the current window.
    client_resets: AtomicU32,
    reset_window: AtomicU32,
    /// Set when the client cancelled too many streams: the connection is to be closed.
    abusive: AtomicBool,
}

impl ConnectionInfo {
    /// Describes a new connection.
    pub fn new(
        client_addr: SocketAddr,
        local_addr: SocketAddr,
        listener_id: usize,
        protocol: HttpProtocol,
        tls: Option<tls::server::TlsInfo>,
    ) -> Self {
        Self {
            client_addr,
            peer_addr: client_addr,
            proxy_header: None,
            local_addr,
            listener_id,
            tls,
            protocol,
            client_ip: http::HeaderValue::try_from(client_addr.ip().to_string())
                .unwrap_or(http::HeaderValue::from_static("unknown")),
            in_flight: AtomicUsize::new(0),
            finished: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
            idle_waker: atomic_waker::AtomicWaker::new(),
            drain: None,
            max_headers: usize::MAX,
            underscores_in_headers: false,
            client_resets: AtomicU32::new(0),
            reset_window: AtomicU32::new(0),
            abusive: AtomicBool::new(false),
        }
    }

    /// Records the PROXY protocol header the connection started with: the client is the
    /// address it names (a `LOCAL` or `UNKNOWN` header leaves the TCP peer's).
    pub fn with_proxy_header(mut self, header: Box<proxy_protocol::Header>) -> Self {
        if let Some(source) = header.source() {
            self.client_addr = source;
            self.client_ip = http::HeaderValue::try_from(source.ip().to_string())
                .unwrap_or(http::HeaderValue::from_static("unknown"));
        }
        self.proxy_header = Some(header);
        self
    }

    /// Attaches the listener's drain signal (see [`drain_watcher`](Self::drain_watcher)).
    pub fn with_drain(mut self, drain: shutdown::Shutdown) -> Self {
        self.drain = Some(drain);
        self
    }

    /// Sets how many header fields a request may carry.
    pub fn with_max_headers(mut self, max: usize) -> Self {
        self.max_headers = max;
        self
    }

    /// Sets whether header names with an underscore are forwarded.
    pub fn with_underscores_in_headers(mut self, allow: bool) -> Self {
        self.underscores_in_headers = allow;
        self
    }

    /// A watcher of the listener's drain signal. Holding it makes a graceful shutdown (or a
    /// binary upgrade) wait for the holder, within the grace period: an upgraded tunnel
    /// (WebSocket) holds one until it closes.
    pub fn drain_watcher(&self) -> Option<shutdown::Shutdown> {
        self.drain.clone()
    }

    /// The client's IP address as a header value (for `X-Forwarded-For`), formatted once.
    pub fn client_ip(&self) -> &http::HeaderValue {
        &self.client_ip
    }

    /// Requests currently being served on this connection (response not finished).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub(crate) fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// HTTP/1 protocol sessions started on this connection: 1, plus one per time the
    /// connection went idle and released its session state.
    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }

    pub(crate) fn session_started(&self) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests finished on this connection so far.
    pub fn finished(&self) -> u64 {
        self.finished.load(Ordering::Acquire)
    }

    /// Counts a request the client cancelled before it was answered (an HTTP/2 stream
    /// reset); more than `max` in a 10-second window marks the connection abusive.
    pub(crate) fn client_cancelled(&self, max: u32) {
        static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let window = u32::try_from(EPOCH.get_or_init(std::time::Instant::now).elapsed().as_secs() / 10).unwrap_or(0);
        let count = if self.reset_window.swap(window, Ordering::Relaxed) == window {
            self.client_resets.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.client_resets.store(1, Ordering::Relaxed);
            1
        };
        if count > max && !self.abusive.swap(true, Ordering::Relaxed) {
            tracing::info!(client = %self.client_addr, cancelled = count, "closing connection: too many cancelled streams");
            self.idle_waker.wake();
        }
    }

    /// Whether the client cancelled too many requests (the connection is being closed).
    pub fn abusive(&self) -> bool {
        self.abusive.load(Ordering::Relaxed)
    }

    pub(crate) fn request_finished(&self) {
        self.finished.fetch_add(1, Ordering::AcqRel);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.idle_waker.wake();
    }
}

/// The request handler a listener serves: one call per request, always answering.
///
/// The handler never fails: errors become responses inside it (in `sluice-proxy`, in one
/// place). Connection-level problems (malformed framing, timeouts) are handled by the
/// server before the handler is called.
pub trait HttpService: Send + Sync + 'static {
    /// The response body type.
    type Body: http_body::Body<Data = bytes::Bytes, Error = BoxError> + Send + 'static;

    /// Serves one request.
    fn call(
        &self,
        request: http::Request<Incoming>,
        conn: &Arc<ConnectionInfo>,
    ) -> impl Future<Output = http::Response<Self::Body>> + Send;
}
