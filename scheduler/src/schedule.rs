//! `schedule`: the pure placement function. Same view, pending tasks, config and seed give
//! the same plan.

use crate::class::{ClassId, Classes};
use crate::feasibility::{self, Infeasible};
use crate::order::queue_order;
use crate::plan::{ConstraintFailure, Placement, Plan, UnplacedReason, Victim};
use crate::scoring::{self, FitPolicy, Score};
use crate::view::{CellView, MachineView, PendingTask};
use crate::work::MachineWork;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;

/// Default of `PlacementConfig::tasks_max`.
pub const TASKS_PER_SCHEDULE_MAX: usize = 10_000;
/// Default of `PlacementConfig::machines_examined_max`.
pub const MACHINES_EXAMINED_MAX: usize = 10_000;
/// Default of `PlacementConfig::feasible_candidates_max`.
pub const FEASIBLE_CANDIDATES_MAX: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementConfig {
    /// Most pending tasks considered in one call; the rest are counted in `Plan::deferred`.
    pub tasks_max: usize,
    /// Most machines examined for one task (relaxed randomization: never the whole of a
    /// large cell).
    pub machines_examined_max: usize,
    /// Stop examining once this many feasible machines were found and take the best.
    pub feasible_candidates_max: usize,
    pub fit_policy: FitPolicy,
}

impl PlacementConfig {
    pub fn new() -> Self {
        PlacementConfig {
            tasks_max: TASKS_PER_SCHEDULE_MAX,
            machines_examined_max: MACHINES_EXAMINED_MAX,
            feasible_candidates_max: FEASIBLE_CANDIDATES_MAX,
            fit_policy: FitPolicy::default(),
        }
    }
}

impl Default for PlacementConfig {
    fn default() -> Self {
        PlacementConfig::new()
    }
}

/// Places `pending` on the machines of `view`, in queue order (priority, then round-robin
/// across owners). Machines are examined in an order drawn from `seed`; each placement is
/// accounted before the next task is considered, so a plan never overcommits a machine.
///
/// When a task of an equivalence class fits nowhere, the remaining tasks of that class in
/// this call are reported unplaced with the same reason without another scan (the plan only
/// fills machines further; the next call retries them).
pub fn schedule(
    view: &CellView,
    pending: &[PendingTask],
    config: &PlacementConfig,
    seed: u64,
) -> Plan {
    let machines: Vec<&MachineView> = view.machines().collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut machine_order: Vec<usize> = (0..machines.len()).collect();
    machine_order.shuffle(&mut rng);
    let examine_max = config.machines_examined_max.min(machines.len());

    let mut works: Vec<Option<MachineWork<'_>>> = vec![None; machines.len()];
    let mut classes = Classes::default();
    let mut failed_classes: HashMap<ClassId, UnplacedReason> = HashMap::new();
    let queue = queue_order(pending);
    let mut plan = Plan::default();

    for (n, &i) in queue.iter().enumerate() {
        if n >= config.tasks_max {
            plan.deferred = queue.len() - n;
            break;
        }
        let task = &pending[i];
        let class_id = classes.class_of(task);
        if let Some(reason) = failed_classes.get(&class_id) {
            plan.unplaced.push((task.id.clone(), reason.clone()));
            continue;
        }
        let class = classes.get(class_id);
        let start = if machines.is_empty() {
            0
        } else {
            rng.random_range(0..machines.len())
        };

        let mut best: Option<(Score, usize, feasibility::Fit)> = None;
        let mut feasible = 0usize;
        let mut reason = UnplacedReason {
            machines_total: machines.len(),
            ..UnplacedReason::default()
        };
        let mut constraint_counts = vec![0usize; class.hard.len()];
        for k in 0..examine_max {
            let m = machine_order[(start + k) % machines.len()];
            reason.machines_examined += 1;
            let work = works[m].get_or_insert_with(|| MachineWork::new(view, machines[m]));
            match feasibility::check(work, class) {
                Ok(fit) => {
                    let score = scoring::score(work, class, &task.id.job, &fit, config.fit_policy);
                    if best.as_ref().is_none_or(|(b, _, _)| score > *b) {
                        best = Some((score, m, fit));
                    }
                    feasible += 1;
                    if feasible >= config.feasible_candidates_max {
                        break;
                    }
                }
                Err(Infeasible::NotUp) => reason.machines_not_up += 1,
                Err(Infeasible::Constraints(failed)) => {
                    for c in failed {
                        constraint_counts[c] += 1;
                    }
                }
                Err(Infeasible::Resources(dimensions)) => {
                    for d in dimensions {
                        *reason.resource_shortfalls.entry(d).or_insert(0) += 1;
                    }
                }
            }
        }

        let chosen = best.and_then(|(_, m, fit)| works[m].as_mut().map(|work| (m, fit, work)));
        match chosen {
            Some((m, fit, work)) => {
                let preempt = fit
                    .victims
                    .iter()
                    .map(|&v| Victim {
                        task: work.evictable[v].id.clone(),
                        incarnation: work.evictable[v].incarnation,
                        priority: work.evictable[v].priority,
                    })
                    .collect();
                work.place(&task.id.job, class.limits, &fit.victims);
                plan.placements.push(Placement {
                    task: task.id.clone(),
                    incarnation: task.incarnation,
                    machine: machines[m].name.clone(),
                    machine_version: machines[m].version,
                    preempt,
                });
            }
            None => {
                reason.constraint_failures = class
                    .hard
                    .iter()
                    .zip(constraint_counts)
                    .filter(|(_, machines)| *machines > 0)
                    .map(|(c, machines)| ConstraintFailure {
                        constraint: c.constraint.clone(),
                        machines,
                    })
                    .collect();
                failed_classes.insert(class_id, reason.clone());
                plan.unplaced.push((task.id.clone(), reason));
            }
        }
    }
    plan
}
