//! `borg sim ...`: capacity planning with the real scheduler on traces (cell compaction,
//! Borg §5's experiments) and "would this job fit" on a checkpoint of a live cell.

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use sim::cell::Charging;
use sim::compact::{self, CompactConfig, CompactReport, TrialResult};
use sim::experiment::{self, ExperimentConfig, ExperimentReport};
use sim::trace::{alibaba2023, google2011, Workload};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// How few machines can run a workload: trials that remove machines at random and
    /// binary-search the smallest cell the scheduler fits it on.
    Compact(CompactArgs),
    /// Borg §5 on a trace: shared vs segregated prod/non-prod, one cell vs several, exact vs
    /// power-of-two requests, with vs without reclamation. Prints a table, writes SVG and PNG.
    Experiment(ExperimentArgs),
    /// Would a job fit in a live cell now, and what would it preempt (from a checkpoint).
    Fit(FitArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TaskSelection {
    All,
    /// Production and monitoring tasks (priority 200 and up).
    Prod,
    NonProd,
}

#[derive(Debug, Args)]
pub struct WorkloadArgs {
    /// Google ClusterData2011 directory (with machine_events/, job_events/, task_events/).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["alibaba_nodes", "alibaba_pods"])]
    pub google_2011: Option<PathBuf>,
    /// Trace time of the Google replay: the tasks alive then (600s is the window's start).
    #[arg(long, default_value = "600s", value_parser = parse_trace_time_us, value_name = "TIME")]
    pub at: u64,
    /// Alibaba cluster-trace-gpu-v2023 node list (CSV with a header row).
    #[arg(long, value_name = "FILE", requires = "alibaba_pods")]
    pub alibaba_nodes: Option<PathBuf>,
    /// Alibaba cluster-trace-gpu-v2023 pod list (CSV with a header row).
    #[arg(long, value_name = "FILE", requires = "alibaba_nodes")]
    pub alibaba_pods: Option<PathBuf>,
    /// Which tasks of the trace to place.
    #[arg(long, value_enum, default_value_t = TaskSelection::All)]
    pub tasks: TaskSelection,
    /// Keep this percentage of the machines and of the jobs (a smaller cell of the same mix).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub sample_percent: u32,
}

#[derive(Debug, Args)]
pub struct CompactionArgs {
    /// Trials, each with its own seed (seed + trial).
    #[arg(long, default_value_t = compact::TRIALS_DEFAULT)]
    pub trials: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Share of the tasks that may stay pending ("picky" tasks), in percent.
    #[arg(long, default_value_t = compact::PICKY_ALLOWANCE_PERCENT_DEFAULT)]
    pub picky_percent: f64,
    /// Percentile of the trials reported (with min and max).
    #[arg(long, default_value_t = compact::PERCENTILE_DEFAULT)]
    pub percentile: u32,
    /// Trials run at once (default: the number of cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The scheduler's fit policy: hybrid, best-fit or worst-fit (default: the
    /// scheduler's).
    #[arg(long)]
    pub policy: Option<String>,
    /// Order of the tasks within a priority: largest-first (first-fit-decreasing; the
    /// compaction's default, a snapshot's tasks have no arrival order) or round-robin
    /// (the live scheduler's: owners take turns).
    #[arg(long, value_name = "ORDER")]
    pub queue_order: Option<String>,
    /// How far a cell too small for the work may grow by cloning machines, in percent.
    #[arg(long, default_value_t = compact::GROW_MAX_PERCENT_DEFAULT)]
    pub grow_max_percent: u32,
    /// Place non-production work on reclaimed resources (production reservations).
    #[arg(long)]
    pub reclaim: bool,
    /// A production task's CPU reservation, in percent of its limit (the usage model).
    #[arg(long, default_value_t = Charging::CPU_RESERVATION_PERCENT_DEFAULT)]
    pub cpu_reservation_percent: u32,
    /// A production task's memory reservation, in percent of its limit.
    #[arg(long, default_value_t = Charging::RAM_RESERVATION_PERCENT_DEFAULT)]
    pub ram_reservation_percent: u32,
}

#[derive(Debug, Args)]
pub struct CompactArgs {
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[command(flatten)]
    pub compaction: CompactionArgs,
}

#[derive(Debug, Args)]
pub struct ExperimentArgs {
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[command(flatten)]
    pub compaction: CompactionArgs,
    /// Sub-cell counts compared with one cell.
    #[arg(long, value_delimiter = ',', default_values_t = experiment::SPLITS_DEFAULT)]
    pub splits: Vec<usize>,
    /// Directory for experiment.svg and experiment.png.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct FitArgs {
    /// A checkpoint of the cell: a master replica's data directory.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// The job to try.
    pub job: PathBuf,
}

/// `600s`, `10m`, `1h`, `600000000us`, or plain seconds, as trace microseconds.
fn parse_trace_time_us(text: &str) -> Result<u64, String> {
    let (number, unit_us) = if let Some(n) = text.strip_suffix("us") {
        (n, 1)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1_000)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000_000)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000_000)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3_600_000_000)
    } else {
        (text, 1_000_000)
    };
    number
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_us))
        .ok_or_else(|| format!("{text:?} is not a time such as 600s, 10m, 1h or 600000000us"))
}

impl WorkloadArgs {
    fn load(&self) -> anyhow::Result<Workload> {
        let workload = if let Some(dir) = &self.google_2011 {
            let trace = google2011::load(dir, &google2011::Google2011Options::new(self.at))
                .with_context(|| format!("reading the Google 2011 trace in {}", dir.display()))?;
            trace.workload
        } else if let (Some(nodes), Some(pods)) = (&self.alibaba_nodes, &self.alibaba_pods) {
            alibaba2023::load(nodes, pods).context("reading the Alibaba GPU 2023 trace")?
        } else {
            anyhow::bail!(
                "name a workload: --google-2011 DIR, or --alibaba-nodes FILE --alibaba-pods FILE"
            );
        };
        let workload = match self.tasks {
            TaskSelection::All => workload,
            TaskSelection::Prod => sim::workload::production(workload),
            TaskSelection::NonProd => sim::workload::non_production(&workload),
        };
        Ok(if self.sample_percent < 100 {
            sim::workload::sample(&workload, self.sample_percent, 0)
        } else {
            workload
        })
    }
}

impl CompactionArgs {
    fn config(&self) -> anyhow::Result<CompactConfig> {
        let mut config = CompactConfig::new();
        config.trials = self.trials;
        config.seed = self.seed;
        config.picky_allowance_percent = self.picky_percent;
        config.percentile = self.percentile;
        if let Some(threads) = self.threads {
            config.threads = threads;
        }
        config.grow_max_percent = self.grow_max_percent;
        if let Some(name) = &self.policy {
            config.placement.fit_policy = sim::policy::parse(name).with_context(|| {
                format!(
                    "unknown --policy {name:?}; the scheduler offers: {}",
                    sim::policy::names()
                )
            })?;
        }
        if let Some(name) = &self.queue_order {
            config.placement.queue_order =
                sim::policy::parse_queue_order(name).with_context(|| {
                    format!(
                        "unknown --queue-order {name:?}; the scheduler offers: {}",
                        sim::policy::queue_order_names()
                    )
                })?;
        }
        if self.reclaim {
            config.charging = self.reclaim_charging();
        }
        Ok(config)
    }

    fn reclaim_charging(&self) -> Charging {
        Charging::Reclaim {
            cpu_reservation_percent: self.cpu_reservation_percent,
            ram_reservation_percent: self.ram_reservation_percent,
        }
    }
}

/// Progress over trials on stderr: one rewritten line on a terminal, else a line per trial.
fn progress_line(label: &str, done: usize, total: usize) {
    let width = 30;
    let filled = done * width / total.max(1);
    let bar = format!("{}{}", "#".repeat(filled), ".".repeat(width - filled));
    if std::io::stderr().is_terminal() {
        eprint!("\r{label} [{bar}] {done}/{total} trials");
        if done == total {
            eprintln!();
        }
    } else {
        eprintln!("{label} [{bar}] {done}/{total} trials");
    }
}

pub async fn run(command: SimCommand, json: bool) -> anyhow::Result<()> {
    match command {
        SimCommand::Compact(args) => {
            let config = args.compaction.config()?;
            let report = tokio::task::spawn_blocking(move || {
                let workload = args.workload.load()?;
                let on_trial = |done: usize, total: usize, _: &TrialResult| {
                    progress_line("compacting", done, total)
                };
                compact::compact(&workload, &config, &on_trial).context("compacting the cell")
            })
            .await
            .context("the compaction thread failed")??;
            if json {
                println!("{:#}", compact_json(&report));
            } else {
                print!("{}", compact_text(&report));
            }
            Ok(())
        }
        SimCommand::Experiment(args) => {
            let mut config = ExperimentConfig::new();
            config.compact = args.compaction.config()?;
            config.compact.charging = Charging::Limits;
            config.reclaim = args.compaction.reclaim_charging();
            config.splits = args.splits.clone();
            let out = args.out.clone();
            let report = tokio::task::spawn_blocking(move || {
                let workload = args.workload.load()?;
                experiment::run(&workload, &config, &progress_line)
                    .context("running the experiments")
            })
            .await
            .context("the experiment thread failed")??;
            let figure = experiment::figure(&report);
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let svg = out.join("experiment.svg");
            let png = out.join("experiment.png");
            std::fs::write(&svg, figure.to_svg())
                .with_context(|| format!("writing {}", svg.display()))?;
            std::fs::write(&png, figure.to_png())
                .with_context(|| format!("writing {}", png.display()))?;
            if json {
                println!("{:#}", experiment_json(&report));
            } else {
                print!("{}", experiment_text(&report));
                println!("figures: {} {}", svg.display(), png.display());
            }
            Ok(())
        }
        SimCommand::Fit(args) => fit(args, json),
    }
}

fn compact_text(report: &CompactReport) -> String {
    let mut out = format!(
        "cell: {} machines, {} tasks ({} may stay pending)\n",
        report.machines_total, report.tasks, report.allowance
    );
    out += &format!(
        "compacted: {} machines at p{} (min {}, max {}) = {:.1}% of the cell\n",
        report.machines_at_percentile,
        report.percentile,
        report.machines_min,
        report.machines_max,
        report.cell_percent()
    );
    out += &format!(
        "lower bound: {} machines (any subset of the cell's machines); compacted / bound = {:.3}\n",
        report.lower_bound,
        report.ratio_to_bound()
    );
    let (prefix_ratio, prefix_min, prefix_max) = report.prefix_ratios();
    out += &format!(
        "per-trial bound (the machines that trial's random order keeps): compacted / bound = {prefix_ratio:.3} at p{} (min {prefix_min:.3}, max {prefix_max:.3})\n",
        report.percentile
    );
    out += &format!(
        "{} trials in {:.1} s\n",
        report.trials.len(),
        report.elapsed_ms as f64 / 1000.0
    );
    out
}

fn compact_json(report: &CompactReport) -> serde_json::Value {
    let (prefix_ratio, prefix_min, prefix_max) = report.prefix_ratios();
    serde_json::json!({
        "machines_total": report.machines_total,
        "tasks": report.tasks,
        "picky_allowance_tasks": report.allowance,
        "percentile": report.percentile,
        "machines_at_percentile": report.machines_at_percentile,
        "machines_min": report.machines_min,
        "machines_max": report.machines_max,
        "lower_bound": report.lower_bound,
        "ratio_to_bound": report.ratio_to_bound(),
        "ratio_to_prefix_bound": {
            "at_percentile": prefix_ratio,
            "min": prefix_min,
            "max": prefix_max,
        },
        "elapsed_ms": report.elapsed_ms,
        "trials": report.trials.iter().map(|t| serde_json::json!({
            "trial": t.trial,
            "seed": t.seed,
            "machines": t.machines,
            "prefix_bound": t.prefix_bound,
            "ratio_to_prefix_bound": t.ratio_to_prefix_bound(),
            "pending": t.pending,
            "schedule_calls": t.schedule_calls,
            "elapsed_ms": t.elapsed_ms,
        })).collect::<Vec<_>>(),
    })
}

fn experiment_text(report: &ExperimentReport) -> String {
    let mut out = format!(
        "cell: {} machines, {} tasks; p{} of {} trials\n",
        report.machines_total, report.tasks, report.percentile, report.trials
    );
    out += &format!(
        "{:<12} {:<14} {:>5} {:>8} {:>10} {:>8} {:>8} {:>9}\n",
        "experiment", "variant", "cells", "tasks", "machines", "min", "max", "vs shared"
    );
    for row in &report.rows {
        out += &format!(
            "{:<12} {:<14} {:>5} {:>8} {:>10} {:>8} {:>8} {:>8.1}%\n",
            row.experiment,
            row.variant,
            row.cells,
            row.tasks,
            row.machines_at_percentile,
            row.machines_min,
            row.machines_max,
            row.ratio_to_baseline * 100.0
        );
    }
    out
}

fn experiment_json(report: &ExperimentReport) -> serde_json::Value {
    serde_json::json!({
        "machines_total": report.machines_total,
        "tasks": report.tasks,
        "percentile": report.percentile,
        "trials": report.trials,
        "rows": report.rows.iter().map(|r| serde_json::json!({
            "experiment": r.experiment,
            "variant": r.variant,
            "cells": r.cells,
            "tasks": r.tasks,
            "machines_at_percentile": r.machines_at_percentile,
            "machines_min": r.machines_min,
            "machines_max": r.machines_max,
            "lower_bound": r.lower_bound,
            "ratio_to_baseline": r.ratio_to_baseline,
        })).collect::<Vec<_>>(),
    })
}

/// Placement seed of `fit` (any fixed value: the answer must repeat).
const FIT_SEED: u64 = 0;

/// The cell view of the latest checkpoint in a replica's data directory.
fn view_of_checkpoint(dir: &std::path::Path) -> anyhow::Result<(scheduler::CellView, u64)> {
    // RocksDB's CURRENT file marks a database; opening anything else would create one.
    if !dir.join("CURRENT").is_file() {
        anyhow::bail!(
            "{} is not a master replica's data directory (no RocksDB CURRENT file)",
            dir.display()
        );
    }
    let db = borgmaster::storage::ReplicaDb::open(dir).with_context(|| {
        format!(
            "opening {} (a running replica holds its lock: copy the directory or stop the replica)",
            dir.display()
        )
    })?;
    let checkpoint = db
        .load_checkpoint()
        .context("reading the checkpoint")?
        .with_context(|| format!("{} holds no checkpoint yet", dir.display()))?;
    let state = borgmaster::state::CellState::from_snapshot_bytes(&checkpoint.state)
        .context("decoding the checkpoint")?;
    let mut view = scheduler::CellView::new();
    let skipped =
        scheduler::view_sync::apply_snapshot(&mut view, checkpoint.index, state.snapshot_view());
    for error in skipped {
        eprintln!("warning: {error}");
    }
    Ok((view, checkpoint.index))
}

fn fit(args: FitArgs, json: bool) -> anyhow::Result<()> {
    let (view, index) = view_of_checkpoint(&args.checkpoint)?;
    let mut loaded =
        bcl::load_file(&args.job).map_err(|diagnostics| anyhow::anyhow!("{diagnostics}"))?;
    loaded.fill_owner("sim");
    if loaded.jobs.is_empty() {
        anyhow::bail!("{} declares no job", args.job.display());
    }
    let mut reports = Vec::new();
    for spec in &loaded.jobs {
        let tasks = sim::fit::job_tasks(spec, |i| {
            loaded
                .task_template(&spec.name, i)
                .map_or(spec.task.resources, |t| t.resources)
        });
        reports.push(sim::fit::fit(
            &view,
            &spec.name,
            &tasks,
            &scheduler::PlacementConfig::new(),
            FIT_SEED,
        ));
    }
    if json {
        let jobs: Vec<serde_json::Value> = reports
            .iter()
            .map(|r| {
                serde_json::json!({
                    "job": r.job,
                    "fits": r.fits(),
                    "placed": r.placed.iter().map(|p| serde_json::json!({
                        "task": p.task.to_string(),
                        "machine": p.machine,
                        "preempt": p.preempt.iter().map(|v| v.task.to_string()).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                    "pending": r.pending.iter().map(|(t, why)| serde_json::json!({
                        "task": t.to_string(), "reason": why,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!(
            "{:#}",
            serde_json::json!({ "checkpoint_index": index, "jobs": jobs })
        );
        return Ok(());
    }
    println!(
        "cell at log index {index}: {} machines",
        view.machine_count()
    );
    for report in &reports {
        let verdict = if report.fits() {
            "fits"
        } else {
            "does not fit"
        };
        println!(
            "job {}: {verdict} ({} of {} tasks placed)",
            report.job,
            report.placed.len(),
            report.placed.len() + report.pending.len()
        );
        for placed in &report.placed {
            let victims: Vec<String> = placed.preempt.iter().map(|v| v.task.to_string()).collect();
            if victims.is_empty() {
                println!("  {} -> {}", placed.task, placed.machine);
            } else {
                println!(
                    "  {} -> {} (preempts {})",
                    placed.task,
                    placed.machine,
                    victims.join(", ")
                );
            }
        }
        for (task, why) in &report.pending {
            println!("  {task} stays pending: {why}");
        }
        let preempted = report.preempted();
        if !preempted.is_empty() {
            let names: Vec<String> = preempted.iter().map(|t| t.to_string()).collect();
            println!(
                "  would preempt {} tasks: {}",
                names.len(),
                names.join(", ")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_times_take_units() {
        assert_eq!(parse_trace_time_us("600s"), Ok(600_000_000));
        assert_eq!(parse_trace_time_us("600"), Ok(600_000_000));
        assert_eq!(parse_trace_time_us("10m"), Ok(600_000_000));
        assert_eq!(parse_trace_time_us("5us"), Ok(5));
        assert!(parse_trace_time_us("soon").is_err());
    }
}
