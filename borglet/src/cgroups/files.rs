//! Reading the small text files of a cgroup. Missing or malformed files read as zero: usage is
//! best effort and a group may vanish between two reads.

use std::path::Path;

/// A file holding a single number (`memory.usage_in_bytes`, `cpuacct.usage`).
pub(crate) fn read_u64(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

/// The value of `key` in a flat keyed file of `key value` lines (`memory.events`, `cpu.stat`).
pub(crate) fn read_keyed(path: &Path, key: &str) -> u64 {
    let Ok(text) = std::fs::read_to_string(path) else {
        return 0;
    };
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Process ids listed in a `cgroup.procs` file.
pub(crate) fn read_pids(path: &Path) -> Vec<u32> {
    std::fs::read_to_string(path)
        .map(|text| {
            text.lines()
                .filter_map(|line| line.trim().parse().ok())
                .filter(|&pid| pid > 0)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_files_read_as_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "12345\n").unwrap();
        assert_eq!(read_u64(&path), 12345);
        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(read_u64(&path), 0);
        assert_eq!(read_u64(&dir.path().join("missing")), 0);
        std::fs::write(&path, "low 0\nhigh 3\noom_kill 2\n").unwrap();
        assert_eq!(read_keyed(&path, "oom_kill"), 2);
        assert_eq!(read_keyed(&path, "oom"), 0);
        std::fs::write(&path, "12\nx\n0\n34\n").unwrap();
        assert_eq!(read_pids(&path), vec![12, 34]);
    }
}
