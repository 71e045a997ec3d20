//! Properties of `schedule` over random cells: hard constraints hold, no machine ends up
//! over capacity, preemption follows the band rules, and a seed replays its plan.

mod common;

use borg_model::priority::may_preempt;
use borg_model::{ConstraintOp, Resources, TaskId};
use common::*;
use proptest::prelude::*;
use scheduler::constraint::CompiledConstraint;
use scheduler::{schedule, CellView, FitPolicy, JobView, PendingTask, PlacementConfig};
use std::collections::{BTreeMap, BTreeSet};

const RACKS: [&str; 3] = ["r0", "r1", "r2"];
const PRIORITIES: [u32; 6] = [0, 50, 100, 150, 200, 300];

#[derive(Debug, Clone)]
struct Cell {
    view: CellView,
    pending: Vec<PendingTask>,
}

fn arb_constraint() -> impl Strategy<Value = borg_model::Constraint> {
    (0..RACKS.len(), 0..4usize, any::<bool>()).prop_map(|(rack, op, soft)| {
        let op = [
            ConstraintOp::Eq,
            ConstraintOp::Ne,
            ConstraintOp::In,
            ConstraintOp::Regex,
        ][op];
        let values = match op {
            ConstraintOp::In => vec![RACKS[rack].to_string(), RACKS[(rack + 1) % 3].to_string()],
            ConstraintOp::Regex => vec![format!("^{}$", RACKS[rack])],
            _ => vec![RACKS[rack].to_string()],
        };
        borg_model::Constraint {
            attribute: "rack".into(),
            op,
            values,
            soft,
        }
    })
}

fn arb_cell() -> impl Strategy<Value = Cell> {
    let machines = prop::collection::vec((1u64..8, 1u64..8, 0..RACKS.len()), 1..8);
    let running = prop::collection::vec((0..PRIORITIES.len(), 1u64..4, 1u64..4, 0usize..8), 0..12);
    let pending = prop::collection::vec(
        (
            0..PRIORITIES.len(),
            1u64..5,
            1u64..5,
            prop::collection::vec(arb_constraint(), 0..3),
            0..3usize,
        ),
        1..25,
    );
    (machines, running, pending).prop_map(|(machines, running, pending)| {
        let mut view = CellView::new();
        let mut free: Vec<Resources> = Vec::new();
        for (i, (cpu, ram, rack)) in machines.iter().enumerate() {
            let m = machine(
                &format!("m{i}"),
                cpu * 100,
                ram * 100,
                &[("rack", RACKS[*rack])],
            );
            free.push(m.capacity);
            view.upsert_machine(m);
        }
        // Running tasks only where they fit, so the starting cell is within capacity.
        for (j, (p, cpu, ram, m)) in running.into_iter().enumerate() {
            let m = m % free.len();
            let limits = Resources::new(cpu * 100, ram * 100);
            if !limits.fits_in(&free[m]) {
                continue;
            }
            free[m] = free[m].saturating_sub(&limits);
            view.upsert_job(running_job(
                &format!("run{j}"),
                PRIORITIES[p],
                limits,
                &[&format!("m{m}")],
            ));
        }
        let pending = pending
            .into_iter()
            .enumerate()
            .map(|(i, (p, cpu, ram, constraints, owner))| {
                common::pending(
                    &format!("job{}", i % 5),
                    i as u32,
                    &format!("owner{owner}"),
                    PRIORITIES[p],
                    Resources::new(cpu * 100, ram * 100),
                    constraints,
                )
            })
            .collect();
        Cell { view, pending }
    })
}

fn running_priority(view: &CellView, task: &TaskId) -> Option<u32> {
    view.job(&task.job).map(|j: &JobView| j.priority)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn plans_are_valid(cell in arb_cell(), seed in any::<u64>(), worst in any::<bool>(), candidates in 1usize..5) {
        let mut config = PlacementConfig::new();
        config.feasible_candidates_max = candidates;
        if worst {
            config.fit_policy = FitPolicy::WorstFit;
        }
        let plan = schedule(&cell.view, &cell.pending, &config, seed);
        let by_id: BTreeMap<&TaskId, &PendingTask> = cell.pending.iter().map(|t| (&t.id, t)).collect();

        // Every pending task is accounted for exactly once.
        let mut seen = BTreeSet::new();
        for p in &plan.placements {
            prop_assert!(seen.insert(p.task.clone()), "{} placed twice", p.task);
        }
        for (t, _) in &plan.unplaced {
            prop_assert!(seen.insert(t.clone()), "{} both placed and unplaced", t);
        }
        prop_assert_eq!(seen.len() + plan.deferred, cell.pending.len());

        let mut allocated: BTreeMap<String, Resources> = BTreeMap::new();
        for m in cell.view.machines() {
            allocated.insert(m.name.clone(), cell.view.allocated(m));
        }
        let mut victims = BTreeSet::new();
        for p in &plan.placements {
            let task = by_id[&p.task];
            let machine = cell.view.machine(&p.machine).expect("placed on a known machine");
            // Hard constraints hold.
            for c in task.constraints.iter().filter(|c| !c.soft) {
                prop_assert!(CompiledConstraint::new(c).matches(&machine.attributes),
                    "{} on {} violates {:?}", p.task, p.machine, c);
            }
            // Victims are on that machine, evictable by the band rules, and evicted once.
            for v in &p.preempt {
                prop_assert!(victims.insert(v.task.clone()), "{} evicted twice", v.task);
                prop_assert!(cell.view.placed_on(&p.machine).any(|t| t.id == v.task));
                let victim_priority = running_priority(&cell.view, &v.task).expect("victim's job");
                prop_assert!(may_preempt(task.priority, victim_priority),
                    "{} at {} may not evict {} at {}", p.task, task.priority, v.task, victim_priority);
                let limits = cell.view.job(&v.task.job).expect("victim's job").limits;
                let a = allocated.get_mut(&p.machine).expect("machine");
                *a = a.saturating_sub(&limits);
            }
            let a = allocated.get_mut(&p.machine).expect("machine");
            *a += task.limits;
        }
        // No machine ends over capacity.
        for m in cell.view.machines() {
            prop_assert!(allocated[&m.name].fits_in(&m.capacity),
                "{} overcommitted: {} of {}", m.name, allocated[&m.name], m.capacity);
        }
    }

    #[test]
    fn a_seed_replays_its_plan(cell in arb_cell(), seed in any::<u64>()) {
        let config = PlacementConfig::new();
        prop_assert_eq!(
            schedule(&cell.view, &cell.pending, &config, seed),
            schedule(&cell.view, &cell.pending, &config, seed)
        );
    }
}
