//! Prometheus metrics of one borglet, registered in its own registry.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Why a task process ended (label of `borglet_task_exits_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// Exit code 0.
    Success,
    /// Non-zero exit code.
    Failure,
    /// Killed by a signal it was not sent by the borglet.
    Signal,
    /// Killed by the kernel at its memory limit.
    Oom,
    /// Could not be started.
    StartFailed,
    /// Stopped by the borglet (left the desired set, or shutdown).
    Stopped,
}

impl ExitReason {
    pub fn label(self) -> &'static str {
        match self {
            ExitReason::Success => "success",
            ExitReason::Failure => "failure",
            ExitReason::Signal => "signal",
            ExitReason::Oom => "oom",
            ExitReason::StartFailed => "start_failed",
            ExitReason::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone)]
pub struct BorgletMetrics {
    pub tasks_running: IntGauge,
    pub task_starts: IntCounter,
    pub task_exits: IntCounterVec,
    pub task_start_latency: Histogram,
    pub polls: IntCounter,
    pub cgroups_enabled: IntGauge,
    pub isolation_enabled: IntGauge,
    pub free_memory_bytes: IntGauge,
    pub reclaim_kills: IntCounterVec,
    pub tasks_cpu_capped: IntGauge,
    pub enforcement_rounds: IntCounter,
    pub exec_sessions: IntCounterVec,
    pub registrations: IntCounterVec,
    pub requests_unauthenticated: IntCounter,
}

impl BorgletMetrics {
    pub fn new(registry: &Registry) -> Result<BorgletMetrics, prometheus::Error> {
        let metrics = BorgletMetrics {
            tasks_running: IntGauge::new(
                "borglet_tasks_running",
                "Tasks whose process is running on this machine",
            )?,
            task_starts: IntCounter::new(
                "borglet_task_starts_total",
                "Task processes started (first starts and restarts)",
            )?,
            task_exits: IntCounterVec::new(
                Opts::new("borglet_task_exits_total", "Task processes that ended, by reason"),
                &["reason"],
            )?,
            task_start_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "borglet_task_start_latency_seconds",
                    "From the desired set (or a restart) asking for a task to its process running in its cgroup",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
                ]),
            )?,
            polls: IntCounter::new("borglet_polls_total", "Poll calls answered")?,
            cgroups_enabled: IntGauge::new(
                "borglet_cgroups_enabled",
                "1 when tasks run in cgroups, 0 when they run without (see the log for why)",
            )?,
            isolation_enabled: IntGauge::new(
                "borglet_isolation_enabled",
                "1 when tasks run in their own namespaces as an unprivileged user, 0 when not (see the log for why)",
            )?,
            free_memory_bytes: IntGauge::new(
                "borglet_free_memory_bytes",
                "The machine's free memory at the last enforcement round",
            )?,
            reclaim_kills: IntCounterVec::new(
                Opts::new(
                    "borglet_reclaim_kills_total",
                    "Tasks killed to reclaim memory when the machine ran short, by priority band",
                ),
                &["band"],
            )?,
            tasks_cpu_capped: IntGauge::new(
                "borglet_tasks_cpu_capped",
                "Batch-class tasks capped at their CPU limit because the machine is busy",
            )?,
            enforcement_rounds: IntCounter::new(
                "borglet_enforcement_rounds_total",
                "Rounds of memory reclamation and CPU capping",
            )?,
            exec_sessions: IntCounterVec::new(
                Opts::new(
                    "borglet_exec_sessions_total",
                    "borgssh commands run inside tasks, by result (ran, failed, refused)",
                ),
                &["result"],
            )?,
            registrations: IntCounterVec::new(
                Opts::new(
                    "borglet_registrations_total",
                    "RegisterMachine attempts, by result",
                ),
                &["result"],
            )?,
            requests_unauthenticated: IntCounter::new(
                "borglet_requests_unauthenticated_total",
                "Calls refused because they did not carry the cluster token",
            )?,
        };
        registry.register(Box::new(metrics.tasks_running.clone()))?;
        registry.register(Box::new(metrics.task_starts.clone()))?;
        registry.register(Box::new(metrics.task_exits.clone()))?;
        registry.register(Box::new(metrics.task_start_latency.clone()))?;
        registry.register(Box::new(metrics.polls.clone()))?;
        registry.register(Box::new(metrics.cgroups_enabled.clone()))?;
        registry.register(Box::new(metrics.isolation_enabled.clone()))?;
        registry.register(Box::new(metrics.free_memory_bytes.clone()))?;
        registry.register(Box::new(metrics.reclaim_kills.clone()))?;
        registry.register(Box::new(metrics.tasks_cpu_capped.clone()))?;
        registry.register(Box::new(metrics.enforcement_rounds.clone()))?;
        registry.register(Box::new(metrics.exec_sessions.clone()))?;
        registry.register(Box::new(metrics.registrations.clone()))?;
        registry.register(Box::new(metrics.requests_unauthenticated.clone()))?;
        Ok(metrics)
    }

    pub fn exit(&self, reason: ExitReason) {
        self.task_exits.with_label_values(&[reason.label()]).inc();
    }
}
