//! What a log entry asks the state machine to do. These are serialized into the replicated
//! log, so fields are only ever added (at the end), never renamed or reordered.

use super::events::TaskEventKind;
use super::users::Caller;
use borg_model::{Band, JobSpec, MachineInfo, Resources, TaskId, TaskState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One command of the replicated log, with its request id and time (a log entry holds one
/// or more of these: `entry::SharedEntry`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Idempotency key ("" = no dedup, e.g. `Noop`).
    pub request_id: String,
    /// Set by the proposing leader; the only clock `apply` sees.
    pub time_ms: u64,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Create or update a job. `check_index`: the job's `modify_index` must equal it
    /// (0: the job must not exist). `must_exist`: refuse to create (UpdateJob).
    SubmitJob {
        spec: JobSpec,
        check_index: Option<u64>,
        must_exist: bool,
    },
    KillJob {
        name: String,
    },
    RegisterMachine {
        info: MachineInfo,
    },
    CommitPlan {
        placements: Vec<PlannedPlacement>,
    },
    ApplyReports {
        reports: Vec<MachineReport>,
    },
    /// A leader's barrier (consistent reads) or first entry; changes nothing.
    Noop,
    /// `command` on behalf of a user the RPC edge authenticated: authorized against the
    /// state it is applied to, and a submit is admitted against the owner's quota. Commands
    /// that are not wrapped come from the control plane (or tests) and are trusted.
    AsUser {
        caller: Caller,
        command: Box<Command>,
    },
    /// Registers a token by its hex SHA-256 (the token itself never enters the log).
    CreateToken {
        token_sha256: String,
        user: String,
        admin: bool,
    },
    /// Sets `user`'s quota in `band`; all zero removes it.
    SetQuota {
        user: String,
        band: Band,
        limit: Resources,
    },
    /// Forgets the token whose id (`users::token_id`) is `target`, or else every token of
    /// the user called `target`.
    RevokeTokens {
        target: String,
    },
    /// Records an event on a task that the master witnessed itself (a `borg ssh` session
    /// through its task access service). Control plane only: never a user's command.
    RecordTaskEvent {
        task: TaskId,
        incarnation: u64,
        kind: TaskEventKind,
        message: String,
    },
}

/// One placement of a scheduler's plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedPlacement {
    pub task: TaskId,
    /// Incarnation the scheduler saw while the task was pending.
    pub incarnation: u64,
    pub machine: String,
    /// Informational; fit is what is checked.
    pub machine_version: u64,
    /// Victims on `machine`: (id, incarnation).
    pub preempt: Vec<(TaskId, u64)>,
}

/// What a link shard forwards about one machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineReport {
    pub machine: String,
    pub unreachable: bool,
    pub tasks: Vec<TaskReport>,
    pub usage: Resources,
}

/// A borglet's report about one task incarnation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    pub task: TaskId,
    pub incarnation: u64,
    pub state: TaskState,
    pub exit_code: Option<i32>,
    pub restarts: u32,
    pub pid: u32,
    pub usage: Resources,
    pub message: String,
    /// The incarnation's named ports, as the borglet allocated them.
    pub ports: BTreeMap<String, u16>,
}
