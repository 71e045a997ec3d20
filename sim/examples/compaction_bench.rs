//! Benchmark: 11-trial compaction of the Google 2011 slice (production tasks) and packing
//! quality per fit policy on it and on the Alibaba default list. Prints a table; see
//! BENCHMARKS.md for the command.
//!
//! Arguments: `[TRACES_DIR] [google|alibaba] [POLICY] [TRIALS] [ORDER]` (defaults:
//! ../shared/traces, both, every policy, 11 trials, the compaction's default queue order; an
//! empty argument takes the default, so `-- ../shared/traces google '' 2` is a quick run of
//! every policy on the Google slice).

use sim::compact::{self, CompactConfig};
use sim::trace::{alibaba2023, google2011, Workload};
use std::path::PathBuf;

fn main() {
    let traces = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/traces"));
    let only = std::env::args().nth(2).unwrap_or_default();
    let only_policy = std::env::args().nth(3).unwrap_or_default();
    let trials = match std::env::args().nth(4).filter(|t| !t.is_empty()) {
        None => compact::TRIALS_DEFAULT,
        Some(text) => match text.parse::<usize>() {
            Ok(trials) => trials,
            Err(error) => {
                eprintln!("TRIALS must be a number of trials, not {text:?}: {error}");
                std::process::exit(2);
            }
        },
    };
    let queue_order = match std::env::args().nth(5).filter(|o| !o.is_empty()) {
        None => CompactConfig::new().placement.queue_order,
        Some(name) => match sim::policy::parse_queue_order(&name) {
            Some(order) => order,
            None => {
                eprintln!(
                    "ORDER must be one of {}, not {name:?}",
                    sim::policy::queue_order_names()
                );
                std::process::exit(2);
            }
        },
    };
    let mut workloads: Vec<(&str, Workload)> = Vec::new();
    if only.is_empty() || only == "google" {
        let dir = traces.join("google-2011");
        let options = google2011::Google2011Options::new(google2011::TRACE_WINDOW_START_US);
        match google2011::load(&dir, &options) {
            Ok(trace) => workloads.push((
                "google-2011 prod @600s",
                sim::workload::production(trace.workload),
            )),
            Err(error) => eprintln!("skipping the Google slice: {error}"),
        }
    }
    if only.is_empty() || only == "alibaba" {
        let dir = traces.join("alibaba-gpu-2023");
        match alibaba2023::load(
            &dir.join(alibaba2023::NODES_ALL_FILE),
            &dir.join(alibaba2023::PODS_DEFAULT_FILE),
        ) {
            Ok(workload) => workloads.push(("alibaba-gpu-2023 default", workload)),
            Err(error) => eprintln!("skipping the Alibaba list: {error}"),
        }
    }
    println!("| workload | policy | machines | tasks | lower bound | p90 (min–max) | p90 / bound | per-trial bounds (min–max) | p90 of machines / per-trial bound (min–max) | wall s | CPU s |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, workload) in &workloads {
        for policy in sim::policy::FIT_POLICIES {
            let policy_name = format!("{} ({})", policy.name(), queue_order.name());
            if !only_policy.is_empty() && only_policy != policy.name() {
                continue;
            }
            let mut config = CompactConfig::new();
            config.placement.fit_policy = policy;
            config.trials = trials;
            config.placement.queue_order = queue_order;
            let progress = |done: usize, total: usize, _: &compact::TrialResult| {
                eprint!("\r{name} {policy_name}: trial {done}/{total}");
            };
            let cpu_before = cpu_seconds();
            match compact::compact(workload, &config, &progress) {
                Ok(report) => {
                    eprintln!();
                    let (prefix_ratio, prefix_min, prefix_max) = report.prefix_ratios();
                    let bounds = report.trials.iter().map(|t| t.prefix_bound);
                    println!(
                        "| {name} | {policy_name} | {} | {} | {} | {} ({}–{}) | {:.3} | {}–{} | {prefix_ratio:.3} ({prefix_min:.3}–{prefix_max:.3}) | {:.1} | {:.1} |",
                        report.machines_total,
                        report.tasks,
                        report.lower_bound,
                        report.machines_at_percentile,
                        report.machines_min,
                        report.machines_max,
                        report.ratio_to_bound(),
                        bounds.clone().min().unwrap_or(0),
                        bounds.max().unwrap_or(0),
                        report.elapsed_ms as f64 / 1000.0,
                        cpu_seconds() - cpu_before
                    );
                }
                Err(error) => println!("| {name} | {policy_name} | error: {error} |"),
            }
        }
    }
}

/// CPU time of this process (user + system), from /proc/self/stat at 100 ticks per second
/// (Linux's USER_HZ); 0 where unavailable.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which ends with ')'): utime and stime are 12th and 13th.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}
