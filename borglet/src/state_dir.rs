//! The records of started tasks, so that a restarted borglet can find (and re-adopt) the
//! processes it left running. They live in one journal file per borglet,
//! `<data_dir>/tasks/journal`: a line is appended when a task's process starts (its record)
//! and when the task is done with (its key). An append creates no file: a record per file
//! cost each task the allocation and later the freeing of an inode (plus a rename), work
//! that ext4 makes costly under fast create/delete churn. The journal is rewritten with only
//! the live records every `JOURNAL_APPENDS_COMPACT_AT` appends and at startup.
//!
//! Lines are whole JSON values; a line cut short by a crash is skipped when read (and the
//! rewrite at startup drops it). Records of earlier versions, one `<key>.json` per task in
//! the same directory, are read too and folded into the journal at startup.

use crate::assignment::{TaskAssignment, TaskKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Directory under the data dir that holds the journal.
pub const TASK_RECORDS_DIR: &str = "tasks";
/// The journal's file name in that directory.
pub const JOURNAL_FILE: &str = "journal";
/// Most records read back at startup.
pub const TASK_RECORDS_MAX: usize = 100_000;
/// Longest journal line read (one record: a task's assignment, its arguments and env).
pub const JOURNAL_LINE_MAX_BYTES: usize = 16 << 20;
/// Appends after which the journal is rewritten with only the live records.
pub const JOURNAL_APPENDS_COMPACT_AT: usize = 4_096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub assignment: TaskAssignment,
    pub pid: u32,
    /// Start time of the process in clock ticks since boot (pids are reused; this is not).
    #[serde(default)]
    pub start_ticks: u64,
    pub started_ms: u64,
    pub restarts: u32,
    /// Name of the task cgroup under the borglet's parent, when cgroups are used.
    pub cgroup: Option<String>,
    pub sandbox: PathBuf,
    /// The incarnation's named ports (kept across restarts and re-adoption).
    #[serde(default)]
    pub ports: crate::ports::TaskPorts,
}

/// One journal line.
#[derive(Debug, Serialize, Deserialize)]
// Lives only while one line is encoded or decoded.
#[allow(clippy::large_enum_variant)]
enum Entry {
    /// A process of the task started (a later one replaces an earlier one of the same key).
    Started(TaskRecord),
    /// The task is done with.
    Ended(TaskKey),
}

#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("cannot write task record {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read task records in {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The open journal of this process.
#[derive(Debug, Default)]
struct Journal {
    file: Option<std::fs::File>,
    /// Appends since the journal was last rewritten.
    appends: usize,
}

#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
    /// Shared by the clones: appends are one at a time.
    journal: Arc<Mutex<Journal>>,
}

impl StateDir {
    pub fn new(data_dir: &Path) -> StateDir {
        StateDir {
            dir: data_dir.join(TASK_RECORDS_DIR),
            journal: Arc::default(),
        }
    }

    fn journal_path(&self) -> PathBuf {
        self.dir.join(JOURNAL_FILE)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Journal> {
        // A panic mid-append leaves at worst a cut line, which readers skip.
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates the directory and rewrites the journal with the live records (folding in
    /// records of earlier versions). Call once at startup, before the first `write`.
    pub fn create(&self) -> Result<(), StateDirError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| StateDirError::Write {
            path: self.dir.clone(),
            source,
        })?;
        let mut journal = self.lock();
        self.compact(&mut journal)?;
        for path in self.legacy_files()? {
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), %error, "cannot remove an old task record");
            }
        }
        Ok(())
    }

    /// Replaces the journal with one holding only the live records, and opens it for appends.
    fn compact(&self, journal: &mut Journal) -> Result<(), StateDirError> {
        let path = self.journal_path();
        let write_error = |source| StateDirError::Write {
            path: path.clone(),
            source,
        };
        let records = self.load_all()?;
        let temp = path.with_extension("tmp");
        let mut text = Vec::new();
        for record in records {
            append_line(&mut text, &Entry::Started(record)).map_err(write_error)?;
        }
        std::fs::write(&temp, text).map_err(write_error)?;
        std::fs::rename(&temp, &path).map_err(write_error)?;
        journal.file = Some(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(write_error)?,
        );
        journal.appends = 0;
        Ok(())
    }

    fn append(&self, entry: &Entry) -> Result<(), StateDirError> {
        let path = self.journal_path();
        let write_error = |source| StateDirError::Write {
            path: path.clone(),
            source,
        };
        let mut line = Vec::new();
        append_line(&mut line, entry).map_err(write_error)?;
        let mut journal = self.lock();
        if journal.file.is_none() || journal.appends >= JOURNAL_APPENDS_COMPACT_AT {
            self.compact(&mut journal)?;
        }
        let file = journal
            .file
            .as_mut()
            .ok_or_else(|| write_error(std::io::Error::other("the journal is not open")))?;
        // One write of a whole line to a file opened for appending: lines never interleave.
        file.write_all(&line).map_err(write_error)?;
        journal.appends += 1;
        Ok(())
    }

    /// Records a started process of the task (replacing its earlier record).
    pub fn write(&self, record: &TaskRecord) -> Result<(), StateDirError> {
        self.append(&Entry::Started(record.clone()))
    }

    /// Forgets the task's record.
    pub fn remove(&self, key: &TaskKey) {
        if let Err(error) = self.append(&Entry::Ended(key.clone())) {
            tracing::warn!(task = %key, %error, "cannot record the end of a task");
        }
    }

    /// `<key>.json` records written by earlier versions.
    fn legacy_files(&self) -> Result<Vec<PathBuf>, StateDirError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StateDirError::Read {
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        Ok(entries
            .take(TASK_RECORDS_MAX)
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().and_then(|e| e.to_str()) == Some("json"))
            .collect())
    }

    /// Every live record (at most [`TASK_RECORDS_MAX`]), sorted by key; unreadable ones are
    /// logged and skipped. Only reads: safe while a borglet appends.
    pub fn load_all(&self) -> Result<Vec<TaskRecord>, StateDirError> {
        let mut live = BTreeMap::new();
        for path in self.legacy_files()? {
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<TaskRecord>(&bytes).map_err(|e| e.to_string())
                }) {
                Ok(record) => {
                    live.insert(record.assignment.key.clone(), record);
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "skipping unreadable task record")
                }
            }
        }
        let path = self.journal_path();
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(live.into_values().collect())
            }
            Err(source) => return Err(StateDirError::Read { path, source }),
        };
        let mut reader = std::io::BufReader::new(file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = (&mut reader)
                .take(JOURNAL_LINE_MAX_BYTES as u64)
                .read_until(b'\n', &mut line)
                .map_err(|source| StateDirError::Read {
                    path: path.clone(),
                    source,
                })?;
            if read == 0 {
                break;
            }
            match serde_json::from_slice::<Entry>(&line) {
                Ok(Entry::Started(record)) => {
                    if live.len() < TASK_RECORDS_MAX || live.contains_key(&record.assignment.key) {
                        live.insert(record.assignment.key.clone(), record);
                    }
                }
                Ok(Entry::Ended(key)) => {
                    live.remove(&key);
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "skipping an unreadable journal line")
                }
            }
        }
        Ok(live.into_values().collect())
    }
}

/// `entry` as one JSON line.
fn append_line(out: &mut Vec<u8>, entry: &Entry) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, entry).map_err(std::io::Error::other)?;
    out.push(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(dir: &Path, index: u32, pid: u32) -> TaskRecord {
        TaskRecord {
            assignment: TaskAssignment {
                key: TaskKey::new("web", index, 3),
                owner: "alice".into(),
                priority: 100,
                job_type: Default::default(),
                app_class: Default::default(),
                restart: Default::default(),
                template: Default::default(),
            },
            pid,
            start_ticks: 99,
            started_ms: 17,
            restarts: 0,
            cgroup: Some(format!("web.{index}.3")),
            ports: crate::ports::TaskPorts::from([("http".to_string(), 20_001)]),
            sandbox: dir.join(format!("sandboxes/web.{index}.3")),
        }
    }

    #[test]
    fn records_round_trip_and_bad_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        state.create().unwrap();
        let (first, second) = (record(dir.path(), 1, 4242), record(dir.path(), 2, 4243));
        state.write(&first).unwrap();
        state.write(&second).unwrap();
        let restarted = TaskRecord {
            pid: 5000,
            restarts: 1,
            ..first.clone()
        };
        state.write(&restarted).unwrap();
        // A line cut short by a crash, then more appends.
        let journal = dir.path().join("tasks").join(JOURNAL_FILE);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&journal)
            .unwrap()
            .write_all(b"{\"Started\":{\"assign\n")
            .unwrap();
        state.remove(&second.assignment.key);
        assert_eq!(
            StateDir::new(dir.path()).load_all().unwrap(),
            vec![restarted.clone()]
        );
        // No file per task: the journal is the only one.
        let files: Vec<_> = std::fs::read_dir(dir.path().join("tasks"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(files, vec![std::ffi::OsString::from(JOURNAL_FILE)]);
        state.remove(&first.assignment.key);
        assert!(state.load_all().unwrap().is_empty());
        state.remove(&first.assignment.key);
    }

    #[test]
    fn the_journal_is_rewritten_with_the_live_records_and_old_files_folded_in() {
        let dir = tempfile::tempdir().unwrap();
        let old = record(dir.path(), 7, 77);
        std::fs::create_dir_all(dir.path().join("tasks")).unwrap();
        std::fs::write(
            dir.path().join("tasks/web.7.3.json"),
            serde_json::to_vec_pretty(&old).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join("tasks/broken.json"), "{").unwrap();
        let state = StateDir::new(dir.path());
        state.create().unwrap();
        assert!(!dir.path().join("tasks/web.7.3.json").exists());
        assert_eq!(state.load_all().unwrap(), vec![old.clone()]);
        let journal = dir.path().join("tasks").join(JOURNAL_FILE);
        for n in 0..JOURNAL_APPENDS_COMPACT_AT as u32 / 2 {
            let churn = record(dir.path(), 100 + n % 8, n);
            state.write(&churn).unwrap();
            state.remove(&churn.assignment.key);
        }
        let before = std::fs::metadata(&journal).unwrap().len();
        state.remove(&TaskKey::new("web", 999, 3));
        let after = std::fs::metadata(&journal).unwrap().len();
        assert!(
            after < before / 10,
            "not rewritten: {before} -> {after} bytes"
        );
        assert_eq!(state.load_all().unwrap(), vec![old]);
    }
}
