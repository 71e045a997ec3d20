//! Ranking feasible machines. Lexicographic, most important first: fewest and
//! lowest-priority evictions, most soft constraints met, then a weighted sum of the
//! placement-quality terms: spreading a job across failure domains (machine, rack, power
//! domain), package locality, mixing priorities, and the fit policy.

use crate::class::TaskClass;
use crate::feasibility::Fit;
use crate::work::MachineWork;
use borg_model::{Band, Resources};
use std::cmp::{Ordering, Reverse};

/// Machine attributes naming a machine's failure domains, for spreading.
pub const RACK_ATTRIBUTE: &str = "rack";
pub const POWER_ATTRIBUTE: &str = "power";

/// Weights of the quality terms (per task of the job already in the domain, or per term).
/// Spreading across machines outweighs everything else; a full fit term is worth 1,000.
pub const SAME_JOB_ON_MACHINE_WEIGHT: i64 = 2_000;
pub const SAME_JOB_IN_RACK_WEIGHT: i64 = 60;
pub const SAME_JOB_IN_POWER_WEIGHT: i64 = 10;
pub const PACKAGE_LOCALITY_WEIGHT: i64 = 300;
pub const PRIORITY_MIX_WEIGHT: i64 = 100;

/// How the fit term ranks machines by how full they would be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FitPolicy {
    /// Borg's hybrid: pack like best fit, but penalise placements that leave resources
    /// stranded (free in one dimension while another is exhausted).
    #[default]
    Hybrid,
    /// Fullest machine first: packs tightly and keeps whole machines free for large tasks.
    BestFit,
    /// Emptiest machine first: spreads load.
    WorstFit,
}

impl FitPolicy {
    pub fn name(self) -> &'static str {
        match self {
            FitPolicy::Hybrid => "hybrid",
            FitPolicy::BestFit => "best-fit",
            FitPolicy::WorstFit => "worst-fit",
        }
    }
}

/// Score of one feasible machine for one task; greater is better (see `Ord`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Score {
    pub preempted_count: u32,
    /// Sum of the evicted tasks' priorities.
    pub preempted_priority_sum: u64,
    pub soft_constraints_met: u32,
    /// Tasks of the same job already in the machine, its rack and its power domain
    /// (including this plan's).
    pub same_job_on_machine: u32,
    pub same_job_in_rack: u32,
    pub same_job_in_power: u32,
    /// The machine has (ran) the task's package.
    pub package_local: bool,
    /// The machine holds tasks of the other kind (prod vs non-prod).
    pub mixes_priorities: bool,
    /// The fit policy's verdict on the machine after placement, 0..=1000, greater better.
    pub fit_permille: u32,
}

impl Score {
    /// Weighted sum of the quality terms.
    pub fn quality(&self) -> i64 {
        i64::from(self.fit_permille)
            - SAME_JOB_ON_MACHINE_WEIGHT * i64::from(self.same_job_on_machine)
            - SAME_JOB_IN_RACK_WEIGHT * i64::from(self.same_job_in_rack)
            - SAME_JOB_IN_POWER_WEIGHT * i64::from(self.same_job_in_power)
            + if self.package_local {
                PACKAGE_LOCALITY_WEIGHT
            } else {
                0
            }
            + if self.mixes_priorities {
                PRIORITY_MIX_WEIGHT
            } else {
                0
            }
    }

    fn key(&self) -> (Reverse<u32>, Reverse<u64>, u32, i64) {
        (
            Reverse(self.preempted_count),
            Reverse(self.preempted_priority_sum),
            self.soft_constraints_met,
            self.quality(),
        )
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The terms that depend only on the machine and the class (cacheable per (machine,
/// class)); the spreading terms are the caller's, per job.
pub fn class_score(
    work: &MachineWork<'_>,
    class: &TaskClass,
    fit: &Fit,
    policy: FitPolicy,
    package_local: bool,
) -> Score {
    let mut freed = Resources::ZERO;
    let mut preempted_priority_sum = 0u64;
    for &i in &fit.victims {
        freed += work.evictable[i].limits;
        preempted_priority_sum += u64::from(work.evictable[i].priority);
    }
    let after = work.allocated.saturating_sub(&freed) + class.limits;
    let capacity = &work.machine.capacity;
    let prod = Band::of(class.priority).is_prod();
    let others = if prod {
        work.non_prod_tasks
    } else {
        work.prod_tasks
    };
    Score {
        preempted_count: u32::try_from(fit.victims.len()).unwrap_or(u32::MAX),
        preempted_priority_sum,
        soft_constraints_met: class
            .soft
            .iter()
            .filter(|c| c.matches(&work.machine.attributes))
            .count() as u32,
        package_local,
        mixes_priorities: others > 0,
        fit_permille: fit_permille(policy, &after, capacity),
        ..Score::default()
    }
}

/// The fit policy's verdict on a machine holding `after` (greater is better).
pub fn fit_permille(policy: FitPolicy, after: &Resources, capacity: &Resources) -> u32 {
    let used = UsedPermille::of(after, capacity);
    match policy {
        FitPolicy::BestFit => used.mean(),
        FitPolicy::WorstFit => 1000u32.saturating_sub(used.mean()),
        FitPolicy::Hybrid => hybrid_permille(&used),
    }
}

/// Weight of the stranding penalty against best fit's mean use, in percent. Measured on the
/// Google 2011 production tasks (a cell of 9,300 machines, seeds 0–2, every machine
/// examined; see BENCHMARKS.md): 75% left 147/209/120 tasks pending, 100% 217/270/174;
/// 50% and 150% left more.
pub const STRANDING_PENALTY_PERCENT: u32 = 75;
/// A dimension takes part in the stranding penalty when its used share is at least the
/// fullest dimension's over this: one the work barely touches (the Google machines' 4 TiB
/// of disk, 0.1–1% used) strands nothing the work wants.
pub const STRANDING_DIMENSION_DIVISOR: u32 = 32;

/// Borg's hybrid: best fit that penalises stranded resources. Best fit's mean used share
/// over every dimension the machine has (so work that does not use a machine's GPUs
/// prefers a machine without them), less a share of the spread between the fullest and the
/// emptiest dimension the work on the machine uses: once the fullest is exhausted, the
/// others' free share is stranded.
fn hybrid_permille(used: &UsedPermille) -> u32 {
    let shares = used.shares();
    let fullest = shares.iter().copied().max().unwrap_or(0);
    let (mut low, mut high) = (u32::MAX, 0u32);
    for &share in shares
        .iter()
        .filter(|share| **share > 0 && **share * STRANDING_DIMENSION_DIVISOR >= fullest)
    {
        low = low.min(share);
        high = high.max(share);
    }
    let spread = high.saturating_sub(low);
    used.mean()
        .saturating_sub(spread * STRANDING_PENALTY_PERCENT / 100)
}

/// Per-dimension used shares (per mille, capped at 1000) over the dimensions the machine
/// has, each computed once (scoring runs for every machine a task examines).
struct UsedPermille {
    shares: [u32; 4],
    dimensions: usize,
}

impl UsedPermille {
    fn of(used: &Resources, capacity: &Resources) -> Self {
        let dims = [
            (used.cpu_millis, capacity.cpu_millis),
            (used.ram_bytes, capacity.ram_bytes),
            (used.disk_bytes, capacity.disk_bytes),
            (u64::from(used.gpus), u64::from(capacity.gpus)),
        ];
        let mut out = UsedPermille {
            shares: [0; 4],
            dimensions: 0,
        };
        for (u, c) in dims.into_iter().filter(|(_, c)| *c > 0) {
            out.shares[out.dimensions] = share_permille(u.min(c), c);
            out.dimensions += 1;
        }
        out
    }

    fn shares(&self) -> &[u32] {
        &self.shares[..self.dimensions]
    }

    /// Mean over the machine's dimensions (0 for a machine with none).
    fn mean(&self) -> u32 {
        let sum: u32 = self.shares().iter().sum();
        sum.checked_div(self.dimensions as u32).unwrap_or(0)
    }
}

/// `used / capacity` in per mille, for `used <= capacity`, `capacity > 0`. 64-bit unless the
/// product overflows (capacities beyond 18 PB).
fn share_permille(used: u64, capacity: u64) -> u32 {
    let permille = match used.checked_mul(1000) {
        Some(product) => product / capacity,
        None => u64::try_from(u128::from(used) * 1000 / u128::from(capacity)).unwrap_or(1000),
    };
    u32::try_from(permille).unwrap_or(1000)
}

/// Mean of `used / capacity` over the dimensions with capacity, in per mille (capped at 1000).
pub fn utilisation_permille(used: &Resources, capacity: &Resources) -> u32 {
    UsedPermille::of(used, capacity).mean()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(count: u32, prio: u64, soft: u32, same: u32, fit: u32) -> Score {
        Score {
            preempted_count: count,
            preempted_priority_sum: prio,
            soft_constraints_met: soft,
            same_job_on_machine: same,
            fit_permille: fit,
            ..Score::default()
        }
    }

    #[test]
    fn shares_are_exact_per_mille_even_for_huge_capacities() {
        assert_eq!(share_permille(1, 3), 333);
        assert_eq!(share_permille(7, 7), 1000);
        // 1000 × used overflows 64 bits: the 128-bit path gives the same rounding down.
        assert_eq!(share_permille(u64::MAX / 2, u64::MAX), 499);
        assert_eq!(share_permille(u64::MAX, u64::MAX), 1000);
    }

    #[test]
    fn terms_rank_in_order_of_importance() {
        // No eviction beats anything else.
        assert!(s(0, 0, 0, 9, 0) > s(1, 10, 5, 0, 1000));
        // Fewer, then lower-priority evictions.
        assert!(s(1, 100, 0, 0, 0) > s(2, 20, 0, 0, 0));
        assert!(s(1, 10, 0, 0, 0) > s(1, 100, 0, 0, 0));
        // Soft constraints beat spreading and fit.
        assert!(s(0, 0, 1, 5, 0) > s(0, 0, 0, 0, 1000));
        // Spreading across machines beats fit, locality and mixing together.
        let mut crowded = s(0, 0, 0, 1, 1000);
        crowded.package_local = true;
        crowded.mixes_priorities = true;
        assert!(s(0, 0, 0, 0, 0) > crowded);
        assert!(s(0, 0, 0, 0, 900) > s(0, 0, 0, 0, 100));
        // A rack with fewer of the job's tasks wins at equal fit.
        let mut rack = s(0, 0, 0, 0, 500);
        rack.same_job_in_rack = 1;
        assert!(s(0, 0, 0, 0, 500) > rack);
    }

    #[test]
    fn utilisation_averages_the_dimensions_a_machine_has() {
        let capacity = Resources::new(1000, 2000);
        assert_eq!(
            utilisation_permille(&Resources::new(500, 2000), &capacity),
            750
        );
        assert_eq!(utilisation_permille(&Resources::ZERO, &capacity), 0);
        assert_eq!(
            utilisation_permille(&Resources::new(5000, 5000), &capacity),
            1000
        );
        assert_eq!(
            utilisation_permille(&Resources::new(1, 1), &Resources::ZERO),
            0
        );
    }

    #[test]
    fn hybrid_prefers_balanced_machines_at_equal_utilisation() {
        let capacity = Resources::new(1000, 1000);
        // Both 55% used on average; the second leaves RAM stranded behind exhausted CPU.
        let balanced = Resources::new(550, 550);
        let lopsided = Resources::new(990, 110);
        assert!(
            fit_permille(FitPolicy::Hybrid, &balanced, &capacity)
                > fit_permille(FitPolicy::Hybrid, &lopsided, &capacity)
        );
        assert_eq!(
            fit_permille(FitPolicy::BestFit, &balanced, &capacity),
            fit_permille(FitPolicy::BestFit, &lopsided, &capacity)
        );
        // The limit of the rule that ignores a barely used dimension (see
        // STRANDING_DIMENSION_DIVISOR): RAM at 1% beside CPU at 99% counts as untouched, so
        // hybrid ranks that machine as best fit does.
        assert_eq!(
            fit_permille(FitPolicy::Hybrid, &Resources::new(990, 10), &capacity),
            fit_permille(FitPolicy::BestFit, &Resources::new(990, 10), &capacity)
        );
        // Fuller still wins under hybrid when balance is equal.
        assert!(
            fit_permille(FitPolicy::Hybrid, &Resources::new(800, 800), &capacity)
                > fit_permille(FitPolicy::Hybrid, &Resources::new(500, 500), &capacity)
        );
    }

    #[test]
    fn hybrid_packs_rather_than_spreads_when_a_dimension_is_unused() {
        // Disk (4 TiB, asked for by nobody) must not make a fuller machine look stranded.
        let capacity = Resources {
            disk_bytes: 4 << 40,
            ..Resources::new(1000, 1000)
        };
        let full = Resources::new(900, 850);
        let half = Resources::new(450, 420);
        assert!(
            fit_permille(FitPolicy::Hybrid, &full, &capacity)
                > fit_permille(FitPolicy::Hybrid, &half, &capacity)
        );
        // Nor disk the tasks barely ask for (0.1% used).
        let with_disk = |r: Resources| Resources {
            disk_bytes: 4 << 30,
            ..r
        };
        assert!(
            fit_permille(FitPolicy::Hybrid, &with_disk(full), &capacity)
                > fit_permille(FitPolicy::Hybrid, &with_disk(half), &capacity)
        );
    }

    #[test]
    fn hybrid_keeps_work_that_uses_no_gpu_off_gpu_machines() {
        let plain = Resources::new(1000, 1000);
        let gpu = Resources {
            gpus: 8,
            ..Resources::new(1000, 1000)
        };
        let after = Resources::new(600, 600);
        assert!(
            fit_permille(FitPolicy::Hybrid, &after, &plain)
                > fit_permille(FitPolicy::Hybrid, &after, &gpu)
        );
    }
}
