//! Scheduler benchmark (4) of issue 4, "online": new jobs arriving one at a time into the
//! Google 2011 cell loaded by benchmark (1). Shared by the pure-library benchmark
//! (sim/benches/scheduler.rs) and the one through the real master and scheduler
//! (benches/online_commit.rs), so both place the same cell and the same jobs.

use borg_model::{MachineInfo, MachineState, Resources, TaskId, TaskState};
use scheduler::{
    schedule_with_cache, CellView, JobView, MachineView, PendingTask, PlacementConfig, Plan,
    ScoreCache, TaskView,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Machines per rack and per power domain given to the trace's machines (the trace has no
/// topology; these are typical of Borg cells).
pub const MACHINES_PER_RACK: usize = 40;
pub const MACHINES_PER_POWER_DOMAIN: usize = 400;
/// Jobs arriving in the online benchmark, and the most tasks each one has.
pub const ONLINE_JOBS: usize = 100;
pub const ONLINE_TASKS_PER_JOB_MAX: usize = 200;
/// Name of the online job number `k`.
pub const ONLINE_JOB_PREFIX: &str = "online-";

/// Adds synthetic `rack` and `power` attributes (consecutive machines share them).
pub fn with_topology(mut machines: Vec<MachineInfo>) -> Vec<MachineInfo> {
    for (i, m) in machines.iter_mut().enumerate() {
        m.attributes
            .insert("rack".into(), format!("rack-{}", i / MACHINES_PER_RACK));
        m.attributes.insert(
            "power".into(),
            format!("power-{}", i / MACHINES_PER_POWER_DOMAIN),
        );
    }
    machines
}

/// The online jobs: `jobs` of the cell's jobs (every n-th, by name), each cut to
/// `tasks_per_job_max` tasks and renamed `online-K` with task indices from 0. Each task keeps
/// its trace shape (owner, priority, limits, constraints).
pub fn online_jobs(
    pending: &[PendingTask],
    jobs: usize,
    tasks_per_job_max: usize,
) -> Vec<Vec<PendingTask>> {
    let mut by_job: BTreeMap<&str, Vec<&PendingTask>> = BTreeMap::new();
    for t in pending {
        by_job.entry(t.id.job.as_str()).or_default().push(t);
    }
    let stride = (by_job.len() / jobs.max(1)).max(1);
    by_job
        .values()
        .step_by(stride)
        .take(jobs)
        .enumerate()
        .map(|(k, tasks)| {
            let name = format!("{ONLINE_JOB_PREFIX}{k}");
            tasks
                .iter()
                .take(tasks_per_job_max)
                .enumerate()
                .map(|(i, t)| PendingTask {
                    id: TaskId::new(name.clone(), i as u32),
                    incarnation: 0,
                    ..(*t).clone()
                })
                .collect()
        })
        .collect()
}

/// A task as the view shows it once committed: running where placed, else pending.
fn task_view(machine: Option<&str>) -> TaskView {
    TaskView {
        state: if machine.is_some() {
            TaskState::Running
        } else {
            TaskState::Pending
        },
        machine: machine.unwrap_or_default().to_owned(),
        incarnation: 1,
    }
}

/// The view of one job (tasks sharing the first one's owner, priority and constraints) with
/// the tasks `placed` names running where placed, the others pending.
fn job_view(name: &str, tasks: &[&PendingTask], placed: &HashMap<&TaskId, &str>) -> JobView {
    let first = tasks[0];
    JobView {
        name: name.to_owned(),
        owner: first.owner.clone(),
        priority: first.priority,
        limits: first.limits,
        limits_by_task: Default::default(),
        ports_by_task: Default::default(),
        alloc_set: None,
        constraints: Arc::clone(&first.constraints),
        ports: 0,
        package: Arc::from(format!("/pkg/{name}")),
        active: true,
        tasks: tasks
            .iter()
            .map(|t| (t.id.index, task_view(placed.get(&t.id).copied())))
            .collect(),
    }
}

fn placed_by(plan: &Plan) -> HashMap<&TaskId, &str> {
    plan.placements
        .iter()
        .map(|p| (&p.task, p.machine.as_str()))
        .collect()
}

/// The view after the master committed `plan`: the placed tasks run.
pub fn loaded_view(machines: &[MachineInfo], pending: &[PendingTask], plan: &Plan) -> CellView {
    let mut view = CellView::new();
    let placed = placed_by(plan);
    let mut jobs: BTreeMap<&str, Vec<&PendingTask>> = BTreeMap::new();
    let mut allocated: HashMap<&str, Resources> = HashMap::new();
    for t in pending {
        jobs.entry(t.id.job.as_str()).or_default().push(t);
        if let Some(m) = placed.get(&t.id) {
            *allocated.entry(m).or_default() += t.limits;
        }
    }
    // The master's figures are exact even where a job's tasks differ in size.
    for m in machines {
        let mut mv = MachineView::new(m.clone(), MachineState::Up, 2);
        mv.reported_allocated = allocated.get(m.name.as_str()).copied().unwrap_or_default();
        view.upsert_machine(mv);
    }
    for (name, tasks) in jobs {
        view.upsert_job(job_view(name, &tasks, &placed));
    }
    view
}

/// One online job's `schedule` call.
#[derive(Debug, Clone)]
pub struct OnlinePlan {
    pub tasks: usize,
    pub priority: borg_model::Priority,
    pub placed: usize,
    pub machines_examined: u64,
    /// `plan_digest` of the plan: equal digests, equal plans (for checking that a change to
    /// the library keeps its plans).
    pub digest: u64,
    /// On-CPU time of the call (wall time where the kernel does not say).
    pub time: Duration,
}

/// (4) in the pure library: each job is one `schedule` call on the cell as the previous
/// commits left it (the plan is applied to `loaded` as the master would commit it).
pub fn run_online(
    loaded: &mut CellView,
    jobs: &[Vec<PendingTask>],
    base: &PlacementConfig,
    seed: u64,
    cache: &mut ScoreCache,
) -> Vec<OnlinePlan> {
    let mut plans = Vec::with_capacity(jobs.len());
    for (k, new) in jobs.iter().enumerate() {
        let Some(first) = new.first() else {
            continue;
        };
        let config = PlacementConfig {
            tasks_max: new.len(),
            ..base.clone()
        };
        let (time, plan) =
            timed(|| schedule_with_cache(loaded, new, &config, seed + k as u64, cache));
        plans.push(OnlinePlan {
            tasks: new.len(),
            priority: first.priority,
            placed: plan.placements.len(),
            machines_examined: plan.machines_examined,
            digest: plan_digest(&plan),
            time,
        });
        let tasks: Vec<&PendingTask> = new.iter().collect();
        loaded.upsert_job(job_view(&first.id.job, &tasks, &placed_by(&plan)));
    }
    plans
}

/// A hash of everything a plan says: placements (task, machine, version, victims) and why
/// each unplaced task waits, in order, and the counts. Equal input and seed must give an
/// equal digest before and after a change that is meant to alter speed only.
pub fn plan_digest(plan: &Plan) -> u64 {
    use std::hash::{Hash, Hasher};
    // `DefaultHasher::new` has fixed keys: digests compare across runs and builds.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for p in &plan.placements {
        (&p.task, p.incarnation, &p.machine, p.machine_version).hash(&mut hasher);
        for v in &p.preempt {
            (&v.task, v.incarnation, v.priority).hash(&mut hasher);
        }
    }
    for (task, reason) in &plan.unplaced {
        task.hash(&mut hasher);
        format!("{reason:?}").hash(&mut hasher);
    }
    (plan.deferred, plan.machines_examined).hash(&mut hasher);
    hasher.finish()
}

/// Digest of a sequence of plans' digests (see `plan_digest`).
pub fn digest_of(digests: impl IntoIterator<Item = u64>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for d in digests {
        d.hash(&mut hasher);
    }
    hasher.finish()
}

/// Time `f` takes on this thread's CPU: the machine is shared (other builds and tests run
/// beside the benchmarks), and on-CPU time does not count the time others held the cores.
/// Falls back to wall time where /proc/thread-self/schedstat is missing.
pub fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let (start_cpu, start) = (thread_cpu_time(), Instant::now());
    let out = f();
    let wall = start.elapsed();
    match (start_cpu, thread_cpu_time()) {
        (Some(a), Some(b)) => (b.saturating_sub(a), out),
        _ => (wall, out),
    }
}

/// Time this thread has run on a CPU (first field of /proc/thread-self/schedstat, in ns).
pub fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// The `p`-quantile (0 < p ≤ 1) of sorted durations, by the nearest-rank method.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(job: &str, index: u32) -> PendingTask {
        PendingTask {
            id: TaskId::new(job, index),
            incarnation: 0,
            owner: "u".into(),
            priority: 100,
            limits: Resources::new(100, 1 << 20),
            constraints: Arc::from(Vec::new()),
            ports: 0,
        }
    }

    #[test]
    fn online_jobs_are_every_nth_job_renamed_and_cut() {
        let pending: Vec<PendingTask> = (0..10)
            .flat_map(|j| (0..5).map(move |i| task(&format!("j{j}"), i * 2)))
            .collect();
        let jobs = online_jobs(&pending, 5, 3);
        assert_eq!(jobs.len(), 5);
        assert_eq!(jobs[1][0].id, TaskId::new("online-1", 0));
        assert_eq!(jobs[1].len(), 3);
        assert_eq!(jobs[1][2].id.index, 2);
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&sorted, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&sorted, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
