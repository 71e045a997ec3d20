//! "Would this job fit?" (Borg's Fauxmaster use): the job's tasks are placed by the real
//! scheduler on a view of a live cell (built from a checkpoint by the caller), and the answer
//! says where each task would go, what it would preempt, and why any task stays pending.
//!
//! Only this job competes: other jobs' pending tasks are left out, as if this job were
//! scheduled first in its priority. No rocksdb here: the CLI reads the checkpoint.

use borg_model::{Constraint, JobSpec, Resources, TaskId};
use scheduler::{CellView, PendingTask, PlacementConfig, Victim};
use std::collections::BTreeSet;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFit {
    pub task: TaskId,
    pub machine: String,
    /// Running tasks evicted to make room.
    pub preempt: Vec<Victim>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitReport {
    pub job: String,
    pub machines: usize,
    pub placed: Vec<TaskFit>,
    /// Tasks that fit nowhere, with the scheduler's reason.
    pub pending: Vec<(TaskId, String)>,
}

impl FitReport {
    /// Every task of the job would be placed.
    pub fn fits(&self) -> bool {
        self.pending.is_empty()
    }

    /// The distinct running tasks the job would preempt, in id order.
    pub fn preempted(&self) -> Vec<&TaskId> {
        let set: BTreeSet<&TaskId> = self
            .placed
            .iter()
            .flat_map(|p| p.preempt.iter().map(|v| &v.task))
            .collect();
        set.into_iter().collect()
    }
}

/// The job's tasks as pending tasks; `limits_of(i)` gives task `i`'s resources (per-task
/// overrides of a BCL file).
pub fn job_tasks(spec: &JobSpec, limits_of: impl Fn(u32) -> Resources) -> Vec<PendingTask> {
    let constraints: Arc<[Constraint]> = Arc::from(spec.constraints.as_slice());
    (0..spec.replicas)
        .map(|index| PendingTask {
            id: TaskId::new(spec.name.clone(), index),
            incarnation: 0,
            owner: spec.owner.clone(),
            priority: spec.priority,
            limits: limits_of(index),
            constraints: Arc::clone(&constraints),
            ports: 0,
        })
        .collect()
}

/// Places `tasks` (of job `job`) on `view` as the scheduler would now.
pub fn fit(
    view: &CellView,
    job: &str,
    tasks: &[PendingTask],
    config: &PlacementConfig,
    seed: u64,
) -> FitReport {
    let config = crate::cell::placement_config(config, tasks.len());
    let plan = scheduler::schedule(view, tasks, &config, seed);
    FitReport {
        job: job.to_owned(),
        machines: view.machine_count(),
        placed: plan
            .placements
            .into_iter()
            .map(|p| TaskFit {
                task: p.task,
                machine: p.machine,
                preempt: p.preempt,
            })
            .collect(),
        pending: plan
            .unplaced
            .into_iter()
            .map(|(task, reason)| (task, reason.to_string()))
            .collect(),
    }
}
