//! Local enforcement (pure choices): which tasks to kill when the machine runs short of
//! memory, and which to throttle when its CPU is busy.
//!
//! Memory is not compressible: the lowest-priority tasks are killed, free band before batch,
//! never production or monitoring. One band is reclaimed per round, lowest priority and
//! largest usage first, until the expected relief covers the shortfall; the next round
//! measures again before reaching into a higher band.
//! CPU is compressible: batch-class tasks are capped at their limit by CFS quota while the
//! machine is busy, latency-sensitive ones never; nothing is killed for CPU.

use crate::assignment::TaskKey;
use borg_model::{AppClass, Band, Priority};

/// Most tasks killed in one reclamation round.
pub const RECLAIM_KILLS_PER_ROUND_MAX: usize = 64;

/// A running task as enforcement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningTask {
    pub key: TaskKey,
    pub priority: Priority,
    pub app_class: AppClass,
    pub memory_bytes: u64,
    pub cpu_limit_millis: u64,
}

/// Tasks to kill so that `shortfall_bytes` more memory becomes free.
pub fn reclamation_victims(tasks: &[RunningTask], shortfall_bytes: u64) -> Vec<TaskKey> {
    let mut candidates: Vec<&RunningTask> = tasks
        .iter()
        .filter(|t| !Band::of(t.priority).is_prod())
        .collect();
    candidates.sort_by(|a, b| {
        (a.priority, std::cmp::Reverse(a.memory_bytes), &a.key).cmp(&(
            b.priority,
            std::cmp::Reverse(b.memory_bytes),
            &b.key,
        ))
    });
    let Some(band) = candidates.first().map(|t| Band::of(t.priority)) else {
        return Vec::new();
    };
    let mut victims = Vec::new();
    let mut relief_bytes = 0u64;
    for task in candidates
        .into_iter()
        .take_while(|t| Band::of(t.priority) == band)
        .take(RECLAIM_KILLS_PER_ROUND_MAX)
    {
        victims.push(task.key.clone());
        relief_bytes = relief_bytes.saturating_add(task.memory_bytes);
        if relief_bytes >= shortfall_bytes {
            break;
        }
    }
    victims
}

/// Whether a task's CPU is capped at its limit now.
pub fn cpu_capped(app_class: AppClass, machine_busy: bool) -> bool {
    machine_busy && app_class == AppClass::Batch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(job: &str, priority: Priority, memory_mib: u64) -> RunningTask {
        RunningTask {
            key: TaskKey::new(job, 0, 1),
            priority,
            app_class: AppClass::Batch,
            memory_bytes: memory_mib << 20,
            cpu_limit_millis: 100,
        }
    }

    #[test]
    fn the_lowest_band_goes_first_and_production_never() {
        let tasks = [
            running("prod", 200, 900),
            running("batch", 100, 500),
            running("free-small", 10, 10),
            running("free-big", 10, 300),
            running("free-lowest", 0, 1),
        ];
        let keys = |v: Vec<TaskKey>| v.into_iter().map(|k| k.job).collect::<Vec<_>>();
        // Lowest priority first, then the largest, until the shortfall is covered.
        assert_eq!(
            keys(reclamation_victims(&tasks, 200 << 20)),
            ["free-lowest", "free-big"]
        );
        // A shortfall larger than the whole band takes the band only, not batch too.
        assert_eq!(
            keys(reclamation_victims(&tasks, 10 << 30)),
            ["free-lowest", "free-big", "free-small"]
        );
        assert_eq!(keys(reclamation_victims(&tasks[..2], 10 << 30)), ["batch"]);
        assert!(reclamation_victims(&tasks[..1], 10 << 30).is_empty());
    }

    #[test]
    fn only_batch_class_is_capped_and_only_when_busy() {
        assert!(cpu_capped(AppClass::Batch, true));
        assert!(!cpu_capped(AppClass::Batch, false));
        assert!(!cpu_capped(AppClass::LatencySensitive, true));
    }
}
