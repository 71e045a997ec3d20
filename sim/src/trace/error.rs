//! Errors of the trace readers: each names the file, the line (1-based) and the field.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no part files of table `{table}` in {dir} (expected *.csv.gz or *.csv)")]
    MissingTable { dir: PathBuf, table: &'static str },
    #[error("{file}:{line}: input ends early (truncated or cut-off compressed file): {source}")]
    Truncated {
        file: String,
        line: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: cannot read (corrupt compressed data?): {source}")]
    Read {
        file: String,
        line: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: line is longer than {max_bytes} bytes")]
    LineTooLong {
        file: String,
        line: u64,
        max_bytes: usize,
    },
    #[error("{file}:{line}: header has no column `{column}`")]
    MissingColumn {
        file: String,
        line: u64,
        column: &'static str,
    },
    #[error("{file}: no header row (the file is empty)")]
    MissingHeader { file: String },
    #[error("{file}:{line}: {what} {name:?} appears twice")]
    Duplicate {
        file: String,
        line: u64,
        what: &'static str,
        name: String,
    },
    #[error("{file}:{line}: line is not UTF-8")]
    NotUtf8 { file: String, line: u64 },
    #[error("{file}:{line}: expected {expected} comma-separated fields, found {found} (truncated line?)")]
    FieldCount {
        file: String,
        line: u64,
        expected: usize,
        found: usize,
    },
    #[error("{file}:{line}: field `{field}` is empty but required")]
    MissingField {
        file: String,
        line: u64,
        field: &'static str,
    },
    #[error("{file}:{line}: field `{field}` is {value:?}, expected {expected}")]
    BadField {
        file: String,
        line: u64,
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{file}:{line}: time {time_us} us comes before the previous event's {previous_us} us; a table's events must be in time order")]
    OutOfOrder {
        file: String,
        line: u64,
        time_us: u64,
        previous_us: u64,
    },
    #[error("{file}:{line}: more than {max} {what} to track; raise the reader's `tracked_max`")]
    TooMany {
        file: String,
        line: u64,
        what: &'static str,
        max: usize,
    },
}
