//! Diagnostics: where in which file something is wrong, rendered with the source line and a
//! caret, plus a hint when one helps.

use std::fmt;

/// A byte range in one loaded source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub file: u32,
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(file: u32, start: usize, end: usize) -> Span {
        // Offsets fit: files are at most SOURCE_FILE_BYTES_MAX long.
        let clamp = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
        Span {
            file,
            start: clamp(start),
            end: clamp(end.max(start)),
        }
    }

    /// The span from the start of `self` to the end of `other` (same file).
    pub fn to(self, other: Span) -> Span {
        if other.file != self.file {
            return self;
        }
        Span {
            file: self.file,
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// An error found while loading, before it is placed in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Error {
    pub span: Span,
    pub message: String,
    pub hint: Option<String>,
}

impl Error {
    pub fn new(span: Span, message: impl Into<String>) -> Error {
        Error {
            span,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }

    pub fn maybe_hint(mut self, hint: Option<String>) -> Error {
        if hint.is_some() {
            self.hint = hint;
        }
        self
    }
}

pub(crate) type Result<T> = std::result::Result<T, Error>;

/// One loaded file: its name as shown to the user and its text.
pub(crate) struct SourceFile {
    pub name: String,
    pub text: String,
}

/// Every file loaded for one `load_*` call, indexed by `Span::file`.
#[derive(Default)]
pub(crate) struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    pub fn add(&mut self, name: String, text: String) -> u32 {
        self.files.push(SourceFile { name, text });
        u32::try_from(self.files.len() - 1).unwrap_or(u32::MAX)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn text(&self, file: u32) -> &str {
        self.files
            .get(file as usize)
            .map(|f| f.text.as_str())
            .unwrap_or("")
    }

    pub fn name(&self, file: u32) -> &str {
        self.files
            .get(file as usize)
            .map(|f| f.name.as_str())
            .unwrap_or("<unknown>")
    }

    /// 1-based line of a span's start, for "first set at line N" notes.
    pub fn line_of(&self, span: Span) -> u32 {
        self.locate(span).0
    }

    /// (line, col, the line's text, caret width in chars), all 1-based.
    fn locate(&self, span: Span) -> (u32, u32, String, u32) {
        let text = self.text(span.file);
        let mut start = (span.start as usize).min(text.len());
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let line_start = text[..start].rfind('\n').map(|i| i + 1).unwrap_or(0);
        let line_end = text[start..]
            .find('\n')
            .map(|i| start + i)
            .unwrap_or(text.len());
        let line_no = text[..start].matches('\n').count() + 1;
        let col = text[line_start..start].chars().count() + 1;
        let line_text = text[line_start..line_end].trim_end_matches('\r');
        let mut end = (span.end as usize).clamp(start, line_end);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let width = text[start..end].chars().count().max(1);
        let as_u32 = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
        (
            as_u32(line_no),
            as_u32(col),
            line_text.to_string(),
            as_u32(width),
        )
    }

    pub fn diagnostic(&self, error: Error) -> Diagnostic {
        let (line, col, source_line, width) = self.locate(error.span);
        Diagnostic {
            file: self.name(error.span.file).to_string(),
            line,
            col,
            width,
            message: error.message,
            source_line,
            hint: error.hint,
        }
    }
}

/// One problem in a BCL file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// The file as it was named to the loader (or, for imports, relative to it).
    pub file: String,
    /// 1-based line; 0 when the problem is the file itself (it cannot be read).
    pub line: u32,
    /// 1-based column in characters.
    pub col: u32,
    /// How many characters the caret underlines.
    pub width: u32,
    pub message: String,
    /// The text of the offending line (empty when `line` is 0).
    pub source_line: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A problem with a whole file (unreadable, too large), not with a place in it.
    pub fn for_file(file: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: file.into(),
            line: 0,
            col: 0,
            width: 0,
            message: message.into(),
            source_line: String::new(),
            hint: None,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: error: {}", self.file, self.message)?;
        } else {
            let gutter = self.line.to_string();
            let pad = " ".repeat(gutter.len());
            writeln!(
                f,
                "{}:{}:{}: error: {}",
                self.file, self.line, self.col, self.message
            )?;
            writeln!(f, " {gutter} | {}", self.source_line)?;
            // Keep tabs so the caret lines up under tab-indented text.
            let lead: String = self
                .source_line
                .chars()
                .take(self.col.saturating_sub(1) as usize)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(
                f,
                " {pad} | {lead}{}",
                "^".repeat(self.width.max(1) as usize)
            )?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Everything wrong with a BCL load, in the order found. Display renders all of them;
/// Serialize gives them structured (for `--output json`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("{}", render(.items))]
pub struct Diagnostics {
    pub items: Vec<Diagnostic>,
}

fn render(items: &[Diagnostic]) -> String {
    let mut out = String::new();
    for (i, d) in items.iter().enumerate() {
        if i > 0 {
            out.push_str("\n\n");
        }
        out.push_str(&d.to_string());
    }
    if items.len() > 1 {
        out.push_str(&format!("\n\n{} errors", items.len()));
    }
    out
}

impl Diagnostics {
    pub fn single(d: Diagnostic) -> Diagnostics {
        Diagnostics { items: vec![d] }
    }
}
