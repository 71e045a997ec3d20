//! In process, no cell: what the scheduler's cell watch costs per task for the benchmark's
//! job, with changes that carry only the changed tasks (as the master sends them) beside
//! the whole job per change (as it sent them before), in the same run. The job's life is
//! replayed through `CellState::apply` as the cell lives it: plans of
//! `PLAN_PLACEMENTS` tasks, then report batches of `REPORT_TASKS` tasks going RUNNING while
//! the batch before them SUCCEEDS. For each applied entry both forms are built from the
//! state, encoded, decoded and applied to a scheduler view (`ViewSync`); the two views must
//! agree at the end. It also prints the master's `apply` time per task of plans and of
//! reports.

use borg_model::{JobSpec, JobType, MachineInfo, Resources, TaskId, TaskState, TaskTemplate};
use borg_proto::prost::Message;
use borg_proto::v1;
use borgmaster::state::{
    CellState, ChangeSet, Command, LogEntry, MachineReport, PlannedPlacement, TaskReport,
};
use std::time::{Duration, Instant};

/// Tasks per committed plan (the scheduler places a 1,000-task job in a few rounds).
const PLAN_PLACEMENTS: u32 = 250;
/// Tasks per report batch (the borglet starts 16 tasks at a time).
const REPORT_TASKS: u32 = 16;
/// Times the whole replay is repeated; the median repeat is printed.
const REPEATS: usize = 5;

/// Time and bytes of one watch form over a replay.
#[derive(Default, Clone, Copy)]
struct FormCost {
    /// The master: building the change from the state and encoding it.
    master: Duration,
    /// The scheduler: decoding it and applying it to its view.
    scheduler: Duration,
    bytes: usize,
}

struct Replay {
    apply_plans: Duration,
    apply_reports: Duration,
    changed: FormCost,
    whole: FormCost,
}

/// The change as masters built it before: every touched job whole.
fn whole_job_change(state: &CellState, changes: &ChangeSet) -> v1::CellChange {
    let mut change = v1::CellChange::default();
    for name in &changes.machines {
        match state.machine_view(name) {
            Some(m) => change.machines_upserted.push(m),
            None => change.machines_removed.push(name.clone()),
        }
    }
    for name in &changes.jobs {
        match state.job_view(name) {
            Some(job) => change.jobs_upserted.push(job),
            None => change.jobs_removed.push(name.clone()),
        }
    }
    change
}

/// Builds, encodes, decodes and applies one update in one form, adding its cost to `cost`.
fn stream_one(
    cost: &mut FormCost,
    sync: &mut scheduler::ViewSync,
    index: u64,
    build: impl FnOnce() -> v1::CellChange,
) {
    let started = Instant::now();
    let update = v1::CellUpdate {
        index,
        update: Some(v1::cell_update::Update::Change(build())),
    };
    let bytes = update.encode_to_vec();
    cost.master += started.elapsed();
    cost.bytes += bytes.len();
    let started = Instant::now();
    let update = v1::CellUpdate::decode(bytes.as_slice()).expect("decodes what it encoded");
    let skipped = sync.apply(update).expect("a change after the snapshot");
    cost.scheduler += started.elapsed();
    assert!(skipped.is_empty(), "{skipped:?}");
}

fn task_report(index: u32, state: TaskState) -> TaskReport {
    TaskReport {
        task: TaskId::new("e2e", index),
        incarnation: 1,
        state,
        exit_code: (state == TaskState::Succeeded).then_some(0),
        restarts: 0,
        pid: 1000 + index,
        usage: Resources::ZERO,
        message: String::new(),
        ports: Default::default(),
    }
}

/// The commands of the job's life after its submission, in order, with whether each is a
/// plan.
fn life(tasks: u32) -> Vec<(bool, Command)> {
    let mut commands = Vec::new();
    for first in (0..tasks).step_by(PLAN_PLACEMENTS as usize) {
        let placements = (first..(first + PLAN_PLACEMENTS).min(tasks))
            .map(|index| PlannedPlacement {
                task: TaskId::new("e2e", index),
                incarnation: 0,
                machine: "m1".into(),
                machine_version: 0,
                preempt: Vec::new(),
            })
            .collect();
        commands.push((true, Command::CommitPlan { placements }));
    }
    let batches = tasks.div_ceil(REPORT_TASKS);
    for batch in 0..=batches {
        let running = (batch * REPORT_TASKS..((batch + 1) * REPORT_TASKS).min(tasks))
            .map(|i| task_report(i, TaskState::Running));
        let succeeded = (batch.saturating_sub(1) * REPORT_TASKS..(batch * REPORT_TASKS).min(tasks))
            .filter(|_| batch > 0)
            .map(|i| task_report(i, TaskState::Succeeded));
        let reports = vec![MachineReport {
            machine: "m1".into(),
            unreachable: false,
            tasks: succeeded.chain(running).collect(),
            usage: Resources::ZERO,
        }];
        commands.push((false, Command::ApplyReports { reports }));
    }
    commands
}

fn replay(tasks: u32) -> Replay {
    let mut state = CellState::new();
    let mut index = 0u64;
    let mut apply = |state: &mut CellState, command: Command| {
        index += 1;
        let entry = LogEntry {
            request_id: format!("watch-cost-{index}"),
            time_ms: index * 10,
            command,
        };
        (index, state.apply(index, &entry))
    };
    apply(
        &mut state,
        Command::RegisterMachine {
            info: MachineInfo {
                name: "m1".into(),
                address: "127.0.0.1:1".into(),
                capacity: Resources::new(1_000_000, 1 << 50),
                ..Default::default()
            },
        },
    );
    let spec = JobSpec {
        name: "e2e".into(),
        owner: "bench".into(),
        priority: 100,
        replicas: tasks,
        job_type: JobType::Batch,
        task: TaskTemplate {
            command: "/bin/true".into(),
            resources: Resources::new(1, 16 << 20),
            ..Default::default()
        },
        ..Default::default()
    };
    apply(
        &mut state,
        Command::SubmitJob {
            spec,
            check_index: None,
            must_exist: false,
        },
    );
    let snapshot = v1::CellUpdate {
        index: state.applied_index(),
        update: Some(v1::cell_update::Update::Snapshot(state.snapshot_view())),
    };
    let (mut changed_sync, mut whole_sync) =
        (scheduler::ViewSync::new(), scheduler::ViewSync::new());
    changed_sync.apply(snapshot.clone()).expect("snapshot");
    whole_sync.apply(snapshot).expect("snapshot");
    let mut replay = Replay {
        apply_plans: Duration::ZERO,
        apply_reports: Duration::ZERO,
        changed: FormCost::default(),
        whole: FormCost::default(),
    };
    for (is_plan, command) in life(tasks) {
        let started = Instant::now();
        let (index, applied) = apply(&mut state, command);
        let took = started.elapsed();
        if is_plan {
            replay.apply_plans += took;
        } else {
            replay.apply_reports += took;
        }
        stream_one(&mut replay.changed, &mut changed_sync, index, || {
            state.change_view(&applied.changes)
        });
        stream_one(&mut replay.whole, &mut whole_sync, index, || {
            whole_job_change(&state, &applied.changes)
        });
    }
    let done = |sync: &scheduler::ViewSync| {
        let job = sync.view().job("e2e").expect("the job is in the view");
        (
            job.active,
            job.tasks
                .values()
                .filter(|t| t.state == TaskState::Succeeded)
                .count(),
        )
    };
    assert_eq!(
        done(&changed_sync),
        (false, tasks as usize),
        "every task succeeded"
    );
    assert_eq!(done(&changed_sync), done(&whole_sync));
    replay
}

/// Runs the replay `REPEATS` times and prints the median repeat's figures.
pub fn print(tasks: usize) {
    let tasks = u32::try_from(tasks).unwrap_or(u32::MAX);
    let mut replays: Vec<Replay> = (0..REPEATS).map(|_| replay(tasks)).collect();
    let total =
        |r: &Replay| r.changed.master + r.changed.scheduler + r.whole.master + r.whole.scheduler;
    replays.sort_by_key(total);
    let r = &replays[REPEATS / 2];
    let per_task_us = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(tasks);
    println!(
        "watch stream, in process ({tasks} tasks, plans of {PLAN_PLACEMENTS}, reports of {REPORT_TASKS}; median of {REPEATS}):"
    );
    println!("| watch form | master: build + encode (µs per task) | scheduler: decode + apply (µs per task) | bytes per task |");
    println!("|---|---|---|---|");
    for (name, cost) in [
        ("changed tasks only", r.changed),
        ("whole job per change (before)", r.whole),
    ] {
        println!(
            "| {name} | {:.1} | {:.1} | {:.0} |",
            per_task_us(cost.master),
            per_task_us(cost.scheduler),
            cost.bytes as f64 / f64::from(tasks)
        );
    }
    let ratio = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64().max(1e-9);
    println!(
        "whole / changed: master {:.1}x, scheduler {:.1}x, bytes {:.1}x",
        ratio(r.changed.master, r.whole.master),
        ratio(r.changed.scheduler, r.whole.scheduler),
        r.whole.bytes as f64 / r.changed.bytes.max(1) as f64
    );
    println!(
        "master apply (one replica): plans {:.1} µs per task, reports {:.1} µs per task",
        per_task_us(r.apply_plans),
        per_task_us(r.apply_reports)
    );
}
