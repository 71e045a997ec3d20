//! A simulated cell for the real scheduler: the kept machines as a `CellView`, the
//! workload's tasks as `PendingTask`s, and one `scheduler::schedule` call that says whether
//! the work fits.

use crate::trace::TraceTask;
use borg_model::{Band, Constraint, MachineInfo, MachineState, Resources, TaskId};
use scheduler::{CellView, MachineView, PendingTask, PlacementConfig, Plan};
use std::collections::HashMap;
use std::sync::Arc;

/// The workload as pending tasks (every task is placed afresh: compaction repacks the cell).
/// Tasks of one job share one constraint list, as in the master.
pub fn pending_tasks(tasks: &[TraceTask]) -> Vec<PendingTask> {
    let mut shared: HashMap<&[Constraint], Arc<[Constraint]>> = HashMap::new();
    tasks
        .iter()
        .map(|task| {
            let constraints = Arc::clone(
                shared
                    .entry(&task.constraints)
                    .or_insert_with(|| Arc::from(task.constraints.as_slice())),
            );
            PendingTask {
                id: task.id.clone(),
                incarnation: 0,
                owner: task.owner.clone(),
                priority: task.priority,
                limits: task.request,
                constraints,
                ports: 0,
            }
        })
        .collect()
}

/// An empty cell of `machines`, all up.
pub fn empty_view<'a>(machines: impl IntoIterator<Item = &'a MachineInfo>) -> CellView {
    let mut view = CellView::new();
    for machine in machines {
        view.upsert_machine(MachineView::new(machine.clone(), MachineState::Up, 1));
    }
    view
}

/// The scheduler configuration that considers every pending task in one call.
pub fn placement_config(base: &PlacementConfig, tasks: usize) -> PlacementConfig {
    PlacementConfig {
        tasks_max: tasks.max(1),
        ..base.clone()
    }
}

/// Tasks a plan leaves pending (unplaced or not considered).
pub fn pending_after(plan: &Plan) -> usize {
    plan.unplaced.len() + plan.deferred
}

/// Places `pending` on an empty cell of `machines` and returns the plan.
pub fn place<'a>(
    machines: impl IntoIterator<Item = &'a MachineInfo>,
    pending: &[PendingTask],
    config: &PlacementConfig,
    seed: u64,
) -> Plan {
    let view = empty_view(machines);
    scheduler::schedule(
        &view,
        pending,
        &placement_config(config, pending.len()),
        seed,
    )
}

/// How tasks are charged against machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charging {
    /// Every task by its limits (requests), in one scheduling pass.
    Limits,
    /// Borg's reclamation: production tasks are placed by their limits; non-production tasks
    /// then see each machine less the production tasks' *reservations* (expected use plus a
    /// safety margin), so they run on what production reserved but does not use.
    /// Production never shares reclaimed room with production, and non-production work can
    /// never preempt production, so a machine shrunk by the reservations is exactly what the
    /// second pass needs.
    ///
    /// The usage model: the 2011 slice has no usage table, so a production task's
    /// reservation is a fixed share of its limits per dimension (disk and GPUs stay at the
    /// limit). The defaults, CPU 60% and memory 80%, are the trace-wide usage-to-request
    /// ratios reported for the 2011 cell (about 40% for CPU and 65% for memory; Reiss et al.,
    /// SoCC 2012) plus a safety margin of 20 and 15 points, in the spirit of Borg's medium
    /// reservation estimate. Results scale with these figures: change them to test another
    /// model.
    Reclaim {
        cpu_reservation_percent: u32,
        ram_reservation_percent: u32,
    },
}

impl Charging {
    pub const CPU_RESERVATION_PERCENT_DEFAULT: u32 = 60;
    pub const RAM_RESERVATION_PERCENT_DEFAULT: u32 = 80;

    pub fn reclaim_default() -> Charging {
        Charging::Reclaim {
            cpu_reservation_percent: Self::CPU_RESERVATION_PERCENT_DEFAULT,
            ram_reservation_percent: Self::RAM_RESERVATION_PERCENT_DEFAULT,
        }
    }
}

/// A production task's reservation under the usage model.
fn reservation(limits: &Resources, cpu_percent: u32, ram_percent: u32) -> Resources {
    let share = |value: u64, percent: u32| {
        let scaled = u128::from(value) * u128::from(percent.min(100)) / 100;
        u64::try_from(scaled).unwrap_or(value)
    };
    Resources {
        cpu_millis: share(limits.cpu_millis, cpu_percent),
        ram_bytes: share(limits.ram_bytes, ram_percent),
        ..*limits
    }
}

/// Puts production tasks first, keeping the order within each group; returns how many are
/// production.
pub fn production_first(pending: &mut [PendingTask]) -> usize {
    pending.sort_by_key(|t| !Band::of(t.priority).is_prod());
    pending
        .iter()
        .take_while(|t| Band::of(t.priority).is_prod())
        .count()
}

/// Tasks left pending when `pending` (production first: its first `prod_count` tasks) is
/// placed on an empty cell of `machines`.
pub fn pending_after_placing(
    machines: &[MachineInfo],
    pending: &[PendingTask],
    prod_count: usize,
    config: &PlacementConfig,
    charging: Charging,
    seed: u64,
) -> usize {
    let Charging::Reclaim {
        cpu_reservation_percent,
        ram_reservation_percent,
    } = charging
    else {
        return pending_after(&place(machines, pending, config, seed));
    };
    let (prod, non_prod) = pending.split_at(prod_count.min(pending.len()));
    let first = place(machines, prod, config, seed);
    let limits: HashMap<&TaskId, &Resources> = prod.iter().map(|t| (&t.id, &t.limits)).collect();
    let mut reserved: HashMap<&str, Resources> = HashMap::new();
    for placement in &first.placements {
        if let Some(limits) = limits.get(&placement.task) {
            *reserved.entry(placement.machine.as_str()).or_default() +=
                reservation(limits, cpu_reservation_percent, ram_reservation_percent);
        }
    }
    let shrunk: Vec<MachineInfo> = machines
        .iter()
        .map(|m| {
            let mut m = m.clone();
            if let Some(reserved) = reserved.get(m.name.as_str()) {
                m.capacity = m.capacity.saturating_sub(reserved);
            }
            m
        })
        .collect();
    let second = place(&shrunk, non_prod, config, seed);
    pending_after(&first) + pending_after(&second)
}
