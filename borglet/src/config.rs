//! Configuration of one borglet instance (plain data; the `borg` binary maps flags onto it).

use crate::pressure::MachinePressure;
use borg_model::Resources;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Whether task processes are put in cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CgroupMode {
    /// Use cgroups (v2 when the unified hierarchy is mounted, else v1) when running as root with
    /// a writable hierarchy; otherwise run tasks without and say so in a log line and a metric.
    #[default]
    Auto,
    /// Never create cgroups.
    Off,
}

/// Whether tasks run in their own namespaces as an unprivileged user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsolationMode {
    /// Own PID, mount and UTS namespaces (private /proc and /tmp) and `task_user` when the
    /// borglet runs as root; otherwise tasks run as the borglet's user without namespaces, and
    /// a log line and a metric say so.
    #[default]
    Auto,
    /// Tasks run in the borglet's namespaces as the borglet's user.
    Off,
}

/// Default of `BorgletConfig::starts_in_flight_max`.
pub const STARTS_IN_FLIGHT_DEFAULT: usize = 16;

/// Default of `BorgletConfig::poll_start_wait_ms`.
pub const POLL_START_WAIT_DEFAULT_MS: u64 = 20;

/// Default of `BorgletConfig::shell_idle_timeout_s`.
pub const SHELL_IDLE_TIMEOUT_DEFAULT_S: u64 = 900;

/// Cell name of a borglet not told otherwise.
pub const DEFAULT_CELL_NAME: &str = "local";

#[derive(Debug, Clone)]
pub struct BorgletConfig {
    /// `host:port` of every master replica (registration goes to the leader).
    pub masters: Vec<String>,
    /// `host:port` the gRPC server binds; also the address registered with the master (with the
    /// bound port substituted when the port is 0).
    pub listen_address: String,
    /// Name of this machine in the cell.
    pub machine_name: String,
    /// Name of the cell (substituted for `%cell%` in tasks' args and env).
    pub cell_name: String,
    /// First and last port handed out for tasks' named ports (`%port%`).
    pub port_range: (u16, u16),
    /// Attributes registered for constraints (`rack`, `os_version`, ...).
    pub attributes: BTreeMap<String, String>,
    /// Holds `sandboxes/<job>.<index>.<incarnation>/` (working directory and logs of each task)
    /// and `tasks/journal` (the records of running tasks, for re-adoption).
    pub data_dir: PathBuf,
    /// Relative cgroup path under which every task cgroup is created; nothing outside it is
    /// touched.
    pub cgroup_parent: String,
    pub cgroups: CgroupMode,
    /// Capacity to register instead of what procfs reports.
    pub capacity_override: Option<Resources>,
    pub metrics_address: Option<SocketAddr>,
    /// Cluster token sent to the masters (the control-plane role), and the only token this
    /// borglet's own service accepts; None sends none and accepts any caller.
    pub master_token: Option<String>,
    /// Time between SIGTERM and SIGKILL when a task is stopped.
    pub stop_grace_period_ms: u64,
    /// Stop every task when the borglet shuts down (`borg dev`); a production borglet leaves
    /// them running so a restarted borglet can re-adopt them.
    pub kill_tasks_on_exit: bool,
    /// Largest back-off between failed registration attempts.
    pub register_retry_max_ms: u64,
    /// Re-registration period once registered (idempotent; refreshes the machine info).
    pub reregister_interval_ms: u64,
    /// `pids` limit of each task cgroup.
    pub task_pids_max: u64,
    /// Most tasks a single Poll may ask this machine to run.
    pub desired_tasks_max: usize,
    /// The `borg-keeper` program each task's keeper runs (exec'd: no copy of the borglet's
    /// memory); `None` forks the borglet instead (slower starts). Defaults to `borg-keeper`
    /// beside the running binary when it is there.
    pub keeper_program: Option<PathBuf>,
    /// Task starts in progress at once (each on a blocking thread: fork, cgroup, exec). A
    /// Poll answers without waiting for them.
    pub starts_in_flight_max: usize,
    /// Longest a Poll that ordered new tasks waits for their starts before it answers, so a
    /// task started within it is reported RUNNING with its pid in the same answer rather
    /// than a poll interval later; 0 answers at once.
    pub poll_start_wait_ms: u64,
    /// Sandboxes (working directories and logs) of finished tasks kept on disk; older ones
    /// are deleted.
    pub finished_sandboxes_max: usize,
    /// Finished tasks' cgroups kept, reset, for new tasks (v1 only; 0 creates and removes a
    /// group per task). See `cgroups::spares`.
    pub cgroup_spares_max: usize,
    /// `PATH` given to tasks (commands without a slash are looked up in it).
    pub task_path: String,
    pub isolation: IsolationMode,
    /// Unprivileged user tasks run as (with isolation); must exist and must not be root.
    pub task_user: String,
    /// Largest size of each task log file (`stdout`, `stderr`); 0 means unbounded.
    pub log_max_bytes: u64,
    /// Rotated log files kept per stream besides the current one.
    pub log_files_kept: u32,
    /// Below this much free memory (MemAvailable) tasks are killed, lowest priority first,
    /// never production; 0 turns reclamation off.
    pub reclaim_free_memory_min_bytes: u64,
    /// From this machine CPU busyness on, batch-class tasks are capped at their CPU limit.
    pub cpu_busy_threshold_percent: u32,
    /// Time between rounds of memory reclamation and CPU capping.
    pub enforcement_interval_ms: u64,
    /// Time between usage samples of a running task (taken in enforcement rounds, so at
    /// least `enforcement_interval_ms` apart): a task's report, and the master's view of its
    /// usage, changes at most this often.
    pub usage_sample_interval_ms: u64,
    /// Users besides a task's owner allowed to run commands in it (borgssh), besides those
    /// the master vouches for as admins. The user name comes from the master, which
    /// authenticated it.
    pub exec_admin_users: Vec<String>,
    /// Longest a borgssh command may run before it is killed.
    pub exec_timeout_max_ms: u64,
    /// An interactive borgssh session with neither input nor output for this long is closed
    /// (the user is told, and the master records it on the task).
    pub shell_idle_timeout_s: u64,
    /// Where machine load is read; `None` reads procfs. Tests inject `pressure::TestPressure`.
    pub pressure: Option<Arc<dyn MachinePressure>>,
}

impl BorgletConfig {
    pub fn new(
        masters: Vec<String>,
        listen_address: impl Into<String>,
        machine_name: impl Into<String>,
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        BorgletConfig {
            masters,
            listen_address: listen_address.into(),
            machine_name: machine_name.into(),
            cell_name: DEFAULT_CELL_NAME.to_owned(),
            port_range: crate::ports::PORT_RANGE_DEFAULT,
            attributes: BTreeMap::new(),
            data_dir: data_dir.into(),
            cgroup_parent: "borg".to_owned(),
            cgroups: CgroupMode::Auto,
            capacity_override: None,
            metrics_address: None,
            master_token: None,
            stop_grace_period_ms: 10_000,
            kill_tasks_on_exit: false,
            register_retry_max_ms: 5_000,
            reregister_interval_ms: 30_000,
            task_pids_max: 4_096,
            desired_tasks_max: 10_000,
            keeper_program: crate::keeper::program_next_to_current_exe(),
            starts_in_flight_max: STARTS_IN_FLIGHT_DEFAULT,
            poll_start_wait_ms: POLL_START_WAIT_DEFAULT_MS,
            finished_sandboxes_max: 200,
            cgroup_spares_max: crate::cgroups::spares::CGROUP_SPARES_MAX,
            task_path: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
            isolation: IsolationMode::Auto,
            task_user: "nobody".to_owned(),
            log_max_bytes: 16 << 20,
            log_files_kept: 3,
            reclaim_free_memory_min_bytes: 256 << 20,
            cpu_busy_threshold_percent: 90,
            enforcement_interval_ms: 1_000,
            usage_sample_interval_ms: 5_000,
            exec_admin_users: vec!["admin".to_owned()],
            exec_timeout_max_ms: 300_000,
            shell_idle_timeout_s: SHELL_IDLE_TIMEOUT_DEFAULT_S,
            pressure: None,
        }
    }
}
