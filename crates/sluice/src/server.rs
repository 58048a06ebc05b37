//! Starting, reloading and stopping the server.
//!
//! A running server is a set of listeners (sockets with accept loops) and a *generation*:
//! everything one configuration built (routes, upstream groups, TLS acceptors, metrics, the
//! access log, health checks). A reload builds a new generation next to the running one,
//! binds the listeners the new file adds, and then swaps it in atomically: new requests (on
//! new and on open connections) use it, requests in flight finish on the one they started
//! with. Listeners are matched by address: a kept listener keeps its socket and its
//! connections and picks up its new settings; a removed one stops accepting and drains.
//!
//! Two runtime layouts (`server { runtime ... }`):
//! - `multi-thread` (default): the listeners run on the caller's work-stealing runtime;
//! - `per-core`: one single-threaded runtime per worker thread, each accepting on its own
//!   `SO_REUSEPORT` socket of every listener; a connection lives on the thread that
//!   accepted it. The upstream pool is still one pool shared by every thread.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use sluice_config::{Config, RuntimeKind};
use sluice_core::listener::{self, ListenerSettings, ListenerStats};
use sluice_core::shutdown::{self, Shutdown, ShutdownTrigger};
use sluice_core::tls::server::TlsAcceptor;
use sluice_core::{ConnectionInfo, HttpService, Incoming};
use sluice_proxy::{HttpProxy, ProxyBody};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::admin::AdminService;
use crate::build::{build, Previous};
use crate::configured::ConfiguredProxy;
use crate::metrics::Metrics;
use crate::otlp::Exporter;

type Proxy = Arc<HttpProxy<ConfiguredProxy>>;

/// Everything one configuration built; replaced as a whole by a reload.
#[derive(Debug)]
pub struct Generation {
    /// 1 for the configuration the server started with, then one more per reload.
    pub version: u64,
    /// The configuration.
    pub config: Arc<Config>,
    /// A hash of the configuration (16 hex digits).
    pub hash: String,
    /// When it was loaded (RFC 3339).
    pub loaded_at: String,
    /// The proxy the listeners serve.
    pub proxy: Proxy,
    /// Per-route metrics.
    pub metrics: Arc<Metrics>,
    /// The listeners' settings, in configuration order.
    pub listeners: Vec<Arc<ListenerSettings>>,
    /// Upstream groups, in configuration order.
    pub upstreams: Vec<Arc<sluice_upstream::Upstream>>,
    /// TLS acceptors of the TLS listeners.
    pub tls: Vec<Arc<TlsAcceptor>>,
    /// TLS clients of the upstream groups that use TLS, with the group names.
    pub upstream_tls: Vec<(String, Arc<sluice_upstream::TlsConnector>)>,
    access_log: Option<Arc<sluice_filters::access_log::AccessLog>>,
    /// The HTTP cache (for purges), when something caches.
    pub cache: Option<Arc<sluice_filters::cache::HttpCache>>,
    /// The Redis client of cluster-wide rate limits (kept across reloads).
    pub redis: Option<Arc<sluice_filters::ratelimit::redis::Redis>>,
    /// Stops this generation's background tasks (health checks, DNS, pool sweeping).
    tasks: ShutdownTrigger,
}

/// The service every proxy listener runs: the current generation's proxy.
#[derive(Debug)]
pub struct Live {
    current: Arc<ArcSwap<Generation>>,
    retired: Arc<Mutex<Vec<Retired>>>,
}

/// A listener a reload removed, while its connections drain: they keep the proxy of the
/// last configuration that had the listener (the new one has no routes for it).
#[derive(Debug)]
struct Retired {
    slot: usize,
    proxy: Proxy,
    drain: ShutdownTrigger,
}

impl HttpService for Live {
    type Body = ProxyBody<ConfiguredProxy>;

    async fn call(&self, request: http::Request<Incoming>, conn: &Arc<ConnectionInfo>) -> http::Response<Self::Body> {
        // Cloned out of the guard: the request keeps its generation until it is done.
        let proxy = {
            let current = self.current.load();
            if current.listeners.iter().any(|l| l.id == conn.listener_id) {
                current.proxy.clone()
            } else {
                self.retired_proxy(conn.listener_id).unwrap_or_else(|| current.proxy.clone())
            }
        };
        proxy.call(request, conn).await
    }
}

impl Live {
    fn retired_proxy(&self, slot: usize) -> Option<Proxy> {
        let retired = self.retired.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        retired.iter().find(|r| r.slot == slot).map(|r| r.proxy.clone())
    }
}

/// A listener the server runs: its socket(s), accept loop(s) and their settings.
#[derive(Debug)]
struct RunningListener {
    /// The address as configured (port 0 stays 0: that is what a reload matches on).
    configured: SocketAddr,
    /// The address it is bound to.
    bound: SocketAddr,
    slot: usize,
    live: Arc<ArcSwap<ListenerSettings>>,
    /// Stops its accept loops and drains its connections.
    drain: ShutdownTrigger,
    /// Duplicates of its socket(s), kept to hand them to a new binary (upgrade).
    sockets: Vec<std::net::TcpListener>,
}

/// Where accept loops run.
#[derive(Debug, Clone)]
enum Runtimes {
    /// The caller's runtime.
    Shared(Handle),
    /// One single-threaded runtime per core; every listener has one socket per core.
    PerCore(Vec<Handle>),
}

/// What reloads, the admin API and signal handlers share with the server.
#[derive(Debug)]
pub struct Control {
    current: Arc<ArcSwap<Generation>>,
    service: Arc<Live>,
    listeners: Mutex<Vec<RunningListener>>,
    /// Listeners a reload removed that are still draining.
    retired: Arc<Mutex<Vec<Retired>>>,
    runtimes: Runtimes,
    next_slot: AtomicUsize,
    /// Serializes reloads (and upgrades).
    reload_lock: tokio::sync::Mutex<()>,
    /// The configuration file, when there is one.
    source: Option<PathBuf>,
    /// Reloads: (succeeded, failed).
    reloads: (AtomicU64, AtomicU64),
    admin: Option<(SocketAddr, std::net::TcpListener)>,
    /// The OTLP span exporter (`server.tracing`), and what stops it after the drain.
    tracer: Option<(Arc<Exporter>, ShutdownTrigger)>,
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    control: Arc<Control>,
    /// Stops the admin listener.
    trigger: ShutdownTrigger,
    tasks: JoinSet<()>,
    threads: Vec<(std::thread::JoinHandle<()>, oneshot::Sender<()>)>,
    admin_addr: Option<SocketAddr>,
    _pid_file: Option<PidFile>,
}

/// The pid file: written once the sockets are bound, removed at exit if it still names
/// this process (after a binary upgrade it names the new one).
#[derive(Debug)]
struct PidFile(PathBuf);

impl PidFile {
    fn create(path: &std::path::Path) -> anyhow::Result<Self> {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing the pid file {}", path.display()))?;
        Ok(Self(path.to_owned()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.0).is_ok_and(|s| s.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Sockets handed over by the previous process of a binary upgrade, by address.
#[derive(Debug, Default)]
pub struct Inherited {
    /// Listening sockets by the address they are bound to.
    pub sockets: HashMap<SocketAddr, Vec<std::net::TcpListener>>,
}

impl Inherited {
    fn take(&mut self, addr: SocketAddr) -> Option<Vec<std::net::TcpListener>> {
        self.sockets.remove(&addr).filter(|s| !s.is_empty())
    }
}

/// Worker threads to use: the configured number, else one per available core.
pub fn worker_threads(config: &Config) -> usize {
    config.server.worker_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A hash of the configuration, for `GET /config` and logs.
fn config_hash(config: &Config) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    format!("{:?}", (&config.server, &config.listeners, &config.upstreams, &config.sites)).hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    sluice_core::time::rfc3339(now)
}

/// Binds one listener: one socket, or one per core.
fn bind(
    addr: SocketAddr,
    runtimes: &Runtimes,
    inherited: &mut Inherited,
) -> anyhow::Result<Vec<std::net::TcpListener>> {
    if let Some(sockets) = inherited.take(addr) {
        return Ok(sockets);
    }
    let bound = match runtimes {
        Runtimes::PerCore(cores) => listener::bind_shared(addr, cores.len()),
        Runtimes::Shared(_) => listener::bind(addr).map(|s| vec![s]),
    };
    bound.with_context(|| format!("cannot listen on {addr}"))
}

impl Server {
    /// Builds the engine, binds every listener, and starts serving.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        Self::start_with(config, None, Inherited::default()).await
    }

    /// Like [`start`](Self::start); `source` is the file reloads read, and `inherited`
    /// sockets (from the process this one upgrades) are used instead of binding anew.
    pub async fn start_with(
        config: &Config,
        source: Option<PathBuf>,
        mut inherited: Inherited,
    ) -> anyhow::Result<Self> {
        let slots: Vec<usize> = (0..config.listeners.len()).collect();
        let built = build(config, &slots, None).await?;
        // Spans are exported by one task for the whole process; it stops after the drain
        // (spans of the last requests are sent).
        let tracer = match &config.server.tracing {
            Some(settings) => {
                let (exporter, task) = Exporter::start(settings)?;
                let (trigger, shutdown) = shutdown::channel();
                tokio::spawn(task.run(shutdown));
                tracing::info!(endpoint = %settings.endpoint, "exporting spans over OTLP");
                Some((exporter, trigger))
            }
            None => None,
        };
        let mut threads = Vec::new();
        let runtimes = if config.server.runtime == RuntimeKind::PerCore {
            let mut handles = Vec::new();
            for core in 0..worker_threads(config) {
                let (stop_tx, stop_rx) = oneshot::channel();
                let (handle_tx, handle_rx) = std::sync::mpsc::channel();
                let thread = std::thread::Builder::new()
                    .name(format!("sluice-core-{core}"))
                    .spawn(move || run_core(handle_tx, stop_rx))
                    .context("starting a worker thread")?;
                let handle = handle_rx.recv().context("a worker runtime did not start")?;
                handles.push(handle);
                threads.push((thread, stop_tx));
            }
            Runtimes::PerCore(handles)
        } else {
            Runtimes::Shared(Handle::current())
        };
        // Bind everything before serving anything: a bad address fails the start.
        let mut bound = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            bound.push(bind(l.address, &runtimes, &mut inherited)?);
        }
        let admin = match &config.server.admin {
            Some(a) => {
                let socket = match inherited.take(a.address) {
                    Some(mut s) => s.swap_remove(0),
                    None => {
                        listener::bind(a.address).with_context(|| format!("cannot listen on {} (admin)", a.address))?
                    }
                };
                Some((a.address, socket))
            }
            None => None,
        };
        // Everything privileged is done (low ports, the pid file in /run): drop root before
        // the first connection is accepted.
        let pid_file = config.server.pid_file.as_deref().map(PidFile::create).transpose()?;
        if let Some((uid, gid)) =
            crate::privileges::drop_to(config.server.user.as_deref(), config.server.group.as_deref())?
        {
            tracing::info!(%uid, %gid, "dropped root privileges");
        }
        if !inherited.sockets.is_empty() {
            let unused: Vec<String> = inherited.sockets.keys().map(ToString::to_string).collect();
            tracing::info!(addresses = %unused.join(", "), "closing inherited sockets the configuration does not use");
        }
        let settings: Vec<Arc<ListenerSettings>> = built.listeners.into_iter().map(Arc::new).collect();
        let (tasks_trigger, tasks_shutdown) = shutdown::channel();
        let generation = Generation {
            version: 1,
            config: Arc::new(config.clone()),
            hash: config_hash(config),
            loaded_at: now_rfc3339(),
            proxy: Arc::new(HttpProxy::new(built.proxy.with_tracer(tracer.as_ref().map(|(e, _)| e.clone())))),
            metrics: built.metrics,
            cache: built.cache,
            redis: built.redis,
            listeners: settings.clone(),
            upstreams: built.upstreams,
            tls: built.tls,
            upstream_tls: built.upstream_tls,
            access_log: built.access_log,
            tasks: tasks_trigger,
        };
        spawn_background(&generation, built.checks, built.discoveries, built.tasks, tasks_shutdown);
        let current = Arc::new(ArcSwap::from_pointee(generation));
        let retired = Arc::new(Mutex::new(Vec::new()));
        let service = Arc::new(Live { current: current.clone(), retired: retired.clone() });
        let control = Arc::new(Control {
            current,
            service,
            listeners: Mutex::new(Vec::new()),
            retired,
            runtimes,
            next_slot: AtomicUsize::new(config.listeners.len()),
            reload_lock: tokio::sync::Mutex::new(()),
            source,
            reloads: (AtomicU64::new(0), AtomicU64::new(0)),
            admin: match &admin {
                Some((configured, socket)) => Some((*configured, socket.try_clone()?)),
                None => None,
            },
            tracer,
        });
        {
            let mut running = control.lock_listeners();
            for ((l, sockets), settings) in config.listeners.iter().zip(bound).zip(settings) {
                running.push(control.run_listener(l.address, settings.id, sockets, settings)?);
            }
        }
        let (trigger, shutdown) = shutdown::channel();
        let mut tasks = JoinSet::new();
        let mut admin_addr = None;
        if let Some((_, socket)) = admin {
            admin_addr = Some(socket.local_addr()?);
            let service = Arc::new(AdminService(control.clone()));
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                if let Err(e) = listener::serve(socket, admin_settings(), service, shutdown).await {
                    tracing::error!(error = %e, "admin listener failed");
                }
            });
        }
        drop(shutdown);
        Ok(Self { control, trigger, tasks, threads, admin_addr, _pid_file: pid_file })
    }

    /// What the admin API and the signal handlers act on.
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// The bound addresses, in listener order (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.control.local_addrs()
    }

    /// Reloads the configuration file the server was started with (SIGHUP, `POST /reload`).
    /// See [`Control::reload`].
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        self.control.reload().await
    }

    /// Replaces the running configuration with `config` (as a reload does, without a file).
    pub async fn reload_config(&self, config: &Config) -> Result<Reloaded, ReloadError> {
        self.control.apply(config).await
    }

    /// Re-reads every TLS listener's certificates, keys and CA bundles, and every TLS
    /// upstream's CA bundle and client certificate, without reloading the configuration.
    /// A site or upstream whose files are broken keeps its previous ones. Returns how many
    /// failed.
    pub fn reload_certificates(&self) -> usize {
        self.control.reload_certificates()
    }

    /// The admin API's address, when it is enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The upstream groups, in configuration order (for inspection and status output).
    pub fn upstreams(&self) -> Vec<Arc<sluice_upstream::Upstream>> {
        self.control.current().upstreams.clone()
    }

    /// Logs one line per backend with its state (SIGUSR1).
    pub fn log_status(&self) {
        self.control.log_status();
    }

    /// The TLS acceptors, one per TLS listener in configuration order (for inspection).
    pub fn tls_acceptors(&self) -> Vec<Arc<TlsAcceptor>> {
        self.control.current().tls.clone()
    }

    /// The service the listeners run (for inspection in tests).
    pub fn service(&self) -> Proxy {
        self.control.current().proxy.clone()
    }

    /// Stops accepting, lets in-flight requests finish within the grace period, closes
    /// idle keep-alive connections and sends GOAWAY on HTTP/2. Returns whether everything
    /// drained in time.
    pub async fn shutdown(mut self) -> bool {
        let grace = self.control.current().config.server.shutdown_grace;
        tracing::info!(?grace, "shutting down: no new connections, draining");
        self.trigger.trigger();
        let drained = tokio::time::timeout(grace, self.control.drain_all()).await.is_ok();
        if drained {
            tracing::info!("all connections closed");
        } else {
            tracing::warn!(open = self.control.open_watchers(), "grace period over, closing remaining connections");
        }
        self.control.current().tasks.trigger();
        if let Some((_, trigger)) = &self.control.tracer {
            trigger.trigger();
            let _ = tokio::time::timeout(Duration::from_secs(5), trigger.drained()).await;
        }
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        for (handle, stop) in std::mem::take(&mut self.threads) {
            let _ = stop.send(());
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        if let Some(log) = &self.control.current().access_log {
            log.flush();
        }
        drained
    }
}

/// What a successful reload changed.
#[derive(Debug, Clone)]
pub struct Reloaded {
    /// The new generation's version.
    pub version: u64,
    /// The new configuration's hash.
    pub hash: String,
    /// Listeners added (their addresses).
    pub added: Vec<SocketAddr>,
    /// Listeners removed (draining now).
    pub removed: Vec<SocketAddr>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The server was not started from a file.
    #[error("this server was not started from a configuration file: there is nothing to reload")]
    NoFile,
    /// The file is invalid (the rendered diagnostics, with file:line:col).
    #[error("{0}")]
    Invalid(String),
    /// The configuration is valid but cannot be applied (e.g. a new address cannot be bound).
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

impl Control {
    fn lock_listeners(&self) -> std::sync::MutexGuard<'_, Vec<RunningListener>> {
        self.listeners.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current generation.
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// The OTLP span exporter, when `server.tracing` is set.
    pub fn tracer(&self) -> Option<&Arc<Exporter>> {
        self.tracer.as_ref().map(|(e, _)| e)
    }

    /// Reloads: (succeeded, failed).
    pub fn reload_counts(&self) -> (u64, u64) {
        (self.reloads.0.load(Ordering::Relaxed), self.reloads.1.load(Ordering::Relaxed))
    }

    /// The bound addresses of the running listeners, in configuration order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.lock_listeners().iter().map(|l| l.bound).collect()
    }

    /// Starts the accept loop(s) of one listener.
    fn run_listener(
        &self,
        configured: SocketAddr,
        slot: usize,
        sockets: Vec<std::net::TcpListener>,
        settings: Arc<ListenerSettings>,
    ) -> anyhow::Result<RunningListener> {
        let bound = sockets.first().context("a listener without a socket")?.local_addr()?;
        let kept = sockets.iter().map(std::net::TcpListener::try_clone).collect::<Result<Vec<_>, _>>()?;
        let live = Arc::new(ArcSwap::new(settings));
        let (drain, watcher) = shutdown::channel();
        let handles: Vec<Handle> = match &self.runtimes {
            Runtimes::Shared(h) => vec![h.clone()],
            Runtimes::PerCore(cores) => cores.clone(),
        };
        // Sockets are spread over the runtimes; with more sockets than runtimes (inherited
        // from a process with more cores) a runtime serves several.
        for (i, socket) in sockets.into_iter().enumerate() {
            let handle = &handles[i % handles.len()];
            let (live, service, watcher) = (live.clone(), self.service.clone(), watcher.clone());
            handle.spawn(async move {
                let name = live.load().name.clone();
                if let Err(e) = listener::serve_live(socket, live, service, watcher).await {
                    tracing::error!(listener = %name, error = %e, "listener failed");
                }
            });
        }
        Ok(RunningListener { configured, bound, slot, live, drain, sockets: kept })
    }

    /// Reloads the configuration file. The new file is read and validated fully first; if
    /// it is invalid, or cannot be applied, nothing changes and the error says why.
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let Some(path) = &self.source else {
            return Err(ReloadError::NoFile);
        };
        let config = match sluice_config::load(path) {
            Ok(c) => c,
            Err(e) => {
                self.reloads.1.fetch_add(1, Ordering::Relaxed);
                let report = e.render(false);
                tracing::error!("configuration reload failed, nothing changed:\n{report}");
                return Err(ReloadError::Invalid(report));
            }
        };
        for w in &config.warnings {
            tracing::warn!("{w}");
        }
        self.apply(&config).await
    }

    /// Applies a validated configuration: see the module docs.
    pub async fn apply(&self, config: &Config) -> Result<Reloaded, ReloadError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        match self.apply_locked(config).await {
            Ok(done) => {
                self.reloads.0.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    version = done.version,
                    hash = %done.hash,
                    added = ?done.added,
                    removed = ?done.removed,
                    "configuration reloaded"
                );
                Ok(done)
            }
            Err(e) => {
                self.reloads.1.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %format!("{e:#}"), "configuration reload failed, nothing changed");
                Err(ReloadError::Failed(e))
            }
        }
    }

    async fn apply_locked(&self, config: &Config) -> anyhow::Result<Reloaded> {
        let old = self.current();
        restart_only(&old.config, config);
        // Listener slots: a kept listener (same configured address) keeps its slot.
        let running: Vec<(SocketAddr, usize)> = self.lock_listeners().iter().map(|l| (l.configured, l.slot)).collect();
        let slots: Vec<usize> = config
            .listeners
            .iter()
            .map(|l| match running.iter().find(|(a, _)| *a == l.address) {
                Some((_, slot)) => *slot,
                None => self.next_slot.fetch_add(1, Ordering::Relaxed),
            })
            .collect();
        let previous = Previous {
            config: &old.config,
            upstreams: &old.upstreams,
            metrics: &old.metrics,
            cache: old.cache.as_ref(),
            redis: old.redis.as_ref(),
        };
        let built = build(config, &slots, Some(previous)).await?;
        // Bind the new listeners before anything changes.
        let mut new_sockets = Vec::new();
        for (l, slot) in config.listeners.iter().zip(&slots) {
            if !running.iter().any(|(_, s)| s == slot) {
                new_sockets.push((l.address, *slot, bind(l.address, &self.runtimes, &mut Inherited::default())?));
            }
        }
        // From here on nothing fails: commit.
        let mut settings: Vec<Arc<ListenerSettings>> = Vec::with_capacity(built.listeners.len());
        let mut running = self.lock_listeners();
        for mut s in built.listeners {
            if let Some(r) = running.iter().find(|r| r.slot == s.id) {
                // Connection counts continue across the reload.
                s.stats = r.live.load().stats.clone();
            }
            settings.push(Arc::new(s));
        }
        let (tasks_trigger, tasks_shutdown) = shutdown::channel();
        let generation = Generation {
            version: old.version + 1,
            config: Arc::new(config.clone()),
            hash: config_hash(config),
            loaded_at: now_rfc3339(),
            proxy: Arc::new(HttpProxy::new(built.proxy.with_tracer(self.tracer.as_ref().map(|(e, _)| e.clone())))),
            metrics: built.metrics,
            cache: built.cache,
            redis: built.redis,
            listeners: settings.clone(),
            upstreams: built.upstreams,
            tls: built.tls,
            upstream_tls: built.upstream_tls,
            access_log: built.access_log,
            tasks: tasks_trigger,
        };
        spawn_background(&generation, built.checks, built.discoveries, built.tasks, tasks_shutdown);
        let done = Reloaded {
            version: generation.version,
            hash: generation.hash.clone(),
            added: Vec::new(),
            removed: Vec::new(),
        };
        self.current.store(Arc::new(generation));
        old.tasks.trigger();
        let mut done = done;
        // Kept listeners take their new settings; removed ones drain; new ones start.
        let mut kept = Vec::with_capacity(settings.len());
        for r in running.drain(..) {
            match settings.iter().find(|s| s.id == r.slot) {
                Some(s) => {
                    r.live.store(s.clone());
                    kept.push(r);
                }
                None => {
                    tracing::info!(address = %r.bound, "listener removed by the reload: draining it");
                    let RunningListener { bound, slot, drain, sockets, .. } = r;
                    // Close the kept duplicates before the accept loops drop their copies.
                    drop(sockets);
                    drain.trigger();
                    done.removed.push(bound);
                    self.lock_retired().push(Retired { slot, proxy: old.proxy.clone(), drain });
                }
            }
        }
        for (configured, slot, sockets) in new_sockets {
            let Some(s) = settings.iter().find(|s| s.id == slot) else { continue };
            let listener = self.run_listener(configured, slot, sockets, s.clone()).map_err(|e| {
                // Cannot happen after a successful bind; say so if it does.
                anyhow::anyhow!("starting the new listener {configured}: {e:#}")
            });
            match listener {
                Ok(l) => {
                    done.added.push(l.bound);
                    kept.push(l);
                }
                Err(e) => tracing::error!("{e:#}"),
            }
        }
        // Configuration order.
        kept.sort_by_key(|l| settings.iter().position(|s| s.id == l.slot));
        *running = kept;
        drop(running);
        self.forget_drained();
        Ok(done)
    }

    fn lock_retired(&self) -> std::sync::MutexGuard<'_, Vec<Retired>> {
        self.retired.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets removed listeners that have finished draining.
    fn forget_drained(&self) {
        self.lock_retired().retain(|r| r.drain.watchers() > 0);
    }

    /// Starts draining every listener and waits until their connections are closed.
    pub async fn drain_all(&self) {
        for l in self.lock_listeners().iter_mut() {
            // The kept duplicates first: once the accept loop has dropped its copy (and said
            // "stopped accepting"), the socket must be closed.
            l.sockets.clear();
            l.drain.trigger();
        }
        // The triggers belong to the lists (a reload may still look at them): poll their
        // watcher counts instead of awaiting them.
        while self.open_watchers() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Accept loops and connections still open on any listener.
    pub fn open_watchers(&self) -> usize {
        let running: usize = self.lock_listeners().iter().map(|l| l.drain.watchers()).sum();
        let draining: usize = self.lock_retired().iter().map(|r| r.drain.watchers()).sum();
        running + draining
    }

    /// See [`Server::reload_certificates`].
    pub fn reload_certificates(&self) -> usize {
        let generation = self.current();
        if generation.tls.is_empty() && generation.upstream_tls.is_empty() {
            return 0;
        }
        let mut failed: usize = generation.tls.iter().map(|a| a.reload().len()).sum();
        for (name, connector) in &generation.upstream_tls {
            if let Err(e) = connector.reload() {
                tracing::error!(upstream = %name, error = %e, "upstream TLS reload failed; keeping the previous files");
                failed += 1;
            }
        }
        if failed == 0 {
            tracing::info!(
                listeners = generation.tls.len(),
                upstreams = generation.upstream_tls.len(),
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

    /// Logs one line per backend with its state: available or not, ejected (and how many
    /// times in a row), the active checks' verdict and last result, requests in flight and
    /// the latency average (SIGUSR1).
    pub fn log_status(&self) {
        let now = sluice_upstream::health::now_ms();
        for group in &self.current().upstreams {
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

    /// Duplicates of every listening socket (and the admin one), by bound address, for a
    /// new process to take over.
    pub fn sockets_for_handoff(&self) -> std::io::Result<Vec<(SocketAddr, std::net::TcpListener)>> {
        let mut out = Vec::new();
        for l in self.lock_listeners().iter() {
            for s in &l.sockets {
                out.push((l.bound, s.try_clone()?));
            }
        }
        if let Some((_, socket)) = &self.admin {
            out.push((socket.local_addr()?, socket.try_clone()?));
        }
        Ok(out)
    }

    /// Waits for the reload lock: an upgrade must not start while a reload runs.
    pub async fn lock_reloads(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.reload_lock.lock().await
    }
}

/// Logs the settings a reload cannot change (they need a restart or an upgrade).
fn restart_only(old: &Config, new: &Config) {
    let (o, n) = (&old.server, &new.server);
    let mut ignored = Vec::new();
    if o.runtime != n.runtime {
        ignored.push("server.runtime");
    }
    if o.worker_threads != n.worker_threads {
        ignored.push("server.worker-threads");
    }
    if o.admin.as_ref().map(|a| a.address) != n.admin.as_ref().map(|a| a.address) {
        ignored.push("server.admin (its address)");
    }
    if o.pid_file != n.pid_file {
        ignored.push("server.pid-file");
    }
    if o.user != n.user || o.group != n.group {
        ignored.push("server.user/group");
    }
    if o.tracing != n.tracing {
        ignored.push("server.tracing");
    }
    if !ignored.is_empty() {
        tracing::warn!(
            settings = %ignored.join(", "),
            "these settings changed but take effect only on a restart or binary upgrade; the rest is reloaded"
        );
    }
}

/// Starts a generation's background tasks on this runtime: health checks, DNS
/// re-resolution and pool sweeping. They stop when the generation is replaced.
fn spawn_background(
    generation: &Generation,
    checks: Vec<(Arc<sluice_upstream::Backend>, Arc<sluice_upstream::health_check::CheckSettings>, String)>,
    discoveries: Vec<sluice_upstream::discovery::Discovery>,
    tasks: Vec<crate::policy::Task>,
    shutdown: Shutdown,
) {
    for task in tasks {
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = task.0 => {}
                _ = stop.triggered() => {}
            }
        });
    }
    for (backend, settings, group) in checks {
        tokio::spawn(sluice_upstream::health_check::run(backend, settings, group, shutdown.clone()));
    }
    for discovery in discoveries {
        tokio::spawn(sluice_upstream::discovery::run(discovery, shutdown.clone()));
    }
    // The pool sweeper looks at the groups' current members (DNS may change them).
    let groups = generation.upstreams.clone();
    let mut shutdown = shutdown;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    for group in &groups {
                        for b in group.backends() {
                            b.evict_expired();
                        }
                    }
                }
                _ = shutdown.triggered() => break,
            }
        }
    });
}

/// The admin listener's fixed settings.
fn admin_settings() -> Arc<ListenerSettings> {
    Arc::new(ListenerSettings {
        max_connections: 256,
        guard: sluice_core::guard::GuardConfig {
            max_header_size: 16 * 1024,
            header_read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(30),
            idle_release: Some(Duration::from_secs(1)),
            release_above: 256,
            ..Default::default()
        },
        h2c: false,
        stats: Arc::new(ListenerStats::default()),
        ..ListenerSettings::new(usize::MAX, "admin")
    })
}

/// One per-core worker: a single-threaded runtime that serves whatever accept loops are
/// spawned on it (through the handle it sends back), until told to stop (after the drain).
fn run_core(handle: std::sync::mpsc::Sender<Handle>, stop: oneshot::Receiver<()>) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a worker runtime");
            return;
        }
    };
    if handle.send(runtime.handle().clone()).is_err() {
        return;
    }
    runtime.block_on(async move {
        let _ = stop.await;
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
}
