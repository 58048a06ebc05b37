//! `request-headers { ... }` / `response-headers { ... }` blocks and header name/value checks.

use http::{HeaderName, HeaderValue};
use kdl::{KdlEntry, KdlNode};

use crate::diagnostic::Diagnostics;
use crate::model::{HeaderEdit, HeaderEdits};
use crate::reader::{children, leaf, name, take_args, take_props, unknown_node, Arity};
use crate::value::string;

const EDITS: &[&str] = &["set", "add", "remove"];

/// Reads a header edits block (its arguments, properties and `set`/`add`/`remove` children).
pub(super) fn read_edits(d: &mut Diagnostics<'_>, node: &KdlNode) -> HeaderEdits {
    let block = name(node).to_owned();
    let usage = format!("{block} {{ set \"x-name\" \"value\" }}");
    take_args(d, node, Arity::Exactly(0), &usage);
    take_props(d, node, &[], &usage);
    let mut edits = HeaderEdits::default();
    for child in children(node) {
        match name(child) {
            kind @ ("set" | "add") => {
                let usage = format!("{kind} \"x-name\" \"value\"");
                let (args, _) = leaf(d, child, Arity::Exactly(2), &[], &usage);
                let [name_entry, value_entry] = args.as_slice() else {
                    continue;
                };
                let header = header_name(d, name_entry, &usage);
                let value = header_value(d, value_entry, &usage);
                if let (Some(header), Some(value)) = (header, value) {
                    edits.edits.push(if kind == "set" {
                        HeaderEdit::Set(header, value)
                    } else {
                        HeaderEdit::Add(header, value)
                    });
                }
            }
            "remove" => {
                let usage = "remove \"x-name\" \"x-other\"";
                let (args, _) = leaf(d, child, Arity::AtLeast(1), &[], usage);
                for entry in args {
                    if let Some(header) = header_name(d, entry, usage) {
                        edits.edits.push(HeaderEdit::Remove(header));
                    }
                }
            }
            _ => unknown_node(d, child, Some(&block), EDITS),
        }
    }
    edits
}

/// A header name (any case; stored lower-cased).
pub(super) fn header_name(d: &mut Diagnostics<'_>, entry: &KdlEntry, usage: &str) -> Option<HeaderName> {
    let text = string(d, entry, usage)?;
    match HeaderName::from_bytes(text.as_bytes()) {
        Ok(header) => Some(header),
        Err(_) => {
            d.error(entry.span(), format!("invalid header name `{text}`"))
                .label("not a header name")
                .help("header names are made of letters, digits and !#$%&'*+-.^_`|~ (no spaces or colons)");
            None
        }
    }
}

/// A header value (visible ASCII, spaces and tabs).
pub(super) fn header_value(d: &mut Diagnostics<'_>, entry: &KdlEntry, usage: &str) -> Option<HeaderValue> {
    let text = string(d, entry, usage)?;
    // `http` would accept non-ASCII bytes as obs-text, but clients decode them inconsistently.
    match HeaderValue::from_str(text) {
        Ok(value) if text.is_ascii() => Some(value),
        _ => {
            d.error(entry.span(), format!("invalid header value {text:?}")).label("not a valid header value").help(
                "header values may contain visible ASCII characters, spaces and tabs (no line breaks or non-ASCII)",
            );
            None
        }
    }
}
