//! The policy nodes of a `site` or `route`: `allow`/`deny`, `basic-auth`, `jwt`,
//! `forward-auth`, `max-body-size` and `max-in-flight`.

use std::time::Duration;

use kdl::{KdlEntry, KdlNode};

use crate::diagnostic::Diagnostics;
use crate::model::{AccessRule, BasicAuthConfig, ForwardAuthConfig, JwtConfig, JwtKey, PolicyConfig, TokenSource};
use crate::reader::{children, leaf, name, name_span, single, take_args, take_props, unknown_node, Arity, Once};
use crate::sections::headers::header_name;
use crate::sections::Reference;
use crate::value::{boolean, cidr, cidr_file, duration, integer, non_empty_string, size, string};

/// The nodes this module reads (`allow` and `deny` may repeat; the others once).
pub(super) const NODES: &[&str] =
    &["allow", "deny", "basic-auth", "jwt", "forward-auth", "max-body-size", "max-in-flight"];
const ALLOW_USAGE: &str = "allow \"10.0.0.0/8\" \"2001:db8::/32\"";
const BASIC_USAGE: &str = "basic-auth \"/etc/sluice/htpasswd\" realm=\"Staff only\"";
const JWT_USAGE: &str = "jwt { jwks \"/etc/sluice/jwks.json\"; issuer \"https://id.example.com/\"; audience \"api\" }";
const JWT_NODES: &[&str] = &[
    "jwks",
    "jwks-url",
    "secret",
    "secret-file",
    "public-key",
    "algorithms",
    "issuer",
    "audience",
    "leeway",
    "token",
    "claim-header",
];
const ALGORITHMS: &[&str] = &["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"];
const FORWARD_USAGE: &str = "forward-auth \"auth\" path=\"/verify\" { response-headers \"x-user\" }";
const FORWARD_NODES: &[&str] = &["timeout", "request-headers", "response-headers"];

/// Whether `name` is a node of this module that may appear only once.
pub(super) fn once_only(node_name: &str) -> bool {
    NODES.contains(&node_name) && node_name != "allow" && node_name != "deny"
}

/// Reads one of [`NODES`] into `policy`; `place` is "site" or "route".
pub(super) fn read(
    d: &mut Diagnostics<'_>,
    node: &KdlNode,
    policy: &mut PolicyConfig,
    refs: &mut Vec<Reference>,
    once: &mut Once,
    place: &str,
) {
    let node_name = name(node);
    if once_only(node_name) && !once.first(d, node, &format!("in `{place}`")) {
        return;
    }
    match node_name {
        "allow" | "deny" => {
            if let Some(rule) = read_rule(d, node, node_name == "allow") {
                policy.access.get_or_insert_with(Vec::new).push(rule);
            } else {
                // Keep the list (and so the route's override) even when a rule failed.
                policy.access.get_or_insert_with(Vec::new);
            }
        }
        "basic-auth" => policy.basic_auth = read_basic(d, node),
        "jwt" => policy.jwt = read_jwt(d, node),
        "forward-auth" => {
            policy.forward_auth = read_forward(d, node);
            if let (Some(f), Some(entry)) = (&policy.forward_auth, node.entries().first()) {
                if f.enabled {
                    refs.push(Reference::Upstream(f.upstream.clone(), entry.span()));
                }
            }
        }
        "max-body-size" => {
            let usage = "max-body-size \"10MiB\"";
            if let Some(entry) = single(d, node, usage) {
                policy.max_body_size = match entry.value().as_bool() {
                    Some(false) => Some(None),
                    _ => size(d, entry).map(Some),
                };
            }
        }
        "max-in-flight" => {
            let usage = "max-in-flight 100";
            if let Some(entry) = single(d, node, usage) {
                policy.max_in_flight = match entry.value().as_bool() {
                    Some(false) => Some(None),
                    _ => integer(d, entry, 1, i128::from(u32::MAX)).and_then(|n| u32::try_from(n).ok()).map(Some),
                };
            }
        }
        _ => unknown_node(d, node, Some(place), NODES),
    }
}

/// `allow|deny "block" ... [file="list.txt"]`, or `allow|deny "all"`.
fn read_rule(d: &mut Diagnostics<'_>, node: &KdlNode, allow: bool) -> Option<AccessRule> {
    let (args, props) = leaf(d, node, Arity::AtLeast(0), &["file"], ALLOW_USAGE);
    let mut rule = AccessRule { allow, blocks: Vec::new(), all: false };
    let mut ok = true;
    for entry in &args {
        if string(d, entry, ALLOW_USAGE) == Some("all") {
            rule.all = true;
            continue;
        }
        match cidr(d, entry, ALLOW_USAGE) {
            Some(block) => rule.blocks.push(block),
            None => ok = false,
        }
    }
    match props.get("file") {
        Some(file) => match cidr_file(d, file, ALLOW_USAGE) {
            Some(blocks) => rule.blocks.extend(blocks),
            None => ok = false,
        },
        None if args.is_empty() => {
            d.error(name_span(node), format!("`{}` needs address blocks, `all` or a file", name(node)))
                .label("nothing to match")
                .help(format!("write it like: {ALLOW_USAGE}, `deny \"all\"` or `deny file=\"blocklist.txt\"`"));
            ok = false;
        }
        None => {}
    }
    ok.then_some(rule)
}

/// `basic-auth "file" realm="..."` or `basic-auth #false`.
fn read_basic(d: &mut Diagnostics<'_>, node: &KdlNode) -> Option<BasicAuthConfig> {
    let (args, props) = leaf(d, node, Arity::Exactly(1), &["realm"], BASIC_USAGE);
    let entry = args.first()?;
    if entry.value().as_bool() == Some(false) {
        return Some(BasicAuthConfig { enabled: false, file: Default::default(), realm: String::new() });
    }
    let written = non_empty_string(d, entry, BASIC_USAGE)?;
    let file = d.path(written);
    match std::fs::read_to_string(&file) {
        Err(e) => {
            d.error(entry.span(), format!("cannot read `{}` (password file): {e}", file.display()))
                .label("unreadable file")
                .help("the file holds `user:hash` lines with bcrypt ($2y$) or argon2 ($argon2id$) hashes, as `htpasswd -B` writes them");
            return None;
        }
        Ok(text) => {
            if let Some((line, why)) = password_file_problem(&text) {
                d.error(entry.span(), format!("{}:{line}: {why}", file.display()))
                    .label("in this password file")
                    .help("only bcrypt (`htpasswd -B`) and argon2 hashes are accepted; MD5, SHA-1 and DES crypt hashes are too weak");
                return None;
            }
        }
    }
    let realm = match props.get("realm") {
        Some(e) => non_empty_string(d, e, BASIC_USAGE)?.to_owned(),
        None => "restricted".to_owned(),
    };
    if realm.contains(['"', '\\']) || realm.chars().any(char::is_control) {
        d.error(
            props.get("realm").map_or(entry.span(), KdlEntry::span),
            "the realm must not contain quotes, backslashes or control characters",
        )
        .label("invalid realm")
        .help("the realm is shown by browsers in the login prompt: write plain text, like realm=\"Staff only\"");
        return None;
    }
    Some(BasicAuthConfig { enabled: true, file, realm })
}

fn read_jwt(d: &mut Diagnostics<'_>, node: &KdlNode) -> Option<JwtConfig> {
    let args = take_args(d, node, Arity::Between(0, 1), JWT_USAGE);
    take_props(d, node, &[], JWT_USAGE);
    let mut config = JwtConfig {
        enabled: true,
        keys: Vec::new(),
        algorithms: Vec::new(),
        issuer: None,
        audience: Vec::new(),
        leeway: Duration::from_secs(60),
        token: TokenSource::Bearer(http::header::AUTHORIZATION),
        claim_headers: Vec::new(),
    };
    if let Some(entry) = args.first() {
        config.enabled = boolean(d, entry)?;
        if !config.enabled {
            return Some(config);
        }
    }
    let mut ok = true;
    let mut once = Once::default();
    for child in children(node) {
        let child_name = name(child);
        if child_name != "claim-header" && JWT_NODES.contains(&child_name) && !once.first(d, child, "in `jwt`") {
            ok = false;
            continue;
        }
        ok &= read_jwt_node(d, child, &mut config);
    }
    if config.keys.is_empty() && ok {
        d.error(name_span(node), "`jwt` needs keys to verify tokens with")
            .label("no keys")
            .help("add `jwks \"file.json\"`, `jwks-url \"https://.../jwks.json\"`, `public-key \"key.pem\"` or `secret-file \"hmac.key\"`");
        ok = false;
    }
    if config.algorithms.is_empty() {
        // Only what the keys can verify: never `none`, never HMAC with a public key.
        let hmac = config.keys.iter().any(|k| matches!(k, JwtKey::Secret(_)));
        let public = config.keys.iter().any(|k| !matches!(k, JwtKey::Secret(_)));
        if hmac {
            config.algorithms.extend(["HS256", "HS384", "HS512"].map(String::from));
        }
        if public {
            config.algorithms.extend(["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"].map(String::from));
        }
    }
    ok.then_some(config)
}

fn read_jwt_node(d: &mut Diagnostics<'_>, child: &KdlNode, config: &mut JwtConfig) -> bool {
    match name(child) {
        "jwks" | "jwks-url" => {
            let url = name(child) == "jwks-url";
            let usage = if url {
                "jwks-url \"https://id.example.com/.well-known/jwks.json\" refresh=\"10m\""
            } else {
                "jwks \"/etc/sluice/jwks.json\" refresh=\"1m\""
            };
            let (args, props) = leaf(d, child, Arity::Exactly(1), &["refresh"], usage);
            let Some(text) = args.first().and_then(|e| non_empty_string(d, e, usage)) else { return false };
            let refresh = match props.get("refresh") {
                Some(e) => match duration(d, e, false) {
                    Some(t) => t,
                    None => return false,
                },
                None if url => Duration::from_secs(600),
                None => Duration::from_secs(60),
            };
            if url {
                let lower = text.to_ascii_lowercase();
                if !(lower.starts_with("http://") || lower.starts_with("https://"))
                    || text.parse::<http::Uri>().is_err()
                {
                    if let Some(e) = args.first() {
                        d.error(e.span(), format!("invalid JWKS URL `{text}`"))
                            .label("not an http(s) URL")
                            .help("write the identity provider's JWKS URL, like \"https://id.example.com/.well-known/jwks.json\"");
                    }
                    return false;
                }
                config.keys.push(JwtKey::JwksUrl { url: text.to_owned(), refresh });
            } else {
                let path = d.path(text);
                if !readable(d, args.first().copied(), &path, "JWKS file") {
                    return false;
                }
                config.keys.push(JwtKey::JwksFile { path, refresh });
            }
            true
        }
        "secret" => {
            let Some(text) = single(d, child, "secret \"...\"").and_then(|e| non_empty_string(d, e, "secret \"...\""))
            else {
                return false;
            };
            if text.len() < 32 {
                d.error(name_span(child), format!("the HMAC secret is {} bytes; at least 32 are needed", text.len()))
                    .label("too short")
                    .help("HS256 keys shorter than the hash (32 bytes) can be brute-forced; generate one with `openssl rand -base64 48`");
                return false;
            }
            config.keys.push(JwtKey::Secret(text.as_bytes().to_vec()));
            true
        }
        "secret-file" | "public-key" => {
            let usage = if name(child) == "public-key" {
                "public-key \"/etc/sluice/idp.pem\""
            } else {
                "secret-file \"/etc/sluice/hmac.key\""
            };
            let Some(entry) = single(d, child, usage) else { return false };
            let Some(text) = non_empty_string(d, entry, usage) else { return false };
            let path = d.path(text);
            if name(child) == "public-key" {
                if !readable(d, Some(entry), &path, "public key") {
                    return false;
                }
                config.keys.push(JwtKey::PublicKey(path));
                return true;
            }
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let secret = bytes.strip_suffix(b"\n").unwrap_or(&bytes).to_vec();
                    if secret.len() < 32 {
                        d.error(
                            entry.span(),
                            format!(
                                "the HMAC secret in `{}` is {} bytes; at least 32 are needed",
                                path.display(),
                                secret.len()
                            ),
                        )
                        .label("too short")
                        .help("generate one with `openssl rand -base64 48 > hmac.key`");
                        return false;
                    }
                    config.keys.push(JwtKey::Secret(secret));
                    true
                }
                Err(e) => {
                    d.error(entry.span(), format!("cannot read `{}` (HMAC secret): {e}", path.display()))
                        .label("unreadable file")
                        .help("check the path and the file's permissions");
                    false
                }
            }
        }
        "algorithms" => {
            let usage = "algorithms \"RS256\" \"ES256\"";
            let (args, _) = leaf(d, child, Arity::AtLeast(1), &[], usage);
            let mut ok = true;
            for e in args {
                match string(d, e, usage) {
                    Some(a) if ALGORITHMS.contains(&a) => config.algorithms.push(a.to_owned()),
                    Some(a) => {
                        let help = if a.eq_ignore_ascii_case("none") {
                            "unsigned tokens (`none`) are never accepted".to_owned()
                        } else {
                            crate::reader::valid_list("supported algorithms", a, ALGORITHMS)
                        };
                        d.error(e.span(), format!("unsupported JWT algorithm `{a}`")).label("not supported").help(help);
                        ok = false;
                    }
                    None => ok = false,
                }
            }
            ok
        }
        "issuer" => match single(d, child, "issuer \"https://id.example.com/\"")
            .and_then(|e| non_empty_string(d, e, "issuer \"...\""))
        {
            Some(i) => {
                config.issuer = Some(i.to_owned());
                true
            }
            None => false,
        },
        "audience" => {
            let usage = "audience \"api\" \"api-v2\"";
            let (args, _) = leaf(d, child, Arity::AtLeast(1), &[], usage);
            let before = config.audience.len();
            config.audience.extend(args.iter().filter_map(|e| non_empty_string(d, e, usage)).map(str::to_owned));
            config.audience.len() - before == args.len()
        }
        "leeway" => match single(d, child, "leeway \"60s\"").and_then(|e| duration(d, e, true)) {
            Some(t) => {
                config.leeway = t;
                true
            }
            None => false,
        },
        "token" => {
            let usage = "token \"header:authorization\" (or \"cookie:NAME\")";
            let Some(entry) = single(d, child, usage) else { return false };
            let Some(text) = non_empty_string(d, entry, usage) else { return false };
            let source = match text.split_once(':') {
                Some(("header", h)) => http::HeaderName::from_bytes(h.as_bytes()).ok().map(TokenSource::Bearer),
                Some(("cookie", c)) if !c.is_empty() => Some(TokenSource::Cookie(c.to_owned())),
                _ => None,
            };
            match source {
                Some(s) => {
                    config.token = s;
                    true
                }
                None => {
                    d.error(entry.span(), format!("invalid token source `{text}`"))
                        .label("not a token source")
                        .help("write \"header:authorization\" (a `Bearer` token in a header) or \"cookie:NAME\"");
                    false
                }
            }
        }
        "claim-header" => {
            let usage = "claim-header \"sub\" \"x-user-id\"";
            let (args, _) = leaf(d, child, Arity::Exactly(2), &[], usage);
            let (Some(claim), Some(header)) = (args.first(), args.get(1)) else { return false };
            let Some(claim) = non_empty_string(d, claim, usage) else { return false };
            let Some(header) = header_name(d, header, usage) else { return false };
            config.claim_headers.push((claim.to_owned(), header));
            true
        }
        _ => {
            unknown_node(d, child, Some("jwt"), JWT_NODES);
            false
        }
    }
}

fn readable(d: &mut Diagnostics<'_>, entry: Option<&KdlEntry>, path: &std::path::Path, what: &str) -> bool {
    match std::fs::metadata(path) {
        Ok(_) => true,
        Err(e) => {
            if let Some(entry) = entry {
                d.error(entry.span(), format!("cannot read `{}` ({what}): {e}", path.display()))
                    .label("unreadable file")
                    .help("check the path and the file's permissions");
            }
            false
        }
    }
}

/// `forward-auth "upstream" path="/verify" { timeout; request-headers; response-headers }`.
fn read_forward(d: &mut Diagnostics<'_>, node: &KdlNode) -> Option<ForwardAuthConfig> {
    let args = take_args(d, node, Arity::Exactly(1), FORWARD_USAGE);
    let props = take_props(d, node, &["path"], FORWARD_USAGE);
    let entry = args.first()?;
    if entry.value().as_bool() == Some(false) {
        return Some(ForwardAuthConfig {
            enabled: false,
            upstream: String::new(),
            path: String::new(),
            timeout: Duration::ZERO,
            request_headers: Vec::new(),
            response_headers: Vec::new(),
        });
    }
    let upstream = non_empty_string(d, entry, FORWARD_USAGE)?.to_owned();
    let path = match props.get("path") {
        Some(e) => {
            let p = non_empty_string(d, e, FORWARD_USAGE)?;
            if !p.starts_with('/') || p.parse::<http::uri::PathAndQuery>().is_err() {
                d.error(e.span(), format!("invalid path `{p}`"))
                    .label("not a path")
                    .help("write the path the authentication service answers on, like path=\"/verify\"");
                return None;
            }
            p.to_owned()
        }
        None => "/".to_owned(),
    };
    let mut config = ForwardAuthConfig {
        enabled: true,
        upstream,
        path,
        timeout: Duration::from_secs(5),
        request_headers: Vec::new(),
        response_headers: Vec::new(),
    };
    let mut ok = true;
    let mut once = Once::default();
    for child in children(node) {
        if FORWARD_NODES.contains(&name(child)) && !once.first(d, child, "in `forward-auth`") {
            ok = false;
            continue;
        }
        match name(child) {
            "timeout" => match single(d, child, "timeout \"5s\"").and_then(|e| duration(d, e, false)) {
                Some(t) => config.timeout = t,
                None => ok = false,
            },
            "request-headers" | "response-headers" => {
                let usage = "response-headers \"x-user\" \"x-email\"";
                let (args, _) = leaf(d, child, Arity::AtLeast(1), &[], usage);
                let names: Vec<http::HeaderName> = args.iter().filter_map(|e| header_name(d, e, usage)).collect();
                ok &= names.len() == args.len();
                if name(child) == "request-headers" {
                    config.request_headers = names;
                } else {
                    config.response_headers = names;
                }
            }
            _ => {
                unknown_node(d, child, Some("forward-auth"), FORWARD_NODES);
                ok = false;
            }
        }
    }
    ok.then_some(config)
}

/// The first line of a password file that is not `user:hash` with a bcrypt or argon2 hash.
fn password_file_problem(text: &str) -> Option<(usize, String)> {
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, rest)) = line.split_once(':') else {
            return Some((n + 1, "expected `user:hash`".to_owned()));
        };
        let hash = rest.split(':').next().unwrap_or("");
        if user.is_empty() {
            return Some((n + 1, "the user name is empty".to_owned()));
        }
        let strong = ["$2y$", "$2b$", "$2a$", "$argon2"].iter().any(|p| hash.starts_with(p));
        if !strong {
            let kind = ["$apr1$", "{SHA}", "$1$", "$5$", "$6$"].into_iter().find(|p| hash.starts_with(p));
            return Some((
                n + 1,
                match kind {
                    Some(p) => format!("user `{user}` has a {p} hash, which is not accepted"),
                    None => format!("user `{user}` has no bcrypt or argon2 hash"),
                },
            ));
        }
    }
    None
}
