//! The records the state machine keeps: jobs with their tasks, and machines.

use super::reservations::Reservation;
use borg_model::{JobSpec, MachineInfo, MachineState, Resources, TaskId, TaskState};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A job's lifecycle as stored. `Done` is not stored: it is derived (see `JobRecord::is_done`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum JobStatus {
    Active,
    /// Killed by a user. The record stays queryable with every task `Killed` (or the
    /// terminal state it reached before) until it is garbage-collected.
    Killed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct JobRecord {
    pub spec: JobSpec,
    pub status: JobStatus,
    pub create_index: u64,
    pub modify_index: u64,
    /// Master time of the last submit that changed the job.
    pub submitted_ms: u64,
    /// Every task the job ever had, by index. Tasks above `spec.replicas` (after a shrink)
    /// stay as `Killed` so that their incarnations keep increasing if the job grows again.
    pub tasks: BTreeMap<u32, TaskRecord>,
    /// Log index at which the job became finished (killed or done), while it is finished:
    /// the key of its place in the garbage-collection queue.
    pub finished_index: Option<u64>,
}

impl JobRecord {
    /// Tasks that are part of the job's desired replicas (indices below `replicas`).
    pub fn live_tasks(&self) -> impl Iterator<Item = (&u32, &TaskRecord)> {
        self.tasks.range(..self.spec.replicas)
    }

    /// Active, with at least one task, and every task terminal on its own.
    pub fn is_done(&self) -> bool {
        self.status == JobStatus::Active
            && self.spec.replicas > 0
            && self.live_tasks().all(|(_, t)| t.state.is_terminal())
    }

    pub fn is_finished(&self) -> bool {
        self.status == JobStatus::Killed || self.is_done()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TaskRecord {
    pub state: TaskState,
    /// Machine it is placed on while `Scheduled`/`Running`; the last machine once terminal;
    /// empty while `Pending`.
    pub machine: String,
    pub incarnation: u64,
    pub restarts: u32,
    pub exit_code: Option<i32>,
    pub state_since_ms: u64,
    pub message: String,
    pub pid: u32,
    /// Last usage the borglet reported for this incarnation.
    pub usage: Resources,
    /// What the task is expected to use while placed (see `reservations`).
    pub reservation: Reservation,
    /// Named ports of this incarnation, from the borglet's reports.
    pub ports: BTreeMap<String, u16>,
}

impl TaskRecord {
    pub fn pending(incarnation: u64, time_ms: u64, message: impl Into<String>) -> Self {
        TaskRecord {
            state: TaskState::Pending,
            machine: String::new(),
            incarnation,
            restarts: 0,
            exit_code: None,
            state_since_ms: time_ms,
            message: message.into(),
            pid: 0,
            usage: Resources::ZERO,
            reservation: Reservation::default(),
            ports: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct MachineRecord {
    pub info: MachineInfo,
    pub state: MachineState,
    /// Bumped whenever the machine or the set of tasks placed on it changes.
    pub version: u64,
    pub last_report_ms: u64,
    /// Last machine usage a link shard forwarded.
    pub usage: Resources,
    /// Tasks in `Scheduled`/`Running` whose `machine` is this one (kept in step by
    /// `CellState::set_task_state`, the only place task states change).
    pub placed: BTreeSet<TaskId>,
}
