//! Sluice's configuration: KDL text in, a validated [`Config`] out.
//!
//! Reading happens in two layers. The `sections` layer walks the KDL tree node by node,
//! checking shapes and values while keeping source spans; `validate` then checks what needs
//! the whole file (names that must resolve or must not clash) and assembles the plain-data
//! [`model`]. The engine only ever sees the model, never KDL.
//!
//! Problems are collected rather than returned one at a time, so a single run reports all
//! of them, each pointing at `file:line:column` with a snippet and a hint:
//!
//! ```
//! let err = sluice_config::parse("sluice.kdl", "listener \"127.0.0.1\"\n").unwrap_err();
//! assert_eq!(err.problems()[0].line, 1);
//! assert!(err.render(false).contains("sluice.kdl:1:10"));
//! ```
//!
//! The language itself is documented in `docs/config.md`.

pub mod model;

mod diagnostic;
mod reader;
mod sections;
mod tls_files;
mod validate;
mod value;

use std::path::Path;

pub use diagnostic::{ConfigError, Problem};
pub use model::*;

use diagnostic::Diagnostics;

/// Parses and validates config text. `file_name` is only used in error reports.
///
/// Relative paths in the text (certificates, keys, CA bundles) are resolved from the
/// directory part of `file_name`, so a config loaded from a file finds files next to it.
pub fn parse(file_name: &str, text: &str) -> Result<Config, ConfigError> {
    let base = Path::new(file_name).parent().map(Path::to_path_buf).unwrap_or_default();
    let mut d = Diagnostics::new(text, base);
    let doc = match kdl::KdlDocument::parse_v2(text) {
        Ok(doc) => doc,
        Err(err) => {
            for problem in &err.diagnostics {
                let message = problem.message.as_deref().unwrap_or("invalid KDL");
                let help = problem.help.clone().unwrap_or_else(|| {
                    "the config file is KDL v2: strings are quoted, booleans are #true and #false, blocks are closed with `}`".to_owned()
                });
                d.error(problem.span, format!("syntax error: {message}")).label("here").help(help);
            }
            return Err(d.into_error(file_name));
        }
    };
    let raw = sections::read_document(&mut d, &doc);
    let mut config = validate::validate(&mut d, raw);
    if d.has_errors() {
        return Err(d.into_error(file_name));
    }
    config.warnings = d.take_warnings(file_name);
    Ok(config)
}

/// Reads and parses a config file. A file that cannot be read is reported as a
/// [`ConfigError`] naming the path.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file_name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&file_name, &text),
        Err(err) => {
            let help = match err.kind() {
                std::io::ErrorKind::NotFound => Some("check the path; no file exists there".to_owned()),
                std::io::ErrorKind::PermissionDenied => {
                    Some("the file exists but this user may not read it; check its permissions".to_owned())
                }
                std::io::ErrorKind::InvalidData => Some("the config file must be UTF-8 text".to_owned()),
                _ => None,
            };
            Err(diagnostic::unreadable(&file_name, format!("cannot read config file `{file_name}`: {err}"), help))
        }
    }
}
