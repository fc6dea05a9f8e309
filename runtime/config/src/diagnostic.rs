//! Positions and the diagnostics that carry them.

use std::fmt;
use std::sync::Arc;

/// Where a piece of configuration came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A file (or any named text source); the name is shown as given.
    File(Arc<str>),
    /// A `--set path=value` override; holds the whole `path=value` text.
    Set(String),
    /// Synthesized by code, e.g. a default or a node built programmatically.
    Unknown,
}

/// A 1-based line and column inside an [`Origin`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pos {
    /// The source of the text.
    pub origin: Origin,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
}

impl Pos {
    /// A position inside a file-like origin.
    pub fn file(name: &Arc<str>, line: usize, column: usize) -> Self {
        Pos {
            origin: Origin::File(name.clone()),
            line,
            column,
        }
    }

    /// The position of everything that came from one `--set` override.
    pub fn set(text: &str) -> Self {
        Pos {
            origin: Origin::Set(text.to_string()),
            line: 1,
            column: 1,
        }
    }

    /// A position for values that have no source text.
    pub fn unknown() -> Self {
        Pos {
            origin: Origin::Unknown,
            line: 0,
            column: 0,
        }
    }

    // File positions come first (by line), overrides after them in the order
    // given, so sorted output reads top to bottom like the file.
    fn sort_key(&self) -> (u8, &str, usize, usize) {
        match &self.origin {
            Origin::File(name) => (0, name, self.line, self.column),
            Origin::Set(_) => (1, "", 0, 0),
            Origin::Unknown => (2, "", 0, 0),
        }
    }
}

impl Default for Pos {
    fn default() -> Self {
        Pos::unknown()
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::File(name) => write!(f, "{}:{}:{}", name, self.line, self.column),
            Origin::Set(text) => write!(f, "--set {text}"),
            Origin::Unknown => f.write_str("<unknown>"),
        }
    }
}

/// How bad a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// The pipeline cannot run.
    Error,
    /// The pipeline can run but probably does not do what was meant.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One positioned problem, displayed as `file:line:column: error: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: {severity}: {message}")]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Where the problem is.
    pub pos: Pos,
    /// What the problem is, without position or severity.
    pub message: String,
}

impl Diagnostic {
    /// An error at `pos`.
    pub fn error(pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            pos,
            message: message.into(),
        }
    }

    /// A warning at `pos`.
    pub fn warning(pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            pos,
            message: message.into(),
        }
    }

    /// Whether this is an error (as opposed to a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// A list of diagnostics; displayed one per line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// An empty list.
    pub fn new() -> Self {
        Diagnostics(Vec::new())
    }

    /// Whether any entry is an error.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }

    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.is_error())
    }

    /// The warnings only.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| !d.is_error())
    }

    /// Append one diagnostic.
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    /// Append an error at `pos`.
    pub fn error(&mut self, pos: &Pos, message: impl Into<String>) {
        self.0.push(Diagnostic::error(pos.clone(), message));
    }

    /// Append a warning at `pos`.
    pub fn warning(&mut self, pos: &Pos, message: impl Into<String>) {
        self.0.push(Diagnostic::warning(pos.clone(), message));
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Iterate over all entries.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// Order by position (file positions by line and column, then `--set`
    /// overrides); entries at the same place keep their relative order.
    pub fn sort(&mut self) {
        self.0
            .sort_by(|a, b| a.pos.sort_key().cmp(&b.pos.sort_key()));
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
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

impl From<Vec<Diagnostic>> for Diagnostics {
    fn from(v: Vec<Diagnostic>) -> Self {
        Diagnostics(v)
    }
}

impl Extend<Diagnostic> for Diagnostics {
    fn extend<I: IntoIterator<Item = Diagnostic>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

impl FromIterator<Diagnostic> for Diagnostics {
    fn from_iter<I: IntoIterator<Item = Diagnostic>>(iter: I) -> Self {
        Diagnostics(iter.into_iter().collect())
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_formats() {
        let name: Arc<str> = Arc::from("pipeline.yaml");
        let d = Diagnostic::error(Pos::file(&name, 12, 5), "unknown field `x`");
        assert_eq!(
            d.to_string(),
            "pipeline.yaml:12:5: error: unknown field `x`"
        );
        let w = Diagnostic::warning(Pos::set("stages.x.replicas=abc"), "bad");
        assert_eq!(w.to_string(), "--set stages.x.replicas=abc: warning: bad");
        let all = Diagnostics(vec![d, w]);
        assert!(all.has_errors());
        assert_eq!(all.to_string().lines().count(), 2);
    }

    #[test]
    fn sort_puts_file_lines_first() {
        let name: Arc<str> = Arc::from("p.yaml");
        let mut all = Diagnostics(vec![
            Diagnostic::error(Pos::set("a=1"), "s"),
            Diagnostic::error(Pos::file(&name, 9, 1), "b"),
            Diagnostic::error(Pos::file(&name, 2, 7), "a"),
        ]);
        all.sort();
        let msgs: Vec<_> = all.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(msgs, ["a", "b", "s"]);
    }
}
