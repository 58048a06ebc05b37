//! The listener's protection settings: request limits, timeouts against slow clients,
//! connection limits, HTTP/2 limits, the PROXY protocol and real client addresses.

use std::time::Duration;

use kdl::{KdlEntry, KdlNode};

use crate::diagnostic::Diagnostics;
use crate::model::{
    EscapedSlashes, Http2Limits, ListenerConfig, ProxyProtocolConfig, Rate, RealIpConfig, RealIpHeader,
};
use crate::reader::{children, leaf, name, name_span, single, take_args, take_props, unknown_node, Arity, Once};
use crate::value::{boolean, cidr, cidr_file, duration, integer, non_empty_string, rate, size};

/// The listener nodes this module reads.
pub(super) const NODES: &[&str] = &[
    "max-headers",
    "underscores-in-headers",
    "escaped-slashes",
    "case-insensitive-paths",
    "max-uri-length",
    "send-timeout",
    "body-read-timeout",
    "max-connections-per-ip",
    "connection-rate",
    "connection-rate-per-ip",
    "http2",
    "proxy-protocol",
    "real-ip",
];
const HTTP2_NODES: &[&str] = &["max-concurrent-streams", "max-pending-resets", "max-local-resets", "max-client-resets"];
const HTTP2_USAGE: &str = "http2 { max-concurrent-streams 128; max-pending-resets 20 }";
const PROXY_USAGE: &str = "proxy-protocol { trusted \"10.0.0.0/8\"; timeout \"5s\" }";
const REAL_IP_USAGE: &str = "real-ip { trusted \"10.0.0.0/8\"; header \"x-forwarded-for\" }";

/// Reads one of [`NODES`] into `config`.
pub(super) fn read(d: &mut Diagnostics<'_>, node: &KdlNode, config: &mut ListenerConfig) {
    match name(node) {
        "max-headers" => {
            if let Some(n) = single(d, node, "max-headers 100").and_then(|e| integer(d, e, 1, 10_000)) {
                config.max_headers = usize::try_from(n).unwrap_or(100);
            }
        }
        "underscores-in-headers" => {
            if let Some(allow) = single(d, node, "underscores-in-headers #true").and_then(|e| boolean(d, e)) {
                config.underscores_in_headers = allow;
            }
        }
        "escaped-slashes" => {
            let usage = "escaped-slashes \"reject\"";
            if let Some(entry) = single(d, node, usage) {
                match entry.value().as_string() {
                    Some("reject") => config.escaped_slashes = EscapedSlashes::Reject,
                    Some("decode") => config.escaped_slashes = EscapedSlashes::Decode,
                    Some("keep") => config.escaped_slashes = EscapedSlashes::Keep,
                    _ => {
                        d.error(entry.span(), "`escaped-slashes` is \"reject\", \"decode\" or \"keep\"")
                            .label("unknown policy")
                            .help("reject (the default) answers 400; decode routes %2F, %5C and \\ as /; keep forwards them as sent");
                    }
                }
            }
        }
        "case-insensitive-paths" => {
            if let Some(on) = single(d, node, "case-insensitive-paths #true").and_then(|e| boolean(d, e)) {
                config.case_insensitive_paths = on;
            }
        }
        "max-uri-length" => {
            if let Some(entry) = single(d, node, "max-uri-length \"8KiB\"") {
                if let Some(bytes) = size(d, entry) {
                    if !(256..=1 << 20).contains(&bytes) {
                        d.error(entry.span(), format!("`max-uri-length` must be between 256 bytes and 1 MiB, found {bytes}"))
                            .label("out of range")
                            .help("the default is \"8KiB\"; request targets longer than the header limit cannot arrive anyway");
                    } else {
                        config.max_uri_length = usize::try_from(bytes).unwrap_or(8192);
                    }
                }
            }
        }
        "send-timeout" => {
            if let Some(t) = single(d, node, "send-timeout \"60s\"").and_then(|e| duration(d, e, false)) {
                config.send_timeout = t;
            }
        }
        "body-read-timeout" => {
            if let Some(t) = single(d, node, "body-read-timeout \"60s\"").and_then(|e| duration(d, e, false)) {
                config.body_read_timeout = t;
            }
        }
        "max-connections-per-ip" => {
            let usage = "max-connections-per-ip 64";
            if let Some(n) = single(d, node, usage).and_then(|e| integer(d, e, 1, i128::from(u32::MAX))) {
                config.connections.per_ip = u32::try_from(n).ok();
            }
        }
        "connection-rate" => config.connections.rate = read_rate(d, node, "connection-rate \"500/s\" burst=1000"),
        "connection-rate-per-ip" => {
            config.connections.rate_per_ip = read_rate(d, node, "connection-rate-per-ip \"10/s\" burst=20");
        }
        "http2" => config.http2 = read_http2(d, node),
        "proxy-protocol" => config.proxy_protocol = read_proxy_protocol(d, node),
        "real-ip" => config.real_ip = read_real_ip(d, node),
        _ => unknown_node(d, node, Some("listener"), NODES),
    }
}

/// `NAME "10/s" burst=N` (burst defaults to the per-second count).
fn read_rate(d: &mut Diagnostics<'_>, node: &KdlNode, usage: &str) -> Option<Rate> {
    let (args, props) = leaf(d, node, Arity::Exactly(1), &["burst"], usage);
    let per_second = rate(d, args.first()?, usage)?;
    let burst = match props.get("burst") {
        Some(e) => u32::try_from(integer(d, e, 0, 1_000_000)?).ok()?,
        None => per_second.ceil().min(1_000_000.0) as u32,
    };
    Some(Rate { per_second, burst })
}

fn read_http2(d: &mut Diagnostics<'_>, node: &KdlNode) -> Http2Limits {
    take_args(d, node, Arity::Exactly(0), HTTP2_USAGE);
    take_props(d, node, &[], HTTP2_USAGE);
    let mut limits = Http2Limits::default();
    let mut once = Once::default();
    for child in children(node) {
        if HTTP2_NODES.contains(&name(child)) && !once.first(d, child, "in `http2`") {
            continue;
        }
        let number = |d: &mut Diagnostics<'_>, usage: &str, min: i128, max: i128| {
            single(d, child, usage).and_then(|e| integer(d, e, min, max))
        };
        match name(child) {
            "max-concurrent-streams" => {
                if let Some(n) = number(d, "max-concurrent-streams 128", 1, 10_000) {
                    limits.max_concurrent_streams = u32::try_from(n).unwrap_or(128);
                }
            }
            "max-pending-resets" => {
                if let Some(n) = number(d, "max-pending-resets 20", 1, 100_000) {
                    limits.max_pending_resets = usize::try_from(n).unwrap_or(20);
                }
            }
            "max-local-resets" => {
                if let Some(n) = number(d, "max-local-resets 200", 1, 1_000_000) {
                    limits.max_local_resets = usize::try_from(n).unwrap_or(200);
                }
            }
            "max-client-resets" => {
                if let Some(n) = number(d, "max-client-resets 1000", 0, 1_000_000) {
                    limits.max_client_resets = u32::try_from(n).unwrap_or(1000);
                }
            }
            _ => unknown_node(d, child, Some("http2"), HTTP2_NODES),
        }
    }
    limits
}

/// `trusted "a" "b"` and `trusted file="..."` nodes, gathered.
fn trusted(d: &mut Diagnostics<'_>, node: &KdlNode, usage: &str, into: &mut Vec<sluice_core::cidr::Cidr>) -> bool {
    let (args, props) = leaf(d, node, Arity::AtLeast(0), &["file"], usage);
    let mut ok = true;
    for entry in args {
        match cidr(d, entry, usage) {
            Some(block) => into.push(block),
            None => ok = false,
        }
    }
    if let Some(file) = props.get("file") {
        match cidr_file(d, file, usage) {
            Some(blocks) => into.extend(blocks),
            None => ok = false,
        }
    }
    ok
}

fn read_proxy_protocol(d: &mut Diagnostics<'_>, node: &KdlNode) -> Option<ProxyProtocolConfig> {
    take_args(d, node, Arity::Exactly(0), PROXY_USAGE);
    take_props(d, node, &[], PROXY_USAGE);
    let mut config = ProxyProtocolConfig { trusted: Vec::new(), timeout: Duration::from_secs(5) };
    let mut ok = true;
    let mut trusted_given = false;
    for child in children(node) {
        match name(child) {
            "trusted" => {
                trusted_given = true;
                ok &= trusted(d, child, "trusted \"10.0.0.0/8\" \"192.168.0.0/16\"", &mut config.trusted);
            }
            "timeout" => match single(d, child, "timeout \"5s\"").and_then(|e| duration(d, e, false)) {
                Some(t) => config.timeout = t,
                None => ok = false,
            },
            _ => {
                unknown_node(d, child, Some("proxy-protocol"), &["trusted", "timeout"]);
                ok = false;
            }
        }
    }
    if !trusted_given {
        d.error(name_span(node), "`proxy-protocol` needs the addresses of the load balancers that send it")
            .label("no `trusted` list")
            .help(format!(
                "write who may send PROXY headers, like: {PROXY_USAGE}; use \"0.0.0.0/0\" \"::/0\" only if no client can reach the port directly"
            ));
        ok = false;
    }
    ok.then_some(config)
}

fn read_real_ip(d: &mut Diagnostics<'_>, node: &KdlNode) -> Option<RealIpConfig> {
    take_args(d, node, Arity::Exactly(0), REAL_IP_USAGE);
    take_props(d, node, &[], REAL_IP_USAGE);
    let mut config = RealIpConfig { trusted: Vec::new(), header: RealIpHeader::XForwardedFor };
    let mut ok = true;
    let mut trusted_given = false;
    for child in children(node) {
        match name(child) {
            "trusted" => {
                trusted_given = true;
                ok &= trusted(d, child, "trusted \"10.0.0.0/8\"", &mut config.trusted);
            }
            "header" => match single(d, child, "header \"x-forwarded-for\"").and_then(|e| real_ip_header(d, e)) {
                Some(h) => config.header = h,
                None => ok = false,
            },
            _ => {
                unknown_node(d, child, Some("real-ip"), &["trusted", "header"]);
                ok = false;
            }
        }
    }
    if !trusted_given || (config.trusted.is_empty() && ok) {
        d.error(name_span(node), "`real-ip` needs the addresses of the proxies whose header is believed")
            .label("no `trusted` list")
            .help(format!("write it like: {REAL_IP_USAGE}"));
        ok = false;
    }
    ok.then_some(config)
}

fn real_ip_header(d: &mut Diagnostics<'_>, entry: &KdlEntry) -> Option<RealIpHeader> {
    let text = non_empty_string(d, entry, "header \"x-forwarded-for\"")?;
    match text.to_ascii_lowercase().as_str() {
        "x-forwarded-for" => Some(RealIpHeader::XForwardedFor),
        "forwarded" => Some(RealIpHeader::Forwarded),
        other => match http::HeaderName::from_bytes(other.as_bytes()) {
            Ok(h) => Some(RealIpHeader::Other(h)),
            Err(_) => {
                d.error(entry.span(), format!("invalid header name `{text}`"))
                    .label("not a header name")
                    .help("use \"x-forwarded-for\", \"forwarded\" or a header holding one address, like \"x-real-ip\"");
                None
            }
        },
    }
}
