//! `compress`, `compress #false` or `compress { codings ...; level ...; min-size ...;
//! types ...; decompress ... }`, in a `site` or a `route`.

use kdl::{KdlNode, KdlValue};

use crate::diagnostic::Diagnostics;
use crate::model::{CompressConfig, ContentCoding};
use crate::reader::{
    children, leaf, name, name_span, single, take_args, take_props, unknown_node, valid_list, Arity, Once,
};
use crate::value::{boolean, choice, integer, size, string};

const NODES: &[&str] = &["codings", "level", "min-size", "types", "decompress"];
const CODINGS: &[&str] = &["zstd", "br", "gzip"];
const USAGE: &str = "compress { codings \"zstd\" \"br\" \"gzip\"; level gzip=5 br=4 zstd=3; min-size 256 }";
const CODINGS_USAGE: &str = "codings \"zstd\" \"br\" \"gzip\"";
const LEVEL_USAGE: &str = "level gzip=5 br=4 zstd=3";
const TYPES_USAGE: &str = "types \"text/*\" \"application/json\"";

/// Reads a `compress` node; `None` when something in it is invalid (reported).
pub(super) fn read(d: &mut Diagnostics<'_>, node: &KdlNode) -> Option<CompressConfig> {
    let args = take_args(d, node, Arity::Between(0, 1), USAGE);
    take_props(d, node, &[], USAGE);
    let enabled = args.first().map_or(Some(true), |entry| boolean(d, entry));
    if enabled == Some(false) {
        if let Some(block) = node.children() {
            let span = if !block.span().is_empty() { block.span() } else { node.span() };
            d.error(span, "`compress #false` takes no settings block").label("settings of a disabled compress").help(
                "remove the block to turn compression off, or write `compress { ... }` to compress with these settings",
            );
            return None;
        }
        return Some(CompressConfig::disabled());
    }
    let mut ok = enabled.is_some();
    let mut config = CompressConfig::default();
    let mut once = Once::default();
    for child in children(node) {
        if NODES.contains(&name(child)) && !once.first(d, child, "in `compress`") {
            continue;
        }
        match name(child) {
            "codings" => match read_codings(d, child) {
                Some(codings) => config.codings = codings,
                None => ok = false,
            },
            "level" => ok &= read_levels(d, child, &mut config),
            "min-size" => match single(d, child, "min-size \"1KiB\"").and_then(|entry| size(d, entry)) {
                Some(min_size) => config.min_size = min_size,
                None => ok = false,
            },
            "types" => match read_types(d, child) {
                Some(types) => config.types = types,
                None => ok = false,
            },
            "decompress" => match single(d, child, "decompress #true").and_then(|entry| boolean(d, entry)) {
                Some(decompress) => config.decompress = decompress,
                None => ok = false,
            },
            _ => {
                unknown_node(d, child, Some("compress"), NODES);
                ok = false;
            }
        }
    }
    ok.then_some(config)
}

/// `codings "zstd" "br" "gzip"`: at least one, each once, in order of preference.
fn read_codings(d: &mut Diagnostics<'_>, node: &KdlNode) -> Option<Vec<ContentCoding>> {
    let (args, _) = leaf(d, node, Arity::AtLeast(1), &[], CODINGS_USAGE);
    let mut ok = !args.is_empty();
    let mut codings: Vec<(ContentCoding, miette::SourceSpan)> = Vec::new();
    for entry in args {
        let coding = match choice(d, entry, "coding", CODINGS) {
            Some("zstd") => ContentCoding::Zstd,
            Some("br") => ContentCoding::Brotli,
            Some(_) => ContentCoding::Gzip,
            None => {
                ok = false;
                continue;
            }
        };
        if let Some((_, first)) = codings.iter().find(|(c, _)| *c == coding) {
            d.error(entry.span(), "coding listed twice in `codings`")
                .label("repeated here")
                .also(*first, "first listed here")
                .help("list each coding once, in the order you prefer them");
            ok = false;
            continue;
        }
        codings.push((coding, entry.span()));
    }
    ok.then(|| codings.into_iter().map(|(coding, _)| coding).collect())
}

/// `level gzip=N br=N zstd=N`: at least one; the others keep their defaults. Returns
/// false when something was wrong (reported).
fn read_levels(d: &mut Diagnostics<'_>, node: &KdlNode, config: &mut CompressConfig) -> bool {
    let (_, props) = leaf(d, node, Arity::Exactly(0), &["gzip", "br", "zstd"], LEVEL_USAGE);
    let (gzip, br, zstd) = (props.get("gzip"), props.get("br"), props.get("zstd"));
    if gzip.is_none() && br.is_none() && zstd.is_none() {
        d.error(name_span(node), "`level` needs at least one of gzip=, br=, zstd=")
            .label("no level given")
            .help(format!("write it like: {LEVEL_USAGE}"));
        return false;
    }
    let mut ok = true;
    if let Some(entry) = gzip {
        match integer(d, entry, 1, 9).and_then(|v| u32::try_from(v).ok()) {
            Some(level) => config.gzip_level = level,
            None => ok = false,
        }
    }
    if let Some(entry) = br {
        match integer(d, entry, 0, 11).and_then(|v| u32::try_from(v).ok()) {
            Some(level) => config.brotli_level = level,
            None => ok = false,
        }
    }
    if let Some(entry) = zstd {
        if matches!(entry.value(), KdlValue::Integer(20..=22)) {
            d.error(entry.span(), "zstd levels 20 to 22 are not allowed for HTTP")
                .label("too high")
                .help("they need a window over the 8 MiB that RFC 9659 lets browsers refuse; use 19 or less (3, the default, suits compressing on the fly)");
            ok = false;
        } else {
            match integer(d, entry, 1, 19).and_then(|v| u32::try_from(v).ok()) {
                Some(level) => config.zstd_level = level,
                None => ok = false,
            }
        }
    }
    ok
}

/// `types "text/html" "text/*"`: media types, replacing the default list.
fn read_types(d: &mut Diagnostics<'_>, node: &KdlNode) -> Option<Vec<String>> {
    let (args, _) = leaf(d, node, Arity::AtLeast(1), &[], TYPES_USAGE);
    let mut ok = !args.is_empty();
    let mut types: Vec<String> = Vec::new();
    for entry in args {
        let Some(text) = string(d, entry, TYPES_USAGE) else {
            ok = false;
            continue;
        };
        let Some(media_type) = media_type(text) else {
            let help = if text.contains(';') {
                "write the type without parameters (no `; charset=...`): the charset does not matter here".to_owned()
            } else {
                format!(
                    "write a media type like \"text/html\", or \"text/*\" for every subtype; {}",
                    valid_list("the default types are", text, CompressConfig::DEFAULT_TYPES)
                )
            };
            d.error(entry.span(), format!("invalid media type `{text}`")).label("not a media type").help(help);
            ok = false;
            continue;
        };
        if !types.contains(&media_type) {
            types.push(media_type);
        }
    }
    ok.then_some(types)
}

/// `type/subtype`, `type/*` or `*/*` (tokens, any case), lower-cased.
fn media_type(text: &str) -> Option<String> {
    let (kind, subtype) = text.split_once('/')?;
    let valid = match (kind, subtype) {
        ("*", "*") => true,
        ("*", _) => false,
        (kind, "*") => is_token(kind),
        (kind, subtype) => is_token(kind) && is_token(subtype),
    };
    valid.then(|| text.to_ascii_lowercase())
}

/// An RFC 9110 token: letters, digits and ``!#$%&'*+-.^_`|~``.
fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        assert_eq!(media_type("text/html"), Some("text/html".to_owned()));
        assert_eq!(media_type("Text/*"), Some("text/*".to_owned()));
        assert_eq!(media_type("*/*"), Some("*/*".to_owned()));
        assert_eq!(media_type("application/vnd.api+json"), Some("application/vnd.api+json".to_owned()));
        for bad in ["text", "text/", "/html", "*/html", "text/html; charset=utf-8", "text/ html", "a/b/c", ""] {
            assert_eq!(media_type(bad), None, "{bad:?}");
        }
    }
}
