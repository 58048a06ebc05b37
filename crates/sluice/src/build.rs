//! Turns a validated [`Config`] into the running engine's pieces: resolved upstream
//! groups, the routing table with its filters, and per-listener settings.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use sluice_config::{self as config, Config};
use sluice_core::gcra::Gcra;
use sluice_core::guard::GuardConfig;
use sluice_core::listener::ListenerSettings;
use sluice_core::tls::server::{ClientAuth, ServerTlsSettings, SniName, TlsAcceptor, TlsEntry};
use sluice_filters::access_log::{self, AccessLog};
use sluice_filters::affinity::AffinityKey;
use sluice_filters::cache::key::KeySettings;
use sluice_filters::cache::policy::Overrides;
use sluice_filters::cache::{CacheRule, HttpCache};
use sluice_filters::compress::{Coding, CompressPolicy, Levels};
use sluice_filters::files::{FilesSettings, StaticFiles};
use sluice_filters::headers::{HeaderEdit, HeaderRules};
use sluice_filters::ratelimit::cluster::Fallback;
use sluice_filters::ratelimit::redis::{Redis, RedisSettings};
use sluice_filters::ratelimit::{KeyPart, RateLimit};
use sluice_filters::respond::{Redirect, Respond};
use sluice_filters::router::{self, Host, ProxyTarget, Route, Router, Site};
use sluice_filters::tls::{ClientCertHeaders, HttpsRedirect};
use sluice_filters::{RequestFilter, ResponseFilter};
use sluice_proxy::retry::{RetryBudget, RetryPolicy};
use sluice_upstream::discovery::{Discovery, NamedServer, Resolver};
use sluice_upstream::health::{OutlierPolicy, WhenAllDown};
use sluice_upstream::health_check::{CheckSettings, Probe};
use sluice_upstream::limits::Limits;
use sluice_upstream::selection::Algorithm;
use sluice_upstream::{
    Backend, BackendSettings, Policies, PoolSettings, Timeouts, TlsConnector, Upstream, UpstreamProtocol,
    UpstreamTlsSettings,
};

use crate::configured::ConfiguredProxy;
use crate::metrics::{Metrics, RouteLabels};

/// An upstream group, the affinity key of its hashing balancer and its retry policy.
struct Group {
    upstream: Arc<Upstream>,
    affinity: Option<AffinityKey>,
    retry: Option<Arc<RetryPolicy>>,
    sticky_cookie: Option<Arc<str>>,
}

/// The engine's pieces, ready to start.
#[derive(Debug)]
pub struct Built {
    /// The proxy.
    pub proxy: ConfiguredProxy,
    /// Listener settings, in configuration order (index = listener id).
    pub listeners: Vec<ListenerSettings>,
    /// Every backend, for pool maintenance.
    pub backends: Vec<Arc<Backend>>,
    /// The access log, if enabled (flushed at shutdown).
    pub access_log: Option<Arc<AccessLog>>,
    /// TLS acceptors of the TLS listeners (for certificate reloads).
    pub tls: Vec<Arc<TlsAcceptor>>,
    /// TLS clients of the upstream groups that use TLS, with the group names (for reloads).
    pub upstream_tls: Vec<(String, Arc<TlsConnector>)>,
    /// Upstream groups in configuration order (for status output).
    pub upstreams: Vec<Arc<Upstream>>,
    /// Active health checks to run: backend, settings, group name.
    pub checks: Vec<(Arc<Backend>, Arc<CheckSettings>, String)>,
    /// DNS re-resolution tasks to run, one per group with named servers.
    pub discoveries: Vec<Discovery>,
    /// Per-route metrics (also recorded by the proxy).
    pub metrics: Arc<Metrics>,
    /// The HTTP cache, when a site or route caches (kept across reloads).
    pub cache: Option<Arc<HttpCache>>,
    /// The Redis client of cluster-wide rate limits.
    pub redis: Option<Arc<Redis>>,
    /// Other background tasks of the generation (JWKS refreshers).
    pub tasks: Vec<crate::policy::Task>,
}

/// What a reload can keep from the running configuration.
#[derive(Debug, Clone, Copy)]
pub struct Previous<'a> {
    /// The running configuration.
    pub config: &'a Config,
    /// Its upstream groups (their current members).
    pub upstreams: &'a [Arc<Upstream>],
    /// Its per-route metrics.
    pub metrics: &'a Metrics,
    /// Its HTTP cache.
    pub cache: Option<&'a Arc<HttpCache>>,
    /// Its Redis client.
    pub redis: Option<&'a Arc<Redis>>,
}

/// Builds the engine from a configuration; resolves upstream server names.
///
/// `slots[i]` is the id of `config.listeners[i]` (ids stay the same across reloads, so a
/// connection accepted before a reload routes with its listener's new sites). With
/// `previous`, a group whose connection settings (protocol, pool, timeouts, TLS) did not
/// change keeps the servers that did not change: their pools, health and ejection state
/// carry over. Per-route metrics carry over by their labels.
pub async fn build(config: &Config, slots: &[usize], previous: Option<Previous<'_>>) -> anyhow::Result<Built> {
    let mut upstreams = HashMap::new();
    let mut all_backends = Vec::new();
    let mut upstream_tls = Vec::new();
    let mut groups = Vec::new();
    let mut checks = Vec::new();
    let mut discoveries = Vec::new();
    let mut resolver: Option<Resolver> = None;
    for u in &config.upstreams {
        // The same group with the same connection settings: its servers can be kept.
        let kept: Option<(&Arc<Upstream>, BackendSettings)> = previous.and_then(|p| {
            let old = p.config.upstreams.iter().find(|o| o.name == u.name)?;
            let same = old.protocol == u.protocol
                && old.pool == u.pool
                && old.timeouts == u.timeouts
                && old.tls == u.tls
                && old.proxy_protocol == u.proxy_protocol;
            let group = p.upstreams.iter().find(|g| g.name() == u.name)?;
            let settings = group.backends().first()?.settings().clone();
            same.then_some((group, settings))
        });
        let protocol = match u.protocol {
            config::UpstreamProtocol::Http1 => UpstreamProtocol::Http1,
            config::UpstreamProtocol::H2c => UpstreamProtocol::H2c,
            config::UpstreamProtocol::H2 => UpstreamProtocol::H2,
        };
        let tls = match &u.tls {
            None => None,
            Some(_) if kept.as_ref().is_some_and(|(_, s)| s.tls.is_some()) => {
                // Kept servers keep their TLS client: re-read its files (same paths).
                let connector = kept.as_ref().and_then(|(_, s)| s.tls.clone());
                if let Some(c) = &connector {
                    c.reload().map_err(|e| anyhow!("upstream `{}`: {e}", u.name))?;
                    upstream_tls.push((u.name.clone(), c.clone()));
                }
                connector
            }
            Some(t) => {
                let settings = UpstreamTlsSettings {
                    server_name: t.server_name.clone(),
                    ca: t.ca.clone(),
                    verify: t.verify,
                    client_certificate: t.client_certificate.as_ref().map(|c| (c.certificate.clone(), c.key.clone())),
                };
                let alpn: &[&[u8]] = if protocol == UpstreamProtocol::H2 { &[b"h2"] } else { &[b"http/1.1"] };
                let connector =
                    TlsConnector::new(&settings, alpn).map_err(|e| anyhow!("upstream `{}`: {e}", u.name))?;
                if !t.verify {
                    tracing::warn!(upstream = %u.name, "TLS certificate verification is OFF for this upstream");
                }
                let connector = Arc::new(connector);
                upstream_tls.push((u.name.clone(), connector.clone()));
                Some(connector)
            }
        };
        let settings = match &kept {
            Some((_, settings)) => settings.clone(),
            None => BackendSettings {
                protocol,
                pool: PoolSettings { max_idle: u.pool.max_idle_per_server, idle_timeout: u.pool.idle_timeout },
                timeouts: Timeouts {
                    connect: u.timeouts.connect,
                    first_byte: u.timeouts.first_byte,
                    read_idle: u.timeouts.read_idle,
                },
                tls,
                max_header_size: usize::try_from(u.max_header_size).unwrap_or(64 * 1024),
                proxy_protocol: u.proxy_protocol.map(|v| match v {
                    sluice_config::model::ProxyProtocolVersion::V1 => sluice_core::proxy_protocol::Version::V1,
                    sluice_config::model::ProxyProtocolVersion::V2 => sluice_core::proxy_protocol::Version::V2,
                }),
            },
        };
        // A server is kept when its name, address and weight are the same.
        let old_members = kept.as_ref().map(|(g, _)| g.backends()).unwrap_or_default();
        let keep = |b: Arc<Backend>| -> Arc<Backend> {
            old_members
                .iter()
                .find(|o| o.name() == b.name() && o.addr() == b.addr() && o.weight() == b.weight())
                .cloned()
                .unwrap_or(b)
        };
        // Servers written as IP addresses are fixed; names are resolved to all their
        // addresses now, and re-resolved on their TTL by a discovery task.
        let mut fixed = Vec::new();
        let mut named = Vec::new();
        for s in &u.servers {
            if let (false, Ok(addr)) = (s.srv, s.address.parse::<std::net::SocketAddr>()) {
                fixed.push(keep(Arc::new(Backend::new(s.address.clone(), addr, s.weight, settings.clone()))));
                continue;
            }
            let server = if s.srv {
                NamedServer::srv(&s.address)
            } else {
                NamedServer::parse(&s.address, s.weight)
                    .ok_or_else(|| anyhow!("upstream `{}`: server `{}` is not host:port", u.name, s.address))?
            };
            if resolver.is_none() {
                resolver = Some(match config.server.dns_server {
                    Some(addr) => Resolver::with_name_server(addr),
                    None => Resolver::system().map_err(|e| anyhow!("{e}"))?,
                });
            }
            let Some(r) = resolver.as_ref() else { continue };
            let found = match server.resolve(r, &settings).await {
                Ok(found) => found.into_iter().map(&keep).collect::<Vec<_>>(),
                Err(e) => {
                    // At a reload, a name that resolved before keeps its last addresses (a
                    // DNS hiccup must not fail the reload); at startup it is an error.
                    let last: Vec<Arc<Backend>> =
                        old_members.iter().filter(|b| !s.srv && b.name() == s.address).cloned().collect();
                    if last.is_empty() {
                        return Err(anyhow!("upstream `{}`: cannot resolve server `{}`: {e}", u.name, s.address));
                    }
                    tracing::warn!(upstream = %u.name, server = %s.address, error = %e, "DNS resolution failed at the reload; keeping the last addresses");
                    last
                }
            };
            named.push((server, found));
        }
        let mut backends = fixed.clone();
        for (_, found) in &named {
            backends.extend(found.iter().cloned());
        }
        all_backends.extend(backends.iter().cloned());
        let algorithm = match u.balance.algorithm {
            config::BalanceAlgorithm::RoundRobin => Algorithm::RoundRobin,
            config::BalanceAlgorithm::WeightedRoundRobin => Algorithm::WeightedRoundRobin,
            config::BalanceAlgorithm::Random => Algorithm::Random,
            config::BalanceAlgorithm::LeastRequests => Algorithm::LeastRequests,
            config::BalanceAlgorithm::PeakEwma => Algorithm::PeakEwma,
            config::BalanceAlgorithm::Ketama => Algorithm::Ketama,
            config::BalanceAlgorithm::Maglev => Algorithm::Maglev,
        };
        let affinity = algorithm.uses_key().then(|| match &u.balance.hash {
            config::HashKey::ClientIp => AffinityKey::ClientIp,
            config::HashKey::Header(h) => AffinityKey::Header(h.clone()),
            config::HashKey::Cookie(c) => AffinityKey::Cookie(c.clone()),
            config::HashKey::Path => AffinityKey::Path,
            config::HashKey::Query(q) => AffinityKey::Query(q.clone()),
        });
        let o = &u.outlier;
        let policy = OutlierPolicy {
            consecutive_failures: o.consecutive_failures,
            consecutive_5xx: o.consecutive_5xx,
            failure_rate_percent: o.failure_rate_percent,
            failure_rate_window: o.window,
            failure_rate_min_requests: o.min_requests,
            base_ejection: o.base_ejection,
            max_ejection: o.max_ejection,
            max_ejected_percent: o.max_ejected_percent,
        };
        let when_all_down = match u.when_all_down {
            config::WhenAllDown::FailOpen => WhenAllDown::FailOpen,
            config::WhenAllDown::Refuse => WhenAllDown::Refuse,
        };
        let mut checks_for_group = None;
        if let Some(hc) = &u.health_check {
            let settings = Arc::new(CheckSettings {
                probe: match &hc.probe {
                    config::HealthProbe::Tcp => Probe::Tcp,
                    config::HealthProbe::Http { path, status_min, status_max, body, host } => Probe::Http {
                        path: path.clone(),
                        status: (*status_min, *status_max),
                        body: body.clone(),
                        host: host.clone(),
                    },
                },
                interval: hc.interval,
                timeout: hc.timeout,
                jitter: hc.jitter,
                healthy_threshold: hc.healthy_threshold,
                unhealthy_threshold: hc.unhealthy_threshold,
            });
            for b in &backends {
                checks.push((b.clone(), settings.clone(), u.name.clone()));
            }
            checks_for_group = Some(settings);
        }
        let limits = Limits {
            max_connections: u.limits.max_connections,
            max_pending: u.limits.max_pending,
            max_in_flight: u.limits.max_in_flight,
        };
        let policies = Policies { outlier: policy, when_all_down, limits, slow_start: u.slow_start };
        let group = Arc::new(Upstream::with_policies(u.name.clone(), backends, algorithm, policies));
        if let (false, Some(r)) = (named.is_empty(), resolver.as_ref()) {
            discoveries.push(Discovery {
                group: group.clone(),
                fixed,
                named,
                settings: settings.clone(),
                resolver: r.clone(),
                checks: checks_for_group.clone(),
            });
        }
        groups.push(group.clone());
        let retry = u.retry.as_ref().map(|r| {
            Arc::new(RetryPolicy {
                max_retries: r.attempts,
                on_reset: r.reset,
                statuses: r.statuses.clone(),
                non_idempotent: r.non_idempotent,
                per_try_timeout: r.per_try_timeout,
                deadline: r.deadline,
                backoff: r.backoff,
                max_backoff: r.max_backoff,
                budget: (r.budget_percent > 0)
                    .then(|| Arc::new(RetryBudget::new(r.budget_percent, r.min_retries_per_second))),
            })
        });
        let sticky_cookie = u.sticky_cookie.as_deref().map(Arc::from);
        upstreams.insert(u.name.clone(), Group { upstream: group, affinity, retry, sticky_cookie });
    }

    let cache = http_cache(config, previous)?;
    let redis = redis_client(config, previous);
    if let Some(r) = &redis {
        if !r.wait_connected(r.settings().timeout.max(std::time::Duration::from_secs(1))).await {
            tracing::warn!(redis = %r.settings().address, "Redis is not reachable yet; cluster-wide rate limits use their on-redis-error setting until it is");
        }
    }
    let mut tasks = Vec::new();
    let plain_upstreams: HashMap<String, Arc<Upstream>> =
        upstreams.iter().map(|(name, g)| (name.clone(), g.upstream.clone())).collect();
    let mut router = Router::new(slots.iter().max().map_or(0, |m| m + 1));
    let mut route_labels = Vec::with_capacity(config.sites.len());
    for site in &config.sites {
        // Indexes into `config.listeners`; the router takes their slots.
        let listener_ids: Vec<usize> = (0..config.listeners.len()).filter(|&i| serves(config, site, i)).collect();
        let listener_slots: Vec<usize> = listener_ids.iter().map(|&i| slots[i]).collect();
        let hosts: Vec<Host> = site
            .hosts
            .iter()
            .map(|h| match h {
                config::HostPattern::Exact(n) => Host::Exact(n.clone()),
                config::HostPattern::Wildcard(s) => Host::Wildcard(s.clone()),
                config::HostPattern::Any => Host::Any,
            })
            .collect();
        let mut routes = Vec::with_capacity(site.routes.len());
        let site_limit = site.rate_limit.as_ref().and_then(|l| rate_limit(l, site_label(site), redis.as_ref()));
        let site_policy = crate::policy::site_policy(&site.policy, &plain_upstreams, &mut tasks)
            .await
            .with_context(|| format!("site `{}`", site_label(site)))?;
        for r in &site.routes {
            let compress = r.compress.as_ref().or(site.compress.as_ref());
            let mut route = build_route(r, &upstreams, compress)?;
            // A route's own limit is its own; the site's is one limit shared by its routes.
            route.rate_limit = match &r.rate_limit {
                Some(l) => rate_limit(l, format!("{}{}", site_label(site), route_name(&route)), redis.as_ref()),
                None => site_limit.clone(),
            };
            let policy = crate::policy::route_policy(&site_policy, &r.policy, &plain_upstreams, &mut tasks)
                .await
                .with_context(|| format!("site `{}`, route `{}`", site_label(site), route_name(&route)))?;
            route.access = policy.access;
            route.max_body_size = policy.max_body_size;
            route.in_flight = policy.in_flight;
            if let (Some(rule), Some(cache)) = (r.cache.as_ref().or(site.cache.as_ref()), &cache) {
                if rule.enabled && route.proxy.is_some() {
                    route.cache = Some(Arc::new(cache_rule(rule, cache)));
                }
            }
            routes.push(route);
        }
        route_labels.push(
            site.routes
                .iter()
                .map(|r| RouteLabels {
                    site: site_label(site),
                    route: match &r.path {
                        config::PathMatch::Exact(p) | config::PathMatch::Prefix(p) => p.clone(),
                    },
                    upstream: match &r.action {
                        config::RouteAction::Proxy(p) => p.upstream.clone(),
                        _ => "-".to_owned(),
                    },
                })
                .collect(),
        );
        let built = Site {
            request_filters: site_filters(config, site, &listener_ids),
            request_headers: rules(&site.request_headers),
            response_headers: rules(&site.response_headers),
            routes,
        };
        router.add_site(&hosts, &listener_slots, built);
    }

    let access_log = match &config.server.access_log.target {
        config::LogTarget::Off => None,
        target => {
            let target = match target {
                config::LogTarget::Stderr => access_log::Target::Stderr,
                config::LogTarget::File(p) => access_log::Target::File(p.clone()),
                _ => access_log::Target::Stdout,
            };
            let format = match config.server.access_log.format {
                config::LogFormat::Json => access_log::Format::Json,
                config::LogFormat::Text => access_log::Format::Text,
            };
            Some(Arc::new(AccessLog::new(target, format).context("opening the access log")?))
        }
    };

    let mut acceptors = Vec::new();
    let mut listeners = Vec::with_capacity(config.listeners.len());
    let mut listener_policies: Vec<crate::policy::ListenerPolicy> = Vec::new();
    for (id, l) in config.listeners.iter().enumerate() {
        let slot = slots[id];
        if listener_policies.len() <= slot {
            listener_policies.resize_with(slot + 1, Default::default);
        }
        listener_policies[slot] = crate::policy::listener_policy(l);
        let (limits, http2) = crate::policy::listener_limits(l);
        let tls = match &l.tls {
            None => None,
            Some(tls) => {
                let acceptor = TlsAcceptor::new(server_tls(config, id, tls))
                    .with_context(|| format!("listener `{}`: loading TLS certificates", l.name))?;
                let acceptor = Arc::new(acceptor);
                acceptors.push(acceptor.clone());
                Some(acceptor)
            }
        };
        listeners.push(ListenerSettings {
            id: slots[id],
            name: l.name.clone(),
            max_connections: l.max_connections,
            guard: GuardConfig {
                max_header_size: l.max_header_size,
                header_read_timeout: l.header_read_timeout,
                keepalive_timeout: l.keepalive_timeout,
                idle_release: Some(std::time::Duration::from_secs(1)),
                release_above: 256,
                send_timeout: l.send_timeout,
                max_headers: l.max_headers,
                underscores_in_headers: l.underscores_in_headers,
            },
            h2c: l.h2c,
            tls,
            stats: Default::default(),
            http2,
            limits,
            proxy_protocol: l.proxy_protocol.as_ref().map(|pp| sluice_core::listener::ProxyProtocolSettings {
                trusted: pp.trusted.iter().copied().collect(),
                timeout: pp.timeout,
            }),
        });
    }

    let metrics = Arc::new(Metrics::new(route_labels, previous.map(|p| p.metrics)));
    Ok(Built {
        // Requests are counted only when something can read the counts (the admin API).
        proxy: ConfiguredProxy::new(router, access_log.clone(), config.server.admin.is_some().then(|| metrics.clone()))
            .with_listeners(listener_policies),
        tasks,
        redis,
        metrics,
        cache,
        listeners,
        backends: all_backends,
        access_log,
        tls: acceptors,
        upstream_tls,
        upstreams: groups,
        checks,
        discoveries,
    })
}

/// Whether `site` is served on listener `id`.
fn serves(config: &Config, site: &config::SiteConfig, id: usize) -> bool {
    let l = &config.listeners[id];
    site.listeners.is_empty() || site.listeners.iter().any(|n| *n == l.name || *n == l.address.to_string())
}

/// The TLS settings of listener `id`: one certificate entry per site it serves (sites
/// without a certificate of their own use the default one), plus the listener's own
/// default certificate if it has one.
fn server_tls(config: &Config, id: usize, tls: &config::ListenerTls) -> ServerTlsSettings {
    let sites: Vec<&config::SiteConfig> = config.sites.iter().filter(|s| serves(config, s, id)).collect();
    // The certificate of sites that have none.
    let default_pair = tls
        .certificate
        .clone()
        .or_else(|| {
            sites.iter().find(|s| s.hosts.contains(&config::HostPattern::Any)).and_then(|s| s.certificate.clone())
        })
        .or_else(|| sites.iter().find_map(|s| s.certificate.clone()));
    let client_auth = |c: &config::ClientAuthConfig| ClientAuth { required: c.required, ca: c.ca.clone() };
    let mut entries = Vec::new();
    let mut default_entry = None;
    let mut default_is_catch_all = false;
    if let Some(pair) = &tls.certificate {
        default_entry = Some(0);
        entries.push(TlsEntry {
            label: "default".into(),
            names: Vec::new(),
            certificate: pair.certificate.clone(),
            key: pair.key.clone(),
            client_auth: tls.client_auth.as_ref().map(client_auth),
        });
    }
    for site in sites {
        let Some(pair) = site.certificate.as_ref().or(default_pair.as_ref()) else { continue };
        let names: Vec<SniName> = site
            .hosts
            .iter()
            .map(|h| match h {
                config::HostPattern::Exact(n) => SniName::Exact(n.clone()),
                config::HostPattern::Wildcard(s) => SniName::Suffix(s.clone()),
                config::HostPattern::Any => SniName::Any,
            })
            .collect();
        // Without a listener certificate, the default is the `*` site's own certificate,
        // else the first site's own certificate (nginx's "first server" rule).
        if tls.certificate.is_none() && site.certificate.is_some() {
            let catch_all = names.contains(&SniName::Any);
            if default_entry.is_none() || (catch_all && !default_is_catch_all) {
                default_entry = Some(entries.len());
                default_is_catch_all = catch_all;
            }
        }
        entries.push(TlsEntry {
            label: site_label(site),
            names,
            certificate: pair.certificate.clone(),
            key: pair.key.clone(),
            client_auth: site.client_auth.as_ref().or(tls.client_auth.as_ref()).map(client_auth),
        });
    }
    ServerTlsSettings {
        min_version: tls.min_version,
        http2: tls.http2,
        without_sni: tls.without_sni,
        unknown_sni: tls.unknown_sni,
        session_tickets: tls.session_tickets,
        session_cache: tls.session_cache,
        entries,
        default_entry: default_entry.unwrap_or(0),
        handshake_timeout: tls.handshake_timeout,
    }
}

fn site_label(site: &config::SiteConfig) -> String {
    match site.hosts.first() {
        Some(config::HostPattern::Exact(n)) => n.clone(),
        Some(config::HostPattern::Wildcard(s)) => format!("*{s}"),
        _ => "*".into(),
    }
}

/// Site-wide filters: the HTTPS redirect and client certificate headers.
fn site_filters(config: &Config, site: &config::SiteConfig, listener_ids: &[usize]) -> Vec<Arc<dyn RequestFilter>> {
    let mut filters: Vec<Arc<dyn RequestFilter>> = Vec::new();
    if let Some(r) = &site.https_redirect {
        filters.push(Arc::new(HttpsRedirect::new(r.status, r.port)));
    }
    // The site's own policy, else that of the first TLS listener serving it that has one.
    let auth = site.client_auth.as_ref().or_else(|| {
        listener_ids.iter().find_map(|&i| config.listeners[i].tls.as_ref().and_then(|t| t.client_auth.as_ref()))
    });
    if let Some(a) = auth {
        if a.required || a.subject_header.is_some() || a.san_header.is_some() {
            filters.push(Arc::new(ClientCertHeaders::new(
                a.required,
                a.ca.clone(),
                a.subject_header.clone(),
                a.san_header.clone(),
            )));
        }
    }
    filters
}

fn rules(edits: &config::HeaderEdits) -> HeaderRules {
    HeaderRules::new(
        edits
            .edits
            .iter()
            .map(|e| match e {
                config::HeaderEdit::Set(n, v) => HeaderEdit::Set(n.clone(), v.clone()),
                config::HeaderEdit::Add(n, v) => HeaderEdit::Add(n.clone(), v.clone()),
                config::HeaderEdit::Remove(n) => HeaderEdit::Remove(n.clone()),
            })
            .collect(),
    )
}

/// The process's HTTP cache: kept from the running configuration when the storage settings
/// did not change (its entries survive the reload), else made anew; `None` when nothing
/// caches.
fn http_cache(config: &Config, previous: Option<Previous<'_>>) -> anyhow::Result<Option<Arc<HttpCache>>> {
    let caches = config.sites.iter().any(|s| {
        s.cache.as_ref().is_some_and(|c| c.enabled)
            || s.routes.iter().any(|r| r.cache.as_ref().is_some_and(|c| c.enabled))
    });
    if !caches && config.server.cache.is_none() {
        return Ok(None);
    }
    let settings = config.server.cache.clone().unwrap_or_default();
    if let Some(p) = previous {
        if p.config.server.cache.clone().unwrap_or_default() == settings {
            if let Some(cache) = p.cache {
                return Ok(Some(cache.clone()));
            }
        }
    }
    let memory = sluice_cache::MemoryTier::new(settings.memory, settings.max_object);
    let disk = match &settings.disk {
        Some((dir, budget)) => Some(
            sluice_cache::DiskTier::open(dir, *budget, settings.max_object)
                .with_context(|| format!("opening the disk cache {}", dir.display()))?,
        ),
        None => None,
    };
    Ok(Some(Arc::new(HttpCache::new(sluice_cache::Store::new(memory, disk)))))
}

fn cache_rule(c: &config::CacheRuleConfig, cache: &Arc<HttpCache>) -> CacheRule {
    let header_names = |names: &[String]| -> Vec<http::HeaderName> {
        names.iter().filter_map(|n| http::HeaderName::from_bytes(n.as_bytes()).ok()).collect()
    };
    CacheRule {
        cache: cache.clone(),
        key: KeySettings {
            ignore_query: c.ignore_query,
            sort_query: c.sort_query,
            ignore_params: c.ignore_params.clone(),
            headers: header_names(&c.key_headers),
            cookies: c.key_cookies.clone(),
        },
        overrides: Overrides {
            default_ttl: c.default_ttl.clone(),
            override_ttl: c.override_ttl.clone(),
            store_set_cookie: c.store_set_cookie,
            store_private: c.store_private,
            heuristic_max: c.heuristic_max,
        },
        lock_timeout: c.lock_timeout,
        tag_headers: header_names(&c.tag_headers),
        targeted: header_names(&c.targeted_cache_control),
    }
}

/// The limiter of a `rate-limit` block (`None` when it turns limiting off).
fn route_name(route: &Route) -> String {
    match &route.path {
        router::PathMatch::Exact(p) | router::PathMatch::Prefix(p) => p.clone(),
    }
}

fn rate_limit(c: &config::RateLimitConfig, name: String, redis: Option<&Arc<Redis>>) -> Option<Arc<RateLimit>> {
    if !c.enabled {
        return None;
    }
    let key = c
        .key
        .iter()
        .filter_map(|part| match part.split_once(':') {
            None if part == "route" => Some(KeyPart::Route),
            None => Some(KeyPart::ClientIp),
            Some(("header", h)) => http::HeaderName::from_bytes(h.as_bytes()).ok().map(KeyPart::Header),
            Some((_, c)) => Some(KeyPart::Cookie(c.to_owned())),
        })
        .collect();
    let name = c.name.clone().unwrap_or(name);
    let limit = RateLimit::new(name.clone(), c.per_second, c.burst, key, c.delay, c.max_keys).with_tarpit(c.tarpit);
    let limit = match (c.store, redis) {
        (config::RateLimitStore::Redis, Some(redis)) => {
            let fallback = match c.on_redis_error {
                config::RedisFallback::Allow => Fallback::Allow,
                config::RedisFallback::Deny => Fallback::Deny,
                config::RedisFallback::Local => Fallback::Local(Gcra::new(c.per_second, c.burst, c.delay, c.max_keys)),
            };
            limit.with_redis(redis.clone(), &name, fallback, c.max_keys)
        }
        _ => limit,
    };
    Some(Arc::new(limit))
}

/// The Redis client: the running one when its settings did not change (its connection
/// carries over), else a new one; `None` without `server { redis }`.
fn redis_client(config: &Config, previous: Option<Previous<'_>>) -> Option<Arc<Redis>> {
    let r = config.server.redis.as_ref()?;
    let settings = RedisSettings {
        address: r.address.clone(),
        timeout: r.timeout,
        prefix: r.prefix.clone(),
        username: r.username.clone(),
        password: r.password.clone(),
        database: r.database,
    };
    if let Some(old) = previous.and_then(|p| p.redis) {
        let s = old.settings();
        if (&s.address, s.timeout, &s.prefix, &s.username, &s.password, s.database)
            == (
                &settings.address,
                settings.timeout,
                &settings.prefix,
                &settings.username,
                &settings.password,
                settings.database,
            )
        {
            return Some(old.clone());
        }
    }
    Some(Redis::start(settings))
}

/// The compression policy of a `compress` block (`None` when it turns compression off).
fn compress_policy(c: &config::CompressConfig) -> Option<Arc<CompressPolicy>> {
    if !c.enabled {
        return None;
    }
    let codings = c
        .codings
        .iter()
        .map(|coding| match coding {
            config::ContentCoding::Gzip => Coding::Gzip,
            config::ContentCoding::Brotli => Coding::Brotli,
            config::ContentCoding::Zstd => Coding::Zstd,
        })
        .collect();
    let levels = Levels { gzip: c.gzip_level, brotli: c.brotli_level, zstd: c.zstd_level };
    Some(Arc::new(CompressPolicy::new(codings, levels, c.min_size, c.types.clone(), c.decompress)))
}

fn build_route(
    r: &config::RouteConfig,
    upstreams: &HashMap<String, Group>,
    compress: Option<&config::CompressConfig>,
) -> anyhow::Result<Route> {
    let mut request_filters: Vec<Arc<dyn RequestFilter>> = Vec::new();
    let mut response_filters: Vec<Arc<dyn ResponseFilter>> = Vec::new();
    if !r.request_headers.is_empty() {
        request_filters.push(Arc::new(rules(&r.request_headers)));
    }
    if !r.response_headers.is_empty() {
        response_filters.push(Arc::new(rules(&r.response_headers)));
    }
    let mut proxy = None;
    let mut files = None;
    match &r.action {
        config::RouteAction::Proxy(p) => {
            let Group { upstream, affinity, retry, sticky_cookie } = upstreams
                .get(&p.upstream)
                .ok_or_else(|| anyhow!("route proxies to unknown upstream `{}`", p.upstream))?;
            let host = match &p.host {
                Some(h) => Some(http::HeaderValue::try_from(h.as_str()).context("route host override")?),
                None => None,
            };
            proxy = Some(ProxyTarget {
                upstream: upstream.clone(),
                strip_prefix: p.strip_prefix,
                rewrite_prefix: p.rewrite_prefix.clone(),
                host,
                affinity: affinity.clone(),
                // A route that opts in to retrying non-idempotent requests gets its own copy
                // of the policy (same budget).
                retry: match retry {
                    Some(policy) if p.retry_non_idempotent => {
                        Some(Arc::new(RetryPolicy { non_idempotent: true, ..(**policy).clone() }))
                    }
                    other => other.clone(),
                },
                sticky_cookie: sticky_cookie.clone(),
                streaming: p.streaming,
                grpc_timeout_max: p.grpc_timeout_max,
            });
        }
        config::RouteAction::Respond { status, body, headers } => {
            request_filters.push(Arc::new(Respond::new(*status, body.clone(), headers.clone())));
        }
        config::RouteAction::Redirect { status, location } => {
            request_filters.push(Arc::new(Redirect::new(*status, location).map_err(|e| anyhow!(e))?));
        }
        config::RouteAction::Files(f) => {
            let strip_prefix = match (&r.path, f.strip_prefix) {
                (config::PathMatch::Prefix(p), true) => Some(p.clone()),
                _ => None,
            };
            let settings = FilesSettings {
                root: f.root.clone(),
                index: f.index.clone(),
                try_files: f.try_files.clone(),
                listing: f.listing,
                precompressed: f.precompressed,
                follow_symlinks: f.follow_symlinks,
                strip_prefix,
            };
            let served =
                StaticFiles::new(settings).with_context(|| format!("serving files from {}", f.root.display()))?;
            files = Some(Arc::new(served));
        }
    }
    Ok(Route {
        path: match &r.path {
            config::PathMatch::Exact(p) => router::PathMatch::Exact(p.clone()),
            config::PathMatch::Prefix(p) => router::PathMatch::Prefix(p.clone()),
        },
        methods: r.methods.clone(),
        request_filters,
        response_filters,
        proxy,
        files,
        compress: compress.and_then(compress_policy),
        cache: None,
        rate_limit: None,
        access: None,
        max_body_size: None,
        in_flight: None,
    })
}
