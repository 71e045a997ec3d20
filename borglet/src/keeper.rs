//! The keeper as a small program of its own (`borg-keeper`): the borglet starts it with
//! `posix_spawn` and hands it the task's launch spec, instead of forking itself. A fork copies
//! the borglet's page tables into the keeper (and again into the namespace init, a fork of
//! the keeper) and then makes every page the borglet writes fault while the copies live; an
//! exec'd keeper is a process of a few hundred kilobytes. What the keeper does is the same
//! code either way (`child::keeper`).
//!
//! Protocol: the keeper reads the JSON [`LaunchSpec`] from its stdin until end of file; its
//! stdout is the status pipe. It writes [`crate::child::STARTED`] once the program was exec'd,
//! or one JSON [`Failure`] when the start failed, and exits. A keeper that is the init of the
//! task's PID namespace keeps the pipe and writes the task's wait status (4 bytes, native
//! order) before it exits; any other closes it after `STARTED`.

use crate::runner::{self, LaunchSpec, SpawnError};
use nix::libc;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// File name of the keeper program, looked up next to the running binary.
pub const KEEPER_PROGRAM_NAME: &str = "borg-keeper";
/// Largest launch spec a keeper reads (arguments and environment of one task).
pub const SPEC_MAX_BYTES: u64 = 16 << 20;
/// Largest failure report the borglet reads back from a keeper.
const FAILURE_MAX_BYTES: u64 = 64 << 10;

/// `borg-keeper` in the directory of the running executable, if it is there: the keeper
/// installed beside `borg`.
pub fn program_next_to_current_exe() -> Option<PathBuf> {
    let path = std::env::current_exe()
        .ok()?
        .with_file_name(KEEPER_PROGRAM_NAME);
    path.is_file().then_some(path)
}

/// Checks that `program` is an executable file, so a misconfigured keeper stops the borglet
/// at start rather than failing every task.
pub fn check_program(program: &Path) -> Result<(), crate::BorgletError> {
    use std::os::unix::fs::PermissionsExt;
    let refuse = |reason: String| crate::BorgletError::KeeperProgram {
        path: program.to_owned(),
        reason,
    };
    let metadata = std::fs::metadata(program).map_err(|e| refuse(e.to_string()))?;
    if !metadata.is_file() || metadata.permissions().mode() & 0o111 == 0 {
        return Err(refuse("not an executable file".to_owned()));
    }
    Ok(())
}

/// Why a keeper could not start the task (what `SpawnError` holds, in a form that crosses a
/// pipe).
#[derive(Debug, Serialize, Deserialize)]
enum Failure {
    Log { path: PathBuf, error: WireError },
    CgroupJoin { path: PathBuf, error: WireError },
    Exec { program: String, error: WireError },
}

/// An `io::Error` as errno (which gives its kind back) and, for errors without one, a message.
#[derive(Debug, Serialize, Deserialize)]
struct WireError {
    errno: i32,
    message: Option<String>,
}

impl From<&std::io::Error> for WireError {
    fn from(error: &std::io::Error) -> WireError {
        use std::io::ErrorKind;
        match error.raw_os_error() {
            Some(errno) => WireError {
                errno,
                message: None,
            },
            None => WireError {
                errno: match error.kind() {
                    ErrorKind::NotFound => libc::ENOENT,
                    ErrorKind::PermissionDenied => libc::EACCES,
                    ErrorKind::InvalidInput => libc::EINVAL,
                    _ => libc::EIO,
                },
                message: Some(error.to_string()),
            },
        }
    }
}

impl From<WireError> for std::io::Error {
    fn from(wire: WireError) -> std::io::Error {
        let os = std::io::Error::from_raw_os_error(wire.errno);
        match wire.message {
            Some(message) => std::io::Error::new(os.kind(), message),
            None => os,
        }
    }
}

impl From<&SpawnError> for Failure {
    fn from(error: &SpawnError) -> Failure {
        match error {
            SpawnError::Log { path, source } => Failure::Log {
                path: path.clone(),
                error: source.into(),
            },
            SpawnError::CgroupJoin { path, source } => Failure::CgroupJoin {
                path: path.clone(),
                error: source.into(),
            },
            SpawnError::Exec { program, source } => Failure::Exec {
                program: program.clone(),
                error: source.into(),
            },
            SpawnError::Keeper { program, source } => Failure::Exec {
                program: program.display().to_string(),
                error: source.into(),
            },
        }
    }
}

impl From<Failure> for SpawnError {
    fn from(failure: Failure) -> SpawnError {
        match failure {
            Failure::Log { path, error } => SpawnError::Log {
                path,
                source: error.into(),
            },
            Failure::CgroupJoin { path, error } => SpawnError::CgroupJoin {
                path,
                source: error.into(),
            },
            Failure::Exec { program, error } => SpawnError::Exec {
                program,
                source: error.into(),
            },
        }
    }
}

/// A running keeper.
#[derive(Debug)]
pub(crate) struct KeeperProcess {
    pub(crate) keeper: crate::child::SpawnedKeeper,
    /// The report pipe of a keeper that is its namespace's init: it writes the task's wait
    /// status there before it exits (an init cannot die of the task's signal).
    pub(crate) status: Option<std::fs::File>,
}

/// Starts the keeper `program` for `spec` (with namespaces, cloned into them as their init)
/// and waits until the task's program was exec'd (or could not be). Blocking: call off the
/// async threads.
pub(crate) fn spawn(program: &Path, spec: &LaunchSpec) -> Result<KeeperProcess, SpawnError> {
    use std::os::unix::ffi::OsStrExt;
    let keeper_error = |source| SpawnError::Keeper {
        program: program.to_owned(),
        source,
    };
    let encoded = serde_json::to_vec(spec).map_err(|e| keeper_error(std::io::Error::other(e)))?;
    let program_c = std::ffi::CString::new(program.as_os_str().as_bytes()).map_err(|_| {
        keeper_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path contains a NUL byte",
        ))
    })?;
    let (spec_reader, spec_writer) = std::io::pipe().map_err(keeper_error)?;
    let (status_reader, status_writer) = std::io::pipe().map_err(keeper_error)?;
    let keeper = crate::child::spawn_keeper(
        &program_c,
        spec_reader.as_raw_fd(),
        status_writer.as_raw_fd(),
        spec.isolation.namespaces,
    )
    .map_err(keeper_error)?;
    // Our copies of the keeper's ends: the status pipe ends when the keeper closes it.
    drop(spec_reader);
    drop(status_writer);
    let mut spec_writer = spec_writer;
    let written = spec_writer.write_all(&encoded);
    drop(spec_writer);
    let mut status_reader = std::fs::File::from(std::os::fd::OwnedFd::from(status_reader));
    let mut first = [0u8; 1];
    let got = loop {
        match status_reader.read(&mut first) {
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            got => break got,
        }
    };
    if let Ok(1) = got {
        if first[0] == crate::child::STARTED {
            let is_init = spec.isolation.namespaces;
            // Read after the keeper exited, from an async thread: never block there (a
            // process forked meanwhile may briefly hold a copy of the write end).
            // SAFETY: sets O_NONBLOCK on our pipe end.
            unsafe { libc::fcntl(status_reader.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
            return Ok(KeeperProcess {
                keeper,
                status: is_init.then_some(status_reader),
            });
        }
    }
    // The start failed: the keeper reports why (or nothing) and exits.
    let mut report = first[..got.as_ref().map_or(0, |n| *n)].to_vec();
    let read = (&mut status_reader)
        .take(FAILURE_MAX_BYTES)
        .read_to_end(&mut report);
    crate::child::reap(keeper.pid);
    read.map_err(keeper_error)?;
    got.map_err(keeper_error)?;
    written.map_err(keeper_error)?;
    if report.is_empty() {
        return Err(keeper_error(std::io::Error::other(
            "the keeper ended without starting the task",
        )));
    }
    let failure: Failure = serde_json::from_slice(&report).map_err(|e| {
        keeper_error(std::io::Error::other(format!(
            "unreadable report from the keeper: {e}"
        )))
    })?;
    Err(failure.into())
}

/// Duplicates `fd` to a close-on-exec descriptor of 3 or more.
fn dup_cloexec(fd: i32) -> std::io::Result<i32> {
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor of this process.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(new)
    }
}

/// Points `fd` at /dev/null.
fn null_fd(fd: i32) {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        // SAFETY: dup2 onto one of this process's standard descriptors.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
}

fn report(status_fd: i32, error: &SpawnError) -> ! {
    if let Ok(encoded) = serde_json::to_vec(&Failure::from(error)) {
        // SAFETY: writes a buffer to the status pipe.
        unsafe { libc::write(status_fd, encoded.as_ptr().cast(), encoded.len()) };
    }
    std::process::exit(127)
}

/// The `borg-keeper` program: reads the spec, starts the task and lives as its keeper (see
/// `child::keeper`); exits the way the task did.
pub fn main() -> ! {
    let status_fd = match dup_cloexec(1) {
        Ok(fd) => fd,
        Err(_) => std::process::exit(127),
    };
    null_fd(1);
    let mut encoded = Vec::new();
    let read = std::io::stdin()
        .lock()
        .take(SPEC_MAX_BYTES)
        .read_to_end(&mut encoded);
    null_fd(0);
    let spec: LaunchSpec = match read
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_slice(&encoded).map_err(|e| e.to_string()))
    {
        Ok(spec) => spec,
        Err(message) => report(
            status_fd,
            &SpawnError::Exec {
                program: KEEPER_PROGRAM_NAME.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("the keeper could not read its launch spec: {message}"),
                ),
            },
        ),
    };
    drop(encoded);
    let mut launch = match runner::prepare(&spec) {
        Ok(launch) => launch,
        Err(error) => report(status_fd, &error),
    };
    // Cloned into the task's namespaces by the borglet (`child::spawn_keeper`): their init.
    launch.prepared_mut().keeper_is_init = spec.isolation.namespaces && std::process::id() == 1;
    launch.prepared_mut().report_fd = status_fd;
    // Returns only if the start failed; on success it closes the status pipe (with every
    // other descriptor it does not keep) and later exits like the task.
    let error = match crate::child::keeper(launch.prepared()) {
        Ok(()) => std::io::Error::other("the keeper returned without starting the task"),
        Err(error) => error,
    };
    report(
        status_fd,
        &SpawnError::Exec {
            program: spec.program.clone(),
            source: error,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_executable_file_is_accepted_as_the_keeper() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_program(&dir.path().join("missing")).is_err());
        assert!(check_program(dir.path()).is_err());
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        assert!(check_program(&plain).is_err());
        assert!(check_program(Path::new("/bin/true")).is_ok());
    }

    /// A start error crosses the pipe with its path and kind, so a missing program still fails
    /// the task at once and a log error names its file.
    #[test]
    fn start_errors_cross_the_status_pipe_intact() {
        let round_trip = |error: SpawnError| -> SpawnError {
            let encoded = serde_json::to_vec(&Failure::from(&error)).unwrap();
            serde_json::from_slice::<Failure>(&encoded).unwrap().into()
        };
        let missing = round_trip(SpawnError::Exec {
            program: "nope".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such program"),
        });
        assert!(missing.is_permanent(), "{missing}");
        assert!(missing.to_string().contains("no such program"), "{missing}");
        let log = round_trip(SpawnError::Log {
            path: "/x/stdout".into(),
            source: std::io::Error::from_raw_os_error(libc::EACCES),
        });
        assert!(matches!(&log, SpawnError::Log { path, source }
            if path == Path::new("/x/stdout") && source.raw_os_error() == Some(libc::EACCES)));
        assert!(!log.is_permanent());
    }
}
