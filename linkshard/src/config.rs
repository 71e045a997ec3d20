//! Configuration of one link shard.

use crate::error::LinkShardError;
use std::net::SocketAddr;

/// Default of `LinkShardConfig::poll_interval_busy_ms`.
pub const POLL_INTERVAL_BUSY_DEFAULT_MS: u64 = 20;

/// Default of `LinkShardConfig::busy_rounds_after_work`: 5 rounds, 100 ms at the default
/// busy interval.
pub const BUSY_ROUNDS_AFTER_WORK_DEFAULT: u32 = 5;

/// Configuration of one link shard (plain data; the `borg` binary maps flags onto it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkShardConfig {
    /// `host:port` of every master replica (any replica serves the assignment).
    pub masters: Vec<String>,
    /// This shard owns machines whose name hashes to `shard_index` modulo `shard_count`.
    pub shard_index: u32,
    pub shard_count: u32,
    /// Time between the starts of two polling rounds.
    pub poll_interval_ms: u64,
    /// Time between the starts of two rounds when the first found work (task states that
    /// changed, or tasks still starting): while tasks start and end, their states reach the
    /// master sooner.
    pub poll_interval_busy_ms: u64,
    /// Rounds that keep the busy pace after the last round that found work: a task that just
    /// started is often about to end, and its end then reaches the master a busy interval
    /// later rather than a whole `poll_interval_ms`.
    pub busy_rounds_after_work: u32,
    /// Deadline of one `BorgletService.Poll` (and of connecting to the borglet).
    pub poll_timeout_ms: u64,
    /// Failed polls in a row after which a machine is forwarded as unreachable.
    pub unreachable_polls_max: u32,
    /// Most polls in flight at once.
    pub poll_concurrency_max: usize,
    /// Most machine diffs in one `LinkService.ForwardDiffs`; more are sent in several calls.
    pub forward_batch_machines_max: usize,
    /// Where to serve `/metrics`; `None` serves nothing.
    pub metrics_address: Option<SocketAddr>,
    /// Cluster token sent to the masters (the control-plane role) and to the borglets (which
    /// obey only it); None sends none.
    pub master_token: Option<String>,
    /// Names this shard in forwarded diffs and logs.
    pub shard_id: String,
    /// Between idle rounds, ask the master to answer as soon as the shard's assignment
    /// changes (`GetAssignmentRequest.wait_ms`) and start the next round then: new tasks reach
    /// their borglets at once rather than up to `poll_interval_ms` later.
    pub wait_for_assignment_changes: bool,
    /// Tell the master and the borglets what the shard already holds, so that they exchange
    /// only differences (`GetAssignmentRequest.known`, keyed polls). False: whole sets every
    /// round, as older shards did (for comparisons).
    pub send_held_sets: bool,
}

impl LinkShardConfig {
    /// Defaults: a poll a second, 2 s per poll, unreachable after 5 failed polls.
    pub fn new(masters: Vec<String>, shard_index: u32, shard_count: u32) -> Self {
        LinkShardConfig {
            masters,
            shard_index,
            shard_count,
            poll_interval_ms: 1_000,
            poll_interval_busy_ms: POLL_INTERVAL_BUSY_DEFAULT_MS,
            busy_rounds_after_work: BUSY_ROUNDS_AFTER_WORK_DEFAULT,
            poll_timeout_ms: 2_000,
            unreachable_polls_max: 5,
            poll_concurrency_max: 64,
            forward_batch_machines_max: 500,
            metrics_address: None,
            master_token: None,
            shard_id: format!("linkshard-{shard_index}-of-{shard_count}"),
            send_held_sets: true,
            wait_for_assignment_changes: true,
        }
    }

    /// Refuses settings the loop cannot run with, naming the field and what to pass instead.
    pub fn validate(&self) -> Result<(), LinkShardError> {
        let invalid = |field: &'static str, reason: String| {
            Err(LinkShardError::InvalidConfig { field, reason })
        };
        if self.masters.is_empty() {
            return invalid(
                "masters",
                "give at least one master replica HOST:PORT".into(),
            );
        }
        if self.shard_count == 0 {
            return invalid("shard_count", "must be at least 1".into());
        }
        if self.shard_index >= self.shard_count {
            return invalid(
                "shard_index",
                format!(
                    "is {} but must be below shard_count {}",
                    self.shard_index, self.shard_count
                ),
            );
        }
        if self.poll_interval_ms == 0 {
            return invalid("poll_interval_ms", "must be at least 1".into());
        }
        if self.poll_interval_busy_ms == 0 {
            return invalid("poll_interval_busy_ms", "must be at least 1".into());
        }
        if self.poll_timeout_ms == 0 {
            return invalid("poll_timeout_ms", "must be at least 1".into());
        }
        if self.unreachable_polls_max == 0 {
            return invalid("unreachable_polls_max", "must be at least 1".into());
        }
        if self.poll_concurrency_max == 0 {
            return invalid("poll_concurrency_max", "must be at least 1".into());
        }
        if self.forward_batch_machines_max == 0 {
            return invalid("forward_batch_machines_max", "must be at least 1".into());
        }
        if self.shard_id.trim().is_empty() {
            return invalid("shard_id", "must not be empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_fields_are_named() {
        let config = LinkShardConfig::new(vec!["127.0.0.1:7100".into()], 1, 4);
        assert!(config.validate().is_ok());
        assert_eq!(config.poll_interval_ms, 1_000);
        assert_eq!(config.shard_id, "linkshard-1-of-4");

        let mut bad = config.clone();
        bad.shard_index = 4;
        assert!(matches!(
            bad.validate(),
            Err(LinkShardError::InvalidConfig {
                field: "shard_index",
                ..
            })
        ));
        let mut bad = config.clone();
        bad.masters.clear();
        assert!(matches!(
            bad.validate(),
            Err(LinkShardError::InvalidConfig {
                field: "masters",
                ..
            })
        ));
        let mut bad = config;
        bad.poll_concurrency_max = 0;
        assert!(matches!(
            bad.validate(),
            Err(LinkShardError::InvalidConfig {
                field: "poll_concurrency_max",
                ..
            })
        ));
    }
}
