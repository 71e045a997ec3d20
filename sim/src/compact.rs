//! Cell compaction (Borg §5.1): how few machines can still run a workload. Each trial
//! removes machines in a random order (its seed), binary-searches the smallest remaining
//! cell on which the real scheduler leaves at most the picky allowance of tasks pending, and
//! the trials are summarised by a percentile with min and max, next to the packing lower
//! bound.

use crate::bound;
use crate::cell::{self, Charging};
use crate::trace::Workload;
use borg_model::{MachineInfo, Resources};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scheduler::{PendingTask, PlacementConfig, QueueOrder};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Borg's figures: 11 trials, the 90th percentile, 0.2% picky tasks.
pub const TRIALS_DEFAULT: usize = 11;
pub const PERCENTILE_DEFAULT: u32 = 90;
pub const PICKY_ALLOWANCE_PERCENT_DEFAULT: f64 = 0.2;
/// Most trials of one run (each holds a machine order in memory).
pub const TRIALS_MAX: usize = 1_000;
/// Most worker threads.
pub const THREADS_MAX: usize = 64;
/// By default a cell may grow to four times its size (by cloning machines) when the work does
/// not fit it: segregated or rounded-up workloads of a full cell need more machines.
pub const GROW_MAX_PERCENT_DEFAULT: u32 = 300;
/// Most growth: ten times the cell.
pub const GROW_MAX_PERCENT_MAX: u32 = 1_000;
/// Machines the scheduler examines for one task in a compaction: the whole cell (the scan
/// is bounded by the cell's size) until `feasible_candidates_max` feasible machines are
/// found. The online scheduler stops after 2,000 machines when one of them fits, to bound
/// its latency (a task none of whose 2,000 fits goes on through the cell there too).
pub const MACHINES_EXAMINED_MAX: usize = usize::MAX;
/// Feasible machines compared for one task in a compaction (the online scheduler: 50).
/// On the Google 2011 production tasks (5 trials, largest first) 100 packed within 1.57%
/// of each trial's bound against 1.70% with 50, for 13% more CPU.
pub const FEASIBLE_CANDIDATES_MAX: usize = 100;
/// The queue order of a compaction: the tasks of a snapshot have no meaningful arrival
/// order, so they are presented largest first within each priority (first-fit-decreasing).
/// On the Google 2011 production tasks (11 trials, hybrid) this packs within 1.7% of each
/// trial's bound, Borg's round-robin order within 2.9% (see docs/sim.md).
pub const QUEUE_ORDER_DEFAULT: QueueOrder = QueueOrder::LargestFirst;

#[derive(Debug, Clone, PartialEq)]
pub struct CompactConfig {
    pub trials: usize,
    /// Trial `i` uses seed `seed + i` for its machine order and its placement.
    pub seed: u64,
    /// Share of the tasks that may stay pending ("picky" tasks), in percent.
    pub picky_allowance_percent: f64,
    /// Percentile of the trials' results reported (nearest rank).
    pub percentile: u32,
    /// Trials run at once on std threads.
    pub threads: usize,
    /// How far the cell may grow beyond its machines, by cloning random ones, in percent.
    pub grow_max_percent: u32,
    pub placement: PlacementConfig,
    /// How non-production tasks are charged (limits, or reclaimed resources).
    pub charging: Charging,
}

impl CompactConfig {
    pub fn new() -> Self {
        CompactConfig {
            trials: TRIALS_DEFAULT,
            seed: 0,
            picky_allowance_percent: PICKY_ALLOWANCE_PERCENT_DEFAULT,
            percentile: PERCENTILE_DEFAULT,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            grow_max_percent: GROW_MAX_PERCENT_DEFAULT,
            placement: PlacementConfig {
                machines_examined_max: MACHINES_EXAMINED_MAX,
                feasible_candidates_max: FEASIBLE_CANDIDATES_MAX,
                queue_order: QUEUE_ORDER_DEFAULT,
                ..PlacementConfig::new()
            },
            charging: Charging::Limits,
        }
    }

    /// Clones a cell of `machines` may gain.
    pub fn clones_max(&self, machines: usize) -> usize {
        let percent = self.grow_max_percent.min(GROW_MAX_PERCENT_MAX) as usize;
        machines.saturating_mul(percent) / 100
    }

    /// Tasks allowed to stay pending out of `tasks`.
    pub fn allowance(&self, tasks: usize) -> usize {
        let share = (self.picky_allowance_percent / 100.0).clamp(0.0, 1.0);
        // Rounded down: the allowance never exceeds the stated share.
        (tasks as f64 * share).floor() as usize
    }
}

impl Default for CompactConfig {
    fn default() -> Self {
        CompactConfig::new()
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CompactError {
    #[error("the workload has no machines")]
    NoMachines,
    #[error("trials must be between 1 and {max}, not {trials}")]
    Trials { trials: usize, max: usize },
    #[error("a workload can be split into 2 to {max} cells, not {parts}")]
    Split { parts: usize, max: usize },
    #[error("percentile must be between 1 and 100, not {percentile}")]
    Percentile { percentile: u32 },
    #[error("the work does not fit even a cell grown to {machines} machines: {pending} tasks stay pending, {allowance} allowed (raise the picky allowance or check the tasks' requests)")]
    DoesNotFit {
        machines: usize,
        pending: usize,
        allowance: usize,
    },
}

/// What one trial found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialResult {
    pub trial: usize,
    pub seed: u64,
    /// Smallest cell (machines kept) on which the work fits.
    pub machines: usize,
    /// Lower bound for this trial's machine order (where the search started).
    pub prefix_bound: usize,
    /// Tasks left pending on that cell.
    pub pending: usize,
    pub schedule_calls: u32,
    pub elapsed_ms: u64,
}

impl TrialResult {
    /// The trial's cell over the bound for its own machine order: how far the packing is
    /// from covering the demand with the machines this trial could keep.
    pub fn ratio_to_prefix_bound(&self) -> f64 {
        self.machines as f64 / self.prefix_bound.max(1) as f64
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompactReport {
    pub machines_total: usize,
    pub tasks: usize,
    /// Tasks allowed to stay pending.
    pub allowance: usize,
    /// Shape-aware lower bound over any subset of the machines.
    pub lower_bound: usize,
    pub percentile: u32,
    /// The trials' result at `percentile`, and the extremes.
    pub machines_at_percentile: usize,
    pub machines_min: usize,
    pub machines_max: usize,
    /// Trials in trial order.
    pub trials: Vec<TrialResult>,
    pub elapsed_ms: u64,
}

impl CompactReport {
    /// Compacted size over the lower bound (1.0 is a perfect packing).
    pub fn ratio_to_bound(&self) -> f64 {
        self.machines_at_percentile as f64 / self.lower_bound.max(1) as f64
    }

    /// The trials' [`TrialResult::ratio_to_prefix_bound`] at `percentile`, min and max.
    pub fn prefix_ratios(&self) -> (f64, f64, f64) {
        let ratios: Vec<f64> = self
            .trials
            .iter()
            .map(TrialResult::ratio_to_prefix_bound)
            .collect();
        if ratios.is_empty() {
            return (0.0, 0.0, 0.0);
        }
        let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let max = ratios.iter().copied().fold(0.0, f64::max);
        (percentile(&ratios, self.percentile), min, max)
    }

    /// Compacted size as a share of the original cell, in percent.
    pub fn cell_percent(&self) -> f64 {
        self.machines_at_percentile as f64 * 100.0 / self.machines_total.max(1) as f64
    }
}

/// The nearest-rank percentile of `values` (which must not be empty).
pub fn percentile<T: Copy + PartialOrd>(values: &[T], percentile: u32) -> T {
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let rank = (f64::from(percentile.clamp(1, 100)) / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len().max(1)) - 1]
}

/// The smallest `k` in `lo..=hi` with `fits(k)`, by binary search, assuming `fits(hi)` and
/// that `fits` is monotone (a larger cell fits whatever a smaller one does).
pub fn search_minimum(mut lo: usize, mut hi: usize, mut fits: impl FnMut(usize) -> bool) -> usize {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    hi
}

/// The machines in the order trial `seed` keeps them (a cell of `k` machines is the first
/// `k`), followed by `clones` copies of random machines (named `NAME.cloneI`) for growth.
pub fn machine_order(machines: &[MachineInfo], clones: usize, seed: u64) -> Vec<MachineInfo> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<MachineInfo> = machines.to_vec();
    order.shuffle(&mut rng);
    if machines.is_empty() {
        return order;
    }
    for i in 0..clones {
        let mut clone = machines[rng.random_range(0..machines.len())].clone();
        clone.name = format!("{}.clone{i}", clone.name);
        order.push(clone);
    }
    order
}

/// The inputs shared by every trial of one run.
pub struct Compaction<'a> {
    machines: &'a [MachineInfo],
    /// Production tasks first (the first `prod_count`).
    pending: Vec<PendingTask>,
    prod_count: usize,
    demand: [u64; 4],
    allowance: usize,
    lower_bound: usize,
    config: &'a CompactConfig,
}

impl<'a> Compaction<'a> {
    pub fn new(workload: &'a Workload, config: &'a CompactConfig) -> Result<Self, CompactError> {
        if workload.machines.is_empty() {
            return Err(CompactError::NoMachines);
        }
        if !(1..=TRIALS_MAX).contains(&config.trials) {
            return Err(CompactError::Trials {
                trials: config.trials,
                max: TRIALS_MAX,
            });
        }
        if !(1..=100).contains(&config.percentile) {
            return Err(CompactError::Percentile {
                percentile: config.percentile,
            });
        }
        let requests: Vec<Resources> = workload.tasks.iter().map(|t| t.request).collect();
        let allowance = config.allowance(requests.len());
        let does_not_fit = CompactError::DoesNotFit {
            machines: workload.machines.len() + config.clones_max(workload.machines.len()),
            pending: requests.len(),
            allowance,
        };
        let clones_max = config.clones_max(workload.machines.len());
        let lower_bound = bound::lower_bound(&workload.machines, &requests, allowance, clones_max)
            .ok_or(does_not_fit)?;
        let mut pending = cell::pending_tasks(&workload.tasks);
        let prod_count = cell::production_first(&mut pending);
        Ok(Compaction {
            machines: &workload.machines,
            pending,
            prod_count,
            demand: bound::demand(&requests, allowance),
            allowance,
            lower_bound,
            config,
        })
    }

    pub fn lower_bound(&self) -> usize {
        self.lower_bound
    }

    pub fn allowance(&self) -> usize {
        self.allowance
    }

    /// Tasks left pending when the first `k` machines of `order` run the work.
    pub fn pending_on(&self, order: &[MachineInfo], k: usize, seed: u64) -> usize {
        cell::pending_after_placing(
            &order[..k.min(order.len())],
            &self.pending,
            self.prod_count,
            &self.config.placement,
            self.config.charging,
            seed,
        )
    }

    /// One trial: the smallest prefix of the trial's machine order that fits.
    pub fn trial(&self, trial: usize) -> Result<TrialResult, CompactError> {
        let started = Instant::now();
        let seed = self.config.seed.wrapping_add(trial as u64);
        let order = machine_order(
            self.machines,
            self.config.clones_max(self.machines.len()),
            seed,
        );
        let n = order.len();
        let does_not_fit = |pending| CompactError::DoesNotFit {
            machines: n,
            pending,
            allowance: self.allowance,
        };
        let refs: Vec<&MachineInfo> = order.iter().collect();
        let prefix_bound = bound::prefix_bound(&refs, &self.demand, self.lower_bound)
            .ok_or_else(|| does_not_fit(self.pending.len()))?;
        let mut calls = 0u32;
        let mut pending_at_best = None;
        let mut fits = |k: usize| {
            calls += 1;
            let pending = self.pending_on(&order, k, seed);
            let fits = pending <= self.allowance;
            if fits {
                pending_at_best = Some(pending);
            }
            fits
        };
        // Whether the original cell fits splits the range (growth quadruples it by default);
        // the search then assumes its upper end fits and checks that only if it comes to it.
        let original = self.machines.len();
        let machines = if prefix_bound < original && original < n {
            if fits(original) {
                search_minimum(prefix_bound, original, &mut fits)
            } else {
                search_minimum(original + 1, n, &mut fits)
            }
        } else {
            search_minimum(prefix_bound, n, &mut fits)
        };
        // The last probe that fitted is the answer; none fitted when the answer is `n`.
        let pending = match pending_at_best {
            Some(pending) => pending,
            None => {
                calls += 1;
                self.pending_on(&order, n, seed)
            }
        };
        if pending > self.allowance {
            return Err(does_not_fit(pending));
        }
        Ok(TrialResult {
            trial,
            seed,
            machines,
            prefix_bound,
            pending,
            schedule_calls: calls,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }
}

/// Runs the trials of `config` on `workload`, `config.threads` at a time, calling
/// `on_trial(done, total, result)` as each trial ends (for a progress bar).
pub fn compact(
    workload: &Workload,
    config: &CompactConfig,
    on_trial: &(dyn Fn(usize, usize, &TrialResult) + Sync),
) -> Result<CompactReport, CompactError> {
    let started = Instant::now();
    let compaction = Compaction::new(workload, config)?;
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Result<TrialResult, CompactError>>> = Mutex::new(Vec::new());
    let threads = config.threads.clamp(1, THREADS_MAX).min(config.trials);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let trial = next.fetch_add(1, Ordering::Relaxed);
                if trial >= config.trials {
                    break;
                }
                let result = compaction.trial(trial);
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                if let Ok(result) = &result {
                    on_trial(finished, config.trials, result);
                }
                // A poisoned lock means another worker panicked; its panic ends the scope.
                if let Ok(mut results) = results.lock() {
                    results.push(result);
                }
            });
        }
    });
    let mut trials = Vec::with_capacity(config.trials);
    for result in results.into_inner().unwrap_or_default() {
        trials.push(result?);
    }
    trials.sort_by_key(|t| t.trial);
    let sizes: Vec<usize> = trials.iter().map(|t| t.machines).collect();
    Ok(CompactReport {
        machines_total: workload.machines.len(),
        tasks: workload.tasks.len(),
        allowance: compaction.allowance,
        lower_bound: compaction.lower_bound,
        percentile: config.percentile,
        machines_at_percentile: percentile(&sizes, config.percentile),
        machines_min: sizes.iter().copied().min().unwrap_or(0),
        machines_max: sizes.iter().copied().max().unwrap_or(0),
        trials,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_percentile_is_the_nearest_rank() {
        let values: Vec<usize> = (1..=11).collect();
        assert_eq!(percentile(&values, 90), 10);
        assert_eq!(percentile(&values, 100), 11);
        assert_eq!(percentile(&values, 50), 6);
        assert_eq!(percentile(&[7], 90), 7);
    }

    #[test]
    fn the_search_finds_the_first_fitting_size() {
        for first in 3..=20 {
            let mut calls = 0;
            let found = search_minimum(3, 20, |k| {
                calls += 1;
                k >= first
            });
            assert_eq!(found, first);
            assert!(calls <= 5, "{calls}");
        }
    }

    #[test]
    fn the_allowance_rounds_down() {
        let config = CompactConfig::new();
        assert_eq!(config.allowance(499), 0);
        assert_eq!(config.allowance(500), 1);
        assert_eq!(config.allowance(133_000), 266);
    }
}
