//! The replica's Prometheus metrics, on its own registry.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct ReplicaMetrics {
    pub registry: Registry,
    /// Entries appended by this replica as leader.
    pub proposals: IntCounter,
    /// Proposals refused before reaching the log (not leader, queue full), by reason.
    pub proposals_refused: IntCounterVec,
    /// Waiters that gave up before their entry was decided.
    pub proposal_timeouts: IntCounter,
    /// Entries decided and applied to the cell state.
    pub commits: IntCounter,
    /// Time from proposal to reply on the proposing leader.
    pub commit_latency_seconds: Histogram,
    /// Time to apply one entry to the cell state.
    pub apply_latency_seconds: Histogram,
    pub leader_changes: IntCounter,
    pub is_leader: IntGauge,
    /// Outgoing Paxos messages dropped because a peer's queue was full, or its call failed.
    pub outgoing_dropped: IntCounter,
    /// Incoming Paxos messages dropped because the loop's queue was full.
    pub incoming_dropped: IntCounter,
    pub decided_index: IntGauge,
    pub applied_index: IntGauge,
    pub checkpoint_index: IntGauge,
    /// Log entries below this index are trimmed (kept only in checkpoints).
    pub compacted_index: IntGauge,
    /// Checkpoints written, and failed attempts.
    pub checkpoints: IntCounter,
    pub checkpoint_failures: IntCounter,
    /// Writes passed from this follower to the leader.
    pub forwarded_writes: IntCounter,
    /// Watchers cut off because they fell behind.
    pub watchers_lagged: IntCounter,
    /// Time of one fsync of the log (off the Paxos loop), from its start to the loop seeing it.
    pub log_sync_seconds: Histogram,
    /// Paxos messages waiting for an fsync to cover what they claim.
    pub held_messages: IntGauge,
    /// Passes of the Paxos loop longer than a quarter of the election timeout, by their
    /// slowest step (`tick_gap`: ticks late, whatever held the loop).
    pub slow_loop_passes: IntCounterVec,
}

impl ReplicaMetrics {
    pub fn new(replica_id: u64) -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(
            Some("borg_master".into()),
            Some([("replica".to_owned(), replica_id.to_string())].into()),
        )?;
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let histogram = |name: &str, help: &str| -> Result<Histogram, prometheus::Error> {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(vec![
                0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]))?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        let proposals_refused = IntCounterVec::new(
            Opts::new(
                "proposals_refused_total",
                "Writes refused before reaching the log, by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(proposals_refused.clone()))?;
        let slow_loop_passes = IntCounterVec::new(
            Opts::new(
                "slow_loop_passes_total",
                "Paxos loop passes longer than a quarter of the election timeout, by slowest step",
            ),
            &["step"],
        )?;
        registry.register(Box::new(slow_loop_passes.clone()))?;
        Ok(ReplicaMetrics {
            proposals: counter(
                "proposals_total",
                "Commands (writes) appended to the log as leader",
            )?,
            proposals_refused,
            proposal_timeouts: counter(
                "proposal_timeouts_total",
                "Writes that timed out waiting for their entry to be decided",
            )?,
            commits: counter(
                "commits_total",
                "Commands decided and applied (a log entry holds one or more)",
            )?,
            commit_latency_seconds: histogram(
                "commit_latency_seconds",
                "Time from proposal to the applied outcome on the leader",
            )?,
            apply_latency_seconds: histogram(
                "apply_latency_seconds",
                "Time to apply one log entry (all its commands) to the cell state",
            )?,
            leader_changes: counter("leader_changes_total", "Changes of the known leader")?,
            is_leader: gauge("is_leader", "1 while this replica leads")?,
            outgoing_dropped: counter(
                "outgoing_messages_dropped_total",
                "Paxos messages to peers dropped (queue full or delivery failed)",
            )?,
            incoming_dropped: counter(
                "incoming_messages_dropped_total",
                "Paxos messages from peers dropped (queue full)",
            )?,
            decided_index: gauge("decided_index", "Highest decided log index")?,
            applied_index: gauge(
                "applied_index",
                "Command index of the last command applied to the cell state",
            )?,
            checkpoint_index: gauge("checkpoint_index", "Log index of the latest checkpoint")?,
            compacted_index: gauge(
                "compacted_index",
                "Log entries below this index are trimmed (kept in checkpoints)",
            )?,
            checkpoints: counter("checkpoints_total", "Checkpoints written")?,
            checkpoint_failures: counter(
                "checkpoint_failures_total",
                "Checkpoints that could not be written",
            )?,
            forwarded_writes: counter(
                "forwarded_writes_total",
                "Writes this replica passed to the leader as a follower",
            )?,
            watchers_lagged: counter(
                "watchers_lagged_total",
                "Cell watchers disconnected because they fell behind",
            )?,
            log_sync_seconds: histogram(
                "log_sync_seconds",
                "Time of one fsync of the log, from its start to the Paxos loop seeing it done",
            )?,
            held_messages: gauge(
                "held_messages",
                "Paxos messages waiting for an fsync that covers what they claim",
            )?,
            slow_loop_passes,
            registry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_replica_has_its_own_registry() {
        let one = ReplicaMetrics::new(1).unwrap();
        let two = ReplicaMetrics::new(2).unwrap();
        one.commits.inc();
        let names: Vec<String> = one
            .registry
            .gather()
            .iter()
            .map(|family| family.name().to_owned())
            .collect();
        assert!(
            names.contains(&"borg_master_commits_total".to_owned()),
            "{names:?}"
        );
        assert!(names.contains(&"borg_master_outgoing_messages_dropped_total".to_owned()));
        assert_eq!(two.commits.get(), 0);
    }
}
