//! Sites matched by host, routes matched by path and method.
//!
//! Each listener has its own host table: exact names (hash lookup), `*.suffix` wildcards
//! (longest suffix wins) and a default site (`*`). Within a site, an exact path match wins
//! over prefixes, and the longest matching prefix wins; prefixes are segment-aware
//! (`/api` matches `/api` and `/api/x`, not `/apix`). A route restricted to some methods is
//! skipped for other methods, so the next best route can answer.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;
use sluice_upstream::Upstream;

use crate::headers::HeaderRules;
use crate::{RequestFilter, ResponseFilter};

/// How a route matches the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// The whole path.
    Exact(String),
    /// A segment-aware prefix.
    Prefix(String),
}

impl PathMatch {
    fn matches(&self, path: &str, case_insensitive: bool) -> bool {
        let same = |a: &str, b: &str| if case_insensitive { a.eq_ignore_ascii_case(b) } else { a == b };
        match self {
            PathMatch::Exact(p) => same(p, path),
            PathMatch::Prefix(p) => {
                path.get(..p.len()).is_some_and(|start| same(start, p))
                    && (path.len() == p.len() || p.ends_with('/') || path.as_bytes()[p.len()] == b'/')
            }
        }
    }
}

/// The path without `;parameters` in its segments (`/admin;x/y` is `/admin/y`): servlet
/// containers and other frameworks strip them, so a route on `/admin` must match
/// `/admin;x` too or its rules could be walked around. Only routing uses it; the origin
/// gets the path as sent.
fn without_parameters(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.contains(';') {
        return path.into();
    }
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(segment.split(';').next().unwrap_or(""));
    }
    out.into()
}

/// Where a `proxy` route sends requests, and how it rewrites them.
#[derive(Debug, Clone)]
pub struct ProxyTarget {
    /// The upstream group.
    pub upstream: Arc<Upstream>,
    /// Remove the matched prefix from the path.
    pub strip_prefix: bool,
    /// Replace the matched prefix with this.
    pub rewrite_prefix: Option<String>,
    /// Host header to send instead of the client's.
    pub host: Option<http::HeaderValue>,
    /// The affinity key, when the group balances by consistent hashing.
    pub affinity: Option<crate::affinity::AffinityKey>,
    /// The group's retry policy; `None`: the engine's default.
    pub retry: Option<Arc<sluice_proxy::retry::RetryPolicy>>,
    /// Sticky sessions: the cookie that names the server, when enabled.
    pub sticky_cookie: Option<Arc<str>>,
    /// Long-lived streams: no first-byte or read-idle timeout.
    pub streaming: bool,
    /// A gRPC request's `grpc-timeout`, up to this, replaces those timeouts.
    pub grpc_timeout_max: std::time::Duration,
}

/// One route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Path match.
    pub path: PathMatch,
    /// Allowed methods (empty: any).
    pub methods: Vec<Method>,
    /// Request filters in order (header edits, then the respond/redirect action if any).
    pub request_filters: Vec<Arc<dyn RequestFilter>>,
    /// Response filters in order.
    pub response_filters: Vec<Arc<dyn ResponseFilter>>,
    /// The upstream of a `proxy` route.
    pub proxy: Option<ProxyTarget>,
    /// The directory of a `files` route.
    pub files: Option<Arc<crate::files::StaticFiles>>,
    /// Response compression (the route's, else its site's).
    pub compress: Option<Arc<crate::compress::CompressPolicy>>,
    /// HTTP caching (the route's rules, else its site's).
    pub cache: Option<Arc<crate::cache::CacheRule>>,
    /// Rate limit (the route's, else its site's).
    pub rate_limit: Option<Arc<crate::ratelimit::RateLimit>>,
    /// Access checks (the route's, else its site's, per kind of check).
    pub access: Option<Arc<crate::access::Access>>,
    /// Largest request body accepted (413 beyond).
    pub max_body_size: Option<u64>,
    /// Requests in flight at once (the route's, else one limit shared by its site).
    pub in_flight: Option<Arc<crate::limits::InFlightLimit>>,
}

impl Route {
    /// The path sent upstream after prefix stripping or rewriting.
    pub fn rewrite_path<'a>(&self, path_and_query: &'a str) -> std::borrow::Cow<'a, str> {
        let (Some(target), PathMatch::Prefix(prefix)) = (&self.proxy, &self.path) else {
            return path_and_query.into();
        };
        let replacement = match (&target.rewrite_prefix, target.strip_prefix) {
            (Some(r), _) => r.as_str(),
            (None, true) => "",
            (None, false) => return path_and_query.into(),
        };
        let Some(rest) = path_and_query.strip_prefix(prefix.trim_end_matches('/')) else {
            return path_and_query.into();
        };
        let mut out = String::with_capacity(replacement.len() + rest.len() + 1);
        out.push_str(replacement.trim_end_matches('/'));
        if !rest.starts_with('/') {
            out.push('/');
        }
        out.push_str(rest);
        if out.starts_with('?') || out.is_empty() {
            out.insert(0, '/');
        }
        out.into()
    }
}

/// A site: routes plus site-wide header edits.
#[derive(Debug, Clone, Default)]
pub struct Site {
    /// Site-wide request filters (HTTPS redirect, client certificate headers), run first.
    pub request_filters: Vec<Arc<dyn crate::RequestFilter>>,
    /// Site-wide request header edits (run before the route's filters).
    pub request_headers: HeaderRules,
    /// Site-wide response header edits (run after the route's filters).
    pub response_headers: HeaderRules,
    /// Routes.
    pub routes: Vec<Route>,
}

/// A host pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// Exact name (lower case).
    Exact(String),
    /// Suffix including the leading dot: `.example.com`.
    Wildcard(String),
    /// Default site.
    Any,
}

#[derive(Debug, Default, Clone)]
struct HostTable {
    exact: HashMap<String, usize>,
    wildcards: Vec<(String, usize)>,
    default: Option<usize>,
}

/// Sites per listener.
#[derive(Debug, Default)]
pub struct Router {
    tables: Vec<HostTable>,
    sites: Vec<Site>,
}

/// The outcome of routing: indices into the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matched {
    /// Site index.
    pub site: usize,
    /// Route index within the site.
    pub route: usize,
}

impl Router {
    /// An empty router for `listeners` listeners.
    pub fn new(listeners: usize) -> Self {
        Self { tables: vec![HostTable::default(); listeners], sites: Vec::new() }
    }

    /// Adds a site answering `hosts` on the given listeners. Later duplicates of a host
    /// on a listener are ignored (configuration validation rejects them first).
    pub fn add_site(&mut self, hosts: &[Host], listeners: &[usize], site: Site) -> usize {
        let id = self.sites.len();
        self.sites.push(site);
        for &l in listeners {
            let Some(table) = self.tables.get_mut(l) else {
                continue;
            };
            for host in hosts {
                match host {
                    Host::Exact(h) => {
                        table.exact.entry(h.to_ascii_lowercase()).or_insert(id);
                    }
                    Host::Wildcard(s) => table.wildcards.push((s.to_ascii_lowercase(), id)),
                    Host::Any => {
                        table.default.get_or_insert(id);
                    }
                }
            }
            table.wildcards.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        }
        id
    }

    /// Every site, in configuration order.
    pub fn sites(&self) -> &[Site] {
        &self.sites
    }

    /// A site by index.
    pub fn site(&self, id: usize) -> &Site {
        &self.sites[id]
    }

    /// The route of a match.
    pub fn route(&self, m: Matched) -> &Route {
        &self.sites[m.site].routes[m.route]
    }

    /// Finds the site for `host` on `listener`.
    pub fn find_site(&self, listener: usize, host: Option<&str>) -> Option<usize> {
        let table = self.tables.get(listener)?;
        if let Some(host) = host {
            let host = host.trim_end_matches('.');
            let lowered;
            let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                lowered = host.to_ascii_lowercase();
                lowered.as_str()
            } else {
                host
            };
            if let Some(&id) = table.exact.get(host) {
                return Some(id);
            }
            if let Some((_, id)) =
                table.wildcards.iter().find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            {
                return Some(*id);
            }
        }
        table.default
    }

    /// Routes a request.
    pub fn find(&self, listener: usize, host: Option<&str>, path: &str, method: &Method) -> Option<Matched> {
        self.find_with(listener, host, path, method, false)
    }

    /// Routes a request, matching paths without regard to ASCII case if asked to.
    pub fn find_with(
        &self,
        listener: usize,
        host: Option<&str>,
        path: &str,
        method: &Method,
        case_insensitive: bool,
    ) -> Option<Matched> {
        let site = self.find_site(listener, host)?;
        let routes = &self.sites[site].routes;
        let path = without_parameters(path);
        let method_ok = |r: &Route| r.methods.is_empty() || r.methods.contains(method);
        let mut best: Option<(usize, usize)> = None; // (score, index)
        for (i, r) in routes.iter().enumerate() {
            if !method_ok(r) || !r.path.matches(&path, case_insensitive) {
                continue;
            }
            let score = match &r.path {
                PathMatch::Exact(_) => usize::MAX,
                PathMatch::Prefix(p) => p.len(),
            };
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, i));
            }
        }
        best.map(|(_, route)| Matched { site, route })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: PathMatch, methods: Vec<Method>) -> Route {
        Route {
            path,
            methods,
            request_filters: vec![],
            response_filters: vec![],
            proxy: None,
            files: None,
            compress: None,
            cache: None,
            rate_limit: None,
            access: None,
            max_body_size: None,
            in_flight: None,
        }
    }

    fn router() -> Router {
        let mut r = Router::new(2);
        let site = Site {
            routes: vec![
                route(PathMatch::Prefix("/".into()), vec![]),
                route(PathMatch::Prefix("/api".into()), vec![]),
                route(PathMatch::Prefix("/api/v2".into()), vec![Method::POST]),
                route(PathMatch::Exact("/api/exact".into()), vec![]),
            ],
            ..Site::default()
        };
        r.add_site(&[Host::Exact("example.com".into()), Host::Wildcard(".example.com".into())], &[0], site);
        r.add_site(
            &[Host::Any],
            &[0, 1],
            Site { routes: vec![route(PathMatch::Prefix("/".into()), vec![])], ..Site::default() },
        );
        r
    }

    #[test]
    fn hosts_match_exact_wildcard_then_default() {
        let r = router();
        assert_eq!(r.find_site(0, Some("example.com")), Some(0));
        assert_eq!(r.find_site(0, Some("EXAMPLE.com.")), Some(0));
        assert_eq!(r.find_site(0, Some("a.b.example.com")), Some(0));
        assert_eq!(r.find_site(0, Some("badexample.com")), Some(1));
        assert_eq!(r.find_site(1, Some("example.com")), Some(1));
        assert_eq!(r.find_site(0, None), Some(1));
    }

    #[test]
    fn longest_segment_prefix_wins_and_exact_beats_prefix() {
        let r = router();
        let m = |p: &str, method: Method| r.find(0, Some("example.com"), p, &method).map(|m| m.route);
        assert_eq!(m("/api", Method::GET), Some(1));
        assert_eq!(m("/api/x", Method::GET), Some(1));
        assert_eq!(m("/apix", Method::GET), Some(0));
        assert_eq!(m("/api/v2/x", Method::POST), Some(2));
        assert_eq!(m("/api/v2/x", Method::GET), Some(1));
        assert_eq!(m("/api/exact", Method::GET), Some(3));
    }

    #[test]
    fn prefixes_are_stripped_or_rewritten() {
        let upstream = Arc::new(Upstream::new("u", vec![]));
        let target = |strip, rewrite: Option<&str>| ProxyTarget {
            upstream: upstream.clone(),
            strip_prefix: strip,
            rewrite_prefix: rewrite.map(String::from),
            host: None,
            affinity: None,
            retry: None,
            sticky_cookie: None,
            streaming: false,
            grpc_timeout_max: std::time::Duration::from_secs(300),
        };
        let mut r = route(PathMatch::Prefix("/api".into()), vec![]);
        r.proxy = Some(target(true, None));
        assert_eq!(r.rewrite_path("/api/users?x=1"), "/users?x=1");
        assert_eq!(r.rewrite_path("/api"), "/");
        assert_eq!(r.rewrite_path("/api?x"), "/?x");
        r.proxy = Some(target(false, Some("/v2")));
        assert_eq!(r.rewrite_path("/api/users"), "/v2/users");
        r.path = PathMatch::Prefix("/api/".into());
        r.proxy = Some(target(false, Some("/v2/")));
        assert_eq!(r.rewrite_path("/api/users"), "/v2/users");
    }
}
