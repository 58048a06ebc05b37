//! `listener "ip:port" name="..." { ... }`: one listening socket.

use std::net::SocketAddr;

use kdl::KdlNode;

use crate::diagnostic::Diagnostics;
use crate::model::ListenerConfig;
use crate::reader::{children, name, single, take_args, take_props, unknown_node, Arity, Once};
use crate::sections::tls::{read_listener_tls, RawListenerTls};
use crate::sections::{hardening, RawListener};
use crate::value::{boolean, duration, integer, non_empty_string, size, string};

const NODES: &[&str] =
    &["max-connections", "max-header-size", "header-read-timeout", "keepalive-timeout", "h2c", "tls"];
const USAGE: &str = "listener \"127.0.0.1:8080\" name=\"public\"";

/// hyper refuses a smaller read buffer, so smaller head limits cannot be honoured.
const MIN_HEADER_SIZE: u64 = 8192;
const MAX_HEADER_SIZE: u64 = 16 * 1024 * 1024;

/// Reads a `listener` node; `None` when not even its address argument is there.
pub(super) fn read(d: &mut Diagnostics<'_>, node: &KdlNode) -> Option<RawListener> {
    let args = take_args(d, node, Arity::Exactly(1), USAGE);
    let props = take_props(d, node, &["name"], USAGE);
    let explicit_name = props.get("name").and_then(|entry| Some((non_empty_string(d, entry, USAGE)?, entry.span())));

    let mut config = None;
    let mut address_text = None;
    if let Some(entry) = args.first() {
        if let Some(text) = string(d, entry, USAGE) {
            address_text = Some((text.to_owned(), entry.span()));
            match text.parse::<SocketAddr>() {
                Ok(address) => config = Some(ListenerConfig::new(address)),
                Err(_) => {
                    d.error(entry.span(), format!("invalid listener address `{text}`"))
                        .label("not an ip:port socket address")
                        .help(address_help(text));
                }
            }
        }
    }

    // Children are read even when the address is bad, to report their problems too.
    let mut scratch = ListenerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    let tls = read_children(d, node, config.as_mut().unwrap_or(&mut scratch));

    let (address_text, address_span) = address_text?;
    let (name, name_span) = match explicit_name {
        Some((name, span)) => (name.to_owned(), span),
        None => (address_text.clone(), address_span),
    };
    if let Some(config) = config.as_mut() {
        config.name.clone_from(&name);
        config.tls = tls.as_ref().map(|t| t.config.clone());
    }
    Some(RawListener { config, name, name_span, address_text, address_span, tls })
}

fn address_help(text: &str) -> String {
    if text.matches(':').count() > 1 && !text.starts_with('[') {
        return format!("write IPv6 addresses in brackets, like \"[::1]:8080\" (found `{text}`)");
    }
    if !text.contains(':') {
        return "the port is required: write an address like \"127.0.0.1:8080\" or \"0.0.0.0:80\"".to_owned();
    }
    "listeners bind an IP address and port like \"127.0.0.1:8080\" or \"[::1]:8080\"; host names are not allowed here"
        .to_owned()
}

fn read_children(d: &mut Diagnostics<'_>, node: &KdlNode, config: &mut ListenerConfig) -> Option<RawListenerTls> {
    let mut once = Once::default();
    let mut tls = None;
    let mut h2c_span = None;
    for child in children(node) {
        let known = NODES.contains(&name(child)) || hardening::NODES.contains(&name(child));
        if known && !once.first(d, child, "in `listener`") {
            continue;
        }
        match name(child) {
            "max-connections" => {
                if let Some(entry) = single(d, child, "max-connections 10000") {
                    if let Some(n) = integer(d, entry, 1, i128::from(u32::MAX)) {
                        config.max_connections = usize::try_from(n).unwrap_or(usize::MAX);
                    }
                }
            }
            "max-header-size" => {
                if let Some(entry) = single(d, child, "max-header-size \"64KiB\"") {
                    if let Some(bytes) = size(d, entry) {
                        if bytes < MIN_HEADER_SIZE {
                            d.error(
                                entry.span(),
                                format!("`max-header-size` must be at least 8192 bytes (8 KiB), found {bytes}"),
                            )
                            .label("too small")
                            .help("8 KiB is the smallest request head buffer hyper accepts; use \"8KiB\" or more");
                        } else if bytes > MAX_HEADER_SIZE {
                            d.error(
                                entry.span(),
                                format!("`max-header-size` must be at most 16 MiB, found {bytes} bytes"),
                            )
                            .label("too large")
                            .help("request heads larger than 16 MiB are not supported; the default is \"64KiB\"");
                        } else {
                            config.max_header_size = usize::try_from(bytes).unwrap_or(usize::MAX);
                        }
                    }
                }
            }
            "header-read-timeout" => {
                if let Some(entry) = single(d, child, "header-read-timeout \"30s\"") {
                    if let Some(timeout) = duration(d, entry, false) {
                        config.header_read_timeout = timeout;
                    }
                }
            }
            "keepalive-timeout" => {
                if let Some(entry) = single(d, child, "keepalive-timeout \"75s\"") {
                    if let Some(timeout) = duration(d, entry, false) {
                        config.keepalive_timeout = timeout;
                    }
                }
            }
            "h2c" => {
                h2c_span = Some(child.span());
                if let Some(entry) = single(d, child, "h2c #true") {
                    if let Some(on) = boolean(d, entry) {
                        config.h2c = on;
                    }
                }
            }
            "tls" => tls = Some(read_listener_tls(d, child)),
            other if hardening::NODES.contains(&other) => hardening::read(d, child, config),
            _ => {
                let all: Vec<&str> = NODES.iter().chain(hardening::NODES).copied().collect();
                unknown_node(d, child, Some("listener"), &all);
            }
        }
    }
    if let (Some(span), Some(_)) = (h2c_span, &tls) {
        d.error(span, "`h2c` does not apply to a TLS listener")
            .label("plain-text HTTP/2 only")
            .help("on TLS, HTTP/2 is negotiated by ALPN: use `http2 #true` or `http2 #false` inside `tls`");
    }
    tls
}
