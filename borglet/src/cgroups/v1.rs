//! cgroup v1: one hierarchy per controller; a task group is a directory of the same relative
//! path in each of the hierarchies the borglet uses (memory, cpu, cpuacct, pids).

use super::files::{read_keyed, read_pids, read_u64};
use super::spares::{
    spare_name, SparePool, CGROUP_SPARES_MAX, SPARE_MEMORY_BEFORE_RESET_MAX_BYTES,
    SPARE_MEMORY_RESIDUE_MAX_BYTES,
};
use super::{
    validate_relative, CgroupError, CgroupLimits, CgroupUsage, CgroupVersion, TaskCgroups,
};
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::MaxValue;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Mount points of the v1 hierarchies the borglet uses. `cpu` and `cpuacct` are often one
/// mount (`cpu,cpuacct`): the same path may appear twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Mounts {
    pub memory: PathBuf,
    pub cpu: PathBuf,
    pub cpuacct: Option<PathBuf>,
    pub pids: Option<PathBuf>,
}

impl V1Mounts {
    /// The usual layout under `root` (`root/memory`, `root/cpu`, ...).
    pub fn under(root: &Path) -> V1Mounts {
        V1Mounts {
            memory: root.join("memory"),
            cpu: root.join("cpu"),
            cpuacct: Some(root.join("cpuacct")),
            pids: Some(root.join("pids")),
        }
    }

    fn distinct(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = vec![&self.memory, &self.cpu];
        out.extend(self.cpuacct.as_deref());
        out.extend(self.pids.as_deref());
        let mut distinct: Vec<&Path> = Vec::with_capacity(out.len());
        for path in out {
            if !distinct.contains(&path) {
                distinct.push(path);
            }
        }
        distinct
    }
}

#[derive(Debug, Clone)]
pub struct V1Cgroups {
    mounts: V1Mounts,
    /// Relative path of the borglet's parent group in every hierarchy.
    parent: PathBuf,
    /// Finished tasks' groups kept, reset, for the next tasks.
    spares: Arc<SparePool>,
}

impl V1Cgroups {
    pub fn new(mounts: V1Mounts, parent: &str) -> Result<V1Cgroups, CgroupError> {
        validate_relative(parent)?;
        Ok(V1Cgroups {
            mounts,
            parent: PathBuf::from(parent),
            spares: Arc::new(SparePool::new(CGROUP_SPARES_MAX)),
        })
    }

    /// Keeps at most `max` finished groups for reuse (default [`CGROUP_SPARES_MAX`]; 0: none).
    pub fn with_spares_max(mut self, max: usize) -> V1Cgroups {
        self.spares = Arc::new(SparePool::new(max.min(CGROUP_SPARES_MAX)));
        self
    }

    fn dir(&self, mount: &Path, name: &str) -> PathBuf {
        mount.join(&self.parent).join(name)
    }

    /// Renames group `from` to `to` in every hierarchy, or in none: a failure renames back
    /// the hierarchies already done (best effort).
    fn rename_group(&self, from: &str, to: &str) -> std::io::Result<()> {
        let mounts = self.mounts.distinct();
        for (done, mount) in mounts.iter().enumerate() {
            if let Err(error) = std::fs::rename(self.dir(mount, from), self.dir(mount, to)) {
                for undo in &mounts[..done] {
                    let _ = std::fs::rename(self.dir(undo, to), self.dir(undo, from));
                }
                return Err(error);
            }
        }
        Ok(())
    }

    fn remove_group(&self, name: &str) -> Result<(), CgroupError> {
        for mount in self.mounts.distinct() {
            remove_dir(&self.dir(mount, name))?;
        }
        Ok(())
    }

    /// Makes a ready spare the group `name`; false when there is none (or it failed).
    fn reuse_spare(&self, name: &str) -> bool {
        let Some(slot) = self.spares.take_ready() else {
            return false;
        };
        let spare = spare_name(slot);
        let renamed = self.rename_group(&spare, name);
        if let Err(error) = &renamed {
            tracing::debug!(%spare, %error, "cannot reuse a spare cgroup: removing it");
            let _ = self.remove_group(&spare);
        }
        self.spares.put_free(slot);
        renamed.is_ok()
    }

    /// Keeps the finished group `name` as a spare if the pool has room and the group can be
    /// made as good as new (see [`Self::reset`]): no process, no OOM kill counted (the
    /// kernel's counter cannot be reset), memory charge emptied, CPU usage zeroed, no CPU cap.
    fn keep_spare(&self, name: &str) -> bool {
        let memory_dir = self.dir(&self.mounts.memory, name);
        if !memory_dir.is_dir() {
            return false;
        }
        let Some(slot) = self.spares.take_free() else {
            return false;
        };
        let kept = self.reset(name) && self.rename_group(name, &spare_name(slot)).is_ok();
        if kept {
            self.spares.put_ready(slot);
        } else {
            self.spares.put_free(slot);
        }
        kept
    }

    /// Resets an empty group's usage and CPU cap; false if it cannot be made clean.
    fn reset(&self, name: &str) -> bool {
        // Every process joins all the hierarchies at once (the join files), and the task's
        // drain checked this one: a process here is one that was moved in from outside.
        let memory_dir = self.dir(&self.mounts.memory, name);
        if !read_pids(&memory_dir.join("cgroup.procs")).is_empty()
            || read_keyed(&memory_dir.join("memory.oom_control"), "oom_kill") > 0
        {
            return false;
        }
        let charged = || read_u64(&memory_dir.join("memory.usage_in_bytes"));
        // A task that left no page cache leaves about the kernel's per-CPU precharge, which
        // the next task's charges use up: emptying it would cost a reclaim pass for nothing.
        let emptied = match charged() {
            bytes if bytes <= SPARE_MEMORY_RESIDUE_MAX_BYTES => true,
            bytes if bytes > SPARE_MEMORY_BEFORE_RESET_MAX_BYTES => false,
            _ => {
                super::write_setting(&memory_dir, "memory.force_empty", "0").is_ok()
                    && charged() <= SPARE_MEMORY_RESIDUE_MAX_BYTES
            }
        };
        let cpu_dir = self.dir(&self.mounts.cpu, name);
        emptied
            && super::write_setting(&cpu_dir, "cpu.cfs_quota_us", "-1").is_ok()
            && self.mounts.cpuacct.as_ref().is_none_or(|mount| {
                super::write_setting(&self.dir(mount, name), "cpuacct.usage", "0").is_ok()
            })
    }

    /// Removes the spares a previous run of the borglet left (all slots: the pool is bounded).
    fn remove_leftover_spares(&self) {
        for slot in 0..CGROUP_SPARES_MAX {
            if let Err(error) = self.remove_group(&spare_name(slot)) {
                tracing::warn!(%error, "cannot remove a leftover spare cgroup");
            }
        }
    }
}

pub(super) fn limit_error(
    path: &Path,
    setting: &'static str,
    value: impl ToString,
    error: cgroups_rs::fs::error::Error,
) -> CgroupError {
    CgroupError::Limit {
        path: path.to_owned(),
        setting,
        value: value.to_string(),
        message: error.to_string(),
    }
}

pub(super) fn create_dir(path: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir_all(path).map_err(|source| CgroupError::Create {
        path: path.to_owned(),
        source,
    })
}

pub(super) fn remove_dir(path: &Path) -> Result<(), CgroupError> {
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(CgroupError::Remove {
            path: path.to_owned(),
            message: error.to_string(),
        }),
    }
}

impl TaskCgroups for V1Cgroups {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }

    fn ensure_parent(&self) -> Result<(), CgroupError> {
        for mount in self.mounts.distinct() {
            create_dir(&mount.join(&self.parent))?;
        }
        self.remove_leftover_spares();
        Ok(())
    }

    fn create(&self, name: &str, limits: &CgroupLimits) -> Result<(), CgroupError> {
        validate_relative(name)?;
        let memory_dir = self.dir(&self.mounts.memory, name);
        // A spare carries the previous task's limits: every one is written, "none" too.
        let reused = !memory_dir.is_dir() && self.reuse_spare(name);
        if !reused {
            for mount in self.mounts.distinct() {
                create_dir(&self.dir(mount, name))?;
            }
        }
        let unlimited = reused.then_some(i64::MAX);
        if let Some(value) = limits
            .memory_bytes
            .map(|bytes| i64::try_from(bytes).unwrap_or(i64::MAX))
            .or(unlimited)
        {
            MemController::new(memory_dir.clone(), PathBuf::from("/"), false)
                .set_limit(value)
                .map_err(|e| limit_error(&memory_dir, "memory.limit_in_bytes", value, e))?;
        }
        let cpu_dir = self.dir(&self.mounts.cpu, name);
        CpuController::new(cpu_dir.clone(), PathBuf::from("/"), false)
            .set_shares(limits.cpu_shares)
            .map_err(|e| limit_error(&cpu_dir, "cpu.shares", limits.cpu_shares, e))?;
        let pids_max = match limits.pids_max {
            Some(max) => Some(MaxValue::Value(i64::try_from(max).unwrap_or(i64::MAX))),
            None => reused.then_some(MaxValue::Max),
        };
        if let (Some(pids_mount), Some(max)) = (&self.mounts.pids, pids_max) {
            let pids_dir = self.dir(pids_mount, name);
            PidController::new(pids_dir.clone(), PathBuf::from("/"), false)
                .set_pid_max(max)
                .map_err(|e| limit_error(&pids_dir, "pids.max", format!("{max:?}"), e))?;
        }
        Ok(())
    }

    fn join_files(&self, name: &str) -> Vec<PathBuf> {
        self.mounts
            .distinct()
            .into_iter()
            .map(|mount| self.dir(mount, name).join("cgroup.procs"))
            .collect()
    }

    fn pids(&self, name: &str) -> Vec<u32> {
        read_pids(&self.dir(&self.mounts.memory, name).join("cgroup.procs"))
    }

    fn usage(&self, name: &str) -> CgroupUsage {
        let memory_dir = self.dir(&self.mounts.memory, name);
        let cpu_usage_ns = match &self.mounts.cpuacct {
            Some(mount) => read_u64(&self.dir(mount, name).join("cpuacct.usage")),
            None => 0,
        };
        CgroupUsage {
            memory_bytes: read_u64(&memory_dir.join("memory.usage_in_bytes")),
            cpu_usage_ns,
            oom_kills: read_keyed(&memory_dir.join("memory.oom_control"), "oom_kill"),
        }
    }

    fn exists(&self, name: &str) -> bool {
        self.dir(&self.mounts.memory, name).is_dir()
    }

    fn remove(&self, name: &str) -> Result<(), CgroupError> {
        validate_relative(name)?;
        if self.keep_spare(name) {
            return Ok(());
        }
        self.remove_group(name)
    }

    fn drain_spares(&self) {
        for slot in self.spares.drain_ready() {
            if let Err(error) = self.remove_group(&spare_name(slot)) {
                tracing::warn!(%error, "cannot remove a spare cgroup");
            }
        }
    }

    fn remove_parent(&self) -> Result<(), CgroupError> {
        self.drain_spares();
        self.remove_leftover_spares();
        for mount in self.mounts.distinct() {
            remove_dir(&mount.join(&self.parent))?;
        }
        Ok(())
    }

    fn set_cpu_cap(&self, name: &str, millis: Option<u64>) -> Result<(), CgroupError> {
        validate_relative(name)?;
        let cpu_dir = self.dir(&self.mounts.cpu, name);
        super::write_setting(
            &cpu_dir,
            "cpu.cfs_period_us",
            &super::CFS_PERIOD_US.to_string(),
        )?;
        let quota = millis.map_or_else(|| "-1".to_owned(), |m| super::cfs_quota_us(m).to_string());
        super::write_setting(&cpu_dir, "cpu.cfs_quota_us", &quota)
    }

    fn memory_dir(&self, name: &str) -> PathBuf {
        self.dir(&self.mounts.memory, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (tempfile::TempDir, V1Cgroups) {
        let root = tempfile::tempdir().unwrap();
        for controller in ["memory", "cpu", "cpuacct", "pids"] {
            std::fs::create_dir(root.path().join(controller)).unwrap();
        }
        let cgroups = V1Cgroups::new(V1Mounts::under(root.path()), "borg").unwrap();
        (root, cgroups)
    }

    #[test]
    fn limits_are_written_in_each_used_hierarchy_only() {
        let (root, cgroups) = fixture();
        std::fs::create_dir(root.path().join("freezer")).unwrap();
        cgroups.ensure_parent().unwrap();
        let limits = CgroupLimits::for_task(&borg_model::Resources::new(500, 64 << 20), 100);
        cgroups.create("web.0.1", &limits).unwrap();
        let read = |p: &str| std::fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(
            read("memory/borg/web.0.1/memory.limit_in_bytes"),
            "67108864"
        );
        assert_eq!(read("cpu/borg/web.0.1/cpu.shares"), "512");
        assert_eq!(read("pids/borg/web.0.1/pids.max"), "100");
        assert!(root.path().join("cpuacct/borg/web.0.1").is_dir());
        assert!(!root.path().join("freezer/borg").exists());
        assert!(cgroups.exists("web.0.1"));
        let joins = cgroups.join_files("web.0.1");
        assert_eq!(joins.len(), 4);
        assert!(joins.contains(&root.path().join("memory/borg/web.0.1/cgroup.procs")));
    }

    #[test]
    fn usage_is_read_from_the_kernel_files() {
        let (root, cgroups) = fixture();
        cgroups
            .create(
                "web.0.1",
                &CgroupLimits::for_task(&borg_model::Resources::new(1, 1), 0),
            )
            .unwrap();
        let dir = root.path().join("memory/borg/web.0.1");
        std::fs::write(dir.join("memory.usage_in_bytes"), "4096\n").unwrap();
        std::fs::write(
            dir.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )
        .unwrap();
        std::fs::write(dir.join("cgroup.procs"), "10\n11\n").unwrap();
        std::fs::write(
            root.path().join("cpuacct/borg/web.0.1/cpuacct.usage"),
            "123456789\n",
        )
        .unwrap();
        assert_eq!(
            cgroups.usage("web.0.1"),
            CgroupUsage {
                memory_bytes: 4096,
                cpu_usage_ns: 123_456_789,
                oom_kills: 1
            }
        );
        assert_eq!(cgroups.pids("web.0.1"), vec![10, 11]);
        assert!(cgroups.pids("missing.0.1").is_empty());
    }

    #[test]
    fn co_mounted_hierarchies_are_used_once_and_names_cannot_escape() {
        let root = tempfile::tempdir().unwrap();
        let shared = root.path().join("cpu,cpuacct");
        let mounts = V1Mounts {
            memory: root.path().join("memory"),
            cpu: shared.clone(),
            cpuacct: Some(shared),
            pids: None,
        };
        let cgroups = V1Cgroups::new(mounts, "borg").unwrap();
        assert_eq!(cgroups.join_files("a.0.1").len(), 2);
        let limits = CgroupLimits::for_task(&borg_model::Resources::new(1, 1), 0);
        assert!(matches!(
            cgroups.create("../x", &limits),
            Err(CgroupError::InvalidName { .. })
        ));
        assert!(V1Cgroups::new(V1Mounts::under(root.path()), "/abs").is_err());
        assert!(cgroups.remove("never-made.0.1").is_ok());
    }
}
