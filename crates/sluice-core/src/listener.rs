//! Listening sockets and the accept loop.
//!
//! A listener binds a TCP socket (`SO_REUSEADDR`, a deep backlog, `TCP_NODELAY` on every
//! accepted connection), caps simultaneous connections by pausing `accept` at the limit
//! (the kernel backlog absorbs bursts, like nginx's `worker_connections`), and hands each
//! connection to [`crate::server::serve_connection`]. TLS and QUIC acceptors will sit beside
//! the TCP one and produce the same kind of stream for the server.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::cidr::CidrSet;
use crate::conn_limit::{ConnectionLimits, OpenByAddress};
use crate::gcra::Decision;
use crate::guard::GuardConfig;
use crate::proxy_protocol;
use crate::server::{serve_connection, Accepted, Http2Settings, ProtocolHint};
use crate::shutdown::Shutdown;
use crate::tls::server::TlsAcceptor;
use crate::HttpService;

/// Per-listener settings the runtime needs.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// Index of the listener (routing tables are per listener).
    pub id: usize,
    /// Name for logs.
    pub name: String,
    /// Maximum simultaneous connections.
    pub max_connections: usize,
    /// Framing guard limits and read timeouts.
    pub guard: GuardConfig,
    /// Accept HTTP/2 with prior knowledge beside HTTP/1.1 (plain-text listeners).
    pub h2c: bool,
    /// TLS termination; `None` for plain text.
    pub tls: Option<Arc<TlsAcceptor>>,
    /// Counters shared by every accept loop of the listener (for metrics).
    pub stats: Arc<ListenerStats>,
    /// HTTP/2 limits (streams, resets, windows).
    pub http2: Http2Settings,
    /// Connection limits per client address and new connections per second.
    pub limits: ConnectionLimits,
    /// Connections start with a PROXY protocol header from a trusted load balancer.
    pub proxy_protocol: Option<ProxyProtocolSettings>,
}

/// Accepting the PROXY protocol (v1 or v2) on a listener.
#[derive(Debug, Clone)]
pub struct ProxyProtocolSettings {
    /// Peers allowed to send headers; connections from any other peer are closed.
    pub trusted: CidrSet,
    /// Time to receive the whole header.
    pub timeout: Duration,
}

impl ListenerSettings {
    /// Settings with the documented defaults for listener `id`.
    pub fn new(id: usize, name: impl Into<String>) -> Self {
        Self {
            id,
            name: name.into(),
            max_connections: 10_000,
            guard: GuardConfig::default(),
            h2c: true,
            tls: None,
            stats: Default::default(),
            http2: Http2Settings::default(),
            limits: ConnectionLimits::default(),
            proxy_protocol: None,
        }
    }
}

/// A listener's connection counters.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Client connections open now (also what [`crate::guard::GuardConfig::release_above`]
    /// compares with).
    pub open: Arc<AtomicUsize>,
    /// Client connections accepted.
    pub accepted: std::sync::atomic::AtomicU64,
    /// TLS handshakes completed.
    pub tls_handshakes: std::sync::atomic::AtomicU64,
    /// TLS handshakes that failed (or timed out).
    pub tls_failures: std::sync::atomic::AtomicU64,
    /// Open connections per client address, and refusals by the per-address limits.
    pub by_address: Arc<OpenByAddress>,
    /// Connections closed because their PROXY protocol header was missing, invalid, late,
    /// or came from an untrusted peer.
    pub proxy_protocol_failures: std::sync::atomic::AtomicU64,
}

/// Binds a TCP listening socket, ready for [`serve`].
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    bind_one(addr, false)
}

/// Binds `count` sockets to one address with `SO_REUSEPORT`, so that the kernel spreads
/// new connections across them (one per single-threaded runtime). Port 0 is resolved
/// once: every socket gets the same port.
pub fn bind_shared(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let first = bind_one(addr, true)?;
    let addr = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..count {
        sockets.push(bind_one(addr, true)?);
    }
    Ok(sockets)
}

fn bind_one(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Accepted sockets inherit it on Linux: one setsockopt per listener, not per client.
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Accepts connections until shutdown, serving each on its own task.
pub async fn serve<S: HttpService>(
    listener: std::net::TcpListener,
    settings: Arc<ListenerSettings>,
    service: Arc<S>,
    shutdown: Shutdown,
) -> io::Result<()> {
    serve_live(listener, Arc::new(ArcSwap::new(settings)), service, shutdown).await
}

/// Like [`serve`], with settings that may be replaced while it runs (a configuration
/// reload): each new connection gets the settings current when it was accepted, and open
/// connections keep theirs. A changed `max_connections` resizes the limit in place.
pub async fn serve_live<S: HttpService>(
    listener: std::net::TcpListener,
    live: Arc<ArcSwap<ListenerSettings>>,
    service: Arc<S>,
    mut shutdown: Shutdown,
) -> io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let local = listener.local_addr()?;
    let first = live.load_full();
    let mut limit = first.max_connections;
    let slots = Arc::new(Semaphore::new(limit));
    tracing::info!(listener = %first.name, address = %local, "listening");
    drop(first);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.triggered() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.triggered() => break,
        };
        let settings = live.load_full();
        if settings.max_connections != limit {
            resize(&slots, &mut limit, settings.max_connections);
        }
        let (stream, client) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS: back off instead of spinning; the backlog holds clients.
                tracing::warn!(listener = %settings.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Linux copies TCP_NODELAY from the listening socket; elsewhere set it here.
        #[cfg(not(target_os = "linux"))]
        let _ = stream.set_nodelay(true);
        settings.stats.accepted.fetch_add(1, Ordering::Relaxed);
        // Over the listener's connection rate: this connection waits for its slot, and
        // accepting waits with it (the kernel's backlog holds the next clients meanwhile).
        if let Some(Decision::Delay(wait) | Decision::Reject(wait)) = settings.limits.rate.as_ref().map(|r| r.check(0))
        {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.triggered() => break,
            }
        }
        // Per-address limits; with the PROXY protocol they apply to the address it names,
        // once read (in the connection's task).
        let mut admitted = None;
        if settings.limits.per_address() && settings.proxy_protocol.is_none() {
            match settings.stats.by_address.admit(client.ip(), &settings.limits) {
                Ok(guard) => admitted = guard,
                Err(why) => {
                    tracing::debug!(listener = %settings.name, %client, ?why, "connection refused");
                    drop(stream);
                    continue;
                }
            }
        }
        let service = service.clone();
        let watcher = shutdown.clone();
        let open = settings.stats.open.clone();
        open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _permit = permit;
            serve_accepted(stream, client, local, admitted, &settings, service, watcher, open.clone()).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    // Close the socket before saying so: new clients are refused from this line on (unless
    // another process shares it: a binary upgrade hands it over).
    drop(listener);
    tracing::info!(listener = %live.load().name, address = %local, "stopped accepting");
    Ok(())
}

/// Serves one accepted connection: its PROXY protocol header first when the listener
/// expects one (then the per-address limits, on the address it names), then TLS or HTTP.
#[allow(clippy::too_many_arguments)]
async fn serve_accepted<S: HttpService>(
    mut stream: TcpStream,
    client: SocketAddr,
    local: SocketAddr,
    mut admitted: Option<crate::conn_limit::OpenGuard>,
    settings: &ListenerSettings,
    service: Arc<S>,
    mut watcher: Shutdown,
    open: Arc<AtomicUsize>,
) {
    let mut proxied = None;
    if let Some(pp) = &settings.proxy_protocol {
        let fail = |why: &dyn std::fmt::Display| {
            settings.stats.proxy_protocol_failures.fetch_add(1, Ordering::Relaxed);
            tracing::info!(listener = %settings.name, peer = %client, error = %why, "closing connection: PROXY protocol");
        };
        if !pp.trusted.contains(client.ip()) {
            fail(&"the peer is not in `trusted`");
            return;
        }
        let header = tokio::select! {
            h = proxy_protocol::read_header(&mut stream, pp.timeout) => h,
            _ = watcher.triggered() => return,
        };
        let header = match header {
            Ok(h) => h,
            Err(e) => return fail(&e),
        };
        let real = header.source().unwrap_or(client);
        if settings.limits.per_address() {
            match settings.stats.by_address.admit(real.ip(), &settings.limits) {
                Ok(guard) => admitted = guard,
                Err(why) => {
                    tracing::debug!(listener = %settings.name, client = %real, ?why, "connection refused");
                    return;
                }
            }
        }
        proxied = Some(Box::new(header));
    }
    let _admitted = admitted;
    match settings.tls.clone() {
        None => {
            let accepted =
                Accepted { client, local, hint: ProtocolHint::Detect, shutdown_on_close: false, tls: None, proxied };
            serve_connection(stream, accepted, settings, service, watcher, open).await;
        }
        // Boxed: a TLS connection's state (rustls' connection inside the stream) must
        // not enlarge the task of every plain-text connection.
        Some(tls) => Box::pin(serve_tls(&tls, stream, client, local, proxied, settings, service, watcher, open)).await,
    }
}

/// Changes the number of connection slots from `*limit` to `to`. Slots held by open
/// connections stay held: lowering the limit takes effect as connections close.
fn resize(slots: &Arc<Semaphore>, limit: &mut usize, to: usize) {
    if to > *limit {
        slots.add_permits(to - *limit);
    } else {
        let owed = *limit - to - slots.forget_permits(*limit - to);
        if owed > 0 {
            // The rest are held by open connections: take them out as those close.
            let slots = slots.clone();
            tokio::spawn(async move {
                if let Ok(permits) = slots.acquire_many_owned(u32::try_from(owed).unwrap_or(u32::MAX)).await {
                    permits.forget();
                }
            });
        }
    }
    *limit = to;
}

/// Runs the TLS handshake, then serves the decrypted stream. A handshake still running when
/// shutdown starts is abandoned at once.
#[allow(clippy::too_many_arguments)]
async fn serve_tls<S: HttpService>(
    tls: &TlsAcceptor,
    stream: TcpStream,
    client: SocketAddr,
    local: SocketAddr,
    proxied: Option<Box<proxy_protocol::Header>>,
    settings: &ListenerSettings,
    service: Arc<S>,
    mut watcher: Shutdown,
    open: Arc<AtomicUsize>,
) {
    // Boxed: the handshake's state is large and only lives until it is done.
    let handshake = Box::pin(async {
        if plain_http_on_tls_port(&stream, tls.handshake_timeout()).await {
            return None;
        }
        Some(tls.accept(stream).await)
    });
    let handshake = tokio::select! {
        r = handshake => match r {
            Some(r) => r,
            None => return,
        },
        _ = watcher.triggered() => return,
    };
    match handshake {
        Ok(done) => {
            settings.stats.tls_handshakes.fetch_add(1, Ordering::Relaxed);
            let accepted =
                Accepted { client, local, hint: done.hint, shutdown_on_close: true, tls: Some(done.info), proxied };
            serve_connection(done.stream, accepted, settings, service, watcher, open).await;
        }
        Err(e) => {
            settings.stats.tls_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(listener = %settings.name, %client, error = %e, "TLS handshake failed");
        }
    }
}

/// A plain HTTP request sent to a TLS port gets a 400 that says so (as nginx does) instead of
/// a TLS alert the client cannot read. One `peek` per connection: a TLS ClientHello starts
/// with the handshake record type 0x16, an HTTP request with a method's letters.
/// Returns true when the connection was answered (and is to be closed).
async fn plain_http_on_tls_port(stream: &TcpStream, timeout: Duration) -> bool {
    const ANSWER: &[u8] = concat!(
        "HTTP/1.1 400 Bad Request\r\n",
        "content-type: text/plain; charset=utf-8\r\n",
        "connection: close\r\n",
        "content-length: 57\r\n\r\n",
        "This port speaks HTTPS: use https:// instead of http://.\n",
    )
    .as_bytes();
    let mut first = [0u8; 1];
    match tokio::time::timeout(timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0].is_ascii_uppercase() => {
            let _ = stream.writable().await;
            let _ = stream.try_write(ANSWER);
            true
        }
        _ => false,
    }
}
