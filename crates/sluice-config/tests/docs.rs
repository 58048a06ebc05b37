//! docs/config.md stays true: every KDL example in it (and in docs/security.md) is valid,
//! and the error report it shows is exactly what Sluice prints for the example next to it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use sluice_config::parse;

fn docs() -> String {
    doc("config.md")
}

fn doc(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Contents of every fenced block of the given language, in order.
fn blocks(text: &str, language: &str) -> Vec<String> {
    let fence = format!("```{language}\n");
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let end = body.find("```").expect("unclosed code block");
        found.push(body[..end].to_owned());
        rest = &body[end + 3..];
    }
    found
}

const STUB_LISTENER: &str = "listener \"127.0.0.1:1\" name=\"public\"\n";
const STUB_UPSTREAM: &str = "upstream \"origins\" { server \"127.0.0.1:2\"; }\n";

/// Puts a fragment (a route, an action, a header block ...) into a minimal complete file.
fn complete(example: &str) -> String {
    let first = example.split_whitespace().next().unwrap_or_default();
    let defines = |what: &str| example.contains(what);
    let listener = if defines("listener \"") { "" } else { STUB_LISTENER };
    let upstream = if defines("upstream \"") { "" } else { STUB_UPSTREAM };
    match first {
        "server" | "listener" | "upstream" | "site" | "//" => {
            format!("{listener}{upstream}{example}")
        }
        "route" => format!("{listener}{upstream}site \"*\" {{\n{example}}}\n"),
        "request-headers" | "response-headers" | "rate-limit" => {
            format!("{listener}site \"*\" {{\n{example}route \"/\" {{ respond 200; }}\n}}\n")
        }
        "proxy" | "respond" | "redirect" => {
            format!("{listener}{upstream}site \"*\" {{ route \"/\" {{\n{example}}}\n}}\n")
        }
        other => panic!("no rule to complete an example starting with `{other}`:\n{example}"),
    }
}

#[test]
fn every_kdl_example_in_the_docs_is_valid() {
    let docs = docs();
    let examples = blocks(&docs, "kdl");
    assert!(examples.len() >= 10, "found only {} examples", examples.len());
    let security = blocks(&doc("security.md"), "kdl");
    assert!(security.len() >= 10, "found only {} examples in security.md", security.len());
    for example in examples.into_iter().chain(security) {
        if example.contains("max-conections") {
            continue; // the deliberately broken example, checked below
        }
        let text = complete(&example);
        if let Err(err) = parse("docs.kdl", &text) {
            // Certificate, key and document-root files named in the examples do not exist
            // here; every other problem is a real mistake in the docs.
            let missing_file = |m: &str| m.starts_with("cannot read `") || m.starts_with("cannot open the directory `");
            if !err.problems().iter().all(|p| missing_file(&p.message)) {
                panic!("example is invalid:\n{text}\n{}", err.render(false));
            }
        }
    }
}

#[test]
fn the_documented_error_report_is_what_sluice_prints() {
    let docs = docs();
    let broken = blocks(&docs, "kdl").into_iter().find(|b| b.contains("max-conections")).expect("broken example");
    let err = parse("sluice.kdl", &broken).unwrap_err();
    let rendered = err.render(false);
    let shown = blocks(&docs, "text").into_iter().find(|b| b.contains("max-conections")).expect("report block");
    assert_eq!(shown, rendered, "update docs/config.md with:\n{rendered}");
}

#[test]
fn the_complete_example_uses_every_section() {
    let docs = docs();
    let example = blocks(&docs, "kdl").into_iter().find(|b| b.starts_with("server {\n    worker-threads 4")).unwrap();
    let config = parse("example.kdl", &example).unwrap();
    assert_eq!(config.listeners.len(), 2);
    assert_eq!(config.upstreams.len(), 1);
    assert_eq!(config.sites[0].routes.len(), 3);
}
