//! Starting and stopping the server: bind every listener first (so a bad address fails
//! before anything serves), then serve, then drain on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sluice_config::Config;
use sluice_core::listener;
use sluice_core::shutdown::{self, ShutdownTrigger};
use sluice_proxy::HttpProxy;
use tokio::task::JoinSet;

use crate::build::build;
use crate::configured::ConfiguredProxy;

/// A running server.
#[derive(Debug)]
pub struct Server {
    addrs: Vec<SocketAddr>,
    trigger: ShutdownTrigger,
    tasks: JoinSet<()>,
    service: Arc<HttpProxy<ConfiguredProxy>>,
    grace: Duration,
    access_log: Option<Arc<sluice_filters::access_log::AccessLog>>,
}

impl Server {
    /// Builds the engine, binds every listener, and starts serving.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        let built = build(config).await?;
        let mut sockets = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let socket = listener::bind(l.address).with_context(|| format!("cannot listen on {}", l.address))?;
            sockets.push(socket);
        }
        let addrs = sockets.iter().map(|s| s.local_addr()).collect::<Result<Vec<_>, _>>()?;
        let service = Arc::new(HttpProxy::new(built.proxy));
        let (trigger, shutdown) = shutdown::channel();
        let mut tasks = JoinSet::new();
        for (socket, settings) in sockets.into_iter().zip(built.listeners) {
            let service = service.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                let name = settings.name.clone();
                if let Err(e) = listener::serve(socket, Arc::new(settings), service, shutdown).await {
                    tracing::error!(listener = %name, error = %e, "listener failed");
                }
            });
        }
        let backends = built.backends;
        let mut sweeper_shutdown = shutdown.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        for b in &backends {
                            b.evict_expired();
                        }
                    }
                    _ = sweeper_shutdown.triggered() => break,
                }
            }
        });
        drop(shutdown);
        Ok(Self { addrs, trigger, tasks, service, grace: config.server.shutdown_grace, access_log: built.access_log })
    }

    /// The bound addresses, in listener order (useful with port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The service (for inspection in tests).
    pub fn service(&self) -> &Arc<HttpProxy<ConfiguredProxy>> {
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
        if let Some(log) = &self.access_log {
            log.flush();
        }
        drained
    }
}
