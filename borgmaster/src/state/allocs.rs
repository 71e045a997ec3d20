//! Alloc sets and the jobs placed in them (docs/lifecycle.md, "Alloc sets").
//!
//! - An alloc set is kept as a job record whose spec `is_alloc_set`: its tasks are the
//!   allocs. They are admitted (quota: the set's reservation), placed by the scheduler and
//!   preempted like tasks, but run nothing: an alloc is `Running` (reserving) from the
//!   moment it is placed, and never in a borglet's desired set.
//! - A job naming a set (`alloc_set`) must belong to the set's owner and have at most as
//!   many tasks as the set has allocs. Its task i is placed only on alloc i's machine, while
//!   alloc i is placed, and only within what alloc i reserves minus the limits of the other
//!   tasks placed in it. Such tasks are charged neither to the machine (the alloc already
//!   is) nor to quota (the set already is).
//! - When alloc i leaves its machine (preempted, re-pended by an update, the set shrunk),
//!   the tasks placed in it are re-pended; they follow the alloc to its next machine.
//! - A set that active jobs name cannot be killed or shrunk below their tasks, and names
//!   the jobs in the refusal.

use super::context::Ctx;
use super::events::NewEvent;
use super::outcome::StateError;
use super::records::JobStatus;
use super::tasks::move_task;
use super::CellState;
use borg_model::{JobSpec, Resources, TaskId, TaskState};

impl CellState {
    /// Names of the active jobs placed in alloc set `set`, in name order.
    pub(crate) fn alloc_tenants(&self, set: &str) -> Vec<String> {
        self.jobs
            .values()
            .filter(|j| !j.is_finished() && j.spec.alloc_set.as_deref() == Some(set))
            .map(|j| j.spec.name.clone())
            .collect()
    }

    /// Checks that a submit of `spec` fits the alloc sets it names or is: a job names an
    /// active set of its owner with enough allocs; a set is not shrunk below its jobs; jobs
    /// and sets do not replace each other under one name.
    pub(crate) fn check_alloc_submit(&self, spec: &JobSpec) -> Result<(), StateError> {
        let invalid = |reason: String| Err(StateError::InvalidRequest { reason });
        if let Some(existing) = self.jobs.get(&spec.name) {
            if existing.spec.is_alloc_set != spec.is_alloc_set {
                let (is, was) = if existing.spec.is_alloc_set {
                    ("an alloc set", "a job")
                } else {
                    ("a job", "an alloc set")
                };
                return invalid(format!(
                    "{:?} is {is}; jobs and alloc sets share names, so it cannot become {was}: choose another name",
                    spec.name
                ));
            }
        }
        if spec.is_alloc_set {
            let too_big: Vec<String> = self
                .jobs
                .values()
                .filter(|j| {
                    !j.is_finished()
                        && j.spec.alloc_set.as_deref() == Some(spec.name.as_str())
                        && j.spec.replicas > spec.replicas
                })
                .map(|j| format!("{} ({} tasks)", j.spec.name, j.spec.replicas))
                .collect();
            if !too_big.is_empty() {
                return invalid(format!(
                    "alloc set {:?} cannot shrink to {} allocs: jobs placed in it have more tasks: {}; shrink or kill them first",
                    spec.name,
                    spec.replicas,
                    too_big.join(", ")
                ));
            }
            return Ok(());
        }
        let Some(set_name) = &spec.alloc_set else {
            return Ok(());
        };
        let set = self
            .jobs
            .get(set_name)
            .filter(|j| j.spec.is_alloc_set && j.status == JobStatus::Active);
        let Some(set) = set else {
            return invalid(format!(
                "job {:?} names alloc set {set_name:?}, which does not exist or is killed: submit the set first (`borg job run` submits a file's alloc sets before its jobs)",
                spec.name
            ));
        };
        if set.spec.owner != spec.owner {
            return invalid(format!(
                "job {:?} of {} cannot use alloc set {set_name:?} of {}: a set holds its owner's jobs only",
                spec.name, spec.owner, set.spec.owner
            ));
        }
        if spec.replicas > set.spec.replicas {
            return invalid(format!(
                "job {:?} has {} tasks but alloc set {set_name:?} has only {} allocs: task i runs in alloc i",
                spec.name, spec.replicas, set.spec.replicas
            ));
        }
        Ok(())
    }

    /// Refuses to kill an alloc set that active jobs still use.
    pub(crate) fn check_alloc_kill(&self, name: &str) -> Result<(), StateError> {
        let is_set = self.jobs.get(name).is_some_and(|j| j.spec.is_alloc_set);
        let tenants = if is_set {
            self.alloc_tenants(name)
        } else {
            Vec::new()
        };
        if tenants.is_empty() {
            return Ok(());
        }
        Err(StateError::InvalidRequest {
            reason: format!(
                "alloc set {name:?} is used by job(s) {}: kill them first, or kill all together with `borg alloc kill --with-jobs {name}`",
                tenants.join(", ")
            ),
        })
    }

    /// Limits of the tasks placed in alloc `index` of `set` (on `machine`), excluding `except`.
    fn alloc_used(&self, set: &str, index: u32, machine: &str, except: &TaskId) -> Resources {
        self.jobs
            .values()
            .filter(|j| j.spec.alloc_set.as_deref() == Some(set) && j.spec.name != except.job)
            .filter(|j| {
                j.tasks
                    .get(&index)
                    .is_some_and(|t| t.state.is_placed() && t.machine == machine)
            })
            .fold(Resources::ZERO, |sum, j| sum + j.spec.task_resources(index))
    }

    /// Why task `id` of a job in alloc set `set` cannot be placed on `machine` (the caller
    /// checked the task and the machine).
    pub(crate) fn check_alloc_placement(
        &self,
        set: &str,
        id: &TaskId,
        machine: &str,
        victims: usize,
    ) -> Result<(), String> {
        if victims > 0 {
            return Err(format!(
                "task {id} runs in alloc {set}/{}: it preempts nothing",
                id.index
            ));
        }
        let set_job = self
            .jobs
            .get(set)
            .filter(|j| j.spec.is_alloc_set && j.status == JobStatus::Active)
            .ok_or_else(|| format!("alloc set {set:?} does not exist or is killed"))?;
        let alloc = set_job
            .tasks
            .get(&id.index)
            .filter(|a| a.state.is_placed())
            .ok_or_else(|| format!("alloc {set}/{} is not placed", id.index))?;
        if alloc.machine != machine {
            return Err(format!(
                "alloc {set}/{} is on {:?}, not {machine:?}",
                id.index, alloc.machine
            ));
        }
        let reserved = set_job.spec.task_resources(id.index);
        let left = reserved.saturating_sub(&self.alloc_used(set, id.index, machine, id));
        let need = self
            .jobs
            .get(&id.job)
            .map(|j| j.spec.task_resources(id.index))
            .unwrap_or_default();
        let exceeded = need.exceeded_dimensions(&left);
        if !exceeded.is_empty() {
            return Err(format!(
                "{} exhausted in alloc {set}/{}: task needs {need}, {left} left of {reserved}",
                exceeded.join(", "),
                id.index
            ));
        }
        Ok(())
    }

    /// Re-pends the tasks placed in allocs of `set` that are no longer where their alloc
    /// is (the alloc was preempted, re-pended or removed).
    pub(crate) fn evict_orphaned_tenants(&mut self, ctx: &mut Ctx, set: &str) {
        let allocs: Vec<(u32, String)> = self
            .jobs
            .get(set)
            .filter(|j| j.spec.is_alloc_set && j.status == JobStatus::Active)
            .map(|j| {
                j.live_tasks()
                    .filter(|(_, t)| t.state.is_placed())
                    .map(|(i, t)| (*i, t.machine.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let machine_of = |index: u32| {
            allocs
                .iter()
                .find(|(i, _)| *i == index)
                .map(|(_, m)| m.as_str())
        };
        for job in self.jobs.values_mut() {
            if job.spec.alloc_set.as_deref() != Some(set) || job.status != JobStatus::Active {
                continue;
            }
            for (index, task) in job.tasks.iter_mut() {
                if !task.state.is_placed() || machine_of(*index) == Some(task.machine.as_str()) {
                    continue;
                }
                let id = TaskId::new(job.spec.name.clone(), *index);
                let message = format!("alloc {set}/{index} left machine {}", task.machine);
                ctx.event(NewEvent::task(
                    "task_preempted",
                    &id.job,
                    *index,
                    &task.machine,
                    message.clone(),
                ));
                move_task(
                    &mut self.machines,
                    ctx,
                    &id,
                    task,
                    TaskState::Pending,
                    message,
                );
            }
        }
    }
}
