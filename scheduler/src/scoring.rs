//! Ranking feasible machines. Lexicographic, most important first: fewest and
//! lowest-priority evictions, most soft constraints met, fewest tasks of the same job on the
//! machine (spreading), then the fit policy.

use crate::class::TaskClass;
use crate::feasibility::Fit;
use crate::work::MachineWork;
use borg_model::Resources;
use std::cmp::{Ordering, Reverse};

/// How the final term ranks machines by how full they would be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FitPolicy {
    /// Fullest machine first: packs tightly and keeps whole machines free for large tasks.
    #[default]
    BestFit,
    /// Emptiest machine first: spreads load.
    WorstFit,
}

/// Score of one feasible machine for one task; greater is better (see `Ord`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Score {
    pub preempted_count: u32,
    /// Sum of the evicted tasks' priorities.
    pub preempted_priority_sum: u64,
    pub soft_constraints_met: u32,
    /// Tasks of the same job already on the machine (including this plan's).
    pub same_job_tasks: u32,
    /// Mean utilisation after placement over the dimensions the machine has, in per mille,
    /// turned by the policy so that greater is better.
    pub fit_permille: u32,
}

impl Score {
    fn key(&self) -> (Reverse<u32>, Reverse<u64>, u32, Reverse<u32>, u32) {
        (
            Reverse(self.preempted_count),
            Reverse(self.preempted_priority_sum),
            self.soft_constraints_met,
            Reverse(self.same_job_tasks),
            self.fit_permille,
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

pub fn score(
    work: &MachineWork<'_>,
    class: &TaskClass,
    job: &str,
    fit: &Fit,
    policy: FitPolicy,
) -> Score {
    let mut freed = Resources::ZERO;
    let mut preempted_priority_sum = 0u64;
    for &i in &fit.victims {
        freed += work.evictable[i].limits;
        preempted_priority_sum += u64::from(work.evictable[i].priority);
    }
    let after = work.allocated.saturating_sub(&freed) + class.limits;
    let utilisation = utilisation_permille(&after, &work.machine.capacity);
    Score {
        preempted_count: u32::try_from(fit.victims.len()).unwrap_or(u32::MAX),
        preempted_priority_sum,
        soft_constraints_met: class
            .soft
            .iter()
            .filter(|c| c.matches(&work.machine.attributes))
            .count() as u32,
        same_job_tasks: work.tasks_per_job.get(job).copied().unwrap_or(0),
        fit_permille: match policy {
            FitPolicy::BestFit => utilisation,
            FitPolicy::WorstFit => 1000u32.saturating_sub(utilisation),
        },
    }
}

/// Mean of `used / capacity` over the dimensions with capacity, in per mille (capped at 1000).
pub fn utilisation_permille(used: &Resources, capacity: &Resources) -> u32 {
    let dims = [
        (used.cpu_millis, capacity.cpu_millis),
        (used.ram_bytes, capacity.ram_bytes),
        (used.disk_bytes, capacity.disk_bytes),
        (u64::from(used.gpus), u64::from(capacity.gpus)),
    ];
    let mut sum = 0u128;
    let mut count = 0u128;
    for (used, capacity) in dims {
        if capacity == 0 {
            continue;
        }
        sum += (u128::from(used.min(capacity)) * 1000) / u128::from(capacity);
        count += 1;
    }
    if count == 0 {
        return 0;
    }
    u32::try_from(sum / count).unwrap_or(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(count: u32, prio: u64, soft: u32, same: u32, fit: u32) -> Score {
        Score {
            preempted_count: count,
            preempted_priority_sum: prio,
            soft_constraints_met: soft,
            same_job_tasks: same,
            fit_permille: fit,
        }
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
        // Spreading beats fit.
        assert!(s(0, 0, 0, 0, 0) > s(0, 0, 0, 1, 1000));
        assert!(s(0, 0, 0, 0, 900) > s(0, 0, 0, 0, 100));
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
}
