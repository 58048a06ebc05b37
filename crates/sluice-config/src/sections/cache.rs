//! `cache` blocks: in `server` the storage (`memory`, `max-object`, `disk`), in a `site` or
//! `route` the rules (`default-ttl`, `override-ttl`, key settings, what may be stored,
//! `lock-timeout`, `tag-headers`); `cache #false` in a route turns its site's cache off.

use std::time::Duration;

use kdl::KdlNode;

use crate::diagnostic::Diagnostics;
use crate::model::{CacheRuleConfig, CacheStoreConfig};
use crate::reader::{children, leaf, name, single, take_args, take_props, unknown_node, Arity, Once};
use crate::value::{boolean, duration, non_empty_string, size};

const STORE_NODES: &[&str] = &["memory", "max-object", "disk"];
const STORE_USAGE: &str = "cache { memory \"256MiB\"; max-object \"8MiB\"; disk \"/var/cache/sluice\" size=\"10GiB\" }";
const RULE_NODES: &[&str] = &[
    "default-ttl",
    "override-ttl",
    "ignore-query",
    "sort-query",
    "ignore-params",
    "key-headers",
    "key-cookies",
    "store-set-cookie",
    "store-private",
    "lock-timeout",
    "heuristic-max",
    "tag-headers",
    "targeted-cache-control",
];
const RULE_USAGE: &str = "cache { default-ttl 200 \"10m\"; lock-timeout \"5s\" }";

/// Reads `server { cache { ... } }`.
pub(super) fn read_store(d: &mut Diagnostics<'_>, node: &KdlNode) -> Option<CacheStoreConfig> {
    take_args(d, node, Arity::Exactly(0), STORE_USAGE);
    take_props(d, node, &[], STORE_USAGE);
    let mut config = CacheStoreConfig::default();
    let mut ok = true;
    let mut once = Once::default();
    for child in children(node) {
        if STORE_NODES.contains(&name(child)) && !once.first(d, child, "in `cache`") {
            continue;
        }
        match name(child) {
            "memory" => match single(d, child, "memory \"256MiB\"").and_then(|e| size(d, e)) {
                Some(n) => config.memory = n,
                None => ok = false,
            },
            "max-object" => match single(d, child, "max-object \"8MiB\"").and_then(|e| size(d, e)) {
                Some(n) => config.max_object = n,
                None => ok = false,
            },
            "disk" => {
                let usage = "disk \"/var/cache/sluice\" size=\"10GiB\"";
                let (args, props) = leaf(d, child, Arity::Exactly(1), &["size"], usage);
                let path = args.first().and_then(|e| non_empty_string(d, e, usage)).map(|p| d.path(p));
                let bytes = match props.get("size") {
                    Some(e) => size(d, e),
                    None => {
                        d.error(child.span(), "`disk` needs a size")
                            .label("no size=")
                            .help(format!("write it like: {usage}"));
                        None
                    }
                };
                match (path, bytes) {
                    (Some(p), Some(b)) => config.disk = Some((p, b)),
                    _ => ok = false,
                }
            }
            _ => {
                unknown_node(d, child, Some("cache"), STORE_NODES);
                ok = false;
            }
        }
    }
    ok.then_some(config)
}

/// Reads a site's or route's `cache` (or `cache #false`).
pub(super) fn read_rule(d: &mut Diagnostics<'_>, node: &KdlNode) -> Option<CacheRuleConfig> {
    let args = take_args(d, node, Arity::Between(0, 1), RULE_USAGE);
    take_props(d, node, &[], RULE_USAGE);
    let enabled = args.first().map_or(Some(true), |entry| boolean(d, entry))?;
    let mut config = CacheRuleConfig { enabled, ..Default::default() };
    if !enabled {
        return Some(config);
    }
    let mut ok = true;
    let mut once = Once::default();
    for child in children(node) {
        let repeatable = matches!(name(child), "default-ttl" | "override-ttl");
        if RULE_NODES.contains(&name(child)) && !repeatable && !once.first(d, child, "in `cache`") {
            continue;
        }
        match name(child) {
            ttl @ ("default-ttl" | "override-ttl") => {
                // `default-ttl 200 301 "10m"`: statuses, then the lifetime; repeatable.
                let usage = format!("{ttl} 200 301 \"10m\"");
                let (args, _) = leaf(d, child, Arity::AtLeast(2), &[], &usage);
                let Some((last, statuses)) = args.split_last() else {
                    ok = false;
                    continue;
                };
                let Some(lifetime) = duration(d, last, true) else {
                    ok = false;
                    continue;
                };
                let table = if ttl == "default-ttl" { &mut config.default_ttl } else { &mut config.override_ttl };
                for entry in statuses {
                    match crate::value::integer(d, entry, 200, 599) {
                        Some(code) => table.push((u16::try_from(code).unwrap_or(200), lifetime)),
                        None => ok = false,
                    }
                }
            }
            list @ ("ignore-params" | "key-headers" | "key-cookies" | "tag-headers" | "targeted-cache-control") => {
                let usage = format!("{list} \"name\"");
                let (args, _) = leaf(d, child, Arity::AtLeast(1), &[], &usage);
                let mut values = Vec::new();
                for entry in args {
                    match non_empty_string(d, entry, &usage) {
                        Some(v) if list != "ignore-params" && list != "key-cookies" => {
                            if http::HeaderName::from_bytes(v.as_bytes()).is_err() {
                                d.error(entry.span(), format!("`{v}` is not a header name"))
                                    .label("not a header name")
                                    .help("header names are tokens like \"x-tenant\"");
                                ok = false;
                                continue;
                            }
                            values.push(v.to_ascii_lowercase());
                        }
                        Some(v) => values.push(v.to_owned()),
                        None => ok = false,
                    }
                }
                match list {
                    "ignore-params" => config.ignore_params = values,
                    "key-headers" => config.key_headers = values,
                    "key-cookies" => config.key_cookies = values,
                    "targeted-cache-control" => config.targeted_cache_control = values,
                    _ => config.tag_headers = values,
                }
            }
            flag @ ("ignore-query" | "sort-query" | "store-set-cookie" | "store-private") => {
                let usage = format!("{flag} #true");
                match single(d, child, &usage).and_then(|e| boolean(d, e)) {
                    Some(on) => match flag {
                        "ignore-query" => config.ignore_query = on,
                        "sort-query" => config.sort_query = on,
                        "store-set-cookie" => config.store_set_cookie = on,
                        _ => config.store_private = on,
                    },
                    None => ok = false,
                }
            }
            time @ ("lock-timeout" | "heuristic-max") => {
                let usage = format!("{time} \"5s\"");
                match single(d, child, &usage).and_then(|e| duration(d, e, true)) {
                    Some(t) if time == "lock-timeout" => config.lock_timeout = t,
                    Some(t) => config.heuristic_max = t,
                    None => ok = false,
                }
            }
            _ => {
                unknown_node(d, child, Some("cache"), RULE_NODES);
                ok = false;
            }
        }
    }
    ok.then_some(config)
}

impl Default for CacheRuleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            default_ttl: Vec::new(),
            override_ttl: Vec::new(),
            ignore_query: false,
            sort_query: false,
            ignore_params: Vec::new(),
            key_headers: Vec::new(),
            key_cookies: Vec::new(),
            store_set_cookie: false,
            store_private: false,
            lock_timeout: Duration::from_secs(5),
            heuristic_max: Duration::from_secs(86_400),
            tag_headers: vec!["surrogate-key".to_owned(), "cache-tag".to_owned()],
            targeted_cache_control: vec!["cdn-cache-control".to_owned()],
        }
    }
}
