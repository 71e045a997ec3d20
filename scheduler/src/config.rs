//! Configuration of the scheduler process.

use crate::error::SchedulerError;
use crate::schedule::PlacementConfig;
use std::net::SocketAddr;

/// Default of `SchedulerConfig::plan_batch_max`.
pub const PLAN_BATCH_MAX: usize = 1_000;

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
