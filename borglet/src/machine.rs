//! What this machine offers: capacity read with procfs (and statvfs for disk) unless the
//! configuration overrides it.

use borg_model::Resources;
use procfs::{CpuInfo, Current, Meminfo};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum CapacityError {
    #[error("cannot read {file}: {message}")]
    Procfs { file: &'static str, message: String },
    #[error("/proc/cpuinfo lists no processors")]
    NoCores,
}

/// [`detect_capacity_at`] the root file system.
pub fn detect_capacity() -> Result<Resources, CapacityError> {
    detect_capacity_at(Path::new("/"))
}

/// Cores × 1000 millicores, MemTotal, and the disk space available in `data_dir`.
pub fn detect_capacity_at(data_dir: &Path) -> Result<Resources, CapacityError> {
    let cores = CpuInfo::current()
        .map_err(|e| CapacityError::Procfs {
            file: "/proc/cpuinfo",
            message: e.to_string(),
        })?
        .num_cores();
    if cores == 0 {
        return Err(CapacityError::NoCores);
    }
    let memory = Meminfo::current().map_err(|e| CapacityError::Procfs {
        file: "/proc/meminfo",
        message: e.to_string(),
    })?;
    Ok(Resources {
        cpu_millis: u64::try_from(cores)
            .unwrap_or(u64::MAX)
            .saturating_mul(1000),
        ram_bytes: memory.mem_total,
        disk_bytes: disk_available_bytes(data_dir),
        gpus: 0,
    })
}

/// Space available to unprivileged writers on the file system of `dir`; 0 if unknown.
fn disk_available_bytes(dir: &Path) -> u64 {
    match nix::sys::statvfs::statvfs(dir) {
        Ok(stat) => stat.blocks_available().saturating_mul(stat.fragment_size()),
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "cannot read free disk space; registering 0");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_matches_the_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let capacity = detect_capacity_at(dir.path()).unwrap();
        assert_eq!(detect_capacity().unwrap().cpu_millis, capacity.cpu_millis);
        let cores = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count() as u64;
        assert_eq!(capacity.cpu_millis, cores * 1000);
        let mem_total_kb: u64 = std::fs::read_to_string("/proc/meminfo")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        assert_eq!(capacity.ram_bytes, mem_total_kb * 1024);
        assert!(capacity.disk_bytes > 0);
    }
}
