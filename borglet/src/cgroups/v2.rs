//! cgroup v2: one unified hierarchy. The borglet's parent group gets the controllers it uses
//! delegated (`cgroup.subtree_control` of every ancestor from the root); each task group is a
//! child of the parent.

use super::files::{read_keyed, read_pids, read_u64};
use super::limits::cpu_weight;
use super::v1::{create_dir, limit_error, remove_dir};
use super::{
    validate_relative, CgroupError, CgroupLimits, CgroupUsage, CgroupVersion, TaskCgroups,
};
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::MaxValue;
use std::path::{Path, PathBuf};

/// Controllers the borglet delegates to its parent, in the order written.
pub const V2_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

#[derive(Debug, Clone)]
pub struct V2Cgroups {
    /// Mount point of the unified hierarchy (`/sys/fs/cgroup`).
    root: PathBuf,
    parent: PathBuf,
    /// The subset of [`V2_CONTROLLERS`] the root offers (`cgroup.controllers`).
    controllers: Vec<&'static str>,
}

impl V2Cgroups {
    pub fn new(root: impl Into<PathBuf>, parent: &str) -> Result<V2Cgroups, CgroupError> {
        validate_relative(parent)?;
        let root = root.into();
        let offered = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        let offered: Vec<&str> = offered.split_whitespace().collect();
        let controllers = V2_CONTROLLERS
            .into_iter()
            .filter(|c| offered.contains(c))
            .collect();
        Ok(V2Cgroups {
            root,
            parent: PathBuf::from(parent),
            controllers,
        })
    }

    /// Controllers available to task groups.
    pub fn controllers(&self) -> &[&'static str] {
        &self.controllers
    }

    fn has(&self, controller: &str) -> bool {
        self.controllers.contains(&controller)
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(&self.parent).join(name)
    }

    fn delegate(&self, group: &Path) -> Result<(), CgroupError> {
        if self.controllers.is_empty() {
            return Ok(());
        }
        let path = group.join("cgroup.subtree_control");
        let value = self
            .controllers
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(" ");
        std::fs::write(&path, &value).map_err(|error| CgroupError::Limit {
            path,
            setting: "cgroup.subtree_control",
            value,
            message: error.to_string(),
        })
    }
}

impl TaskCgroups for V2Cgroups {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn ensure_parent(&self) -> Result<(), CgroupError> {
        let mut group = self.root.clone();
        self.delegate(&group)?;
        for component in self.parent.components() {
            group.push(component);
            create_dir(&group)?;
            self.delegate(&group)?;
        }
        Ok(())
    }

    fn create(&self, name: &str, limits: &CgroupLimits) -> Result<(), CgroupError> {
        validate_relative(name)?;
        let dir = self.dir(name);
        create_dir(&dir)?;
        if let (true, Some(bytes)) = (self.has("memory"), limits.memory_bytes) {
            let value = i64::try_from(bytes).unwrap_or(i64::MAX);
            MemController::new(dir.clone(), PathBuf::new(), true)
                .set_limit(value)
                .map_err(|e| limit_error(&dir, "memory.max", value, e))?;
        }
        if self.has("cpu") {
            let weight = cpu_weight(limits.cpu_shares);
            CpuController::new(dir.clone(), PathBuf::new(), true)
                .set_shares(weight)
                .map_err(|e| limit_error(&dir, "cpu.weight", weight, e))?;
        }
        if let (true, Some(max)) = (self.has("pids"), limits.pids_max) {
            let value = i64::try_from(max).unwrap_or(i64::MAX);
            PidController::new(dir.clone(), PathBuf::new(), true)
                .set_pid_max(MaxValue::Value(value))
                .map_err(|e| limit_error(&dir, "pids.max", value, e))?;
        }
        Ok(())
    }

    fn join_files(&self, name: &str) -> Vec<PathBuf> {
        vec![self.dir(name).join("cgroup.procs")]
    }

    fn pids(&self, name: &str) -> Vec<u32> {
        read_pids(&self.dir(name).join("cgroup.procs"))
    }

    fn usage(&self, name: &str) -> CgroupUsage {
        let dir = self.dir(name);
        CgroupUsage {
            memory_bytes: read_u64(&dir.join("memory.current")),
            cpu_usage_ns: read_keyed(&dir.join("cpu.stat"), "usage_usec").saturating_mul(1000),
            oom_kills: read_keyed(&dir.join("memory.events"), "oom_kill"),
        }
    }

    fn exists(&self, name: &str) -> bool {
        self.dir(name).is_dir()
    }

    fn remove(&self, name: &str) -> Result<(), CgroupError> {
        validate_relative(name)?;
        remove_dir(&self.dir(name))
    }

    fn remove_parent(&self) -> Result<(), CgroupError> {
        remove_dir(&self.root.join(&self.parent))
    }

    fn set_cpu_cap(&self, name: &str, millis: Option<u64>) -> Result<(), CgroupError> {
        validate_relative(name)?;
        if !self.has("cpu") {
            return Ok(());
        }
        let quota = millis.map_or_else(|| "max".to_owned(), |m| super::cfs_quota_us(m).to_string());
        let value = format!("{quota} {}", super::CFS_PERIOD_US);
        super::write_setting(&self.dir(name), "cpu.max", &value)
    }

    fn memory_dir(&self, name: &str) -> PathBuf {
        self.dir(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A unified hierarchy as the kernel lays it out, as far as the borglet reads it.
    fn fixture(controllers: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), controllers).unwrap();
        std::fs::write(root.path().join("cgroup.subtree_control"), "").unwrap();
        root
    }

    #[test]
    fn the_parent_is_delegated_and_limits_use_v2_files() {
        let root = fixture("cpuset cpu io memory hugetlb pids rdma\n");
        let cgroups = V2Cgroups::new(root.path(), "borg/cell-a").unwrap();
        assert_eq!(cgroups.controllers(), &["cpu", "memory", "pids"]);
        cgroups.ensure_parent().unwrap();
        let read = |p: &str| std::fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(read("cgroup.subtree_control"), "+cpu +memory +pids");
        assert_eq!(read("borg/cgroup.subtree_control"), "+cpu +memory +pids");
        assert_eq!(
            read("borg/cell-a/cgroup.subtree_control"),
            "+cpu +memory +pids"
        );

        let limits = CgroupLimits::for_task(&borg_model::Resources::new(1000, 128 << 20), 64);
        cgroups.create("web.3.7", &limits).unwrap();
        assert_eq!(read("borg/cell-a/web.3.7/memory.max"), "134217728");
        assert_eq!(read("borg/cell-a/web.3.7/cpu.weight"), "39");
        assert_eq!(read("borg/cell-a/web.3.7/pids.max"), "64");
        assert_eq!(
            cgroups.join_files("web.3.7"),
            vec![root.path().join("borg/cell-a/web.3.7/cgroup.procs")]
        );
    }

    #[test]
    fn missing_controllers_are_skipped_and_usage_is_read() {
        let root = fixture("memory\n");
        let cgroups = V2Cgroups::new(root.path(), "borg").unwrap();
        cgroups.ensure_parent().unwrap();
        let limits = CgroupLimits::for_task(&borg_model::Resources::new(1000, 1 << 20), 64);
        cgroups.create("a.0.1", &limits).unwrap();
        let dir = root.path().join("borg/a.0.1");
        assert!(dir.join("memory.max").exists());
        assert!(!dir.join("cpu.weight").exists());
        assert!(!dir.join("pids.max").exists());
        std::fs::write(dir.join("memory.current"), "8192\n").unwrap();
        std::fs::write(dir.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").unwrap();
        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(
            cgroups.usage("a.0.1"),
            CgroupUsage {
                memory_bytes: 8192,
                cpu_usage_ns: 1_500_000,
                oom_kills: 1
            }
        );
    }
}
