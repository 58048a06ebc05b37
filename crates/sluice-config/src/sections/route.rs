//! `route "/path" exact=#true { methods ...; proxy|respond|redirect ...; header edits }`.

use bytes::Bytes;
use http::{Method, StatusCode};
use kdl::{KdlEntry, KdlNode};
use miette::SourceSpan;

use crate::diagnostic::Diagnostics;
use crate::model::{FilesAction, HeaderEdits, PathMatch, ProxyAction, RouteAction, RouteConfig};
use crate::reader::{children, leaf, name, name_span, single, take_args, take_props, unknown_node, Arity, Once};
use crate::sections::headers::{header_name, header_value, read_edits};
use crate::sections::RawRoute;
use crate::value::{boolean, integer, non_empty_string, string};

const NODES: &[&str] = &[
    "methods",
    "proxy",
    "respond",
    "redirect",
    "files",
    "request-headers",
    "response-headers",
    "compress",
    "cache",
    "rate-limit",
];
const ACTIONS: &[&str] = &["proxy", "respond", "redirect", "files"];
const USAGE: &str = "route \"/api\" { proxy \"origins\" }";
const PROXY_USAGE: &str = "proxy \"origins\" strip-prefix=#true host=\"api.internal\"";
const RESPOND_USAGE: &str = "respond 200 \"ok\\n\" { header \"content-type\" \"text/plain\" }";
const REDIRECT_USAGE: &str = "redirect 301 \"https://{host}{uri}\"";
const REDIRECT_STATUSES: &[u16] = &[301, 302, 303, 307, 308];
const FILES_USAGE: &str = "files \"/var/www/site\" { index \"index.html\"; try-files \"$uri\" \"/index.html\" }";
const FILES_NODES: &[&str] = &["index", "try-files", "listing", "precompressed", "follow-symlinks"];
const PLACEHOLDERS: &[&str] = &["scheme", "host", "path", "query", "uri"];

/// Reads a `route` node; `None` when its path or action is missing or invalid (reported).
pub(super) fn read(d: &mut Diagnostics<'_>, node: &KdlNode) -> Option<RawRoute> {
    let args = take_args(d, node, Arity::Exactly(1), USAGE);
    let props = take_props(d, node, &["exact"], USAGE);
    let exact = props.get("exact").map_or(Some(false), |entry| boolean(d, entry));
    let path = args.first().and_then(|entry| Some((path(d, entry, "route path")?, entry.span())));

    let mut methods = Vec::new();
    let mut action: Option<(RouteAction, Option<SourceSpan>)> = None;
    let mut action_node: Option<(&str, SourceSpan)> = None;
    let mut request_headers = HeaderEdits::default();
    let mut response_headers = HeaderEdits::default();
    let mut compress = None;
    let mut cache = None;
    let mut rate_limit = None;
    let mut policy = crate::model::PolicyConfig::default();
    let mut refs = Vec::new();
    let mut once = Once::default();
    for child in children(node) {
        let child_name = name(child);
        if ACTIONS.contains(&child_name) {
            if let Some((first, first_span)) = action_node {
                let line = d.line_of(first_span);
                d.error(name_span(child), format!("route has a second action `{child_name}`"))
                    .label("second action")
                    .also(first_span, "first action")
                    .help(format!(
                        "a route has exactly one action (proxy, respond, redirect or files); it already has `{first}` at line {line}"
                    ));
                continue;
            }
            action_node = Some((child_name, name_span(child)));
        } else if NODES.contains(&child_name) && !once.first(d, child, "in `route`") {
            continue;
        }
        match child_name {
            "methods" => methods = read_methods(d, child),
            "proxy" => action = read_proxy(d, child).map(|(a, span)| (RouteAction::Proxy(a), Some(span))),
            "respond" => action = read_respond(d, child).map(|a| (a, None)),
            "redirect" => action = read_redirect(d, child).map(|a| (a, None)),
            "files" => action = read_files(d, child).map(|a| (RouteAction::Files(a), None)),
            "request-headers" => request_headers = read_edits(d, child),
            "response-headers" => response_headers = read_edits(d, child),
            "compress" => compress = crate::sections::compress::read(d, child),
            "cache" => cache = crate::sections::cache::read_rule(d, child),
            "rate-limit" => {
                rate_limit = crate::sections::ratelimit::read(d, child);
                if rate_limit
                    .as_ref()
                    .is_some_and(|l: &crate::model::RateLimitConfig| l.store == crate::model::RateLimitStore::Redis)
                {
                    refs.push(crate::sections::Reference::Redis(name_span(child)));
                }
            }
            other if crate::sections::policy::NODES.contains(&other) => {
                crate::sections::policy::read(d, child, &mut policy, &mut refs, &mut once, "route");
            }
            _ => {
                let all: Vec<&str> = NODES.iter().chain(crate::sections::policy::NODES).copied().collect();
                unknown_node(d, child, Some("route"), &all);
            }
        }
    }

    if action_node.is_none() {
        d.error(name_span(node), "route has no action").label("no proxy, respond, redirect or files inside").help(
            "add one of: `proxy \"upstream-name\"`, `respond 200 \"body\"`, `redirect 301 \"https://{host}{uri}\"`, `files \"/var/www\"`",
        );
    }
    // A failed action was reported where it failed; the route is just left out.
    let ((path, path_span), exact, (action, upstream_span)) = (path?, exact?, action?);
    let path = if exact { PathMatch::Exact(path) } else { PathMatch::Prefix(path) };
    let config =
        RouteConfig { path, methods, action, request_headers, response_headers, compress, cache, rate_limit, policy };
    Some(RawRoute { config, path_span, upstream_span, refs })
}

/// A request path: starts with `/`, no whitespace, query or fragment.
fn path(d: &mut Diagnostics<'_>, entry: &KdlEntry, what: &str) -> Option<String> {
    let text = string(d, entry, "\"/api\"")?;
    let problem = if !text.starts_with('/') {
        Some(format!("{what} must start with `/`"))
    } else if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some(format!("{what} must not contain whitespace"))
    } else if text.contains(['?', '#']) {
        Some(format!("{what} must not contain a query (`?`) or fragment (`#`)"))
    } else {
        None
    };
    if let Some(message) = problem {
        d.error(entry.span(), format!("invalid {what} `{text}`: {message}"))
            .label("invalid path")
            .help(format!("write an absolute path like \"/\" or \"/api\" (found {text:?})"));
        return None;
    }
    Some(text.to_owned())
}

fn read_methods(d: &mut Diagnostics<'_>, node: &KdlNode) -> Vec<Method> {
    let usage = "methods \"GET\" \"POST\"";
    let (args, _) = leaf(d, node, Arity::AtLeast(1), &[], usage);
    let mut methods = Vec::new();
    for entry in args {
        let Some(text) = string(d, entry, usage) else {
            continue;
        };
        match Method::from_bytes(text.to_ascii_uppercase().as_bytes()) {
            Ok(method) if !methods.contains(&method) => methods.push(method),
            Ok(_) => {}
            Err(_) => {
                d.error(entry.span(), format!("invalid HTTP method `{text}`"))
                    .label("not a method")
                    .help("methods are tokens like GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS");
            }
        }
    }
    methods
}

/// Reads `proxy`; returns the action and the span of the upstream name.
fn read_proxy(d: &mut Diagnostics<'_>, node: &KdlNode) -> Option<(ProxyAction, SourceSpan)> {
    let (args, props) = leaf(
        d,
        node,
        Arity::Exactly(1),
        &["strip-prefix", "rewrite-prefix", "host", "retry-non-idempotent", "streaming", "grpc-timeout-max"],
        PROXY_USAGE,
    );
    let upstream = args.first().and_then(|entry| Some((non_empty_string(d, entry, PROXY_USAGE)?, entry.span())));
    let mut ok = true;
    let strip_prefix = match props.get("strip-prefix") {
        Some(entry) => boolean(d, entry).unwrap_or_else(|| {
            ok = false;
            false
        }),
        None => false,
    };
    let rewrite_prefix = match props.get("rewrite-prefix") {
        Some(entry) => {
            let rewrite = path(d, entry, "rewrite-prefix");
            ok &= rewrite.is_some();
            rewrite
        }
        None => None,
    };
    if let (Some(strip), Some(rewrite)) = (props.get("strip-prefix"), props.get("rewrite-prefix")) {
        d.error(rewrite.span(), "`strip-prefix` and `rewrite-prefix` cannot be used together")
            .label("conflicts with strip-prefix")
            .also(strip.span(), "strip-prefix given here")
            .help("strip-prefix removes the matched prefix, rewrite-prefix replaces it; keep only one of them");
        ok = false;
    }
    let host = match props.get("host") {
        Some(entry) => {
            let host = host_override(d, entry);
            ok &= host.is_some();
            host
        }
        None => None,
    };
    let retry_non_idempotent = match props.get("retry-non-idempotent") {
        Some(entry) => boolean(d, entry).unwrap_or_else(|| {
            ok = false;
            false
        }),
        None => false,
    };
    let streaming = match props.get("streaming") {
        Some(entry) => boolean(d, entry).unwrap_or_else(|| {
            ok = false;
            false
        }),
        None => false,
    };
    let grpc_timeout_max = match props.get("grpc-timeout-max") {
        Some(entry) => crate::value::duration(d, entry, false).unwrap_or_else(|| {
            ok = false;
            ProxyAction::GRPC_TIMEOUT_MAX
        }),
        None => ProxyAction::GRPC_TIMEOUT_MAX,
    };
    let (upstream, span) = upstream?;
    ok.then(|| {
        let action = ProxyAction {
            upstream: upstream.to_owned(),
            strip_prefix,
            rewrite_prefix,
            host,
            retry_non_idempotent,
            streaming,
            grpc_timeout_max,
        };
        (action, span)
    })
}

/// The `host=` of `proxy`: an authority (`name` or `name:port`) sent as the Host header.
fn host_override(d: &mut Diagnostics<'_>, entry: &KdlEntry) -> Option<String> {
    let text = non_empty_string(d, entry, "host=\"api.internal\"")?;
    let valid = text.parse::<http::uri::Authority>().is_ok_and(|a| a.as_str() == text && !text.contains('@'));
    if !valid {
        d.error(entry.span(), format!("invalid host `{text}`"))
            .label("not a host name")
            .help("write a host name, optionally with a port, like \"api.internal\" or \"api.internal:8080\"");
        return None;
    }
    Some(text.to_owned())
}

fn read_respond(d: &mut Diagnostics<'_>, node: &KdlNode) -> Option<RouteAction> {
    let args = take_args(d, node, Arity::Between(1, 2), RESPOND_USAGE);
    take_props(d, node, &[], RESPOND_USAGE);
    let status = args.first().and_then(|entry| {
        let code = integer(d, entry, 0, i128::from(u16::MAX))?;
        if !(200..=599).contains(&code) {
            d.error(entry.span(), format!("invalid status code {code} for `respond`"))
                .label("not between 200 and 599")
                .help(
                    "`respond` answers with a status from 200 to 599; use `redirect` for 3xx redirects with a location",
                );
            return None;
        }
        StatusCode::from_u16(u16::try_from(code).ok()?).ok()
    });
    let body = match args.get(1) {
        Some(entry) => string(d, entry, RESPOND_USAGE).map(|s| Bytes::copy_from_slice(s.as_bytes())),
        None => Some(Bytes::new()),
    };
    let mut headers = Vec::new();
    let mut ok = true;
    for child in children(node) {
        if name(child) != "header" {
            unknown_node(d, child, Some("respond"), &["header"]);
            continue;
        }
        let usage = "header \"content-type\" \"text/plain\"";
        let (args, _) = leaf(d, child, Arity::Exactly(2), &[], usage);
        let [name_entry, value_entry] = args.as_slice() else {
            ok = false;
            continue;
        };
        match (header_name(d, name_entry, usage), header_value(d, value_entry, usage)) {
            (Some(header), Some(value)) => headers.push((header, value)),
            _ => ok = false,
        }
    }
    let (status, body) = (status?, body?);
    ok.then_some(RouteAction::Respond { status, body, headers })
}

fn read_redirect(d: &mut Diagnostics<'_>, node: &KdlNode) -> Option<RouteAction> {
    let (args, _) = leaf(d, node, Arity::Exactly(2), &[], REDIRECT_USAGE);
    let status = args.first().and_then(|entry| {
        let code = integer(d, entry, 0, i128::from(u16::MAX))?;
        let code = u16::try_from(code).ok()?;
        if !REDIRECT_STATUSES.contains(&code) {
            d.error(entry.span(), format!("{code} is not a redirect status"))
                .label("not 301, 302, 303, 307 or 308")
                .help("use 301 or 308 (permanent) or 302, 303 or 307 (temporary)");
            return None;
        }
        StatusCode::from_u16(code).ok()
    });
    let location = args.get(1).and_then(|entry| location(d, entry));
    Some(RouteAction::Redirect { status: status?, location: location? })
}

/// The redirect target: known `{placeholders}` only, and valid as a header value.
fn location(d: &mut Diagnostics<'_>, entry: &KdlEntry) -> Option<String> {
    let text = non_empty_string(d, entry, REDIRECT_USAGE)?;
    let placeholders_help = "placeholders are {scheme}, {host}, {path}, {query} and {uri}";
    let mut rest = text;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            d.error(entry.span(), format!("unmatched `}}` in redirect location {text:?}"))
                .label("invalid location")
                .help(placeholders_help);
            return None;
        }
        let Some(close) = rest[open..].find('}') else {
            d.error(entry.span(), format!("unclosed `{{` in redirect location {text:?}"))
                .label("invalid location")
                .help(placeholders_help);
            return None;
        };
        let placeholder = &rest[open + 1..open + close];
        if !PLACEHOLDERS.contains(&placeholder) {
            d.error(entry.span(), format!("unknown placeholder `{{{placeholder}}}` in redirect location"))
                .label("unknown placeholder")
                .help(placeholders_help);
            return None;
        }
        rest = &rest[open + close + 1..];
    }
    if !text.is_ascii() || http::HeaderValue::from_str(text).is_err() {
        d.error(entry.span(), format!("invalid redirect location {text:?}"))
            .label("not a valid Location header")
            .help("use visible ASCII only; percent-encode anything else");
        return None;
    }
    Some(text.to_owned())
}

/// Reads `files "DIR" strip-prefix=#false { index ...; try-files ...; listing; precompressed;
/// follow-symlinks }`; the directory must exist.
fn read_files(d: &mut Diagnostics<'_>, node: &KdlNode) -> Option<FilesAction> {
    let args = take_args(d, node, Arity::Exactly(1), FILES_USAGE);
    let props = take_props(d, node, &["strip-prefix"], FILES_USAGE);
    let mut ok = true;
    let strip_prefix = match props.get("strip-prefix") {
        Some(entry) => boolean(d, entry).unwrap_or_else(|| {
            ok = false;
            false
        }),
        None => false,
    };
    let root = args.first().and_then(|entry| {
        let written = non_empty_string(d, entry, FILES_USAGE)?;
        let root = d.path(written);
        match std::fs::metadata(&root) {
            Ok(m) if m.is_dir() => Some(root),
            Ok(_) => {
                d.error(entry.span(), format!("`{}` is not a directory", root.display()))
                    .label("not a directory")
                    .help("`files` serves a directory; give the directory that holds the file");
                None
            }
            Err(e) => {
                d.error(entry.span(), format!("cannot open the directory `{}`: {e}", root.display()))
                    .label("missing or unreadable")
                    .help("create it, or fix the path (a relative path starts from the config file's directory)");
                None
            }
        }
    });
    let mut action = FilesAction {
        root: std::path::PathBuf::new(),
        strip_prefix,
        index: vec!["index.html".to_owned()],
        try_files: Vec::new(),
        listing: false,
        precompressed: false,
        follow_symlinks: false,
    };
    let mut once = Once::default();
    for child in children(node) {
        if FILES_NODES.contains(&name(child)) && !once.first(d, child, "in `files`") {
            continue;
        }
        match name(child) {
            "index" => {
                let (args, _) = leaf(d, child, Arity::AtLeast(1), &[], "index \"index.html\" \"index.htm\"");
                let mut names = Vec::new();
                for entry in args {
                    let Some(text) = non_empty_string(d, entry, "index \"index.html\"") else {
                        ok = false;
                        continue;
                    };
                    if text.contains('/') || text == "." || text == ".." {
                        d.error(entry.span(), format!("invalid index file name `{text}`"))
                            .label("not a file name")
                            .help("index files are names in the directory, like \"index.html\"");
                        ok = false;
                        continue;
                    }
                    names.push(text.to_owned());
                }
                action.index = names;
            }
            "try-files" => {
                let usage = "try-files \"$uri\" \"$uri/\" \"/index.html\"";
                let (args, _) = leaf(d, child, Arity::AtLeast(2), &[], usage);
                let count = args.len();
                let mut entries = Vec::new();
                for (i, entry) in args.into_iter().enumerate() {
                    let Some(text) = non_empty_string(d, entry, usage) else {
                        ok = false;
                        continue;
                    };
                    let last = i + 1 == count;
                    let problem = if let Some(code) = text.strip_prefix('=') {
                        match code.parse::<u16>() {
                            _ if !last => Some("`=CODE` can only be the last entry"),
                            Ok(c) if (200..=599).contains(&c) => None,
                            _ => Some("`=CODE` needs a status from 200 to 599, like `=404`"),
                        }
                    } else if !(text.starts_with('/') || text.starts_with("$uri")) {
                        Some("an entry is a path starting with `/` or `$uri` (like \"$uri\", \"$uri/\", \"/index.html\")")
                    } else if text.split('/').any(|s| s == "..") {
                        Some("an entry must not contain `..`")
                    } else {
                        None
                    };
                    if let Some(help) = problem {
                        d.error(entry.span(), format!("invalid try-files entry `{text}`"))
                            .label("invalid entry")
                            .help(help);
                        ok = false;
                        continue;
                    }
                    entries.push(text.to_owned());
                }
                action.try_files = entries;
            }
            flag @ ("listing" | "precompressed" | "follow-symlinks") => {
                let usage = format!("{flag} #true");
                let Some(on) = single(d, child, &usage).and_then(|entry| boolean(d, entry)) else {
                    ok = false;
                    continue;
                };
                match flag {
                    "listing" => action.listing = on,
                    "precompressed" => action.precompressed = on,
                    _ => action.follow_symlinks = on,
                }
            }
            _ => unknown_node(d, child, Some("files"), FILES_NODES),
        }
    }
    action.root = root?;
    ok.then_some(action)
}
