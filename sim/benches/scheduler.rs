//! Scheduler benchmarks (issue 4), all in one run so that the ratios compare like with like:
//!
//! 1. the Google 2011 cell at t = 600 s scheduled from scratch onto its empty machines;
//! 2. the same without the three speed-ups, on a sample, extrapolated linearly;
//! 3. the C1M shape: 1,000 jobs × 1,000 tasks onto 5,000 machines;
//! 4. online: 100 new jobs into the cell loaded by (1), time per `schedule` call (pure
//!    library time: no RPC, no commit);
//!
//! and placement quality (machines used, stranded resources) of the hybrid score against
//! best fit and worst fit on (1).
//!
//! Run: `cargo bench -p sim --bench scheduler`. Skips (1), (2), (4) with a note when the
//! trace slice is absent.

use borg_model::{MachineInfo, MachineState, Resources, TaskId};
use scheduler::{
    schedule, CellView, FitPolicy, MachineView, PendingTask, PlacementConfig, Plan, ScoreCache,
};
use sim::online::{
    digest_of, loaded_view, online_jobs, percentile, plan_digest, run_online, thread_cpu_time,
    timed, with_topology, ONLINE_JOBS, ONLINE_TASKS_PER_JOB_MAX,
};
use sim::trace::google2011::{self, Google2011Options, TRACE_WINDOW_START_US};
use sim::trace::TraceTask;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Every n-th task of the cell is in the sample scheduled without speed-ups.
const SAMPLE_STRIDE: usize = 100;
/// Repetitions of the timed runs; the median is reported.
const REPEATS: usize = 3;
/// A higher bound on machines examined per task tried in (1) and (4), beside the default.
const EXAMINED_MAX_HIGH: usize = 10_000;
/// A dimension's free resources are stranded on a machine when another dimension has less
/// than this share (per mille) free.
const STRANDED_FREE_PERMILLE: u64 = 50;
const SEED: u64 = 2011;

fn trace_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces/google-2011");
    dir.join("task_events").is_dir().then_some(dir)
}

fn empty_view(machines: &[MachineInfo]) -> CellView {
    let mut view = CellView::new();
    for m in machines {
        view.upsert_machine(MachineView::new(m.clone(), MachineState::Up, 1));
    }
    view
}

fn pending_of(tasks: &[TraceTask]) -> Vec<PendingTask> {
    let mut shared: HashMap<&str, Arc<[borg_model::Constraint]>> = HashMap::new();
    tasks
        .iter()
        .map(|t| PendingTask {
            id: t.id.clone(),
            incarnation: 0,
            owner: t.owner.clone(),
            priority: t.priority,
            limits: t.request,
            constraints: Arc::clone(
                shared
                    .entry(t.id.job.as_str())
                    .or_insert_with(|| Arc::from(t.constraints.as_slice())),
            ),
            ports: 0,
        })
        .collect()
}

fn all_tasks(config: PlacementConfig, tasks: usize) -> PlacementConfig {
    PlacementConfig {
        tasks_max: tasks.max(1),
        ..config
    }
}

/// Median time of `REPEATS` runs, and the last run's plan.
fn median_run(
    view: &CellView,
    pending: &[PendingTask],
    config: &PlacementConfig,
) -> (Duration, Plan) {
    let mut times = Vec::new();
    let mut plan = Plan::default();
    for _ in 0..REPEATS {
        let (t, p) = timed(|| schedule(view, pending, config, SEED));
        times.push(t);
        plan = p;
    }
    times.sort();
    (times[times.len() / 2], plan)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Why tasks stayed pending, grouped by cause, most common first.
fn pending_causes(plan: &Plan) -> Vec<(String, usize)> {
    let mut causes: BTreeMap<String, usize> = BTreeMap::new();
    for (_, reason) in &plan.unplaced {
        let cause = if !reason.constraint_failures.is_empty() {
            "a hard constraint".to_owned()
        } else if reason.resource_shortfalls.is_empty() {
            "no machine up".to_owned()
        } else {
            let dims: Vec<&str> = reason.resource_shortfalls.keys().copied().collect();
            format!("short of {}", dims.join("+"))
        };
        *causes.entry(cause).or_insert(0) += 1;
    }
    let mut causes: Vec<_> = causes.into_iter().collect();
    causes.sort_by_key(|c| std::cmp::Reverse(c.1));
    causes
}

struct Quality {
    machines_used: usize,
    cpu_used_percent: f64,
    ram_used_percent: f64,
    stranded_cpu_percent: f64,
    stranded_ram_percent: f64,
}

/// Machines holding tasks, and resources stranded on them: free CPU on a machine whose RAM
/// is (nearly) exhausted, and the converse, as a share of the cell's capacity.
fn quality(machines: &[MachineInfo], pending: &[PendingTask], plan: &Plan) -> Quality {
    let limits: HashMap<&TaskId, Resources> = pending.iter().map(|t| (&t.id, t.limits)).collect();
    let mut used: HashMap<&str, Resources> = HashMap::new();
    for p in &plan.placements {
        *used.entry(p.machine.as_str()).or_default() +=
            limits.get(&p.task).copied().unwrap_or_default();
    }
    let (mut cpu_cap, mut ram_cap, mut cpu_used, mut ram_used) = (0u64, 0u64, 0u64, 0u64);
    let (mut cpu_stranded, mut ram_stranded) = (0u64, 0u64);
    for m in machines {
        let c = m.capacity;
        cpu_cap += c.cpu_millis;
        ram_cap += c.ram_bytes;
        let u = used.get(m.name.as_str()).copied().unwrap_or_default();
        cpu_used += u.cpu_millis;
        ram_used += u.ram_bytes;
        let free = c.saturating_sub(&u);
        let low = |free: u64, cap: u64| free * 1000 < cap * STRANDED_FREE_PERMILLE;
        if low(free.ram_bytes, c.ram_bytes) {
            cpu_stranded += free.cpu_millis;
        }
        if low(free.cpu_millis, c.cpu_millis) {
            ram_stranded += free.ram_bytes;
        }
    }
    let pct = |a: u64, b: u64| a as f64 * 100.0 / b.max(1) as f64;
    Quality {
        machines_used: used.len(),
        cpu_used_percent: pct(cpu_used, cpu_cap),
        ram_used_percent: pct(ram_used, ram_cap),
        stranded_cpu_percent: pct(cpu_stranded, cpu_cap),
        stranded_ram_percent: pct(ram_stranded, ram_cap),
    }
}

fn bench_google(results: &mut Vec<String>, parts: &dyn Fn(&str) -> bool) {
    let Some(dir) = trace_dir() else {
        println!("skipping the Google 2011 benchmarks: ../shared/traces/google-2011 not found");
        return;
    };
    let (load_time, trace) =
        timed(|| google2011::load(&dir, &Google2011Options::new(TRACE_WINDOW_START_US)));
    let trace = match trace {
        Ok(trace) => trace,
        Err(e) => {
            println!("skipping the Google 2011 benchmarks: {e}");
            return;
        }
    };
    let machines = with_topology(trace.workload.machines);
    let pending = pending_of(&trace.workload.tasks);
    println!(
        "Google 2011 cell at t=600 s: {} machines, {} tasks (loaded in {:.1} s)",
        machines.len(),
        pending.len(),
        secs(load_time)
    );
    let view = empty_view(&machines);

    // (1) Whole cell from scratch, with each fit policy.
    let mut full_on = Duration::ZERO;
    let mut hybrid_plan = Plan::default();
    let default_examined = PlacementConfig::new().machines_examined_max;
    let mut runs = vec![(FitPolicy::Hybrid, default_examined)];
    if parts("quality") {
        runs.extend([
            (FitPolicy::BestFit, default_examined),
            (FitPolicy::WorstFit, default_examined),
            (FitPolicy::Hybrid, EXAMINED_MAX_HIGH),
        ]);
    }
    for (policy, examined_max) in runs {
        let config = all_tasks(
            PlacementConfig {
                fit_policy: policy,
                machines_examined_max: examined_max,
                ..PlacementConfig::new()
            },
            pending.len(),
        );
        let label = format!("{}, examined max {examined_max}", policy.name());
        let (time, plan) = median_run(&view, &pending, &config);
        let q = quality(&machines, &pending, &plan);
        println!(
            "(1) {:<30} {:>6.2} s  placed {:>6}  pending {:>6}  machines used {:>5}  cpu {:.1}% ram {:.1}%  stranded cpu {:.2}% ram {:.2}%  digest {:016x}",
            label,
            secs(time),
            plan.placements.len(),
            plan.unplaced.len() + plan.deferred,
            q.machines_used,
            q.cpu_used_percent,
            q.ram_used_percent,
            q.stranded_cpu_percent,
            q.stranded_ram_percent,
            plan_digest(&plan)
        );
        results.push(format!(
            "| (1) whole cell, {} | {:.2} s | {} placed, {} pending | {} machines used; stranded cpu {:.2}%, ram {:.2}% |",
            label,
            secs(time),
            plan.placements.len(),
            plan.unplaced.len() + plan.deferred,
            q.machines_used,
            q.stranded_cpu_percent,
            q.stranded_ram_percent
        ));
        if policy == FitPolicy::Hybrid && examined_max == default_examined {
            full_on = time;
            hybrid_plan = plan;
        }
    }
    println!("    why pending (hybrid):");
    for (cause, tasks) in pending_causes(&hybrid_plan).iter().take(5) {
        println!("      {tasks:>6} tasks: {cause}");
    }
    if let Some((task, reason)) = hybrid_plan.unplaced.first() {
        println!("      e.g. {task}: {reason}");
    }

    // (2) Without the speed-ups, on every SAMPLE_STRIDE-th task.
    if parts("speedups") {
        bench_speedups(&view, &pending, full_on, results);
    }
    if parts("online") {
        bench_online_all(&machines, &pending, &hybrid_plan, results);
    }
}

fn bench_speedups(
    view: &CellView,
    pending: &[PendingTask],
    full_on: Duration,
    results: &mut Vec<String>,
) {
    let sample: Vec<PendingTask> = pending.iter().step_by(SAMPLE_STRIDE).cloned().collect();
    let on = all_tasks(PlacementConfig::new(), sample.len());
    let off = all_tasks(PlacementConfig::new().without_speedups(), sample.len());
    // Off and on alternate on the same sample, so that load on the shared machine hits both
    // alike; each figure is the median of its runs.
    let (mut offs, mut ons): (Vec<Duration>, Vec<Duration>) = (Vec::new(), Vec::new());
    let mut placed_off = 0;
    for _ in 0..REPEATS {
        let (t, plan) = timed(|| schedule(view, &sample, &off, SEED));
        placed_off = plan.placements.len();
        offs.push(t);
        ons.push(timed(|| schedule(view, &sample, &on, SEED)).0);
    }
    offs.sort();
    ons.sort();
    let (sample_off, sample_on) = (offs[offs.len() / 2], ons[ons.len() / 2]);
    let extrapolated = sample_off.mul_f64(pending.len() as f64 / sample.len() as f64);
    println!(
        "(2) sample of {} tasks (every {SAMPLE_STRIDE}th), medians of {REPEATS} alternating runs: \
         speed-ups off {:.2} s ({placed_off} placed), on {:.3} s ({:.0}x on the sample); \
         off extrapolated to the cell {:.0} s = {:.0}x the full run (1) with speed-ups ({:.2} s)",
        sample.len(),
        secs(sample_off),
        secs(sample_on),
        secs(sample_off) / secs(sample_on),
        secs(extrapolated),
        secs(extrapolated) / secs(full_on),
        secs(full_on)
    );
    results.push(format!(
        "| (2) no speed-ups, sample of {} | {:.2} s (on: {:.3} s) | extrapolated to {} tasks: {:.0} s | {:.0}x slower than (1) |",
        sample.len(),
        secs(sample_off),
        secs(sample_on),
        pending.len(),
        secs(extrapolated),
        secs(extrapolated) / secs(full_on)
    ));
}

/// (4) Online: 100 jobs (shapes taken from the trace) into the cell loaded by (1).
fn bench_online_all(
    machines: &[MachineInfo],
    pending: &[PendingTask],
    hybrid_plan: &Plan,
    results: &mut Vec<String>,
) {
    let loaded = loaded_view(machines, pending, hybrid_plan);
    let jobs = online_jobs(pending, ONLINE_JOBS, ONLINE_TASKS_PER_JOB_MAX);
    for examined_max in [
        PlacementConfig::new().machines_examined_max,
        EXAMINED_MAX_HIGH,
    ] {
        let config = PlacementConfig {
            machines_examined_max: examined_max,
            ..PlacementConfig::new()
        };
        bench_online(loaded.clone(), &jobs, &config, results);
    }
}

/// (4): each job is one `schedule` call on the cell as the previous commits left it.
fn bench_online(
    mut loaded: CellView,
    jobs: &[Vec<PendingTask>],
    base: &PlacementConfig,
    results: &mut Vec<String>,
) {
    let mut cache = ScoreCache::new(PlacementConfig::new().score_cache_entries_max);
    let plans = run_online(&mut loaded, jobs, base, SEED, &mut cache);
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        for (k, plan) in plans.iter().enumerate() {
            println!(
                "    online job {k}: {} tasks at priority {}, {} placed, {} machines examined, {:.1} ms",
                plan.tasks,
                plan.priority,
                plan.placed,
                plan.machines_examined,
                plan.time.as_secs_f64() * 1e3
            );
        }
    }
    let asked: usize = plans.iter().map(|p| p.tasks).sum();
    let placed: usize = plans.iter().map(|p| p.placed).sum();
    let mut times: Vec<Duration> = plans.iter().map(|p| p.time).collect();
    times.sort();
    let (p50, p99, max) = (
        percentile(&times, 0.50),
        percentile(&times, 0.99),
        percentile(&times, 1.0),
    );
    println!(
        "(4) online, machines_examined_max {}: {} jobs ({asked} tasks, {placed} placed) into the loaded cell: per plan p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (cache hits {}, misses {}; digest {:016x})",
        base.machines_examined_max,
        times.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        cache.hits,
        cache.misses,
        digest_of(plans.iter().map(|p| p.digest))
    );
    results.push(format!(
        "| (4) online, {} jobs into the loaded cell, machines_examined_max {} | p50 {:.1} ms, p99 {:.1} ms | {asked} tasks, {placed} placed | pure library time per plan |",
        times.len(),
        base.machines_examined_max,
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
    ));
}

/// C1M: 1,000 jobs of 1,000 tasks onto 5,000 machines (32 cores, 128 GiB each).
fn bench_c1m(results: &mut Vec<String>) {
    const MACHINES: usize = 5_000;
    const JOBS: u64 = 1_000;
    const TASKS_PER_JOB: u32 = 1_000;
    const OWNERS: u64 = 50;
    let machines = with_topology(
        (0..MACHINES)
            .map(|i| MachineInfo {
                name: format!("m{i:05}"),
                address: String::new(),
                capacity: Resources::new(32_000, 128 << 30),
                attributes: BTreeMap::new(),
                port_capacity: None,
            })
            .collect(),
    );
    let mut pending = Vec::with_capacity((JOBS * u64::from(TASKS_PER_JOB)) as usize);
    for j in 0..JOBS {
        let limits = Resources::new(40 + (j * 37) % 200, (256 + (j * 53) % 512) << 20);
        let constraints: Arc<[borg_model::Constraint]> = Arc::from(Vec::new());
        for i in 0..TASKS_PER_JOB {
            pending.push(PendingTask {
                id: TaskId::new(format!("c1m-{j:04}"), i),
                incarnation: 0,
                owner: format!("user-{}", j % OWNERS),
                priority: [0, 100, 120, 200][(j % 4) as usize],
                limits,
                constraints: Arc::clone(&constraints),
                ports: 0,
            });
        }
    }
    let view = empty_view(&machines);
    let mut config = all_tasks(PlacementConfig::new(), pending.len());
    config.score_cache = std::env::var_os("BENCH_SCORE_CACHE_OFF").is_none();
    let (time, plan) = timed(|| schedule(&view, &pending, &config, SEED));
    let rate = plan.placements.len() as f64 / secs(time);
    println!(
        "(3) C1M: {} tasks onto {MACHINES} machines in {:.2} s ({:.0} placements/s; {} pending; {:.0} machines examined per task; digest {:016x})",
        pending.len(),
        secs(time),
        rate,
        plan.unplaced.len() + plan.deferred,
        plan.machines_examined as f64 / pending.len() as f64,
        plan_digest(&plan)
    );
    results.push(format!(
        "| (3) C1M, 1,000 x 1,000 tasks onto 5,000 machines | {:.2} s | {} placed, {} pending | {:.0} placements/s (Nomad: ~3,750/s on 160 CPUs) |",
        secs(time),
        plan.placements.len(),
        plan.unplaced.len() + plan.deferred,
        rate
    ));
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument names the parts to run.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |part: &str| args.is_empty() || args.iter().any(|a| a == part);
    let mut results = Vec::new();
    let source = if thread_cpu_time().is_some() {
        "on-CPU time of the benchmark thread"
    } else {
        "wall time"
    };
    println!("times are {source}");
    // `google` runs (1), (2) and (4); `quality`, `speedups` or `online` run (1) with the
    // hybrid score and only that part; `whole` runs only (1) with the hybrid score (for
    // profiling).
    let google_parts = |part: &str| want("google") || want(part);
    if ["google", "quality", "speedups", "online", "whole"]
        .iter()
        .any(|p| want(p))
    {
        bench_google(&mut results, &google_parts);
    }
    if want("c1m") {
        bench_c1m(&mut results);
    }
    println!("\n| benchmark | time | tasks | notes |\n|---|---|---|---|");
    for line in results {
        println!("{line}");
    }
}
