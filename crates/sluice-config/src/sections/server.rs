//! `server { ... }`: process-wide settings.

use std::path::PathBuf;

use kdl::KdlNode;

use crate::diagnostic::Diagnostics;
use crate::model::{LogFormat, LogTarget, RuntimeKind, ServerSettings, TracingSettings};
use crate::reader::{children, leaf, name, name_span, single, take_args, take_props, unknown_node, Arity, Once};
use crate::value::{choice, duration, integer, non_empty_string};

const NODES: &[&str] = &[
    "worker-threads",
    "runtime",
    "shutdown-grace",
    "access-log",
    "dns-server",
    "admin",
    "pid-file",
    "tracing",
    "user",
    "group",
    "cache",
    "redis",
];
const TRACING_NODES: &[&str] = &["otlp", "service-name", "batch-size", "flush-interval", "queue"];
const TRACING_USAGE: &str = "tracing { otlp \"http://127.0.0.1:4318/v1/traces\"; }";
const OTLP_USAGE: &str = "otlp \"http://127.0.0.1:4318/v1/traces\"";

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
            "tracing" => settings.tracing = read_tracing(d, child),
            "redis" => settings.redis = read_redis(d, child),
            "cache" => settings.cache = crate::sections::cache::read_store(d, child),
            "user" | "group" => {
                let usage = if name(child) == "user" { "user \"sluice\"" } else { "group \"sluice\"" };
                if let Some(entry) = single(d, child, usage) {
                    if let Some(value) = non_empty_string(d, entry, usage) {
                        if name(child) == "user" {
                            settings.user = Some(value.to_owned());
                        } else {
                            settings.group = Some(value.to_owned());
                        }
                    }
                }
            }
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

/// Reads `tracing { otlp "URL"; service-name; batch-size; flush-interval; queue }`; `None`
/// when the endpoint is missing or invalid (reported).
fn read_tracing(d: &mut Diagnostics<'_>, node: &KdlNode) -> Option<TracingSettings> {
    take_args(d, node, Arity::Exactly(0), TRACING_USAGE);
    take_props(d, node, &[], TRACING_USAGE);
    let mut settings = TracingSettings::new(String::new());
    let mut endpoint = None;
    let mut endpoint_given = false;
    let mut once = Once::default();
    for child in children(node) {
        if TRACING_NODES.contains(&name(child)) && !once.first(d, child, "in `tracing`") {
            continue;
        }
        match name(child) {
            "otlp" => {
                endpoint_given = true;
                let Some(entry) = single(d, child, OTLP_USAGE) else { continue };
                let Some(text) = non_empty_string(d, entry, OTLP_USAGE) else { continue };
                match check_otlp_endpoint(text) {
                    Ok(()) => endpoint = Some(text.to_owned()),
                    Err(problem) => {
                        d.error(entry.span(), problem.message).label(problem.label).help(problem.help);
                    }
                }
            }
            "service-name" => {
                let usage = "service-name \"edge-proxy\"";
                if let Some(text) = single(d, child, usage).and_then(|e| non_empty_string(d, e, usage)) {
                    settings.service_name = text.to_owned();
                }
            }
            "batch-size" => {
                if let Some(n) = single(d, child, "batch-size 512").and_then(|e| integer(d, e, 1, 65_536)) {
                    settings.batch_size = usize::try_from(n).unwrap_or(512);
                }
            }
            "queue" => {
                if let Some(n) = single(d, child, "queue 8192").and_then(|e| integer(d, e, 1, 1_048_576)) {
                    settings.queue = usize::try_from(n).unwrap_or(8192);
                }
            }
            "flush-interval" => {
                if let Some(t) = single(d, child, "flush-interval \"1s\"").and_then(|e| duration(d, e, false)) {
                    settings.flush_interval = t;
                }
            }
            _ => unknown_node(d, child, Some("tracing"), TRACING_NODES),
        }
    }
    if !endpoint_given {
        d.error(name_span(node), "`tracing` needs an `otlp` endpoint")
            .label("no endpoint")
            .help(format!("write it like: {TRACING_USAGE}"));
    }
    settings.endpoint = endpoint?;
    Some(settings)
}

/// Reads `redis "host:port" timeout="100ms" prefix="sluice:" database=0 username="" password=""`.
fn read_redis(d: &mut Diagnostics<'_>, node: &KdlNode) -> Option<crate::model::RedisConfig> {
    const USAGE: &str = "redis \"127.0.0.1:6379\" timeout=\"100ms\" prefix=\"sluice:\"";
    let (args, props) =
        leaf(d, node, Arity::Exactly(1), &["timeout", "prefix", "database", "username", "password"], USAGE);
    let entry = args.first()?;
    let address = non_empty_string(d, entry, USAGE)?;
    let port_ok = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !port_ok || address.contains('/') {
        d.error(entry.span(), format!("invalid Redis address `{address}`"))
            .label("not host:port")
            .help("write the server's host and port, like \"127.0.0.1:6379\" or \"redis.internal:6379\"");
        return None;
    }
    let mut config = crate::model::RedisConfig {
        address: address.to_owned(),
        timeout: std::time::Duration::from_millis(100),
        prefix: "sluice:".to_owned(),
        username: None,
        password: None,
        database: 0,
    };
    if let Some(e) = props.get("timeout") {
        config.timeout = duration(d, e, false)?;
        if config.timeout > std::time::Duration::from_secs(60) {
            d.error(e.span(), format!("the Redis `timeout` is at most 60s, found {:?}", config.timeout))
                .label("too long")
                .help(
                    "every rate-limited request may wait this long while Redis is slow; tens of milliseconds is usual",
                );
            return None;
        }
    }
    if let Some(e) = props.get("prefix") {
        config.prefix = crate::value::string(d, e, USAGE)?.to_owned();
    }
    if let Some(e) = props.get("database") {
        config.database = u32::try_from(integer(d, e, 0, 1_000_000)?).ok()?;
    }
    if let Some(e) = props.get("username") {
        config.username = Some(non_empty_string(d, e, USAGE)?.to_owned());
    }
    if let Some(e) = props.get("password") {
        config.password = Some(non_empty_string(d, e, USAGE)?.to_owned());
    }
    Some(config)
}

/// What is wrong with an OTLP endpoint, for a diagnostic.
struct EndpointProblem {
    message: String,
    label: &'static str,
    help: String,
}

/// Checks an OTLP/HTTP traces URL: plain `http://`, a host, a port (no silent default: a
/// collector listens on 4318, not 80) and a path (collectors take traces at `/v1/traces`,
/// not `/`).
fn check_otlp_endpoint(text: &str) -> Result<(), EndpointProblem> {
    const EXAMPLE: &str = "\"http://127.0.0.1:4318/v1/traces\"";
    let invalid = |why: &str| EndpointProblem {
        message: format!("invalid OTLP endpoint `{text}`: {why}"),
        label: "not an http://host:port/path URL",
        help: format!("write the collector's OTLP/HTTP traces URL, like {EXAMPLE}"),
    };
    let has_scheme = |scheme: &str| text.get(..scheme.len()).is_some_and(|s| s.eq_ignore_ascii_case(scheme));
    if has_scheme("https://") {
        return Err(EndpointProblem {
            message: format!("OTLP over HTTPS is not supported (`{text}`)"),
            label: "https",
            help: format!(
                "only plain http OTLP is supported for now; export to a collector or agent nearby, like {EXAMPLE}"
            ),
        });
    }
    if !has_scheme("http://") {
        return Err(invalid("it must start with `http://`"));
    }
    let rest = &text["http://".len()..];
    if rest.contains('#') {
        return Err(invalid("a `#fragment` is not allowed"));
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(invalid("user names and passwords are not allowed"));
    }
    let Ok(authority) = authority.parse::<http::uri::Authority>() else {
        return Err(invalid("the host or port is malformed"));
    };
    if authority.host().is_empty() {
        return Err(invalid("the host is missing"));
    }
    // The text after the last `:` is a port unless it is inside IPv6 brackets.
    let port_text = authority.as_str().rsplit_once(':').map(|(_, port)| port).filter(|port| !port.contains(']'));
    match (port_text, authority.port_u16()) {
        (None, _) => {
            return Err(EndpointProblem {
                message: format!("the OTLP endpoint `{text}` has no port"),
                label: "port missing",
                help: format!("write the port (OTLP/HTTP collectors listen on 4318), like {EXAMPLE}"),
            });
        }
        (Some(_), Some(port)) if port > 0 => {}
        (Some(port), _) => return Err(invalid(&format!("`{port}` is not a port (1 to 65535)"))),
    }
    if !path.starts_with('/') {
        return Err(EndpointProblem {
            message: format!("the OTLP endpoint `{text}` has no path"),
            label: "path missing",
            help: format!("write the full traces URL (collectors take traces at /v1/traces), like {EXAMPLE}"),
        });
    }
    if text.parse::<http::Uri>().is_err() {
        return Err(invalid("the path is malformed"));
    }
    Ok(())
}
