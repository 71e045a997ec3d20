//! A machine as seen during one `schedule` call: the view's state plus what the plan so far
//! has placed on it and evicted from it, so task 2 sees the room task 1 took.

use crate::view::{CellView, MachineRef, MachineView, PlacedTask};
use borg_model::{Band, Priority, Resources};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct MachineWork<'a> {
    pub machine: &'a MachineView,
    /// What the view holds about the machine (its packages, for package locality).
    pub held: MachineRef<'a>,
    /// Copies of the machine's state and capacities that feasibility reads for every
    /// candidate: they sit with the rest of the work, which a scan reads in order, rather
    /// than behind the `machine` pointer.
    pub up: bool,
    pub capacity: Resources,
    pub port_capacity: u32,
    /// Limits allocated, including this plan's placements, minus its evictions.
    pub allocated: Resources,
    /// Reservations held (plan placements count at their limits), for non-prod feasibility.
    pub reserved: Resources,
    /// Ports held, including this plan's placements, minus its evictions.
    pub ports_used: u32,
    /// Tasks placed before this plan and not evicted by it, in eviction preference order:
    /// lowest priority first, then task id (deterministic).
    pub evictable: Vec<&'a PlacedTask>,
    /// Prod and non-prod tasks on the machine, for mixing priorities.
    pub prod_tasks: u32,
    pub non_prod_tasks: u32,
    /// Packages this plan placed here (the view knows the others).
    pub plan_packages: Vec<Arc<str>>,
    /// View generation of the machine and changes this plan made to it: score caches key on
    /// the pair.
    pub view_generation: u64,
    pub plan_changes: u32,
    /// Interned rack and power domain (`MachineRef::domains`; see `spread`).
    pub domains: crate::spread::Domains,
}

impl<'a> MachineWork<'a> {
    pub fn new(view: &'a CellView, machine: &'a MachineView) -> Self {
        MachineWork::of(view.machine_ref(machine))
    }

    /// The work of a machine as the view holds it (`CellView::machine_refs`).
    pub fn of(view: MachineRef<'a>) -> Self {
        let machine = view.machine;
        let mut evictable: Vec<&PlacedTask> = Vec::with_capacity(view.placed_count());
        // Already in eviction preference order.
        evictable.extend(view.placed());
        let (mut prod_tasks, mut non_prod_tasks) = (0, 0);
        for task in &evictable {
            if Band::of(task.priority).is_prod() {
                prod_tasks += 1;
            } else {
                non_prod_tasks += 1;
            }
        }
        MachineWork {
            machine,
            held: view,
            allocated: view.allocated(),
            up: machine.state == borg_model::MachineState::Up,
            capacity: machine.capacity,
            port_capacity: machine.port_capacity,
            reserved: view.reserved(),
            ports_used: view.ports_used(),
            evictable,
            prod_tasks,
            non_prod_tasks,
            plan_packages: Vec::new(),
            view_generation: view.generation(),
            plan_changes: 0,
            domains: view.domains(),
        }
    }

    /// Room left for a task that preempts nothing.
    pub fn free(&self) -> Resources {
        self.capacity.saturating_sub(&self.allocated)
    }

    /// Room left for a task of `priority` that preempts nothing: prod is checked against
    /// limits, non-prod against reservations (reclaimed resources).
    pub fn free_for(&self, priority: Priority) -> Resources {
        if Band::of(priority).is_prod() {
            self.free()
        } else {
            self.capacity.saturating_sub(&self.reserved)
        }
    }

    /// Ports left for a task that preempts nothing (the same for every band: a port is
    /// held, never reclaimed).
    pub fn free_ports(&self) -> u32 {
        self.port_capacity.saturating_sub(self.ports_used)
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

    /// Records a placement of `limits` and `ports` at `priority`, evicting `victims`
    /// (indices into `evictable`, as returned by feasibility). Per-job counts live in
    /// `Spread`.
    pub fn place(
        &mut self,
        package: &Arc<str>,
        priority: Priority,
        limits: Resources,
        ports: u32,
        victims: &[usize],
    ) {
        let mut freed = Resources::ZERO;
        let mut freed_reserved = Resources::ZERO;
        let mut freed_ports = 0u32;
        for &i in victims {
            let victim = self.evictable[i];
            freed += victim.limits;
            freed_reserved += victim.reservation;
            freed_ports = freed_ports.saturating_add(victim.ports);
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
        self.ports_used = self
            .ports_used
            .saturating_sub(freed_ports)
            .saturating_add(ports);
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
