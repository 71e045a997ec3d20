//! Bounded, numbered reading of CSV lines from plain or gzip-compressed files.

use crate::trace::TraceError;
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};

/// Longest line accepted; trace rows are a few hundred bytes.
pub const LINE_BYTES_MAX: usize = 64 * 1024;

/// Opens `path`, decompressing it when its name ends in `.gz`.
pub fn open(path: &Path) -> Result<Box<dyn BufRead>, TraceError> {
    let file = File::open(path).map_err(|source| TraceError::Open {
        path: path.to_owned(),
        source,
    })?;
    let gz = path.extension().is_some_and(|e| e == "gz");
    Ok(if gz {
        Box::new(BufReader::new(MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    })
}

/// A reader that decompresses gzip data from `reader` (for in-memory input and tests).
pub fn gunzip<R: Read + 'static>(reader: R) -> Box<dyn BufRead> {
    Box::new(BufReader::new(MultiGzDecoder::new(reader)))
}

/// The part files of one table (`DIR/TABLE/*.csv.gz` or `*.csv`), in name order, which for
/// `part-NNNNN-of-MMMMM` files is time order.
pub fn table_parts(dir: &Path, table: &'static str) -> Result<Vec<PathBuf>, TraceError> {
    let table_dir = dir.join(table);
    let entries = std::fs::read_dir(&table_dir).map_err(|source| TraceError::Open {
        path: table_dir.clone(),
        source,
    })?;
    let mut parts = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| TraceError::Open {
            path: table_dir.clone(),
            source,
        })?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".csv.gz") || name.ends_with(".csv") {
            parts.push(entry.path());
        }
    }
    if parts.is_empty() {
        return Err(TraceError::MissingTable {
            dir: table_dir,
            table,
        });
    }
    parts.sort();
    Ok(parts)
}

/// Lines of one file with their 1-based numbers; blank lines are skipped.
pub struct Lines<R> {
    reader: R,
    file: String,
    line: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> Lines<R> {
    pub fn new(reader: R, file: impl Into<String>) -> Self {
        Lines {
            reader,
            file: file.into(),
            line: 0,
            buf: Vec::new(),
        }
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    /// The next non-blank line and its number, `None` at the end of the input.
    pub fn next_line(&mut self) -> Result<Option<(u64, &str)>, TraceError> {
        loop {
            self.buf.clear();
            self.line += 1;
            let limit = u64::try_from(LINE_BYTES_MAX + 1).unwrap_or(u64::MAX);
            let n = (&mut self.reader)
                .take(limit)
                .read_until(b'\n', &mut self.buf)
                .map_err(|source| self.io_error(source))?;
            if n == 0 {
                return Ok(None);
            }
            if self.buf.last() == Some(&b'\n') {
                self.buf.pop();
                if self.buf.last() == Some(&b'\r') {
                    self.buf.pop();
                }
            } else if self.buf.len() > LINE_BYTES_MAX {
                return Err(TraceError::LineTooLong {
                    file: self.file.clone(),
                    line: self.line,
                    max_bytes: LINE_BYTES_MAX,
                });
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let text = std::str::from_utf8(&self.buf).map_err(|_| TraceError::NotUtf8 {
                file: self.file.clone(),
                line: self.line,
            })?;
            return Ok(Some((self.line, text)));
        }
    }

    fn io_error(&self, source: std::io::Error) -> TraceError {
        if source.kind() == ErrorKind::UnexpectedEof {
            TraceError::Truncated {
                file: self.file.clone(),
                line: self.line,
                source,
            }
        } else {
            TraceError::Read {
                file: self.file.clone(),
                line: self.line,
                source,
            }
        }
    }
}

/// The comma-separated fields of one line, for parsing with errors that point at them.
pub struct Fields<'a> {
    pub file: &'a str,
    pub line: u64,
    fields: Vec<&'a str>,
}

impl<'a> Fields<'a> {
    /// Splits `text`, which must have exactly `expected` fields.
    pub fn split(
        file: &'a str,
        line: u64,
        text: &'a str,
        expected: usize,
    ) -> Result<Fields<'a>, TraceError> {
        let fields: Vec<&str> = text.split(',').collect();
        if fields.len() != expected {
            return Err(TraceError::FieldCount {
                file: file.to_owned(),
                line,
                expected,
                found: fields.len(),
            });
        }
        Ok(Fields { file, line, fields })
    }

    /// The raw text of field `index` (empty when missing).
    pub fn raw(&self, index: usize) -> &'a str {
        self.fields.get(index).copied().unwrap_or_default()
    }

    pub fn missing(&self, field: &'static str) -> TraceError {
        TraceError::MissingField {
            file: self.file.to_owned(),
            line: self.line,
            field,
        }
    }

    pub fn bad(&self, field: &'static str, value: &str, expected: &'static str) -> TraceError {
        TraceError::BadField {
            file: self.file.to_owned(),
            line: self.line,
            field,
            value: value.to_owned(),
            expected,
        }
    }

    /// An optional unsigned integer: `None` when empty.
    pub fn opt_u64(&self, index: usize, field: &'static str) -> Result<Option<u64>, TraceError> {
        let raw = self.raw(index);
        if raw.is_empty() {
            return Ok(None);
        }
        raw.parse()
            .map(Some)
            .map_err(|_| self.bad(field, raw, "an unsigned integer"))
    }

    pub fn u64(&self, index: usize, field: &'static str) -> Result<u64, TraceError> {
        self.opt_u64(index, field)?
            .ok_or_else(|| self.missing(field))
    }

    /// An unsigned integer no larger than `max`.
    pub fn u64_at_most(
        &self,
        index: usize,
        field: &'static str,
        max: u64,
        expected: &'static str,
    ) -> Result<u64, TraceError> {
        let value = self.u64(index, field)?;
        if value > max {
            return Err(self.bad(field, self.raw(index), expected));
        }
        Ok(value)
    }

    /// An optional finite, non-negative fraction (the trace's normalised units).
    pub fn opt_fraction(
        &self,
        index: usize,
        field: &'static str,
    ) -> Result<Option<f64>, TraceError> {
        let raw = self.raw(index);
        if raw.is_empty() {
            return Ok(None);
        }
        match raw.parse::<f64>() {
            Ok(value) if value.is_finite() && value >= 0.0 => Ok(Some(value)),
            _ => Err(self.bad(field, raw, "a non-negative decimal number")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_numbered_and_blank_lines_skipped() {
        let mut lines = Lines::new(&b"a,b\r\n\n c\nlast"[..], "t.csv");
        assert_eq!(lines.next_line().unwrap(), Some((1, "a,b")));
        assert_eq!(lines.next_line().unwrap(), Some((3, " c")));
        assert_eq!(lines.next_line().unwrap(), Some((4, "last")));
        assert_eq!(lines.next_line().unwrap(), None);
    }

    #[test]
    fn overlong_and_non_utf8_lines_are_refused() {
        let long = vec![b'x'; LINE_BYTES_MAX + 10];
        let mut lines = Lines::new(&long[..], "t.csv");
        assert!(matches!(
            lines.next_line(),
            Err(TraceError::LineTooLong { line: 1, .. })
        ));
        let mut lines = Lines::new(&b"ok\n\xff\xfe\n"[..], "t.csv");
        lines.next_line().unwrap();
        assert!(matches!(
            lines.next_line(),
            Err(TraceError::NotUtf8 { line: 2, .. })
        ));
    }

    #[test]
    fn fields_name_what_is_wrong() {
        let fields = Fields::split("t.csv", 7, "1,,x,-0.5", 4).unwrap();
        assert_eq!(fields.u64(0, "time").unwrap(), 1);
        assert!(matches!(
            fields.u64(1, "id"),
            Err(TraceError::MissingField {
                line: 7,
                field: "id",
                ..
            })
        ));
        assert!(matches!(
            fields.u64(2, "kind"),
            Err(TraceError::BadField {
                line: 7,
                field: "kind",
                ..
            })
        ));
        assert!(matches!(
            fields.opt_fraction(3, "cpu"),
            Err(TraceError::BadField { field: "cpu", .. })
        ));
        assert!(matches!(
            Fields::split("t.csv", 8, "1,2", 4),
            Err(TraceError::FieldCount {
                line: 8,
                expected: 4,
                found: 2,
                ..
            })
        ));
    }
}
