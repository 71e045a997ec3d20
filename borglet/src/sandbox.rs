//! The sandbox of a task: its working directory, holding its stdout and stderr files.

use crate::assignment::TaskKey;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Directory under the data dir that holds one sandbox per task incarnation.
pub const SANDBOXES_DIR: &str = "sandboxes";
/// Directory under the data dir that holds emptied sandboxes kept for reuse.
pub const SANDBOX_SPARES_DIR: &str = "sandbox-spares";
/// Emptied sandboxes kept for reuse. Creating directories costs more than renaming them: on
/// ext4 without a journal each new inode skips the inodes deleted in the last 30 s, so a
/// machine that starts and ends hundreds of tasks a second spends most of a start there.
pub const SANDBOX_SPARES_MAX: usize = 64;
/// Mode of a sandbox and its `tmp` (what `create_dir_all` gives under the usual umask).
const SANDBOX_MODE: u32 = 0o755;

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
    /// A spare sandbox is renamed into place when there is one and the sandbox is new.
    pub fn create(&self, owner: Option<(u32, u32)>, spares: &SandboxSpares) -> std::io::Result<()> {
        let reused = std::fs::symlink_metadata(&self.dir).is_err()
            && spares.take().is_some_and(|spare| {
                std::fs::rename(&spare, &self.dir).is_ok() || {
                    // Left where it is (or half there): remove it rather than guess.
                    let _ = std::fs::remove_dir_all(&spare);
                    false
                }
            });
        if !reused {
            std::fs::create_dir_all(self.tmp())?;
        }
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

/// Emptied sandboxes ready for reuse, at most `SANDBOX_SPARES_MAX`. Only sandboxes whose
/// tasks are over and whose processes were all killed (their cgroup drained) are recycled,
/// so nothing of the task can still change them.
#[derive(Debug)]
pub struct SandboxSpares {
    dir: PathBuf,
    /// None: recycling is off (tasks without cgroups may leave processes behind).
    state: Option<Mutex<SparesState>>,
}

#[derive(Debug, Default)]
struct SparesState {
    free: Vec<PathBuf>,
    /// Names spares uniquely within this run.
    next_id: u64,
    dir_ready: bool,
}

impl SandboxSpares {
    pub fn new(data_dir: &Path, enabled: bool) -> SandboxSpares {
        SandboxSpares {
            dir: data_dir.join(SANDBOX_SPARES_DIR),
            state: enabled.then(|| Mutex::new(SparesState::default())),
        }
    }

    fn state(&self) -> Option<std::sync::MutexGuard<'_, SparesState>> {
        let state = self.state.as_ref()?;
        Some(
            state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    fn take(&self) -> Option<PathBuf> {
        self.state()?.free.pop()
    }

    /// Deletes the spares of an earlier run (at startup).
    pub fn clear_leftovers(&self) {
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), %error, "cannot delete old spare sandboxes");
            }
        }
    }

    /// Keeps `dir` as a spare if there is room and it holds nothing of its task beyond its
    /// log files and an empty `tmp`; true when it was taken.
    fn recycle(&self, dir: &Path) -> bool {
        let Some(mut state) = self.state() else {
            return false;
        };
        if state.free.len() >= SANDBOX_SPARES_MAX || empty_for_reuse(dir).is_err() {
            return false;
        }
        if !state.dir_ready {
            if std::fs::create_dir_all(&self.dir).is_err() {
                return false;
            }
            state.dir_ready = true;
        }
        let spare = self.dir.join(state.next_id.to_string());
        state.next_id += 1;
        if std::fs::rename(dir, &spare).is_err() {
            return false;
        }
        state.free.push(spare);
        true
    }
}

/// Removes a finished sandbox's log files and resets its and its `tmp`'s mode; refuses (and
/// leaves the sandbox for deletion) when it holds anything else, or `tmp` is not an empty
/// directory. Symbolic links are never followed: the task owned these directories.
fn empty_for_reuse(dir: &Path) -> std::io::Result<()> {
    let refuse = || std::io::Error::other("the sandbox holds more than logs and an empty tmp");
    let open_dir = |path: &Path| {
        std::fs::File::options()
            .read(true)
            .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
            .open(path)
    };
    let sandbox = open_dir(dir)?;
    let tmp_path = dir.join("tmp");
    let tmp = open_dir(&tmp_path)?;
    if std::fs::read_dir(&tmp_path)?.next().is_some() {
        return Err(refuse());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "tmp" {
            continue;
        }
        let is_log = name
            .to_str()
            .is_some_and(|n| n.starts_with("stdout") || n.starts_with("stderr"));
        if !is_log || !entry.file_type()?.is_file() {
            return Err(refuse());
        }
        std::fs::remove_file(entry.path())?;
    }
    for opened in [&sandbox, &tmp] {
        opened.set_permissions(std::fs::Permissions::from_mode(SANDBOX_MODE))?;
    }
    Ok(())
}

/// Deletes expired sandboxes, or keeps them as spares (best effort; a failure is logged).
pub fn delete_sandboxes(dirs: &[PathBuf], spares: &SandboxSpares) {
    for dir in dirs {
        if spares.recycle(dir) {
            continue;
        }
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
                .create(None, &SandboxSpares::new(data_dir.path(), false))
                .unwrap();
        }
        // Incarnation 4 still runs; 1..=3 are leftovers of which the newest two stay.
        let expired = retention.adopt_leftovers(data_dir.path(), &[dir(4)]);
        assert_eq!(expired, vec![dir(1)]);
        delete_sandboxes(&expired, &SandboxSpares::new(data_dir.path(), false));
        assert!(!dir(1).exists() && dir(2).exists());
        assert_eq!(retention.retire(dir(4)), vec![dir(2)]);
        assert!(
            retention.retire(dir(4)).is_empty(),
            "retiring twice changes nothing"
        );
        assert_eq!(retention.finished, [dir(3), dir(4)]);
    }

    #[test]
    fn emptied_sandboxes_are_reused_and_others_deleted() {
        let data_dir = tempfile::tempdir().unwrap();
        let spares = SandboxSpares::new(data_dir.path(), true);
        let sandbox = |n: u64| Sandbox::of(data_dir.path(), &TaskKey::new("job", 0, n));
        for n in 1..=3 {
            sandbox(n).create(None, &spares).unwrap();
        }
        // 1: logs only, reusable. 2: a file left in tmp. 3: tmp replaced by a link.
        std::fs::write(sandbox(1).stdout(), "out").unwrap();
        std::fs::set_permissions(sandbox(1).tmp(), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(sandbox(2).tmp().join("left"), "x").unwrap();
        std::fs::remove_dir(sandbox(3).tmp()).unwrap();
        std::os::unix::fs::symlink(sandbox(2).tmp(), sandbox(3).tmp()).unwrap();
        delete_sandboxes(&[1, 2, 3].map(|n| sandbox(n).dir), &spares);
        for n in 1..=3 {
            assert!(!sandbox(n).dir.exists(), "sandbox {n} is still in place");
        }
        assert_eq!(spares.state().unwrap().free.len(), 1);

        // The spare becomes the next sandbox: empty, with its tmp mode reset.
        sandbox(4).create(None, &spares).unwrap();
        assert!(spares.state().unwrap().free.is_empty());
        let entries: Vec<_> = std::fs::read_dir(&sandbox(4).dir)
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(entries.len(), 1, "only tmp is left: {entries:?}");
        let mode = std::fs::metadata(sandbox(4).tmp())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, SANDBOX_MODE);
        assert_eq!(std::fs::read_dir(sandbox(4).tmp()).unwrap().count(), 0);
    }
}
