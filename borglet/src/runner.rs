//! Task processes: starting one (own session and process group, cgroup joined before exec,
//! stdout/stderr to files), signalling its group, and describing how it ended.

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

/// Everything needed to start one process of a task.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub program: String,
    pub args: Vec<String>,
    /// The complete environment (nothing is inherited from the borglet).
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// `cgroup.procs` files the child writes "0" to before exec (see `TaskCgroups::join_files`).
    pub cgroup_join_files: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot open log file {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open {path} to join the task's cgroup: {source}")]
    CgroupJoin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {program:?}: {source}")]
    Exec {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

impl SpawnError {
    /// Errors that another attempt cannot fix (no such program, not executable, bad argv or
    /// env): the task fails at once instead of going through its restart policy.
    pub fn is_permanent(&self) -> bool {
        use std::io::ErrorKind::{InvalidInput, NotFound, PermissionDenied};
        match self {
            SpawnError::Exec { source, .. } => {
                matches!(source.kind(), NotFound | PermissionDenied | InvalidInput)
            }
            _ => false,
        }
    }
}

/// How often an adopted process (not a child of this borglet, so not waitable) is checked
/// for exit.
pub const ADOPTED_EXIT_POLL_MS: u64 = 200;

/// A task process. Dropping it does not kill the process (tasks outlive the borglet); tokio
/// reaps a child in the background if it exits while this process still runs.
#[derive(Debug)]
pub struct TaskProcess {
    pid: u32,
    /// Start time in clock ticks since boot: with the pid, identifies the process.
    start_ticks: u64,
    started_ms: u64,
    handle: ProcessHandle,
}

#[derive(Debug)]
enum ProcessHandle {
    Child(tokio::process::Child),
    /// Started by an earlier run of the borglet.
    Adopted,
}

impl TaskProcess {
    /// Takes over a process started by an earlier run of the borglet, if `pid` still names
    /// that process (same start time) and it has not exited.
    pub fn adopt(pid: u32, start_ticks: u64, started_ms: u64) -> Option<TaskProcess> {
        (process_start_ticks(pid) == Some(start_ticks)).then_some(TaskProcess {
            pid,
            start_ticks,
            started_ms,
            handle: ProcessHandle::Adopted,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn start_ticks(&self) -> u64 {
        self.start_ticks
    }

    /// Wall-clock time the process was started (ms since the Unix epoch).
    pub fn started_ms(&self) -> u64 {
        self.started_ms
    }

    /// Waits for the process to exit and reaps it. The status is `None` for an adopted
    /// process: only its parent (now init) learns how it ended.
    pub async fn wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        match &mut self.handle {
            ProcessHandle::Child(child) => child.wait().await.map(Some),
            ProcessHandle::Adopted => {
                while process_start_ticks(self.pid) == Some(self.start_ticks) {
                    tokio::time::sleep(std::time::Duration::from_millis(ADOPTED_EXIT_POLL_MS))
                        .await;
                }
                Ok(None)
            }
        }
    }
}

/// Start time (clock ticks since boot) of a live process; `None` when it is gone or a zombie.
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = procfs::process::Process::new(i32::try_from(pid).ok()?)
        .ok()?
        .stat()
        .ok()?;
    (!matches!(stat.state, 'Z' | 'X' | 'x')).then_some(stat.starttime)
}

fn open_log(path: &Path) -> Result<File, SpawnError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| SpawnError::Log {
            path: path.to_owned(),
            source,
        })
}

/// Starts the process. The child joins the task's cgroup and starts a new session (so it leads
/// its own process group) before exec: everything it runs is accounted to the task and can be
/// signalled as a group.
pub fn spawn(spec: &LaunchSpec) -> Result<TaskProcess, SpawnError> {
    let stdout = open_log(&spec.stdout)?;
    let stderr = open_log(&spec.stderr)?;
    // Opened here, written in the child: opening files between fork and exec is not safe.
    // The files are close-on-exec, so the task never sees them.
    let join_files: Vec<File> = spec
        .cgroup_join_files
        .iter()
        .map(|path| {
            OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|source| SpawnError::CgroupJoin {
                    path: path.clone(),
                    source,
                })
        })
        .collect::<Result<_, _>>()?;
    let join_fds: Vec<i32> = join_files.iter().map(AsRawFd::as_raw_fd).collect();

    let mut command = tokio::process::Command::new(&spec.program);
    command
        .args(&spec.args)
        .env_clear()
        .envs(&spec.env)
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .kill_on_drop(false);
    // SAFETY: the closure runs in the child between fork and exec and only makes
    // async-signal-safe system calls (write, setsid) on descriptors opened before the fork,
    // which stay open until `spawn` returns because `join_files` outlives it.
    unsafe {
        command.pre_exec(move || {
            for &fd in &join_fds {
                let fd = BorrowedFd::borrow_raw(fd);
                nix::unistd::write(fd, b"0").map_err(std::io::Error::from)?;
            }
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let child = command.spawn().map_err(|source| SpawnError::Exec {
        program: spec.program.clone(),
        source,
    })?;
    drop(join_files);
    let pid = child.id().ok_or_else(|| SpawnError::Exec {
        program: spec.program.clone(),
        source: std::io::Error::other("the process exited before its pid was read"),
    })?;
    Ok(TaskProcess {
        pid,
        // Set at fork, unchanged by exec; 0 only if the child is already gone.
        start_ticks: process_start_ticks(pid).unwrap_or(0),
        started_ms: borg_common::now_ms(),
        handle: ProcessHandle::Child(child),
    })
}

/// A pid the borglet may signal: never 0, 1 or itself (0 and negative values would address
/// the borglet's own group or every process).
fn signalable(pid: u32) -> Option<Pid> {
    let raw = i32::try_from(pid).ok()?;
    (raw > 1 && pid != std::process::id()).then(|| Pid::from_raw(raw))
}

/// Signals the process group led by `leader_pid` (the task's session). Returns whether any
/// process received it.
pub fn signal_group(leader_pid: u32, signal: Signal) -> bool {
    signalable(leader_pid).is_some_and(|pgid| killpg(pgid, signal).is_ok())
}

/// Signals each of `pids` (processes of a task cgroup, which may have left the group).
pub fn signal_pids(pids: &[u32], signal: Signal) {
    for &pid in pids {
        if let Some(pid) = signalable(pid) {
            let _ = kill(pid, signal);
        }
    }
}

/// How a task process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskExit {
    Code(i32),
    Signal(i32),
}

impl TaskExit {
    pub fn from_status(status: ExitStatus) -> TaskExit {
        match (status.code(), status.signal()) {
            (Some(code), _) => TaskExit::Code(code),
            (None, Some(signal)) => TaskExit::Signal(signal),
            (None, None) => TaskExit::Code(-1),
        }
    }

    pub fn success(self) -> bool {
        self == TaskExit::Code(0)
    }

    /// The reported exit code: the code, or 128 + the signal number (the shell's convention).
    pub fn exit_code(self) -> i32 {
        match self {
            TaskExit::Code(code) => code,
            TaskExit::Signal(signal) => 128 + signal,
        }
    }

    pub fn describe(self) -> String {
        match self {
            TaskExit::Code(code) => format!("exited with code {code}"),
            TaskExit::Signal(signal) => match Signal::try_from(signal) {
                Ok(name) => format!("killed by signal {signal} ({})", name.as_str()),
                Err(_) => format!("killed by signal {signal}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, program: &str, args: &[&str]) -> LaunchSpec {
        LaunchSpec {
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::from([("GREETING".to_owned(), "hi".to_owned())]),
            cwd: dir.to_owned(),
            stdout: dir.join("stdout"),
            stderr: dir.join("stderr"),
            cgroup_join_files: vec![],
        }
    }

    #[tokio::test]
    async fn a_process_runs_in_its_own_session_with_only_the_given_env() {
        let dir = tempfile::tempdir().unwrap();
        let script = "echo $GREETING $HOME; echo oops >&2; cut -d' ' -f6 /proc/$$/stat; exit 3";
        let mut process = spawn(&spec(dir.path(), "/bin/sh", &["-c", script])).unwrap();
        let status = process.wait().await.unwrap().unwrap();
        assert_eq!(TaskExit::from_status(status), TaskExit::Code(3));
        let stdout = std::fs::read_to_string(dir.path().join("stdout")).unwrap();
        let mut lines = stdout.lines();
        assert_eq!(lines.next(), Some("hi"));
        assert_eq!(lines.next(), Some(process.pid().to_string().as_str()));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("stderr")).unwrap(),
            "oops\n"
        );
    }

    #[tokio::test]
    async fn a_missing_program_is_a_permanent_error() {
        let dir = tempfile::tempdir().unwrap();
        let error = spawn(&spec(dir.path(), "/nonexistent/program", &[])).unwrap_err();
        assert!(error.is_permanent(), "{error}");
        let error = spawn(&spec(
            dir.path().join("missing-dir").as_path(),
            "/bin/true",
            &[],
        ))
        .unwrap_err();
        assert!(matches!(error, SpawnError::Log { .. }), "{error}");
    }

    #[tokio::test]
    async fn the_group_is_signalled_and_the_exit_described() {
        let dir = tempfile::tempdir().unwrap();
        let mut process = spawn(&spec(dir.path(), "/bin/sleep", &["30"])).unwrap();
        assert!(signal_group(process.pid(), Signal::SIGKILL));
        let exit = TaskExit::from_status(process.wait().await.unwrap().unwrap());
        assert_eq!(exit, TaskExit::Signal(9));
        assert_eq!(exit.exit_code(), 137);
        assert_eq!(exit.describe(), "killed by signal 9 (SIGKILL)");
        assert!(!signal_group(0, Signal::SIGTERM));
        assert!(!signal_group(1, Signal::SIGTERM));
        assert!(!signal_group(std::process::id(), Signal::SIGTERM));
    }

    #[tokio::test]
    async fn a_process_can_be_adopted_only_while_it_is_the_same_process() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn(&spec(dir.path(), "/bin/sleep", &["30"])).unwrap();
        let ticks = child.start_ticks();
        assert!(ticks > 0);
        assert!(TaskProcess::adopt(child.pid(), ticks + 1, 0).is_none());
        let mut adopted = TaskProcess::adopt(child.pid(), ticks, 5).unwrap();
        assert_eq!(adopted.started_ms(), 5);
        assert!(signal_group(child.pid(), Signal::SIGKILL));
        child.wait().await.unwrap();
        assert_eq!(adopted.wait().await.unwrap(), None);
        assert!(TaskProcess::adopt(child.pid(), ticks, 0).is_none());
    }
}
