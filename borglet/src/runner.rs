//! Task processes: starting one (own session and process group, cgroup joined before exec,
//! own namespaces and unprivileged user, stdout/stderr to size-bounded files through its
//! keeper; see `child`), signalling its group, and describing how it ended.

use crate::child::{self, Prepared, PreparedIsolation, PreparedLog};
use crate::log_rotation::{rotated_paths, LogLimits};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

/// Everything needed to start one process of a task (sent to an exec'd keeper as JSON).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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
    pub isolation: Isolation,
    pub log: LogLimits,
}

/// How a task is separated from the machine and from other tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Isolation {
    /// Own PID, mount and UTS namespaces with a /proc of its own (needs root).
    pub namespaces: bool,
    /// Directory bind-mounted on /tmp (with `namespaces`).
    pub private_tmp: Option<PathBuf>,
    /// User the program runs as; `None` keeps the borglet's.
    pub user: Option<TaskUser>,
}

/// An unprivileged user that tasks run as.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
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
    #[error("cannot run the task keeper {program}: {source}")]
    Keeper {
        program: PathBuf,
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
    /// An exec'd keeper (see `keeper`), waited for through its pidfd.
    Keeper {
        pidfd: Option<std::os::fd::OwnedFd>,
        /// Registered with the runtime on the first wait.
        exit: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
        /// Where a keeper that is init reports the task's wait status.
        status: Option<File>,
        /// Its wait status once reaped.
        reaped: Option<ExitStatus>,
    },
    /// Started by an earlier run of the borglet.
    Adopted,
}

/// The task's wait status as its keeper (the namespace's init) reported it, if it did.
fn reported_status(status: Option<&mut File>) -> Option<ExitStatus> {
    use std::io::Read;
    let mut bytes = [0u8; 4];
    // The keeper wrote it before it exited: it is in the pipe now, or never will be.
    status?.read_exact(&mut bytes).ok()?;
    Some(ExitStatus::from_raw(i32::from_ne_bytes(bytes)))
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
            ProcessHandle::Keeper {
                pidfd,
                exit,
                status,
                reaped,
            } => {
                let pid = i32::try_from(self.pid).unwrap_or(0);
                loop {
                    if let Some(done) = reaped {
                        return Ok(Some(*done));
                    }
                    if exit.is_none() {
                        if let Some(fd) = pidfd.take() {
                            // SAFETY: the OwnedFd keeps the pidfd open, unchanged, for as
                            // long as it is registered (it is owned by the AsyncFd).
                            *exit = Some(unsafe {
                                tokio::io::unix::AsyncFd::register_with_interest(
                                    fd,
                                    tokio::io::Interest::READABLE,
                                )
                            }?);
                        }
                    }
                    let Some(watch) = exit.as_ref() else {
                        return Err(std::io::Error::other("the keeper's pidfd is gone"));
                    };
                    let mut ready = watch.readable().await?;
                    match child::try_reap(pid)? {
                        Some(raw) => {
                            let keeper = ExitStatus::from_raw(raw);
                            *reaped = Some(reported_status(status.as_mut()).unwrap_or(keeper));
                        }
                        None => ready.clear_ready(),
                    }
                }
            }
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

fn c_string(text: &[u8], what: &str) -> Result<CString, SpawnError> {
    CString::new(text).map_err(|_| SpawnError::Exec {
        program: what.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        ),
    })
}

fn c_path(path: &Path) -> Result<CString, SpawnError> {
    c_string(path.as_os_str().as_bytes(), &path.to_string_lossy())
}

/// The program's path: as given when it holds a slash, else the first executable file of
/// that name in the task's `PATH` (looked up before the fork, as a shell would).
pub fn resolve_program(program: &str, env: &BTreeMap<String, String>) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    if program.is_empty() {
        return None;
    }
    let search = env.get("PATH").map(String::as_str).unwrap_or("");
    search
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|path| {
            std::fs::metadata(path)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `file` is the log's current file if it exists already (a restarted task appends to it).
fn prepared_log(
    file: Option<&File>,
    path: &Path,
    limits: LogLimits,
) -> Result<PreparedLog, SpawnError> {
    Ok(PreparedLog {
        fd: file.map_or(-1, AsRawFd::as_raw_fd),
        size_bytes: file.and_then(|f| f.metadata().ok()).map_or(0, |m| m.len()),
        max_bytes: limits.max_bytes,
        paths: rotated_paths(path, limits.files_kept)
            .iter()
            .map(|p| c_path(p))
            .collect::<Result<_, _>>()?,
    })
}

/// Opens the log file if it exists; `None` when it does not yet, in a directory that does:
/// the keeper creates it on the task's first output (see `log_rotation`).
fn open_log(path: &Path) -> Result<Option<File>, SpawnError> {
    match OpenOptions::new().append(true).open(path) {
        Ok(file) => Ok(Some(file)),
        Err(error)
            if error.kind() == std::io::ErrorKind::NotFound
                && path.parent().is_some_and(Path::is_dir) =>
        {
            Ok(None)
        }
        Err(source) => Err(SpawnError::Log {
            path: path.to_owned(),
            source,
        }),
    }
}

/// What `spawn` and `run_inside` hand to the child, and the files it must keep open until the
/// fork is done.
pub(crate) struct PreparedLaunch {
    prepared: Prepared,
    program_path: PathBuf,
    open_files: Vec<File>,
}

impl PreparedLaunch {
    pub(crate) fn prepared(&self) -> &Prepared {
        &self.prepared
    }

    pub(crate) fn prepared_mut(&mut self) -> &mut Prepared {
        &mut self.prepared
    }
}

pub(crate) fn prepare(spec: &LaunchSpec) -> Result<PreparedLaunch, SpawnError> {
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
    let program_path =
        resolve_program(&spec.program, &spec.env).ok_or_else(|| SpawnError::Exec {
            program: spec.program.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such program in the task's PATH",
            ),
        })?;
    let argv = std::iter::once(spec.program.as_str())
        .chain(spec.args.iter().map(String::as_str))
        .map(|arg| c_string(arg.as_bytes(), "an argument"))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = spec
        .env
        .iter()
        .map(|(name, value)| c_string(format!("{name}={value}").as_bytes(), "the environment"))
        .collect::<Result<Vec<_>, _>>()?;
    let namespaces = match (spec.isolation.namespaces, &spec.isolation.private_tmp) {
        (false, _) => None,
        (true, tmp) => Some(PreparedIsolation {
            private_tmp: tmp.as_deref().map(c_path).transpose()?,
            sandbox_rebind: match (tmp, spec.cwd.strip_prefix("/tmp")) {
                (Some(_), Ok(relative)) if relative.components().next().is_some() => {
                    let mut dirs = Vec::new();
                    let mut path = PathBuf::from("/tmp");
                    for part in relative.components() {
                        path.push(part);
                        dirs.push(c_path(&path)?);
                    }
                    Some((c_path(&spec.cwd)?, dirs))
                }
                _ => None,
            },
        }),
    };
    let prepared = Prepared::new(
        c_path(&program_path)?,
        argv,
        envp,
        c_path(&spec.cwd)?,
        spec.isolation.user.as_ref().map(|u| (u.uid, u.gid)),
        namespaces,
        prepared_log(stdout.as_ref(), &spec.stdout, spec.log)?,
        prepared_log(stderr.as_ref(), &spec.stderr, spec.log)?,
        join_files.iter().map(AsRawFd::as_raw_fd).collect(),
    );
    let mut open_files = join_files;
    open_files.extend(stdout.into_iter().chain(stderr));
    Ok(PreparedLaunch {
        prepared,
        program_path,
        open_files,
    })
}

/// What a spawned child's stdin, stdout and stderr are.
enum ChildIo {
    /// All /dev/null (a task: its keeper writes the logs).
    Null,
    /// stdout and stderr piped to the borglet.
    Piped,
    /// All three the slave of a PTY.
    Terminal(OwnedFd),
}

/// Spawns the process that runs `body` in the child (it never execs itself; the program is
/// exec'd by a process it forks), with `io` as its stdin, stdout and stderr.
fn spawn_child(
    spec: &LaunchSpec,
    io: ChildIo,
    mut body: impl FnMut(&Prepared) -> std::io::Result<()> + Send + Sync + 'static,
) -> Result<tokio::process::Child, SpawnError> {
    let PreparedLaunch {
        prepared,
        program_path,
        open_files,
    } = prepare(spec)?;
    let spawn_error = |source| SpawnError::Exec {
        program: spec.program.clone(),
        source,
    };
    // The path is only what the child is named for; `body` decides what runs.
    let mut command = tokio::process::Command::new(&program_path);
    match io {
        ChildIo::Null => command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        ChildIo::Piped => command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true),
        ChildIo::Terminal(slave) => command
            .stdin(Stdio::from(slave.try_clone().map_err(spawn_error)?))
            .stdout(Stdio::from(slave.try_clone().map_err(spawn_error)?))
            .stderr(Stdio::from(slave))
            .kill_on_drop(true),
    };
    // SAFETY: the closure runs in the child between fork and exec and only makes
    // async-signal-safe system calls on data prepared above (see `child`), which stays alive
    // until the spawn returns because the command owns it.
    unsafe {
        command.pre_exec(move || body(&prepared));
    }
    let child = command.spawn().map_err(spawn_error)?;
    drop(command);
    drop(open_files);
    Ok(child)
}

/// Starts the task. Its keeper (see `child`) joins the task's cgroup and starts a new session
/// (so it leads its own process group) before anything else: everything the task runs is
/// accounted to it and can be signalled as a group. Returns once the program was exec'd (or
/// could not be). The keeper is the exec'd `keeper` program when given (see `keeper`), else
/// a fork of this process.
pub fn spawn(spec: &LaunchSpec, keeper: Option<&Path>) -> Result<TaskProcess, SpawnError> {
    let (pid, handle) = match keeper {
        Some(program) => {
            let started = crate::keeper::spawn(program, spec)?;
            let pid = u32::try_from(started.keeper.pid).unwrap_or(0);
            let handle = ProcessHandle::Keeper {
                pidfd: Some(started.keeper.pidfd),
                exit: None,
                status: started.status,
                reaped: None,
            };
            (pid, handle)
        }
        None => {
            let child = spawn_child(spec, ChildIo::Null, child::keeper)?;
            let pid = child.id().ok_or_else(|| SpawnError::Exec {
                program: spec.program.clone(),
                source: std::io::Error::other("the process exited before its pid was read"),
            })?;
            (pid, ProcessHandle::Child(child))
        }
    };
    Ok(TaskProcess {
        pid,
        // Set at fork; 0 only if the child is already gone.
        start_ticks: process_start_ticks(pid).unwrap_or(0),
        started_ms: borg_common::now_ms(),
        handle,
    })
}

/// Whether `pid` is PID 1 of a PID namespace below this one (a keeper that is its task's
/// init, see `child::spawn_keeper`).
pub fn is_namespace_init(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("NSpid:"))
            .is_some_and(|ids| {
                let ids: Vec<&str> = ids.split_whitespace().collect();
                ids.len() > 1 && ids.last() == Some(&"1")
            })
    })
}

/// The pid (in this PID namespace) of the program a task's keeper runs: the keeper's child,
/// or its grandchild when a namespace init stands between them; `None` when it is gone.
pub fn program_of_keeper(keeper_pid: u32, namespaces: bool) -> Option<u32> {
    let levels = if namespaces && !is_namespace_init(keeper_pid) {
        2
    } else {
        1
    };
    first_descendant(keeper_pid, levels)
}

/// The init of a task's PID namespace: its keeper, or the keeper's child.
pub fn namespace_init_of_keeper(keeper_pid: u32) -> Option<u32> {
    if is_namespace_init(keeper_pid) {
        Some(keeper_pid)
    } else {
        first_descendant(keeper_pid, 1)
    }
}

/// What a command run inside a task printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsideOutput {
    pub exit: TaskExit,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Output beyond the bound was dropped, or the command was killed at its timeout.
    pub truncated: bool,
    pub timed_out: bool,
}

/// Reads a stream to its end, keeping at most `max_bytes` of it; returns whether more came.
async fn read_bounded(
    stream: Option<impl tokio::io::AsyncRead + Unpin>,
    max_bytes: usize,
) -> (Vec<u8>, bool) {
    use tokio::io::AsyncReadExt;
    let (mut kept, mut dropped) = (Vec::new(), false);
    let Some(mut stream) = stream else {
        return (kept, dropped);
    };
    let mut buffer = [0u8; 8192];
    while let Ok(n) = stream.read(&mut buffer).await {
        if n == 0 {
            break;
        }
        let room = max_bytes.saturating_sub(kept.len()).min(n);
        kept.extend_from_slice(&buffer[..room]);
        dropped |= room < n;
    }
    (kept, dropped)
}

/// borgssh: runs `spec`'s program inside a running task, in its cgroup (`cgroup_join_files`)
/// and the namespaces open at `namespaces` (PID first), as the task user; killed with its
/// group after `timeout`. `spec`'s log paths are not used (give `/dev/null`).
pub async fn run_inside(
    spec: &LaunchSpec,
    namespaces: Vec<File>,
    timeout: std::time::Duration,
    output_max_bytes: usize,
) -> Result<InsideOutput, SpawnError> {
    let namespace_fds: Vec<i32> = namespaces.iter().map(AsRawFd::as_raw_fd).collect();
    let mut process = spawn_child(spec, ChildIo::Piped, move |prepared| {
        child::enter(prepared, &namespace_fds, false)
    })?;
    drop(namespaces);
    let pid = process.id().unwrap_or(0);
    let output = async {
        tokio::join!(
            read_bounded(process.stdout.take(), output_max_bytes),
            read_bounded(process.stderr.take(), output_max_bytes),
        )
    };
    let ((stdout, out_dropped), (stderr, err_dropped), timed_out) =
        match tokio::time::timeout(timeout, output).await {
            Ok((stdout, stderr)) => (stdout, stderr, false),
            Err(_) => {
                signal_group(pid, Signal::SIGKILL);
                ((Vec::new(), true), (Vec::new(), true), true)
            }
        };
    let status = match tokio::time::timeout(timeout, process.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            signal_group(pid, Signal::SIGKILL);
            process.wait().await.ok()
        }
    };
    Ok(InsideOutput {
        exit: status.map_or(TaskExit::Signal(9), TaskExit::from_status),
        stdout,
        stderr,
        truncated: out_dropped || err_dropped,
        timed_out,
    })
}

/// borgssh with a terminal: starts `spec`'s program inside a running task like `run_inside`,
/// on the PTY whose slave is `terminal` (its controlling terminal). The caller relays the
/// PTY's master and waits for the returned process, which exits the way the program did.
pub fn spawn_inside_terminal(
    spec: &LaunchSpec,
    namespaces: Vec<File>,
    terminal: OwnedFd,
) -> Result<tokio::process::Child, SpawnError> {
    let namespace_fds: Vec<i32> = namespaces.iter().map(AsRawFd::as_raw_fd).collect();
    let process = spawn_child(spec, ChildIo::Terminal(terminal), move |prepared| {
        child::enter(prepared, &namespace_fds, true)
    })?;
    drop(namespaces);
    Ok(process)
}

/// Follows the first child `levels` times from `pid` (keeper → init → program).
pub fn first_descendant(pid: u32, levels: u32) -> Option<u32> {
    let mut current = pid;
    for _ in 0..levels {
        let children =
            std::fs::read_to_string(format!("/proc/{current}/task/{current}/children")).ok()?;
        current = children.split_whitespace().next()?.parse().ok()?;
    }
    Some(current)
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
            isolation: Isolation::default(),
            log: LogLimits {
                max_bytes: 0,
                files_kept: 0,
            },
        }
    }

    #[tokio::test]
    async fn a_process_runs_in_its_own_session_with_only_the_given_env() {
        let dir = tempfile::tempdir().unwrap();
        let script = "echo $GREETING $HOME; echo oops >&2; cut -d' ' -f6 /proc/$$/stat; exit 3";
        let mut process = spawn(&spec(dir.path(), "/bin/sh", &["-c", script]), None).unwrap();
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
    async fn log_files_appear_only_for_output_and_a_restart_appends() {
        let dir = tempfile::tempdir().unwrap();
        let mut silent = spawn(&spec(dir.path(), "/bin/true", &[]), None).unwrap();
        silent.wait().await.unwrap();
        assert!(!dir.path().join("stdout").exists());
        assert!(!dir.path().join("stderr").exists());
        for _ in 0..2 {
            let mut talker = spawn(&spec(dir.path(), "/bin/echo", &["hi"]), None).unwrap();
            talker.wait().await.unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join("stdout")).unwrap(),
            "hi\nhi\n"
        );
        assert!(!dir.path().join("stderr").exists());
    }

    #[tokio::test]
    async fn a_missing_program_is_a_permanent_error() {
        let dir = tempfile::tempdir().unwrap();
        let error = spawn(&spec(dir.path(), "/nonexistent/program", &[]), None).unwrap_err();
        assert!(error.is_permanent(), "{error}");
        let error = spawn(
            &spec(dir.path().join("missing-dir").as_path(), "/bin/true", &[]),
            None,
        )
        .unwrap_err();
        assert!(matches!(error, SpawnError::Log { .. }), "{error}");
    }

    #[tokio::test]
    async fn the_group_is_signalled_and_the_exit_described() {
        let dir = tempfile::tempdir().unwrap();
        let mut process = spawn(&spec(dir.path(), "/bin/sleep", &["30"]), None).unwrap();
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
        let mut child = spawn(&spec(dir.path(), "/bin/sleep", &["30"]), None).unwrap();
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
