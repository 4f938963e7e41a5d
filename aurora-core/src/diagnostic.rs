//! Located, actionable errors about manifests.
//!
//! Every problem a user can fix in a manifest is reported as a [`Diagnostic`]: what is wrong, where
//! (`file:line:column` of the TOML value, plus the JSON pointer into the resolved manifest), what was
//! expected, and how to fix it. Spans point into [`SourceFile`]s kept alive by `Arc` so a diagnostic
//! can be rendered long after parsing.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// The text of one manifest file, kept for rendering diagnostics.
#[derive(Debug)]
pub struct SourceFile {
    /// Path as shown to the user (relative to the current directory when possible).
    pub display: String,
    pub text: String,
}

/// Where a value came from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A byte range in a manifest file.
    File { file: Arc<SourceFile>, span: Range<usize> },
    /// A `--set` override on the command line.
    CommandLine(String),
    /// Produced by resolution itself (e.g. an implicit empty table).
    Derived,
}

impl Origin {
    /// `file:line:column` (1-based), or a description of the origin.
    pub fn describe(&self) -> String {
        match self {
            Origin::File { file, span } => {
                let (line, col) = line_col(&file.text, span.start);
                format!("{}:{line}:{col}", file.display)
            }
            Origin::CommandLine(arg) => format!("command line `--set {arg}`"),
            Origin::Derived => "(derived during resolution)".to_string(),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = text[line_start..offset].chars().count() + 1;
    (line, col)
}

/// One problem in a manifest.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub message: String,
    pub origin: Option<Origin>,
    /// JSON pointer into the resolved manifest, e.g. `/steps/clean/argv`.
    pub pointer: Option<String>,
    pub expected: Option<String>,
    pub help: Option<String>,
    /// A warning does not stop anything; it is shown as `warning:`.
    pub is_warning: bool,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            origin: None,
            pointer: None,
            expected: None,
            help: None,
            is_warning: false,
        }
    }
    /// The same diagnostic as a warning.
    pub fn warning(mut self) -> Self {
        self.is_warning = true;
        self
    }
    pub fn at(mut self, origin: Option<Origin>) -> Self {
        self.origin = origin;
        self
    }
    pub fn pointer(mut self, pointer: impl Into<String>) -> Self {
        self.pointer = Some(pointer.into());
        self
    }
    pub fn expected(mut self, expected: impl Into<String>) -> Self {
        self.expected = Some(expected.into());
        self
    }
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", if self.is_warning { "warning" } else { "error" }, self.message)?;
        // rustc's layout: the gutter is as wide as the line number.
        let mut pad = " ".to_string();
        match &self.origin {
            Some(Origin::File { file, span }) => {
                let (line, col) = line_col(&file.text, span.start);
                pad = " ".repeat(line.to_string().len());
                writeln!(f, "{pad}--> {}:{line}:{col}", file.display)?;
                let line_text = file.text.lines().nth(line - 1).unwrap_or("");
                // Underline the span on its first line only.
                let end = span.end.min(file.text.len()).max(span.start.min(file.text.len()));
                let span_text = &file.text[span.start.min(file.text.len())..end];
                let first_line_len = span_text.split('\n').next().map_or(1, |s| s.chars().count().max(1));
                let room = line_text.chars().count().saturating_sub(col - 1).max(1);
                writeln!(f, "{pad} |")?;
                writeln!(f, "{line} | {line_text}")?;
                writeln!(f, "{pad} | {}{}", " ".repeat(col - 1), "^".repeat(first_line_len.min(room)))?;
            }
            Some(other) => writeln!(f, "{pad}--> {}", other.describe())?,
            None => {}
        }
        if let Some(pointer) = &self.pointer {
            writeln!(f, "{pad} = at: {pointer}")?;
        }
        if let Some(expected) = &self.expected {
            writeln!(f, "{pad} = expected: {expected}")?;
        }
        if let Some(help) = &self.help {
            writeln!(f, "{pad} = help: {help}")?;
        }
        Ok(())
    }
}

/// One or more diagnostics, reported together (a user fixes all of them in one edit).
#[derive(Debug, Clone)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        if self.0.len() > 1 {
            writeln!(f, "\n{} errors in the manifest", self.0.len())?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

/// The closest candidate to `word` by edit distance, if it is close enough to be a plausible typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= (word.len().max(c.len()) / 3).max(1))
        .min()
        .map(|(_, c)| c)
}

/// `did you mean `x`?` help text, or the list of valid choices when nothing is close.
pub fn suggestion(word: &str, candidates: &[&str]) -> String {
    match did_you_mean(word, candidates.iter().copied()) {
        Some(best) => format!("did you mean `{best}`?"),
        None if candidates.is_empty() => "nothing is defined here".to_string(),
        None => format!("valid choices: {}", quoted_list(candidates)),
    }
}

/// "`a`, `b`, `c`"
pub fn quoted_list(items: &[&str]) -> String {
    items.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters_not_bytes() {
        let text = "a = 1\nnimi = \"äö\" x\n";
        let offset = text.find('x').unwrap();
        assert_eq!(line_col(text, offset), (2, 13));
        assert_eq!(line_col(text, 0), (1, 1));
    }

    #[test]
    fn did_you_mean_finds_typos_only() {
        assert_eq!(did_you_mean("argvv", ["argv", "env", "inputs"]), Some("argv"));
        assert_eq!(did_you_mean("exec.comand", ["exec.command", "source.jsonl"]), Some("exec.command"));
        assert_eq!(did_you_mean("zzzzzz", ["argv", "env"]), None);
    }
}
