//! Helpers shared by the integration tests.

#![allow(dead_code)]

use sluice_config::{parse, Config, ConfigError, Problem};

/// Joins lines with `\n`, so line N of the config is element N-1 and columns are as written.
pub fn lines(lines: &[&str]) -> String {
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// Parses text that must be valid.
pub fn ok(text: &str) -> Config {
    match parse("test.kdl", text) {
        Ok(config) => config,
        Err(err) => panic!("expected a valid config, got:\n{}", err.render(false)),
    }
}

/// Parses text that must be invalid.
pub fn err(text: &str) -> ConfigError {
    match parse("test.kdl", text) {
        Ok(config) => panic!("expected errors, got a config: {config:#?}"),
        Err(err) => err,
    }
}

/// Asserts that some problem's message contains `needle` and is located at `line:column`.
pub fn expect(text: &str, needle: &str, line: usize, column: usize) -> Problem {
    let err = err(text);
    let Some(problem) = err.problems().iter().find(|p| p.message.contains(needle)) else {
        panic!("no problem mentions {needle:?}; got:\n{}", err.render(false));
    };
    assert_eq!((problem.line, problem.column), (line, column), "wrong location for {needle:?}:\n{}", err.render(false));
    problem.clone()
}

/// Like [`expect`], and also asserts it is the only problem.
pub fn expect_only(text: &str, needle: &str, line: usize, column: usize) -> Problem {
    let err = err(text);
    assert_eq!(err.problems().len(), 1, "expected exactly one problem:\n{}", err.render(false));
    expect(text, needle, line, column)
}

/// The help line of a problem (empty if none).
pub fn help(problem: &Problem) -> &str {
    problem.help.as_deref().unwrap_or_default()
}
