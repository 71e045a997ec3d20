//! One record per started task under `<data_dir>/tasks/`, written when its process starts and
//! removed when the task is done with, so that a restarted borglet can find (and later
//! re-adopt) the processes it left running.

use crate::assignment::{TaskAssignment, TaskKey};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Directory under the data dir that holds the records.
pub const TASK_RECORDS_DIR: &str = "tasks";
/// Most records read back at startup.
pub const TASK_RECORDS_MAX: usize = 100_000;

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

#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn new(data_dir: &Path) -> StateDir {
        StateDir {
            dir: data_dir.join(TASK_RECORDS_DIR),
        }
    }

    pub fn create(&self) -> Result<(), StateDirError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| StateDirError::Write {
            path: self.dir.clone(),
            source,
        })
    }

    fn path_of(&self, key: &TaskKey) -> PathBuf {
        self.dir.join(format!("{}.json", key.dir_name()))
    }

    /// Writes the record atomically (a temporary file renamed over the old one).
    pub fn write(&self, record: &TaskRecord) -> Result<(), StateDirError> {
        let path = self.path_of(&record.assignment.key);
        let temp = path.with_extension("json.tmp");
        let write_error = |source| StateDirError::Write {
            path: path.clone(),
            source,
        };
        let json =
            serde_json::to_vec_pretty(record).map_err(|e| write_error(std::io::Error::other(e)))?;
        std::fs::write(&temp, json).map_err(write_error)?;
        std::fs::rename(&temp, &path).map_err(write_error)
    }

    pub fn remove(&self, key: &TaskKey) {
        let path = self.path_of(key);
        if let Err(error) = std::fs::remove_file(&path) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), %error, "cannot remove task record");
            }
        }
    }

    /// Every readable record (at most [`TASK_RECORDS_MAX`]); unreadable ones are logged and
    /// skipped.
    pub fn load_all(&self) -> Result<Vec<TaskRecord>, StateDirError> {
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
        let mut records = Vec::new();
        for entry in entries.take(TASK_RECORDS_MAX).flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
            {
                Ok(record) => records.push(record),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "skipping unreadable task record")
                }
            }
        }
        records.sort_by(|a: &TaskRecord, b| a.assignment.key.cmp(&b.assignment.key));
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        state.create().unwrap();
        let record = TaskRecord {
            assignment: TaskAssignment {
                key: TaskKey::new("web", 1, 3),
                owner: "alice".into(),
                priority: 100,
                job_type: Default::default(),
                app_class: Default::default(),
                restart: Default::default(),
                template: Default::default(),
            },
            pid: 4242,
            start_ticks: 99,
            started_ms: 17,
            restarts: 0,
            cgroup: Some("web.1.3".into()),
            ports: crate::ports::TaskPorts::from([("http".to_string(), 20_001)]),
            sandbox: dir.path().join("sandboxes/web.1.3"),
        };
        state.write(&record).unwrap();
        std::fs::write(dir.path().join("tasks/broken.json"), "{").unwrap();
        assert_eq!(state.load_all().unwrap(), vec![record.clone()]);
        state.remove(&record.assignment.key);
        assert!(state.load_all().unwrap().is_empty());
        state.remove(&record.assignment.key);
    }
}
