//! The tasks of this machine: reconciling the desired set, supervising each task's process
//! (restarts, stops, cleanup) and reporting their states.
//!
//! Each task incarnation gets a slot in the table and, once started, an actor (a tokio task)
//! that owns its process: it waits for the exit, applies the restart policy, stops the
//! process when the task leaves the desired set, and cleans up (leftover processes, cgroup,
//! record). A Poll only edits the table and reads it back.

use crate::assignment::{InvalidAssignment, TaskAssignment, TaskKey};
use crate::cgroups::{CgroupError, CgroupLimits, CgroupUsage, TaskCgroups};
use crate::child;
use crate::enforce::{cpu_capped, reclamation_victims, RunningTask};
use crate::metrics::{BorgletMetrics, ExitReason};
use crate::ports::{env_name, PortAllocator, PortError};
use crate::pressure::MachinePressure;
use crate::report_changes::{ReportChanges, ReportCursor, ReportedView};
use crate::restart::{AfterExit, RestartTracker};
use crate::runner::{self, LaunchSpec, SpawnError, TaskExit, TaskProcess};
use crate::sandbox::{delete_sandboxes, Sandbox, SandboxRetention, SandboxSpares};
use crate::state_dir::{StateDir, TaskRecord};
use crate::substitute::{substitute, Substitutions};
use borg_common::now_ms;
use borg_model::{Band, Resources, TaskState};
use borg_proto::v1;
use nix::sys::signal::Signal;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a process may take to die after SIGKILL before the borglet gives up waiting.
pub const KILL_WAIT_MAX_MS: u64 = 5_000;
/// Rounds of SIGKILL to the processes left in a task cgroup, and the pause between them.
pub const CGROUP_DRAIN_ROUNDS_MAX: u32 = 100;
pub const CGROUP_DRAIN_PAUSE_MS: u64 = 10;
/// Attempts to remove an emptied task cgroup (the kernel may report it busy for a moment).
pub const CGROUP_REMOVE_ATTEMPTS_MAX: u32 = 50;
pub const CGROUP_REMOVE_PAUSE_MS: u64 = 20;
/// Extra time given to actors at shutdown beyond the grace and kill waits.
const SHUTDOWN_MARGIN_MS: u64 = 2_000;

/// The part of the configuration the supervisor uses.
#[derive(Debug, Clone)]
pub struct SupervisorSettings {
    pub machine_name: String,
    /// Name of the cell, for `%cell%` and `BORG_CELL`.
    pub cell_name: String,
    pub data_dir: PathBuf,
    pub stop_grace_period_ms: u64,
    pub task_pids_max: u64,
    pub task_path: String,
    pub desired_tasks_max: usize,
    pub finished_sandboxes_max: usize,
    /// Namespaces and user of every task (`private_tmp` is set per task).
    pub isolation: runner::Isolation,
    pub log: crate::log_rotation::LogLimits,
    /// Task starts in progress at once (see `BorgletConfig::starts_in_flight_max`).
    pub starts_in_flight_max: usize,
    /// Longest a Poll waits for the starts it ordered (see `BorgletConfig::poll_start_wait_ms`).
    pub poll_start_wait_ms: u64,
    /// First and last port handed out for tasks' named ports.
    pub port_range: (u16, u16),
    /// Program exec'd as each task's keeper (see `BorgletConfig::keeper_program`).
    pub keeper_program: Option<PathBuf>,
    /// Time between usage samples of a task (see `BorgletConfig::usage_sample_interval_ms`).
    pub usage_sample_interval_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("this borglet runs machine {actual:?}, but the poll is for machine {requested:?}: the link shard's assignment names the wrong address")]
    WrongMachine { requested: String, actual: String },
    #[error("the desired set holds {count} tasks; this borglet accepts at most {max} (desired_tasks_max)")]
    TooManyTasks { count: usize, max: usize },
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the sandbox {path}: {source}")]
    Sandbox {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error(transparent)]
    Ports(#[from] PortError),
}

impl StartError {
    fn is_permanent(&self) -> bool {
        matches!(self, StartError::Spawn(e) if e.is_permanent())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The process runs (or is being started).
    Running,
    /// The process exited and will be started again after a delay.
    Restarting,
    Succeeded,
    /// Could not run, or the restart policy is exhausted.
    Failed,
    /// Left the desired set; the process is being stopped.
    Stopping,
    /// Stopped by the borglet; everything is cleaned up.
    Stopped,
}

#[derive(Debug)]
/// One task of a poll's desired set.
// Lives only while a poll is reconciled; boxing would cost an allocation per task.
#[allow(clippy::large_enum_variant)]
enum Wanted {
    /// Sent in full (converted, or why it cannot run).
    Assigned(Result<TaskAssignment, InvalidAssignment>),
    /// Sent as a key only: the caller believes this borglet has it.
    Held,
}

struct Slot {
    phase: Phase,
    /// Still in the latest desired set.
    desired: bool,
    pid: u32,
    exit_code: Option<i32>,
    restarts: u32,
    message: String,
    started_ms: u64,
    usage: Resources,
    /// Last CPU reading (cumulative ns) and when it was taken, to turn readings into a rate.
    cpu_sample: Option<(u64, Instant)>,
    stop: CancellationToken,
    actor: Option<JoinHandle<()>>,
    /// What runs (absent for an assignment that cannot run).
    task: Option<Arc<TaskAssignment>>,
    /// Why the borglet killed the task on its own (memory reclamation); set before `stop`.
    eviction: Option<String>,
    /// Its CPU is capped by CFS quota now.
    cpu_capped: bool,
    /// The task's keeper process (the process group leader); `pid` is the program's.
    keeper_pid: u32,
    /// Named ports of the incarnation while it holds them (copied from the allocator at
    /// start, so reports need not ask it).
    ports: crate::ports::TaskPorts,
    /// The report as last numbered, and its change number (see `report_changes`).
    reported: Option<ReportedView>,
    changed_seq: u64,
}

impl Slot {
    fn new(phase: Phase, message: String) -> Slot {
        Slot {
            phase,
            desired: true,
            pid: 0,
            exit_code: None,
            restarts: 0,
            message,
            started_ms: 0,
            usage: Resources::ZERO,
            cpu_sample: None,
            stop: CancellationToken::new(),
            actor: None,
            task: None,
            eviction: None,
            cpu_capped: false,
            keeper_pid: 0,
            ports: Default::default(),
            reported: None,
            changed_seq: 0,
        }
    }

    /// Gives the report a new change number if it differs from the one last numbered.
    fn number_report(&mut self, state: TaskState, changes: &mut ReportChanges) {
        let same = self.reported.as_ref().is_some_and(|r| {
            r.state == state
                && r.pid == self.pid
                && r.exit_code == self.exit_code
                && r.restarts == self.restarts
                && r.started_ms == self.started_ms
                && r.usage == self.usage
                && r.message == self.message
                && r.ports == self.ports
        });
        if !same {
            self.reported = Some(ReportedView {
                state,
                pid: self.pid,
                exit_code: self.exit_code,
                restarts: self.restarts,
                started_ms: self.started_ms,
                usage: self.usage,
                message: self.message.clone(),
                ports: self.ports.clone(),
            });
            self.changed_seq = changes.next_seq();
        }
    }

    fn report(&self, key: &TaskKey, state: TaskState) -> v1::TaskReport {
        v1::TaskReport {
            job: key.job.clone(),
            index: key.index,
            incarnation: key.incarnation,
            state: v1::TaskState::from(state) as i32,
            exit_code: self.exit_code,
            restarts: self.restarts,
            pid: self.pid,
            usage: Some(self.usage.into()),
            message: self.message.clone(),
            started_ms: self.started_ms,
            ports: self
                .ports
                .iter()
                .map(|(name, port)| (name.clone(), u32::from(*port)))
                .collect(),
        }
    }
}

/// Output kept per stream of a borgssh command.
pub const EXEC_OUTPUT_MAX_BYTES: usize = 1 << 20;

/// A task found on this machine.
#[derive(Debug, Clone)]
pub struct LocatedTask {
    pub key: TaskKey,
    pub sandbox: Sandbox,
    /// The keeper's pid while the task's process runs.
    pub running_pid: Option<u32>,
    pub task: Option<Arc<TaskAssignment>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("task {task} is not running on this machine now")]
    NotRunning { task: String },
    #[error("no command given")]
    EmptyCommand,
    #[error("cannot open the namespaces of task {task}: {source}")]
    Namespaces {
        task: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up a terminal: {0}")]
    Terminal(#[source] std::io::Error),
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

/// Removes a finished task's cgroup, retrying while the kernel still counts its last
/// processes (blocking: call off the async threads).
fn remove_cgroup(cgroups: &dyn TaskCgroups, key: &TaskKey) {
    let name = key.dir_name();
    for attempt in 1..=CGROUP_REMOVE_ATTEMPTS_MAX {
        match cgroups.remove(&name) {
            Ok(()) => return,
            Err(error) if attempt == CGROUP_REMOVE_ATTEMPTS_MAX => {
                tracing::warn!(task = %key, %error, "cannot remove the task cgroup")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(CGROUP_REMOVE_PAUSE_MS)),
        }
    }
}

/// The PID, UTS and mount namespaces of a task, through its init (the keeper's child).
fn task_namespaces(keeper_pid: u32) -> std::io::Result<Vec<std::fs::File>> {
    let init = runner::namespace_init_of_keeper(keeper_pid)
        .ok_or_else(|| std::io::Error::other("the task's namespace init is gone"))?;
    ["pid", "uts", "mnt"]
        .iter()
        .map(|ns| std::fs::File::open(format!("/proc/{init}/ns/{ns}")))
        .collect()
}

/// Thresholds of local enforcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnforcementSettings {
    /// Below this much free memory, tasks are killed (lowest priority first).
    pub reclaim_free_memory_min_bytes: u64,
    /// From this CPU busyness on, batch-class tasks are capped at their limit.
    pub cpu_busy_threshold_permille: u32,
}

/// What a poll answers besides the task reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Every task held, or with `incremental` those whose report changed since the cursor
    /// asked for.
    pub tasks: Vec<v1::TaskReport>,
    /// Sum of the tasks' usage.
    pub usage: Resources,
    /// The report is complete up to here.
    pub cursor: ReportCursor,
    pub incremental: bool,
    /// With `incremental`: tasks no longer reported since the cursor asked for.
    pub forgotten: Vec<TaskKey>,
}

pub struct Supervisor {
    settings: SupervisorSettings,
    cgroups: Option<Arc<dyn TaskCgroups>>,
    state_dir: StateDir,
    metrics: BorgletMetrics,
    table: Mutex<BTreeMap<TaskKey, Slot>>,
    /// Numbering of report changes; locked after `table`, only while reporting.
    report_changes: Mutex<ReportChanges>,
    sandboxes: Mutex<SandboxRetention>,
    /// Emptied sandboxes reused by new tasks (only with cgroups, which drain finished tasks).
    spares: Arc<SandboxSpares>,
    /// Tasks' named ports.
    ports: PortAllocator,
    /// Polls are applied one at a time.
    poll_lock: tokio::sync::Mutex<()>,
    /// Bounds the task starts in progress.
    start_permits: tokio::sync::Semaphore,
    /// Woken whenever a start ends (the process runs, or it could not start).
    start_settled: tokio::sync::Notify,
    /// Cancelled at shutdown when tasks are to outlive the borglet: actors return and leave
    /// their processes running.
    detach: CancellationToken,
}

impl Supervisor {
    pub fn new(
        settings: SupervisorSettings,
        cgroups: Option<Arc<dyn TaskCgroups>>,
        metrics: BorgletMetrics,
    ) -> Supervisor {
        Supervisor {
            state_dir: StateDir::new(&settings.data_dir),
            sandboxes: Mutex::new(SandboxRetention::new(settings.finished_sandboxes_max)),
            spares: Arc::new(SandboxSpares::new(&settings.data_dir, cgroups.is_some())),
            start_permits: tokio::sync::Semaphore::new(settings.starts_in_flight_max.max(1)),
            start_settled: tokio::sync::Notify::new(),
            ports: PortAllocator::new(settings.port_range.0, settings.port_range.1),
            settings,
            cgroups,
            metrics,
            table: Mutex::new(BTreeMap::new()),
            report_changes: Mutex::new(ReportChanges::new(report_epoch())),
            poll_lock: tokio::sync::Mutex::new(()),
            detach: CancellationToken::new(),
        }
    }

    pub fn state_dir(&self) -> &StateDir {
        &self.state_dir
    }

    fn table(&self) -> MutexGuard<'_, BTreeMap<TaskKey, Slot>> {
        // A panic while holding the lock cannot leave a slot half-updated in a way that
        // matters more than losing the borglet: keep serving.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies a desired set: starts what is missing, stops what is no longer wanted, and
    /// answers with the full report.
    pub async fn poll(
        self: &Arc<Self>,
        machine: &str,
        desired: Vec<v1::AssignedTask>,
    ) -> Result<Report, PollError> {
        self.poll_keyed(machine, desired, None, ReportCursor::default())
            .await
            .map(|(report, _)| report)
    }

    /// `poll` where, with `keys`, the desired set is `keys` and `desired` holds only the
    /// tasks this borglet may not have yet (a keyed poll). Also answers the keys whose task
    /// it does not have, for which it did nothing (the caller then polls in full). The
    /// report holds only what changed after `since` when it can (see `report_changes`).
    pub async fn poll_keyed(
        self: &Arc<Self>,
        machine: &str,
        desired: Vec<v1::AssignedTask>,
        keys: Option<Vec<TaskKey>>,
        since: ReportCursor,
    ) -> Result<(Report, Vec<TaskKey>), PollError> {
        let received = Instant::now();
        if !machine.is_empty() && machine != self.settings.machine_name {
            return Err(PollError::WrongMachine {
                requested: machine.to_owned(),
                actual: self.settings.machine_name.clone(),
            });
        }
        let count = keys
            .as_ref()
            .map_or(desired.len(), Vec::len)
            .max(desired.len());
        if count > self.settings.desired_tasks_max {
            return Err(PollError::TooManyTasks {
                count,
                max: self.settings.desired_tasks_max,
            });
        }
        let _one_at_a_time = self.poll_lock.lock().await;
        self.metrics.polls.inc();
        let mut desired: BTreeMap<TaskKey, Wanted> = desired
            .into_iter()
            .map(|task| match TaskAssignment::from_wire(task) {
                Ok(a) => (a.key.clone(), Wanted::Assigned(Ok(a))),
                Err(e) => (e.key.clone(), Wanted::Assigned(Err(e))),
            })
            .collect();
        for key in keys.into_iter().flatten() {
            desired.entry(key).or_insert(Wanted::Held);
        }
        let (to_start, unknown) = self.reconcile(desired);
        let started: Vec<TaskKey> = to_start
            .into_iter()
            .map(|assignment| {
                let key = assignment.key.clone();
                self.start(assignment, received);
                key
            })
            .collect();
        self.wait_for_starts(&started, received).await;
        Ok((self.report(since), unknown))
    }

    /// Waits (at most `poll_start_wait_ms` after `since`) until each of `keys` has a running
    /// program or is no longer starting, so the answer reports them as they are.
    async fn wait_for_starts(&self, keys: &[TaskKey], since: Instant) {
        if keys.is_empty() || self.settings.poll_start_wait_ms == 0 {
            return;
        }
        let deadline = tokio::time::Instant::from_std(
            since + Duration::from_millis(self.settings.poll_start_wait_ms),
        );
        loop {
            let settled = self.start_settled.notified();
            tokio::pin!(settled);
            // Registered before the check, so a start ending in between is not missed.
            settled.as_mut().enable();
            let starting = {
                let table = self.table();
                keys.iter().any(|key| {
                    table
                        .get(key)
                        .is_some_and(|slot| slot.phase == Phase::Running && slot.pid == 0)
                })
            };
            if !starting || tokio::time::timeout_at(deadline, settled).await.is_err() {
                return;
            }
        }
    }

    /// Updates the table to the desired set; returns the tasks to start, and the keys held
    /// by the caller (`Wanted::Held`) that need an assignment this borglet does not have.
    fn reconcile(
        &self,
        desired: BTreeMap<TaskKey, Wanted>,
    ) -> (Vec<Arc<TaskAssignment>>, Vec<TaskKey>) {
        let mut table = self.table();
        for (key, slot) in table.iter_mut() {
            if slot.desired && !desired.contains_key(key) {
                slot.desired = false;
                if matches!(slot.phase, Phase::Running | Phase::Restarting) {
                    tracing::info!(task = %key, "stopping task: no longer in the desired set");
                    slot.phase = Phase::Stopping;
                    slot.message = "stopping: no longer in the desired set".to_owned();
                    slot.stop.cancel();
                }
            }
        }
        let mut to_start = Vec::new();
        let mut unknown = Vec::new();
        for (key, wanted) in desired {
            if let Some(slot) = table.get_mut(&key) {
                match (slot.desired, slot.phase) {
                    (true, _) => continue,
                    // Wanted again while being stopped: started afresh once forgotten.
                    (false, Phase::Stopping) => continue,
                    (false, Phase::Succeeded | Phase::Failed) => {
                        slot.desired = true;
                        continue;
                    }
                    (false, _) if matches!(wanted, Wanted::Held) => {
                        unknown.push(key);
                        continue;
                    }
                    (false, _) => {
                        table.remove(&key);
                    }
                }
            }
            let wanted = match wanted {
                Wanted::Assigned(wanted) => wanted,
                Wanted::Held => {
                    unknown.push(key);
                    continue;
                }
            };
            match wanted {
                Ok(assignment) => {
                    let assignment = Arc::new(assignment);
                    let mut slot = Slot::new(Phase::Running, "starting".to_owned());
                    slot.task = Some(Arc::clone(&assignment));
                    table.insert(key, slot);
                    to_start.push(assignment);
                }
                Err(invalid) => {
                    tracing::warn!(task = %key, reason = %invalid.reason, "assigned task cannot run");
                    self.metrics.exit(ExitReason::StartFailed);
                    table.insert(key, Slot::new(Phase::Failed, invalid.to_string()));
                }
            }
        }
        (to_start, unknown)
    }

    /// Hands a newly desired task to a new actor, which starts it (at most
    /// `starts_in_flight_max` at once, off the async threads) and then supervises it. A
    /// Poll does not wait for the starts: a large desired set is answered at once; a task
    /// reports SCHEDULED until its program runs, then RUNNING with its pid.
    fn start(self: &Arc<Self>, assignment: Arc<TaskAssignment>, since: Instant) {
        let Some(stop) = self.table().get(&assignment.key).map(|s| s.stop.clone()) else {
            return;
        };
        let key = assignment.key.clone();
        let this = Arc::clone(self);
        let actor = tokio::spawn(async move {
            let first = tokio::select! {
                permit = this.start_permits.acquire() => {
                    let _permit = permit;
                    let (launcher, task) = (Arc::clone(&this), Arc::clone(&assignment));
                    tokio::task::spawn_blocking(move || {
                        // This thread waits for the keeper: a short slice gets it a CPU at once.
                        child::set_slice(child::START_SLICE_NS);
                        let started = launcher.launch(&task, 0, since);
                        child::set_slice(0);
                        started
                    })
                        .await
                        .unwrap_or_else(|error| {
                            Err(StartError::Spawn(SpawnError::Exec {
                                program: assignment.template.command.clone(),
                                source: std::io::Error::other(error.to_string()),
                            }))
                        })
                }
                _ = stop.cancelled() => {
                    let message = "stopped before it started: no longer in the desired set";
                    this.finish(&assignment.key, Phase::Stopped, None, message.to_owned()).await;
                    return;
                }
                _ = this.detach.cancelled() => return,
            };
            Arc::clone(&this)
                .supervise(assignment, first, stop, 0)
                .await;
        });
        if let Some(slot) = self.table().get_mut(&key) {
            slot.actor = Some(actor);
        }
    }

    pub(crate) fn launch_spec(
        &self,
        a: &TaskAssignment,
        sandbox: &Sandbox,
        cgroup_join_files: Vec<PathBuf>,
    ) -> LaunchSpec {
        let ports = self.ports.held(&a.key);
        let first_port = a
            .template
            .ports
            .first()
            .and_then(|name| ports.get(name))
            .copied();
        let subs = Substitutions {
            job: &a.key.job,
            task_index: a.key.index,
            user: &a.owner,
            cell: &self.settings.cell_name,
            first_port,
            ports: &ports,
        };
        let sandbox_dir = sandbox.dir.to_string_lossy().into_owned();
        let mut env = BTreeMap::from([
            ("PATH".to_owned(), self.settings.task_path.clone()),
            ("HOME".to_owned(), sandbox_dir.clone()),
        ]);
        for (name, value) in &a.template.env {
            env.insert(name.clone(), substitute(value, &subs));
        }
        // Set last: a template cannot hide who the task is.
        env.extend([
            ("BORG_JOB".to_owned(), a.key.job.clone()),
            ("BORG_TASK_INDEX".to_owned(), a.key.index.to_string()),
            ("BORG_INCARNATION".to_owned(), a.key.incarnation.to_string()),
            ("BORG_USER".to_owned(), a.owner.clone()),
            ("BORG_CELL".to_owned(), self.settings.cell_name.clone()),
            ("BORG_PRIORITY".to_owned(), a.priority.to_string()),
            (
                "BORG_MACHINE".to_owned(),
                self.settings.machine_name.clone(),
            ),
            ("BORG_SANDBOX".to_owned(), sandbox_dir),
        ]);
        if let Some(port) = first_port {
            env.insert("BORG_PORT".to_owned(), port.to_string());
        }
        env.extend(
            ports
                .iter()
                .map(|(name, port)| (env_name(name), port.to_string())),
        );
        LaunchSpec {
            program: substitute(&a.template.command, &subs),
            args: a
                .template
                .args
                .iter()
                .map(|arg| substitute(arg, &subs))
                .collect(),
            env,
            cwd: sandbox.dir.clone(),
            stdout: sandbox.stdout(),
            stderr: sandbox.stderr(),
            cgroup_join_files,
            isolation: runner::Isolation {
                private_tmp: self.settings.isolation.namespaces.then(|| sandbox.tmp()),
                ..self.settings.isolation.clone()
            },
            log: self.settings.log,
        }
    }

    /// Starts one process of the task: sandbox, cgroup with its limits, process, record.
    fn launch(
        &self,
        a: &TaskAssignment,
        restarts: u32,
        since: Instant,
    ) -> Result<TaskProcess, StartError> {
        let sandbox = Sandbox::of(&self.settings.data_dir, &a.key);
        let owner = self
            .settings
            .isolation
            .user
            .as_ref()
            .map(|u| (u.uid, u.gid));
        sandbox
            .create(owner, &self.spares)
            .map_err(|source| StartError::Sandbox {
                path: sandbox.dir.clone(),
                source,
            })?;
        // Held for the incarnation: a restart gets the same ports.
        let ports = self.ports.ports_of(&a.key, &a.template.ports)?;
        let cgroup_name = a.key.dir_name();
        let join_files = match &self.cgroups {
            Some(cgroups) => {
                let limits =
                    CgroupLimits::for_task(&a.template.resources, self.settings.task_pids_max);
                cgroups.create(&cgroup_name, &limits)?;
                cgroups.join_files(&cgroup_name)
            }
            None => Vec::new(),
        };
        let spec = self.launch_spec(a, &sandbox, join_files);
        let process = runner::spawn(&spec, self.settings.keeper_program.as_deref())?;
        self.metrics.task_starts.inc();
        self.metrics
            .task_start_latency
            .observe(since.elapsed().as_secs_f64());
        tracing::info!(task = %a.key, pid = process.pid(), restarts, "task started");
        let record = TaskRecord {
            assignment: a.clone(),
            pid: process.pid(),
            start_ticks: process.start_ticks(),
            started_ms: process.started_ms(),
            restarts,
            cgroup: self.cgroups.as_ref().map(|_| cgroup_name),
            sandbox: sandbox.dir,
            ports,
        };
        if let Err(error) = self.state_dir.write(&record) {
            tracing::warn!(task = %a.key, %error, "cannot record the started task");
        }
        // Shown at once (the actor, which supervises the process, runs a moment later): a
        // Poll waiting for this start answers with the pid.
        let program_pid = self.program_pid(process.pid());
        self.update(&a.key, |slot| {
            if slot.phase == Phase::Running && slot.pid == 0 {
                slot.keeper_pid = process.pid();
                slot.pid = program_pid;
                slot.started_ms = process.started_ms();
                slot.ports = record.ports.clone();
                slot.message.clear();
            }
        });
        self.start_settled.notify_waiters();
        Ok(process)
    }

    /// Applies `change` to the task's slot (if it is still there). The gauge of running tasks
    /// is refreshed by the next report (which visits every slot anyway), not here: a count over
    /// the whole table per slot change was O(tasks) per update.
    fn update(&self, key: &TaskKey, change: impl FnOnce(&mut Slot)) {
        if let Some(slot) = self.table().get_mut(key) {
            change(slot);
        }
    }

    fn cgroup_usage(&self, key: &TaskKey) -> CgroupUsage {
        match &self.cgroups {
            Some(cgroups) => cgroups.usage(&key.dir_name()),
            None => CgroupUsage::default(),
        }
    }

    /// The life of one task incarnation, from its first process to its end.
    async fn supervise(
        self: Arc<Self>,
        a: Arc<TaskAssignment>,
        first: Result<TaskProcess, StartError>,
        stop: CancellationToken,
        restarts_before: u32,
    ) {
        let key = &a.key;
        let mut tracker = RestartTracker::resumed(restarts_before);
        let mut attempt = first;
        loop {
            let (exit_code, message, success) = match attempt {
                Ok(mut process) => {
                    let (pid, started_ms) = (process.pid(), process.started_ms());
                    let program_pid = self.program_pid(pid);
                    let oom_before = self.cgroup_usage(key).oom_kills;
                    let restarts = tracker.total();
                    let ports = self.ports.held(key);
                    self.update(key, |slot| {
                        if slot.phase != Phase::Stopping {
                            slot.phase = Phase::Running;
                            slot.message.clear();
                        }
                        slot.keeper_pid = pid;
                        slot.pid = program_pid;
                        slot.started_ms = started_ms;
                        slot.restarts = restarts;
                        slot.cpu_sample = None;
                        slot.ports = ports;
                    });
                    self.start_settled.notify_waiters();
                    let status = tokio::select! {
                        status = process.wait() => status,
                        _ = stop.cancelled() => {
                            let eviction = self.eviction(key);
                            let exit = self.stop_process(key, &mut process, eviction.is_none()).await;
                            let message = match (eviction, exit) {
                                (Some(reason), _) => reason,
                                (None, Some(exit)) => format!("stopped: no longer in the desired set ({})", exit.describe()),
                                (None, None) => "stopped: no longer in the desired set".to_owned(),
                            };
                            self.finish(key, Phase::Stopped, exit.map(TaskExit::exit_code), message).await;
                            return;
                        }
                        _ = self.detach.cancelled() => return,
                    };
                    self.kill_leftovers(key, pid).await;
                    match status {
                        Ok(None) => {
                            self.metrics.exit(ExitReason::Failure);
                            let message = "exited; its exit status is unknown (the process was adopted after a borglet restart)";
                            tracing::info!(task = %key, pid, "adopted task process ended");
                            (None, message.to_owned(), false)
                        }
                        Ok(Some(status)) => {
                            let exit = TaskExit::from_status(status);
                            let oom = self.cgroup_usage(key).oom_kills > oom_before;
                            let (reason, message) = match exit {
                                // The kernel killed a process of the task at its limit.
                                _ if oom && !exit.success() => (
                                    ExitReason::Oom,
                                    format!(
                                        "OOM-killed at its memory limit of {} ({})",
                                        borg_model::resources::format_bytes(
                                            a.template.resources.ram_bytes
                                        ),
                                        exit.describe()
                                    ),
                                ),
                                TaskExit::Signal(_) => (ExitReason::Signal, exit.describe()),
                                TaskExit::Code(0) => (ExitReason::Success, exit.describe()),
                                TaskExit::Code(_) => (ExitReason::Failure, exit.describe()),
                            };
                            self.metrics.exit(reason);
                            tracing::info!(task = %key, pid, %message, "task process ended");
                            (Some(exit.exit_code()), message, exit.success())
                        }
                        Err(error) => {
                            self.metrics.exit(ExitReason::Failure);
                            (
                                None,
                                format!("waiting for process {pid} failed: {error}"),
                                false,
                            )
                        }
                    }
                }
                Err(error) => {
                    self.metrics.exit(ExitReason::StartFailed);
                    tracing::warn!(task = %key, %error, "task could not start");
                    if error.is_permanent() {
                        self.finish(key, Phase::Failed, None, error.to_string())
                            .await;
                        return;
                    }
                    (None, error.to_string(), false)
                }
            };
            match tracker.after_exit(a.job_type, &a.restart, success, now_ms()) {
                AfterExit::Succeeded => {
                    self.finish(key, Phase::Succeeded, exit_code, message).await;
                    return;
                }
                AfterExit::Failed => {
                    let message = format!(
                        "{message}; restart policy exhausted after {} restarts",
                        tracker.total()
                    );
                    self.finish(key, Phase::Failed, exit_code, message).await;
                    return;
                }
                AfterExit::Restart { delay_ms } => {
                    let restarts = tracker.total();
                    self.update(key, |slot| {
                        if slot.phase != Phase::Stopping {
                            slot.phase = Phase::Restarting;
                            slot.message = format!("{message}; restarting in {delay_ms} ms");
                        }
                        slot.pid = 0;
                        slot.keeper_pid = 0;
                        slot.exit_code = exit_code;
                        slot.restarts = restarts;
                    });
                    self.start_settled.notify_waiters();
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
                        _ = stop.cancelled() => {
                            let message = self.eviction(key).unwrap_or_else(|| {
                                "stopped while waiting to restart: no longer in the desired set".to_owned()
                            });
                            self.finish(key, Phase::Stopped, exit_code, message).await;
                            return;
                        }
                        _ = self.detach.cancelled() => return,
                    }
                    attempt = self.launch(&a, restarts, Instant::now());
                }
            }
        }
    }

    /// The pid (in the machine's namespace) of the program a keeper runs, which is what users
    /// see and what `ps` shows; the keeper's own when the program is already gone.
    fn program_pid(&self, keeper_pid: u32) -> u32 {
        runner::program_of_keeper(keeper_pid, self.settings.isolation.namespaces)
            .unwrap_or(keeper_pid)
    }

    fn eviction(&self, key: &TaskKey) -> Option<String> {
        self.table().get(key).and_then(|slot| slot.eviction.clone())
    }

    /// SIGTERM to the task's process group and cgroup, SIGKILL after the grace period (at
    /// once without `graceful`: memory reclamation cannot wait).
    async fn stop_process(
        &self,
        key: &TaskKey,
        process: &mut TaskProcess,
        graceful: bool,
    ) -> Option<TaskExit> {
        let pid = process.pid();
        runner::signal_group(pid, Signal::SIGTERM);
        self.signal_cgroup(key, Signal::SIGTERM);
        let grace = Duration::from_millis(if graceful {
            self.settings.stop_grace_period_ms
        } else {
            0
        });
        let status = match tokio::time::timeout(grace, process.wait()).await {
            Ok(status) => status.ok().flatten(),
            Err(_) => {
                tracing::info!(task = %key, pid, "grace period over: killing the task");
                runner::signal_group(pid, Signal::SIGKILL);
                self.signal_cgroup(key, Signal::SIGKILL);
                let kill_wait = Duration::from_millis(KILL_WAIT_MAX_MS);
                match tokio::time::timeout(kill_wait, process.wait()).await {
                    Ok(status) => status.ok().flatten(),
                    Err(_) => {
                        tracing::warn!(task = %key, pid, "process still alive after SIGKILL");
                        None
                    }
                }
            }
        };
        self.kill_leftovers(key, pid).await;
        self.metrics.exit(ExitReason::Stopped);
        status.map(TaskExit::from_status)
    }

    fn signal_cgroup(&self, key: &TaskKey, signal: Signal) {
        if let Some(cgroups) = &self.cgroups {
            runner::signal_pids(&cgroups.pids(&key.dir_name()), signal);
        }
    }

    /// Kills whatever the task's main process left behind: its process group, and every
    /// process still in its cgroup.
    async fn kill_leftovers(&self, key: &TaskKey, leader_pid: u32) {
        runner::signal_group(leader_pid, Signal::SIGKILL);
        let Some(cgroups) = &self.cgroups else {
            return;
        };
        let name = key.dir_name();
        for _ in 0..CGROUP_DRAIN_ROUNDS_MAX {
            let pids = cgroups.pids(&name);
            if pids.is_empty() {
                return;
            }
            runner::signal_pids(&pids, Signal::SIGKILL);
            tokio::time::sleep(Duration::from_millis(CGROUP_DRAIN_PAUSE_MS)).await;
        }
        tracing::warn!(task = %key, "processes remain in the task cgroup after repeated SIGKILL");
    }

    /// Ends the incarnation: final usage, cgroup and record removed, then the terminal phase
    /// (so a task seen terminal is fully cleaned up).
    async fn finish(&self, key: &TaskKey, phase: Phase, exit_code: Option<i32>, message: String) {
        // Reading the cgroup and removing it (an rmdir per hierarchy, which the kernel may
        // take milliseconds over) must not hold up the async threads that answer Polls.
        let (cgroups, state_dir, cleaned_key) =
            (self.cgroups.clone(), self.state_dir.clone(), key.clone());
        let cleanup = tokio::task::spawn_blocking(move || {
            let usage = cgroups
                .as_ref()
                .map(|c| c.usage(&cleaned_key.dir_name()))
                .unwrap_or_default();
            if let Some(cgroups) = &cgroups {
                remove_cgroup(cgroups.as_ref(), &cleaned_key);
            }
            state_dir.remove(&cleaned_key);
            usage
        });
        let final_usage = cleanup.await.unwrap_or_default();
        self.ports.release(key);
        self.update(key, |slot| {
            slot.ports.clear();
            slot.phase = phase;
            slot.exit_code = exit_code;
            slot.message = message;
            slot.usage = Resources {
                ram_bytes: final_usage.memory_bytes,
                ..Resources::ZERO
            };
        });
        self.start_settled.notify_waiters();
    }

    /// Hands the sandboxes of forgotten tasks to the retention, deleting the expired ones.
    fn retire_sandboxes<'a>(&self, keys: impl Iterator<Item = &'a TaskKey>) {
        let expired: Vec<PathBuf> = {
            let mut retention = self.sandboxes.lock().unwrap_or_else(|p| p.into_inner());
            // An invalid job name (never run) could name a path outside the sandboxes.
            keys.filter(|key| borg_model::is_valid_name(&key.job))
                .flat_map(|key| retention.retire(Sandbox::of(&self.settings.data_dir, key).dir))
                .collect()
        };
        if !expired.is_empty() {
            // Deleting many files should not hold up a Poll.
            let spares = Arc::clone(&self.spares);
            tokio::task::spawn_blocking(move || delete_sandboxes(&expired, &spares));
        }
    }

    /// Sandboxes of an earlier run that belong to no task held now join the retention.
    pub fn retain_leftover_sandboxes(&self) {
        let current: Vec<PathBuf> = self
            .table()
            .keys()
            .map(|key| Sandbox::of(&self.settings.data_dir, key).dir)
            .collect();
        let expired = self
            .sandboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .adopt_leftovers(&self.settings.data_dir, &current);
        self.spares.clear_leftovers();
        delete_sandboxes(&expired, &self.spares);
    }

    /// Takes over the tasks a previous run of the borglet left running (found through their
    /// records): each gets a slot and an actor as if this run had started it. Records of
    /// processes that are gone are cleaned up (their cgroup emptied and removed). The next
    /// Poll stops adopted tasks that are no longer desired. Returns how many were adopted.
    pub async fn adopt(self: &Arc<Self>, records: Vec<TaskRecord>) -> usize {
        let mut adopted = 0;
        for record in records {
            let key = record.assignment.key.clone();
            if !borg_model::is_valid_name(&key.job) || self.table().contains_key(&key) {
                continue;
            }
            let Some(process) =
                TaskProcess::adopt(record.pid, record.start_ticks, record.started_ms)
            else {
                tracing::info!(task = %key, pid = record.pid, "task ended while the borglet was down");
                // Its pid may name another process by now: only the task's cgroup is drained.
                if let Some(cgroups) = &self.cgroups {
                    runner::signal_pids(&cgroups.pids(&key.dir_name()), Signal::SIGKILL);
                }
                self.finish(&key, Phase::Stopped, None, String::new()).await;
                continue;
            };
            self.ports.restore(&key, &record.ports);
            let mut slot = Slot::new(Phase::Running, "adopted after a borglet restart".to_owned());
            slot.keeper_pid = record.pid;
            slot.pid = self.program_pid(record.pid);
            slot.started_ms = record.started_ms;
            slot.restarts = record.restarts;
            slot.ports = record.ports.clone();
            let stop = slot.stop.clone();
            let assignment = Arc::new(record.assignment);
            slot.task = Some(Arc::clone(&assignment));
            self.table().insert(key.clone(), slot);
            tracing::info!(task = %key, pid = record.pid, "task adopted");
            let actor = tokio::spawn(Arc::clone(self).supervise(
                assignment,
                Ok(process),
                stop,
                record.restarts,
            ));
            if let Some(slot) = self.table().get_mut(&key) {
                slot.actor = Some(actor);
            }
            adopted += 1;
        }
        adopted
    }

    /// Reports every task held (or, when `since` allows, those whose report changed after
    /// it); forgets tasks that left the desired set once they are over (a stopped one after
    /// reporting it KILLED a last time). Usage is as last sampled (`sample_usage_of`).
    fn report(&self, since: ReportCursor) -> Report {
        let mut table = self.table();
        let mut changes = self
            .report_changes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let incremental = changes.answers_incrementally(since);
        let mut tasks = Vec::new();
        let mut usage = Resources::ZERO;
        let mut forget = BTreeSet::new();
        let mut running = 0usize;
        for (key, slot) in table.iter_mut() {
            if slot.phase == Phase::Running && slot.pid != 0 {
                running += 1;
            }
            let state = match (slot.desired, slot.phase) {
                (false, Phase::Succeeded | Phase::Failed) => {
                    forget.insert(key.clone());
                    continue;
                }
                (false, Phase::Stopped) => {
                    forget.insert(key.clone());
                    TaskState::Killed
                }
                (_, Phase::Stopping | Phase::Stopped) => TaskState::Killed,
                // Accepted but not yet exec'd: the master keeps it `Scheduled` until the
                // program really runs (and has a pid to show).
                (_, Phase::Running) if slot.pid == 0 => TaskState::Scheduled,
                (_, Phase::Running | Phase::Restarting) => TaskState::Running,
                (true, Phase::Succeeded) => TaskState::Succeeded,
                (true, Phase::Failed) => TaskState::Failed,
            };
            if matches!(slot.phase, Phase::Running | Phase::Stopping) {
                usage += slot.usage;
            }
            slot.number_report(state, &mut changes);
            if !incremental || slot.changed_seq > since.seq {
                tasks.push(slot.report(key, state));
            }
        }
        table.retain(|key, _| !forget.contains(key));
        drop(table);
        self.metrics
            .tasks_running
            .set(i64::try_from(running).unwrap_or(i64::MAX));
        for key in &forget {
            changes.forget(key.clone());
        }
        let forgotten = if incremental {
            changes.forgotten_since(since.seq).cloned().collect()
        } else {
            Vec::new()
        };
        let cursor = changes.cursor();
        drop(changes);
        self.retire_sandboxes(forget.iter());
        Report {
            tasks,
            usage,
            cursor,
            incremental,
            forgotten,
        }
    }

    /// Tasks whose process runs, with their current memory use (read from their cgroups).
    /// The readings are also the tasks' usage samples (see `record_usage`).
    pub fn running_tasks(&self) -> Vec<RunningTask> {
        let running: Vec<(TaskKey, Arc<TaskAssignment>)> = self
            .table()
            .iter()
            .filter(|(_, s)| s.phase == Phase::Running && s.pid != 0)
            .filter_map(|(key, s)| Some((key.clone(), Arc::clone(s.task.as_ref()?))))
            .collect();
        let readings: Vec<(RunningTask, CgroupUsage)> = running
            .into_iter()
            .map(|(key, a)| {
                let reading = self.cgroup_usage(&key);
                let task = RunningTask {
                    memory_bytes: reading.memory_bytes,
                    priority: a.priority,
                    app_class: a.app_class,
                    cpu_limit_millis: a.template.resources.cpu_millis,
                    key,
                };
                (task, reading)
            })
            .collect();
        self.record_usage(&readings);
        readings.into_iter().map(|(task, _)| task).collect()
    }

    /// Makes cgroup readings the tasks' reported usage, at most once per task every
    /// `usage_sample_interval_ms` (a changed usage is a changed report: sampling more often
    /// would send every running task in every incremental report).
    fn record_usage(&self, readings: &[(RunningTask, CgroupUsage)]) {
        if self.cgroups.is_none() {
            return;
        }
        let interval = Duration::from_millis(self.settings.usage_sample_interval_ms);
        let now = Instant::now();
        let mut table = self.table();
        for (task, reading) in readings {
            let Some(slot) = table.get_mut(&task.key) else {
                continue;
            };
            let due = slot
                .cpu_sample
                .is_none_or(|(_, at)| now.duration_since(at) >= interval);
            if due && slot.phase == Phase::Running && slot.pid != 0 {
                sample_usage(slot, *reading, now);
            }
        }
    }

    /// Kills a running task on the borglet's own account (no grace period); it is reported
    /// KILLED with `reason`, and the master places it again. Returns whether it was running.
    pub fn evict(&self, key: &TaskKey, reason: String) -> bool {
        let mut table = self.table();
        let Some(slot) = table.get_mut(key) else {
            return false;
        };
        if !matches!(slot.phase, Phase::Running | Phase::Restarting) {
            return false;
        }
        tracing::warn!(task = %key, %reason, "evicting task");
        slot.phase = Phase::Stopping;
        slot.message = reason.clone();
        slot.eviction = Some(reason);
        slot.stop.cancel();
        true
    }

    /// One round of local enforcement: memory reclamation, then CPU caps.
    pub fn enforce(&self, pressure: &dyn MachinePressure, limits: &EnforcementSettings) {
        let running = self.running_tasks();
        if let Some(free) = pressure.free_memory_bytes() {
            self.metrics
                .free_memory_bytes
                .set(i64::try_from(free).unwrap_or(i64::MAX));
            let min = limits.reclaim_free_memory_min_bytes;
            if free < min {
                let victims = reclamation_victims(&running, min - free);
                if victims.is_empty() {
                    tracing::warn!(free, min, "memory is short but no task may be reclaimed");
                }
                for key in victims {
                    let Some(task) = running.iter().find(|t| t.key == key) else {
                        continue;
                    };
                    let band = Band::of(task.priority);
                    let reason = format!(
                        "killed to reclaim memory: the machine had {} free, under its threshold of {}; lowest priority first (priority {}, {band:?} band)",
                        borg_model::resources::format_bytes(free),
                        borg_model::resources::format_bytes(min),
                        task.priority
                    );
                    if self.evict(&key, reason) {
                        self.metrics
                            .reclaim_kills
                            .with_label_values(&[&format!("{band:?}").to_lowercase()])
                            .inc();
                    }
                }
            }
        }
        if let (Some(cgroups), Some(busy)) = (&self.cgroups, pressure.cpu_busy_permille()) {
            let machine_busy = busy >= limits.cpu_busy_threshold_permille;
            for task in &running {
                let capped = cpu_capped(task.app_class, machine_busy);
                let was = self
                    .table()
                    .get(&task.key)
                    .is_some_and(|slot| slot.cpu_capped);
                if capped == was {
                    continue;
                }
                let cap = capped.then_some(task.cpu_limit_millis.max(1));
                match cgroups.set_cpu_cap(&task.key.dir_name(), cap) {
                    Ok(()) => {
                        tracing::info!(task = %task.key, capped, busy_permille = busy, "cpu cap changed");
                        self.update(&task.key, |slot| slot.cpu_capped = capped);
                    }
                    Err(error) => {
                        tracing::warn!(task = %task.key, %error, "cannot change the cpu cap")
                    }
                }
            }
            let capped = self.table().values().filter(|s| s.cpu_capped).count();
            self.metrics
                .tasks_cpu_capped
                .set(i64::try_from(capped).unwrap_or(i64::MAX));
        }
        self.metrics.enforcement_rounds.inc();
    }

    /// The task `job/index` held here: the given incarnation, or with 0 the newest one. Tasks
    /// already forgotten are found through the sandboxes still on disk.
    pub fn locate(&self, job: &str, index: u32, incarnation: u64) -> Option<LocatedTask> {
        if !borg_model::is_valid_name(job) {
            return None;
        }
        let wanted = |key: &TaskKey| {
            key.job == job
                && key.index == index
                && (incarnation == 0 || key.incarnation == incarnation)
        };
        let held = self
            .table()
            .iter()
            .filter(|(key, _)| wanted(key))
            .max_by_key(|(key, _)| key.incarnation)
            .map(|(key, slot)| LocatedTask {
                key: key.clone(),
                sandbox: Sandbox::of(&self.settings.data_dir, key),
                running_pid: (slot.phase == Phase::Running && slot.keeper_pid != 0)
                    .then_some(slot.keeper_pid),
                task: slot.task.clone(),
            });
        if held.is_some() {
            return held;
        }
        let prefix = format!("{job}.{index}.");
        let entries =
            std::fs::read_dir(self.settings.data_dir.join(crate::sandbox::SANDBOXES_DIR)).ok()?;
        entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let found: u64 = name.strip_prefix(&prefix)?.parse().ok()?;
                Some(TaskKey::new(job, index, found))
            })
            .filter(|key| wanted(key))
            .max_by_key(|key| key.incarnation)
            .map(|key| LocatedTask {
                sandbox: Sandbox::of(&self.settings.data_dir, &key),
                key,
                running_pid: None,
                task: None,
            })
    }

    /// Whether the incarnation may still write output (running, restarting or stopping).
    pub fn is_live(&self, key: &TaskKey) -> bool {
        self.table().get(key).is_some_and(|slot| {
            matches!(
                slot.phase,
                Phase::Running | Phase::Restarting | Phase::Stopping
            )
        })
    }

    /// What starts `command` inside the running task: its launch (cgroup, user, environment,
    /// working directory) and its namespaces.
    fn inside_launch(
        &self,
        task: &LocatedTask,
        command: &[String],
    ) -> Result<(LaunchSpec, Vec<std::fs::File>), ExecError> {
        let (Some(keeper_pid), Some(a)) = (task.running_pid, &task.task) else {
            return Err(ExecError::NotRunning {
                task: task.key.to_string(),
            });
        };
        let Some((program, args)) = command.split_first() else {
            return Err(ExecError::EmptyCommand);
        };
        let join_files = match &self.cgroups {
            Some(cgroups) => cgroups.join_files(&task.key.dir_name()),
            None => Vec::new(),
        };
        let mut spec = self.launch_spec(a, &task.sandbox, join_files);
        spec.program = program.clone();
        spec.args = args.to_vec();
        spec.stdout = PathBuf::from("/dev/null");
        spec.stderr = PathBuf::from("/dev/null");
        let namespaces = if self.settings.isolation.namespaces {
            task_namespaces(keeper_pid).map_err(|source| ExecError::Namespaces {
                task: task.key.to_string(),
                source,
            })?
        } else {
            Vec::new()
        };
        Ok((spec, namespaces))
    }

    /// borgssh: runs `command` inside the running task (its cgroup, namespaces and user).
    pub async fn run_in_task(
        &self,
        task: &LocatedTask,
        command: &[String],
        timeout: Duration,
    ) -> Result<runner::InsideOutput, ExecError> {
        let (spec, namespaces) = self.inside_launch(task, command)?;
        Ok(runner::run_inside(&spec, namespaces, timeout, EXEC_OUTPUT_MAX_BYTES).await?)
    }

    /// borgssh with a terminal: starts `command` inside the running task on a new PTY of
    /// `window` (rows, cols) with `TERM=term`; returns the PTY's master and the process.
    pub fn open_terminal_in_task(
        &self,
        task: &LocatedTask,
        command: &[String],
        window: (u16, u16),
        term: &str,
    ) -> Result<(crate::pty::PtyMaster, tokio::process::Child), ExecError> {
        let (mut spec, namespaces) = self.inside_launch(task, command)?;
        spec.env.insert("TERM".to_owned(), term.to_owned());
        let owner = spec.isolation.user.as_ref().map(|u| (u.uid, u.gid));
        let pair = crate::pty::open(window.0, window.1, owner).map_err(ExecError::Terminal)?;
        let master = crate::pty::PtyMaster::new(pair.master).map_err(ExecError::Terminal)?;
        let process = runner::spawn_inside_terminal(&spec, namespaces, pair.slave)?;
        Ok((master, process))
    }

    /// Stops supervising. With `kill_tasks`, every task is stopped (grace period, then
    /// SIGKILL) and cleaned up; otherwise processes, cgroups and records are left for a
    /// restarted borglet.
    pub async fn shutdown(&self, kill_tasks: bool) {
        let actors: Vec<JoinHandle<()>> = {
            let mut table = self.table();
            if kill_tasks {
                for slot in table.values_mut() {
                    slot.stop.cancel();
                }
            }
            table.values_mut().filter_map(|s| s.actor.take()).collect()
        };
        if !kill_tasks {
            self.detach.cancel();
        }
        let bound = self.settings.stop_grace_period_ms + KILL_WAIT_MAX_MS + SHUTDOWN_MARGIN_MS;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(bound);
        for actor in actors {
            if tokio::time::timeout_at(deadline, actor).await.is_err() {
                tracing::warn!("task actors did not finish within {bound} ms of shutdown");
                break;
            }
        }
    }
}

/// A number for this instance's report changes that differs from earlier instances' (its
/// start time in nanoseconds).
fn report_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |elapsed| {
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
        })
}

/// Memory is the current charge; CPU is the rate between this reading and the previous one.
fn sample_usage(slot: &mut Slot, reading: CgroupUsage, now: Instant) {
    slot.usage.ram_bytes = reading.memory_bytes;
    if let Some((previous_ns, at)) = slot.cpu_sample {
        let elapsed_ns = now.duration_since(at).as_nanos();
        let used_ns = u128::from(reading.cpu_usage_ns.saturating_sub(previous_ns));
        if let Some(millis) = (used_ns * 1000).checked_div(elapsed_ns) {
            slot.usage.cpu_millis = u64::try_from(millis).unwrap_or(u64::MAX);
        }
    }
    slot.cpu_sample = Some((reading.cpu_usage_ns, now));
}
