//! Problems found in a config file, and how they are shown to people.
//!
//! Every stage (KDL syntax, node shapes, values, cross-references) pushes [`Problem`]s into
//! one [`Diagnostics`] collector instead of returning at the first mistake, so a single
//! `sluice check` run lists everything that is wrong. [`ConfigError`] owns the collected
//! problems together with the source text, which is what lets it draw rustc-style snippets.

use std::fmt;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceCode, SourceSpan};

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Problem {
    /// What is wrong, in one sentence.
    pub message: String,
    /// How to fix it, when there is something useful to say.
    pub help: Option<String>,
    /// 1-based line of the offending text; 0 when the problem has no location.
    pub line: usize,
    /// 1-based column (in bytes, like the rendered `[file:line:col]` header); 0 when the
    /// problem has no location.
    pub column: usize,
    /// Labelled spans; the first one is the primary location.
    labels: Vec<(SourceSpan, String)>,
}

impl Problem {
    fn new(message: String, labels: Vec<(SourceSpan, String)>) -> Self {
        Self { message, help: None, line: 0, column: 0, labels }
    }

    /// Byte range of the offending text in the source, if the problem has a location.
    pub fn span(&self) -> Option<std::ops::Range<usize>> {
        self.labels.first().map(|(span, _)| span.offset()..span.offset() + span.len())
    }

    /// Sets the text written under the primary span.
    pub(crate) fn label(&mut self, label: impl Into<String>) -> &mut Self {
        if let Some(primary) = self.labels.first_mut() {
            primary.1 = label.into();
        }
        self
    }

    /// Sets the help line.
    pub(crate) fn help(&mut self, help: impl Into<String>) -> &mut Self {
        self.help = Some(help.into());
        self
    }

    /// Adds a secondary labelled span (for example "first defined here").
    pub(crate) fn also(&mut self, span: SourceSpan, label: impl Into<String>) -> &mut Self {
        if !self.labels.is_empty() {
            self.labels.push((span, label.into()));
        }
        self
    }
}

impl Diagnostic for Problem {
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|help| Box::new(help) as Box<dyn fmt::Display>)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() {
            return None;
        }
        Some(Box::new(self.labels.iter().enumerate().map(|(i, (span, label))| {
            let label = (!label.is_empty()).then(|| label.clone());
            if i == 0 {
                LabeledSpan::new_primary_with_span(label, *span)
            } else {
                LabeledSpan::new_with_span(label, *span)
            }
        })))
    }
}

/// Everything wrong with one config file.
///
/// `Display` gives a one-line summary ("3 errors in sluice.kdl"); [`ConfigError::render`]
/// gives the full report with source snippets.
#[derive(Debug, Clone)]
pub struct ConfigError {
    source: NamedSource<String>,
    problems: Vec<Problem>,
}

impl ConfigError {
    /// Every problem found, in source order (problems without a location come last).
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Name of the file the problems were found in, as given to [`crate::parse`].
    pub fn file_name(&self) -> &str {
        self.source.name()
    }

    /// A rustc-style report of every problem: `[file:line:col]`, the source snippet with the
    /// offending span underlined and labelled, and a help line. `color` selects ANSI colors.
    pub fn render(&self, color: bool) -> String {
        let theme = if color { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
        // No wrapping: a help line split over two lines is harder to grep for and to read.
        let handler = GraphicalReportHandler::new_themed(theme).with_wrap_lines(false);
        let mut out = String::new();
        for problem in &self.problems {
            let report = ProblemReport { problem, source: &self.source };
            let mut one = String::new();
            if handler.render_report(&mut one, &report).is_err() {
                one = self.render_plain(problem);
            }
            out.push_str(&one);
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out.push('\n');
        }
        out.push_str(&format!("{}\n", self.summary()));
        out
    }

    /// Fallback used if miette cannot draw a snippet (it never should: spans are clamped).
    fn render_plain(&self, problem: &Problem) -> String {
        let mut out = format!("error: {}\n", problem.message);
        if problem.line > 0 {
            out.push_str(&format!("  --> {}:{}:{}\n", self.file_name(), problem.line, problem.column));
        }
        if let Some(help) = &problem.help {
            out.push_str(&format!("  help: {help}\n"));
        }
        out
    }

    fn summary(&self) -> String {
        let count = self.problems.len();
        let noun = if count == 1 { "error" } else { "errors" };
        format!("{count} {noun} in {}", self.file_name())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())?;
        if let [only] = self.problems.as_slice() {
            write!(f, ": {}", only.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Diagnostic for ConfigError {
    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(&self.source)
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        Some(Box::new(self.problems.iter().map(|p| p as &dyn Diagnostic)))
    }
}

/// One problem plus the file it refers to, so miette can render it on its own.
#[derive(Debug)]
struct ProblemReport<'a> {
    problem: &'a Problem,
    source: &'a NamedSource<String>,
}

impl fmt::Display for ProblemReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.problem, f)
    }
}

impl std::error::Error for ProblemReport<'_> {}

impl Diagnostic for ProblemReport<'_> {
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.problem.help()
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.problem.labels()
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(self.source)
    }
}

/// Collects problems while a file is read; turned into a [`ConfigError`] at the end.
#[derive(Debug)]
pub(crate) struct Diagnostics<'t> {
    text: &'t str,
    problems: Vec<Problem>,
    warnings: Vec<(SourceSpan, String)>,
    base: std::path::PathBuf,
}

impl<'t> Diagnostics<'t> {
    /// A collector for problems in `text`; relative file paths in it are resolved from `base`.
    pub(crate) fn new(text: &'t str, base: std::path::PathBuf) -> Self {
        Self { text, problems: Vec::new(), warnings: Vec::new(), base }
    }

    /// A path named in the file: absolute as written, or relative to the file's directory.
    pub(crate) fn path(&self, written: &str) -> std::path::PathBuf {
        let path = std::path::Path::new(written);
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base.join(path)
        }
    }

    /// Records something allowed but probably wrong (it does not fail the file).
    pub(crate) fn warning(&mut self, span: SourceSpan, message: impl Into<String>) {
        let span = self.clamp(span);
        self.warnings.push((span, message.into()));
    }

    /// The warnings as `file:line:col: message` lines.
    pub(crate) fn take_warnings(&mut self, file_name: &str) -> Vec<String> {
        let text = self.text;
        std::mem::take(&mut self.warnings)
            .into_iter()
            .map(|(span, message)| {
                let (line, col) = line_col(text, span.offset());
                format!("{file_name}:{line}:{col}: {message}")
            })
            .collect()
    }

    /// Records a problem at `span`; the returned handle adds a label, help and more spans.
    pub(crate) fn error(&mut self, span: SourceSpan, message: impl Into<String>) -> &mut Problem {
        let span = self.clamp(span);
        self.push(Problem::new(message.into(), vec![(span, String::new())]))
    }

    /// Records a problem that belongs to the file as a whole.
    pub(crate) fn error_unlocated(&mut self, message: impl Into<String>) -> &mut Problem {
        self.push(Problem::new(message.into(), Vec::new()))
    }

    fn push(&mut self, problem: Problem) -> &mut Problem {
        self.problems.push(problem);
        let last = self.problems.len() - 1;
        &mut self.problems[last]
    }

    /// True once any problem was recorded.
    pub(crate) fn has_errors(&self) -> bool {
        !self.problems.is_empty()
    }

    /// 1-based line of a span's start, for messages like "first defined at line 3".
    pub(crate) fn line_of(&self, span: SourceSpan) -> usize {
        line_col(self.text, span.offset()).0
    }

    /// Spans from the KDL parser can point one past the end of the text (an unclosed block);
    /// miette refuses to draw those, so pull them back inside.
    fn clamp(&self, span: SourceSpan) -> SourceSpan {
        let len = self.text.len();
        let offset = span.offset().min(len);
        let length = span.len().min(len - offset);
        if length == 0 && offset == len && offset > 0 {
            // Point at the last character rather than at nothing after it.
            let start = self.text[..offset].char_indices().next_back().map_or(0, |(i, _)| i);
            return SourceSpan::new(start.into(), offset - start);
        }
        SourceSpan::new(offset.into(), length)
    }

    /// Wraps the collected problems (sorted by location) with the source text.
    pub(crate) fn into_error(self, file_name: &str) -> ConfigError {
        let text = self.text;
        let mut problems = self.problems;
        for problem in &mut problems {
            if let Some(range) = problem.span() {
                (problem.line, problem.column) = line_col(text, range.start);
            }
        }
        problems.sort_by_key(|p| p.span().map_or(usize::MAX, |range| range.start));
        problems.dedup();
        ConfigError { source: NamedSource::new(file_name, text.to_owned()), problems }
    }
}

/// A problem about a file that could not be read at all (no text to point into).
pub(crate) fn unreadable(file_name: &str, message: String, help: Option<String>) -> ConfigError {
    let mut problem = Problem::new(message, Vec::new());
    problem.help = help;
    ConfigError { source: NamedSource::new(file_name, String::new()), problems: vec![problem] }
}

/// 1-based line and byte column of `offset`, counted like miette's snippet header.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    (line, offset - line_start + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let text = "ab\ncd\r\nef";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 4), (2, 2));
        assert_eq!(line_col(text, 7), (3, 1));
    }

    #[test]
    fn spans_past_the_end_are_pulled_back() {
        let mut d = Diagnostics::new("a {", std::path::PathBuf::new());
        d.error(SourceSpan::new(3.into(), 1), "unclosed");
        let err = d.into_error("x.kdl");
        assert_eq!(err.problems()[0].span(), Some(2..3));
        assert_eq!((err.problems()[0].line, err.problems()[0].column), (1, 3));
    }
}
