//! `schedule`: the pure placement function. Same view, pending tasks, config and seed give
//! the same plan (with or without a warm score cache).

use crate::alloc::AllocFit;
use crate::cache::{ScoreCache, Verdict, SCORE_CACHE_ENTRIES_MAX};
use crate::class::{ClassId, Classes, TaskClass};
use crate::feasibility;
use crate::feasibility::Infeasible;
use crate::order::{queue_order_by, QueueOrder};
use crate::plan::{ConstraintFailure, Placement, Plan, UnplacedReason, Victim};
use crate::scoring::{self, FitPolicy, Score};
use crate::spread::Spread;
use crate::view::{CellView, MachineRef, PendingTask};
use crate::work::MachineWork;
use borg_model::{Band, Constraint, Priority, Resources, TaskId};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use feasibility::DIMENSIONS;

/// Default of `PlacementConfig::tasks_max`.
pub const TASKS_PER_SCHEDULE_MAX: usize = 10_000;
/// Default of `PlacementConfig::machines_examined_max`. On the Google 2011 cell (12.5k
/// machines, 144k tasks) 2,000 leaves 35 more tasks pending than 10,000 (53.6k in all) in a
/// full-cell plan (see sim/benches/scheduler.rs): a task none of whose sample fits goes on
/// through the cell, so only the choice among feasible machines differs.
pub const MACHINES_EXAMINED_MAX: usize = 2_000;
/// Default of `PlacementConfig::feasible_candidates_max`.
pub const FEASIBLE_CANDIDATES_MAX: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementConfig {
    /// Most pending tasks considered in one call; the rest are counted in `Plan::deferred`.
    pub tasks_max: usize,
    /// Most machines examined for one task under relaxed randomization when one of them
    /// fits. A task none of whose first `machines_examined_max` machines fits goes on
    /// through the rest of the cell until one does, so a task is left unplaced only when no
    /// machine of the cell fits it (a rare fit is found in the task's own round, not by
    /// later retries with another sample).
    pub machines_examined_max: usize,
    /// Relaxed randomization: stop examining once this many feasible machines were found
    /// and take the best.
    pub feasible_candidates_max: usize,
    pub fit_policy: FitPolicy,
    /// Speed-up: tasks with equal requirements share feasibility work, and once one fits
    /// nowhere the rest of its class is not tried again in the call.
    pub equivalence_classes: bool,
    /// Speed-up: verdicts per (machine, class) are cached until either changes.
    pub score_cache: bool,
    /// Speed-up: examine machines in a seeded random order and stop after
    /// `feasible_candidates_max` feasible ones (off: examine every machine).
    pub relaxed_randomization: bool,
    /// Bound of the score cache (verdicts); it is emptied when full.
    pub score_cache_entries_max: usize,
    /// Order of tasks within a priority: Borg's round-robin across owners by default.
    pub queue_order: QueueOrder,
}

impl PlacementConfig {
    pub fn new() -> Self {
        PlacementConfig {
            tasks_max: TASKS_PER_SCHEDULE_MAX,
            machines_examined_max: MACHINES_EXAMINED_MAX,
            feasible_candidates_max: FEASIBLE_CANDIDATES_MAX,
            fit_policy: FitPolicy::default(),
            equivalence_classes: true,
            score_cache: true,
            relaxed_randomization: true,
            score_cache_entries_max: SCORE_CACHE_ENTRIES_MAX,
            queue_order: QueueOrder::default(),
        }
    }

    /// The same with all three speed-ups switched off (for comparison and tests).
    pub fn without_speedups(mut self) -> Self {
        self.equivalence_classes = false;
        self.score_cache = false;
        self.relaxed_randomization = false;
        self
    }
}

impl Default for PlacementConfig {
    fn default() -> Self {
        PlacementConfig::new()
    }
}

/// Places `pending` on the machines of `view` with a fresh score cache. See
/// `schedule_with_cache`.
pub fn schedule(
    view: &CellView,
    pending: &[PendingTask],
    config: &PlacementConfig,
    seed: u64,
) -> Plan {
    let mut cache = ScoreCache::new(config.score_cache_entries_max);
    schedule_with_cache(view, pending, config, seed, &mut cache)
}

/// Places `pending` on the machines of `view`, in queue order (priority, then round-robin
/// across owners or as `config.queue_order` says). Machines are examined in an order drawn
/// from `seed`; each placement is accounted before the next task is considered, so a plan
/// never overcommits a machine.
/// `cache` carries verdicts from earlier calls (it changes speed, never the plan).
///
/// When a task of an equivalence class fits nowhere, the remaining tasks of that class in
/// this call are reported unplaced with the same reason without another scan (the plan only
/// fills machines further; the next call retries them).
pub fn schedule_with_cache(
    view: &CellView,
    pending: &[PendingTask],
    config: &PlacementConfig,
    seed: u64,
    cache: &mut ScoreCache,
) -> Plan {
    schedule_among(view, pending, config, seed, cache, None)
}

/// `schedule_with_cache` with the candidates limited to the machines named in `among` (all
/// machines when `None`; names not in the view are ignored). For retrying tasks that fit
/// nowhere when last tried once room appeared on a few known machines: examining the cell
/// at random would likely miss them. With `None` the plan is `schedule_with_cache`'s.
pub fn schedule_among(
    view: &CellView,
    pending: &[PendingTask],
    config: &PlacementConfig,
    seed: u64,
    cache: &mut ScoreCache,
    among: Option<&[String]>,
) -> Plan {
    schedule_among_except(view, pending, config, seed, cache, among, &[])
}

/// `schedule_among` that never places on (nor evicts from) the machines named in `except`
/// (names not in the view are ignored). For planning while an earlier plan is being
/// committed: the view does not show that plan yet, so the machines it touches are left
/// to a later call. With `except` empty the plan is `schedule_among`'s.
pub fn schedule_among_except(
    view: &CellView,
    pending: &[PendingTask],
    config: &PlacementConfig,
    seed: u64,
    cache: &mut ScoreCache,
    among: Option<&[String]>,
    except: &[String],
) -> Plan {
    cache.begin_call(config.fit_policy, view.machine_set_generation());
    let machines: Vec<MachineRef<'_>> = view.machine_refs().collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Positions in `machines` of the named machines (`machines` is in name order,
    // `CellView::machines`), sorted, without duplicates.
    let positions_of = |names: &[String]| {
        let mut positions: Vec<usize> = names
            .iter()
            .filter_map(|name| {
                machines
                    .binary_search_by(|m| m.machine.name.as_str().cmp(name))
                    .ok()
            })
            .collect();
        positions.sort_unstable();
        positions.dedup();
        positions
    };
    // Positions in `machines`, in the order the scan walks them.
    let mut machine_order: Vec<usize> = match among {
        None => (0..machines.len()).collect(),
        Some(names) => positions_of(names),
    };
    if !except.is_empty() {
        let excepted = positions_of(except);
        machine_order.retain(|m| excepted.binary_search(m).is_err());
    }
    if config.relaxed_randomization {
        machine_order.shuffle(&mut rng);
    }
    let scanned = machine_order.len();
    let examine_max = if config.relaxed_randomization {
        config.machines_examined_max.min(scanned)
    } else {
        scanned
    };
    let candidates_max = if config.relaxed_randomization {
        config.feasible_candidates_max
    } else {
        usize::MAX
    };

    // By position in `machine_order` (see the scan below).
    let mut works = Works::new(scanned);
    let mut summaries: Vec<Option<Summary>> = vec![None; scanned];
    let mut classes = Classes::new(config.equivalence_classes);
    let mut slots: HashMap<ClassId, usize> = HashMap::new();
    let mut failed_classes: HashMap<ClassId, UnplacedReason> = HashMap::new();
    let mut failed_shapes = FailedShapes::default();
    let mut known_infeasible: HashMap<ClassId, KnownInfeasible> = HashMap::new();
    let mut spread = Spread::default();
    // Tasks this plan evicts (they no longer count for their job's spreading).
    let mut evicted: HashSet<TaskId> = HashSet::new();
    let mut allocs = AllocFit::default();
    // Only the largest-first order reads the cell's capacity.
    let capacity = match config.queue_order {
        QueueOrder::LargestFirst => machines
            .iter()
            .fold(Resources::ZERO, |sum, m| sum + m.machine.capacity),
        QueueOrder::RoundRobin => Resources::ZERO,
    };
    let queue = queue_order_by(pending, config.queue_order, &capacity);
    let mut plan = Plan::default();

    for (n, &i) in queue.iter().enumerate() {
        if n >= config.tasks_max {
            plan.deferred = queue.len() - n;
            break;
        }
        let task = &pending[i];
        if let Some(set) = view.job(&task.id.job).and_then(|j| j.alloc_set.as_deref()) {
            place_in_alloc(view, task, set, &mut allocs, &mut plan);
            continue;
        }
        let class_id = classes.class_of(task, &view.package_of(&task.id.job));
        if let Some(reason) = failed_classes.get(&class_id) {
            plan.unplaced.push((task.id.clone(), reason.clone()));
            continue;
        }
        let class = classes.get(class_id);
        if config.equivalence_classes {
            if let Some(reason) = failed_shapes.dominating(class) {
                let reason = reason.clone();
                failed_classes.insert(class_id, reason.clone());
                plan.unplaced.push((task.id.clone(), reason));
                continue;
            }
        }
        let slot = config.score_cache.then(|| {
            *slots
                .entry(class_id)
                .or_insert_with(|| cache.slot(&class.key))
        });
        let job_slot = spread.prepare(view, &task.id.job, &machines, &evicted);
        let start = if scanned == 0 || !config.relaxed_randomization {
            0
        } else {
            rng.random_range(0..scanned)
        };
        // Machines an earlier task of the class found infeasible in this call (and the plan
        // has not evicted from since). Only with equivalence classes.
        let mut skip = config.equivalence_classes.then(|| {
            known_infeasible
                .entry(class_id)
                .or_insert_with(|| KnownInfeasible::new(scanned))
        });
        let mut skipped = Vec::new();

        let mut best: Option<(Score, usize, feasibility::Fit)> = None;
        let mut feasible = 0usize;
        let mut reason = UnplacedReason {
            machines_total: machines.len(),
            ..UnplacedReason::default()
        };
        let mut constraint_counts = vec![0usize; class.hard.len()];
        let mut shortfalls = [0usize; DIMENSIONS.len()];
        let mut examined = 0usize;
        let prefilter = class.hard.is_empty();
        for k in 0..scanned {
            if k >= examine_max && feasible > 0 {
                break;
            }
            // Per-machine state is indexed by position in `machine_order` (`p`), so that the
            // scan walks memory in order; `m` indexes the view's machines.
            let p = (start + k) % scanned;
            let m = machine_order[p];
            reason.machines_examined += 1;
            if skip.as_ref().is_some_and(|known| known.contains(p)) {
                skipped.push(p);
                continue;
            }
            examined += 1;
            // A machine this call has not touched, at the view generation an earlier call
            // saw: its summary and this class's verdict there may be cached, and need no
            // `MachineWork` (the reasons below build it when they count it).
            let unchanged_generation =
                (config.score_cache && !works.has(p)).then(|| machines[m].generation());
            if let (Some(generation), None) = (unchanged_generation, summaries[p]) {
                summaries[p] = cache.summary(u32::try_from(m).unwrap_or(u32::MAX), generation);
            }
            if let (Some(generation), Some(s)) = (unchanged_generation, slot) {
                let position = u32::try_from(m).unwrap_or(u32::MAX);
                if let Some(Err(infeasible)) = cache.get_unchanged(s, position, generation) {
                    if let Some(known) = skip.as_mut() {
                        known.insert(p);
                    }
                    count_infeasible(
                        infeasible,
                        &mut reason,
                        &mut constraint_counts,
                        &mut shortfalls,
                    );
                    continue;
                }
            }
            if prefilter {
                if let Some(short) = summaries[p].and_then(|s| s.short_of(class)) {
                    for (i, count) in shortfalls.iter_mut().enumerate() {
                        *count += usize::from(short & (1 << i) != 0);
                    }
                    if let Some(known) = skip.as_mut() {
                        known.insert(p);
                    }
                    continue;
                }
            }
            let work = works.get_or_insert_with(p, || MachineWork::of(machines[m]));
            // Kept current by `place` below; computed once per machine and call.
            if summaries[p].is_none() {
                let summary = Summary::of(work);
                summaries[p] = Some(summary);
                if config.score_cache && work.plan_changes == 0 {
                    cache.put_summary(
                        u32::try_from(m).unwrap_or(u32::MAX),
                        work.view_generation,
                        summary,
                    );
                }
            }
            let position = u32::try_from(m).unwrap_or(u32::MAX);
            // A verdict is worth caching only where computing it costs more than a lookup:
            // constraints to match or preemption to plan.
            let slot = slot.filter(|_| {
                !class.hard.is_empty() || !class.soft.is_empty() || !work.evictable.is_empty()
            });
            let cached = slot.and_then(|s| cache.get(s, position, work).cloned());
            let verdict = match cached {
                Some(verdict) => verdict,
                None => {
                    let verdict = evaluate(work, class, config.fit_policy);
                    if let Some(s) = slot {
                        cache.put(s, position, work, verdict.clone());
                    }
                    verdict
                }
            };
            match verdict {
                Ok((fit, mut score)) => {
                    score.same_job_on_machine = spread.on_machine(job_slot, m);
                    (score.same_job_in_rack, score.same_job_in_power) =
                        spread.counts(job_slot, work.domains);
                    if best.as_ref().is_none_or(|(b, _, _)| score > *b) {
                        best = Some((score, p, fit));
                    }
                    feasible += 1;
                    if feasible >= candidates_max {
                        break;
                    }
                }
                Err(infeasible) => {
                    if let Some(known) = skip.as_mut() {
                        known.insert(p);
                    }
                    count_infeasible(
                        &infeasible,
                        &mut reason,
                        &mut constraint_counts,
                        &mut shortfalls,
                    );
                }
            }
        }
        if best.is_none() {
            // Why the skipped machines do not fit, for the reason (rare: once per class).
            for &p in &skipped {
                let m = machine_order[p];
                let work = works.get_or_insert_with(p, || MachineWork::of(machines[m]));
                {
                    if let Err(infeasible) = evaluate(work, class, config.fit_policy) {
                        count_infeasible(
                            &infeasible,
                            &mut reason,
                            &mut constraint_counts,
                            &mut shortfalls,
                        );
                    }
                }
            }
        }

        plan.machines_examined += examined as u64;
        let chosen = best.and_then(|(_, p, fit)| works.get_mut(p).map(|work| (p, fit, work)));
        match chosen {
            Some((p, fit, work)) => {
                let preempt = fit
                    .victims
                    .iter()
                    .map(|&v| Victim {
                        task: work.evictable[v].id.clone(),
                        incarnation: work.evictable[v].incarnation,
                        priority: work.evictable[v].priority,
                    })
                    .collect();
                if !fit.victims.is_empty() {
                    // Evictions free room on the machine: any class may fit there again.
                    for known in known_infeasible.values_mut() {
                        known.remove(p);
                    }
                    for &v in &fit.victims {
                        let victim = &work.evictable[v].id;
                        spread.evict(&victim.job, machine_order[p]);
                        evicted.insert(victim.clone());
                    }
                }
                work.place(
                    &class.package,
                    task.priority,
                    class.limits,
                    class.ports,
                    &fit.victims,
                );
                spread.record(job_slot, machine_order[p], work.domains);
                summaries[p] = Some(Summary::of(work));
                plan.placements.push(Placement {
                    task: task.id.clone(),
                    incarnation: task.incarnation,
                    machine: machines[machine_order[p]].machine.name.clone(),
                    machine_version: machines[machine_order[p]].machine.version,
                    preempt,
                });
            }
            None => {
                reason.resource_shortfalls = DIMENSIONS
                    .iter()
                    .zip(shortfalls)
                    .filter(|(_, machines)| *machines > 0)
                    .map(|(&d, machines)| (d, machines))
                    .collect();
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
                if config.equivalence_classes {
                    failed_classes.insert(class_id, reason.clone());
                    failed_shapes.record(class, &reason);
                }
                plan.unplaced.push((task.id.clone(), reason));
            }
        }
    }
    plan
}

/// Places a task of a job in alloc set `set` in its alloc, or records why it waits.
fn place_in_alloc(
    view: &CellView,
    task: &PendingTask,
    set: &str,
    allocs: &mut AllocFit,
    plan: &mut Plan,
) {
    match allocs.place(view, task, set) {
        Ok(machine) => plan.placements.push(Placement {
            task: task.id.clone(),
            incarnation: task.incarnation,
            machine: machine.name.clone(),
            machine_version: machine.version,
            preempt: Vec::new(),
        }),
        Err(why) => plan.unplaced.push((
            task.id.clone(),
            UnplacedReason {
                machines_total: view.machine_count(),
                alloc: Some(why),
                ..UnplacedReason::default()
            },
        )),
    }
}

/// The call's `MachineWork`s by scan position, built on first need. An index per position
/// into a list of the works built: a call that builds few works (most online plans) does
/// not fill and free a work-sized slot per machine of the cell.
struct Works<'a> {
    at: Vec<u32>,
    works: Vec<MachineWork<'a>>,
}

impl<'a> Works<'a> {
    const NONE: u32 = u32::MAX;

    fn new(positions: usize) -> Self {
        Works {
            at: vec![Self::NONE; positions],
            works: Vec::new(),
        }
    }

    fn has(&self, p: usize) -> bool {
        self.at.get(p).is_some_and(|&i| i != Self::NONE)
    }

    fn get_mut(&mut self, p: usize) -> Option<&mut MachineWork<'a>> {
        let i = *self.at.get(p)?;
        self.works.get_mut(usize::try_from(i).ok()?)
    }

    fn get_or_insert_with(
        &mut self,
        p: usize,
        make: impl FnOnce() -> MachineWork<'a>,
    ) -> &mut MachineWork<'a> {
        if !self.has(p) {
            self.at[p] = u32::try_from(self.works.len()).unwrap_or(Self::NONE);
            self.works.push(make());
        }
        let i = self.at[p] as usize;
        &mut self.works[i]
    }
}

/// Machines on which a class was found infeasible in this call, as a bit set. Within a
/// call the plan only fills machines, except where it evicts (the machine is then removed
/// from every set), so the class's later tasks skip these machines without a lookup.
#[derive(Debug)]
struct KnownInfeasible {
    bits: Vec<u64>,
}

impl KnownInfeasible {
    fn new(machines: usize) -> Self {
        KnownInfeasible {
            bits: vec![0; machines.div_ceil(64)],
        }
    }

    fn remove(&mut self, m: usize) {
        if let Some(b) = self.bits.get_mut(m / 64) {
            *b &= !(1 << (m % 64));
        }
    }

    fn contains(&self, m: usize) -> bool {
        self.bits
            .get(m / 64)
            .is_some_and(|b| b & (1 << (m % 64)) != 0)
    }

    fn insert(&mut self, m: usize) {
        if let Some(b) = self.bits.get_mut(m / 64) {
            *b |= 1 << (m % 64);
        }
    }
}

/// Adds why a machine is infeasible to the counts of an unplaced reason.
fn count_infeasible(
    infeasible: &Infeasible,
    reason: &mut UnplacedReason,
    constraint_counts: &mut [usize],
    shortfalls: &mut [usize; DIMENSIONS.len()],
) {
    match infeasible {
        Infeasible::NotUp => reason.machines_not_up += 1,
        Infeasible::Constraints(failed) => {
            for &c in failed {
                if let Some(count) = constraint_counts.get_mut(c) {
                    *count += 1;
                }
            }
        }
        Infeasible::Resources(dimensions) => {
            for d in dimensions {
                if let Some(i) = DIMENSIONS.iter().position(|n| n == d) {
                    shortfalls[i] += 1;
                }
            }
        }
    }
}

/// A compact copy of what decides that a machine is too full, scanned before the machine's
/// `MachineWork` so that a full cell is rejected from a small, cache-friendly array.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Summary {
    up: bool,
    free_prod: Resources,
    free_non_prod: Resources,
    free_ports: u32,
    /// Lowest priority of a task that could be evicted (`None`: nothing runs).
    lowest_evictable: Option<Priority>,
}

impl Summary {
    fn of(work: &MachineWork<'_>) -> Self {
        Summary {
            up: work.up,
            free_prod: work.free(),
            free_non_prod: work.capacity.saturating_sub(&work.reserved),
            free_ports: work.free_ports(),
            lowest_evictable: work.evictable.first().map(|t| t.priority),
        }
    }

    /// The dimensions short (as `feasibility::short_mask` bits) for a class without hard
    /// constraints when the machine is up, the class does not fit outright and may preempt
    /// nothing here: exactly the verdict `feasibility::check` would give. `None`: ask
    /// `check`.
    fn short_of(&self, class: &TaskClass) -> Option<u8> {
        if !self.up {
            return None;
        }
        let free = if Band::of(class.priority).is_prod() {
            self.free_prod
        } else {
            self.free_non_prod
        };
        if class.limits.fits_in(&free) && class.ports <= self.free_ports {
            return None;
        }
        if self
            .lowest_evictable
            .is_some_and(|lowest| borg_model::priority::may_preempt(class.priority, lowest))
        {
            return None;
        }
        Some(feasibility::short_mask(class, &free, self.free_ports))
    }
}

/// Classes that fit nowhere in this call, by constraints and package. A class that asks
/// at least as much in every dimension (ports included), at a priority no higher within the same kind
/// (prod or not: they are checked against different figures), fits nowhere either: it may
/// preempt no more and needs no less. Like the per-class shortcut, this ignores room that
/// later evictions in the same plan free; the next call retries.
#[derive(Debug, Default)]
struct FailedShapes {
    by_shape: HashMap<Shape, Vec<FailedClass>>,
}

/// Constraints and package: what a failure says nothing about beyond.
type Shape = (Arc<[Constraint]>, Arc<str>);

/// A class that fit nowhere: its priority, limits and ports, and why.
#[derive(Debug)]
struct FailedClass {
    priority: Priority,
    limits: Resources,
    ports: u32,
    reason: UnplacedReason,
}

impl FailedClass {
    /// Whether a class of `priority`, `limits` and `ports` fits nowhere either: it asks no
    /// less and may preempt no more.
    fn dominates(&self, priority: Priority, limits: &Resources, ports: u32) -> bool {
        self.priority >= priority
            && Band::of(self.priority).is_prod() == Band::of(priority).is_prod()
            && self.limits.fits_in(limits)
            && self.ports <= ports
    }
}

impl FailedShapes {
    fn dominating(&self, class: &TaskClass) -> Option<&UnplacedReason> {
        let failed = self.by_shape.get(&(
            Arc::clone(&class.key.constraints),
            Arc::clone(&class.package),
        ))?;
        failed
            .iter()
            .find(|f| f.dominates(class.priority, &class.limits, class.ports))
            .map(|f| &f.reason)
    }

    fn record(&mut self, class: &TaskClass, reason: &UnplacedReason) {
        let failed = self
            .by_shape
            .entry((
                Arc::clone(&class.key.constraints),
                Arc::clone(&class.package),
            ))
            .or_default();
        let new = FailedClass {
            priority: class.priority,
            limits: class.limits,
            ports: class.ports,
            reason: reason.clone(),
        };
        // Keep only the weakest failures: one that the new one dominates adds nothing.
        failed.retain(|f| !new.dominates(f.priority, &f.limits, f.ports));
        failed.push(new);
    }
}

/// The class's verdict on the machine as the plan has left it, with the class-level score.
pub fn evaluate(work: &MachineWork<'_>, class: &TaskClass, policy: FitPolicy) -> Verdict {
    let fit = feasibility::check(work, class)?;
    let package_local = !class.package.is_empty()
        && (work.plan_packages.contains(&class.package) || work.held.has_package(&class.package));
    let score = scoring::class_score(work, class, &fit, policy, package_local);
    Ok((fit, score))
}
