//! Starting and stopping the server: bind every listener first (so a bad address fails
//! before anything serves), then serve, then drain on shutdown.
//!
//! Two runtime layouts (`server { runtime ... }`):
//! - `multi-thread` (default): the listeners run on the caller's work-stealing runtime;
//! - `per-core`: one single-threaded runtime per worker thread, each accepting on its own
//!   `SO_REUSEPORT` socket of every listener; a connection lives on the thread that
//!   accepted it. The upstream pool is still one pool shared by every thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sluice_config::{Config, RuntimeKind};
use sluice_core::listener::{self, ListenerSettings};
use sluice_core::shutdown::{self, Shutdown, ShutdownTrigger};
use sluice_core::tls::server::TlsAcceptor;
use sluice_proxy::HttpProxy;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::admin::{AdminService, AdminState};
use crate::build::build;
use crate::configured::ConfiguredProxy;

type Service = Arc<HttpProxy<ConfiguredProxy>>;

/// A running server.
#[derive(Debug)]
pub struct Server {
    addrs: Vec<SocketAddr>,
    trigger: ShutdownTrigger,
    tasks: JoinSet<()>,
    threads: Vec<(std::thread::JoinHandle<()>, oneshot::Sender<()>)>,
    service: Service,
    grace: Duration,
    access_log: Option<Arc<sluice_filters::access_log::AccessLog>>,
    tls: Vec<Arc<TlsAcceptor>>,
    upstream_tls: Vec<(String, Arc<sluice_upstream::TlsConnector>)>,
    upstreams: Vec<Arc<sluice_upstream::Upstream>>,
    admin_addr: Option<SocketAddr>,
    /// Certificate reloads: (succeeded, failed), for metrics.
    reloads: Arc<(std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64)>,
}

/// Worker threads to use: the configured number, else one per available core.
pub fn worker_threads(config: &Config) -> usize {
    config.server.worker_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

impl Server {
    /// Builds the engine, binds every listener, and starts serving.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        let built = build(config).await?;
        let per_core = config.server.runtime == RuntimeKind::PerCore;
        let copies = if per_core { worker_threads(config) } else { 1 };
        // sockets[listener][copy]
        let mut sockets = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let bound = if per_core {
                listener::bind_shared(l.address, copies)
            } else {
                listener::bind(l.address).map(|s| vec![s])
            };
            sockets.push(bound.with_context(|| format!("cannot listen on {}", l.address))?);
        }
        let addrs = sockets.iter().map(|s| s[0].local_addr()).collect::<Result<Vec<_>, _>>()?;
        let admin_socket = match &config.server.admin {
            Some(a) => {
                Some(listener::bind(a.address).with_context(|| format!("cannot listen on {} (admin)", a.address))?)
            }
            None => None,
        };
        let admin_addr = admin_socket.as_ref().map(|s| s.local_addr()).transpose()?;
        let service: Service = Arc::new(HttpProxy::new(built.proxy));
        let settings: Vec<Arc<ListenerSettings>> = built.listeners.into_iter().map(Arc::new).collect();
        let (trigger, shutdown) = shutdown::channel();
        let mut tasks = JoinSet::new();
        let mut threads = Vec::new();
        if per_core {
            for copy in 0..copies {
                let mine: Vec<_> =
                    sockets.iter_mut().zip(&settings).map(|(s, settings)| (s.remove(0), settings.clone())).collect();
                let (stop_tx, stop_rx) = oneshot::channel();
                let (service, shutdown) = (service.clone(), shutdown.clone());
                let handle = std::thread::Builder::new()
                    .name(format!("sluice-core-{copy}"))
                    .spawn(move || run_core(mine, service, shutdown, stop_rx))
                    .context("starting a worker thread")?;
                threads.push((handle, stop_tx));
            }
        } else {
            for (mut s, settings) in sockets.into_iter().zip(&settings) {
                tasks.spawn(serve_listener(s.remove(0), settings.clone(), service.clone(), shutdown.clone()));
            }
        }
        // Active health checks: one task per backend on this runtime, whatever the layout.
        for (backend, settings, group) in built.checks {
            tasks.spawn(sluice_upstream::health_check::run(backend, settings, group, shutdown.clone()));
        }
        for discovery in built.discoveries {
            tasks.spawn(sluice_upstream::discovery::run(discovery, shutdown.clone()));
        }
        let reloads = Arc::new((std::sync::atomic::AtomicU64::new(0), std::sync::atomic::AtomicU64::new(0)));
        if let (Some(socket), Some(admin)) = (admin_socket, &config.server.admin) {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            format!("{config:?}").hash(&mut hasher);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
            let state = AdminState {
                metrics: built.metrics.clone(),
                listeners: settings.clone(),
                upstreams: built.upstreams.clone(),
                config_hash: format!("{:016x}", hasher.finish()),
                loaded_at: sluice_core::time::rfc3339(now),
                config_counts: (config.listeners.len(), config.upstreams.len(), config.sites.len()),
                reloads: reloads.clone(),
                token: admin.token.clone(),
            };
            let admin_settings = Arc::new(ListenerSettings {
                id: usize::MAX,
                name: "admin".into(),
                max_connections: 256,
                guard: sluice_core::guard::GuardConfig {
                    max_header_size: 16 * 1024,
                    header_read_timeout: Duration::from_secs(10),
                    keepalive_timeout: Duration::from_secs(30),
                    idle_release: Some(Duration::from_secs(1)),
                    release_above: 256,
                },
                h2c: false,
                tls: None,
                stats: Default::default(),
            });
            let service = Arc::new(AdminService(Arc::new(state)));
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                if let Err(e) = listener::serve(socket, admin_settings, service, shutdown).await {
                    tracing::error!(error = %e, "admin listener failed");
                }
            });
        }
        drop(built.backends);
        // The pool sweeper looks at the groups' current members (DNS may change them).
        let backends: Vec<Arc<sluice_upstream::Upstream>> = built.upstreams.clone();
        let mut sweeper_shutdown = shutdown.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        for group in &backends {
                            for b in group.backends() {
                                b.evict_expired();
                            }
                        }
                    }
                    _ = sweeper_shutdown.triggered() => break,
                }
            }
        });
        drop(shutdown);
        Ok(Self {
            addrs,
            trigger,
            tasks,
            threads,
            service,
            grace: config.server.shutdown_grace,
            access_log: built.access_log,
            tls: built.tls,
            upstream_tls: built.upstream_tls,
            upstreams: built.upstreams,
            admin_addr,
            reloads,
        })
    }

    /// The bound addresses, in listener order (useful with port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Re-reads every TLS listener's certificates, keys and CA bundles, and every TLS
    /// upstream's CA bundle and client certificate (SIGHUP). New handshakes use the new
    /// files; open connections are not touched. A site or upstream whose files are broken
    /// keeps its previous ones. Returns how many sites and upstreams failed to reload.
    pub fn reload_certificates(&self) -> usize {
        if self.tls.is_empty() && self.upstream_tls.is_empty() {
            return 0;
        }
        let mut failed: usize = self.tls.iter().map(|a| a.reload().len()).sum();
        for (name, connector) in &self.upstream_tls {
            if let Err(e) = connector.reload() {
                tracing::error!(upstream = %name, error = %e, "upstream TLS reload failed; keeping the previous files");
                failed += 1;
            }
        }
        let counter = if failed == 0 { &self.reloads.0 } else { &self.reloads.1 };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if failed == 0 {
            tracing::info!(
                listeners = self.tls.len(),
                upstreams = self.upstream_tls.len(),
                "TLS certificates reloaded"
            );
        } else {
            tracing::warn!(
                failed,
                "TLS certificates reloaded; sites with broken files kept their previous certificate"
            );
        }
        failed
    }

    /// The admin API's address, when it is enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The upstream groups, in configuration order (for inspection and status output).
    pub fn upstreams(&self) -> &[Arc<sluice_upstream::Upstream>] {
        &self.upstreams
    }

    /// Logs one line per backend with its state: available or not, ejected (and how many
    /// times in a row), the active checks' verdict and last result, requests in flight and
    /// the latency average (SIGUSR1).
    pub fn log_status(&self) {
        let now = sluice_upstream::health::now_ms();
        for group in &self.upstreams {
            tracing::info!(
                upstream = %group.name(),
                in_flight = group.limits().in_flight(),
                rejected_by_limits = group.limits().rejected(),
                "upstream status"
            );
            for b in group.backends() {
                let h = b.health();
                let last_check = match h.last_check() {
                    Some((at, ok)) => {
                        format!("{} {} ms ago", if ok { "passed" } else { "failed" }, now.saturating_sub(at))
                    }
                    None => "none".to_owned(),
                };
                tracing::info!(
                    upstream = %group.name(),
                    backend = %b.name(),
                    available = h.available(now),
                    ejected = h.ejected(now),
                    ejections = h.ejections(),
                    check_verdict = if h.checked_ok() { "healthy" } else { "unhealthy" },
                    last_check = %last_check,
                    in_flight = b.stats().in_flight(),
                    latency_ewma_ms = format_args!("{:.2}", b.stats().latency_ewma_us() / 1000.0),
                    requests = b.stats().requests.load(std::sync::atomic::Ordering::Relaxed),
                    "backend status"
                );
            }
        }
    }

    /// The TLS acceptors, one per TLS listener in configuration order (for inspection).
    pub fn tls_acceptors(&self) -> &[Arc<TlsAcceptor>] {
        &self.tls
    }

    /// The service (for inspection in tests).
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// Stops accepting, lets in-flight requests finish within the grace period, closes
    /// idle keep-alive connections and sends GOAWAY on HTTP/2. Returns whether everything
    /// drained in time.
    pub async fn shutdown(mut self) -> bool {
        tracing::info!(grace = ?self.grace, "shutting down: no new connections, draining");
        self.trigger.trigger();
        let drained = tokio::time::timeout(self.grace, self.trigger.drained()).await.is_ok();
        if drained {
            tracing::info!("all connections closed");
        } else {
            tracing::warn!(open = self.trigger.watchers(), "grace period over, closing remaining connections");
        }
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        for (handle, stop) in std::mem::take(&mut self.threads) {
            let _ = stop.send(());
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        if let Some(log) = &self.access_log {
            log.flush();
        }
        drained
    }
}

async fn serve_listener(
    socket: std::net::TcpListener,
    settings: Arc<ListenerSettings>,
    service: Service,
    shutdown: Shutdown,
) {
    let name = settings.name.clone();
    if let Err(e) = listener::serve(socket, settings, service, shutdown).await {
        tracing::error!(listener = %name, error = %e, "listener failed");
    }
}

/// One per-core worker: a single-threaded runtime serving its own sockets until told to
/// stop (after the drain), so that its connections can finish.
fn run_core(
    sockets: Vec<(std::net::TcpListener, Arc<ListenerSettings>)>,
    service: Service,
    shutdown: Shutdown,
    stop: oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a worker runtime");
            return;
        }
    };
    runtime.block_on(async move {
        for (socket, settings) in sockets {
            tokio::spawn(serve_listener(socket, settings, service.clone(), shutdown.clone()));
        }
        drop(shutdown);
        let _ = stop.await;
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
}
