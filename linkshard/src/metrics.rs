//! The link shard's metrics, registered on its own registry (several shards may share a
//! process under `borg dev`).

use crate::error::LinkShardError;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Buckets of poll latency and round duration, in seconds.
const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Labels of `borg_linkshard_polls_total{outcome}`.
pub const POLL_OUTCOME_OK: &str = "ok";
pub const POLL_OUTCOME_TIMEOUT: &str = "timeout";
pub const POLL_OUTCOME_ERROR: &str = "error";
pub const POLL_OUTCOME_WRONG_MACHINE: &str = "wrong_machine";

#[derive(Clone)]
pub struct Metrics {
    pub polls: IntCounterVec,
    pub poll_latency_seconds: Histogram,
    pub diffs_forwarded: IntCounter,
    pub tasks_changed: IntCounter,
    pub incremental_reports: IntCounter,
    pub machines_unreachable_forwarded: IntCounter,
    pub machines_in_shard: IntGauge,
    pub round_duration_seconds: Histogram,
    pub master_errors: IntCounterVec,
}

impl Metrics {
    pub fn register(registry: &Registry) -> Result<Metrics, LinkShardError> {
        let metrics = Metrics {
            polls: IntCounterVec::new(
                Opts::new("borg_linkshard_polls_total", "Borglet polls by outcome"),
                &["outcome"],
            )
            .map_err(metric_error("borg_linkshard_polls_total"))?,
            poll_latency_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "borg_linkshard_poll_latency_seconds",
                    "Time from sending a poll to its answer (or failure)",
                )
                .buckets(LATENCY_BUCKETS_SECONDS.to_vec()),
            )
            .map_err(metric_error("borg_linkshard_poll_latency_seconds"))?,
            diffs_forwarded: IntCounter::new(
                "borg_linkshard_diffs_forwarded_total",
                "Machine diffs the master accepted",
            )
            .map_err(metric_error("borg_linkshard_diffs_forwarded_total"))?,
            tasks_changed: IntCounter::new(
                "borg_linkshard_tasks_changed_total",
                "Task reports forwarded because they were new or changed",
            )
            .map_err(metric_error("borg_linkshard_tasks_changed_total"))?,
            incremental_reports: IntCounter::new(
                "borg_linkshard_incremental_reports_total",
                "Borglet reports that held only the changes since the last forwarded one",
            )
            .map_err(metric_error("borg_linkshard_incremental_reports_total"))?,
            machines_unreachable_forwarded: IntCounter::new(
                "borg_linkshard_machines_unreachable_forwarded_total",
                "Times a machine was forwarded as unreachable",
            )
            .map_err(metric_error(
                "borg_linkshard_machines_unreachable_forwarded_total",
            ))?,
            machines_in_shard: IntGauge::new(
                "borg_linkshard_machines",
                "Machines assigned to this shard in the last round",
            )
            .map_err(metric_error("borg_linkshard_machines"))?,
            round_duration_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "borg_linkshard_round_duration_seconds",
                    "Duration of one round: assignment, polls and forwards",
                )
                .buckets(LATENCY_BUCKETS_SECONDS.to_vec()),
            )
            .map_err(metric_error("borg_linkshard_round_duration_seconds"))?,
            master_errors: IntCounterVec::new(
                Opts::new(
                    "borg_linkshard_master_errors_total",
                    "Failed calls to the master by RPC",
                ),
                &["rpc"],
            )
            .map_err(metric_error("borg_linkshard_master_errors_total"))?,
        };
        let collectors: [(&'static str, Box<dyn prometheus::core::Collector>); 9] = [
            (
                "borg_linkshard_polls_total",
                Box::new(metrics.polls.clone()),
            ),
            (
                "borg_linkshard_poll_latency_seconds",
                Box::new(metrics.poll_latency_seconds.clone()),
            ),
            (
                "borg_linkshard_diffs_forwarded_total",
                Box::new(metrics.diffs_forwarded.clone()),
            ),
            (
                "borg_linkshard_tasks_changed_total",
                Box::new(metrics.tasks_changed.clone()),
            ),
            (
                "borg_linkshard_incremental_reports_total",
                Box::new(metrics.incremental_reports.clone()),
            ),
            (
                "borg_linkshard_machines_unreachable_forwarded_total",
                Box::new(metrics.machines_unreachable_forwarded.clone()),
            ),
            (
                "borg_linkshard_machines",
                Box::new(metrics.machines_in_shard.clone()),
            ),
            (
                "borg_linkshard_round_duration_seconds",
                Box::new(metrics.round_duration_seconds.clone()),
            ),
            (
                "borg_linkshard_master_errors_total",
                Box::new(metrics.master_errors.clone()),
            ),
        ];
        for (metric, collector) in collectors {
            registry.register(collector).map_err(metric_error(metric))?;
        }
        Ok(metrics)
    }
}

fn metric_error(metric: &'static str) -> impl Fn(prometheus::Error) -> LinkShardError {
    move |source| LinkShardError::Metric { metric, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_shards_register_on_their_own_registries() {
        let (a, b) = (Registry::new(), Registry::new());
        let ma = Metrics::register(&a).unwrap();
        Metrics::register(&b).unwrap();
        ma.polls.with_label_values(&[POLL_OUTCOME_OK]).inc();
        let names: Vec<String> = a.gather().iter().map(|f| f.name().to_owned()).collect();
        assert!(
            names.contains(&"borg_linkshard_polls_total".to_owned()),
            "{names:?}"
        );
        // Registering twice on one registry is refused with the metric's name.
        assert!(matches!(
            Metrics::register(&a),
            Err(LinkShardError::Metric { .. })
        ));
    }
}
