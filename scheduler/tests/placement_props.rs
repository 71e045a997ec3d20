//! Properties of `schedule` over random cells: hard constraints hold, no machine's prod
//! limits (nor its reservations, nor its tasks' ports) exceed its capacity, preemption follows the band rules and
//! does not cascade, a seed replays its plan (warm cache or not), and the three speed-ups
//! change speed, not validity.

mod common;

use borg_model::priority::may_preempt;
use borg_model::Band;
use borg_model::{ConstraintOp, Resources, TaskId};
use common::*;
use proptest::prelude::*;
use scheduler::constraint::CompiledConstraint;
use scheduler::{
    schedule, schedule_with_cache, CellView, FitPolicy, JobView, PendingTask, Placement,
    PlacementConfig, Plan, ScoreCache,
};
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
    let machines = prop::collection::vec((1u64..8, 1u64..8, 0..RACKS.len(), 0u32..5), 1..8);
    let running = prop::collection::vec(
        (
            0..PRIORITIES.len(),
            1u64..4,
            1u64..4,
            0usize..8,
            1u64..=2,
            0u32..3,
        ),
        0..12,
    );
    let pending = prop::collection::vec(
        (
            0..PRIORITIES.len(),
            1u64..5,
            1u64..5,
            prop::collection::vec(arb_constraint(), 0..3),
            0..3usize,
            0u32..3,
        ),
        1..25,
    );
    (machines, running, pending).prop_map(|(machines, running, pending)| {
        let mut view = CellView::new();
        let mut free: Vec<(Resources, u32)> = Vec::new();
        for (i, (cpu, ram, rack, ports)) in machines.iter().enumerate() {
            let mut m = machine(
                &format!("m{i}"),
                cpu * 100,
                ram * 100,
                &[("rack", RACKS[*rack])],
            );
            m.port_capacity = *ports;
            free.push((m.capacity, m.port_capacity));
            view.upsert_machine(m);
        }
        // Running tasks only where they fit, so the starting cell is within capacity.
        for (j, (p, cpu, ram, m, reserve_halves, ports)) in running.into_iter().enumerate() {
            let m = m % free.len();
            let limits = Resources::new(cpu * 100, ram * 100);
            let (room, room_ports) = free[m];
            if !limits.fits_in(&room) || ports > room_ports {
                continue;
            }
            free[m] = (room.saturating_sub(&limits), room_ports - ports);
            let name = format!("run{j}");
            let mut job = running_job(&name, PRIORITIES[p], limits, &[&format!("m{m}")]);
            job.ports = ports;
            view.upsert_job(job);
            // Some tasks reserve half their limits (reclaimed for non-prod work).
            let reservation = Resources::new(cpu * 50 * reserve_halves, ram * 50 * reserve_halves);
            view.set_reservation(&format!("m{m}"), &TaskId::new(name, 0), reservation);
        }
        let pending = pending
            .into_iter()
            .enumerate()
            .map(
                |(i, (p, cpu, ram, constraints, owner, ports))| PendingTask {
                    ports,
                    ..common::pending(
                        &format!("job{}", i % 5),
                        i as u32,
                        &format!("owner{owner}"),
                        PRIORITIES[p],
                        Resources::new(cpu * 100, ram * 100),
                        constraints,
                    )
                },
            )
            .collect();
        Cell { view, pending }
    })
}

fn running_priority(view: &CellView, task: &TaskId) -> Option<u32> {
    view.job(&task.job).map(|j: &JobView| j.priority)
}

/// The policy and speed-up switches drawn by a test.
fn config_of(policy: usize, speedups: [bool; 3], candidates: usize) -> PlacementConfig {
    let mut config = PlacementConfig::new();
    config.feasible_candidates_max = candidates;
    config.fit_policy = [FitPolicy::Hybrid, FitPolicy::BestFit, FitPolicy::WorstFit][policy];
    config.equivalence_classes = speedups[0];
    config.score_cache = speedups[1];
    config.relaxed_randomization = speedups[2];
    config
}

/// Checks the plan against the cell; the error names the broken rule.
fn check_plan(cell: &Cell, plan: &Plan) -> Result<(), TestCaseError> {
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

    // Per machine: prod limits, and reservations (plan placements at their limits).
    let mut prod_limits: BTreeMap<String, Resources> = BTreeMap::new();
    let mut reserved: BTreeMap<String, Resources> = BTreeMap::new();
    let mut ports: BTreeMap<String, u32> = BTreeMap::new();
    for m in cell.view.machines() {
        ports.insert(m.name.clone(), cell.view.ports_used(&m.name));
        let prod = cell
            .view
            .placed_on(&m.name)
            .filter(|t| Band::of(t.priority).is_prod())
            .fold(Resources::ZERO, |sum, t| sum + t.limits);
        prod_limits.insert(m.name.clone(), prod);
        reserved.insert(m.name.clone(), cell.view.reserved(m));
    }
    let mut victims = BTreeSet::new();
    for p in &plan.placements {
        let task = by_id[&p.task];
        let machine = cell
            .view
            .machine(&p.machine)
            .expect("placed on a known machine");
        // Hard constraints hold.
        for c in task.constraints.iter().filter(|c| !c.soft) {
            prop_assert!(
                CompiledConstraint::new(c).matches(&machine.attributes),
                "{} on {} violates {:?}",
                p.task,
                p.machine,
                c
            );
        }
        // Victims are on that machine, evictable by the band rules, and evicted once.
        for v in &p.preempt {
            prop_assert!(victims.insert(v.task.clone()), "{} evicted twice", v.task);
            let placed = cell.view.placed_on(&p.machine).find(|t| t.id == v.task);
            prop_assert!(placed.is_some(), "{} is not on {}", v.task, p.machine);
            let victim = placed.expect("checked");
            let victim_priority = running_priority(&cell.view, &v.task).expect("victim's job");
            prop_assert!(
                !Band::of(victim_priority).is_prod(),
                "{} at {} is prod: never preempted",
                v.task,
                victim_priority
            );
            prop_assert!(
                may_preempt(task.priority, victim_priority),
                "{} at {} may not evict {} at {}",
                p.task,
                task.priority,
                v.task,
                victim_priority
            );
            let r = reserved.get_mut(&p.machine).expect("machine");
            *r = r.saturating_sub(&victim.reservation);
            let held = ports.get_mut(&p.machine).expect("machine");
            *held = held.saturating_sub(victim.ports);
        }
        *ports.get_mut(&p.machine).expect("machine") += task.ports;
        if Band::of(task.priority).is_prod() {
            *prod_limits.get_mut(&p.machine).expect("machine") += task.limits;
        }
        *reserved.get_mut(&p.machine).expect("machine") += task.limits;
    }
    for m in cell.view.machines() {
        prop_assert!(
            prod_limits[&m.name].fits_in(&m.capacity),
            "{} prod overcommitted: {} of {}",
            m.name,
            prod_limits[&m.name],
            m.capacity
        );
        prop_assert!(
            reserved[&m.name].fits_in(&m.capacity),
            "{} over capacity by reservations: {} of {}",
            m.name,
            reserved[&m.name],
            m.capacity
        );
        prop_assert!(
            ports[&m.name] <= m.port_capacity,
            "{} holds {} ports of {}",
            m.name,
            ports[&m.name],
            m.port_capacity
        );
    }
    Ok(())
}

/// The cell after the master committed `plan`: placed tasks run (each as a one-task job
/// named after it), victims are pending again at their priority.
fn apply(cell: &Cell, plan: &Plan) -> (Cell, BTreeMap<TaskId, TaskId>) {
    let mut view = cell.view.clone();
    let by_id: BTreeMap<&TaskId, &PendingTask> = cell.pending.iter().map(|t| (&t.id, t)).collect();
    let mut pending = Vec::new();
    // Victim (as it will be pending) → the task that evicted it.
    let mut evicted_by = BTreeMap::new();
    for Placement {
        task,
        machine,
        preempt,
        ..
    } in &plan.placements
    {
        let t = by_id[task];
        let name = format!("placed-{}-{}", task.job, task.index);
        for v in preempt {
            let job = view.job(&v.task.job).expect("victim's job").clone();
            view.remove_job(&v.task.job);
            pending.push(PendingTask {
                ports: job.ports,
                ..common::pending(&v.task.job, 0, &job.owner, job.priority, job.limits, vec![])
            });
            evicted_by.insert(
                TaskId::new(v.task.job.clone(), 0),
                TaskId::new(name.clone(), 0),
            );
        }
        let mut job = common::running_job(&name, t.priority, t.limits, &[machine.as_str()]);
        job.ports = t.ports;
        view.upsert_job(job);
    }
    (Cell { view, pending }, evicted_by)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn plans_are_valid(
        cell in arb_cell(),
        seed in any::<u64>(),
        policy in 0..3usize,
        candidates in 1usize..5,
    ) {
        let plan = schedule(&cell.view, &cell.pending, &config_of(policy, [true; 3], candidates), seed);
        check_plan(&cell, &plan)?;
    }

    #[test]
    fn the_speedups_change_speed_not_validity(
        cell in arb_cell(),
        seed in any::<u64>(),
        policy in 0..3usize,
        speedups in any::<[bool; 3]>(),
    ) {
        let config = config_of(policy, speedups, 2);
        let plan = schedule(&cell.view, &cell.pending, &config, seed);
        check_plan(&cell, &plan)?;
        // Whatever the switches, a task fits nowhere only if no machine could take it.
        let all_on = schedule(&cell.view, &cell.pending, &config_of(policy, [true; 3], 2), seed);
        prop_assert_eq!(plan.placements.is_empty(), all_on.placements.is_empty());
    }

    #[test]
    fn a_seed_replays_its_plan(cell in arb_cell(), seed in any::<u64>(), speedups in any::<[bool; 3]>()) {
        let config = config_of(0, speedups, 3);
        let fresh = schedule(&cell.view, &cell.pending, &config, seed);
        prop_assert_eq!(&fresh, &schedule(&cell.view, &cell.pending, &config, seed));
        // A cache warmed by other calls changes nothing.
        let mut cache = ScoreCache::new(config.score_cache_entries_max);
        schedule_with_cache(&cell.view, &cell.pending, &config, seed.wrapping_add(1), &mut cache);
        prop_assert_eq!(&fresh, &schedule_with_cache(&cell.view, &cell.pending, &config, seed, &mut cache));
    }

    #[test]
    fn preemption_does_not_cascade(cell in arb_cell(), seed in any::<u64>()) {
        let config = PlacementConfig::new();
        let first = schedule(&cell.view, &cell.pending, &config, seed);
        let (next, evicted_by) = apply(&cell, &first);
        let second = schedule(&next.view, &next.pending, &config, seed);
        check_plan(&next, &second)?;
        for p in &second.placements {
            for v in &p.preempt {
                // A victim never evicts the task that evicted it.
                prop_assert!(evicted_by.get(&p.task) != Some(&v.task),
                    "{} evicted {} which had evicted it", p.task, v.task);
            }
        }
    }
}
