//! Size-bounded log files written by a task's keeper process (see `child`): a file never grows
//! past `max_bytes`; when the next write would not fit, `stdout` becomes `stdout.1`, `stdout.1`
//! becomes `stdout.2` and so on up to `files_kept`, and a new `stdout` is started.
//!
//! The current file is created on the first output, not at the start: most tasks of a batch
//! write nothing, and every file created is an inode the file system allocates and later frees.
//!
//! The writer runs between fork and exec-less exit, so it only makes system calls on
//! descriptors and paths prepared before the fork: no allocation.

use nix::libc::{self, c_int};
use std::ffi::CString;
use std::path::{Path, PathBuf};

/// Limits of each of a task's log streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogLimits {
    /// Largest size of one log file; 0 means unbounded (no rotation).
    pub max_bytes: u64,
    /// Rotated files kept besides the current one (`stdout.1` .. `stdout.N`).
    pub files_kept: u32,
}

/// The current file and its rotated predecessors, newest first: `stdout`, `stdout.1`, ...
pub fn rotated_paths(current: &Path, files_kept: u32) -> Vec<PathBuf> {
    let mut paths = vec![current.to_owned()];
    for n in 1..=files_kept {
        let mut name = current.as_os_str().to_owned();
        name.push(format!(".{n}"));
        paths.push(PathBuf::from(name));
    }
    paths
}

/// One log stream being written. `paths[0]` is the current file.
#[derive(Debug)]
pub struct RotatingLog<'a> {
    fd: c_int,
    size_bytes: u64,
    max_bytes: u64,
    paths: &'a [CString],
}

impl<'a> RotatingLog<'a> {
    /// `fd` is open on `paths[0]` for appending and holds `size_bytes` already, or is -1 when
    /// `paths[0]` does not exist yet (it is created on the first write).
    pub fn new(fd: c_int, size_bytes: u64, max_bytes: u64, paths: &'a [CString]) -> Self {
        RotatingLog {
            fd,
            size_bytes,
            max_bytes,
            paths,
        }
    }

    pub fn fd(&self) -> c_int {
        self.fd
    }

    /// Appends `data`, rotating first whenever it would not fit. A chunk is cut after its last
    /// newline that fits, so lines stay whole unless a single line exceeds a file.
    pub fn write(&mut self, mut data: &[u8]) {
        if self.fd < 0 && !data.is_empty() {
            self.open_current(0);
        }
        while !data.is_empty() {
            if self.max_bytes == 0 || self.size_bytes + data.len() as u64 <= self.max_bytes {
                self.write_raw(data);
                return;
            }
            let room = usize::try_from(self.max_bytes.saturating_sub(self.size_bytes))
                .unwrap_or(usize::MAX)
                .min(data.len());
            let cut = match data[..room].iter().rposition(|&b| b == b'\n') {
                Some(newline) => newline + 1,
                None if self.size_bytes > 0 => 0,
                None => room,
            };
            self.write_raw(&data[..cut]);
            data = &data[cut..];
            self.rotate();
        }
    }

    /// Writes everything (retrying partial writes); on an error the rest is dropped, since a
    /// task's output must never block the keeper.
    fn write_raw(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.fd >= 0 {
            // SAFETY: writes from a valid buffer to a descriptor this writer owns.
            let written = unsafe { libc::write(self.fd, data.as_ptr().cast(), data.len()) };
            if written < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return;
            }
            let written = written as usize;
            self.size_bytes += written as u64;
            data = &data[written..];
        }
    }

    fn rotate(&mut self) {
        // SAFETY: plain system calls on NUL-terminated paths prepared before the fork.
        unsafe {
            if self.fd >= 0 {
                libc::close(self.fd);
            }
            for n in (1..self.paths.len()).rev() {
                libc::rename(self.paths[n - 1].as_ptr(), self.paths[n].as_ptr());
            }
        }
        self.open_current(libc::O_TRUNC);
    }

    /// Opens (creating) the current file for appending; `size_bytes` is what it holds. On an
    /// error `fd` stays -1 and output is dropped until a later write opens it.
    fn open_current(&mut self, extra_flags: c_int) {
        // SAFETY: open and lseek on a NUL-terminated path prepared before the fork.
        unsafe {
            self.fd = libc::open(
                self.paths[0].as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC | extra_flags,
                0o640,
            );
            let end = if self.fd >= 0 {
                libc::lseek(self.fd, 0, libc::SEEK_END)
            } else {
                0
            };
            self.size_bytes = u64::try_from(end).unwrap_or(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;
    use std::os::unix::ffi::OsStrExt;

    fn c_paths(paths: &[PathBuf]) -> Vec<CString> {
        paths
            .iter()
            .map(|p| CString::new(p.as_os_str().as_bytes()).unwrap())
            .collect()
    }

    #[test]
    fn files_stay_within_the_limit_and_only_the_newest_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let paths = rotated_paths(&dir.path().join("stdout"), 2);
        let c = c_paths(&paths);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&paths[0])
            .unwrap();
        let mut log = RotatingLog::new(file.into_raw_fd(), 0, 100, &c);
        for n in 0..100 {
            log.write(format!("line {n:04}\n").as_bytes());
        }
        // SAFETY: the test owns the descriptor.
        unsafe { libc::close(log.fd()) };
        for path in &paths {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(
                text.len() <= 100,
                "{} holds {} bytes",
                path.display(),
                text.len()
            );
            assert!(text.ends_with('\n'), "lines are kept whole");
        }
        assert!(!dir.path().join("stdout.3").exists());
        let current = std::fs::read_to_string(&paths[0]).unwrap();
        assert!(current.ends_with("line 0099\n"), "{current}");
        let older = std::fs::read_to_string(&paths[1]).unwrap();
        assert!(older.ends_with("\n"));
        assert!(older < current, "stdout.1 holds older lines");
    }

    #[test]
    fn a_line_longer_than_a_file_is_split_and_zero_means_unbounded() {
        let dir = tempfile::tempdir().unwrap();
        let paths = rotated_paths(&dir.path().join("stderr"), 0);
        let c = c_paths(&paths);
        let file = std::fs::File::create(&paths[0]).unwrap();
        let mut log = RotatingLog::new(file.into_raw_fd(), 0, 10, &c);
        log.write(&[b'x'; 25]);
        unsafe { libc::close(log.fd()) };
        assert_eq!(std::fs::read(&paths[0]).unwrap().len(), 5);

        let file = std::fs::File::create(&paths[0]).unwrap();
        let mut log = RotatingLog::new(file.into_raw_fd(), 0, 0, &c);
        log.write(&[b'y'; 1000]);
        unsafe { libc::close(log.fd()) };
        assert_eq!(std::fs::read(&paths[0]).unwrap().len(), 1000);
    }

    #[test]
    fn the_file_is_created_on_the_first_output_only() {
        let dir = tempfile::tempdir().unwrap();
        let paths = rotated_paths(&dir.path().join("stdout"), 1);
        let c = c_paths(&paths);
        let mut log = RotatingLog::new(-1, 0, 10, &c);
        log.write(b"");
        assert!(!paths[0].exists(), "no output, no file");
        log.write(b"12345678\n");
        log.write(b"abc\n");
        unsafe { libc::close(log.fd()) };
        assert_eq!(std::fs::read_to_string(&paths[0]).unwrap(), "abc\n");
        assert_eq!(std::fs::read_to_string(&paths[1]).unwrap(), "12345678\n");
    }
}
