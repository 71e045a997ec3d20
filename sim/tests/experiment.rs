//! Borg §5's experiments on a small synthetic cell: every variant is compacted and compared
//! with the shared cell, and the figure is written as SVG and PNG.

use borg_model::{AppClass, MachineInfo, Resources, TaskId, TaskState};
use sim::experiment::{self, ExperimentConfig};
use sim::trace::{TraceTask, Workload};

fn workload() -> Workload {
    let machines = (0..40)
        .map(|i| MachineInfo {
            name: format!("m{i}"),
            capacity: Resources::new(16_000, 64 << 30),
            ..Default::default()
        })
        .collect();
    // 60 jobs of 4 tasks: even jobs production, odd ones batch; requests of 2 cores and
    // 12 GiB round up to 2.048 cores and 16 GiB.
    let tasks = (0..60)
        .flat_map(|j| {
            (0..4).map(move |i| TraceTask {
                id: TaskId::new(format!("job{j}"), i),
                owner: format!("user{}", j % 5),
                priority: if j % 2 == 0 { 200 } else { 100 },
                trace_priority: 0,
                scheduling_class: 0,
                app_class: AppClass::Batch,
                request: Resources::new(2_000, 12 << 30),
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
fn every_experiment_is_compared_with_the_shared_cell() {
    let mut config = ExperimentConfig::new();
    config.compact.trials = 3;
    config.compact.threads = 2;
    config.splits = vec![2];
    let labels = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let report = experiment::run(&workload(), &config, &|label, _, _| {
        labels.lock().unwrap().insert(label.to_owned());
    })
    .unwrap();
    let row = |experiment: &str, variant: &str| {
        report
            .rows
            .iter()
            .find(|r| r.experiment == experiment && r.variant == variant)
            .unwrap_or_else(|| panic!("no row {experiment}/{variant}: {:?}", report.rows))
            .clone()
    };
    let shared = row("segregation", "shared");
    assert!((shared.ratio_to_baseline - 1.0).abs() < 1e-9);
    assert_eq!(shared.tasks, 240);
    // 240 tasks of 12 GiB, 5 per 64 GiB machine: 48 machines (the cell grows from 40).
    assert_eq!(shared.machines_at_percentile, 48);
    let segregated = row("segregation", "segregated");
    assert_eq!(segregated.cells, 2);
    assert!(segregated.machines_at_percentile >= shared.machines_at_percentile);
    assert_eq!(row("subdivision", "2 cells").tasks, 240);
    // Rounded to 16 GiB: 4 per machine, 60 machines.
    assert_eq!(row("rounding", "powers of two").machines_at_percentile, 60);
    assert!(row("reclamation", "with").ratio_to_baseline < 1.0);
    assert!(labels.lock().unwrap().contains("baseline"));

    let figure = experiment::figure(&report);
    let svg = figure.to_svg();
    // Background, one bar per row, one legend swatch per experiment.
    assert_eq!(svg.matches("<rect").count(), 1 + report.rows.len() + 4);
    assert!(svg.contains("powers"));
    assert!(svg.contains(">reclamation<"));
    assert!(figure.to_png().starts_with(b"\x89PNG"));
}

#[test]
fn a_bad_split_is_refused() {
    let mut config = ExperimentConfig::new();
    config.splits = vec![1];
    let error = experiment::run(&workload(), &config, &|_, _, _| {}).unwrap_err();
    assert!(error.to_string().contains("split"), "{error}");
}
