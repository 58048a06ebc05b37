//! How problems are reported: several at once, rendered rustc-style with `file:line:col`,
//! the offending source line, a label and a help line; unreadable files name the path.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use common::{err, lines};
use sluice_config::{load, parse};

#[test]
fn render_shows_location_source_line_label_and_help() {
    let text = lines(&[r#"listener "127.0.0.1:8080" {"#, r#"    keepalive-timeout "75""#, r#"    h2c "no""#, "}"]);
    let err = err(&text);
    let report = err.render(false);
    assert!(report.contains("test.kdl:3:9"), "{report}");
    assert!(report.contains(r#"    h2c "no""#), "{report}");
    assert!(report.contains("expected a boolean (#true or #false), found a string (\"no\")"), "{report}");
    assert!(report.contains("not a boolean"), "{report}");
    assert!(report.contains("help: write #true or #false"), "{report}");
    assert!(report.ends_with("1 error in test.kdl\n"), "{report}");
    assert!(!report.contains('\u{1b}'), "no color codes expected:\n{report}");
}

#[test]
fn render_with_color_uses_ansi_codes() {
    let err = err("listener \"127.0.0.1\"\n");
    assert!(err.render(true).contains('\u{1b}'));
}

#[test]
fn several_problems_from_every_stage_are_reported_together() {
    let text = lines(&[
        "server {",
        "    worker-threads 0",
        "    threads 4",
        "}",
        r#"listener "127.0.0.1:8080" name="public""#,
        r#"listener "127.0.0.1:8080""#,
        r#"upstream "origins" { server "origin.internal:80"; protocol "h3"; }"#,
        r#"site "*" {"#,
        r#"    listen "public" "internal""#,
        r#"    route "/api" { proxy "api"; }"#,
        r#"    route "health" { respond 200; }"#,
        "}",
    ]);
    let err = err(&text);
    let located: Vec<(usize, usize)> = err.problems().iter().map(|p| (p.line, p.column)).collect();
    assert_eq!(located, vec![(2, 20), (3, 5), (6, 10), (7, 60), (9, 21), (10, 26), (11, 11)], "{}", err.render(false));
    let report = err.render(false);
    for (line, column) in located {
        assert!(report.contains(&format!("test.kdl:{line}:{column}]")), "missing {line}:{column} in\n{report}");
    }
    assert_eq!(err.to_string(), "7 errors in test.kdl");
    assert!(report.ends_with("7 errors in test.kdl\n"));
}

#[test]
fn syntax_error_report_is_located() {
    let err = parse("broken.kdl", "listener \"127.0.0.1:8080\" {\n    h2c true\n").unwrap_err();
    let report = err.render(false);
    assert!(err.problems().iter().all(|p| p.line > 0 && p.message.starts_with("syntax error")), "{report}");
    assert!(report.contains("broken.kdl:"), "{report}");
    assert!(report.contains("KDL"), "{report}");
}

#[test]
fn error_implements_diagnostic_with_every_problem_related() {
    use miette::Diagnostic;
    let err = err(&lines(&["listener \"a\"", "listener \"b\""]));
    assert_eq!(err.related().map(Iterator::count), Some(2));
    assert!(err.source_code().is_some());
    let boxed: Box<dyn std::error::Error> = Box::new(err);
    assert_eq!(boxed.to_string(), "2 errors in test.kdl");
}

#[test]
fn error_can_cross_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<sluice_config::ConfigError>();
}

#[test]
fn a_single_problem_is_spelled_out_in_display() {
    let err = err("");
    assert_eq!(err.to_string(), "1 error in test.kdl: no listener defined");
    assert_eq!(err.file_name(), "test.kdl");
}

#[test]
fn load_of_a_missing_file_names_the_path() {
    let path = PathBuf::from("/nonexistent/sluice-config-test/sluice.kdl");
    let err = load(&path).unwrap_err();
    assert_eq!(err.problems().len(), 1);
    let problem = &err.problems()[0];
    assert!(problem.message.contains("cannot read config file `/nonexistent/sluice-config-test/sluice.kdl`"));
    assert_eq!((problem.line, problem.column), (0, 0));
    assert!(err.to_string().contains("/nonexistent/sluice-config-test/sluice.kdl"));
    let report = err.render(false);
    assert!(report.contains("cannot read config file"), "{report}");
    assert!(report.contains("check the path"), "{report}");
}

/// A file in the temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> Self {
        let path = std::env::temp_dir().join(format!("sluice-config-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn load_reads_and_parses_a_file() {
    let file = TempFile::new("ok.kdl", "listener \"127.0.0.1:8080\"\n");
    let config = load(&file.0).unwrap();
    assert_eq!(config.listeners.len(), 1);
}

#[test]
fn load_reports_problems_against_the_path() {
    let file = TempFile::new("bad.kdl", "listener \"127.0.0.1:8080\" {\n    h2c 1\n}\n");
    let err = load(&file.0).unwrap_err();
    let report = err.render(false);
    assert!(report.contains(&format!("{}:2:9", file.0.display())), "{report}");
}
