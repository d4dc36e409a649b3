//! Manifest diagnostics: `FILE:LINE:COLUMN: field.path: message`.

use std::fmt;

use super::yaml::Pos;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The manifests are invalid; nothing may be applied.
    Error,
    /// Valid, but probably not what the operator meant.
    Warning,
}

/// One problem in one manifest file, at one place.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// File as given on the command line (or joined to the directory given).
    pub file: String,
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub column: u32,
    /// Field path inside the document, e.g. `spec.resources.memory`; empty for file-level
    /// problems.
    pub path: String,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

impl Diagnostic {
    /// An error.
    pub fn new(
        file: impl Into<String>,
        pos: Pos,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: file.into(),
            line: pos.line,
            column: pos.col,
            path: path.into(),
            message: message.into(),
        }
    }

    /// A warning.
    pub fn warning(
        file: impl Into<String>,
        pos: Pos,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::new(file, pos, path, message)
        }
    }

    /// Whether this is an error (not a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if self.severity == Severity::Warning {
            write!(f, "warning: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.message)
    }
}

/// Every diagnostic of a manifest set that failed to validate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestErrors {
    /// Errors and warnings, sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
}

impl ManifestErrors {
    /// Number of errors (not warnings).
    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }
}

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.diagnostics {
            writeln!(f, "{d}")?;
        }
        let n = self.error_count();
        write!(
            f,
            "{n} error{} in manifests; nothing was changed",
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for ManifestErrors {}
