//! Builds the security and traffic-policy parts of the engine from the configuration:
//! listener limits (connections, HTTP/2, request limits, real client addresses) and the
//! access checks and limits of sites and routes.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use sluice_config as config;
use sluice_core::cidr::CidrSet;
use sluice_core::conn_limit::ConnectionLimits;
use sluice_core::server::Http2Settings;
use sluice_filters::access::basic::BasicAuth;
use sluice_filters::access::forward::ForwardAuth;
use sluice_filters::access::ip::IpRules;
use sluice_filters::access::jwt::{self, JwtAuth, JwtSettings, KeySource, Token};
use sluice_filters::access::Access;
use sluice_filters::limits::InFlightLimit;
use sluice_filters::real_ip::{self, RealIp};
use sluice_upstream::Upstream;

/// A background task of a generation (a JWKS refresher).
pub struct Task(pub Pin<Box<dyn Future<Output = ()> + Send>>);

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Task")
    }
}

/// What the proxy applies per listener before routing.
#[derive(Debug)]
pub struct ListenerPolicy {
    /// Longest request target (414 beyond).
    pub max_uri_length: usize,
    /// Longest pause in a request body (408 beyond).
    pub body_read_timeout: std::time::Duration,
    /// The real client behind trusted proxies.
    pub real_ip: Option<RealIp>,
    /// What to do with escaped slashes and backslashes in paths.
    pub escaped_slashes: sluice_filters::normalize::EscapedSlashes,
    /// Route paths match without regard to ASCII case.
    pub case_insensitive_paths: bool,
}

impl Default for ListenerPolicy {
    fn default() -> Self {
        Self {
            max_uri_length: 8192,
            body_read_timeout: std::time::Duration::from_secs(60),
            real_ip: None,
            escaped_slashes: Default::default(),
            case_insensitive_paths: false,
        }
    }
}

/// The listener's connection limits and HTTP/2 settings.
pub fn listener_limits(l: &config::ListenerConfig) -> (ConnectionLimits, Http2Settings) {
    let c = &l.connections;
    let limits = ConnectionLimits {
        per_ip: c.per_ip,
        rate: c.rate.map(|r| ConnectionLimits::listener_rate(r.per_second, r.burst)),
        // Addresses remembered: as many as the listener may have connections, at least 10k.
        rate_per_ip: c
            .rate_per_ip
            .map(|r| ConnectionLimits::address_rate(r.per_second, r.burst, l.max_connections.max(10_000))),
    };
    let h = &l.http2;
    let http2 = Http2Settings {
        max_concurrent_streams: h.max_concurrent_streams,
        max_pending_accept_reset_streams: h.max_pending_resets,
        max_local_error_reset_streams: h.max_local_resets,
        max_client_resets: h.max_client_resets,
        ..Http2Settings::default()
    };
    (limits, http2)
}

/// What the proxy applies per request of a listener.
pub fn listener_policy(l: &config::ListenerConfig) -> ListenerPolicy {
    ListenerPolicy {
        max_uri_length: l.max_uri_length,
        body_read_timeout: l.body_read_timeout,
        escaped_slashes: match l.escaped_slashes {
            config::EscapedSlashes::Reject => sluice_filters::normalize::EscapedSlashes::Reject,
            config::EscapedSlashes::Decode => sluice_filters::normalize::EscapedSlashes::Decode,
            config::EscapedSlashes::Keep => sluice_filters::normalize::EscapedSlashes::Keep,
        },
        case_insensitive_paths: l.case_insensitive_paths,
        real_ip: l.real_ip.as_ref().map(|r| {
            let header = match &r.header {
                config::RealIpHeader::XForwardedFor => real_ip::Header::XForwardedFor,
                config::RealIpHeader::Forwarded => real_ip::Header::Forwarded,
                config::RealIpHeader::Other(h) => real_ip::Header::Single(h.clone()),
            };
            RealIp::new(r.trusted.iter().copied().collect::<CidrSet>(), header)
        }),
    }
}

/// The site-level pieces, shared by the site's routes that do not replace them.
#[derive(Default)]
pub struct SitePolicy {
    ip: Option<Arc<IpRules>>,
    basic: Option<Arc<BasicAuth>>,
    jwt: Option<Arc<JwtAuth>>,
    forward: Option<Arc<ForwardAuth>>,
    max_body_size: Option<u64>,
    in_flight: Option<Arc<InFlightLimit>>,
}

/// Builds a site's shared policy; JWKS refreshers go to `tasks`.
pub async fn site_policy(
    p: &config::PolicyConfig,
    upstreams: &HashMap<String, Arc<Upstream>>,
    tasks: &mut Vec<Task>,
) -> anyhow::Result<SitePolicy> {
    Ok(SitePolicy {
        ip: p.access.as_ref().map(|rules| ip_rules(rules)),
        basic: basic(p.basic_auth.as_ref())?,
        jwt: jwt_auth(p.jwt.as_ref(), tasks).await?,
        forward: forward(p.forward_auth.as_ref(), upstreams)?,
        max_body_size: p.max_body_size.flatten(),
        in_flight: p.max_in_flight.flatten().map(|n| Arc::new(InFlightLimit::new(n))),
    })
}

/// A route's checks and limits: its own where it has them, else its site's.
pub struct RoutePolicy {
    /// The checks (`None`: nothing to check).
    pub access: Option<Arc<Access>>,
    /// Largest request body.
    pub max_body_size: Option<u64>,
    /// Requests in flight.
    pub in_flight: Option<Arc<InFlightLimit>>,
}

/// Builds a route's policy on top of its site's.
pub async fn route_policy(
    site: &SitePolicy,
    p: &config::PolicyConfig,
    upstreams: &HashMap<String, Arc<Upstream>>,
    tasks: &mut Vec<Task>,
) -> anyhow::Result<RoutePolicy> {
    let access = Access {
        ip: match &p.access {
            Some(rules) => Some(ip_rules(rules)),
            None => site.ip.clone(),
        },
        basic: match &p.basic_auth {
            Some(b) => basic(Some(b))?,
            None => site.basic.clone(),
        },
        jwt: match &p.jwt {
            Some(j) => jwt_auth(Some(j), tasks).await?,
            None => site.jwt.clone(),
        },
        forward: match &p.forward_auth {
            Some(f) => forward(Some(f), upstreams)?,
            None => site.forward.clone(),
        },
    };
    Ok(RoutePolicy {
        access: (!access.is_empty()).then(|| Arc::new(access)),
        max_body_size: match p.max_body_size {
            Some(own) => own,
            None => site.max_body_size,
        },
        in_flight: match p.max_in_flight {
            Some(own) => own.map(|n| Arc::new(InFlightLimit::new(n))),
            None => site.in_flight.clone(),
        },
    })
}

fn ip_rules(rules: &[config::AccessRule]) -> Arc<IpRules> {
    let mut built = IpRules::new();
    for rule in rules {
        built.push(rule.allow, rule.blocks.iter().copied());
        if rule.all {
            built.push_all(rule.allow);
        }
    }
    Arc::new(built)
}

fn basic(b: Option<&config::BasicAuthConfig>) -> anyhow::Result<Option<Arc<BasicAuth>>> {
    match b {
        Some(b) if b.enabled => Ok(Some(Arc::new(BasicAuth::new(&b.file, &b.realm).map_err(|e| anyhow!("{e}"))?))),
        _ => Ok(None),
    }
}

async fn jwt_auth(j: Option<&config::JwtConfig>, tasks: &mut Vec<Task>) -> anyhow::Result<Option<Arc<JwtAuth>>> {
    let Some(j) = j.filter(|j| j.enabled) else { return Ok(None) };
    let keys = j
        .keys
        .iter()
        .map(|k| match k {
            config::JwtKey::JwksFile { path, refresh } => KeySource::JwksFile(path.clone(), *refresh),
            config::JwtKey::JwksUrl { url, refresh } => KeySource::JwksUrl(url.clone(), *refresh),
            config::JwtKey::Secret(s) => KeySource::Secret(s.clone()),
            config::JwtKey::PublicKey(p) => KeySource::PublicKey(p.clone()),
        })
        .collect();
    let settings = JwtSettings {
        keys,
        algorithms: j.algorithms.iter().filter_map(|a| jwt::algorithm(a)).collect(),
        issuer: j.issuer.clone(),
        audience: j.audience.clone(),
        leeway: j.leeway,
        token: match &j.token {
            config::TokenSource::Bearer(h) => Token::Bearer(h.clone()),
            config::TokenSource::Cookie(c) => Token::Cookie(c.clone()),
        },
        claim_headers: j.claim_headers.clone(),
    };
    let auth = Arc::new(JwtAuth::new(settings).await.context("loading JWT keys")?);
    tasks.push(Task(Box::pin(auth.clone().refresh())));
    Ok(Some(auth))
}

fn forward(
    f: Option<&config::ForwardAuthConfig>,
    upstreams: &HashMap<String, Arc<Upstream>>,
) -> anyhow::Result<Option<Arc<ForwardAuth>>> {
    let Some(f) = f.filter(|f| f.enabled) else { return Ok(None) };
    let upstream =
        upstreams.get(&f.upstream).ok_or_else(|| anyhow!("forward-auth names unknown upstream `{}`", f.upstream))?;
    Ok(Some(Arc::new(ForwardAuth {
        upstream: upstream.clone(),
        path: f.path.parse().context("forward-auth path")?,
        timeout: f.timeout,
        request_headers: f.request_headers.clone(),
        response_headers: f.response_headers.clone(),
    })))
}
