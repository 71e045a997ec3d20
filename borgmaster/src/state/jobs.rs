//! Submitting, updating and killing jobs (docs/lifecycle.md, "Job updates").
//!
//! - A new job gets `replicas` tasks, `Pending`, incarnation 0.
//! - Resubmitting an identical spec to an active job changes nothing (not even
//!   `modify_index`), so applying the same config twice is harmless.
//! - If the constraints or priority changed, every non-terminal task is re-pended with a new
//!   incarnation; if only templates changed, just the tasks whose own template (the job's,
//!   or their per-task override) changed are. Other fields (owner, job type, app class,
//!   restart policy) take effect without restarting tasks.
//! - If `replicas` grew, tasks are added `Pending` (an index killed by an earlier shrink is
//!   revived with a new incarnation); if it shrank, the highest indices are killed. Their
//!   records stay (`Killed`) so incarnations of an index never repeat.
//! - Resubmitting a finished job (killed, or done) restarts it: every task is re-pended with
//!   a new incarnation.
//! - A killed job stays queryable as `KILLED`, every non-terminal task `Killed` at once.

use super::context::Ctx;
use super::events::NewEvent;
use super::outcome::{Outcome, StateError};
use super::records::{JobRecord, JobStatus, TaskRecord};
use super::tasks::{move_task, repend_new_incarnation};
use super::CellState;
use borg_model::{JobSpec, TaskId, TaskState};
use std::collections::BTreeMap;

/// Most jobs the cell holds (active and retained finished ones).
pub const JOBS_MAX: usize = 50_000;

impl CellState {
    pub(crate) fn submit_job(
        &mut self,
        ctx: &mut Ctx,
        spec: &JobSpec,
        check_index: Option<u64>,
        must_exist: bool,
    ) -> Result<Outcome, StateError> {
        spec.validate().map_err(|e| StateError::InvalidJob {
            reason: e.to_string(),
        })?;
        self.check_alloc_submit(spec)?;
        let name = spec.name.clone();
        let existing_index = self.jobs.get(&name).map(|j| j.modify_index);
        match (check_index, existing_index) {
            (Some(0), Some(_)) => return Err(StateError::JobAlreadyExists { name }),
            (Some(expected), Some(actual)) if expected != actual => {
                return Err(StateError::CheckIndexMismatch {
                    name,
                    expected,
                    actual,
                })
            }
            (Some(expected), None) if expected != 0 => {
                return Err(StateError::JobNotFound { name })
            }
            _ => {}
        }
        if existing_index.is_none() {
            if must_exist {
                return Err(StateError::JobNotFound { name });
            }
            if self.jobs.len() >= JOBS_MAX {
                return Err(StateError::CellFull {
                    what: "jobs".into(),
                    count: self.jobs.len(),
                });
            }
            self.create_job(ctx, spec);
            return Ok(Outcome::JobSubmitted {
                name,
                created: true,
            });
        }
        self.update_job(ctx, spec);
        if spec.is_alloc_set {
            self.evict_orphaned_tenants(ctx, &name);
        }
        Ok(Outcome::JobSubmitted {
            name,
            created: false,
        })
    }

    fn create_job(&mut self, ctx: &mut Ctx, spec: &JobSpec) {
        let tasks = (0..spec.replicas)
            .map(|i| (i, TaskRecord::pending(0, ctx.time_ms, "")))
            .collect();
        self.jobs.insert(
            spec.name.clone(),
            JobRecord {
                spec: spec.clone(),
                status: JobStatus::Active,
                create_index: ctx.index,
                modify_index: ctx.index,
                submitted_ms: ctx.time_ms,
                tasks,
                finished_index: None,
            },
        );
        ctx.touch_job(&spec.name);
        ctx.event(NewEvent::job(
            "job_submitted",
            &spec.name,
            format!(
                "created with {} tasks at priority {}",
                spec.replicas, spec.priority
            ),
        ));
    }

    /// Updates an existing job; the caller checked that it exists.
    fn update_job(&mut self, ctx: &mut Ctx, spec: &JobSpec) {
        let Some(job) = self.jobs.get_mut(&spec.name) else {
            return;
        };
        let finished = job.is_finished();
        if !finished && job.spec == *spec {
            return;
        }
        let old = std::mem::replace(&mut job.spec, spec.clone());
        job.modify_index = ctx.index;
        job.submitted_ms = ctx.time_ms;
        ctx.touch_job(&spec.name);
        let machines = &mut self.machines;
        if finished {
            job.status = JobStatus::Active;
            job.finished_index = None;
            for index in 0..spec.replicas {
                let id = TaskId::new(spec.name.clone(), index);
                match job.tasks.get_mut(&index) {
                    Some(task) => {
                        repend_new_incarnation(machines, ctx, &id, task, "job restarted".into())
                    }
                    None => {
                        job.tasks
                            .insert(index, TaskRecord::pending(0, ctx.time_ms, "job restarted"));
                    }
                }
            }
            ctx.event(NewEvent::job(
                "job_submitted",
                &spec.name,
                format!("restarted with {} tasks", spec.replicas),
            ));
            return;
        }
        // Shrink first, so that re-pending below touches only tasks that stay.
        let killed_from = spec.replicas;
        let shrunk: Vec<u32> = job
            .tasks
            .range(killed_from..)
            .filter(|(_, t)| !t.state.is_terminal())
            .map(|(i, _)| *i)
            .collect();
        for index in &shrunk {
            if let Some(task) = job.tasks.get_mut(index) {
                let id = TaskId::new(spec.name.clone(), *index);
                let message = format!("job scaled down to {} replicas", spec.replicas);
                ctx.event(NewEvent::task(
                    "task_killed",
                    &spec.name,
                    *index,
                    &task.machine,
                    message.clone(),
                ));
                move_task(machines, ctx, &id, task, TaskState::Killed, message);
            }
        }
        let respec_all = old.constraints != spec.constraints || old.priority != spec.priority;
        let mut repended = 0usize;
        for (index, task) in job.tasks.range_mut(..spec.replicas) {
            let template_changed = old.task_template(*index) != spec.task_template(*index);
            if task.state.is_terminal() || !(respec_all || template_changed) {
                continue;
            }
            let id = TaskId::new(spec.name.clone(), *index);
            repend_new_incarnation(machines, ctx, &id, task, "job updated".into());
            repended += 1;
        }
        let grown = grow(job, ctx, machines, old.replicas, spec);
        ctx.event(NewEvent::job(
            "job_updated",
            &spec.name,
            format!(
                "replicas {} -> {}: {} tasks added, {} killed, {} restarted with the new spec",
                old.replicas,
                spec.replicas,
                grown,
                shrunk.len(),
                repended
            ),
        ));
    }

    pub(crate) fn kill_job(&mut self, ctx: &mut Ctx, name: &str) -> Result<Outcome, StateError> {
        self.check_alloc_kill(name)?;
        let Some(job) = self.jobs.get_mut(name) else {
            return Err(StateError::JobNotFound {
                name: name.to_string(),
            });
        };
        let outcome = Outcome::JobKilled {
            name: name.to_string(),
        };
        if job.status == JobStatus::Killed {
            return Ok(outcome);
        }
        job.status = JobStatus::Killed;
        ctx.touch_job(name);
        ctx.maybe_finished.insert(name.to_string());
        let mut stopped = 0usize;
        for (index, task) in job.tasks.iter_mut() {
            if task.state.is_terminal() {
                continue;
            }
            let id = TaskId::new(name, *index);
            move_task(
                &mut self.machines,
                ctx,
                &id,
                task,
                TaskState::Killed,
                "job killed".into(),
            );
            stopped += 1;
        }
        ctx.event(NewEvent::job(
            "job_killed",
            name,
            format!("{stopped} tasks killed"),
        ));
        Ok(outcome)
    }
}

/// Adds (or revives) tasks for indices `old_replicas..spec.replicas`; returns how many.
fn grow(
    job: &mut JobRecord,
    ctx: &mut Ctx,
    machines: &mut BTreeMap<String, super::records::MachineRecord>,
    old_replicas: u32,
    spec: &JobSpec,
) -> usize {
    let mut grown = 0;
    for index in old_replicas..spec.replicas {
        match job.tasks.get_mut(&index) {
            Some(task) if task.state.is_terminal() => {
                let id = TaskId::new(spec.name.clone(), index);
                repend_new_incarnation(machines, ctx, &id, task, "job scaled up".into());
            }
            Some(_) => continue,
            None => {
                job.tasks
                    .insert(index, TaskRecord::pending(0, ctx.time_ms, "job scaled up"));
            }
        }
        grown += 1;
    }
    grown
}
