//! Choosing the cgroup implementation for this machine.

use super::v1::{V1Cgroups, V1Mounts};
use super::v2::V2Cgroups;
use super::TaskCgroups;
use crate::config::CgroupMode;
use cgroups_rs::fs::hierarchies::{is_cgroup2_unified_mode, UNIFIED_MOUNTPOINT, V1};
use cgroups_rs::fs::Controllers;
use std::sync::Arc;

/// The cgroups tasks will run in, or why they run without.
#[derive(Debug, Clone)]
pub enum Detected {
    Enabled(Arc<dyn TaskCgroups>),
    Disabled { reason: String },
}

/// Auto mode uses cgroups when running as root and the hierarchy is writable (the parent group
/// is created here, which proves it). v2 is used when the unified hierarchy is mounted at
/// `/sys/fs/cgroup`; otherwise the v1 hierarchies of memory and cpu are required, and v1 keeps
/// up to `spares_max` finished groups for reuse.
pub fn detect(mode: CgroupMode, parent: &str, spares_max: usize) -> Detected {
    match try_detect(mode, parent, spares_max) {
        Ok(cgroups) => Detected::Enabled(cgroups),
        Err(reason) => Detected::Disabled { reason },
    }
}

fn try_detect(
    mode: CgroupMode,
    parent: &str,
    spares_max: usize,
) -> Result<Arc<dyn TaskCgroups>, String> {
    if mode == CgroupMode::Off {
        return Err("cgroups are turned off in the configuration".to_owned());
    }
    if !nix::unistd::geteuid().is_root() {
        return Err("the borglet does not run as root".to_owned());
    }
    let cgroups: Arc<dyn TaskCgroups> = if is_cgroup2_unified_mode() {
        let v2 = V2Cgroups::new(UNIFIED_MOUNTPOINT, parent).map_err(|e| e.to_string())?;
        if !v2.controllers().contains(&"memory") || !v2.controllers().contains(&"cpu") {
            return Err(format!(
                "the unified hierarchy at {UNIFIED_MOUNTPOINT} does not offer the memory and cpu controllers"
            ));
        }
        Arc::new(v2)
    } else {
        let hierarchy = V1::new();
        let mount = |c: Controllers| hierarchy.get_mount_point(c).map(|(point, _root)| point);
        let (Some(memory), Some(cpu)) = (mount(Controllers::Mem), mount(Controllers::Cpu)) else {
            return Err("no cgroup v1 memory and cpu hierarchies are mounted".to_owned());
        };
        let mounts = V1Mounts {
            memory,
            cpu,
            cpuacct: mount(Controllers::CpuAcct),
            pids: mount(Controllers::Pids),
        };
        let v1 = V1Cgroups::new(mounts, parent).map_err(|e| e.to_string())?;
        Arc::new(v1.with_spares_max(spares_max))
    };
    cgroups
        .ensure_parent()
        .map_err(|e| format!("the cgroup hierarchy is not writable: {e}"))?;
    Ok(cgroups)
}
