//! `server { ... }`: process-wide settings.

use std::path::PathBuf;

use kdl::KdlNode;

use crate::diagnostic::Diagnostics;
use crate::model::{LogFormat, LogTarget, RuntimeKind, ServerSettings};
use crate::reader::{children, leaf, name, single, take_args, take_props, unknown_node, Arity, Once};
use crate::value::{choice, duration, integer, non_empty_string};

const NODES: &[&str] =
    &["worker-threads", "runtime", "shutdown-grace", "access-log", "dns-server", "admin", "pid-file"];

/// Reads a `server` block into `settings` (which holds the defaults).
pub(super) fn read(d: &mut Diagnostics<'_>, node: &KdlNode, settings: &mut ServerSettings) {
    take_args(d, node, Arity::Exactly(0), "server { worker-threads 4 }");
    take_props(d, node, &[], "server { worker-threads 4 }");
    let mut once = Once::default();
    for child in children(node) {
        let known = NODES.contains(&name(child));
        if known && !once.first(d, child, "in `server`") {
            continue;
        }
        match name(child) {
            "worker-threads" => {
                if let Some(entry) = single(d, child, "worker-threads 4") {
                    if let Some(n) = integer(d, entry, 1, 1024) {
                        settings.worker_threads = usize::try_from(n).ok();
                    }
                }
            }
            "runtime" => {
                if let Some(entry) = single(d, child, "runtime \"multi-thread\"") {
                    match choice(d, entry, "runtime", &["multi-thread", "per-core"]) {
                        Some("multi-thread") => settings.runtime = RuntimeKind::MultiThread,
                        Some(_) => settings.runtime = RuntimeKind::PerCore,
                        None => {}
                    }
                }
            }
            "shutdown-grace" => {
                if let Some(entry) = single(d, child, "shutdown-grace \"30s\"") {
                    if let Some(grace) = duration(d, entry, true) {
                        settings.shutdown_grace = grace;
                    }
                }
            }
            "access-log" => read_access_log(d, child, settings),
            "pid-file" => {
                let usage = "pid-file \"/run/sluice.pid\"";
                if let Some(entry) = crate::reader::single(d, child, usage) {
                    if let Some(path) = crate::value::non_empty_string(d, entry, usage) {
                        settings.pid_file = Some(d.path(path));
                    }
                }
            }
            "admin" => {
                let usage = "admin \"127.0.0.1:9901\" token=\"secret\"";
                let (args, props) = crate::reader::leaf(d, child, crate::reader::Arity::Exactly(1), &["token"], usage);
                let token =
                    props.get("token").and_then(|e| crate::value::non_empty_string(d, e, usage)).map(str::to_owned);
                if let Some(entry) = args.first() {
                    if let Some(text) = crate::value::string(d, entry, usage) {
                        match text.parse::<std::net::SocketAddr>() {
                            Ok(address) => settings.admin = Some(crate::model::AdminConfig { address, token }),
                            Err(_) => {
                                d.error(entry.span(), format!("invalid admin address `{text}`"))
                                    .label("not an ip:port address")
                                    .help("the admin API listens on an ip:port, like \"127.0.0.1:9901\" (keep it on loopback or a private network)");
                            }
                        }
                    }
                }
            }
            "dns-server" => {
                let usage = "dns-server \"10.0.0.2:53\"";
                if let Some(entry) = crate::reader::single(d, child, usage) {
                    if let Some(text) = crate::value::string(d, entry, usage) {
                        match text.parse::<std::net::SocketAddr>() {
                            Ok(addr) => settings.dns_server = Some(addr),
                            Err(_) => {
                                d.error(entry.span(), format!("invalid DNS server `{text}`"))
                                    .label("not an ip:port address")
                                    .help("write the name server's address and port, like \"10.0.0.2:53\"");
                            }
                        }
                    }
                }
            }
            _ => unknown_node(d, child, Some("server"), NODES),
        }
    }
}

fn read_access_log(d: &mut Diagnostics<'_>, node: &KdlNode, settings: &mut ServerSettings) {
    const USAGE: &str = "access-log \"stdout\" format=\"json\"";
    let (args, props) = leaf(d, node, Arity::Exactly(1), &["format"], USAGE);
    if let Some(target) = args.first().and_then(|entry| non_empty_string(d, entry, USAGE)) {
        settings.access_log.target = match target {
            "off" => LogTarget::Off,
            "stdout" => LogTarget::Stdout,
            "stderr" => LogTarget::Stderr,
            path => LogTarget::File(PathBuf::from(path)),
        };
    }
    if let Some(entry) = props.get("format") {
        match choice(d, entry, "access log format", &["json", "text"]) {
            Some("json") => settings.access_log.format = LogFormat::Json,
            Some(_) => settings.access_log.format = LogFormat::Text,
            None => {}
        }
    }
}
