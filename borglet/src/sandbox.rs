//! The sandbox of a task: its working directory, holding its stdout and stderr files.

use crate::assignment::TaskKey;
use std::path::{Path, PathBuf};

/// Directory under the data dir that holds one sandbox per task incarnation.
pub const SANDBOXES_DIR: &str = "sandboxes";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub dir: PathBuf,
}

impl Sandbox {
    /// `<data_dir>/sandboxes/<job>.<index>.<incarnation>`.
    pub fn of(data_dir: &Path, key: &TaskKey) -> Sandbox {
        Sandbox {
            dir: data_dir.join(SANDBOXES_DIR).join(key.dir_name()),
        }
    }

    pub fn stdout(&self) -> PathBuf {
        self.dir.join("stdout")
    }

    pub fn stderr(&self) -> PathBuf {
        self.dir.join("stderr")
    }

    /// Mounted on /tmp inside the task's namespaces.
    pub fn tmp(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// Creates the directory and its `tmp` (kept across restarts of the task, so logs
    /// accumulate), owned by the task's `(uid, gid)` when given so the task can write there.
    pub fn create(&self, owner: Option<(u32, u32)>) -> std::io::Result<()> {
        std::fs::create_dir_all(self.tmp())?;
        if let Some((uid, gid)) = owner {
            for dir in [&self.dir, &self.tmp()] {
                std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
            }
        }
        Ok(())
    }
}

/// Keeps the sandboxes (and so the logs) of the most recent finished tasks and deletes older
/// ones, so that disk use stays bounded.
#[derive(Debug)]
pub struct SandboxRetention {
    kept_max: usize,
    /// Oldest first.
    finished: std::collections::VecDeque<PathBuf>,
}

impl SandboxRetention {
    pub fn new(kept_max: usize) -> SandboxRetention {
        SandboxRetention {
            kept_max,
            finished: std::collections::VecDeque::new(),
        }
    }

    /// Sandboxes left by an earlier run that belong to no current task, oldest first.
    pub fn adopt_leftovers(&mut self, data_dir: &Path, current: &[PathBuf]) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(data_dir.join(SANDBOXES_DIR)) else {
            return Vec::new();
        };
        let mut leftovers: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.is_dir() && !current.contains(path))
            .map(|path| {
                let modified = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                (modified, path)
            })
            .collect();
        leftovers.sort();
        let mut expired = Vec::new();
        for (_, path) in leftovers {
            expired.extend(self.retire(path));
        }
        expired
    }

    /// Records a finished task's sandbox; returns the sandboxes to delete now.
    pub fn retire(&mut self, dir: PathBuf) -> Vec<PathBuf> {
        if !self.finished.contains(&dir) {
            self.finished.push_back(dir);
        }
        let excess = self.finished.len().saturating_sub(self.kept_max);
        self.finished.drain(..excess).collect()
    }
}

/// Deletes expired sandboxes (best effort; a failure is logged).
pub fn delete_sandboxes(dirs: &[PathBuf]) {
    for dir in dirs {
        if let Err(error) = std::fs::remove_dir_all(dir) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), %error, "cannot delete an old sandbox");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_most_recent_finished_sandboxes_are_kept() {
        let data_dir = tempfile::tempdir().unwrap();
        let mut retention = SandboxRetention::new(2);
        let dir = |n: u64| Sandbox::of(data_dir.path(), &TaskKey::new("job", 0, n)).dir;
        for n in 1..=4 {
            Sandbox::of(data_dir.path(), &TaskKey::new("job", 0, n))
                .create(None)
                .unwrap();
        }
        // Incarnation 4 still runs; 1..=3 are leftovers of which the newest two stay.
        let expired = retention.adopt_leftovers(data_dir.path(), &[dir(4)]);
        assert_eq!(expired, vec![dir(1)]);
        delete_sandboxes(&expired);
        assert!(!dir(1).exists() && dir(2).exists());
        assert_eq!(retention.retire(dir(4)), vec![dir(2)]);
        assert!(
            retention.retire(dir(4)).is_empty(),
            "retiring twice changes nothing"
        );
        assert_eq!(retention.finished, [dir(3), dir(4)]);
    }
}
