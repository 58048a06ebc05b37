//! Checks the shape of KDL nodes: arguments, properties, children, repeats, unknown names.
//!
//! Section readers describe what a node may hold and these helpers report everything that
//! does not fit, so "unknown key" is always an error with the list of valid keys.

use kdl::{KdlEntry, KdlNode};
use miette::SourceSpan;

use crate::diagnostic::Diagnostics;

/// The node's name as written.
pub(crate) fn name(node: &KdlNode) -> &str {
    node.name().value()
}

/// Span of the node's name: where "missing argument" and "unknown node" point.
pub(crate) fn name_span(node: &KdlNode) -> SourceSpan {
    node.name().span()
}

/// The node's children, or nothing.
pub(crate) fn children(node: &KdlNode) -> &[KdlNode] {
    node.children().map_or(&[], |doc| doc.nodes())
}

/// Positional arguments in order.
pub(crate) fn args(node: &KdlNode) -> impl Iterator<Item = &KdlEntry> {
    node.entries().iter().filter(|e| e.name().is_none())
}

/// How many positional arguments a node takes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arity {
    /// Exactly this many.
    Exactly(usize),
    /// Between the two, inclusive.
    Between(usize, usize),
    /// This many or more.
    AtLeast(usize),
}

impl Arity {
    fn bounds(self) -> (usize, usize) {
        match self {
            Arity::Exactly(n) => (n, n),
            Arity::Between(min, max) => (min, max),
            Arity::AtLeast(min) => (min, usize::MAX),
        }
    }
}

/// Reports missing and extra positional arguments; returns the accepted ones.
///
/// `usage` is an example of the node written correctly, shown as help.
pub(crate) fn take_args<'a>(
    d: &mut Diagnostics<'_>,
    node: &'a KdlNode,
    arity: Arity,
    usage: &str,
) -> Vec<&'a KdlEntry> {
    let (min, max) = arity.bounds();
    let all: Vec<&KdlEntry> = args(node).collect();
    let node_name = name(node);
    if all.len() < min {
        let message = match (min, all.len()) {
            (1, _) => format!("`{node_name}` needs an argument"),
            (_, 0) => format!("`{node_name}` needs {min} arguments"),
            (_, found) => format!("`{node_name}` needs {min} arguments, found {found}"),
        };
        d.error(name_span(node), message).label("missing argument").help(format!("write it like: {usage}"));
    }
    if all.len() > max {
        let extra = &all[max..];
        let span = cover(extra[0].span(), extra[extra.len() - 1].span());
        let message = if max == 0 {
            format!("`{node_name}` takes no arguments")
        } else {
            format!("unexpected extra argument to `{node_name}`")
        };
        d.error(span, message).label("not expected here").help(format!("write it like: {usage}"));
    }
    all.into_iter().take(max).collect()
}

/// The accepted properties of a node, by name.
#[derive(Debug, Default)]
pub(crate) struct Props<'a> {
    entries: Vec<(&'a str, &'a KdlEntry)>,
}

impl<'a> Props<'a> {
    /// The property's entry, if given.
    pub(crate) fn get(&self, key: &str) -> Option<&'a KdlEntry> {
        self.entries.iter().find(|(k, _)| *k == key).map(|(_, e)| *e)
    }
}

/// Reports unknown and repeated properties; returns the known ones (first of repeats).
pub(crate) fn take_props<'a>(d: &mut Diagnostics<'_>, node: &'a KdlNode, allowed: &[&str], usage: &str) -> Props<'a> {
    let mut props = Props::default();
    let node_name = name(node);
    for entry in node.entries() {
        let Some(key) = entry.name() else { continue };
        let key_text = key.value();
        if !allowed.contains(&key_text) {
            let message = format!("unknown property `{key_text}` on `{node_name}`");
            let help = if allowed.is_empty() {
                format!("`{node_name}` takes no properties; write it like: {usage}")
            } else {
                valid_list("valid properties", key_text, allowed)
            };
            d.error(entry.span(), message).label("unknown property").help(help);
            continue;
        }
        if let Some(first) = props.get(key_text) {
            d.error(entry.span(), format!("property `{key_text}` given twice on `{node_name}`"))
                .label("repeated here")
                .also(first.span(), "first given here")
                .help("remove one of them");
            continue;
        }
        props.entries.push((key_text, entry));
    }
    props
}

/// Reports a children block on a node that takes none.
pub(crate) fn no_children(d: &mut Diagnostics<'_>, node: &KdlNode) {
    if let Some(block) = node.children() {
        let span = if !block.span().is_empty() { block.span() } else { node.span() };
        d.error(span, format!("`{}` does not take a children block", name(node)))
            .label("unexpected block")
            .help("remove the `{ ... }` block");
    }
}

/// A node that only carries arguments and properties: checks all three parts at once.
pub(crate) fn leaf<'a>(
    d: &mut Diagnostics<'_>,
    node: &'a KdlNode,
    arity: Arity,
    allowed_props: &[&str],
    usage: &str,
) -> (Vec<&'a KdlEntry>, Props<'a>) {
    let args = take_args(d, node, arity, usage);
    let props = take_props(d, node, allowed_props, usage);
    no_children(d, node);
    (args, props)
}

/// A node with exactly one argument, no properties and no children; returns the argument.
pub(crate) fn single<'a>(d: &mut Diagnostics<'_>, node: &'a KdlNode, usage: &str) -> Option<&'a KdlEntry> {
    leaf(d, node, Arity::Exactly(1), &[], usage).0.into_iter().next()
}

/// Reports a child node whose name is not one of `valid`.
///
/// `parent` is the enclosing node's name, or `None` at the top level.
pub(crate) fn unknown_node(d: &mut Diagnostics<'_>, node: &KdlNode, parent: Option<&str>, valid: &[&str]) {
    let node_name = name(node);
    let message = match parent {
        Some(parent) => format!("unknown node `{node_name}` in `{parent}`"),
        None => format!("unknown top-level node `{node_name}`"),
    };
    d.error(name_span(node), message).label("unknown node").help(valid_list("valid nodes here", node_name, valid));
}

/// Remembers which once-only nodes of a block were seen.
#[derive(Debug, Default)]
pub(crate) struct Once {
    seen: Vec<(String, SourceSpan)>,
}

impl Once {
    /// True the first time a node name is seen; reports a duplicate otherwise.
    ///
    /// `place` describes the block for the message ("in `upstream`", "at the top level").
    pub(crate) fn first(&mut self, d: &mut Diagnostics<'_>, node: &KdlNode, place: &str) -> bool {
        let node_name = name(node);
        if let Some((_, first)) = self.seen.iter().find(|(seen, _)| seen == node_name) {
            let line = d.line_of(*first);
            d.error(name_span(node), format!("`{node_name}` given twice {place}"))
                .label("repeated here")
                .also(*first, "first given here")
                .help(format!("`{node_name}` may appear only once {place}; remove this one or the one at line {line}"));
            return false;
        }
        self.seen.push((node_name.to_owned(), name_span(node)));
        true
    }
}

/// "valid X: a, b, c", preceded by "did you mean `b`?" when `word` is a near miss.
pub(crate) fn valid_list(what: &str, word: &str, valid: &[&str]) -> String {
    let list = valid.join(", ");
    match closest(word, valid) {
        Some(guess) => format!("did you mean `{guess}`? {what}: {list}"),
        None => format!("{what}: {list}"),
    }
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a typo.
pub(crate) fn closest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (edit_distance(&word.to_lowercase(), &c.to_lowercase()), *c))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// Edit distance over chars where inserting, deleting, replacing or swapping two neighbours
/// costs one (optimal string alignment), so `nmae` is one typo away from `name`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut table: Vec<usize> = vec![0; (a.len() + 1) * width];
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            table[i * width + j] = if i == 0 || j == 0 {
                i + j
            } else {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut best = (table[(i - 1) * width + j] + 1)
                    .min(table[i * width + j - 1] + 1)
                    .min(table[(i - 1) * width + j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    best = best.min(table[(i - 2) * width + j - 2] + 1);
                }
                best
            };
        }
    }
    table[a.len() * width + b.len()]
}

/// The smallest span covering both.
pub(crate) fn cover(first: SourceSpan, last: SourceSpan) -> SourceSpan {
    let start = first.offset().min(last.offset());
    let end = (first.offset() + first.len()).max(last.offset() + last.len());
    SourceSpan::new(start.into(), end - start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
        assert_eq!(edit_distance("nmae", "name"), 1);
    }

    #[test]
    fn closest_suggests_only_near_misses() {
        let valid = ["max-connections", "max-header-size", "h2c"];
        assert_eq!(closest("max-conections", &valid), Some("max-connections"));
        assert_eq!(closest("h2", &valid), Some("h2c"));
        assert_eq!(closest("completely-different", &valid), None);
    }
}
