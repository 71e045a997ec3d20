//! Task cgroups: one trait, with a v1 and a v2 implementation.
//!
//! Both write under a root path given at construction (the real mounts, or a temporary
//! directory in unit tests) and only below their parent (`cgroup_parent`), so nothing else on
//! the machine is touched. Limits are written through cgroups-rs' controllers; only the
//! controllers the borglet uses are created (cgroups-rs would otherwise create a group in
//! every v1 hierarchy).

pub mod detect;
mod files;
pub mod limits;
pub mod spares;
pub mod v1;
pub mod v2;

pub use detect::detect;
pub use limits::CgroupLimits;
pub use v1::V1Cgroups;
pub use v2::V2Cgroups;

use std::fmt::Debug;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

impl CgroupVersion {
    pub fn name(self) -> &'static str {
        match self {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        }
    }
}

/// What a task cgroup has used so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// Current memory charged to the group.
    pub memory_bytes: u64,
    /// CPU time consumed since the group was created (cumulative).
    pub cpu_usage_ns: u64,
    /// Processes the kernel killed because the group hit its memory limit (cumulative).
    pub oom_kills: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot create cgroup directory {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set {setting} = {value} in cgroup {path}: {message}")]
    Limit {
        path: PathBuf,
        setting: &'static str,
        value: String,
        message: String,
    },
    #[error("cannot remove cgroup {path}: {message}")]
    Remove { path: PathBuf, message: String },
    #[error("cgroup name {name:?} is not a plain relative path of valid names")]
    InvalidName { name: String },
}

/// The cgroups of the tasks of one borglet: every name is relative to the borglet's parent.
pub trait TaskCgroups: Send + Sync + Debug {
    fn version(&self) -> CgroupVersion;

    /// Creates the parent group (and, on v2, delegates the controllers to it). Idempotent.
    fn ensure_parent(&self) -> Result<(), CgroupError>;

    /// Creates the task group `name` (idempotent) and writes its limits.
    fn create(&self, name: &str, limits: &CgroupLimits) -> Result<(), CgroupError>;

    /// Files a process joins the group through: writing "0" to each moves the writer in.
    /// Opened before fork and written from the child before exec.
    fn join_files(&self, name: &str) -> Vec<PathBuf>;

    /// Processes currently in the group (empty when it does not exist).
    fn pids(&self, name: &str) -> Vec<u32>;

    fn usage(&self, name: &str) -> CgroupUsage;

    fn exists(&self, name: &str) -> bool;

    /// Removes the group; it must hold no process. Removing a missing group succeeds. An
    /// implementation may keep the group, reset and renamed, as a spare for a later
    /// [`TaskCgroups::create`] (v1: see [`spares`]).
    fn remove(&self, name: &str) -> Result<(), CgroupError>;

    /// Removes the kept spare groups (at shutdown). Best effort.
    fn drain_spares(&self) {}

    /// Removes the spares and then the parent group if it holds no task group (best effort: a parent still in
    /// use stays). Used when the borglet leaves nothing behind (`kill_tasks_on_exit`).
    fn remove_parent(&self) -> Result<(), CgroupError>;

    /// Caps the group's CPU time at `millis` per second (CFS quota over
    /// [`CFS_PERIOD_US`]), or lifts the cap with `None`.
    fn set_cpu_cap(&self, name: &str, millis: Option<u64>) -> Result<(), CgroupError>;

    /// Directory of the group in the hierarchy that holds its memory controller (for
    /// operators and tests).
    fn memory_dir(&self, name: &str) -> PathBuf;
}

/// CFS period of CPU caps.
pub const CFS_PERIOD_US: u64 = 100_000;
/// Smallest CFS quota the kernel accepts.
pub const CFS_QUOTA_MIN_US: u64 = 1_000;

/// CFS quota (µs per [`CFS_PERIOD_US`]) that caps a group at `millis` of CPU.
pub fn cfs_quota_us(millis: u64) -> u64 {
    (millis.saturating_mul(CFS_PERIOD_US) / 1000).max(CFS_QUOTA_MIN_US)
}

/// Writes a cgroup setting file directly (for settings cgroups-rs does not cover uniformly).
pub(crate) fn write_setting(
    path: &std::path::Path,
    setting: &'static str,
    value: &str,
) -> Result<(), CgroupError> {
    std::fs::write(path.join(setting), value).map_err(|e| CgroupError::Limit {
        path: path.to_owned(),
        setting,
        value: value.to_owned(),
        message: e.to_string(),
    })
}

/// Checks that `path` is relative and each component is a valid name, so that joining it to a
/// mount point can never leave the borglet's part of the hierarchy.
pub fn validate_relative(path: &str) -> Result<(), CgroupError> {
    let ok = !path.is_empty()
        && !path.starts_with('/')
        && path.split('/').all(borg_model::is_valid_name);
    if ok {
        Ok(())
    } else {
        Err(CgroupError::InvalidName {
            name: path.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_accepted() {
        assert!(validate_relative("borg").is_ok());
        assert!(validate_relative("borg/test-1").is_ok());
        assert!(validate_relative("web.0.3").is_ok());
        assert!(validate_relative("").is_err());
        assert!(validate_relative("/borg").is_err());
        assert!(validate_relative("borg/../x").is_err());
        assert!(validate_relative("borg//x").is_err());
        assert!(validate_relative("..").is_err());
    }

    #[test]
    fn cpu_caps_map_to_cfs_quota() {
        assert_eq!(cfs_quota_us(1000), CFS_PERIOD_US);
        assert_eq!(cfs_quota_us(250), 25_000);
        assert_eq!(cfs_quota_us(0), CFS_QUOTA_MIN_US);
    }
}
