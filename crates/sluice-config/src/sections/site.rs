//! `site "host" ... { listen ...; request-headers ...; response-headers ...; route ... }`.

use std::net::Ipv6Addr;

use kdl::KdlNode;

use crate::diagnostic::Diagnostics;
use http::StatusCode;

use crate::model::{HeaderEdits, HostPattern, HttpsRedirect};
use crate::reader::{children, leaf, name, name_span, take_args, take_props, unknown_node, Arity, Once};
use crate::sections::headers::read_edits;
use crate::sections::tls::{read_certificate, read_client_auth};
use crate::sections::upstream::check_host_name;
use crate::sections::{policy, route, RawSite};
use crate::value::{integer, string};

const NODES: &[&str] = &[
    "listen",
    "request-headers",
    "response-headers",
    "route",
    "certificate",
    "client-auth",
    "https-redirect",
    "compress",
    "cache",
    "rate-limit",
];
const REDIRECT_USAGE: &str = "https-redirect status=308 port=8443";
const USAGE: &str = "site \"example.com\" \"*.example.com\" { route \"/\" { proxy \"origins\" } }";
const LISTEN_USAGE: &str = "listen \"public\"";

/// Reads a `site` node. Invalid host patterns and routes are left out (and reported).
pub(super) fn read(d: &mut Diagnostics<'_>, node: &KdlNode) -> RawSite {
    let args = take_args(d, node, Arity::AtLeast(1), USAGE);
    take_props(d, node, &[], USAGE);
    let mut site = RawSite {
        hosts: Vec::new(),
        listen: Vec::new(),
        request_headers: HeaderEdits::default(),
        response_headers: HeaderEdits::default(),
        routes: Vec::new(),
        certificate: None,
        client_auth: None,
        https_redirect: None,
        compress: None,
        cache: None,
        rate_limit: None,
        policy: Default::default(),
        refs: Vec::new(),
        span: name_span(node),
    };
    for entry in args {
        let Some(text) = string(d, entry, USAGE) else {
            continue;
        };
        match host_pattern(text) {
            Ok(pattern) => site.hosts.push((pattern, entry.span())),
            Err((message, help)) => {
                d.error(entry.span(), message).label("not a host pattern").help(help);
            }
        }
    }

    let mut once = Once::default();
    for child in children(node) {
        match name(child) {
            "listen" => {
                let (args, _) = leaf(d, child, Arity::AtLeast(1), &[], LISTEN_USAGE);
                for entry in args {
                    if let Some(listener) = string(d, entry, LISTEN_USAGE) {
                        site.listen.push((listener.to_owned(), entry.span()));
                    }
                }
            }
            "request-headers" => {
                if once.first(d, child, "in `site`") {
                    site.request_headers = read_edits(d, child);
                }
            }
            "response-headers" => {
                if once.first(d, child, "in `site`") {
                    site.response_headers = read_edits(d, child);
                }
            }
            "route" => site.routes.extend(route::read(d, child)),
            "certificate" => {
                if once.first(d, child, "in `site`") {
                    site.certificate = read_certificate(d, child);
                }
            }
            "client-auth" => {
                if once.first(d, child, "in `site`") {
                    site.client_auth = read_client_auth(d, child);
                }
            }
            "https-redirect" => {
                if once.first(d, child, "in `site`") {
                    site.https_redirect = read_https_redirect(d, child);
                }
            }
            "compress" => {
                if once.first(d, child, "in `site`") {
                    site.compress = crate::sections::compress::read(d, child);
                }
            }
            "cache" => {
                if once.first(d, child, "in `site`") {
                    site.cache = crate::sections::cache::read_rule(d, child);
                }
            }
            "rate-limit" => {
                if once.first(d, child, "in `site`") {
                    site.rate_limit = crate::sections::ratelimit::read(d, child);
                    if site.rate_limit.as_ref().is_some_and(|l| l.store == crate::model::RateLimitStore::Redis) {
                        site.refs.push(crate::sections::Reference::Redis(name_span(child)));
                    }
                }
            }
            other if policy::NODES.contains(&other) => {
                policy::read(d, child, &mut site.policy, &mut site.refs, &mut once, "site")
            }
            _ => {
                let all: Vec<&str> = NODES.iter().chain(policy::NODES).copied().collect();
                unknown_node(d, child, Some("site"), &all);
            }
        }
    }
    site
}

/// Reads `https-redirect [status=301|302|307|308] [port=N]`.
fn read_https_redirect(d: &mut Diagnostics<'_>, node: &KdlNode) -> Option<HttpsRedirect> {
    let (_, props) = leaf(d, node, Arity::Exactly(0), &["status", "port"], REDIRECT_USAGE);
    let mut redirect = HttpsRedirect { status: StatusCode::PERMANENT_REDIRECT, port: None };
    if let Some(e) = props.get("status") {
        let code = integer(d, e, 300, 399)?;
        match code {
            301 | 302 | 307 | 308 => redirect.status = StatusCode::from_u16(u16::try_from(code).ok()?).ok()?,
            _ => {
                d.error(e.span(), format!("`https-redirect` status must be 301, 302, 307 or 308, found {code}"))
                    .label("not a redirect status")
                    .help("308 (the default) and 307 keep the method and body; 301 and 302 may turn a POST into a GET");
                return None;
            }
        }
    }
    if let Some(e) = props.get("port") {
        redirect.port = Some(u16::try_from(integer(d, e, 1, 65_535)?).ok()?);
    }
    Some(redirect)
}

/// Parses `*`, `*.example.com`, `example.com` (any case) or `[::1]`.
fn host_pattern(text: &str) -> Result<HostPattern, (String, String)> {
    let usage = "host patterns look like \"example.com\", \"*.example.com\" or \"*\" (the default site)";
    let invalid = |why: String| Err((format!("invalid host pattern `{text}`: {why}"), usage.to_owned()));
    if text == "*" {
        return Ok(HostPattern::Any);
    }
    if let Some(inner) = text.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
        return match inner.parse::<Ipv6Addr>() {
            Ok(_) => Ok(HostPattern::Exact(text.to_ascii_lowercase())),
            Err(_) => invalid(format!("`{inner}` is not an IPv6 address")),
        };
    }
    if text.chars().any(char::is_whitespace) {
        return invalid("it contains whitespace".to_owned());
    }
    let (wildcard, name) = match text.strip_prefix("*.") {
        Some(suffix) => (true, suffix),
        None => (false, text),
    };
    if name.contains('*') {
        return invalid("`*` is only allowed alone or as a leading `*.`".to_owned());
    }
    if let Some((host, _port)) = name.rsplit_once(':') {
        let star = if wildcard { "*." } else { "" };
        return Err((
            format!("invalid host pattern `{text}`: host patterns do not include a port"),
            format!("write \"{star}{host}\"; which listeners (ports) serve the site is chosen with `listen`"),
        ));
    }
    if let Err(why) = check_host_name(name) {
        return invalid(why);
    }
    let name = name.to_ascii_lowercase();
    Ok(if wildcard { HostPattern::Wildcard(format!(".{name}")) } else { HostPattern::Exact(name) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        assert_eq!(host_pattern("*"), Ok(HostPattern::Any));
        assert_eq!(host_pattern("Example.COM"), Ok(HostPattern::Exact("example.com".into())));
        assert_eq!(host_pattern("*.example.com"), Ok(HostPattern::Wildcard(".example.com".into())));
        assert_eq!(host_pattern("[::1]"), Ok(HostPattern::Exact("[::1]".into())));
        assert_eq!(host_pattern("10.0.0.1"), Ok(HostPattern::Exact("10.0.0.1".into())));
        for bad in ["example.com:8080", "exa mple.com", "a.*.com", "*example.com", "ex@mple.com", "", "[zz]", "a..b"] {
            assert!(host_pattern(bad).is_err(), "{bad}");
        }
    }
}
