//! Workload transformations of the experiments: selecting bands, rounding requests.

use crate::trace::{TraceTask, Workload};
use borg_model::{Band, MachineInfo, Resources};

/// The workload with only the tasks `keep` accepts (same machines).
pub fn filter(workload: &Workload, keep: impl Fn(&TraceTask) -> bool) -> Workload {
    Workload {
        machines: workload.machines.clone(),
        tasks: workload.tasks.iter().filter(|t| keep(t)).cloned().collect(),
    }
}

pub fn is_prod(task: &TraceTask) -> bool {
    Band::of(task.priority).is_prod()
}

/// Production and monitoring tasks only.
pub fn production(workload: Workload) -> Workload {
    Workload {
        tasks: workload.tasks.into_iter().filter(is_prod).collect(),
        machines: workload.machines,
    }
}

/// Non-production tasks only.
pub fn non_production(workload: &Workload) -> Workload {
    filter(workload, |t| !is_prod(t))
}

/// A stable 64-bit FNV-1a hash of `text` mixed with `seed` (jobs are assigned to samples
/// and sub-cells by it, so a job's tasks stay together and runs repeat).
pub fn stable_hash(seed: u64, text: &str) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A smaller cell of the same mix: `percent` of the machines (a random choice by `seed`) and
/// the tasks of `percent` of the jobs.
pub fn sample(workload: &Workload, percent: u32, seed: u64) -> Workload {
    let percent = u64::from(percent.min(100));
    let mut machines: Vec<(u64, &MachineInfo)> = workload
        .machines
        .iter()
        .map(|m| (stable_hash(seed, &m.name), m))
        .collect();
    machines.sort_by_key(|(hash, m)| (*hash, m.name.clone()));
    let keep = (workload.machines.len() as u64 * percent).div_ceil(100) as usize;
    Workload {
        machines: machines
            .into_iter()
            .take(keep)
            .map(|(_, m)| m.clone())
            .collect(),
        tasks: workload
            .tasks
            .iter()
            .filter(|t| stable_hash(seed, &t.id.job) % 100 < percent)
            .cloned()
            .collect(),
    }
}

/// The work split into `parts` sub-cells by job (each keeps every machine as its pool).
pub fn split(workload: &Workload, parts: usize, seed: u64) -> Vec<Workload> {
    let parts = parts.max(1);
    (0..parts)
        .map(|part| {
            filter(workload, |t| {
                stable_hash(seed, &t.id.job) % parts as u64 == part as u64
            })
        })
        .collect()
}

/// The smallest power of two at or above `value` (0 stays 0; saturates at the top).
pub fn round_up_pow2(value: u64) -> u64 {
    if value == 0 {
        0
    } else {
        value.checked_next_power_of_two().unwrap_or(u64::MAX)
    }
}

/// Requests rounded up to powers of two in CPU and memory (Borg §5.4's experiment); disk and
/// GPUs are left exact.
pub fn rounded_up(workload: &Workload) -> Workload {
    let mut out = workload.clone();
    for task in &mut out.tasks {
        task.request = Resources {
            cpu_millis: round_up_pow2(task.request.cpu_millis),
            ram_bytes: round_up_pow2(task.request.ram_bytes),
            ..task.request
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use borg_model::{AppClass, TaskId, TaskState};

    fn workload(jobs: usize, tasks_per_job: u32) -> Workload {
        let machines = (0..100)
            .map(|i| MachineInfo {
                name: format!("m{i}"),
                ..Default::default()
            })
            .collect();
        let tasks = (0..jobs)
            .flat_map(|j| {
                (0..tasks_per_job).map(move |i| TraceTask {
                    id: TaskId::new(format!("job{j}"), i),
                    owner: "o".into(),
                    priority: if j % 2 == 0 { 200 } else { 100 },
                    trace_priority: 0,
                    scheduling_class: 0,
                    app_class: AppClass::Batch,
                    request: Resources::new(3, 5),
                    different_machines: false,
                    constraints: Vec::new(),
                    state: TaskState::Pending,
                    machine: None,
                })
            })
            .collect();
        Workload { machines, tasks }
    }

    #[test]
    fn samples_and_splits_keep_jobs_together() {
        let w = workload(200, 3);
        let s = sample(&w, 25, 1);
        assert_eq!(s.machines.len(), 25);
        assert_eq!(s.tasks.len() % 3, 0);
        assert!((90..=210).contains(&s.tasks.len()), "{}", s.tasks.len());
        assert_eq!(sample(&w, 25, 1), s);
        let parts = split(&w, 3, 1);
        assert_eq!(parts.iter().map(|p| p.tasks.len()).sum::<usize>(), 600);
        assert!(parts.iter().all(|p| p.machines.len() == 100));
        assert!(parts.iter().all(|p| p.tasks.len() % 3 == 0));
        assert_eq!(
            production(w.clone()).tasks.len() + non_production(&w).tasks.len(),
            600
        );
        assert_eq!(rounded_up(&w).tasks[0].request, Resources::new(4, 8));
    }

    #[test]
    fn rounding_goes_up_to_a_power_of_two() {
        assert_eq!(round_up_pow2(0), 0);
        assert_eq!(round_up_pow2(1), 1);
        assert_eq!(round_up_pow2(3), 4);
        assert_eq!(round_up_pow2(4096), 4096);
        assert_eq!(round_up_pow2(4097), 8192);
        assert_eq!(round_up_pow2(u64::MAX), u64::MAX);
    }
}
