//! `upstream "name" { server ...; protocol ...; pool ...; timeouts ... }`: an origin group.

use std::net::{Ipv4Addr, Ipv6Addr};

use kdl::KdlNode;

use crate::diagnostic::Diagnostics;
use crate::model::{
    Balance, BalanceAlgorithm, HashKey, HealthCheck, HealthProbe, OutlierDetection, ProxyProtocolVersion, RetryConfig,
    UpstreamConfig, UpstreamProtocol, UpstreamServer, WhenAllDown,
};
use crate::reader::{children, leaf, name, name_span, single, take_args, take_props, unknown_node, Arity, Once};
use crate::sections::tls::read_upstream_tls;
use crate::sections::RawUpstream;
use crate::value::{boolean, choice, duration, integer, non_empty_string, size, string};

const NODES: &[&str] = &[
    "server",
    "protocol",
    "pool",
    "timeouts",
    "tls",
    "balance",
    "outlier-detection",
    "when-all-down",
    "health-check",
    "limits",
    "slow-start",
    "retry",
    "sticky",
    "proxy-protocol",
    "max-header-size",
];
const RETRY_PROPS: &[&str] = &[
    "attempts",
    "reset",
    "statuses",
    "non-idempotent",
    "per-try-timeout",
    "deadline",
    "backoff",
    "max-backoff",
    "budget",
    "min-retries-per-second",
];
const RETRY_USAGE: &str = "retry attempts=2 statuses=\"502 503 504\" per-try-timeout=\"2s\" budget=20";
const CHECK_NODES: &[&str] =
    &["http", "tcp", "interval", "timeout", "jitter", "healthy-threshold", "unhealthy-threshold"];
const HTTP_CHECK_USAGE: &str = "http \"/healthz\" status=\"200-399\" body=\"ok\" host=\"health.internal\"";
const OUTLIER_PROPS: &[&str] = &[
    "consecutive-failures",
    "consecutive-5xx",
    "failure-rate",
    "window",
    "min-requests",
    "base-ejection",
    "max-ejection",
    "max-ejected-percent",
];
const OUTLIER_USAGE: &str = "outlier-detection consecutive-failures=5 consecutive-5xx=5 base-ejection=\"10s\"";
const BALANCE_USAGE: &str = "balance \"ketama\" hash=\"header:X-User-Id\"";
const ALGORITHMS: &[&str] =
    &["weighted-round-robin", "round-robin", "random", "least-requests", "peak-ewma", "ketama", "maglev"];
const USAGE: &str = "upstream \"origins\" { server \"127.0.0.1:8081\" }";
const SERVER_USAGE: &str = "server \"127.0.0.1:8081\" weight=2";

/// Reads an `upstream` node; `None` when it has no usable name.
pub(super) fn read(d: &mut Diagnostics<'_>, node: &KdlNode) -> Option<RawUpstream> {
    let args = take_args(d, node, Arity::Exactly(1), USAGE);
    take_props(d, node, &[], USAGE);
    let name_entry = args.first();
    let group_name = name_entry.and_then(|entry| non_empty_string(d, entry, USAGE));

    let mut config = UpstreamConfig::new(group_name.unwrap_or_default(), Vec::new());
    let mut any_server_node = false;
    let mut tls = None;
    let mut protocol_span = None;
    let mut proxy_protocol_span = None;
    let mut once = Once::default();
    for child in children(node) {
        let child_name = name(child);
        if child_name != "server" && NODES.contains(&child_name) && !once.first(d, child, "in `upstream`") {
            continue;
        }
        match child_name {
            "server" => {
                any_server_node = true;
                config.servers.extend(read_server(d, child));
            }
            "protocol" => {
                if let Some(entry) = single(d, child, "protocol \"http1\"") {
                    protocol_span = Some(entry.span());
                    match choice(d, entry, "protocol", &["http1", "h2c", "h2"]) {
                        Some("h2c") => config.protocol = UpstreamProtocol::H2c,
                        Some("h2") => config.protocol = UpstreamProtocol::H2,
                        Some(_) => config.protocol = UpstreamProtocol::Http1,
                        None => {}
                    }
                }
            }
            "max-header-size" => {
                if let Some(entry) = single(d, child, "max-header-size \"64KiB\"") {
                    match size(d, entry) {
                        Some(n) if (1024..=16 << 20).contains(&n) => config.max_header_size = n,
                        Some(n) => {
                            d.error(
                                entry.span(),
                                format!("`max-header-size` must be between 1 KiB and 16 MiB, found {n}"),
                            )
                            .label("out of range")
                            .help("the default is \"64KiB\", as on listeners");
                        }
                        None => {}
                    }
                }
            }
            "proxy-protocol" => {
                if let Some(entry) = single(d, child, "proxy-protocol \"v2\"") {
                    proxy_protocol_span = Some(entry.span());
                    match choice(d, entry, "proxy-protocol", &["v1", "v2"]) {
                        Some("v1") => config.proxy_protocol = Some(ProxyProtocolVersion::V1),
                        Some(_) => config.proxy_protocol = Some(ProxyProtocolVersion::V2),
                        None => {}
                    }
                }
            }
            "pool" => {
                let (_, props) = leaf(
                    d,
                    child,
                    Arity::Exactly(0),
                    &["max-idle", "idle-timeout"],
                    "pool max-idle=128 idle-timeout=\"60s\"",
                );
                if let Some(entry) = props.get("max-idle") {
                    if let Some(n) = integer(d, entry, 0, i128::from(u32::MAX)) {
                        config.pool.max_idle_per_server = usize::try_from(n).unwrap_or(usize::MAX);
                    }
                }
                if let Some(timeout) = props.get("idle-timeout").and_then(|entry| duration(d, entry, false)) {
                    config.pool.idle_timeout = timeout;
                }
            }
            "timeouts" => {
                let (_, props) = leaf(
                    d,
                    child,
                    Arity::Exactly(0),
                    &["connect", "first-byte", "read-idle"],
                    "timeouts connect=\"5s\" first-byte=\"60s\" read-idle=\"60s\"",
                );
                if let Some(timeout) = props.get("connect").and_then(|entry| duration(d, entry, false)) {
                    config.timeouts.connect = timeout;
                }
                if let Some(timeout) = props.get("first-byte").and_then(|entry| duration(d, entry, false)) {
                    config.timeouts.first_byte = timeout;
                }
                if let Some(timeout) = props.get("read-idle").and_then(|entry| duration(d, entry, false)) {
                    config.timeouts.read_idle = timeout;
                }
            }
            "balance" => {
                if let Some(balance) = read_balance(d, child) {
                    config.balance = balance;
                }
            }
            "outlier-detection" => read_outlier(d, child, &mut config.outlier),
            "retry" => config.retry = read_retry(d, child),
            "sticky" => {
                let usage = "sticky cookie=\"sluice_server\"";
                let (_, props) = leaf(d, child, Arity::Exactly(0), &["cookie"], usage);
                let name = match props.get("cookie") {
                    Some(e) => non_empty_string(d, e, usage).map(str::to_owned),
                    None => Some("sluice_server".to_owned()),
                };
                if let Some(name) = name {
                    if name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                        config.sticky_cookie = Some(name);
                    } else {
                        d.error(name_span(child), format!("invalid cookie name `{name}`"))
                            .label("not a cookie name")
                            .help("use letters, digits, `_` and `-`");
                    }
                }
            }
            "slow-start" => {
                if let Some(t) = single(d, child, "slow-start \"30s\"").and_then(|e| duration(d, e, true)) {
                    config.slow_start = t;
                }
            }
            "limits" => {
                let (_, props) = leaf(
                    d,
                    child,
                    Arity::Exactly(0),
                    &["max-connections", "max-pending", "max-in-flight"],
                    "limits max-connections=100 max-pending=50 max-in-flight=200",
                );
                let get = |d: &mut Diagnostics<'_>, key: &str, min: i128| {
                    props.get(key).and_then(|e| integer(d, e, min, 10_000_000)).and_then(|n| usize::try_from(n).ok())
                };
                if let Some(n) = get(d, "max-connections", 1) {
                    config.limits.max_connections = Some(n);
                }
                if let Some(n) = get(d, "max-pending", 0) {
                    config.limits.max_pending = n;
                }
                if let Some(n) = get(d, "max-in-flight", 1) {
                    config.limits.max_in_flight = Some(n);
                }
            }
            "health-check" => config.health_check = Some(read_health_check(d, child)),
            "when-all-down" => {
                if let Some(entry) = single(d, child, "when-all-down \"fail-open\"") {
                    match choice(d, entry, "all-down behaviour", &["fail-open", "refuse"]) {
                        Some("refuse") => config.when_all_down = WhenAllDown::Refuse,
                        Some(_) => config.when_all_down = WhenAllDown::FailOpen,
                        None => {}
                    }
                }
            }
            "tls" => {
                let raw = read_upstream_tls(d, child);
                config.tls = Some(raw.config.clone());
                tls = Some(raw);
            }
            _ => unknown_node(d, child, Some("upstream"), NODES),
        }
    }

    let group_name = group_name?;
    if !any_server_node {
        d.error(name_span(node), format!("upstream `{group_name}` has no servers"))
            .label("no `server` inside")
            .help(format!("add at least one, like: upstream {group_name:?} {{ {SERVER_USAGE} }}"));
    }
    let name_span = name_entry.map_or_else(|| name_span(node), |entry| entry.span());
    if let Some(span) = protocol_span {
        match (config.protocol, &tls) {
            (UpstreamProtocol::H2, None) => {
                d.error(span, "protocol \"h2\" needs TLS")
                    .label("HTTP/2 over TLS")
                    .help("add a `tls { }` block to the upstream, or use \"h2c\" for HTTP/2 in plain text");
            }
            (UpstreamProtocol::H2c, Some(_)) => {
                d.error(span, "protocol \"h2c\" is plain-text HTTP/2, but this upstream uses TLS")
                    .label("plain text only")
                    .help("use protocol \"h2\" for HTTP/2 over TLS (negotiated by ALPN)");
            }
            _ => {}
        }
    }
    if let (Some(span), UpstreamProtocol::H2 | UpstreamProtocol::H2c) = (proxy_protocol_span, config.protocol) {
        d.error(
            span,
            "a PROXY protocol header names one client, but an HTTP/2 connection carries many clients' requests",
        )
        .label("needs protocol \"http1\"")
        .help("use protocol \"http1\" with proxy-protocol (each client's requests then get their own connections)");
    }
    Some(RawUpstream { config, name_span, tls })
}

/// Reads `health-check { http ...|tcp; interval; timeout; jitter; *-threshold }`.
fn read_health_check(d: &mut Diagnostics<'_>, node: &KdlNode) -> HealthCheck {
    take_args(d, node, Arity::Exactly(0), "health-check { http \"/healthz\" }");
    take_props(d, node, &[], "health-check { http \"/healthz\" }");
    let mut check = HealthCheck::default();
    let mut once = Once::default();
    let mut probe_span: Option<miette::SourceSpan> = None;
    for child in children(node) {
        if CHECK_NODES.contains(&name(child)) && !once.first(d, child, "in `health-check`") {
            continue;
        }
        match name(child) {
            "http" | "tcp" => {
                if let Some(first) = probe_span {
                    d.error(name_span(child), "a health check is either `http` or `tcp`, not both")
                        .label("second probe")
                        .also(first, "first probe")
                        .help("keep one of them");
                    continue;
                }
                probe_span = Some(name_span(child));
                if name(child) == "tcp" {
                    leaf(d, child, Arity::Exactly(0), &[], "tcp");
                    check.probe = HealthProbe::Tcp;
                } else if let Some(probe) = read_http_probe(d, child) {
                    check.probe = probe;
                }
            }
            "interval" | "timeout" | "jitter" => {
                let usage = format!("{} \"5s\"", name(child));
                if let Some(t) = single(d, child, &usage).and_then(|e| duration(d, e, name(child) == "jitter")) {
                    match name(child) {
                        "interval" => check.interval = t,
                        "timeout" => check.timeout = t,
                        _ => check.jitter = t,
                    }
                }
            }
            "healthy-threshold" | "unhealthy-threshold" => {
                let usage = format!("{} 3", name(child));
                if let Some(n) = single(d, child, &usage).and_then(|e| integer(d, e, 1, 1000)) {
                    let n = u32::try_from(n).unwrap_or(1);
                    if name(child) == "healthy-threshold" {
                        check.healthy_threshold = n;
                    } else {
                        check.unhealthy_threshold = n;
                    }
                }
            }
            _ => unknown_node(d, child, Some("health-check"), CHECK_NODES),
        }
    }
    check
}

fn read_http_probe(d: &mut Diagnostics<'_>, node: &KdlNode) -> Option<HealthProbe> {
    let (args, props) = leaf(d, node, Arity::Exactly(1), &["status", "body", "host"], HTTP_CHECK_USAGE);
    let path = non_empty_string(d, args.first()?, HTTP_CHECK_USAGE)?;
    if !path.starts_with('/') {
        d.error(args[0].span(), format!("health check path `{path}` must start with `/`"))
            .label("not a path")
            .help(format!("write it like: {HTTP_CHECK_USAGE}"));
        return None;
    }
    let (mut status_min, mut status_max) = (200, 399);
    if let Some(e) = props.get("status") {
        let text = non_empty_string(d, e, HTTP_CHECK_USAGE)?;
        let parse = |t: &str| t.trim().parse::<u16>().ok().filter(|c| (100..=599).contains(c));
        let range = match text.split_once('-') {
            Some((a, b)) => parse(a).zip(parse(b)).filter(|(a, b)| a <= b),
            None => parse(text).map(|c| (c, c)),
        };
        match range {
            Some((a, b)) => (status_min, status_max) = (a, b),
            None => {
                d.error(e.span(), format!("invalid status range `{text}`"))
                    .label("not a status or range")
                    .help("write one status like \"200\" or a range like \"200-399\" (100 to 599)");
                return None;
            }
        }
    }
    let body = match props.get("body") {
        Some(e) => Some(non_empty_string(d, e, HTTP_CHECK_USAGE)?.to_owned()),
        None => None,
    };
    let host = match props.get("host") {
        Some(e) => Some(non_empty_string(d, e, HTTP_CHECK_USAGE)?.to_owned()),
        None => None,
    };
    Some(HealthProbe::Http { path: path.to_owned(), status_min, status_max, body, host })
}

/// Reads `retry prop=value ...` over the defaults.
fn read_retry(d: &mut Diagnostics<'_>, node: &KdlNode) -> Option<RetryConfig> {
    let (_, props) = leaf(d, node, Arity::Exactly(0), RETRY_PROPS, RETRY_USAGE);
    let mut r = RetryConfig::default();
    let mut ok = true;
    if let Some(e) = props.get("attempts") {
        match integer(d, e, 0, 10) {
            Some(n) => r.attempts = u32::try_from(n).unwrap_or(1),
            None => ok = false,
        }
    }
    for (key, slot) in [("reset", &mut r.reset), ("non-idempotent", &mut r.non_idempotent)] {
        if let Some(e) = props.get(key) {
            match boolean(d, e) {
                Some(b) => *slot = b,
                None => ok = false,
            }
        }
    }
    if let Some(e) = props.get("statuses") {
        let text = string(d, e, RETRY_USAGE)?;
        for word in text.split([' ', ',']).filter(|w| !w.is_empty()) {
            match word.parse::<u16>() {
                Ok(code) if (500..=599).contains(&code) || code == 429 || code == 408 => r.statuses.push(code),
                _ => {
                    d.error(e.span(), format!("`{word}` is not a status worth retrying"))
                        .label("expected 5xx, 408 or 429")
                        .help("list statuses like \"502 503 504\"; a retried request goes to another server");
                    ok = false;
                }
            }
        }
    }
    for (key, slot) in [("per-try-timeout", &mut r.per_try_timeout), ("deadline", &mut r.deadline)] {
        if let Some(e) = props.get(key) {
            match duration(d, e, false) {
                Some(t) => *slot = Some(t),
                None => ok = false,
            }
        }
    }
    for (key, slot) in [("backoff", &mut r.backoff), ("max-backoff", &mut r.max_backoff)] {
        if let Some(e) = props.get(key) {
            match duration(d, e, true) {
                Some(t) => *slot = t,
                None => ok = false,
            }
        }
    }
    if let Some(e) = props.get("budget") {
        match integer(d, e, 0, 100) {
            Some(n) => r.budget_percent = u32::try_from(n).unwrap_or(20),
            None => ok = false,
        }
    }
    if let Some(e) = props.get("min-retries-per-second") {
        match integer(d, e, 0, 1_000_000) {
            Some(n) => r.min_retries_per_second = u32::try_from(n).unwrap_or(3),
            None => ok = false,
        }
    }
    ok.then_some(r)
}

/// Reads `outlier-detection prop=value ...` over the defaults.
fn read_outlier(d: &mut Diagnostics<'_>, node: &KdlNode, o: &mut OutlierDetection) {
    let (_, props) = leaf(d, node, Arity::Exactly(0), OUTLIER_PROPS, OUTLIER_USAGE);
    let count = |d: &mut Diagnostics<'_>, key: &str, max: i128| {
        props.get(key).and_then(|e| integer(d, e, 0, max)).and_then(|n| u32::try_from(n).ok())
    };
    if let Some(n) = count(d, "consecutive-failures", 1_000_000) {
        o.consecutive_failures = n;
    }
    if let Some(n) = count(d, "consecutive-5xx", 1_000_000) {
        o.consecutive_5xx = n;
    }
    if let Some(n) = count(d, "failure-rate", 100) {
        o.failure_rate_percent = n;
    }
    if let Some(n) = count(d, "min-requests", 1_000_000) {
        o.min_requests = n;
    }
    if let Some(n) = count(d, "max-ejected-percent", 100) {
        o.max_ejected_percent = n;
    }
    for (key, slot) in
        [("window", &mut o.window), ("base-ejection", &mut o.base_ejection), ("max-ejection", &mut o.max_ejection)]
    {
        if let Some(t) = props.get(key).and_then(|e| duration(d, e, false)) {
            *slot = t;
        }
    }
    if o.max_ejection < o.base_ejection {
        d.error(crate::reader::name_span(node), "`max-ejection` is shorter than `base-ejection`")
            .label("ejections could not last their base time")
            .help("make max-ejection at least as long as base-ejection (defaults: 10s and 300s)");
    }
}

/// Reads `balance "algorithm" [hash="client-ip|path|header:NAME|cookie:NAME|query:NAME"]`.
fn read_balance(d: &mut Diagnostics<'_>, node: &KdlNode) -> Option<Balance> {
    let (args, props) = leaf(d, node, Arity::Exactly(1), &["hash"], BALANCE_USAGE);
    let algorithm = match choice(d, args.first()?, "load-balancing algorithm", ALGORITHMS)? {
        "round-robin" => BalanceAlgorithm::RoundRobin,
        "random" => BalanceAlgorithm::Random,
        "least-requests" => BalanceAlgorithm::LeastRequests,
        "peak-ewma" => BalanceAlgorithm::PeakEwma,
        "ketama" => BalanceAlgorithm::Ketama,
        "maglev" => BalanceAlgorithm::Maglev,
        _ => BalanceAlgorithm::WeightedRoundRobin,
    };
    let mut balance = Balance { algorithm, hash: HashKey::ClientIp };
    if let Some(entry) = props.get("hash") {
        if !matches!(algorithm, BalanceAlgorithm::Ketama | BalanceAlgorithm::Maglev) {
            d.error(entry.span(), "`hash` only applies to the consistent-hashing algorithms")
                .label("not used by this algorithm")
                .help("use balance \"ketama\" or balance \"maglev\" to send the same key to the same server");
            return None;
        }
        let text = non_empty_string(d, entry, BALANCE_USAGE)?;
        balance.hash = match parse_hash_key(text) {
            Ok(key) => key,
            Err(why) => {
                d.error(entry.span(), format!("invalid hash key `{text}`: {why}"))
                    .label("not a hash key")
                    .help("write \"client-ip\", \"path\", \"header:NAME\", \"cookie:NAME\" or \"query:NAME\"");
                return None;
            }
        };
    }
    Some(balance)
}

fn parse_hash_key(text: &str) -> Result<HashKey, String> {
    match text.split_once(':') {
        None if text == "client-ip" => Ok(HashKey::ClientIp),
        None if text == "path" => Ok(HashKey::Path),
        None => Err("unknown key".to_owned()),
        Some((_, "")) => Err("the name after `:` is missing".to_owned()),
        Some(("header", name)) => http::HeaderName::from_bytes(name.as_bytes())
            .map(HashKey::Header)
            .map_err(|_| format!("`{name}` is not a header name")),
        Some(("cookie", name)) => Ok(HashKey::Cookie(name.to_owned())),
        Some(("query", name)) => Ok(HashKey::Query(name.to_owned())),
        Some((kind, _)) => Err(format!("unknown key kind `{kind}`")),
    }
}

fn read_server(d: &mut Diagnostics<'_>, node: &KdlNode) -> Option<UpstreamServer> {
    let (args, props) = leaf(d, node, Arity::Exactly(1), &["weight", "srv"], SERVER_USAGE);
    // Both parts are checked before giving up, so both can be reported.
    let weight = match props.get("weight") {
        Some(entry) => integer(d, entry, 1, i128::from(u32::MAX)).and_then(|n| u32::try_from(n).ok()),
        None => Some(1),
    };
    let srv = match props.get("srv") {
        Some(entry) => boolean(d, entry)?,
        None => false,
    };
    let entry = args.first()?;
    let address = non_empty_string(d, entry, SERVER_USAGE)?;
    if srv {
        if let Some(w) = props.get("weight") {
            d.error(w.span(), "an SRV server takes its weights from its SRV records")
                .label("not used with srv")
                .help("remove weight=, or set the weights in the SRV records");
            return None;
        }
        if let Err(why) = check_host_name(address) {
            d.error(entry.span(), format!("invalid SRV name `{address}`: {why}"))
                .label("not an SRV name")
                .help("write the SRV name without a port, like \"_http._tcp.api.internal\"");
            return None;
        }
        return Some(UpstreamServer { address: address.to_owned(), weight: 1, srv: true });
    }
    if let Err((message, help)) = check_server_address(address) {
        d.error(entry.span(), message).label("not a host:port address").help(help);
        return None;
    }
    Some(UpstreamServer { address: address.to_owned(), weight: weight?, srv: false })
}

/// Checks `host:port` where host is an IPv4 address, a bracketed IPv6 address or a DNS name.
fn check_server_address(text: &str) -> Result<(), (String, String)> {
    let example = "write it like \"127.0.0.1:8081\", \"[::1]:8081\" or \"origin.internal:80\"";
    let invalid = |why: String| Err((format!("invalid server address `{text}`: {why}"), example.to_owned()));
    if let Some((scheme, _)) = text.split_once("://") {
        return Err((
            format!("invalid server address `{text}`: no scheme allowed"),
            format!("remove `{scheme}://`; the protocol is set with `protocol` (http1, h2c or h2) and TLS with a `tls` block"),
        ));
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return invalid("missing `]` after the IPv6 address".to_owned());
        };
        if ip.parse::<Ipv6Addr>().is_err() {
            return invalid(format!("`{ip}` is not an IPv6 address"));
        }
        let Some(port) = after.strip_prefix(':') else {
            return invalid("the port is missing".to_owned());
        };
        (None, port)
    } else {
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err((
                format!("invalid server address `{text}`: the port is missing"),
                format!("add the port, like \"{text}:80\""),
            ));
        };
        if host.contains(':') {
            return Err((
                format!("invalid server address `{text}`"),
                "write IPv6 addresses in brackets, like \"[::1]:8081\"".to_owned(),
            ));
        }
        (Some(host), port)
    };
    match port.parse::<u16>() {
        Ok(0) => return invalid("port 0 cannot be connected to".to_owned()),
        Ok(_) => {}
        Err(_) => return invalid(format!("`{port}` is not a port number (1 to 65535)")),
    }
    match host {
        Some(host) => check_host_name(host).or_else(invalid),
        None => Ok(()),
    }
}

/// Checks an IPv4 address or a DNS name (letters, digits, `-`, `_`, dot-separated labels).
pub(super) fn check_host_name(host: &str) -> Result<(), String> {
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    if host.is_empty() {
        return Err("the host is missing".to_owned());
    }
    if host.len() > 253 {
        return Err("the host name is longer than 253 characters".to_owned());
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Err(format!("`{host}` has an empty label (two dots in a row, or a leading or trailing dot)"));
        }
        if label.len() > 63 {
            return Err(format!("the label `{label}` is longer than 63 characters"));
        }
        if let Some(bad) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
            return Err(format!("`{host}` contains the invalid character {bad:?}"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("the label `{label}` starts or ends with `-`"));
        }
    }
    if host.rsplit('.').next().is_some_and(|last| last.chars().all(|c| c.is_ascii_digit())) {
        return Err(format!("`{host}` is not a valid IPv4 address"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        for good in ["127.0.0.1:8081", "[::1]:80", "origin.internal:80", "a_b.local:65535", "localhost:1"] {
            assert!(check_server_address(good).is_ok(), "{good}");
        }
        for bad in [
            "127.0.0.1",
            "::1:80",
            "[::1]",
            "[::1:80",
            "host:0",
            "host:65536",
            "host:http",
            "http://host:80",
            ":80",
            "300.1.1.1:80",
            "bad host:80",
            "-bad.example:80",
            "a..b:80",
        ] {
            assert!(check_server_address(bad).is_err(), "{bad}");
        }
    }
}
