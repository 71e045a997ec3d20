//! The tasks of this machine: reconciling the desired set, supervising each task's process
//! (restarts, stops, cleanup) and reporting their states.
//!
//! Each task incarnation gets a slot in the table and, once started, an actor (a tokio task)
//! that owns its process: it waits for the exit, applies the restart policy, stops the
//! process when the task leaves the desired set, and cleans up (leftover processes, cgroup,
//! record). A Poll only edits the table and reads it back.

use crate::assignment::{InvalidAssignment, TaskAssignment, TaskKey};
use crate::cgroups::{CgroupError, CgroupLimits, CgroupUsage, TaskCgroups};
use crate::metrics::{BorgletMetrics, ExitReason};
use crate::restart::{AfterExit, RestartTracker};
use crate::runner::{self, LaunchSpec, SpawnError, TaskExit, TaskProcess};
use crate::sandbox::{delete_sandboxes, Sandbox, SandboxRetention};
use crate::state_dir::{StateDir, TaskRecord};
use crate::substitute::{substitute, Substitutions};
use borg_common::now_ms;
use borg_model::{Resources, TaskState};
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
    pub data_dir: PathBuf,
    pub stop_grace_period_ms: u64,
    pub task_pids_max: u64,
    pub task_path: String,
    pub desired_tasks_max: usize,
    pub finished_sandboxes_max: usize,
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
        }
    }
}

/// What a poll answers besides the task reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub tasks: Vec<v1::TaskReport>,
    /// Sum of the tasks' usage.
    pub usage: Resources,
}

pub struct Supervisor {
    settings: SupervisorSettings,
    cgroups: Option<Arc<dyn TaskCgroups>>,
    state_dir: StateDir,
    metrics: BorgletMetrics,
    table: Mutex<BTreeMap<TaskKey, Slot>>,
    sandboxes: Mutex<SandboxRetention>,
    /// Polls are applied one at a time.
    poll_lock: tokio::sync::Mutex<()>,
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
            settings,
            cgroups,
            metrics,
            table: Mutex::new(BTreeMap::new()),
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
        let received = Instant::now();
        if !machine.is_empty() && machine != self.settings.machine_name {
            return Err(PollError::WrongMachine {
                requested: machine.to_owned(),
                actual: self.settings.machine_name.clone(),
            });
        }
        if desired.len() > self.settings.desired_tasks_max {
            return Err(PollError::TooManyTasks {
                count: desired.len(),
                max: self.settings.desired_tasks_max,
            });
        }
        let _one_at_a_time = self.poll_lock.lock().await;
        self.metrics.polls.inc();
        let desired: BTreeMap<TaskKey, Result<TaskAssignment, InvalidAssignment>> = desired
            .into_iter()
            .map(|task| match TaskAssignment::from_wire(task) {
                Ok(a) => (a.key.clone(), Ok(a)),
                Err(e) => (e.key.clone(), Err(e)),
            })
            .collect();
        for assignment in self.reconcile(desired) {
            self.start(assignment, received);
        }
        Ok(self.report())
    }

    /// Updates the table to the desired set; returns the tasks to start.
    fn reconcile(
        &self,
        desired: BTreeMap<TaskKey, Result<TaskAssignment, InvalidAssignment>>,
    ) -> Vec<Arc<TaskAssignment>> {
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
                    (false, _) => {
                        table.remove(&key);
                    }
                }
            }
            match wanted {
                Ok(assignment) => {
                    table.insert(key, Slot::new(Phase::Running, "starting".to_owned()));
                    to_start.push(Arc::new(assignment));
                }
                Err(invalid) => {
                    tracing::warn!(task = %key, reason = %invalid.reason, "assigned task cannot run");
                    self.metrics.exit(ExitReason::StartFailed);
                    table.insert(key, Slot::new(Phase::Failed, invalid.to_string()));
                }
            }
        }
        to_start
    }

    /// Starts a newly desired task and hands its process to a new actor.
    fn start(self: &Arc<Self>, assignment: Arc<TaskAssignment>, since: Instant) {
        let Some(stop) = self.table().get(&assignment.key).map(|s| s.stop.clone()) else {
            return;
        };
        let first = self.launch(&assignment, 0, since);
        let key = assignment.key.clone();
        // The report that follows already tells what happened.
        match &first {
            Ok(process) => {
                let (pid, started_ms) = (process.pid(), process.started_ms());
                self.update(&key, |slot| {
                    slot.pid = pid;
                    slot.started_ms = started_ms;
                    slot.message.clear();
                });
            }
            Err(error) => {
                let phase = if error.is_permanent() {
                    Phase::Failed
                } else {
                    Phase::Restarting
                };
                let message = error.to_string();
                self.update(&key, |slot| {
                    if slot.phase != Phase::Stopping {
                        slot.phase = phase;
                        slot.message = message;
                    }
                });
            }
        }
        let actor = tokio::spawn(Arc::clone(self).supervise(assignment, first, stop, 0));
        if let Some(slot) = self.table().get_mut(&key) {
            slot.actor = Some(actor);
        }
    }

    fn launch_spec(
        &self,
        a: &TaskAssignment,
        sandbox: &Sandbox,
        cgroup_join_files: Vec<PathBuf>,
    ) -> LaunchSpec {
        let subs = Substitutions {
            job: &a.key.job,
            task_index: a.key.index,
            user: &a.owner,
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
            ("BORG_PRIORITY".to_owned(), a.priority.to_string()),
            (
                "BORG_MACHINE".to_owned(),
                self.settings.machine_name.clone(),
            ),
            ("BORG_SANDBOX".to_owned(), sandbox_dir),
        ]);
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
        sandbox.create().map_err(|source| StartError::Sandbox {
            path: sandbox.dir.clone(),
            source,
        })?;
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
        let process = runner::spawn(&self.launch_spec(a, &sandbox, join_files))?;
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
        };
        if let Err(error) = self.state_dir.write(&record) {
            tracing::warn!(task = %a.key, %error, "cannot record the started task");
        }
        Ok(process)
    }

    /// Applies `change` to the task's slot (if it is still there) and refreshes the gauge of
    /// running tasks.
    fn update(&self, key: &TaskKey, change: impl FnOnce(&mut Slot)) {
        let mut table = self.table();
        if let Some(slot) = table.get_mut(key) {
            change(slot);
        }
        let running = table
            .values()
            .filter(|s| s.phase == Phase::Running && s.pid != 0)
            .count();
        self.metrics
            .tasks_running
            .set(i64::try_from(running).unwrap_or(i64::MAX));
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
                    let oom_before = self.cgroup_usage(key).oom_kills;
                    let restarts = tracker.total();
                    self.update(key, |slot| {
                        if slot.phase != Phase::Stopping {
                            slot.phase = Phase::Running;
                            slot.message.clear();
                        }
                        slot.pid = pid;
                        slot.started_ms = started_ms;
                        slot.restarts = restarts;
                        slot.cpu_sample = None;
                    });
                    let status = tokio::select! {
                        status = process.wait() => status,
                        _ = stop.cancelled() => {
                            let exit = self.stop_process(key, &mut process).await;
                            let message = match exit {
                                Some(exit) => format!("stopped: no longer in the desired set ({})", exit.describe()),
                                None => "stopped: no longer in the desired set".to_owned(),
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
                        slot.exit_code = exit_code;
                        slot.restarts = restarts;
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
                        _ = stop.cancelled() => {
                            let message = "stopped while waiting to restart: no longer in the desired set";
                            self.finish(key, Phase::Stopped, exit_code, message.to_owned()).await;
                            return;
                        }
                        _ = self.detach.cancelled() => return,
                    }
                    attempt = self.launch(&a, restarts, Instant::now());
                }
            }
        }
    }

    /// SIGTERM to the task's process group and cgroup, SIGKILL after the grace period.
    async fn stop_process(&self, key: &TaskKey, process: &mut TaskProcess) -> Option<TaskExit> {
        let pid = process.pid();
        runner::signal_group(pid, Signal::SIGTERM);
        self.signal_cgroup(key, Signal::SIGTERM);
        let grace = Duration::from_millis(self.settings.stop_grace_period_ms);
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
        let final_usage = self.cgroup_usage(key);
        if let Some(cgroups) = &self.cgroups {
            let name = key.dir_name();
            for attempt in 1..=CGROUP_REMOVE_ATTEMPTS_MAX {
                match cgroups.remove(&name) {
                    Ok(()) => break,
                    Err(error) if attempt == CGROUP_REMOVE_ATTEMPTS_MAX => {
                        tracing::warn!(task = %key, %error, "cannot remove the task cgroup")
                    }
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(CGROUP_REMOVE_PAUSE_MS)).await
                    }
                }
            }
        }
        self.state_dir.remove(key);
        self.update(key, |slot| {
            slot.phase = phase;
            slot.exit_code = exit_code;
            slot.message = message;
            slot.usage = Resources {
                ram_bytes: final_usage.memory_bytes,
                ..Resources::ZERO
            };
        });
    }

    /// Hands the sandboxes of forgotten tasks to the retention, deleting the expired ones.
    fn retire_sandboxes<'a>(&self, keys: impl Iterator<Item = &'a TaskKey>) {
        let expired: Vec<PathBuf> = {
            let mut retention = self.sandboxes.lock().unwrap_or_else(|p| p.into_inner());
            keys.flat_map(|key| retention.retire(Sandbox::of(&self.settings.data_dir, key).dir))
                .collect()
        };
        if !expired.is_empty() {
            // Deleting many files should not hold up a Poll.
            tokio::task::spawn_blocking(move || delete_sandboxes(&expired));
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
        delete_sandboxes(&expired);
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
            let mut slot = Slot::new(Phase::Running, "adopted after a borglet restart".to_owned());
            slot.pid = record.pid;
            slot.started_ms = record.started_ms;
            slot.restarts = record.restarts;
            let stop = slot.stop.clone();
            self.table().insert(key.clone(), slot);
            tracing::info!(task = %key, pid = record.pid, "task adopted");
            let assignment = Arc::new(record.assignment);
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

    /// Reports every task held; forgets tasks that left the desired set once they are over
    /// (a stopped one after reporting it KILLED a last time).
    fn report(&self) -> Report {
        let mut table = self.table();
        let now = Instant::now();
        let mut tasks = Vec::with_capacity(table.len());
        let mut usage = Resources::ZERO;
        let mut forget = BTreeSet::new();
        for (key, slot) in table.iter_mut() {
            if slot.phase == Phase::Running && slot.pid != 0 {
                if let Some(cgroups) = &self.cgroups {
                    sample_usage(slot, cgroups.usage(&key.dir_name()), now);
                }
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
                (_, Phase::Running | Phase::Restarting) => TaskState::Running,
                (true, Phase::Succeeded) => TaskState::Succeeded,
                (true, Phase::Failed) => TaskState::Failed,
            };
            if matches!(slot.phase, Phase::Running | Phase::Stopping) {
                usage += slot.usage;
            }
            tasks.push(slot.report(key, state));
        }
        table.retain(|key, _| !forget.contains(key));
        drop(table);
        self.retire_sandboxes(forget.iter());
        Report { tasks, usage }
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
