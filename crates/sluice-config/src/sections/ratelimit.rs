//! `rate-limit { rate "10/s"; burst 20; key "client-ip" "header:x-api-key"; delay "500ms";
//! max-keys 100000 }` in a `site` or `route`; `rate-limit #false` turns a site's off for a
//! route.

use std::time::Duration;

use kdl::KdlNode;

use crate::diagnostic::Diagnostics;
use crate::model::{RateLimitConfig, RateLimitStore, RedisFallback};
use crate::reader::{children, leaf, name, name_span, single, take_args, take_props, unknown_node, Arity, Once};
use crate::value::{boolean, choice, duration, integer, non_empty_string, rate};

const NODES: &[&str] = &["rate", "burst", "key", "delay", "tarpit", "max-keys", "store", "on-redis-error", "name"];
const USAGE: &str = "rate-limit { rate \"10/s\"; burst 20; key \"client-ip\" }";

/// Reads a `rate-limit` node.
pub(super) fn read(d: &mut Diagnostics<'_>, node: &KdlNode) -> Option<RateLimitConfig> {
    let args = take_args(d, node, Arity::Between(0, 1), USAGE);
    take_props(d, node, &[], USAGE);
    let enabled = args.first().map_or(Some(true), |entry| boolean(d, entry))?;
    let mut config = RateLimitConfig {
        enabled,
        per_second: 0.0,
        burst: 0,
        key: vec!["client-ip".to_owned()],
        delay: Duration::ZERO,
        max_keys: 100_000,
        tarpit: Duration::ZERO,
        store: RateLimitStore::Local,
        on_redis_error: RedisFallback::Allow,
        name: None,
    };
    if !enabled {
        return Some(config);
    }
    let mut ok = true;
    let mut rate_given = false;
    let mut once = Once::default();
    for child in children(node) {
        if NODES.contains(&name(child)) && !once.first(d, child, "in `rate-limit`") {
            continue;
        }
        match name(child) {
            "rate" => {
                let usage = "rate \"10/s\"";
                match single(d, child, usage).and_then(|e| rate(d, e, usage)) {
                    Some(r) => {
                        config.per_second = r;
                        rate_given = true;
                    }
                    None => ok = false,
                }
            }
            "burst" => match single(d, child, "burst 20").and_then(|e| integer(d, e, 0, 1_000_000)) {
                Some(n) => config.burst = u32::try_from(n).unwrap_or(0),
                None => ok = false,
            },
            "max-keys" => match single(d, child, "max-keys 100000").and_then(|e| integer(d, e, 16, 100_000_000)) {
                Some(n) => config.max_keys = usize::try_from(n).unwrap_or(100_000),
                None => ok = false,
            },
            "delay" => match single(d, child, "delay \"500ms\"").and_then(|e| duration(d, e, true)) {
                Some(t) => config.delay = t,
                None => ok = false,
            },
            "tarpit" => match single(d, child, "tarpit \"1s\"").and_then(|e| duration(d, e, true)) {
                Some(t) if t <= Duration::from_secs(30) => config.tarpit = t,
                Some(t) => {
                    d.error(name_span(child), format!("`tarpit` is at most 30s, found {t:?}"))
                        .label("too long")
                        .help("a refused request holds its connection while it waits; \"1s\" slows a flood enough");
                    ok = false;
                }
                None => ok = false,
            },
            "store" => {
                match single(d, child, "store \"redis\"").and_then(|e| choice(d, e, "store", &["local", "redis"])) {
                    Some("redis") => config.store = RateLimitStore::Redis,
                    Some(_) => config.store = RateLimitStore::Local,
                    None => ok = false,
                }
            }
            "on-redis-error" => {
                let usage = "on-redis-error \"allow\"";
                match single(d, child, usage).and_then(|e| choice(d, e, "on-redis-error", &["allow", "deny", "local"]))
                {
                    Some("allow") => config.on_redis_error = RedisFallback::Allow,
                    Some("deny") => config.on_redis_error = RedisFallback::Deny,
                    Some(_) => config.on_redis_error = RedisFallback::Local,
                    None => ok = false,
                }
            }
            "name" => match single(d, child, "name \"login\"").and_then(|e| non_empty_string(d, e, "name \"login\"")) {
                Some(n) => config.name = Some(n.to_owned()),
                None => ok = false,
            },
            "key" => {
                let usage = "key \"client-ip\" \"header:x-api-key\" \"cookie:session\" \"route\"";
                let (args, _) = leaf(d, child, Arity::AtLeast(1), &[], usage);
                let mut parts = Vec::new();
                for entry in args {
                    let Some(text) = non_empty_string(d, entry, usage) else {
                        ok = false;
                        continue;
                    };
                    let valid = match text.split_once(':') {
                        None => matches!(text, "client-ip" | "route"),
                        Some(("header", h)) => http::HeaderName::from_bytes(h.as_bytes()).is_ok(),
                        Some(("cookie", c)) => !c.is_empty(),
                        Some(_) => false,
                    };
                    if !valid {
                        d.error(entry.span(), format!("invalid key part `{text}`"))
                            .label("not a key part")
                            .help("key parts are \"client-ip\", \"route\", \"header:NAME\" and \"cookie:NAME\"");
                        ok = false;
                        continue;
                    }
                    parts.push(text.to_owned());
                }
                config.key = parts;
            }
            _ => {
                unknown_node(d, child, Some("rate-limit"), NODES);
                ok = false;
            }
        }
    }
    if !rate_given && ok {
        d.error(node.span(), "`rate-limit` needs a rate").label("no rate").help(format!("write it like: {USAGE}"));
        ok = false;
    }
    ok.then_some(config)
}
