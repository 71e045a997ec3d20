//! What runs in a task's processes before the program: code between fork and exec (or exit)
//! of a multi-threaded borglet, so only async-signal-safe system calls on data prepared
//! before the fork, no allocation, and raw `clone` instead of libc's `fork` (whose handlers
//! take locks another borglet thread may have held).
//!
//! - **keeper**: the process the borglet spawns (the exec'd `borg-keeper` program running this
//!   code, see `keeper`, or a fork of the borglet). It joins the task cgroup, leads a new
//!   session, sets up the namespaces, starts the task, copies the task's stdout and stderr
//!   into size-bounded files, and exits the way the task did. It lives as long as the task,
//!   also across borglet restarts.
//! - **init**: PID 1 of the task's PID namespace. It mounts the namespace's /proc, starts the
//!   task and reaps the orphans of the namespace. The kernel does not deliver to a namespace
//!   init the signals it has no handler for, so the borglet's SIGTERM to the session reaches
//!   the task and not the init; when the task ends the init exits, which kills whatever the
//!   task left in its namespace.
//! - **task**: resets signals, becomes the unprivileged task user and execs the program.
//!
//! The exec'd keeper is cloned by the borglet straight into the task's new namespaces
//! (`spawn_keeper`) and is the init itself: one process per task fewer than a keeper that
//! unshares and forks an init (what a forked keeper still does). An init cannot die of a
//! signal it sends itself, so a keeper that is init writes the task's wait status to the
//! borglet on its report pipe before it exits. Without namespaces the keeper starts the task
//! directly.

use crate::log_rotation::RotatingLog;
use nix::libc::{self, c_char, c_int};
use std::ffi::CString;

/// Bytes moved per read from a task's output pipe.
const PUMP_BUFFER_BYTES: usize = 16 * 1024;
/// Signals a keeper ignores: the borglet signals the whole session, and the keeper must
/// outlive the task to report how it ended.
const KEEPER_IGNORED: [c_int; 8] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGPIPE,
    libc::SIGALRM,
];

/// Namespaces and user of a task.
#[derive(Debug)]
pub struct PreparedIsolation {
    /// Bind-mounted on /tmp inside the task's mount namespace.
    pub private_tmp: Option<CString>,
    /// When the sandbox lies under /tmp, the private /tmp hides it: it is mounted back at its
    /// path, after creating these directories (outermost first, the sandbox last).
    pub sandbox_rebind: Option<(CString, Vec<CString>)>,
}

/// `move_mount` flag: the source is the detached tree behind the descriptor.
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// One log stream: the open current file and the rotation paths (current first).
#[derive(Debug)]
pub struct PreparedLog {
    pub fd: c_int,
    pub size_bytes: u64,
    pub max_bytes: u64,
    pub paths: Vec<CString>,
}

/// Everything the keeper, init and task need, prepared before the fork.
#[derive(Debug)]
pub struct Prepared {
    pub program: CString,
    /// NUL-terminated pointer arrays into `argv` and `envp`.
    argv_ptrs: Vec<*const c_char>,
    envp_ptrs: Vec<*const c_char>,
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    pub cwd: CString,
    /// (uid, gid) to run the program as; `None` keeps the borglet's.
    pub user: Option<(u32, u32)>,
    pub namespaces: Option<PreparedIsolation>,
    pub stdout: PreparedLog,
    pub stderr: PreparedLog,
    /// Open `cgroup.procs` files the keeper writes "0" to.
    pub cgroup_join_fds: Vec<c_int>,
    /// The keeper is PID 1 of the task's namespaces already (see `spawn_keeper`).
    pub keeper_is_init: bool,
    /// Pipe to the borglet that spawned an exec'd keeper (see `keeper`), or -1: the keeper
    /// writes [`STARTED`] once the program was exec'd and, when it is init, the task's wait
    /// status when it ended.
    pub report_fd: c_int,
}

/// What a keeper writes on its report pipe once the task's program was exec'd.
pub const STARTED: u8 = b'+';

// SAFETY: the raw pointers point into the CStrings owned by the same value, which is never
// mutated after construction; they are only read (by exec).
unsafe impl Send for Prepared {}
unsafe impl Sync for Prepared {}

impl Prepared {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        program: CString,
        argv: Vec<CString>,
        envp: Vec<CString>,
        cwd: CString,
        user: Option<(u32, u32)>,
        namespaces: Option<PreparedIsolation>,
        stdout: PreparedLog,
        stderr: PreparedLog,
        cgroup_join_fds: Vec<c_int>,
    ) -> Prepared {
        let pointers = |strings: &[CString]| {
            strings
                .iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        Prepared {
            program,
            argv_ptrs: pointers(&argv),
            envp_ptrs: pointers(&envp),
            _argv: argv,
            _envp: envp,
            cwd,
            user,
            namespaces,
            stdout,
            stderr,
            cgroup_join_fds,
            keeper_is_init: false,
            report_fd: -1,
        }
    }
}

/// Every signal to its default action except `ignored`, none blocked. Handlers the borglet
/// installed (tokio's) must not run in a child that shares none of its state.
fn reset_signals(ignored: &[c_int]) {
    // SAFETY: sigaction and sigprocmask are async-signal-safe.
    unsafe {
        for sig in 1..libc::SIGRTMIN() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let disposition = if ignored.contains(&sig) {
                libc::SIG_IGN
            } else {
                libc::SIG_DFL
            };
            libc::signal(sig, disposition);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

fn errno() -> c_int {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn check(result: c_int) -> std::io::Result<c_int> {
    if result < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// `fork` without libc's atfork handlers.
fn raw_fork() -> c_int {
    // SAFETY: clone with only SIGCHLD and no new stack behaves like fork.
    unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0) as c_int }
}

/// Stack of a task process between its creation and its exec (see `spawn_task`).
const TASK_STACK_BYTES: usize = 64 * 1024;

#[repr(C, align(16))]
struct TaskStack([u8; TASK_STACK_BYTES]);

/// What `task_entry` needs, on the creating process's stack.
struct TaskArgs<'a> {
    p: &'a Prepared,
    out: c_int,
    err: c_int,
    exec_error: c_int,
}

extern "C" fn task_entry(arg: *mut libc::c_void) -> c_int {
    // SAFETY: `arg` points to the `TaskArgs` of `spawn_task`, alive while the creator waits.
    let args = unsafe { &*(arg as *const TaskArgs<'_>) };
    task(args.p, args.out, args.err, args.exec_error)
}

/// Creates the task process the way `posix_spawn` does: it shares this process's memory (no
/// copy of the page tables) on a stack of its own, and this process is suspended until the
/// task execs or exits. The task only makes system calls on prepared data and writes nothing
/// but its own stack, so the creator's memory is as it left it. Returns the pid (or -1).
fn spawn_task(p: &Prepared, out: c_int, err: c_int, exec_error: c_int) -> c_int {
    let mut stack = TaskStack([0; TASK_STACK_BYTES]);
    let args = TaskArgs {
        p,
        out,
        err,
        exec_error,
    };
    // SAFETY: the stack grows down from its end; `args` and `stack` outlive the child's use
    // of them because CLONE_VFORK suspends this process until the child execs or exits.
    unsafe {
        let top = stack.0.as_mut_ptr().add(TASK_STACK_BYTES);
        libc::clone(
            task_entry,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::addr_of!(args) as *mut libc::c_void,
        )
    }
}

/// What `keeper_entry` needs, on the spawning thread's stack.
struct KeeperArgs<'a> {
    program: &'a std::ffi::CStr,
    argv: [*const c_char; 2],
    envp: [*const c_char; 1],
    stdin: c_int,
    stdout: c_int,
    exec_error: c_int,
}

extern "C" fn keeper_entry(arg: *mut libc::c_void) -> c_int {
    // SAFETY: `arg` points to the `KeeperArgs` of `spawn_keeper`, alive while it waits; only
    // async-signal-safe calls follow.
    unsafe {
        let a = &*(arg as *const KeeperArgs<'_>);
        reset_signals(&[]);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if libc::dup2(a.stdin, 0) < 0 || libc::dup2(a.stdout, 1) < 0 || libc::dup2(null, 2) < 0 {
            report_errno_and_exit(a.exec_error, errno());
        }
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        libc::execve(a.program.as_ptr(), a.argv.as_ptr(), a.envp.as_ptr());
        report_errno_and_exit(a.exec_error, errno())
    }
}

/// A keeper process started by `spawn_keeper`.
#[derive(Debug)]
pub struct SpawnedKeeper {
    pub pid: c_int,
    /// Readable once the keeper exited.
    pub pidfd: std::os::fd::OwnedFd,
}

/// Starts the keeper `program` with `stdin` and `stdout` (and /dev/null as stderr, an empty
/// environment) the way `posix_spawn` does, but with `new_namespaces` straight into new PID,
/// mount and UTS namespaces, where it is PID 1. Returns once the program was exec'd, with a
/// pidfd to wait on (the borglet cannot use a `Child` of std or tokio for a clone).
pub fn spawn_keeper(
    program: &std::ffi::CStr,
    stdin: c_int,
    stdout: c_int,
    new_namespaces: bool,
) -> std::io::Result<SpawnedKeeper> {
    use std::os::fd::FromRawFd;
    let exec_error = pipe()?;
    let args = KeeperArgs {
        program,
        argv: [program.as_ptr(), std::ptr::null()],
        envp: [std::ptr::null()],
        stdin,
        stdout,
        exec_error: exec_error[1],
    };
    let mut stack = TaskStack([0; TASK_STACK_BYTES]);
    let mut flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;
    if new_namespaces {
        flags |= libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWUTS;
    }
    let mut pidfd: c_int = -1;
    // SAFETY: as in `spawn_task`: CLONE_VFORK suspends this thread until the child execs or
    // exits, so `args` and `stack` outlive its use of them; CLONE_PIDFD stores the pidfd in
    // `pidfd` (the parent_tid argument).
    let pid = unsafe {
        let top = stack.0.as_mut_ptr().add(TASK_STACK_BYTES);
        libc::clone(
            keeper_entry,
            top.cast(),
            flags,
            std::ptr::addr_of!(args) as *mut libc::c_void,
            &mut pidfd as *mut c_int,
        )
    };
    let clone_error = std::io::Error::last_os_error();
    close(exec_error[1]);
    if pid < 0 {
        close(exec_error[0]);
        return Err(clone_error);
    }
    let failed = read_i32(exec_error[0]);
    close(exec_error[0]);
    if let Some(code) = failed {
        wait_for(pid);
        close(pidfd);
        return Err(std::io::Error::from_raw_os_error(code));
    }
    Ok(SpawnedKeeper {
        pid,
        // SAFETY: the kernel gave us this descriptor; nothing else owns it.
        pidfd: unsafe { std::os::fd::OwnedFd::from_raw_fd(pidfd) },
    })
}

/// Reaps `pid`, a child of this process, if it has exited (its wait status), without
/// blocking.
pub fn try_reap(pid: c_int) -> std::io::Result<Option<c_int>> {
    let mut status = 0;
    // SAFETY: waitpid for one of our children.
    match unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } {
        0 => Ok(None),
        reaped if reaped == pid => Ok(Some(status)),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Reaps `pid`, a child of this process, waiting for it to exit.
pub fn reap(pid: c_int) -> Option<c_int> {
    wait_for(pid)
}

/// `struct sched_attr` of `sched_setattr(2)` (the first version, 48 bytes).
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime_ns: u64,
    deadline_ns: u64,
    period_ns: u64,
}

/// Sets this process's scheduling slice (EEVDF's latency hint for `SCHED_OTHER`, Linux
/// 6.12+; 0 restores the default). Best effort: older kernels ignore it.
pub fn set_slice(runtime_ns: u64) {
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: 0,
        nice: 0,
        priority: 0,
        runtime_ns,
        deadline_ns: 0,
        period_ns: 0,
    };
    // SAFETY: passes a valid sched_attr for this process.
    unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
}

/// Slice of the threads and processes on the start path (the borglet's starting thread, the
/// keeper, init and task until exec): on a busy machine each of them would otherwise wait
/// for a CPU behind the machine's other work with the default slice (a few ms each).
pub const START_SLICE_NS: u64 = 100_000;

fn pipe() -> std::io::Result<[c_int; 2]> {
    let mut fds = [-1; 2];
    // SAFETY: writes two descriptors into `fds`.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok(fds)
}

fn close(fd: c_int) {
    if fd >= 0 {
        // SAFETY: closes a descriptor this process owns.
        unsafe { libc::close(fd) };
    }
}

fn write_file(path: &std::ffi::CStr, data: &[u8]) {
    // SAFETY: open/write/close on a NUL-terminated path.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            libc::write(fd, data.as_ptr().cast(), data.len());
            libc::close(fd);
        }
    }
}

/// Closes every descriptor from 3 up except `keep` (sorted in place).
fn close_all_except(keep: &mut [c_int]) {
    keep.sort_unstable();
    let mut next: c_int = 3;
    for &fd in keep.iter() {
        if fd >= next {
            if fd > next {
                // SAFETY: closes a range of this process's descriptors.
                unsafe { libc::syscall(libc::SYS_close_range, next as u32, (fd - 1) as u32, 0) };
            }
            next = fd + 1;
        }
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, next as u32, u32::MAX, 0) };
}

fn report_errno_and_exit(fd: c_int, code: c_int) -> ! {
    let bytes = code.to_ne_bytes();
    // SAFETY: write then _exit, both async-signal-safe.
    unsafe {
        libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(127)
    }
}

/// Reads up to 4 bytes; `Some` only when all 4 arrived.
fn read_i32(fd: c_int) -> Option<c_int> {
    let mut bytes = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        // SAFETY: reads into the rest of `bytes`.
        let n = unsafe { libc::read(fd, bytes[got..].as_mut_ptr().cast(), 4 - got) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            return None;
        }
        got += n as usize;
    }
    Some(c_int::from_ne_bytes(bytes))
}

fn wait_for(pid: c_int) -> Option<c_int> {
    let mut status = 0;
    loop {
        // SAFETY: waits for a child of this process.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        if waited == pid {
            return Some(status);
        }
        if waited < 0 && errno() != libc::EINTR {
            return None;
        }
    }
}

/// The keeper: runs in the spawned child (`pre_exec`). Returns only with an error that the
/// spawning borglet receives (the program could not be started); otherwise exits like the task.
pub fn keeper(p: &Prepared) -> std::io::Result<()> {
    set_slice(START_SLICE_NS);
    reset_signals(&KEEPER_IGNORED);
    for &fd in &p.cgroup_join_fds {
        // SAFETY: writes to a descriptor opened before the fork.
        check(unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } as c_int)?;
    }
    // SAFETY: see above.
    check(unsafe { libc::setsid() })?;
    // The keeper and init are copies of the borglet's memory: never the OOM killer's choice.
    write_file(c"/proc/self/oom_score_adj", b"-1000");
    if let Some(isolation) = &p.namespaces {
        // SAFETY: see above; "/" is made private first so no mount leaks to the host.
        unsafe {
            if !p.keeper_is_init {
                check(libc::unshare(
                    libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWUTS,
                ))?;
            }
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            // A detached copy of the sandbox's mount, taken before /tmp is covered.
            let sandbox_tree = match &isolation.sandbox_rebind {
                Some((sandbox, _)) => check(libc::syscall(
                    libc::SYS_open_tree,
                    libc::AT_FDCWD,
                    sandbox.as_ptr(),
                    libc::OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
                ) as c_int)?,
                None => -1,
            };
            if let Some(tmp) = &isolation.private_tmp {
                check(libc::mount(
                    tmp.as_ptr(),
                    c"/tmp".as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
            }
            if let Some((_, dirs)) = &isolation.sandbox_rebind {
                for dir in dirs {
                    if libc::mkdir(dir.as_ptr(), 0o755) < 0 && errno() != libc::EEXIST {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some(target) = dirs.last() {
                    check(libc::syscall(
                        libc::SYS_move_mount,
                        sandbox_tree,
                        c"".as_ptr(),
                        libc::AT_FDCWD,
                        target.as_ptr(),
                        MOVE_MOUNT_F_EMPTY_PATH,
                    ) as c_int)?;
                }
                close(sandbox_tree);
            }
        }
    }
    let out = pipe()?;
    let err = pipe()?;
    let exec_error = pipe()?;
    let status_pipe = pipe()?;
    // As init, the keeper learns of every child's end (the task's and orphans') on this.
    let children_ended = if p.keeper_is_init {
        mount_proc()?;
        watch_children()?
    } else {
        -1
    };
    let child = if p.namespaces.is_some() && !p.keeper_is_init {
        let child = raw_fork();
        if child == 0 {
            close(out[0]);
            close(err[0]);
            close(exec_error[0]);
            close(status_pipe[0]);
            init(p, out[1], err[1], exec_error[1], status_pipe[1]);
        }
        child
    } else {
        // The task's copies of the read ends close at its exec (they are close-on-exec).
        spawn_task(p, out[1], err[1], exec_error[1])
    };
    check(child)?;
    close(out[1]);
    close(err[1]);
    close(exec_error[1]);
    close(status_pipe[1]);
    if let Some(code) = read_i32(exec_error[0]) {
        wait_for(child);
        return Err(std::io::Error::from_raw_os_error(code));
    }
    close(exec_error[0]);
    if p.report_fd >= 0 {
        // SAFETY: writes one byte to the report pipe.
        unsafe { libc::write(p.report_fd, [STARTED].as_ptr().cast(), 1) };
    }
    // The start is over: the keeper now only copies output.
    set_slice(0);
    // SAFETY: see above; a core dump of the keeper would be one of the borglet.
    unsafe {
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
    }
    // The task's end: as init, through `children_ended`; else through a pidfd of the child.
    let exit_watch = if p.keeper_is_init {
        children_ended
    } else {
        // SAFETY: pidfd_open of our own child.
        unsafe { libc::syscall(libc::SYS_pidfd_open, child, 0) as c_int }
    };
    // Also closes the spawning borglet's exec-status pipe: from here the spawn has succeeded.
    // An init keeps its report pipe for the task's status.
    let mut keep = [
        out[0],
        err[0],
        status_pipe[0],
        exit_watch,
        p.stdout.fd,
        p.stderr.fd,
        if p.keeper_is_init { p.report_fd } else { -1 },
    ];
    close_all_except(&mut keep);
    let mut stdout = RotatingLog::new(
        p.stdout.fd,
        p.stdout.size_bytes,
        p.stdout.max_bytes,
        &p.stdout.paths,
    );
    let mut stderr = RotatingLog::new(
        p.stderr.fd,
        p.stderr.size_bytes,
        p.stderr.max_bytes,
        &p.stderr.paths,
    );
    let reaped = pump(
        [out[0], err[0]],
        exit_watch,
        p.keeper_is_init.then_some(child),
        [&mut stdout, &mut stderr],
    );
    let status = match reaped {
        Some(status) => Some(status),
        None if p.namespaces.is_some() && !p.keeper_is_init => {
            let init_status = wait_for(child);
            read_i32(status_pipe[0]).or(init_status)
        }
        None => wait_for(child),
    };
    let status = status.unwrap_or(0x7f00);
    if p.keeper_is_init {
        let bytes = status.to_ne_bytes();
        // SAFETY: writes the status to the report pipe.
        unsafe { libc::write(p.report_fd, bytes.as_ptr().cast(), bytes.len()) };
    }
    exit_like(status)
}

/// Mounts the PID namespace's own /proc (in the task's mount namespace).
fn mount_proc() -> std::io::Result<()> {
    // SAFETY: mount with static NUL-terminated strings.
    check(unsafe {
        libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    })
    .map(drop)
}

/// Blocks SIGCHLD and returns a signalfd that reads it (non-blocking): an init learns there
/// that children ended. The task unblocks it before its exec (`reset_signals`).
fn watch_children() -> std::io::Result<c_int> {
    // SAFETY: signal mask and signalfd calls on a stack sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        check(libc::sigprocmask(
            libc::SIG_BLOCK,
            &set,
            std::ptr::null_mut(),
        ))?;
        check(libc::signalfd(
            -1,
            &set,
            libc::SFD_NONBLOCK | libc::SFD_CLOEXEC,
        ))
    }
}

/// Reads what `watch_children` queued and reaps every ended child; returns the wait status of
/// `task` if it was among them.
fn reap_children(children_ended: c_int, task: c_int) -> Option<c_int> {
    let mut info = [0u8; 128];
    // SAFETY: reads signalfd records into a stack buffer; waitpid without blocking.
    unsafe {
        while libc::read(children_ended, info.as_mut_ptr().cast(), info.len()) > 0 {}
        let mut task_status = None;
        loop {
            let mut status = 0;
            let pid = libc::waitpid(-1, &mut status, libc::WNOHANG);
            if pid <= 0 {
                return task_status;
            }
            if pid == task {
                task_status = Some(status);
            }
        }
    }
}

/// borgssh: enters a running task (its cgroup through `p.cgroup_join_fds`, then the namespaces
/// open at `namespaces`, PID namespace first) and runs `p`'s program there with the spawned
/// process's stdin, stdout and stderr. With `terminal`, stdin is a PTY's slave: the program
/// leads a session of its own inside the task's PID namespace with it as its controlling
/// terminal (so a shell's job control sees only process groups of its namespace). Like the
/// keeper, it returns only with a start error and otherwise exits the way the program did.
pub fn enter(p: &Prepared, namespaces: &[c_int], terminal: bool) -> std::io::Result<()> {
    reset_signals(&[]);
    for &fd in &p.cgroup_join_fds {
        // SAFETY: writes to a descriptor opened before the fork.
        check(unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } as c_int)?;
    }
    // SAFETY: see above.
    check(unsafe { libc::setsid() })?;
    for &fd in namespaces {
        // SAFETY: joins the namespace behind a descriptor opened before the fork.
        check(unsafe { libc::setns(fd, 0) })?;
    }
    let exec_error = pipe()?;
    let child = raw_fork();
    check(child)?;
    if child == 0 {
        close(exec_error[0]);
        // SAFETY: a new session, with stdin (a PTY slave opened before the fork) as its
        // controlling terminal.
        if terminal
            && (unsafe { libc::setsid() } < 0 || unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0)
        {
            report_errno_and_exit(exec_error[1], errno());
        }
        task(p, 1, 2, exec_error[1]);
    }
    close(exec_error[1]);
    if let Some(code) = read_i32(exec_error[0]) {
        wait_for(child);
        return Err(std::io::Error::from_raw_os_error(code));
    }
    close_all_except(&mut []);
    exit_like(wait_for(child).unwrap_or(0x7f00))
}

/// Copies the task's output into its log files until the child exited (`exit_watch`, a
/// pidfd, is readable) or, with `reap_task` (the keeper is init and `exit_watch` is its
/// `watch_children` signalfd), until that task was reaped: its wait status is returned.
fn pump(
    fds: [c_int; 2],
    exit_watch: c_int,
    reap_task: Option<c_int>,
    logs: [&mut RotatingLog<'_>; 2],
) -> Option<c_int> {
    let mut buffer = [0u8; PUMP_BUFFER_BYTES];
    let mut open = [true, true];
    for &fd in &fds {
        // SAFETY: sets O_NONBLOCK on our pipe ends.
        unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
    }
    let [stdout, stderr] = logs;
    let mut logs = [stdout, stderr];
    let mut drain = |i: usize, open: &mut [bool; 2], logs: &mut [&mut RotatingLog<'_>; 2]| loop {
        // SAFETY: reads into a stack buffer.
        let n = unsafe { libc::read(fds[i], buffer.as_mut_ptr().cast(), buffer.len()) };
        if n > 0 {
            logs[i].write(&buffer[..n as usize]);
            continue;
        }
        if n == 0 || (errno() != libc::EINTR && errno() != libc::EAGAIN) {
            open[i] = false;
            close(fds[i]);
        }
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        return;
    };
    let watch_exit = exit_watch >= 0;
    // An init must go on reaping after the task closed its output, until the task ended.
    while open[0] || open[1] || (reap_task.is_some() && watch_exit) {
        let entry = |fd: c_int, on: bool| libc::pollfd {
            fd: if on { fd } else { -1 },
            events: libc::POLLIN,
            revents: 0,
        };
        let mut polled = [
            entry(fds[0], open[0]),
            entry(fds[1], open[1]),
            entry(exit_watch, watch_exit),
        ];
        // SAFETY: polls three entries of a stack array.
        let ready = unsafe { libc::poll(polled.as_mut_ptr(), 3, -1) };
        if ready < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return None;
        }
        for i in 0..2 {
            if open[i] && polled[i].revents != 0 {
                drain(i, &mut open, &mut logs);
            }
        }
        if watch_exit && polled[2].revents != 0 {
            let status = match reap_task {
                Some(task) => match reap_children(exit_watch, task) {
                    Some(status) => Some(status),
                    // Orphans ended, not the task.
                    None => continue,
                },
                None => None,
            };
            // What the task wrote before it ended is in the pipes; processes it left behind
            // (only possible without a PID namespace) lose their output.
            for i in 0..2 {
                if open[i] {
                    drain(i, &mut open, &mut logs);
                }
            }
            return status;
        }
    }
    None
}

/// Exits with the task's exit code, or dies of the signal that killed it.
fn exit_like(status: c_int) -> ! {
    // SAFETY: async-signal-safe calls only.
    unsafe {
        if libc::WIFSIGNALED(status) {
            let signal = libc::WTERMSIG(status);
            libc::signal(signal, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), signal);
            libc::_exit(128 + signal)
        }
        libc::_exit(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            127
        })
    }
}

/// PID 1 of the task's namespace.
fn init(p: &Prepared, out: c_int, err: c_int, exec_error: c_int, status_pipe: c_int) -> ! {
    set_slice(START_SLICE_NS);
    // SAFETY: async-signal-safe calls on prepared data only.
    unsafe {
        if mount_proc().is_err() {
            report_errno_and_exit(exec_error, errno());
        }
        let task_pid = spawn_task(p, out, err, exec_error);
        if task_pid < 0 {
            report_errno_and_exit(exec_error, errno());
        }
        set_slice(0);
        let mut keep = [status_pipe];
        close_all_except(&mut keep);
        let mut status = 0x7f00;
        loop {
            let mut one = 0;
            let pid = libc::waitpid(-1, &mut one, 0);
            if pid == task_pid {
                status = one;
                break;
            }
            if pid < 0 && errno() != libc::EINTR {
                break;
            }
        }
        let bytes = status.to_ne_bytes();
        libc::write(status_pipe, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(0)
    }
}

/// Becomes the task: output to the pipes, default signals, the task user, the program.
fn task(p: &Prepared, out: c_int, err: c_int, exec_error: c_int) -> ! {
    // SAFETY: async-signal-safe calls on prepared data only.
    unsafe {
        if libc::dup2(out, 1) < 0 || libc::dup2(err, 2) < 0 {
            report_errno_and_exit(exec_error, errno());
        }
        write_file(c"/proc/self/oom_score_adj", b"0");
        reset_signals(&[]);
        if libc::chdir(p.cwd.as_ptr()) < 0 {
            report_errno_and_exit(exec_error, errno());
        }
        if let Some((uid, gid)) = p.user {
            if libc::setgroups(0, std::ptr::null()) < 0
                || libc::setgid(gid) < 0
                || libc::setuid(uid) < 0
                || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0
            {
                report_errno_and_exit(exec_error, errno());
            }
        }
        set_slice(START_SLICE_NS);
        // Everything but the exec-error pipe (close-on-exec itself) closes at exec.
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        set_slice(0);
        libc::execve(
            p.program.as_ptr(),
            p.argv_ptrs.as_ptr(),
            p.envp_ptrs.as_ptr(),
        );
        report_errno_and_exit(exec_error, errno())
    }
}
