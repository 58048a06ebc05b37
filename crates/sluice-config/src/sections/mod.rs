//! The first layer: KDL nodes -> per-section values that still carry their source spans.
//!
//! Each top-level node kind has its own module. They check everything a single node can
//! check on its own; checks that need the whole file (names that must resolve, duplicates
//! across sections) run afterwards in [`crate::validate`] on the spans kept here.

mod cache;
mod compress;
mod hardening;
mod headers;
mod listener;
mod policy;
mod ratelimit;
mod route;
mod server;
mod site;
pub(crate) mod tls;
mod upstream;

use kdl::KdlDocument;
use miette::SourceSpan;

use crate::diagnostic::Diagnostics;
use crate::model::{
    CompressConfig, HeaderEdits, HostPattern, HttpsRedirect, ListenerConfig, RouteConfig, ServerSettings,
    UpstreamConfig,
};
use crate::reader::{name, unknown_node, Once};

/// Valid top-level nodes.
const TOP_LEVEL: &[&str] = &["server", "listener", "upstream", "site"];

/// Everything read from the file, before cross-references are checked.
#[derive(Debug, Default)]
pub(crate) struct RawConfig {
    /// `server { ... }` settings (defaults where absent or invalid).
    pub server: ServerSettings,
    /// Listeners whose name could be read.
    pub listeners: Vec<RawListener>,
    /// True when the file has at least one `listener` node, even an invalid one.
    pub any_listener_node: bool,
    /// Upstream groups whose name could be read.
    pub upstreams: Vec<RawUpstream>,
    /// Sites.
    pub sites: Vec<RawSite>,
}

/// A listener with the spans needed to report duplicates.
#[derive(Debug)]
pub(crate) struct RawListener {
    /// The validated listener, or `None` when its address was invalid.
    pub config: Option<ListenerConfig>,
    /// Name sites refer to it by.
    pub name: String,
    /// Where the name was written (the `name=` property, or the address argument).
    pub name_span: SourceSpan,
    /// The address exactly as written (the listener's second name).
    pub address_text: String,
    /// Where the address was written.
    pub address_span: SourceSpan,
    /// The `tls` block, if any.
    pub tls: Option<tls::RawListenerTls>,
}

/// An upstream group with the span of its name.
#[derive(Debug)]
pub(crate) struct RawUpstream {
    /// The group (servers may be empty if they were all invalid).
    pub config: UpstreamConfig,
    /// Where the name was written.
    pub name_span: SourceSpan,
    /// The `tls` block, if any.
    pub tls: Option<tls::RawUpstreamTls>,
}

/// A site with spans for host patterns, listener references and routes.
#[derive(Debug)]
pub(crate) struct RawSite {
    /// Valid host patterns with their spans.
    pub hosts: Vec<(HostPattern, SourceSpan)>,
    /// Listener references as written, with their spans.
    pub listen: Vec<(String, SourceSpan)>,
    /// Site-wide request header edits.
    pub request_headers: HeaderEdits,
    /// Site-wide response header edits.
    pub response_headers: HeaderEdits,
    /// Routes that could be read completely.
    pub routes: Vec<RawRoute>,
    /// The site's certificate.
    pub certificate: Option<tls::RawCertificate>,
    /// The site's client certificate policy.
    pub client_auth: Option<tls::RawClientAuth>,
    /// Redirect plain-text requests to HTTPS.
    pub https_redirect: Option<HttpsRedirect>,
    /// Response compression for the site's routes.
    pub compress: Option<CompressConfig>,
    /// HTTP caching rules for the site's routes.
    pub cache: Option<crate::model::CacheRuleConfig>,
    /// Rate limit for the site's routes.
    pub rate_limit: Option<crate::model::RateLimitConfig>,
    /// Access control and limits for the site's routes.
    pub policy: crate::model::PolicyConfig,
    /// Names its policy refers to (checked once the whole file is read).
    pub refs: Vec<Reference>,
    /// Where the site's name (`site`) was written.
    pub span: SourceSpan,
}

/// A route and the spans validation needs.
#[derive(Debug)]
pub(crate) struct RawRoute {
    /// The route.
    pub config: RouteConfig,
    /// Where the path was written.
    pub path_span: SourceSpan,
    /// Where the upstream name of a `proxy` action was written.
    pub upstream_span: Option<SourceSpan>,
    /// Names its policy refers to.
    pub refs: Vec<Reference>,
}

/// Something a site's or route's policy names, checked against the whole file.
#[derive(Debug, Clone)]
pub(crate) enum Reference {
    /// The upstream group of `forward-auth`.
    Upstream(String, SourceSpan),
    /// A rate limit with `store "redis"` needs `server { redis ... }`.
    Redis(SourceSpan),
}

/// Reads every top-level node.
pub(crate) fn read_document(d: &mut Diagnostics<'_>, doc: &KdlDocument) -> RawConfig {
    let mut raw = RawConfig::default();
    let mut once = Once::default();
    for node in doc.nodes() {
        match name(node) {
            "server" => {
                if once.first(d, node, "at the top level") {
                    server::read(d, node, &mut raw.server);
                }
            }
            "listener" => {
                raw.any_listener_node = true;
                raw.listeners.extend(listener::read(d, node));
            }
            "upstream" => raw.upstreams.extend(upstream::read(d, node)),
            "site" => raw.sites.push(site::read(d, node)),
            _ => unknown_node(d, node, None, TOP_LEVEL),
        }
    }
    raw
}
