//! Committing a scheduler's plan (ARCHITECTURE.md rule 3, optimistic concurrency).
//!
//! Placements are checked in order against the state left by the accepted ones before
//! them. One is accepted when the task exists, is `Pending` with the named incarnation, its
//! job is active, the machine exists and is `Up`, every victim is placed on that machine
//! with the named incarnation and may be preempted by the task
//! (`borg_model::priority::may_preempt`), and what the machine holds minus the victims plus
//! the task's limits fits its capacity: for a prod task what it holds is the limits of its
//! placed tasks, for a non-prod task their reservations (see `reservations`: resources
//! reserved but unused are reclaimed for non-prod work). The machine version in
//! the plan is informational: fit is what is checked. Constraints are the scheduler's job.

use super::context::Ctx;
use super::events::NewEvent;
use super::outcome::{Outcome, PlacementOutcome, StateError};
use super::records::{JobStatus, TaskRecord};
use super::tasks::{move_task, place};
use super::CellState;
use super::PlannedPlacement;
use borg_model::priority::may_preempt;
use borg_model::{Band, MachineState, Resources, TaskId, TaskState};
use std::collections::{BTreeMap, BTreeSet};

/// Most placements in one plan.
pub const PLAN_PLACEMENTS_MAX: usize = 10_000;
/// Most victims one placement may name.
pub const PLACEMENT_VICTIMS_MAX: usize = 1_000;

/// What a machine holds while a plan is checked: the sums of its placed tasks' limits
/// (`CellState::allocation`) and reservations (`CellState::reserved`).
#[derive(Debug, Clone, Copy)]
struct MachineHolds {
    allocation: Resources,
    reserved: Resources,
}

/// Per machine a plan named, what it holds: summed once per plan and kept up to date as
/// placements are committed, not summed over every placed task per placement (quadratic in
/// a large job's plan). Local to one `commit_plan`: never part of the state.
type PlanHolds = BTreeMap<String, MachineHolds>;

impl CellState {
    pub(crate) fn commit_plan(
        &mut self,
        ctx: &mut Ctx,
        placements: &[PlannedPlacement],
    ) -> Result<Outcome, StateError> {
        if placements.len() > PLAN_PLACEMENTS_MAX {
            return Err(StateError::BatchTooLarge {
                what: "plan".into(),
                count: placements.len(),
                max: PLAN_PLACEMENTS_MAX,
            });
        }
        let mut results = Vec::with_capacity(placements.len());
        let mut holds = PlanHolds::new();
        for placement in placements {
            let verdict = self.check_placement(placement, &mut holds).map(|victims| {
                self.commit_placement(ctx, placement, &victims);
                self.note_committed(&mut holds, placement, &victims);
            });
            results.push(PlacementOutcome {
                task: placement.task.clone(),
                accepted: verdict.is_ok(),
                reason: verdict.err().unwrap_or_default(),
            });
        }
        Ok(Outcome::PlanApplied { results })
    }

    /// Sum of the limits of the tasks placed on `machine` (tasks in allocs are inside their
    /// alloc's limits).
    pub(crate) fn allocation(&self, machine: &str) -> Resources {
        let Some(record) = self.machines.get(machine) else {
            return Resources::ZERO;
        };
        record
            .placed
            .iter()
            .filter_map(|id| {
                let job = self.jobs.get(&id.job)?;
                job.spec
                    .alloc_set
                    .is_none()
                    .then(|| job.spec.task_resources(id.index))
            })
            .fold(Resources::ZERO, |sum, limits| sum + limits)
    }

    /// Sum of the reservations of the tasks placed on `machine`.
    pub(crate) fn reserved(&self, machine: &str) -> Resources {
        self.placed_tasks(machine)
            .fold(Resources::ZERO, |sum, task| sum + task.reservation.reserved)
    }

    fn placed_tasks(&self, machine: &str) -> impl Iterator<Item = &TaskRecord> {
        self.machines
            .get(machine)
            .into_iter()
            .flat_map(|record| record.placed.iter())
            .filter_map(|id| {
                let job = self.jobs.get(&id.job)?;
                // Tasks in allocs are inside their alloc's reservation.
                job.spec
                    .alloc_set
                    .is_none()
                    .then_some(job)?
                    .tasks
                    .get(&id.index)
            })
    }

    /// What `machine` holds now (`allocation`, `reserved`), from `holds` when this plan
    /// summed it already.
    fn machine_holds(&self, holds: &mut PlanHolds, machine: &str) -> MachineHolds {
        if let Some(held) = holds.get(machine) {
            return *held;
        }
        let held = MachineHolds {
            allocation: self.allocation(machine),
            reserved: self.reserved(machine),
        };
        holds.insert(machine.to_string(), held);
        held
    }

    /// Keeps `holds` equal to what `machine_holds` would sum after `p` was committed: a
    /// plain placement adds its limits (it reserves them until reports say otherwise);
    /// one with victims or in an alloc set is summed again when next needed.
    fn note_committed(
        &self,
        holds: &mut PlanHolds,
        p: &PlannedPlacement,
        victims: &BTreeSet<TaskId>,
    ) {
        let plain = victims.is_empty()
            && self
                .jobs
                .get(&p.task.job)
                .is_some_and(|j| !j.spec.is_alloc_set && j.spec.alloc_set.is_none());
        if !plain {
            // Victims may be alloc sets whose tenants leave other machines too.
            holds.clear();
            return;
        }
        let Some(held) = holds.get_mut(&p.machine) else {
            return;
        };
        let limit = self
            .jobs
            .get(&p.task.job)
            .map_or(Resources::ZERO, |j| j.spec.task_resources(p.task.index));
        held.allocation += limit;
        held.reserved += limit;
    }

    /// Why `p` cannot be committed, or its distinct victims.
    fn check_placement(
        &self,
        p: &PlannedPlacement,
        holds: &mut PlanHolds,
    ) -> Result<BTreeSet<TaskId>, String> {
        let id = &p.task;
        let job = self
            .jobs
            .get(&id.job)
            .ok_or_else(|| format!("job {:?} does not exist", id.job))?;
        if job.status == JobStatus::Killed {
            return Err(format!("job {:?} is killed", id.job));
        }
        let task = job
            .tasks
            .get(&id.index)
            .filter(|_| id.index < job.spec.replicas)
            .ok_or_else(|| {
                format!(
                    "task {id} does not exist (job has {} replicas)",
                    job.spec.replicas
                )
            })?;
        if task.state != TaskState::Pending {
            return Err(format!("task {id} is {}, not pending", task.state));
        }
        if task.incarnation != p.incarnation {
            return Err(format!(
                "task {id} incarnation {} is stale (now {})",
                p.incarnation, task.incarnation
            ));
        }
        let machine = self
            .machines
            .get(&p.machine)
            .ok_or_else(|| format!("machine {:?} is not registered", p.machine))?;
        if machine.state != MachineState::Up {
            return Err(format!(
                "machine {:?} is {}",
                p.machine,
                machine.state.name()
            ));
        }
        if p.preempt.len() > PLACEMENT_VICTIMS_MAX {
            return Err(format!(
                "{} victims named; the most is {PLACEMENT_VICTIMS_MAX}",
                p.preempt.len()
            ));
        }
        let priority = job.spec.priority;
        let mut victims = BTreeSet::new();
        let mut freed_limits = Resources::ZERO;
        let mut freed_reserved = Resources::ZERO;
        for (victim, incarnation) in &p.preempt {
            let victim_job = self.jobs.get(&victim.job);
            let placed_here = victim_job
                .and_then(|j| j.tasks.get(&victim.index))
                .filter(|t| {
                    t.state.is_placed() && t.machine == p.machine && t.incarnation == *incarnation
                })
                .is_some();
            let (Some(victim_job), true) = (victim_job, placed_here) else {
                return Err(format!(
                    "victim {victim} incarnation {incarnation} is not placed on {:?}",
                    p.machine
                ));
            };
            if let Some(set) = &victim_job.spec.alloc_set {
                return Err(format!(
                    "victim {victim} runs in alloc {set}/{}: preempt the alloc instead",
                    victim.index
                ));
            }
            if !may_preempt(priority, victim_job.spec.priority) {
                return Err(format!(
                    "task {id} (priority {priority}) may not preempt {victim} (priority {})",
                    victim_job.spec.priority
                ));
            }
            if victims.insert(victim.clone()) {
                freed_limits += victim_job.spec.task_resources(victim.index);
                if let Some(task) = victim_job.tasks.get(&victim.index) {
                    freed_reserved += task.reservation.reserved;
                }
            }
        }
        if let Some(set) = &job.spec.alloc_set {
            self.check_alloc_placement(set, id, &p.machine, victims.len())?;
            return Ok(victims);
        }
        let need = job.spec.task_resources(id.index);
        // Prod fits against limits; non-prod against reservations (reclaimed resources).
        let held = self.machine_holds(holds, &p.machine);
        let remaining = if Band::of(priority).is_prod() {
            held.allocation.saturating_sub(&freed_limits)
        } else {
            held.reserved.saturating_sub(&freed_reserved)
        };
        let free = machine.info.capacity.saturating_sub(&remaining);
        let exceeded = need.exceeded_dimensions(&free);
        if !exceeded.is_empty() {
            return Err(format!(
                "{} exhausted on {:?}: task needs {need}, {free} free{}",
                exceeded.join(", "),
                p.machine,
                if victims.is_empty() {
                    String::new()
                } else {
                    format!(" after evicting {} victims", victims.len())
                }
            ));
        }
        if let Some(why) = self.ports_exhausted(id, &p.machine, &victims) {
            return Err(why);
        }
        Ok(victims)
    }

    /// Evicts the victims and places the task; `check_placement` accepted it.
    fn commit_placement(
        &mut self,
        ctx: &mut Ctx,
        p: &PlannedPlacement,
        victims: &BTreeSet<TaskId>,
    ) {
        for victim in victims {
            let Some(task) = self
                .jobs
                .get_mut(&victim.job)
                .and_then(|j| j.tasks.get_mut(&victim.index))
            else {
                continue;
            };
            let message = format!("preempted by {}", p.task);
            ctx.event(NewEvent::task(
                "task_preempted",
                &victim.job,
                victim.index,
                &p.machine,
                message.clone(),
            ));
            move_task(
                &mut self.machines,
                ctx,
                victim,
                task,
                TaskState::Pending,
                message,
            );
        }
        let evicted_sets: BTreeSet<String> = victims
            .iter()
            .filter(|v| self.jobs.get(&v.job).is_some_and(|j| j.spec.is_alloc_set))
            .map(|v| v.job.clone())
            .collect();
        for set in &evicted_sets {
            self.evict_orphaned_tenants(ctx, set);
        }
        let Some(job) = self.jobs.get_mut(&p.task.job) else {
            return;
        };
        let is_alloc = job.spec.is_alloc_set;
        let limit = job.spec.task_resources(p.task.index);
        let Some(task) = job.tasks.get_mut(&p.task.index) else {
            return;
        };
        place(&mut self.machines, ctx, &p.task, task, &p.machine, limit);
        ctx.event(NewEvent::task(
            "task_scheduled",
            &p.task.job,
            p.task.index,
            &p.machine,
            format!("incarnation {}", task.incarnation),
        ));
        if is_alloc {
            // An alloc runs nothing: it reserves from the moment it is placed.
            move_task(
                &mut self.machines,
                ctx,
                &p.task,
                task,
                TaskState::Running,
                "reserving".into(),
            );
        }
    }
}
