//! Configuration of the scheduler process.

use crate::error::SchedulerError;
use crate::schedule::PlacementConfig;
use std::net::SocketAddr;

/// Default of `SchedulerConfig::plan_batch_max`.
pub const PLAN_BATCH_MAX: usize = 1_000;
/// Default of `SchedulerConfig::backlog_retries_per_round_max`: on the loaded Google 2011
/// cell a task that fits nowhere costs 20–100 µs of a round (idle to loaded machine), so
/// 200 retries add at most ~20 ms to the round a new job waits for or joins.
pub const BACKLOG_RETRIES_PER_ROUND_MAX: usize = 200;
/// Default of `SchedulerConfig::backlog_retry_interval_ms`: retrying the 49k-task backlog of
/// the loaded Google 2011 cell costs about a second of CPU.
pub const BACKLOG_RETRY_INTERVAL_MS: u64 = 30_000;
/// Default of `SchedulerConfig::backlog_round_interval_ms`: a retry round of 200 tasks in
/// the loaded Google 2011 cell costs 10–50 ms (measured at load 6–25 on 2 cores), so retries
/// take at most part of a core while new tasks, which never wait for this, take what they
/// need.
pub const BACKLOG_ROUND_INTERVAL_MS: u64 = 100;
/// Default of `SchedulerConfig::replacements_per_round_max`: re-placing a preempted task
/// costs a round 1-12 ms (idle to load 15 on a 2-core machine; most for one that fits
/// nowhere and scans 2,000 machines) on the loaded Google 2011 cell. A new job arrives
/// typically while the victims of the job before it are planned: behind a round of 8 it
/// waits some 10-90 ms, not the 100-280 ms of a round of 64 victims or the 140-500 ms of
/// a large job's 180-200.
pub const REPLACEMENTS_PER_ROUND_MAX: usize = 8;
/// Default of `SchedulerConfig::new_round_tasks_max`: the library plans 0.3 ms per task of a
/// 100-200-task job on the loaded Google 2011 cell (idle 2-core machine), so a round of 32
/// costs ~10 ms and its commit ~5 ms: a job arriving meanwhile waits that long, not the
/// 60-70 ms of a whole 200-task job, and the job's first 32 tasks commit as soon.
pub const NEW_ROUND_TASKS_MAX: usize = 32;
/// Default of `SchedulerConfig::continued_round_tasks_max`: a job waiting alone, or the
/// rest of a burst once every job in it has had a round, goes in rounds this large (20-80
/// ms of planning on the loaded Google 2011 cell, 2-core machine at load 2-10): a 200-task
/// job is planned in one call, not seven, and a job arriving meanwhile waits for one.
pub const CONTINUED_ROUND_TASKS_MAX: usize = 256;
/// Default of `SchedulerConfig::commits_in_flight_max`: while one round's plan is being
/// committed the next is planned (on the machines the first does not touch) and sent.
pub const COMMITS_IN_FLIGHT_MAX: usize = 2;
/// Default of `SchedulerConfig::watch_message_bytes_max`. The first message of the cell
/// stream is a snapshot of the whole cell: 7 MB for the Google 2011 cell (12.5k machines,
/// 144k tasks) before placement, ~16 MB once placed; tonic's default of 4 MiB refuses it.
/// 1 GiB leaves room for a cell at the master's limits (100k machines, 50k jobs).
pub const WATCH_MESSAGE_BYTES_MAX: usize = 1 << 30;

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// `host:port` of every master replica; the leader is found and followed.
    pub masters: Vec<String>,
    /// Names this scheduler in requests and request ids.
    pub scheduler_id: String,
    pub metrics_address: Option<SocketAddr>,
    /// Cluster token sent to the masters (the control-plane role); None sends none.
    pub master_token: Option<String>,
    /// Seed of the placement order; round `n` uses `seed + n`, so runs replay.
    pub seed: u64,
    /// Most placements in one CommitPlan request; larger plans are sent in several.
    pub plan_batch_max: usize,
    pub reconnect_backoff_initial_ms: u64,
    /// Back-off between watch attempts doubles up to this.
    pub reconnect_backoff_max_ms: u64,
    /// A task of a plan is kept out of new plans at most this long, even if the view never
    /// shows the commit.
    pub in_flight_timeout_ms: u64,
    /// Period of housekeeping: expiring in-flight entries and retrying after rejections.
    pub retry_interval_ms: u64,
    /// Most stream updates applied before the next scheduling round (batches bursts).
    pub updates_per_round_max: usize,
    /// Deadline of one CommitPlan call across leader changes and retries.
    pub commit_deadline_ms: u64,
    /// Most backlog tasks (pending tasks that fit nowhere when last tried) retried in one
    /// round once room may have appeared; new pending tasks are not limited by it.
    pub backlog_retries_per_round_max: usize,
    /// The whole backlog is retried at least this often even if no change freed room: a
    /// task left unplaced by relaxed randomization (only some machines examined) may fit
    /// on one it did not examine.
    pub backlog_retry_interval_ms: u64,
    /// Rounds that retry backlog tasks start at most this often (rounds of new tasks do
    /// not wait for it).
    pub backlog_round_interval_ms: u64,
    /// Most tasks placed before (preemption victims, tasks of lost machines or updated
    /// jobs) in one round; the rest go in later rounds. They have rounds of their own while
    /// tasks never placed (new jobs) wait, for at most a second, so a new job waits behind
    /// at most one small round of them.
    pub replacements_per_round_max: usize,
    /// Most new tasks (never placed, or re-placed) planned in a round in which several
    /// jobs wait, one of which arrived since the last round: each job's first two, then the rest in
    /// queue order (priority, then owners in turn); the others are planned in the next
    /// rounds (`continued_round_tasks_max`). A new job's first placements come after a
    /// small round, and every job of a burst has its first ones in the first round. A
    /// burst of many times more (a cold start) goes in a bounded number of larger rounds
    /// (`service::ROUNDS_PER_BURST_MAX`). Retries are bounded by
    /// `backlog_retries_per_round_max` instead.
    pub new_round_tasks_max: usize,
    /// Most new tasks in a round when one job waits, or no job waiting arrived since the
    /// last round (each has had its first tasks planned): a job alone, or the rest of a
    /// burst of jobs.
    pub continued_round_tasks_max: usize,
    /// Most plans being committed at once. A round is planned while earlier ones are being
    /// committed, on the machines they do not touch (`in_flight::Claims`); 1 plans each
    /// round only once the previous one's commit is answered.
    pub commits_in_flight_max: usize,
    /// Largest message of the cell stream accepted (the snapshot is one message).
    pub watch_message_bytes_max: usize,
    pub placement: PlacementConfig,
}

impl SchedulerConfig {
    pub fn new(masters: Vec<String>) -> Self {
        SchedulerConfig {
            masters,
            scheduler_id: "scheduler".into(),
            metrics_address: None,
            master_token: None,
            seed: 0,
            plan_batch_max: PLAN_BATCH_MAX,
            reconnect_backoff_initial_ms: 50,
            reconnect_backoff_max_ms: 2_000,
            in_flight_timeout_ms: 30_000,
            retry_interval_ms: 1_000,
            updates_per_round_max: 1_000,
            commit_deadline_ms: 15_000,
            backlog_retries_per_round_max: BACKLOG_RETRIES_PER_ROUND_MAX,
            backlog_retry_interval_ms: BACKLOG_RETRY_INTERVAL_MS,
            backlog_round_interval_ms: BACKLOG_ROUND_INTERVAL_MS,
            replacements_per_round_max: REPLACEMENTS_PER_ROUND_MAX,
            new_round_tasks_max: NEW_ROUND_TASKS_MAX,
            continued_round_tasks_max: CONTINUED_ROUND_TASKS_MAX,
            commits_in_flight_max: COMMITS_IN_FLIGHT_MAX,
            watch_message_bytes_max: WATCH_MESSAGE_BYTES_MAX,
            placement: PlacementConfig::new(),
        }
    }

    pub fn validate(&self) -> Result<(), SchedulerError> {
        if self.masters.is_empty() {
            return Err(SchedulerError::NoMasters);
        }
        let positive = [
            ("plan_batch_max", self.plan_batch_max as u64),
            ("reconnect_backoff_max_ms", self.reconnect_backoff_max_ms),
            ("retry_interval_ms", self.retry_interval_ms),
            ("updates_per_round_max", self.updates_per_round_max as u64),
            (
                "backlog_retries_per_round_max",
                self.backlog_retries_per_round_max as u64,
            ),
            (
                "replacements_per_round_max",
                self.replacements_per_round_max as u64,
            ),
            ("new_round_tasks_max", self.new_round_tasks_max as u64),
            (
                "continued_round_tasks_max",
                self.continued_round_tasks_max as u64,
            ),
            ("commits_in_flight_max", self.commits_in_flight_max as u64),
            (
                "watch_message_bytes_max",
                self.watch_message_bytes_max as u64,
            ),
            ("placement.tasks_max", self.placement.tasks_max as u64),
            (
                "placement.feasible_candidates_max",
                self.placement.feasible_candidates_max as u64,
            ),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(SchedulerError::InvalidConfig {
                    field,
                    reason: "must be at least 1".into(),
                });
            }
        }
        if !borg_model::is_valid_name(&self.scheduler_id) {
            return Err(SchedulerError::InvalidConfig {
                field: "scheduler_id",
                reason: format!(
                    "{:?} is not a name: use letters, digits, '-', '_' or '.'",
                    self.scheduler_id
                ),
            });
        }
        Ok(())
    }
}
