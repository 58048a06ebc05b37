//! The second layer: checks that need the whole file, then assembles the [`Config`].
//!
//! Names must resolve (listeners, upstreams) and must not clash (listener names and
//! addresses, upstream names, host patterns per listener, routes per site). Things that
//! already failed in the first layer were left out of the raw config, so they cause no
//! follow-up errors here.

use std::collections::HashMap;
use std::net::SocketAddr;

use miette::SourceSpan;

use crate::diagnostic::Diagnostics;
use crate::model::{Config, HostPattern, PathMatch, RouteAction, SiteConfig};
use crate::reader::valid_list;
use crate::sections::{RawConfig, RawListener, RawRoute, RawSite, RawUpstream, Reference};

/// Runs the cross-reference checks and builds the config (meaningful only without errors).
pub(crate) fn validate(d: &mut Diagnostics<'_>, raw: RawConfig) -> Config {
    if !raw.any_listener_node {
        d.error_unlocated("no listener defined").help("add at least one, like: listener \"127.0.0.1:8080\"");
    }
    let refs = listener_refs(d, &raw.listeners);
    check_upstream_names(d, &raw.upstreams);
    let upstream_names: Vec<&str> = raw.upstreams.iter().map(|u| u.config.name.as_str()).collect();
    let with_retry: Vec<&str> =
        raw.upstreams.iter().filter(|u| u.config.retry.is_some()).map(|u| u.config.name.as_str()).collect();

    let mut claims: HashMap<(usize, &HostPattern), SourceSpan> = HashMap::new();
    let mut sites = Vec::with_capacity(raw.sites.len());
    let mut certificates_per_listener = vec![0usize; raw.listeners.len()];
    for site in &raw.sites {
        let listen = resolve_listen(d, site, &raw.listeners, &refs);
        let serving: Vec<usize> =
            if site.listen.is_empty() { (0..raw.listeners.len()).collect() } else { listen.clone() };
        check_hosts(d, site, &serving, &raw.listeners, &mut claims);
        crate::tls_files::check_site(d, site, &serving, &raw.listeners);
        if site.certificate.is_some() {
            for &l in &serving {
                certificates_per_listener[l] += 1;
            }
        }
        check_routes(d, &site.routes, &upstream_names, &with_retry);
        let mut listeners: Vec<String> = Vec::new();
        for index in listen {
            let name = &raw.listeners[index].name;
            if !listeners.contains(name) {
                listeners.push(name.clone());
            }
        }
        sites.push(SiteConfig {
            hosts: site.hosts.iter().map(|(pattern, _)| pattern.clone()).collect(),
            listeners,
            request_headers: site.request_headers.clone(),
            response_headers: site.response_headers.clone(),
            routes: site.routes.iter().map(|route| route.config.clone()).collect(),
            certificate: site.certificate.as_ref().map(|c| c.pair.clone()),
            client_auth: site.client_auth.as_ref().map(|c| c.config.clone()),
            https_redirect: site.https_redirect,
            compress: site.compress.clone(),
            cache: site.cache.clone(),
            rate_limit: site.rate_limit.clone(),
            policy: site.policy.clone(),
        });
        for reference in site.refs.iter().chain(site.routes.iter().flat_map(|r| &r.refs)) {
            check_reference(d, reference, &upstream_names, raw.server.redis.is_some());
        }
    }
    for (listener, count) in raw.listeners.iter().zip(certificates_per_listener) {
        crate::tls_files::check_listener(d, listener, count);
    }
    for upstream in &raw.upstreams {
        crate::tls_files::check_upstream(d, upstream);
    }

    Config {
        server: raw.server,
        listeners: raw.listeners.into_iter().filter_map(|l| l.config).collect(),
        upstreams: raw.upstreams.into_iter().map(|u| u.config).collect(),
        sites,
        warnings: Vec::new(),
    }
}

/// A name a policy refers to must exist.
fn check_reference(d: &mut Diagnostics<'_>, reference: &Reference, upstreams: &[&str], redis: bool) {
    match reference {
        Reference::Upstream(name, span) if !upstreams.contains(&name.as_str()) => {
            d.error(*span, format!("`forward-auth` names unknown upstream `{name}`"))
                .label("no such upstream")
                .help(if upstreams.is_empty() {
                    format!("define the authentication service as an upstream, like: upstream {name:?} {{ server \"127.0.0.1:9000\" }}")
                } else {
                    valid_list("defined upstreams", name, upstreams)
                });
        }
        Reference::Redis(span) if !redis => {
            d.error(*span, "`store \"redis\"` needs a Redis server")
                .label("no `server { redis ... }`")
                .help("add it to the server block, like: server { redis \"127.0.0.1:6379\" }");
        }
        _ => {}
    }
}

/// Maps every way of naming a listener (its name and its address as written) to its index,
/// reporting duplicate addresses and names that would be ambiguous.
fn listener_refs<'r>(d: &mut Diagnostics<'_>, listeners: &'r [RawListener]) -> HashMap<&'r str, usize> {
    let mut refs: HashMap<&str, usize> = HashMap::new();
    let mut addresses: Vec<(SocketAddr, usize)> = Vec::new();
    for (index, listener) in listeners.iter().enumerate() {
        if let Some(config) = &listener.config {
            // Port 0 asks the OS for a fresh port each time: never a duplicate (tests use it).
            let ephemeral = config.address.port() == 0;
            if let Some(&(_, first)) = addresses.iter().find(|(address, _)| !ephemeral && *address == config.address) {
                let line = d.line_of(listeners[first].address_span);
                d.error(listener.address_span, format!("duplicate listener address `{}`", listener.address_text))
                    .label("already used")
                    .also(listeners[first].address_span, "first used here")
                    .help(format!(
                        "each listener needs its own address; remove this one or the one at line {line}, or change the port"
                    ));
                continue;
            }
            addresses.push((config.address, index));
        }
        let mut keys = vec![(listener.name.as_str(), listener.name_span)];
        let ephemeral = listener.config.as_ref().is_some_and(|c| c.address.port() == 0);
        if listener.address_text != listener.name && !ephemeral {
            keys.push((listener.address_text.as_str(), listener.address_span));
        }
        for (key, span) in keys {
            match refs.get(key) {
                Some(&other) if other != index => {
                    let first_span = listeners[other].name_span;
                    let line = d.line_of(first_span);
                    d.error(span, format!("duplicate listener name `{key}`"))
                        .label("already names another listener")
                        .also(first_span, "first used here")
                        .help(format!(
                            "the listener at line {line} is already called `{key}` (a listener is named by both its name and its address); set a different name=\"...\""
                        ));
                }
                _ => {
                    refs.insert(key, index);
                }
            }
        }
    }
    refs
}

fn check_upstream_names(d: &mut Diagnostics<'_>, upstreams: &[RawUpstream]) {
    for (index, upstream) in upstreams.iter().enumerate() {
        let name = &upstream.config.name;
        if let Some(first) = upstreams[..index].iter().find(|u| &u.config.name == name) {
            let line = d.line_of(first.name_span);
            d.error(upstream.name_span, format!("duplicate upstream name `{name}`"))
                .label("already defined")
                .also(first.name_span, "first defined here")
                .help(format!(
                    "upstream names must be unique; rename this one or merge it with the one at line {line}"
                ));
        }
    }
}

/// Indexes of the listeners a site's `listen` nodes name (unknown names are reported).
fn resolve_listen(
    d: &mut Diagnostics<'_>,
    site: &RawSite,
    listeners: &[RawListener],
    refs: &HashMap<&str, usize>,
) -> Vec<usize> {
    let mut resolved = Vec::new();
    for (name, span) in &site.listen {
        let by_address = || {
            let address = name.parse::<SocketAddr>().ok()?;
            listeners.iter().position(|l| l.config.as_ref().is_some_and(|c| c.address == address))
        };
        match refs.get(name.as_str()).copied().or_else(by_address) {
            Some(index) => resolved.push(index),
            None => {
                let known: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
                let help = if known.is_empty() {
                    "no listener is defined; add one like: listener \"127.0.0.1:8080\" name=\"public\"".to_owned()
                } else {
                    valid_list("defined listeners", name, &known)
                };
                d.error(*span, format!("unknown listener `{name}`"))
                    .label("no listener with this name or address")
                    .help(help);
            }
        }
    }
    resolved
}

/// Reports host patterns another site (or this one) already serves on the same listener.
fn check_hosts<'s>(
    d: &mut Diagnostics<'_>,
    site: &'s RawSite,
    serving: &[usize],
    listeners: &[RawListener],
    claims: &mut HashMap<(usize, &'s HostPattern), SourceSpan>,
) {
    for (pattern, span) in &site.hosts {
        for &listener in serving {
            if let Some(&first) = claims.get(&(listener, pattern)) {
                let listener_name = &listeners[listener].name;
                let message = match pattern {
                    HostPattern::Any => {
                        format!("duplicate default site (`*`) on listener `{listener_name}`")
                    }
                    HostPattern::Exact(host) => {
                        format!("host `{host}` is already served on listener `{listener_name}`")
                    }
                    HostPattern::Wildcard(suffix) => {
                        format!("host pattern `*{suffix}` is already served on listener `{listener_name}`")
                    }
                };
                let line = d.line_of(first);
                d.error(*span, message).label("claimed twice").also(first, "first claimed here").help(format!(
                    "a host pattern can belong to one site per listener; merge this site with the one at line {line} or give them different `listen` lists"
                ));
                break;
            }
            claims.insert((listener, pattern), *span);
        }
    }
}

/// Reports duplicate routes and `proxy` actions naming undefined upstreams.
/// Whether a route has access control of its own (allow/deny, Basic, JWT, forward-auth).
fn guarded(route: &RawRoute) -> bool {
    let p = &route.config.policy;
    p.access.is_some() || p.basic_auth.is_some() || p.jwt.is_some() || p.forward_auth.is_some()
}

/// Whether every path `inner` matches is also matched by `outer`.
fn covers(outer: &PathMatch, inner: &PathMatch) -> bool {
    let inner_path = match inner {
        PathMatch::Exact(p) | PathMatch::Prefix(p) => p,
    };
    match outer {
        PathMatch::Exact(p) => matches!(inner, PathMatch::Exact(i) if i == p),
        PathMatch::Prefix(p) => {
            inner_path.starts_with(p.as_str())
                && (inner_path.len() == p.len() || p.ends_with('/') || inner_path.as_bytes()[p.len()] == b'/')
        }
    }
}

/// Warns when a route with access control answers only some methods while a route without
/// it catches the others on the same paths: `DELETE /admin` would reach the origin
/// unchecked.
fn check_method_gaps(d: &mut Diagnostics<'_>, routes: &[RawRoute]) {
    for route in routes.iter().filter(|r| guarded(r) && !r.config.methods.is_empty()) {
        let fallback = routes.iter().find(|other| {
            !guarded(other)
                && covers(&other.config.path, &route.config.path)
                && (other.config.methods.is_empty()
                    || other.config.methods.iter().any(|m| !route.config.methods.contains(m)))
        });
        if let Some(other) = fallback {
            let methods: Vec<&str> = route.config.methods.iter().map(http::Method::as_str).collect();
            let line = d.line_of(other.path_span);
            d.warning(
                route.path_span,
                format!(
                    "this route's access control covers only {}; other methods fall through to the route at line {line}, which has none",
                    methods.join(", ")
                ),
            );
        }
    }
}

fn check_routes(d: &mut Diagnostics<'_>, routes: &[RawRoute], upstreams: &[&str], with_retry: &[&str]) {
    check_method_gaps(d, routes);
    for (index, route) in routes.iter().enumerate() {
        let clash = routes[..index].iter().find(|earlier| {
            earlier.config.path == route.config.path
                && (earlier.config.methods.is_empty()
                    || route.config.methods.is_empty()
                    || earlier.config.methods.iter().any(|m| route.config.methods.contains(m)))
        });
        if let Some(earlier) = clash {
            let (kind, path) = match &route.config.path {
                PathMatch::Exact(path) => ("exact", path),
                PathMatch::Prefix(path) => ("prefix", path),
            };
            let line = d.line_of(earlier.path_span);
            d.error(route.path_span, format!("duplicate route: `{path}` ({kind} match) is already routed in this site"))
                .label("same path and match kind")
                .also(earlier.path_span, "first route")
                .help(format!(
                    "the route at line {line} matches the same requests; remove one, or give them methods that do not overlap"
                ));
        }
        if let (RouteAction::Proxy(proxy), Some(span)) = (&route.config.action, route.upstream_span) {
            if proxy.retry_non_idempotent
                && with_retry.iter().all(|u| *u != proxy.upstream)
                && upstreams.contains(&proxy.upstream.as_str())
            {
                d.error(
                    span,
                    format!("`retry-non-idempotent` needs a `retry` policy on upstream `{}`", proxy.upstream),
                )
                .label("this upstream does not retry")
                .help("add `retry ...` to the upstream, or remove retry-non-idempotent");
            }
            if !upstreams.contains(&proxy.upstream.as_str()) {
                let help = if upstreams.is_empty() {
                    format!(
                        "no upstream is defined; add one like: upstream {:?} {{ server \"127.0.0.1:8081\" }}",
                        proxy.upstream
                    )
                } else {
                    valid_list("defined upstreams", &proxy.upstream, upstreams)
                };
                d.error(span, format!("unknown upstream `{}`", proxy.upstream)).label("not defined").help(help);
            }
        }
    }
}
