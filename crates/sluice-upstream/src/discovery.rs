//! Service discovery by DNS: servers written with a host name are resolved to all their
//! addresses, and re-resolved when the answer's TTL runs out (between 1 s and 5 min).
//!
//! Each address is a backend (`host:port` with the IP as its key). A re-resolution that
//! changes the set replaces the group's members ([`Upstream::set_backends`]): backends that
//! stay keep their pools and health, new ones get health checks, and removed ones drain:
//! requests in flight finish, then their connections close with the last reference. When
//! the resolver fails, the last good set stays and the failure is logged.

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

/// A server written with a host name, or an SRV name.
#[derive(Debug, Clone)]
pub struct NamedServer {
    /// As written (`host:port`, or the SRV name).
    pub name: String,
    /// The host part (or the SRV name).
    pub host: String,
    /// The port (unused for SRV: each record has its own).
    pub port: u16,
    /// The weight of every backend it resolves to (SRV: each record's own weight).
    pub weight: u32,
    /// Look up SRV records (priority, weight, port, target) instead of addresses.
    pub srv: bool,
}

/// One address a named server resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    name: String,
    addr: SocketAddr,
    weight: u32,
}

impl NamedServer {
    /// Splits `host:port`; `None` when it is not a name with a port.
    pub fn parse(written: &str, weight: u32) -> Option<Self> {
        let (host, port) = written.rsplit_once(':')?;
        Some(Self { name: written.to_owned(), host: host.to_owned(), port: port.parse().ok()?, weight, srv: false })
    }

    /// An SRV name such as `_http._tcp.api.internal`.
    pub fn srv(name: &str) -> Self {
        Self { name: name.to_owned(), host: name.to_owned(), port: 0, weight: 1, srv: true }
    }

    /// What the name stands for now, and for how long.
    async fn targets(&self, resolver: &Resolver) -> Result<(Vec<Target>, Duration)> {
        if !self.srv {
            let (ips, ttl) = resolver.lookup(&self.host).await?;
            let targets = ips
                .into_iter()
                .map(|ip| Target { name: self.name.clone(), addr: SocketAddr::new(ip, self.port), weight: self.weight })
                .collect();
            return Ok((targets, ttl));
        }
        let found = resolver
            .0
            .srv_lookup(self.host.as_str())
            .await
            .map_err(|e| Error::because(ErrorKind::ConnectFailed, format!("SRV lookup of `{}`", self.host), e))?;
        let mut ttl = found.as_lookup().valid_until().saturating_duration_since(std::time::Instant::now());
        // Only the best (lowest) priority is used; the others are fallbacks for when it is gone.
        let best = found.iter().map(|r| r.priority()).min();
        let mut targets = Vec::new();
        for record in found.iter().filter(|r| Some(r.priority()) == best) {
            let host = record.target().to_utf8();
            let host = host.trim_end_matches('.');
            let (ips, t) = resolver.lookup(host).await?;
            ttl = ttl.min(t);
            for ip in ips {
                targets.push(Target {
                    name: format!("{host}:{}", record.port()),
                    addr: SocketAddr::new(ip, record.port()),
                    weight: u32::from(record.weight()).max(1),
                });
            }
        }
        if targets.is_empty() {
            return Err(Error::explain(ErrorKind::ConnectFailed, format!("`{}` has no SRV records", self.host)));
        }
        targets.sort_by(|a, b| (a.addr, &a.name).cmp(&(b.addr, &b.name)));
        Ok((targets, ttl))
    }

    /// Resolves the server for the first time (at startup): all its addresses.
    pub async fn resolve(&self, resolver: &Resolver, settings: &BackendSettings) -> Result<Vec<Arc<Backend>>> {
        let (targets, _) = self.targets(resolver).await?;
        Ok(targets.iter().map(|t| Arc::new(Backend::new(t.name.clone(), t.addr, t.weight, settings.clone()))).collect())
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
            match server.targets(&d.resolver).await {
                Ok((targets, ttl)) => {
                    next = next.min(ttl);
                    let same = current.len() == targets.len()
                        && current
                            .iter()
                            .zip(&targets)
                            .all(|(b, t)| b.addr() == t.addr && b.name() == t.name && b.weight() == t.weight);
                    if same {
                        continue;
                    }
                    let fresh: Vec<Arc<Backend>> = targets
                        .iter()
                        .map(|t| {
                            let kept = current
                                .iter()
                                .find(|b| b.addr() == t.addr && b.name() == t.name && b.weight() == t.weight);
                            match kept {
                                Some(b) => b.clone(),
                                None => {
                                    let b =
                                        Arc::new(Backend::new(t.name.clone(), t.addr, t.weight, d.settings.clone()));
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
                            }
                        })
                        .collect();
                    let before: Vec<String> = current.iter().map(|b| b.addr().to_string()).collect();
                    let after: Vec<String> = fresh.iter().map(|b| b.addr().to_string()).collect();
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
