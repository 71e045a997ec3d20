//! Configuration of one borglet instance (plain data; the `borg` binary maps flags onto it).

use borg_model::Resources;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

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

#[derive(Debug, Clone)]
pub struct BorgletConfig {
    /// `host:port` of every master replica (registration goes to the leader).
    pub masters: Vec<String>,
    /// `host:port` the gRPC server binds; also the address registered with the master (with the
    /// bound port substituted when the port is 0).
    pub listen_address: String,
    /// Name of this machine in the cell.
    pub machine_name: String,
    /// Attributes registered for constraints (`rack`, `os_version`, ...).
    pub attributes: BTreeMap<String, String>,
    /// Holds `sandboxes/<job>.<index>.<incarnation>/` (working directory and logs of each task)
    /// and `tasks/` (one record per running task, for re-adoption).
    pub data_dir: PathBuf,
    /// Relative cgroup path under which every task cgroup is created; nothing outside it is
    /// touched.
    pub cgroup_parent: String,
    pub cgroups: CgroupMode,
    /// Capacity to register instead of what procfs reports.
    pub capacity_override: Option<Resources>,
    pub metrics_address: Option<SocketAddr>,
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
    /// Sandboxes (working directories and logs) of finished tasks kept on disk; older ones
    /// are deleted.
    pub finished_sandboxes_max: usize,
    /// `PATH` given to tasks (commands without a slash are looked up in it).
    pub task_path: String,
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
            attributes: BTreeMap::new(),
            data_dir: data_dir.into(),
            cgroup_parent: "borg".to_owned(),
            cgroups: CgroupMode::Auto,
            capacity_override: None,
            metrics_address: None,
            stop_grace_period_ms: 10_000,
            kill_tasks_on_exit: false,
            register_retry_max_ms: 5_000,
            reregister_interval_ms: 30_000,
            task_pids_max: 4_096,
            desired_tasks_max: 10_000,
            finished_sandboxes_max: 200,
            task_path: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        }
    }
}
