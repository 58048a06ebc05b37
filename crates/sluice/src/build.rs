//! Turns a validated [`Config`] into the running engine's pieces: resolved upstream
//! groups, the routing table with its filters, and per-listener settings.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use sluice_config::{self as config, Config};
use sluice_core::guard::GuardConfig;
use sluice_core::listener::ListenerSettings;
use sluice_filters::access_log::{self, AccessLog};
use sluice_filters::headers::{HeaderEdit, HeaderRules};
use sluice_filters::respond::{Redirect, Respond};
use sluice_filters::router::{self, Host, ProxyTarget, Route, Router, Site};
use sluice_filters::{RequestFilter, ResponseFilter};
use sluice_upstream::{Backend, BackendSettings, PoolSettings, Timeouts, Upstream, UpstreamProtocol};

use crate::configured::ConfiguredProxy;

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
}

/// Builds the engine from a configuration; resolves upstream server names.
pub async fn build(config: &Config) -> anyhow::Result<Built> {
    let mut upstreams = HashMap::new();
    let mut all_backends = Vec::new();
    for u in &config.upstreams {
        let settings = BackendSettings {
            protocol: match u.protocol {
                config::UpstreamProtocol::Http1 => UpstreamProtocol::Http1,
                config::UpstreamProtocol::H2c => UpstreamProtocol::H2c,
            },
            pool: PoolSettings { max_idle: u.pool.max_idle_per_server, idle_timeout: u.pool.idle_timeout },
            timeouts: Timeouts {
                connect: u.timeouts.connect,
                first_byte: u.timeouts.first_byte,
                read_idle: u.timeouts.read_idle,
            },
        };
        let mut backends = Vec::with_capacity(u.servers.len());
        for s in &u.servers {
            let addr = tokio::net::lookup_host(s.address.as_str())
                .await
                .with_context(|| format!("upstream `{}`: cannot resolve server `{}`", u.name, s.address))?
                .next()
                .ok_or_else(|| anyhow!("upstream `{}`: server `{}` resolved to no address", u.name, s.address))?;
            let backend = Arc::new(Backend::new(s.address.clone(), addr, s.weight, settings));
            all_backends.push(backend.clone());
            backends.push(backend);
        }
        upstreams.insert(u.name.clone(), Arc::new(Upstream::new(u.name.clone(), backends)));
    }

    let mut router = Router::new(config.listeners.len());
    for site in &config.sites {
        let listener_ids: Vec<usize> = if site.listeners.is_empty() {
            (0..config.listeners.len()).collect()
        } else {
            config
                .listeners
                .iter()
                .enumerate()
                .filter(|(_, l)| site.listeners.iter().any(|n| *n == l.name || *n == l.address.to_string()))
                .map(|(i, _)| i)
                .collect()
        };
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
        for r in &site.routes {
            routes.push(build_route(r, &upstreams)?);
        }
        let built = Site {
            request_headers: rules(&site.request_headers),
            response_headers: rules(&site.response_headers),
            routes,
        };
        router.add_site(&hosts, &listener_ids, built);
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

    let listeners = config
        .listeners
        .iter()
        .enumerate()
        .map(|(id, l)| ListenerSettings {
            id,
            name: l.name.clone(),
            max_connections: l.max_connections,
            guard: GuardConfig {
                max_header_size: l.max_header_size,
                header_read_timeout: l.header_read_timeout,
                keepalive_timeout: l.keepalive_timeout,
                idle_release: Some(std::time::Duration::from_secs(1)),
                release_above: 256,
            },
            h2c: l.h2c,
            tls: None,
        })
        .collect();

    Ok(Built { proxy: ConfiguredProxy::new(router, access_log.clone()), listeners, backends: all_backends, access_log })
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

fn build_route(r: &config::RouteConfig, upstreams: &HashMap<String, Arc<Upstream>>) -> anyhow::Result<Route> {
    let mut request_filters: Vec<Arc<dyn RequestFilter>> = Vec::new();
    let mut response_filters: Vec<Arc<dyn ResponseFilter>> = Vec::new();
    if !r.request_headers.is_empty() {
        request_filters.push(Arc::new(rules(&r.request_headers)));
    }
    if !r.response_headers.is_empty() {
        response_filters.push(Arc::new(rules(&r.response_headers)));
    }
    let mut proxy = None;
    match &r.action {
        config::RouteAction::Proxy(p) => {
            let upstream = upstreams
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
            });
        }
        config::RouteAction::Respond { status, body, headers } => {
            request_filters.push(Arc::new(Respond::new(*status, body.clone(), headers.clone())));
        }
        config::RouteAction::Redirect { status, location } => {
            request_filters.push(Arc::new(Redirect::new(*status, location).map_err(|e| anyhow!(e))?));
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
    })
}
