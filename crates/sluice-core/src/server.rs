//! One client connection: protocol detection, the hyper HTTP/1.1 or HTTP/2 server
//! session, request accounting and graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::guard::ServerIo;
use crate::listener::ListenerSettings;
use crate::shutdown::Shutdown;
use crate::{BoxError, ConnectionInfo, HttpProtocol, HttpService};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The longest an idle HTTP/1.1 connection lingers once its listener drains.
const DRAIN_LINGER: std::time::Duration = std::time::Duration::from_secs(1);
const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// HTTP/2 limits of a listener. The defaults are what the configuration reference
/// documents; hyper and h2 have defences of their own (see `docs/security.md`), and these
/// set each of them explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Settings {
    /// Streams a client may have open at once (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_concurrent_streams: u32,
    /// Streams the client opened and reset before they were served, at once; past it the
    /// connection gets GOAWAY `ENHANCE_YOUR_CALM` (Rapid Reset, CVE-2023-44487).
    pub max_pending_accept_reset_streams: usize,
    /// Streams the server had to reset because of the client's protocol errors, over the
    /// connection's life; past it, GOAWAY `ENHANCE_YOUR_CALM` ("MadeYouReset",
    /// CVE-2025-8671).
    pub max_local_error_reset_streams: usize,
    /// Streams reset by the client after they were accepted, per connection, in any
    /// 10-second window; past it the connection is closed with GOAWAY (a slower Rapid
    /// Reset that lets each request start before cancelling it). 0 turns the check off.
    pub max_client_resets: u32,
    /// Per-stream receive window (`SETTINGS_INITIAL_WINDOW_SIZE`).
    pub stream_window: u32,
    /// Connection receive window.
    pub connection_window: u32,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 128,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 200,
            max_client_resets: 1000,
            stream_window: 1 << 20,
            connection_window: 2 << 20,
        }
    }
}

/// How to choose the protocol of a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolHint {
    /// Look for the HTTP/2 preface (cleartext with prior knowledge), else HTTP/1.1.
    Detect,
    /// The transport decided HTTP/1.1 (e.g. ALPN `http/1.1`).
    Http1,
    /// The transport decided HTTP/2 (e.g. ALPN `h2`).
    Http2,
}

/// What the acceptor knows about a new connection.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The client's address.
    pub client: SocketAddr,
    /// The local address it connected to.
    pub local: SocketAddr,
    /// How to choose the protocol.
    pub hint: ProtocolHint,
    /// Whether closing needs an explicit shutdown of the stream first. Plain TCP does not:
    /// `close` sends the FIN after pending data, so the extra `shutdown` call is skipped.
    /// TLS does (to send `close_notify`).
    pub shutdown_on_close: bool,
    /// What the TLS handshake established, on TLS connections.
    pub tls: Option<crate::tls::server::TlsInfo>,
    /// The PROXY protocol header the connection started with (`client` is then the load
    /// balancer; the header names the real client).
    pub proxied: Option<Box<crate::proxy_protocol::Header>>,
}

/// Serves one connection until it closes, the keep-alive timeout ends it, or shutdown
/// has drained it. `open` counts the listener's open connections (see
/// [`crate::guard::GuardConfig::release_above`]).
pub async fn serve_connection<IO, S>(
    mut io: IO,
    accepted: Accepted,
    settings: &ListenerSettings,
    service: Arc<S>,
    shutdown: Shutdown,
    open: Arc<AtomicUsize>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService,
{
    let guard = settings.guard;
    let Accepted { client, local, hint, shutdown_on_close, tls, proxied } = accepted;
    let (protocol, prefix) = match hint {
        ProtocolHint::Http1 => (HttpProtocol::Http1, Bytes::new()),
        ProtocolHint::Http2 => (HttpProtocol::Http2, Bytes::new()),
        ProtocolHint::Detect if !settings.h2c => (HttpProtocol::Http1, Bytes::new()),
        // Boxed: detection happens once, its state should not stay in every connection's task.
        ProtocolHint::Detect => {
            match Box::pin(tokio::time::timeout(guard.header_read_timeout, detect(&mut io))).await {
                Ok(Ok(Some(found))) => found,
                Ok(Ok(None)) => return,
                Ok(Err(e)) => {
                    tracing::debug!(%client, error = %e, "connection failed before a request");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%client, "closing connection: nothing received in time");
                    return;
                }
            }
        }
    };
    // TLS seals each buffer of a vectored write as its own record (an AEAD pass and ~22
    // bytes each): hyper should hand it one flattened buffer instead.
    let flatten = tls.is_some();
    let mut info = ConnectionInfo::new(client, local, settings.id, protocol, tls)
        .with_drain(shutdown.clone())
        .with_max_headers(guard.max_headers)
        .with_underscores_in_headers(guard.underscores_in_headers);
    if let Some(header) = proxied {
        info = info.with_proxy_header(header);
    }
    let info = Arc::new(info);
    // HTTP/1.1 responses made while the listener drains say `connection: close`, so the
    // client opens its next request elsewhere instead of racing our close (HTTP/2 has GOAWAY).
    let draining = (protocol == HttpProtocol::Http1).then(|| shutdown.flag());
    // HTTP/2 streams the client cancels before their answer are counted (Rapid Reset
    // with requests that start before being cancelled).
    let max_resets = match protocol {
        HttpProtocol::Http2 => settings.http2.max_client_resets,
        HttpProtocol::Http1 => 0,
    };
    let svc = {
        let info = info.clone();
        service_fn(move |req| {
            let service = service.clone();
            let info = info.clone();
            let draining = draining.clone();
            async move {
                let in_flight = InFlight::start(info.clone());
                let mut cancelled = Cancelled { info: &info, max: max_resets };
                let mut response = service.call(req, &info).await;
                cancelled.max = 0;
                drop(cancelled);
                if draining.is_some_and(|d| d.load(std::sync::atomic::Ordering::Relaxed)) {
                    response.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response.map(|body| TrackedBody { body, _in_flight: in_flight }))
            }
        })
    };
    match protocol {
        HttpProtocol::Http1 => {
            let io =
                ServerIo::http1(io, prefix, info.clone(), guard).with_load(open).shutdown_on_close(shutdown_on_close);
            serve_http1(io, svc, client, shutdown, flatten, info).await;
        }
        // Boxed: HTTP/2 session state is large and rare next to HTTP/1 idle connections,
        // which should not pay for its size in their task.
        HttpProtocol::Http2 => {
            let io = ServerIo::passthrough(io, prefix, info.clone(), guard);
            Box::pin(serve_http2(io, svc, info, client, shutdown, settings.http2)).await
        }
    }
}

/// The hyper service a connection runs: the handler wrapped with request accounting.
trait ConnService<B>:
    hyper::service::Service<
        http::Request<hyper::body::Incoming>,
        Response = http::Response<B>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<T, B> ConnService<B> for T where
    T: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<B>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// HTTP/1.1: one hyper session per burst of requests. When the connection goes idle the
/// guard may end the session (freeing hyper's buffers) without closing the socket; a new
/// session starts when the client speaks again.
async fn serve_http1<IO, Svc, B>(
    mut server_io: ServerIo<IO>,
    svc: Svc,
    client: SocketAddr,
    mut shutdown: Shutdown,
    flatten: bool,
    info: Arc<ConnectionInfo>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: ConnService<B>,
    B: http_body::Body<Data = Bytes, Error = BoxError> + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .half_close(false)
        .writev(!flatten)
        .max_buf_size(server_io.config().max_header_size.max(8192))
        .max_headers(server_io.config().max_headers)
        .header_read_timeout(None);
    // How long an idle connection stays open once draining starts: a request the client
    // is sending at that moment is served (with `connection: close`) instead of cut off.
    let linger = server_io.config().keepalive_timeout.min(DRAIN_LINGER);
    loop {
        server_io.connection().session_started();
        // Boxed so that an idle connection's task does not reserve room for it.
        let mut conn = Box::pin(builder.serve_connection(TokioIo::new(server_io), svc.clone()).with_upgrades());
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = shutdown.triggered() => {
                let finished = if info.in_flight() == 0 {
                    tokio::time::timeout(linger, conn.as_mut()).await.ok()
                } else {
                    None
                };
                match finished {
                    Some(r) => r,
                    None => {
                        // In flight: hyper finishes the response, then closes.
                        conn.as_mut().graceful_shutdown();
                        conn.as_mut().await
                    }
                }
            }
        };
        // `None`: the connection was upgraded and now belongs to the tunnel.
        let Some(parts) = Pin::into_inner(conn).into_parts() else { return };
        server_io = parts.io.into_inner();
        if server_io.owes_bad_request() {
            // The guard rejected a head that hyper could not answer itself (a head split
            // across reads stops looking complete once poisoned): answer for it.
            use tokio::io::AsyncWriteExt;
            let _ = server_io.write_all(BAD_REQUEST).await;
            let _ = server_io.flush().await;
            return;
        }
        if let Err(e) = result {
            tracing::debug!(%client, error = %e, "http/1 connection ended with an error");
            return;
        }
        if !server_io.released() || !parts.read_buf.is_empty() || shutdown.is_triggered() {
            return;
        }
        // Drop what is left of the old session before waiting: the empty `read_buf` still
        // owns hyper's whole read buffer (8 KiB or more), which is what releasing frees.
        drop(parts.service);
        drop(parts.read_buf);
        let next = tokio::select! {
            more = server_io.wait_for_request() => Some(more),
            _ = shutdown.triggered() => None,
        };
        let next = match next {
            Some(more) => more,
            None => matches!(tokio::time::timeout(linger, server_io.wait_for_request()).await, Ok(true)),
        };
        if !next {
            return;
        }
    }
}

async fn serve_http2<IO, Svc, B>(
    io: ServerIo<IO>,
    svc: Svc,
    info: Arc<ConnectionInfo>,
    client: SocketAddr,
    mut shutdown: Shutdown,
    h2: Http2Settings,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: ConnService<B>,
    B: http_body::Body<Data = Bytes, Error = BoxError> + Send + 'static,
{
    let guard = *io.config();
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(h2.max_concurrent_streams)
        .max_pending_accept_reset_streams(h2.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(h2.max_local_error_reset_streams)
        // Also bounds CONTINUATION frames: h2 refuses a header block past this size (and
        // counts CONTINUATION frames against it), instead of buffering a flood.
        .max_header_list_size(u32::try_from(guard.max_header_size).unwrap_or(u32::MAX))
        .initial_stream_window_size(h2.stream_window)
        .initial_connection_window_size(h2.connection_window);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(io), svc));
    let mut idle_check = tokio::time::interval(guard.keepalive_timeout);
    idle_check.tick().await;
    let mut last_finished = u64::MAX;
    // Resolves when the client cancelled too many streams (`ConnectionInfo::abusive`).
    let abusive = std::future::poll_fn(|cx| {
        if info.abusive() {
            return std::task::Poll::Ready(());
        }
        info.idle_waker.register(cx.waker());
        if info.abusive() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    });
    let mut abusive = pin!(abusive);
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            () = abusive.as_mut() => {
                conn.as_mut().graceful_shutdown();
                break conn.await;
            }
            _ = shutdown.triggered() => {
                conn.as_mut().graceful_shutdown();
                break conn.await;
            }
            _ = idle_check.tick() => {
                let finished = info.finished();
                if info.in_flight() == 0 && finished == last_finished {
                    tracing::debug!(%client, "closing idle http/2 connection");
                    conn.as_mut().graceful_shutdown();
                    break conn.await;
                }
                last_finished = finished;
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%client, error = %e, "http/2 connection ended with an error");
    }
}

/// The part of the HTTP/2 preface that no HTTP/1 request line can start with.
const H2_PREFACE_LINE: usize = b"PRI * HTTP/2.0".len();
/// GOAWAY, last stream 0, PROTOCOL_ERROR (RFC 9113 §6.8).
const GOAWAY_PROTOCOL_ERROR: &[u8] = &[0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// Reads until the HTTP/2 preface is seen or ruled out; returns what was read. Bytes that
/// start like the preface's first line and then differ are an invalid preface, a
/// connection error (RFC 9113 §3.4): answered with GOAWAY `PROTOCOL_ERROR` and closed,
/// not handed to HTTP/1.
async fn detect<IO: AsyncRead + AsyncWrite + Unpin>(io: &mut IO) -> std::io::Result<Option<(HttpProtocol, Bytes)>> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if io.read_buf(&mut buf).await? == 0 {
            return Ok(None);
        }
        let n = buf.len().min(H2_PREFACE.len());
        if buf[..n] != H2_PREFACE[..n] {
            let matched = buf.iter().zip(H2_PREFACE).take_while(|(a, b)| a == b).count();
            if matched >= H2_PREFACE_LINE {
                use tokio::io::AsyncWriteExt;
                tracing::debug!("invalid HTTP/2 preface: GOAWAY PROTOCOL_ERROR");
                io.write_all(GOAWAY_PROTOCOL_ERROR).await?;
                io.flush().await?;
                return Ok(None);
            }
            return Ok(Some((HttpProtocol::Http1, buf.freeze())));
        }
        if n == H2_PREFACE.len() {
            return Ok(Some((HttpProtocol::Http2, buf.freeze())));
        }
    }
}

/// Counts a request whose handler future is dropped before it answered: the client reset
/// the stream. Disarmed (`max` 0) once the handler answered.
struct Cancelled<'a> {
    info: &'a Arc<ConnectionInfo>,
    max: u32,
}

impl Drop for Cancelled<'_> {
    fn drop(&mut self) {
        if self.max > 0 {
            self.info.client_cancelled(self.max);
        }
    }
}

/// Counts a request as in flight from the handler call until its response body is done.
struct InFlight(Arc<ConnectionInfo>);

impl InFlight {
    fn start(info: Arc<ConnectionInfo>) -> Self {
        info.request_started();
        Self(info)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

pin_project! {
    /// A response body that keeps its request counted as in flight until it is dropped.
    struct TrackedBody<B> {
        #[pin]
        body: B,
        _in_flight: InFlight,
    }
}

impl<B> http_body::Body for TrackedBody<B>
where
    B: http_body::Body<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
