//! "Would this job fit": a job placed on a cell view built from a wire snapshot, as the
//! scheduler builds it from a checkpoint.

use borg_model::{JobSpec, MachineInfo, Resources, TaskTemplate};
use borg_proto::v1;
use scheduler::{CellView, PlacementConfig};

fn spec(name: &str, priority: u32, replicas: u32, cpu: u64) -> JobSpec {
    JobSpec {
        name: name.into(),
        owner: "alice".into(),
        priority,
        replicas,
        task: TaskTemplate {
            command: "/bin/true".into(),
            resources: Resources::new(cpu, 1 << 30),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn running_job(spec: JobSpec, machines: &[&str]) -> v1::Job {
    v1::Job {
        tasks: machines
            .iter()
            .enumerate()
            .map(|(i, m)| v1::Task {
                job: spec.name.clone(),
                index: i as u32,
                state: v1::TaskState::Running as i32,
                machine: (*m).into(),
                incarnation: 1,
                ..Default::default()
            })
            .collect(),
        spec: Some(spec.into()),
        state: v1::JobState::Active as i32,
        ..Default::default()
    }
}

fn cell() -> CellView {
    let machines = ["m0", "m1"]
        .iter()
        .map(|name| v1::Machine {
            info: Some(
                MachineInfo {
                    name: (*name).into(),
                    capacity: Resources::new(4_000, 8 << 30),
                    ..Default::default()
                }
                .into(),
            ),
            state: v1::MachineState::Up as i32,
            version: 1,
            ..Default::default()
        })
        .collect();
    // m0 runs a batch task of 3 cores, m1 a production task of 3 cores.
    let jobs = vec![
        running_job(spec("batch", 100, 1, 3_000), &["m0"]),
        running_job(spec("prod", 200, 1, 3_000), &["m1"]),
    ];
    let mut view = CellView::new();
    let errors =
        scheduler::view_sync::apply_snapshot(&mut view, 7, v1::CellSnapshot { machines, jobs });
    assert!(errors.is_empty(), "{errors:?}");
    view
}

#[test]
fn a_small_job_fits_without_preempting() {
    let view = cell();
    let job = spec("small", 100, 2, 1_000);
    let tasks = sim::fit::job_tasks(&job, |_| job.task.resources);
    let report = sim::fit::fit(&view, "small", &tasks, &PlacementConfig::new(), 1);
    assert!(report.fits(), "{report:?}");
    assert_eq!(report.placed.len(), 2);
    assert!(report.preempted().is_empty());
}

#[test]
fn a_production_job_preempts_batch_work_but_never_production() {
    let view = cell();
    let job = spec("web", 200, 2, 2_000);
    let tasks = sim::fit::job_tasks(&job, |_| job.task.resources);
    let report = sim::fit::fit(&view, "web", &tasks, &PlacementConfig::new(), 1);
    // One task goes to m0 by evicting the batch task; m1's production task stays, so after
    // that the second task has room only on m0 (4 cores free once the batch task is gone).
    assert!(report.fits(), "{report:?}");
    let preempted: Vec<String> = report.preempted().iter().map(|t| t.to_string()).collect();
    assert_eq!(preempted, vec!["batch/0"]);
    assert!(
        report.placed.iter().all(|p| p.machine == "m0"),
        "{report:?}"
    );

    let big = spec("big", 200, 3, 2_000);
    let tasks = sim::fit::job_tasks(&big, |_| big.task.resources);
    let report = sim::fit::fit(&view, "big", &tasks, &PlacementConfig::new(), 1);
    assert!(!report.fits());
    assert_eq!(report.pending.len(), 1);
    assert!(report.pending[0].1.contains("cpu"), "{:?}", report.pending);
}
