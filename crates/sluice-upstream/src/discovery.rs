//! Service discovery by DNS: servers written with a host name are resolved to all their
//! addresses, and re-resolved when the answer's TTL runs out (between 1 s and 5 min).
//!
//! Each address is a backend (`host:port` with the IP as its key). A re-resolution that
//! changes the set replaces the group's members ([`Upstream::set_backends`]): backends that
//! stay keep their pools and health, new ones get health checks, and removed ones drain:
//! requests in flight finish, then their connections close with the last reference. When
//! the resolver fails, the last good set stays and the failure is logged.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;
use sluice_core::shutdown::Shutdown;
use sluice_error::{Error, ErrorKind, Result};

use crate::health_check::{self, CheckSettings};
use crate::{Backend, BackendSettings, Upstream};

/// Shortest and longest time between two resolutions of a name.
const MIN_REFRESH: Duration = Duration::from_secs(1);
const MAX_REFRESH: Duration = Duration::from_secs(300);
/// How soon to try again after the resolver failed.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// A DNS resolver: the system's configuration, or one name server.
#[derive(Clone)]
pub struct Resolver(TokioResolver);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

impl Resolver {
    /// The system's configuration (`/etc/resolv.conf`, `/etc/hosts`).
    pub fn system() -> Result<Self> {
        let builder = TokioResolver::builder_tokio()
            .map_err(|e| Error::because(ErrorKind::Config, "reading the system's DNS configuration", e))?;
        Ok(Self(builder.build()))
    }

    /// Queries only `server` (plain DNS over UDP/TCP), the hosts file still applies.
    pub fn with_name_server(server: SocketAddr) -> Self {
        let group = NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
        let config = ResolverConfig::from_parts(None, Vec::new(), group);
        Self(TokioResolver::builder_with_config(config, TokioConnectionProvider::default()).build())
    }

    /// The addresses of `host` and how long the answer is good for.
    pub async fn lookup(&self, host: &str) -> Result<(Vec<IpAddr>, Duration)> {
        let found = self
            .0
            .lookup_ip(host)
            .await
            .map_err(|e| Error::because(ErrorKind::ConnectFailed, format!("resolving `{host}`"), e))?;
        let ttl = found.valid_until().saturating_duration_since(std::time::Instant::now());
        let mut ips: Vec<IpAddr> = found.iter().collect();
        ips.sort_unstable();
        ips.dedup();
        if ips.is_empty() {
            return Err(Error::explain(ErrorKind::ConnectFailed, format!("`{host}` has no address")));
        }
        Ok((ips, ttl))
    }
}

/// A server written with a host name.
#[derive(Debug, Clone)]
pub struct NamedServer {
    /// `host:port` as written.
    pub name: String,
    /// The host part.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The weight of every backend it resolves to.
    pub weight: u32,
}

impl NamedServer {
    /// Splits `host:port`; `None` when it is not a name with a port.
    pub fn parse(written: &str, weight: u32) -> Option<Self> {
        let (host, port) = written.rsplit_once(':')?;
        Some(Self { name: written.to_owned(), host: host.to_owned(), port: port.parse().ok()?, weight })
    }

    fn backends(&self, ips: &[IpAddr], settings: &BackendSettings) -> Vec<Arc<Backend>> {
        ips.iter()
            .map(|ip| {
                Arc::new(Backend::new(
                    self.name.clone(),
                    SocketAddr::new(*ip, self.port),
                    self.weight,
                    settings.clone(),
                ))
            })
            .collect()
    }

    /// Resolves the server for the first time (at startup): all its addresses.
    pub async fn resolve(&self, resolver: &Resolver, settings: &BackendSettings) -> Result<Vec<Arc<Backend>>> {
        let (ips, _) = resolver.lookup(&self.host).await?;
        Ok(self.backends(&ips, settings))
    }
}

/// What keeps one group's named servers up to date.
#[derive(Debug)]
pub struct Discovery {
    /// The group.
    pub group: Arc<Upstream>,
    /// Its servers written as IP addresses (never change).
    pub fixed: Vec<Arc<Backend>>,
    /// Its servers written as names, with their current backends.
    pub named: Vec<(NamedServer, Vec<Arc<Backend>>)>,
    /// Settings for new backends.
    pub settings: BackendSettings,
    /// The resolver.
    pub resolver: Resolver,
    /// Active health checks for new backends.
    pub checks: Option<Arc<CheckSettings>>,
}

/// Re-resolves the group's names until shutdown.
pub async fn run(mut d: Discovery, mut shutdown: Shutdown) {
    let mut wait = MIN_REFRESH;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.triggered() => return,
        }
        let mut next = MAX_REFRESH;
        let mut changed = false;
        for (server, current) in &mut d.named {
            match d.resolver.lookup(&server.host).await {
                Ok((ips, ttl)) => {
                    next = next.min(ttl);
                    let known: BTreeMap<IpAddr, Arc<Backend>> =
                        current.iter().map(|b| (b.addr().ip(), b.clone())).collect();
                    if known.keys().copied().eq(ips.iter().copied()) {
                        continue;
                    }
                    let fresh: Vec<Arc<Backend>> = ips
                        .iter()
                        .map(|ip| match known.get(ip) {
                            Some(b) => b.clone(),
                            None => {
                                let b = server.backends(&[*ip], &d.settings).remove(0);
                                if let Some(checks) = &d.checks {
                                    tokio::spawn(health_check::run_weak(
                                        Arc::downgrade(&b),
                                        checks.clone(),
                                        d.group.name().to_owned(),
                                        shutdown.clone(),
                                    ));
                                }
                                b
                            }
                        })
                        .collect();
                    let before: Vec<String> = current.iter().map(|b| b.addr().ip().to_string()).collect();
                    let after: Vec<String> = fresh.iter().map(|b| b.addr().ip().to_string()).collect();
                    tracing::info!(
                        upstream = %d.group.name(),
                        server = %server.name,
                        before = %before.join(","),
                        after = %after.join(","),
                        "DNS answer changed: updating the group"
                    );
                    *current = fresh;
                    changed = true;
                }
                Err(e) => {
                    next = next.min(RETRY_AFTER_FAILURE);
                    tracing::warn!(
                        upstream = %d.group.name(),
                        server = %server.name,
                        error = %e,
                        "DNS resolution failed; keeping the last good addresses"
                    );
                }
            }
        }
        if changed {
            let mut all = d.fixed.clone();
            for (_, backends) in &d.named {
                all.extend(backends.iter().cloned());
            }
            d.group.set_backends(all);
        }
        wait = next.clamp(MIN_REFRESH, MAX_REFRESH);
    }
}
