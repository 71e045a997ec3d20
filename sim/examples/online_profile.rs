//! Profiling aid for issue 4's online benchmark: loads the Google 2011 cell as
//! `cargo bench -p sim --bench scheduler online` does, then runs the 100 online jobs
//! `REPS` times (each time on a fresh copy of the loaded cell, with a fresh score cache)
//! and prints the slowest plans (on-CPU). Run it under `perf record --delay MS` so that
//! the profile covers the online plans only.
//!
//! `cargo run --release -p sim --example online_profile -- [REPS]` (default 10).
//!
//! With `retry` as the argument it compares instead the two ways the scheduler retries
//! backlog tasks once room was freed on a few machines (here: every task on
//! `FREED_MACHINES` machines left the loaded cell): a round that examines the cell at
//! random (`schedule_among` with `None`, as `schedule_with_cache`) and one among the freed machines (`schedule_among`).
use scheduler::{schedule_among, PlacementConfig, Plan, ScoreCache};
use sim::online::{
    digest_of, loaded_view, online_jobs, plan_digest, run_online, timed, with_topology,
};
use sim::trace::google2011::{self, Google2011Options, TRACE_WINDOW_START_US};

const SEED: u64 = 2011;
const SLOWEST_SHOWN: usize = 8;
/// `retry`: machines emptied, and backlog tasks retried (the scheduler's round bound).
const FREED_MACHINES: usize = 32;
const RETRIES: usize = 200;

fn main() {
    let arg = std::env::args().nth(1);
    let retry = arg.as_deref() == Some("retry");
    let reps: usize = arg.and_then(|s| s.parse().ok()).unwrap_or(10);
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces/google-2011");
    let trace = match google2011::load(&dir, &Google2011Options::new(TRACE_WINDOW_START_US)) {
        Ok(trace) => trace,
        Err(error) => return eprintln!("{error}"),
    };
    let machines = with_topology(trace.workload.machines);
    let pending = sim::cell::pending_tasks(&trace.workload.tasks);
    let config = PlacementConfig {
        tasks_max: pending.len(),
        ..PlacementConfig::new()
    };
    let plan = scheduler::schedule(&sim::cell::empty_view(&machines), &pending, &config, SEED);
    println!(
        "whole cell: {} placed, plan digest {:016x}",
        plan.placements.len(),
        plan_digest(&plan)
    );
    if retry {
        return compare_retries(&machines, &pending, plan);
    }
    let loaded = loaded_view(&machines, &pending, &plan);
    let jobs = online_jobs(
        &pending,
        sim::online::ONLINE_JOBS,
        sim::online::ONLINE_TASKS_PER_JOB_MAX,
    );
    println!("online plans start");
    let mut by_job: Vec<(usize, f64, usize, usize, u64)> = Vec::new();
    let mut totals_ms: Vec<f64> = Vec::new();
    for rep in 0..reps {
        let mut view = loaded.clone();
        let mut cache = ScoreCache::new(PlacementConfig::new().score_cache_entries_max);
        let plans = run_online(&mut view, &jobs, &PlacementConfig::new(), SEED, &mut cache);
        if rep == 0 {
            let placed: usize = plans.iter().map(|p| p.placed).sum();
            println!(
                "online: {placed} placed, plans digest {:016x}",
                digest_of(plans.iter().map(|p| p.digest))
            );
        }
        totals_ms.push(plans.iter().map(|p| p.time.as_secs_f64() * 1e3).sum());
        for (k, p) in plans.iter().enumerate() {
            let ms = p.time.as_secs_f64() * 1e3;
            if rep == 0 {
                by_job.push((k, ms, p.tasks, p.placed, p.machines_examined));
            } else if let Some(entry) = by_job.get_mut(k) {
                entry.1 = entry.1.min(ms);
            }
        }
    }
    by_job.sort_by(|a, b| b.1.total_cmp(&a.1));
    totals_ms.sort_by(f64::total_cmp);
    let median = totals_ms.get(totals_ms.len() / 2).copied().unwrap_or(0.0);
    let least = totals_ms.first().copied().unwrap_or(0.0);
    println!(
        "all {} plans on-CPU: least {least:.1} ms, median {median:.1} ms of {reps} runs",
        jobs.len()
    );
    println!("slowest plans (least of {reps} runs, on-CPU):");
    for (k, ms, tasks, placed, examined) in by_job.iter().take(SLOWEST_SHOWN) {
        println!("  online-{k}: {tasks} tasks, {placed} placed, {examined} machines examined, {ms:.1} ms");
    }
}

/// The `retry` mode (see the module's comment).
fn compare_retries(
    machines: &[borg_model::MachineInfo],
    pending: &[scheduler::PendingTask],
    mut plan: Plan,
) {
    let stride = machines.len() / FREED_MACHINES;
    let freed: Vec<String> = machines
        .iter()
        .step_by(stride.max(1))
        .take(FREED_MACHINES)
        .map(|m| m.name.clone())
        .collect();
    plan.placements.retain(|p| !freed.contains(&p.machine));
    let loaded = loaded_view(machines, pending, &plan);
    // The backlog: tasks the whole-cell plan left unplaced, highest priority first.
    let unplaced: std::collections::HashSet<_> = plan.unplaced.iter().map(|(t, _)| t).collect();
    let mut retries: Vec<_> = pending
        .iter()
        .filter(|t| unplaced.contains(&t.id))
        .cloned()
        .collect();
    retries.sort_by_key(|t| std::cmp::Reverse(t.priority));
    retries.truncate(RETRIES);
    let config = PlacementConfig::new();
    for (label, among) in [
        ("anywhere (at random)", None),
        ("among the freed machines", Some(&freed[..])),
    ] {
        let mut cache = ScoreCache::new(config.score_cache_entries_max);
        let (time, out) =
            timed(|| schedule_among(&loaded, &retries, &config, SEED, &mut cache, among));
        let on_freed = out
            .placements
            .iter()
            .filter(|p| freed.contains(&p.machine))
            .count();
        println!(
            "retry of {} backlog tasks {label}: {} placed ({on_freed} on the {} freed machines), {} machines examined, {:.1} ms on-CPU",
            retries.len(),
            out.placements.len(),
            freed.len(),
            out.machines_examined,
            time.as_secs_f64() * 1e3
        );
    }
}
