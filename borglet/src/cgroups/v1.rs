//! cgroup v1: one hierarchy per controller; a task group is a directory of the same relative
//! path in each of the hierarchies the borglet uses (memory, cpu, cpuacct, pids).

use super::files::{read_keyed, read_pids, read_u64};
use super::{
    validate_relative, CgroupError, CgroupLimits, CgroupUsage, CgroupVersion, TaskCgroups,
};
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::MaxValue;
use std::path::{Path, PathBuf};

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
}

impl V1Cgroups {
    pub fn new(mounts: V1Mounts, parent: &str) -> Result<V1Cgroups, CgroupError> {
        validate_relative(parent)?;
        Ok(V1Cgroups {
            mounts,
            parent: PathBuf::from(parent),
        })
    }

    fn dir(&self, mount: &Path, name: &str) -> PathBuf {
        mount.join(&self.parent).join(name)
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
        Ok(())
    }

    fn create(&self, name: &str, limits: &CgroupLimits) -> Result<(), CgroupError> {
        validate_relative(name)?;
        for mount in self.mounts.distinct() {
            create_dir(&self.dir(mount, name))?;
        }
        let memory_dir = self.dir(&self.mounts.memory, name);
        if let Some(bytes) = limits.memory_bytes {
            let value = i64::try_from(bytes).unwrap_or(i64::MAX);
            MemController::new(memory_dir.clone(), PathBuf::from("/"), false)
                .set_limit(value)
                .map_err(|e| limit_error(&memory_dir, "memory.limit_in_bytes", value, e))?;
        }
        let cpu_dir = self.dir(&self.mounts.cpu, name);
        CpuController::new(cpu_dir.clone(), PathBuf::from("/"), false)
            .set_shares(limits.cpu_shares)
            .map_err(|e| limit_error(&cpu_dir, "cpu.shares", limits.cpu_shares, e))?;
        if let (Some(pids_mount), Some(max)) = (&self.mounts.pids, limits.pids_max) {
            let pids_dir = self.dir(pids_mount, name);
            let value = i64::try_from(max).unwrap_or(i64::MAX);
            PidController::new(pids_dir.clone(), PathBuf::from("/"), false)
                .set_pid_max(MaxValue::Value(value))
                .map_err(|e| limit_error(&pids_dir, "pids.max", value, e))?;
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
        for mount in self.mounts.distinct() {
            remove_dir(&self.dir(mount, name))?;
        }
        Ok(())
    }

    fn remove_parent(&self) -> Result<(), CgroupError> {
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
