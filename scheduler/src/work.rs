//! A machine as seen during one `schedule` call: the view's state plus what the plan so far
//! has placed on it and evicted from it, so task 2 sees the room task 1 took.

use crate::view::{CellView, MachineView, PlacedTask};
use borg_model::Resources;
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct MachineWork<'a> {
    pub machine: &'a MachineView,
    /// Allocation including this plan's placements, minus its evictions.
    pub allocated: Resources,
    /// Tasks placed before this plan and not evicted by it, in eviction preference order:
    /// lowest priority first, then task id (deterministic).
    pub evictable: Vec<&'a PlacedTask>,
    /// Tasks per job on the machine (before and in this plan), for spreading.
    pub tasks_per_job: HashMap<&'a str, u32>,
}

impl<'a> MachineWork<'a> {
    pub fn new(view: &'a CellView, machine: &'a MachineView) -> Self {
        let mut evictable: Vec<&PlacedTask> = view.placed_on(&machine.name).collect();
        evictable.sort_by(|a, b| a.priority.cmp(&b.priority).then_with(|| a.id.cmp(&b.id)));
        let mut tasks_per_job = HashMap::new();
        for task in &evictable {
            *tasks_per_job.entry(task.id.job.as_str()).or_insert(0) += 1;
        }
        MachineWork {
            machine,
            allocated: view.allocated(machine),
            evictable,
            tasks_per_job,
        }
    }

    /// Room left for a task that preempts nothing.
    pub fn free(&self) -> Resources {
        self.machine.capacity.saturating_sub(&self.allocated)
    }

    /// Records a placement of `limits` for `job`, evicting `victims` (indices into
    /// `evictable`, as returned by feasibility).
    pub fn place(&mut self, job: &'a str, limits: Resources, victims: &[usize]) {
        let mut freed = Resources::ZERO;
        for &i in victims {
            let victim = self.evictable[i];
            freed += victim.limits;
            if let Some(count) = self.tasks_per_job.get_mut(victim.id.job.as_str()) {
                *count = count.saturating_sub(1);
            }
        }
        let mut sorted = victims.to_vec();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        for i in sorted {
            self.evictable.remove(i);
        }
        self.allocated = self.allocated.saturating_sub(&freed) + limits;
        *self.tasks_per_job.entry(job).or_insert(0) += 1;
    }
}
