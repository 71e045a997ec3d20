//! Borg §5's experiments by cell compaction: each variant of the workload or the cell is
//! compacted with the same trials and compared with the shared, undivided, exact-request
//! cell without reclamation (the baseline, compacted once).
//!
//! - segregation: production and non-production work in two cells (sizes summed);
//! - subdivision: the jobs split at random into N cells (each compacted from the whole
//!   machine pool; sizes summed);
//! - rounding: CPU and memory requests rounded up to powers of two;
//! - reclamation: non-production work placed on resources that production tasks reserve but
//!   do not use (see [`Charging::Reclaim`] for the usage model).

use crate::cell::Charging;
use crate::compact::{self, CompactConfig, CompactError, CompactReport};
use crate::figure::{self, Bar, Figure};
use crate::trace::Workload;
use crate::workload;

/// Default sub-cell counts of the subdivision experiment.
pub const SPLITS_DEFAULT: [usize; 2] = [2, 5];
/// Most sub-cells.
pub const SPLIT_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentConfig {
    pub compact: CompactConfig,
    /// Sub-cell counts compared with one cell.
    pub splits: Vec<usize>,
    /// The reclamation variant's charging.
    pub reclaim: Charging,
    /// Seed of the job assignment to sub-cells.
    pub split_seed: u64,
}

impl ExperimentConfig {
    pub fn new() -> Self {
        ExperimentConfig {
            compact: CompactConfig::new(),
            splits: SPLITS_DEFAULT.to_vec(),
            reclaim: Charging::reclaim_default(),
            split_seed: 0,
        }
    }
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        ExperimentConfig::new()
    }
}

/// One variant's compacted size (summed over its cells) against the baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentRow {
    /// "segregation", "subdivision", "rounding" or "reclamation".
    pub experiment: &'static str,
    pub variant: String,
    pub cells: usize,
    pub tasks: usize,
    /// Percentile of the trials, min and max, each summed over the cells.
    pub machines_at_percentile: usize,
    pub machines_min: usize,
    pub machines_max: usize,
    pub lower_bound: usize,
    /// `machines_at_percentile` over the baseline's.
    pub ratio_to_baseline: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentReport {
    pub machines_total: usize,
    pub tasks: usize,
    pub percentile: u32,
    pub trials: usize,
    pub rows: Vec<ExperimentRow>,
}

/// Sizes of a variant made of several cells.
struct Summed {
    cells: usize,
    tasks: usize,
    at_percentile: usize,
    min: usize,
    max: usize,
    lower_bound: usize,
}

impl Summed {
    fn of(reports: &[CompactReport]) -> Summed {
        Summed {
            cells: reports.len(),
            tasks: reports.iter().map(|r| r.tasks).sum(),
            at_percentile: reports.iter().map(|r| r.machines_at_percentile).sum(),
            min: reports.iter().map(|r| r.machines_min).sum(),
            max: reports.iter().map(|r| r.machines_max).sum(),
            lower_bound: reports.iter().map(|r| r.lower_bound).sum(),
        }
    }

    fn row(&self, experiment: &'static str, variant: String, baseline: usize) -> ExperimentRow {
        ExperimentRow {
            experiment,
            variant,
            cells: self.cells,
            tasks: self.tasks,
            machines_at_percentile: self.at_percentile,
            machines_min: self.min,
            machines_max: self.max,
            lower_bound: self.lower_bound,
            ratio_to_baseline: self.at_percentile as f64 / baseline.max(1) as f64,
        }
    }
}

/// A variant that could not be compacted.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{variant}: {source}")]
pub struct ExperimentError {
    pub variant: String,
    #[source]
    pub source: CompactError,
}

/// Runs every experiment; `on_trial(label, done, total)` reports progress.
pub fn run(
    workload: &Workload,
    config: &ExperimentConfig,
    on_trial: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<ExperimentReport, ExperimentError> {
    if let Some(&parts) = config
        .splits
        .iter()
        .find(|&&p| !(2..=SPLIT_MAX).contains(&p))
    {
        return Err(ExperimentError {
            variant: format!("{parts} cells"),
            source: CompactError::Split {
                parts,
                max: SPLIT_MAX,
            },
        });
    }
    let compact_one = |label: &str, w: &Workload, c: &CompactConfig| {
        compact::compact(w, c, &|done, total, _| on_trial(label, done, total)).map_err(|source| {
            ExperimentError {
                variant: label.to_owned(),
                source,
            }
        })
    };
    let base = &config.compact;
    let baseline = Summed::of(&[compact_one("baseline", workload, base)?]);
    let size = baseline.at_percentile;
    let mut rows = vec![baseline.row("segregation", "shared".into(), size)];

    let prod = workload::production(workload.clone());
    let non_prod = workload::non_production(workload);
    let segregated = [
        compact_one("production cell", &prod, base)?,
        compact_one("non-production cell", &non_prod, base)?,
    ];
    rows.push(Summed::of(&segregated).row("segregation", "segregated".into(), size));

    rows.push(baseline.row("subdivision", "1 cell".into(), size));
    for &parts in &config.splits {
        let mut reports = Vec::with_capacity(parts);
        for (i, part) in workload::split(workload, parts, config.split_seed)
            .iter()
            .enumerate()
        {
            if part.tasks.is_empty() {
                continue;
            }
            let label = format!("{parts} cells: cell {}", i + 1);
            reports.push(compact_one(&label, part, base)?);
        }
        rows.push(Summed::of(&reports).row("subdivision", format!("{parts} cells"), size));
    }

    rows.push(baseline.row("rounding", "exact".into(), size));
    let rounded = compact_one("rounded requests", &workload::rounded_up(workload), base)?;
    rows.push(Summed::of(&[rounded]).row("rounding", "powers of two".into(), size));

    rows.push(baseline.row("reclamation", "without".into(), size));
    let reclaiming = CompactConfig {
        charging: config.reclaim,
        ..base.clone()
    };
    let reclaimed = compact_one("with reclamation", workload, &reclaiming)?;
    rows.push(Summed::of(&[reclaimed]).row("reclamation", "with".into(), size));

    Ok(ExperimentReport {
        machines_total: workload.machines.len(),
        tasks: workload.tasks.len(),
        percentile: base.percentile,
        trials: base.trials,
        rows,
    })
}

/// Experiment groups in the order of the figure's colours.
const GROUPS: [&str; 4] = ["segregation", "subdivision", "rounding", "reclamation"];

/// The report as a bar chart: each variant's size in percent of the baseline, with the
/// trials' min–max as whiskers.
pub fn figure(report: &ExperimentReport) -> Figure {
    let baseline = report
        .rows
        .first()
        .map_or(1, |r| r.machines_at_percentile.max(1)) as f64;
    let bars: Vec<Bar> = report
        .rows
        .iter()
        .map(|row| Bar {
            label: row.variant.clone(),
            value: row.ratio_to_baseline * 100.0,
            low: row.machines_min as f64 * 100.0 / baseline,
            high: row.machines_max as f64 * 100.0 / baseline,
            group: GROUPS
                .iter()
                .position(|g| *g == row.experiment)
                .unwrap_or(0),
        })
        .collect();
    figure::bar_chart(
        &format!(
            "Machines, % of the shared cell (p{}, {} trials, min-max)",
            report.percentile, report.trials
        ),
        "machines, % of the shared cell",
        "%",
        &bars,
        &GROUPS,
        100.0,
    )
}
