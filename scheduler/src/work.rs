//! A machine as seen during one `schedule` call: the view's state plus what the plan so far
//! has placed on it and evicted from it, so task 2 sees the room task 1 took.

use crate::cache::PositionHasher;
use crate::view::{CellView, MachineView, PlacedTask};
use borg_model::{Band, Priority, Resources};
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct MachineWork<'a> {
    pub machine: &'a MachineView,
    /// Limits allocated, including this plan's placements, minus its evictions.
    pub allocated: Resources,
    /// Reservations held (plan placements count at their limits), for non-prod feasibility.
    pub reserved: Resources,
    /// Tasks placed before this plan and not evicted by it, in eviction preference order:
    /// lowest priority first, then task id (deterministic).
    pub evictable: Vec<&'a PlacedTask>,
    /// Tasks per job on the machine (before and in this plan), for spreading.
    pub tasks_per_job: HashMap<&'a str, u32, BuildHasherDefault<PositionHasher>>,
    /// Prod and non-prod tasks on the machine, for mixing priorities.
    pub prod_tasks: u32,
    pub non_prod_tasks: u32,
    /// Packages this plan placed here (the view knows the others).
    pub plan_packages: Vec<Arc<str>>,
    /// View generation of the machine and changes this plan made to it: score caches key on
    /// the pair.
    pub view_generation: u64,
    pub plan_changes: u32,
    /// Interned rack and power domain (set by `schedule`; see `spread`).
    pub domains: crate::spread::Domains,
}

impl<'a> MachineWork<'a> {
    pub fn new(view: &'a CellView, machine: &'a MachineView) -> Self {
        let mut evictable: Vec<&PlacedTask> = view.placed_on(&machine.name).collect();
        evictable.sort_by(|a, b| a.priority.cmp(&b.priority).then_with(|| a.id.cmp(&b.id)));
        let mut tasks_per_job: HashMap<&str, u32, BuildHasherDefault<PositionHasher>> =
            HashMap::default();
        let (mut prod_tasks, mut non_prod_tasks) = (0, 0);
        for task in &evictable {
            *tasks_per_job.entry(task.id.job.as_str()).or_insert(0) += 1;
            if Band::of(task.priority).is_prod() {
                prod_tasks += 1;
            } else {
                non_prod_tasks += 1;
            }
        }
        MachineWork {
            machine,
            allocated: view.allocated(machine),
            reserved: view.reserved(machine),
            evictable,
            tasks_per_job,
            prod_tasks,
            non_prod_tasks,
            plan_packages: Vec::new(),
            view_generation: view.machine_generation(&machine.name),
            plan_changes: 0,
            domains: [None; 2],
        }
    }

    /// Room left for a task that preempts nothing.
    pub fn free(&self) -> Resources {
        self.machine.capacity.saturating_sub(&self.allocated)
    }

    /// Room left for a task of `priority` that preempts nothing: prod is checked against
    /// limits, non-prod against reservations (reclaimed resources).
    pub fn free_for(&self, priority: Priority) -> Resources {
        if Band::of(priority).is_prod() {
            self.free()
        } else {
            self.machine.capacity.saturating_sub(&self.reserved)
        }
    }

    /// What evicting `evictable[i]` frees for a task of `priority`.
    pub fn freed_by(&self, i: usize, priority: Priority) -> Resources {
        let victim = self.evictable[i];
        if Band::of(priority).is_prod() {
            victim.limits
        } else {
            victim.reservation
        }
    }

    /// Records a placement of `limits` for `job` at `priority`, evicting `victims` (indices
    /// into `evictable`, as returned by feasibility).
    pub fn place(
        &mut self,
        job: &'a str,
        package: &Arc<str>,
        priority: Priority,
        limits: Resources,
        victims: &[usize],
    ) {
        let mut freed = Resources::ZERO;
        let mut freed_reserved = Resources::ZERO;
        for &i in victims {
            let victim = self.evictable[i];
            freed += victim.limits;
            freed_reserved += victim.reservation;
            if let Some(count) = self.tasks_per_job.get_mut(victim.id.job.as_str()) {
                *count = count.saturating_sub(1);
            }
            if Band::of(victim.priority).is_prod() {
                self.prod_tasks = self.prod_tasks.saturating_sub(1);
            } else {
                self.non_prod_tasks = self.non_prod_tasks.saturating_sub(1);
            }
        }
        let mut sorted = victims.to_vec();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        for i in sorted {
            self.evictable.remove(i);
        }
        self.allocated = self.allocated.saturating_sub(&freed) + limits;
        self.reserved = self.reserved.saturating_sub(&freed_reserved) + limits;
        *self.tasks_per_job.entry(job).or_insert(0) += 1;
        if Band::of(priority).is_prod() {
            self.prod_tasks += 1;
        } else {
            self.non_prod_tasks += 1;
        }
        if !self.plan_packages.contains(package) {
            self.plan_packages.push(Arc::clone(package));
        }
        self.plan_changes += 1;
    }
}
