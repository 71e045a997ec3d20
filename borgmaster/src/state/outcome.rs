//! What applying an entry produced: the outcome returned to the proposer, the errors a user
//! sees, and the set of jobs/machines touched (for the scheduler's change stream).

use super::quota::{format_shortfalls, Shortfall};
use super::users::TokenInfo;
use borg_model::{Band, TaskId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What applying one entry produced, returned to the proposer's waiting RPC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    JobSubmitted { name: String, created: bool },
    JobKilled { name: String },
    MachineRegistered { name: String },
    PlanApplied { results: Vec<PlacementOutcome> },
    ReportsApplied,
    Noop,
    Rejected(StateError),
    TokenCreated { user: String },
    QuotaSet { user: String, band: Band },
    TokensRevoked { tokens: Vec<TokenInfo> },
    TaskEventRecorded,
}

/// The fate of one placement of a plan; `reason` says why it was rejected ("" if accepted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacementOutcome {
    pub task: TaskId,
    pub accepted: bool,
    pub reason: String,
}

/// Why an entry was refused. A refused entry changes nothing but the request-id window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StateError {
    #[error("job {name:?} does not exist")]
    JobNotFound { name: String },
    #[error("job {name:?} already exists (check index 0 requires that it does not)")]
    JobAlreadyExists { name: String },
    #[error("job {name:?} has modify index {actual}, not {expected}: it changed since you read it; fetch it again and retry")]
    CheckIndexMismatch {
        name: String,
        expected: u64,
        actual: u64,
    },
    #[error("invalid job: {reason}")]
    InvalidJob { reason: String },
    #[error("invalid machine: {reason}")]
    InvalidMachine { reason: String },
    #[error("the cell already holds {count} {what}, the most it may hold")]
    CellFull { what: String, count: usize },
    #[error("{what} has {count} items; the most accepted in one entry is {max}")]
    BatchTooLarge {
        what: String,
        count: usize,
        max: usize,
    },
    #[error("user {user} may not do this: {reason}")]
    PermissionDenied { user: String, reason: String },
    #[error("job {job:?} has priority {priority}, in the {band} band, where {user} has no quota: use a priority below 100 (the free band needs none) or ask an admin: borg quota set {user} {band} cpu=.. ram=..")]
    NoQuota {
        user: String,
        band: String,
        job: String,
        priority: u32,
    },
    #[error("job {job:?} does not fit what remains of {user}'s quota in the {band} band: {}; lower its replicas or resources, kill another of your jobs in the band, or ask an admin to raise the quota (borg quota get {user})", format_shortfalls(.shortfalls))]
    QuotaExceeded {
        user: String,
        band: String,
        job: String,
        shortfalls: Vec<Shortfall>,
    },
    #[error("invalid request: {reason}")]
    InvalidRequest { reason: String },
    #[error(
        "no token has id {target:?} and no user {target:?} holds a token: see `borg token list`"
    )]
    TokenNotFound { target: String },
    #[error("token id {target:?} is ambiguous: {count} tokens have it; revoke by user or use a longer id")]
    TokenIdAmbiguous { target: String, count: usize },
}

/// A checkpoint that cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot is empty")]
    Empty,
    #[error("snapshot has format version {found}; this build reads version {expected}")]
    UnknownVersion { found: u32, expected: u32 },
    #[error("snapshot is corrupt: {reason}")]
    Corrupt { reason: String },
}

/// Which jobs/machines an entry touched, for the scheduler's change stream.
///
/// `jobs` holds every touched job. A job also in `tasks` was touched only through those
/// tasks (its spec and status did not change): the stream sends just them. A job in `jobs`
/// alone is sent whole.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeSet {
    pub jobs: BTreeSet<String>,
    pub machines: BTreeSet<String>,
    /// Per job touched only through its tasks, the indices of the tasks that changed.
    pub tasks: BTreeMap<String, BTreeSet<u32>>,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty() && self.machines.is_empty()
    }

    /// Adds everything `other` touched (a job whole in either is whole).
    pub fn merge(&mut self, other: &ChangeSet) {
        for name in &other.jobs {
            match other.tasks.get(name) {
                Some(indices) => {
                    for index in indices {
                        self.touch_task(name, *index);
                    }
                }
                None => self.touch_job(name),
            }
        }
        self.machines.extend(other.machines.iter().cloned());
    }

    /// The whole job changed (created, spec or status changed, removed).
    pub fn touch_job(&mut self, name: &str) {
        if !self.jobs.contains(name) {
            self.jobs.insert(name.to_string());
        }
        self.tasks.remove(name);
    }

    /// Task `index` of job `name` changed; nothing else of the job did.
    pub fn touch_task(&mut self, name: &str, index: u32) {
        if let Some(indices) = self.tasks.get_mut(name) {
            indices.insert(index);
        } else if !self.jobs.contains(name) {
            self.jobs.insert(name.to_string());
            self.tasks.insert(name.to_string(), BTreeSet::from([index]));
        }
        // Else the job is whole already.
    }

    /// Whether the job is to be sent whole (touched, not only through tasks).
    pub fn is_whole(&self, name: &str) -> bool {
        self.jobs.contains(name) && !self.tasks.contains_key(name)
    }
}

/// The result of `CellState::apply`.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub outcome: Outcome,
    pub changes: ChangeSet,
    /// Index the request was first applied at: the entry's own index, or for a retried
    /// request id the index of its first application.
    pub committed_index: u64,
}
