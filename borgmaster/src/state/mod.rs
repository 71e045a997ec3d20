//! The master's cell state as a pure, deterministic state machine (ARCHITECTURE.md rule 1).
//!
//! `CellState::apply` is the only way state changes: no clock reads, randomness or I/O (time
//! comes in `LogEntry::time_ms`); all collections are ordered (BTreeMap/BTreeSet/VecDeque),
//! so every replica that applies the same log reaches the same state and `state_hash`.
//! Behaviour follows docs/lifecycle.md; each module documents the choices it makes.
//!
//! Bounds: `EVENTS_RETAINED_MAX` events, `REQUEST_IDS_RETAINED_MAX` request ids,
//! `FINISHED_JOBS_RETAINED_MAX` finished (killed or done) jobs, `JOBS_MAX` jobs,
//! `MACHINES_MAX` machines, and per-entry batch limits (`PLAN_PLACEMENTS_MAX`,
//! `PLACEMENT_VICTIMS_MAX`, `REPORT_MACHINES_MAX`, `REPORT_TASKS_PER_MACHINE_MAX`).

mod allocs;
mod command;
mod context;
mod dedup;
mod events;
mod jobs;
mod machines;
mod outcome;
mod plan;
mod ports;
mod quota;
mod records;
mod reports;
mod reservations;
mod task_events;
mod tasks;
mod users;
mod view;

#[cfg(test)]
mod admission_tests;
#[cfg(test)]
mod alloc_tests;
#[cfg(test)]
mod override_tests;
#[cfg(test)]
mod reservation_tests;
#[cfg(test)]
mod tests;

pub use command::{Command, LogEntry, MachineReport, PlannedPlacement, TaskReport};
pub use dedup::REQUEST_IDS_RETAINED_MAX;
pub use events::{TaskEventKind, EVENTS_RETAINED_MAX, TASK_EVENT_MESSAGE_MAX_LEN};
pub use jobs::JOBS_MAX;
pub use machines::MACHINES_MAX;
pub use outcome::{Applied, ChangeSet, Outcome, PlacementOutcome, SnapshotError, StateError};
pub use plan::{PLACEMENT_VICTIMS_MAX, PLAN_PLACEMENTS_MAX};
pub use quota::{job_total, QuotaUsage, Shortfall, QUOTAS_MAX};
pub use reports::{REPORT_MACHINES_MAX, REPORT_TASKS_PER_MACHINE_MAX};
pub use reservations::{
    RESERVATION_DECAY_PERCENT, RESERVATION_DECAY_STEPS_MAX, RESERVATION_DECAY_STEP_S,
    RESERVATION_GRACE_S, RESERVATION_MARGIN_FLOOR_PERCENT, RESERVATION_MARGIN_PERCENT,
};
pub use users::{token_id, Caller, TokenInfo, TOKENS_MAX, TOKEN_ID_LEN};
pub use view::known_versions;

use borg_model::{Band, Resources};
use context::Ctx;
use dedup::RequestWindow;
use events::EventLog;
use records::{JobRecord, MachineRecord};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, VecDeque};
use users::TokenRecord;

/// Finished (killed or done) jobs kept queryable; beyond this the one that finished first
/// is forgotten (and reported removed in the change stream).
pub const FINISHED_JOBS_RETAINED_MAX: usize = 1_000;

/// Format version written at the head of a snapshot; bumped when `CellState`'s layout
/// changes incompatibly.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 7;

/// The whole replicated state of a cell.
///
/// Two counters: the *command index* (`applied_index`) numbers every command applied, and is
/// what the outside sees (modify indices, request-id dedup, `ReadMeta`, watch updates); the
/// *log index* (`applied_log_index`) counts the log entries applied, each of which holds one
/// or more commands (`apply_entry`), and is what checkpoints and log trimming use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CellState {
    applied_index: u64,
    applied_log_index: u64,
    jobs: BTreeMap<String, JobRecord>,
    machines: BTreeMap<String, MachineRecord>,
    events: EventLog,
    requests: RequestWindow,
    /// Finished jobs, the first to finish first: (finished at index, name). An entry whose
    /// job was restarted since (its `finished_index` differs) is skipped when popped.
    finished_jobs: VecDeque<(u64, String)>,
    /// Registered tokens by hex SHA-256 (see `users`).
    tokens: BTreeMap<String, TokenRecord>,
    /// Quotas per (user, band) (see `quota`).
    quotas: BTreeMap<(String, Band), Resources>,
}

impl CellState {
    pub fn new() -> Self {
        CellState::default()
    }

    /// Applies the commands of the log entry decided at `log_index` in order, numbering them
    /// with the next command indices; one `Applied` per command. An entry at or below
    /// `applied_log_index()` was applied already (a caller bug): nothing changes, no results.
    pub fn apply_entry(&mut self, log_index: u64, commands: &[LogEntry]) -> Vec<Applied> {
        if log_index <= self.applied_log_index {
            return Vec::new();
        }
        self.applied_log_index = log_index;
        commands
            .iter()
            .map(|command| self.apply(self.applied_index + 1, command))
            .collect()
    }

    /// Applies one command at command `index` (indices start at 1 and strictly increase;
    /// a command at or below `applied_index()` is a caller bug: `Outcome::Noop`, no change).
    ///
    /// A request id seen before (within `REQUEST_IDS_RETAINED_MAX` commands) is answered
    /// with its first outcome and index (`Applied::committed_index`) and changes nothing. A
    /// rejected command changes nothing but is remembered too, so a retry gets the same answer.
    pub fn apply(&mut self, index: u64, entry: &LogEntry) -> Applied {
        if index <= self.applied_index {
            return Applied {
                outcome: Outcome::Noop,
                changes: ChangeSet::default(),
                committed_index: index,
            };
        }
        self.applied_index = index;
        if let Some((first_index, first)) = self.requests.get(&entry.request_id) {
            return Applied {
                outcome: first.clone(),
                changes: ChangeSet::default(),
                committed_index: *first_index,
            };
        }
        let mut ctx = Ctx::new(index, entry.time_ms);
        let result = self.execute(&mut ctx, &entry.command);
        let outcome = result.unwrap_or_else(Outcome::Rejected);
        self.retire_finished_jobs(&mut ctx);
        for event in std::mem::take(&mut ctx.events) {
            self.events.push(ctx.time_ms, event);
        }
        // Barriers (consistent reads) change nothing: remembering them would only push real
        // mutations out of the window.
        if !matches!(entry.command, Command::Noop) {
            self.requests.remember(&entry.request_id, index, &outcome);
        }
        Applied {
            outcome,
            changes: ctx.changes,
            committed_index: index,
        }
    }

    fn execute(&mut self, ctx: &mut Ctx, command: &Command) -> Result<Outcome, StateError> {
        match command {
            Command::SubmitJob {
                spec,
                check_index,
                must_exist,
            } => self.submit_job(ctx, spec, *check_index, *must_exist),
            Command::KillJob { name } => self.kill_job(ctx, name),
            Command::RegisterMachine { info } => self.register_machine(ctx, info),
            Command::CommitPlan { placements } => self.commit_plan(ctx, placements),
            Command::ApplyReports { reports } => self.apply_reports(ctx, reports),
            Command::Noop => Ok(Outcome::Noop),
            Command::AsUser { caller, command } => {
                self.authorize(caller, command)?;
                if let Command::SubmitJob { spec, .. } = command.as_ref() {
                    spec.validate().map_err(|e| StateError::InvalidJob {
                        reason: e.to_string(),
                    })?;
                    self.admit(spec)?;
                }
                self.execute(ctx, command)
            }
            Command::CreateToken {
                token_sha256,
                user,
                admin,
            } => self.create_token(ctx, token_sha256, user, *admin),
            Command::SetQuota { user, band, limit } => self.set_quota(ctx, user, *band, *limit),
            Command::RevokeTokens { target } => self.revoke_tokens(ctx, target),
            Command::RecordTaskEvent {
                task,
                incarnation,
                kind,
                message,
            } => self.record_task_event(ctx, task, *incarnation, *kind, message),
        }
    }

    /// Command index of the last command applied.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Log index of the last log entry applied (`apply_entry`).
    pub fn applied_log_index(&self) -> u64 {
        self.applied_log_index
    }

    /// SHA-256 over a canonical serialization (bincode of ordered collections): equal on
    /// replicas that applied the same log.
    pub fn state_hash(&self) -> [u8; 32] {
        Sha256::digest(self.encode()).into()
    }

    /// Checkpoint support: `SNAPSHOT_FORMAT_VERSION` (u32, little endian), then bincode of
    /// the whole state.
    pub fn to_snapshot_bytes(&self) -> Vec<u8> {
        let body = self.encode();
        let mut bytes = Vec::with_capacity(4 + body.len());
        bytes.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&body);
        bytes
    }

    pub fn from_snapshot_bytes(bytes: &[u8]) -> Result<CellState, SnapshotError> {
        if bytes.is_empty() {
            return Err(SnapshotError::Empty);
        }
        let (head, body) = bytes.split_at_checked(4).ok_or(SnapshotError::Corrupt {
            reason: format!("{} bytes is shorter than the 4-byte header", bytes.len()),
        })?;
        let mut version = [0u8; 4];
        version.copy_from_slice(head);
        let found = u32::from_le_bytes(version);
        if found != SNAPSHOT_FORMAT_VERSION {
            return Err(SnapshotError::UnknownVersion {
                found,
                expected: SNAPSHOT_FORMAT_VERSION,
            });
        }
        bincode::deserialize(body).map_err(|e| SnapshotError::Corrupt {
            reason: e.to_string(),
        })
    }

    /// bincode of the state. It cannot fail: every field is a plain serde type with known
    /// lengths and no custom serializer, which are bincode's only failure causes.
    fn encode(&self) -> Vec<u8> {
        bincode::serialize(self).unwrap_or_default()
    }

    /// Queues jobs that finished during this entry and forgets the oldest finished jobs
    /// beyond `FINISHED_JOBS_RETAINED_MAX`.
    fn retire_finished_jobs(&mut self, ctx: &mut Ctx) {
        for name in std::mem::take(&mut ctx.maybe_finished) {
            let Some(job) = self.jobs.get_mut(&name) else {
                continue;
            };
            if job.finished_index.is_some() || !job.is_finished() {
                continue;
            }
            job.finished_index = Some(ctx.index);
            if job.is_done() {
                ctx.event(events::NewEvent::job(
                    "job_done",
                    &name,
                    "every task finished".into(),
                ));
            }
            self.finished_jobs.push_back((ctx.index, name));
        }
        while self.finished_jobs.len() > FINISHED_JOBS_RETAINED_MAX {
            let Some((index, name)) = self.finished_jobs.pop_front() else {
                break;
            };
            let still_finished = self
                .jobs
                .get(&name)
                .is_some_and(|j| j.finished_index == Some(index));
            if still_finished {
                self.jobs.remove(&name);
                ctx.touch_job(&name);
            }
        }
    }
}

/// Shard of a machine: fnv1a64(name) % shard_count (shard_count 0 is treated as 1).
pub fn shard_of(machine: &str, shard_count: u32) -> u32 {
    const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = machine.bytes().fold(FNV_OFFSET_BASIS, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    });
    // The remainder is below shard_count, a u32.
    (hash % u64::from(shard_count.max(1))) as u32
}
