//! The scheduler's Prometheus metrics, on a registry of its own (several daemons share a
//! process under `borg dev`).

use crate::error::SchedulerError;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

#[derive(Clone)]
pub struct SchedulerMetrics {
    pub registry: Registry,
    pub placements_accepted: IntCounter,
    pub placements_rejected: IntCounter,
    /// Time from sending a plan to the master's answer (all batches of it).
    pub plan_commit_seconds: Histogram,
    /// Time spent in the pure `schedule` call.
    pub schedule_seconds: Histogram,
    pub pending_tasks: IntGauge,
    /// Pending tasks the last round could not place anywhere.
    pub unplaced_tasks: IntGauge,
    pub in_flight_tasks: IntGauge,
    pub view_index: IntGauge,
    pub watch_restarts: IntCounter,
    /// Malformed machines/jobs in the stream that were skipped.
    pub view_items_skipped: IntCounter,
    pub commit_failures: IntCounter,
    /// Time applying one update of the cell stream to the view.
    pub update_apply_seconds: Histogram,
    /// Time from the arrival of the first update a round plans from to the round's start,
    /// for rounds with new tasks: what a new job waits for (rounds, commits in flight).
    pub round_wait_seconds: Histogram,
    /// Time gathering a round's tasks from the view and the backlog.
    pub collect_seconds: Histogram,
    pub backlog_retry_rounds: IntCounter,
}

fn counter(
    registry: &Registry,
    name: &'static str,
    help: &str,
) -> Result<IntCounter, SchedulerError> {
    let metric =
        IntCounter::new(name, help).map_err(|source| SchedulerError::Metric { name, source })?;
    registry
        .register(Box::new(metric.clone()))
        .map_err(|source| SchedulerError::Metric { name, source })?;
    Ok(metric)
}

fn gauge(registry: &Registry, name: &'static str, help: &str) -> Result<IntGauge, SchedulerError> {
    let metric =
        IntGauge::new(name, help).map_err(|source| SchedulerError::Metric { name, source })?;
    registry
        .register(Box::new(metric.clone()))
        .map_err(|source| SchedulerError::Metric { name, source })?;
    Ok(metric)
}

fn histogram(
    registry: &Registry,
    name: &'static str,
    help: &str,
    buckets: Vec<f64>,
) -> Result<Histogram, SchedulerError> {
    let metric = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .map_err(|source| SchedulerError::Metric { name, source })?;
    registry
        .register(Box::new(metric.clone()))
        .map_err(|source| SchedulerError::Metric { name, source })?;
    Ok(metric)
}

impl SchedulerMetrics {
    pub fn new() -> Result<Self, SchedulerError> {
        let registry = Registry::new();
        let latency_buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        Ok(SchedulerMetrics {
            placements_accepted: counter(
                &registry,
                "borg_scheduler_placements_accepted_total",
                "Placements the master committed",
            )?,
            placements_rejected: counter(
                &registry,
                "borg_scheduler_placements_rejected_total",
                "Placements the master rejected (stale view, no longer fits)",
            )?,
            plan_commit_seconds: histogram(
                &registry,
                "borg_scheduler_plan_commit_seconds",
                "Time from sending a plan to the master's answer",
                latency_buckets.clone(),
            )?,
            schedule_seconds: histogram(
                &registry,
                "borg_scheduler_schedule_seconds",
                "Time spent computing one plan",
                latency_buckets.clone(),
            )?,
            update_apply_seconds: histogram(
                &registry,
                "borg_scheduler_update_apply_seconds",
                "Time applying one update of the cell stream to the view",
                latency_buckets.clone(),
            )?,
            round_wait_seconds: histogram(
                &registry,
                "borg_scheduler_round_wait_seconds",
                "Time from the first update a round with new tasks plans from to the round's start",
                latency_buckets.clone(),
            )?,
            collect_seconds: histogram(
                &registry,
                "borg_scheduler_collect_seconds",
                "Time gathering a round's tasks from the view and the backlog",
                latency_buckets,
            )?,
            backlog_retry_rounds: counter(
                &registry,
                "borg_scheduler_backlog_retry_rounds_total",
                "Rounds that retried backlog tasks",
            )?,
            pending_tasks: gauge(
                &registry,
                "borg_scheduler_pending_tasks",
                "Pending tasks in the scheduler's view",
            )?,
            unplaced_tasks: gauge(
                &registry,
                "borg_scheduler_unplaced_tasks",
                "Pending tasks the last round found no machine for",
            )?,
            in_flight_tasks: gauge(
                &registry,
                "borg_scheduler_in_flight_tasks",
                "Tasks of plans being committed or awaiting the view",
            )?,
            view_index: gauge(
                &registry,
                "borg_scheduler_view_index",
                "Log index the scheduler's view reflects",
            )?,
            watch_restarts: counter(
                &registry,
                "borg_scheduler_watch_restarts_total",
                "Times the cell-state stream was reopened",
            )?,
            view_items_skipped: counter(
                &registry,
                "borg_scheduler_view_items_skipped_total",
                "Malformed machines or jobs skipped in the cell-state stream",
            )?,
            commit_failures: counter(
                &registry,
                "borg_scheduler_commit_failures_total",
                "CommitPlan calls that failed without an answer",
            )?,
            registry,
        })
    }
}
