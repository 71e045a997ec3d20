//! Behaviour of the state machine as a whole, through `apply` and the read views.

use super::*;
use borg_model::{JobSpec, MachineInfo, Resources, TaskId, TaskState, TaskTemplate};
use borg_proto::v1;

const GIB: u64 = 1 << 30;

pub(super) fn spec(name: &str, replicas: u32, priority: u32, cpu_millis: u64) -> JobSpec {
    JobSpec {
        name: name.into(),
        owner: "alice".into(),
        priority,
        replicas,
        task: TaskTemplate {
            command: "/bin/sleep".into(),
            args: vec!["1000".into()],
            resources: Resources::new(cpu_millis, GIB),
            ..Default::default()
        },
        ..Default::default()
    }
}

pub(super) fn machine(name: &str, cpu_millis: u64) -> MachineInfo {
    MachineInfo {
        name: name.into(),
        address: format!("127.0.0.1:{}", 7000 + name.len()),
        capacity: Resources::new(cpu_millis, 16 * GIB),
        ..Default::default()
    }
}

pub(super) fn submit(spec: JobSpec) -> Command {
    Command::SubmitJob {
        spec,
        check_index: None,
        must_exist: false,
    }
}

pub(super) fn placement(
    job: &str,
    index: u32,
    incarnation: u64,
    machine: &str,
) -> PlannedPlacement {
    PlannedPlacement {
        task: TaskId::new(job, index),
        incarnation,
        machine: machine.into(),
        machine_version: 0,
        preempt: vec![],
    }
}

pub(super) fn report(machine: &str, tasks: Vec<TaskReport>) -> Command {
    Command::ApplyReports {
        reports: vec![MachineReport {
            machine: machine.into(),
            unreachable: false,
            tasks,
            usage: Resources::ZERO,
        }],
    }
}

pub(super) fn task_report(job: &str, index: u32, incarnation: u64, state: TaskState) -> TaskReport {
    TaskReport {
        task: TaskId::new(job, index),
        incarnation,
        state,
        exit_code: if state == TaskState::Succeeded {
            Some(0)
        } else {
            None
        },
        restarts: 0,
        pid: 4242,
        usage: Resources::ZERO,
        message: String::new(),
        ports: Default::default(),
    }
}

/// A state plus the next log index; entries get time = index * 1000.
pub(super) struct Cell {
    pub(super) state: CellState,
    next_index: u64,
    next_request: u64,
}

impl Cell {
    pub(super) fn new() -> Self {
        Cell {
            state: CellState::new(),
            next_index: 1,
            next_request: 0,
        }
    }

    fn apply_with_id(&mut self, request_id: &str, command: Command) -> Applied {
        let index = self.next_index;
        self.next_index += 1;
        let entry = LogEntry {
            request_id: request_id.into(),
            time_ms: index * 1000,
            command,
        };
        self.state.apply(index, &entry)
    }

    /// Applies with a fresh request id.
    pub(super) fn apply(&mut self, command: Command) -> Applied {
        self.next_request += 1;
        let id = format!("req-{}", self.next_request);
        self.apply_with_id(&id, command)
    }

    pub(super) fn task(&self, job: &str, index: u32) -> v1::Task {
        let job = self.state.job_view(job).expect("job exists");
        job.tasks
            .into_iter()
            .find(|t| t.index == index)
            .expect("task exists")
    }

    fn task_state(&self, job: &str, index: u32) -> v1::TaskState {
        self.task(job, index).state()
    }

    pub(super) fn machine(&self, name: &str) -> v1::Machine {
        self.state.machine_view(name).expect("machine exists")
    }

    /// Desired (job, index, incarnation) on `machine`.
    pub(super) fn desired(&self, machine: &str) -> Vec<(String, u32, u64)> {
        self.state
            .assignment_view(0, 1)
            .into_iter()
            .find(|a| a.machine == machine)
            .map(|a| {
                a.desired
                    .into_iter()
                    .map(|t| (t.job, t.index, t.incarnation))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Everything a client can observe (not the applied index or request window).
    fn observable(&self) -> (Vec<v1::Job>, Vec<v1::Machine>, Vec<v1::Event>) {
        (
            self.state.jobs_view(None),
            self.state.machines_view(),
            self.state.events_view(0, None, usize::MAX),
        )
    }

    pub(super) fn plan(&mut self, placements: Vec<PlannedPlacement>) -> Vec<PlacementOutcome> {
        match self.apply(Command::CommitPlan { placements }).outcome {
            Outcome::PlanApplied { results } => results,
            other => panic!("plan not applied: {other:?}"),
        }
    }
}

pub(super) fn accepted(results: &[PlacementOutcome]) -> Vec<bool> {
    results.iter().map(|r| r.accepted).collect()
}

#[test]
fn submit_creates_n_pending_tasks() {
    let mut cell = Cell::new();
    let applied = cell.apply(submit(spec("web", 3, 100, 500)));
    assert_eq!(
        applied.outcome,
        Outcome::JobSubmitted {
            name: "web".into(),
            created: true
        }
    );
    assert!(applied.changes.jobs.contains("web"));
    let job = cell.state.job_view("web").unwrap();
    assert_eq!(job.state(), v1::JobState::Active);
    assert_eq!(job.create_index, 1);
    assert_eq!(job.modify_index, 1);
    assert_eq!(job.tasks.len(), 3);
    for (i, t) in job.tasks.iter().enumerate() {
        assert_eq!(t.index, i as u32);
        assert_eq!(t.state(), v1::TaskState::Pending);
        assert_eq!(t.incarnation, 0);
        assert!(t.machine.is_empty());
    }
    let events = cell.state.events_view(0, Some("web"), 10);
    assert_eq!(events[0].kind, "job_submitted");
}

#[test]
fn an_invalid_job_is_rejected_with_the_reason() {
    let mut cell = Cell::new();
    let mut bad = spec("web", 1, 100, 500);
    bad.task.command.clear();
    let applied = cell.apply(submit(bad));
    let Outcome::Rejected(StateError::InvalidJob { reason }) = applied.outcome else {
        panic!("expected InvalidJob, got {:?}", applied.outcome);
    };
    assert!(reason.contains("command"), "{reason}");
    assert!(cell.state.jobs_view(None).is_empty());
}

#[test]
fn resubmit_with_changed_replicas_adds_and_kills_the_highest() {
    let mut cell = Cell::new();
    cell.apply(Command::RegisterMachine {
        info: machine("m1", 8000),
    });
    cell.apply(submit(spec("web", 2, 100, 500)));
    cell.plan(vec![placement("web", 1, 0, "m1")]);

    let applied = cell.apply(submit(spec("web", 4, 100, 500)));
    assert_eq!(
        applied.outcome,
        Outcome::JobSubmitted {
            name: "web".into(),
            created: false
        }
    );
    let job = cell.state.job_view("web").unwrap();
    assert_eq!(job.modify_index, 4);
    assert_eq!(job.tasks.len(), 4);
    assert_eq!(
        cell.task_state("web", 1),
        v1::TaskState::Scheduled,
        "untouched"
    );
    assert_eq!(cell.task_state("web", 3), v1::TaskState::Pending);

    cell.apply(submit(spec("web", 1, 100, 500)));
    assert_eq!(cell.task_state("web", 0), v1::TaskState::Pending);
    for i in 1..4 {
        assert_eq!(cell.task_state("web", i), v1::TaskState::Killed);
    }
    assert!(cell.desired("m1").is_empty(), "the killed task left m1");
    assert_eq!(cell.machine("m1").task_count, 0);

    // Growing again revives index 1 with a new incarnation, never reusing the old one.
    cell.apply(submit(spec("web", 2, 100, 500)));
    let revived = cell.task("web", 1);
    assert_eq!(revived.state(), v1::TaskState::Pending);
    assert_eq!(revived.incarnation, 2);
}

#[test]
fn a_changed_template_repends_tasks_with_a_new_incarnation() {
    let mut cell = Cell::new();
    cell.apply(Command::RegisterMachine {
        info: machine("m1", 8000),
    });
    cell.apply(submit(spec("web", 2, 100, 500)));
    cell.plan(vec![placement("web", 0, 0, "m1")]);
    assert_eq!(cell.desired("m1"), vec![("web".to_string(), 0, 1)]);

    let mut changed = spec("web", 2, 100, 500);
    changed.task.args = vec!["2000".into()];
    cell.apply(submit(changed));
    let t0 = cell.task("web", 0);
    assert_eq!(t0.state(), v1::TaskState::Pending);
    assert_eq!(t0.incarnation, 2);
    assert_eq!(t0.message, "job updated");
    assert_eq!(cell.task("web", 1).incarnation, 1, "pending tasks too");
    assert!(cell.desired("m1").is_empty());

    // A plan made against the old incarnation is stale.
    let results = cell.plan(vec![placement("web", 1, 0, "m1")]);
    assert!(!results[0].accepted);
    assert!(results[0].reason.contains("stale"), "{}", results[0].reason);
}

#[test]
fn an_identical_resubmit_changes_nothing() {
    let mut cell = Cell::new();
    cell.apply(submit(spec("web", 2, 100, 500)));
    let before = cell.observable();
    let applied = cell.apply(submit(spec("web", 2, 100, 500)));
    assert_eq!(
        applied.outcome,
        Outcome::JobSubmitted {
            name: "web".into(),
            created: false
        }
    );
    assert!(applied.changes.is_empty());
    assert_eq!(cell.observable(), before);
}

#[test]
fn check_index_guards_are_enforced_and_a_refusal_changes_nothing() {
    let mut cell = Cell::new();
    let guarded = |spec: JobSpec, check_index, must_exist| Command::SubmitJob {
        spec,
        check_index,
        must_exist,
    };
    assert_eq!(
        cell.apply(guarded(spec("web", 1, 100, 500), None, true))
            .outcome,
        Outcome::Rejected(StateError::JobNotFound { name: "web".into() })
    );
    assert_eq!(
        cell.apply(guarded(spec("web", 1, 100, 500), Some(3), false))
            .outcome,
        Outcome::Rejected(StateError::JobNotFound { name: "web".into() })
    );
    cell.apply(guarded(spec("web", 1, 100, 500), Some(0), false));
    let before = cell.observable();

    let applied = cell.apply(guarded(spec("web", 5, 100, 500), Some(7), false));
    assert_eq!(
        applied.outcome,
        Outcome::Rejected(StateError::CheckIndexMismatch {
            name: "web".into(),
            expected: 7,
            actual: 3,
        })
    );
    assert!(applied.changes.is_empty());
    assert_eq!(
        cell.apply(guarded(spec("web", 5, 100, 500), Some(0), false))
            .outcome,
        Outcome::Rejected(StateError::JobAlreadyExists { name: "web".into() })
    );
    assert_eq!(cell.observable(), before, "refusals change nothing");

    let applied = cell.apply(guarded(spec("web", 5, 100, 500), Some(3), true));
    assert!(matches!(applied.outcome, Outcome::JobSubmitted { .. }));
    assert_eq!(cell.state.job_view("web").unwrap().tasks.len(), 5);
}

#[test]
fn a_duplicate_request_id_is_applied_once_with_the_same_outcome() {
    let mut cell = Cell::new();
    let first = cell.apply_with_id("r1", submit(spec("web", 1, 100, 500)));
    let before = cell.observable();
    // The retry even carries a different spec: it is the id that counts.
    let again = cell.apply_with_id("r1", submit(spec("web", 9, 100, 500)));
    assert_eq!(again.outcome, first.outcome);
    // Answered with the index of the first application, not its own.
    assert_eq!(first.committed_index, 1);
    assert_eq!(again.committed_index, 1);
    assert!(again.changes.is_empty());
    assert_eq!(cell.observable(), before);
    assert_eq!(cell.state.job_view("web").unwrap().tasks.len(), 1);

    // Rejections are remembered as well.
    let refused = cell.apply_with_id("r2", Command::KillJob { name: "db".into() });
    cell.apply(submit(spec("db", 1, 100, 500)));
    let retried = cell.apply_with_id("r2", Command::KillJob { name: "db".into() });
    assert_eq!(retried.outcome, refused.outcome);
    assert_eq!(cell.task_state("db", 0), v1::TaskState::Pending);
}

#[test]
fn barriers_are_not_remembered_as_requests() {
    let mut cell = Cell::new();
    let barrier = cell.apply_with_id("barrier-1", Command::Noop);
    assert_eq!(barrier.outcome, Outcome::Noop);
    // The same id on a real mutation is a new request: the barrier took no slot.
    let submitted = cell.apply_with_id("barrier-1", submit(spec("web", 1, 100, 500)));
    assert!(matches!(
        submitted.outcome,
        Outcome::JobSubmitted { created: true, .. }
    ));
    assert_eq!(submitted.committed_index, 2);
}

#[test]
fn an_entry_at_or_below_the_applied_index_changes_nothing() {
    let mut cell = Cell::new();
    cell.apply(submit(spec("web", 1, 100, 500)));
    let hash = cell.state.state_hash();
    let entry = LogEntry {
        request_id: "late".into(),
        time_ms: 0,
        command: Command::KillJob { name: "web".into() },
    };
    let applied = cell.state.apply(1, &entry);
    assert_eq!(applied.outcome, Outcome::Noop);
    assert_eq!(cell.state.state_hash(), hash);
    assert_eq!(cell.state.applied_index(), 1);
}

#[test]
fn one_log_entry_applies_its_commands_in_order_each_with_its_own_index() {
    let mut cell = Cell::new();
    let command = |id: &str, command: Command| LogEntry {
        request_id: id.into(),
        time_ms: 5,
        command,
    };
    let mut bigger = spec("web", 2, 100, 500);
    bigger.task.args = vec!["2".into()];
    let entry = vec![
        command("a", submit(spec("web", 1, 100, 500))),
        // Guarded on the index the first command gets within the same entry.
        command(
            "b",
            Command::SubmitJob {
                spec: bigger,
                check_index: Some(1),
                must_exist: true,
            },
        ),
        // A retry of "a" in the same entry is answered from the dedup window.
        command("a", submit(spec("web", 1, 100, 500))),
    ];
    let results = cell.state.apply_entry(1, &entry);
    let indices: Vec<u64> = results.iter().map(|r| r.committed_index).collect();
    assert_eq!(indices, vec![1, 2, 1]);
    assert!(matches!(
        results[1].outcome,
        Outcome::JobSubmitted { created: false, .. }
    ));
    assert_eq!(results[2].outcome, results[0].outcome);
    assert_eq!(cell.state.applied_index(), 3);
    assert_eq!(cell.state.applied_log_index(), 1);
    assert_eq!(cell.state.jobs["web"].modify_index, 2);
    // A stale guard (the index before the second command) is refused in the next entry.
    let stale = command(
        "c",
        Command::SubmitJob {
            spec: spec("web", 3, 100, 500),
            check_index: Some(1),
            must_exist: true,
        },
    );
    let results = cell.state.apply_entry(2, std::slice::from_ref(&stale));
    assert!(matches!(results[0].outcome, Outcome::Rejected(_)));
    assert_eq!(results[0].committed_index, 4);
    // An entry applied already changes nothing.
    let hash = cell.state.state_hash();
    assert!(cell.state.apply_entry(2, &[stale]).is_empty());
    assert_eq!(cell.state.state_hash(), hash);
    let restored = CellState::from_snapshot_bytes(&cell.state.to_snapshot_bytes()).unwrap();
    assert_eq!(restored.applied_log_index(), 2);
    assert_eq!(restored.applied_index(), 4);
}

#[test]
fn an_accepted_placement_schedules_the_task_and_bumps_versions() {
    let mut cell = Cell::new();
    cell.apply(Command::RegisterMachine {
        info: machine("m1", 2000),
    });
    cell.apply(submit(spec("web", 2, 100, 500)));
    let version = cell.machine("m1").version;
    let applied = cell.apply(Command::CommitPlan {
        placements: vec![placement("web", 0, 0, "m1")],
    });
    assert_eq!(
        applied.outcome,
        Outcome::PlanApplied {
            results: vec![PlacementOutcome {
                task: TaskId::new("web", 0),
                accepted: true,
                reason: String::new()
            }]
        }
    );
    assert!(applied.changes.jobs.contains("web"));
    assert!(applied.changes.machines.contains("m1"));
    let t = cell.task("web", 0);
    assert_eq!(t.state(), v1::TaskState::Scheduled);
    assert_eq!(t.machine, "m1");
    assert_eq!(t.incarnation, 1);
    let m = cell.machine("m1");
    assert!(m.version > version);
    assert_eq!(m.task_count, 1);
    assert_eq!(m.allocated.unwrap().cpu_millis, 500);
    let desired = &cell.state.assignment_view(0, 1)[0].desired[0];
    assert_eq!(desired.owner, "alice");
    assert_eq!(desired.template.as_ref().unwrap().command, "/bin/sleep");
}

/// A plan checks each placement against what the ones before it took, whether committed
/// in one plan or one plan each: the same verdicts and the same state, prod (limits) and
/// non-prod (reservations), with and without victims.
#[test]
fn one_large_plan_decides_as_its_placements_one_by_one() {
    let setup = || {
        let mut cell = Cell::new();
        for m in ["m1", "m2"] {
            cell.apply(Command::RegisterMachine {
                info: machine(m, 1000),
            });
        }
        cell.apply(submit(spec("low", 2, 100, 300)));
        cell.apply(submit(spec("batch", 8, 100, 200)));
        cell.apply(submit(spec("prod", 3, 200, 400)));
        cell.plan(vec![
            placement("low", 0, 0, "m1"),
            placement("low", 1, 0, "m2"),
        ]);
        cell
    };
    let mut placements: Vec<PlannedPlacement> = (0..8)
        .map(|i| placement("batch", i, 0, ["m1", "m2"][i as usize % 2]))
        .collect();
    let mut with_victim = placement("prod", 0, 0, "m1");
    with_victim.preempt = vec![(TaskId::new("low", 0), 1)];
    placements.insert(3, with_victim);
    placements.push(placement("prod", 1, 0, "m2"));
    placements.push(placement("prod", 2, 0, "m1"));

    let mut together = setup();
    let verdicts = accepted(&together.plan(placements.clone()));
    let mut apart = setup();
    let one_by_one: Vec<bool> = placements
        .into_iter()
        .map(|p| accepted(&apart.plan(vec![p]))[0])
        .collect();
    assert_eq!(verdicts, one_by_one);
    assert!(
        verdicts.contains(&true) && verdicts.contains(&false),
        "{verdicts:?}"
    );
    // (Times differ: the one-by-one plans are later entries.)
    let tasks = |cell: &Cell| -> Vec<(String, u32, i32, String, u64)> {
        cell.state
            .jobs_view(None)
            .into_iter()
            .flat_map(|j| j.tasks)
            .map(|t| (t.job, t.index, t.state, t.machine, t.incarnation))
            .collect()
    };
    assert_eq!(tasks(&together), tasks(&apart));
    assert_eq!(together.state.machines_view(), apart.state.machines_view());
}

#[test]
fn placements_that_no_longer_fit_are_rejected_with_reasons() {
    let mut cell = Cell::new();
    cell.apply(Command::RegisterMachine {
        info: machine("m1", 1000),
    });
    cell.apply(Command::RegisterMachine {
        info: machine("m2", 1000),
    });
    cell.apply(submit(spec("web", 4, 100, 600)));
    cell.apply(submit(spec("gone", 1, 100, 100)));
    cell.apply(Command::KillJob {
        name: "gone".into(),
    });
    cell.apply(Command::ApplyReports {
        reports: vec![MachineReport {
            machine: "m2".into(),
            unreachable: true,
            tasks: vec![],
            usage: Resources::ZERO,
        }],
    });

    let results = cell.plan(vec![
        placement("web", 0, 0, "m1"),
        // Fits alone, but not after the placement before it.
        placement("web", 1, 0, "m1"),
        placement("web", 2, 5, "m1"),
        placement("web", 3, 0, "m2"),
        placement("web", 0, 0, "m1"),
        placement("web", 9, 0, "m1"),
        placement("gone", 0, 0, "m1"),
        placement("nope", 0, 0, "m1"),
        placement("web", 3, 0, "m9"),
    ]);
    assert_eq!(
        accepted(&results),
        vec![true, false, false, false, false, false, false, false, false]
    );
    let reasons: Vec<&str> = results.iter().map(|r| r.reason.as_str()).collect();
    assert!(
        reasons[1].contains("cpu exhausted on \"m1\""),
        "{}",
        reasons[1]
    );
    assert!(
        reasons[2].contains("incarnation 5 is stale (now 0)"),
        "{}",
        reasons[2]
    );
    assert!(reasons[3].contains("is down"), "{}", reasons[3]);
    assert!(
        reasons[4].contains("is scheduled, not pending"),
        "{}",
        reasons[4]
    );
    assert!(reasons[5].contains("does not exist"), "{}", reasons[5]);
    assert!(reasons[6].contains("is killed"), "{}", reasons[6]);
    assert!(reasons[7].contains("does not exist"), "{}", reasons[7]);
    assert!(reasons[8].contains("not registered"), "{}", reasons[8]);
    assert_eq!(cell.machine("m1").allocated.unwrap().cpu_millis, 600);
    assert_eq!(cell.task_state("web", 1), v1::TaskState::Pending);
}

#[test]
fn preemption_follows_the_priority_rules() {
    let mut cell = Cell::new();
    cell.apply(Command::RegisterMachine {
        info: machine("m1", 1000),
    });
    cell.apply(submit(spec("free", 1, 50, 800)));
    cell.apply(submit(spec("prod", 1, 250, 800)));
    cell.apply(submit(spec("prod2", 1, 299, 800)));
    cell.apply(submit(spec("batch", 1, 150, 800)));
    cell.plan(vec![placement("free", 0, 0, "m1")]);

    // Without naming the victim it does not fit.
    let results = cell.plan(vec![placement("batch", 0, 0, "m1")]);
    assert!(
        results[0].reason.contains("exhausted"),
        "{}",
        results[0].reason
    );

    // A victim that is not on the machine (wrong incarnation) is refused.
    let mut p = placement("batch", 0, 0, "m1");
    p.preempt = vec![(TaskId::new("free", 0), 7)];
    let results = cell.plan(vec![p]);
    assert!(
        results[0].reason.contains("is not placed"),
        "{}",
        results[0].reason
    );

    let mut p = placement("batch", 0, 0, "m1");
    p.preempt = vec![(TaskId::new("free", 0), 1)];
    let applied = cell.apply(Command::CommitPlan {
        placements: vec![p],
    });
    assert!(matches!(&applied.outcome, Outcome::PlanApplied { results } if results[0].accepted));
    assert!(applied.changes.jobs.contains("free"));
    let victim = cell.task("free", 0);
    assert_eq!(victim.state(), v1::TaskState::Pending);
    assert_eq!(victim.message, "preempted by batch/0");
    assert_eq!(victim.incarnation, 1, "unchanged until placed again");
    assert_eq!(cell.desired("m1"), vec![("batch".to_string(), 0, 1)]);

    // A lower batch priority may not preempt a higher one.
    cell.apply(submit(spec("batch-low", 1, 120, 800)));
    let mut p = placement("batch-low", 0, 0, "m1");
    p.preempt = vec![(TaskId::new("batch", 0), 1)];
    let results = cell.plan(vec![p]);
    assert!(
        results[0].reason.contains("may not preempt"),
        "{}",
        results[0].reason
    );

    // Production preempts batch, but never production.
    let mut p = placement("prod", 0, 0, "m1");
    p.preempt = vec![(TaskId::new("batch", 0), 1)];
    assert_eq!(accepted(&cell.plan(vec![p])), vec![true]);
    let mut p = placement("prod2", 0, 0, "m1");
    p.preempt = vec![(TaskId::new("prod", 0), 1)];
    let results = cell.plan(vec![p]);
    assert!(!results[0].accepted);
    assert!(
        results[0].reason.contains("may not preempt"),
        "{}",
        results[0].reason
    );
    assert_eq!(cell.task_state("prod", 0), v1::TaskState::Scheduled);
}

#[test]
fn reports_move_a_task_through_running_to_succeeded() {
    let mut cell = Cell::new();
    cell.apply(Command::RegisterMachine {
        info: machine("m1", 1000),
    });
    cell.apply(submit(spec("batch", 1, 100, 500)));
    cell.plan(vec![placement("batch", 0, 0, "m1")]);

    let applied = cell.apply(report(
        "m1",
        vec![task_report("batch", 0, 1, TaskState::Running)],
    ));
    assert_eq!(applied.outcome, Outcome::ReportsApplied);
    let t = cell.task("batch", 0);
    assert_eq!(t.state(), v1::TaskState::Running);
    assert_eq!(t.pid, 4242);
    assert_eq!(cell.machine("m1").last_report_ms, applied_time(&cell));

    let mut restarted = task_report("batch", 0, 1, TaskState::Running);
    restarted.restarts = 2;
    restarted.exit_code = Some(3);
    cell.apply(report("m1", vec![restarted]));
    assert_eq!(cell.task("batch", 0).restarts, 2);

    cell.apply(report(
        "m1",
        vec![task_report("batch", 0, 1, TaskState::Succeeded)],
    ));
    let t = cell.task("batch", 0);
    assert_eq!(t.state(), v1::TaskState::Succeeded);
    assert_eq!(t.exit_code, Some(0));
    assert_eq!(t.machine, "m1", "a terminal task shows where it ran");
    assert_eq!(cell.machine("m1").allocated.unwrap().cpu_millis, 0);
    assert!(cell.desired("m1").is_empty());
    assert_eq!(
        cell.state.job_view("batch").unwrap().state(),
        v1::JobState::Done
    );
    let kinds: Vec<String> = cell
        .state
        .events_view(0, Some("batch"), 100)
        .into_iter()
        .map(|e| e.kind)
        .collect();
    for kind in [
        "task_scheduled",
        "task_running",
        "task_restarted",
        "task_exited",
        "job_done",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "{kind} missing in {kinds:?}"
        );
    }
}

fn applied_time(cell: &Cell) -> u64 {
    cell.state.applied_index() * 1000
}

#[test]
fn reports_about_other_incarnations_or_machines_are_ignored() {
    let mut cell = Cell::new();
    cell.apply(Command::RegisterMachine {
        info: machine("m1", 1000),
    });
    cell.apply(Command::RegisterMachine {
        info: machine("m2", 1000),
    });
    cell.apply(submit(spec("web", 1, 100, 500)));
    cell.plan(vec![placement("web", 0, 0, "m1")]);
    let before = cell.state.job_view("web");
    cell.apply(report(
        "m1",
        vec![task_report("web", 0, 0, TaskState::Failed)],
    ));
    cell.apply(report(
        "m2",
        vec![task_report("web", 0, 1, TaskState::Failed)],
    ));
    cell.apply(report(
        "m1",
        vec![task_report("nope", 0, 1, TaskState::Failed)],
    ));
    cell.apply(report(
        "m9",
        vec![task_report("web", 0, 1, TaskState::Failed)],
    ));
    assert_eq!(cell.state.job_view("web"), before);
    assert_eq!(cell.task_state("web", 0), v1::TaskState::Scheduled);
}

#[test]
fn an_unreachable_machine_goes_down_and_its_tasks_are_repended() {
    let mut cell = Cell::new();
    cell.apply(Command::RegisterMachine {
        info: machine("m1", 2000),
    });
    cell.apply(submit(spec("web", 2, 100, 500)));
    cell.plan(vec![
        placement("web", 0, 0, "m1"),
        placement("web", 1, 0, "m1"),
    ]);
    cell.apply(report(
        "m1",
        vec![task_report("web", 0, 1, TaskState::Running)],
    ));

    let applied = cell.apply(Command::ApplyReports {
        reports: vec![MachineReport {
            machine: "m1".into(),
            unreachable: true,
            tasks: vec![],
            usage: Resources::ZERO,
        }],
    });
    assert!(applied.changes.machines.contains("m1"));
    let m = cell.machine("m1");
    assert_eq!(m.state(), v1::MachineState::Down);
    assert_eq!(m.task_count, 0);
    for i in 0..2 {
        let t = cell.task("web", i);
        assert_eq!(t.state(), v1::TaskState::Pending);
        assert_eq!(t.message, "machine m1 lost");
        assert_eq!(t.incarnation, 1, "unchanged until re-placed");
        assert!(t.machine.is_empty());
    }
    // Still assigned to its shard (so it is polled), with nothing desired.
    assert!(cell
        .state
        .assignment_view(0, 1)
        .iter()
        .any(|a| a.machine == "m1"));
    assert!(cell.desired("m1").is_empty());

    // It answers again: Up, and its old tasks' reports are stale.
    cell.apply(report(
        "m1",
        vec![task_report("web", 0, 1, TaskState::Running)],
    ));
    assert_eq!(cell.machine("m1").state(), v1::MachineState::Up);
    assert_eq!(cell.task_state("web", 0), v1::TaskState::Pending);
    assert_eq!(
        accepted(&cell.plan(vec![placement("web", 0, 1, "m1")])),
        vec![true]
    );
    assert_eq!(cell.task("web", 0).incarnation, 2);
}

#[test]
fn a_task_killed_behind_the_masters_back_is_repended_as_lost() {
    let mut cell = Cell::new();
    cell.apply(Command::RegisterMachine {
        info: machine("m1", 2000),
    });
    cell.apply(submit(spec("web", 1, 100, 500)));
    cell.plan(vec![placement("web", 0, 0, "m1")]);
    let mut killed = task_report("web", 0, 1, TaskState::Killed);
    killed.message = "oom".into();
    cell.apply(report("m1", vec![killed]));
    let t = cell.task("web", 0);
    assert_eq!(t.state(), v1::TaskState::Pending);
    assert_eq!(t.message, "lost on m1: oom");
    assert_eq!(cell.machine("m1").task_count, 0);
}

#[test]
fn kill_marks_tasks_killed_and_removes_them_from_the_assignment() {
    let mut cell = Cell::new();
    cell.apply(Command::RegisterMachine {
        info: machine("m1", 2000),
    });
    cell.apply(submit(spec("web", 2, 100, 500)));
    cell.plan(vec![placement("web", 0, 0, "m1")]);
    cell.apply(report(
        "m1",
        vec![task_report("web", 0, 1, TaskState::Running)],
    ));

    let applied = cell.apply(Command::KillJob { name: "web".into() });
    assert_eq!(applied.outcome, Outcome::JobKilled { name: "web".into() });
    assert!(applied.changes.machines.contains("m1"));
    let job = cell.state.job_view("web").unwrap();
    assert_eq!(job.state(), v1::JobState::Killed);
    assert!(job.tasks.iter().all(|t| t.state() == v1::TaskState::Killed));
    assert!(cell.desired("m1").is_empty());
    assert_eq!(cell.machine("m1").allocated.unwrap().cpu_millis, 0);

    // The borglet's KILLED report of the stopped task is stale now.
    cell.apply(report(
        "m1",
        vec![task_report("web", 0, 1, TaskState::Killed)],
    ));
    assert_eq!(cell.task_state("web", 0), v1::TaskState::Killed);
    // Killing again is harmless; a resubmit restarts the job with new incarnations.
    assert_eq!(
        cell.apply(Command::KillJob { name: "web".into() }).outcome,
        Outcome::JobKilled { name: "web".into() }
    );
    cell.apply(submit(spec("web", 2, 100, 500)));
    let job = cell.state.job_view("web").unwrap();
    assert_eq!(job.state(), v1::JobState::Active);
    assert_eq!(cell.task("web", 0).incarnation, 2);
    assert_eq!(cell.task_state("web", 1), v1::TaskState::Pending);
}

#[test]
fn machines_register_and_reregister() {
    let mut cell = Cell::new();
    let applied = cell.apply(Command::RegisterMachine {
        info: machine("m1", 2000),
    });
    assert_eq!(
        applied.outcome,
        Outcome::MachineRegistered { name: "m1".into() }
    );
    assert_eq!(cell.machine("m1").version, 1);
    assert_eq!(cell.machine("m1").state(), v1::MachineState::Up);
    // Same info again: nothing changes.
    let applied = cell.apply(Command::RegisterMachine {
        info: machine("m1", 2000),
    });
    assert!(applied.changes.is_empty());
    assert_eq!(cell.machine("m1").version, 1);
    cell.apply(Command::RegisterMachine {
        info: machine("m1", 4000),
    });
    let m = cell.machine("m1");
    assert_eq!(m.version, 2);
    assert_eq!(m.info.unwrap().capacity.unwrap().cpu_millis, 4000);

    let mut bad = machine("m2", 0);
    let applied = cell.apply(Command::RegisterMachine { info: bad.clone() });
    assert!(matches!(
        applied.outcome,
        Outcome::Rejected(StateError::InvalidMachine { .. })
    ));
    bad.name = "../etc".into();
    bad.capacity = Resources::new(1, 1);
    let applied = cell.apply(Command::RegisterMachine { info: bad });
    assert!(matches!(
        applied.outcome,
        Outcome::Rejected(StateError::InvalidMachine { .. })
    ));
    assert_eq!(cell.state.machines_view().len(), 1);
}

#[test]
fn oversized_batches_are_refused_whole() {
    let mut cell = Cell::new();
    let placements = vec![placement("web", 0, 0, "m1"); PLAN_PLACEMENTS_MAX + 1];
    let applied = cell.apply(Command::CommitPlan { placements });
    assert!(matches!(
        applied.outcome,
        Outcome::Rejected(StateError::BatchTooLarge {
            max: PLAN_PLACEMENTS_MAX,
            ..
        })
    ));
}

#[test]
fn a_snapshot_round_trips_to_an_equal_state() {
    let mut cell = Cell::new();
    cell.apply(Command::RegisterMachine {
        info: machine("m1", 2000),
    });
    cell.apply(submit(spec("web", 3, 100, 500)));
    cell.plan(vec![placement("web", 0, 0, "m1")]);
    let bytes = cell.state.to_snapshot_bytes();
    let restored = CellState::from_snapshot_bytes(&bytes).unwrap();
    assert_eq!(restored, cell.state);
    assert_eq!(restored.state_hash(), cell.state.state_hash());
    assert_eq!(restored.applied_index(), cell.state.applied_index());

    assert_eq!(
        CellState::from_snapshot_bytes(&[]),
        Err(SnapshotError::Empty)
    );
    assert!(matches!(
        CellState::from_snapshot_bytes(&[1, 0]),
        Err(SnapshotError::Corrupt { .. })
    ));
    let mut wrong_version = bytes.clone();
    wrong_version[0] = 99;
    assert!(matches!(
        CellState::from_snapshot_bytes(&wrong_version),
        Err(SnapshotError::UnknownVersion { found: 99, .. })
    ));
    let truncated = &bytes[..bytes.len() / 2];
    assert!(matches!(
        CellState::from_snapshot_bytes(truncated),
        Err(SnapshotError::Corrupt { .. })
    ));
}

#[test]
fn the_oldest_finished_jobs_are_forgotten_beyond_the_bound() {
    let mut cell = Cell::new();
    let total = FINISHED_JOBS_RETAINED_MAX + 2;
    let mut last = None;
    for i in 0..total {
        let name = format!("j{i:05}");
        cell.apply(submit(spec(&name, 1, 100, 100)));
        last = Some(cell.apply(Command::KillJob { name }));
    }
    assert_eq!(cell.state.jobs_view(None).len(), FINISHED_JOBS_RETAINED_MAX);
    assert!(cell.state.job_view("j00000").is_none());
    assert!(cell.state.job_view("j00001").is_none());
    assert!(cell.state.job_view("j00002").is_some());
    let changes = last.unwrap().changes;
    assert!(changes.jobs.contains("j00001"), "{changes:?}");
    let change = cell.state.change_view(&changes);
    assert_eq!(change.jobs_removed, vec!["j00001".to_string()]);
    assert_eq!(change.jobs_upserted.len(), 1);

    // A restarted job is not forgotten for having finished before.
    cell.apply(submit(spec("j00002", 1, 100, 100)));
    for i in 0..3 {
        let name = format!("k{i}");
        cell.apply(submit(spec(&name, 1, 100, 100)));
        cell.apply(Command::KillJob { name });
    }
    assert!(cell.state.job_view("j00002").is_some());
    assert!(cell.state.job_view("j00003").is_none());
}

#[test]
fn shards_partition_the_machines() {
    assert_eq!(shard_of("m1", 0), 0);
    assert_eq!(shard_of("m1", 1), 0);
    // fnv1a64("a") = 0xaf63dc4c8601ec8c.
    assert_eq!(
        shard_of("a", 1000),
        (0xaf63_dc4c_8601_ec8c_u64 % 1000) as u32
    );
    let mut cell = Cell::new();
    for i in 0..20 {
        cell.apply(Command::RegisterMachine {
            info: machine(&format!("m{i}"), 1000),
        });
    }
    let mut seen: Vec<String> = (0..3)
        .flat_map(|s| cell.state.assignment_view(s, 3))
        .map(|a| a.machine)
        .collect();
    seen.sort();
    let mut all: Vec<String> = cell
        .state
        .machines_view()
        .into_iter()
        .map(|m| m.info.unwrap().name)
        .collect();
    all.sort();
    assert_eq!(seen, all);
    assert!((0..3).all(|s| !cell.state.assignment_view(s, 3).is_empty()));
}

#[test]
fn views_filter_by_owner_and_job() {
    let mut cell = Cell::new();
    cell.apply(submit(spec("a", 1, 100, 100)));
    let mut b = spec("b", 1, 100, 100);
    b.owner = "bob".into();
    cell.apply(submit(b));
    let names: Vec<String> = cell
        .state
        .jobs_view(Some("bob"))
        .into_iter()
        .map(|j| j.spec.unwrap().name)
        .collect();
    assert_eq!(names, vec!["b".to_string()]);
    assert_eq!(cell.state.snapshot_view().jobs.len(), 2);
    let events = cell.state.events_view(0, Some("a"), 10);
    assert!(events.iter().all(|e| e.job == "a"));
    let last = cell.state.last_event_index();
    assert_eq!(cell.state.events_view(last + 1, None, 10), vec![]);
}

/// A small deterministic generator (xorshift64*), so the test needs no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A random but plausible entry: placements and reports aim at real tasks most of the time.
fn random_command(rng: &mut Rng, state: &CellState) -> Command {
    let jobs = state.jobs_view(None);
    let machines: Vec<String> = (0..4).map(|i| format!("m{i}")).collect();
    let pick_machine = |rng: &mut Rng| machines[rng.below(4) as usize].clone();
    let random_task = |rng: &mut Rng| -> Option<v1::Task> {
        let job = jobs.get(rng.below(jobs.len() as u64) as usize)?;
        job.tasks
            .get(rng.below(job.tasks.len() as u64) as usize)
            .cloned()
    };
    match rng.below(10) {
        0 => Command::RegisterMachine {
            info: machine(&pick_machine(rng), 1000 + 500 * rng.below(4)),
            // (at most RANDOM_CAPACITY_MAX_MILLIS)
        },
        1 | 2 => submit(spec(
            &format!("j{}", rng.below(5)),
            rng.below(5) as u32,
            [10, 50, 120, 150, 250][rng.below(5) as usize],
            100 * (1 + rng.below(6)),
        )),
        3 => Command::KillJob {
            name: format!("j{}", rng.below(6)),
        },
        4..=6 => {
            let mut placements = Vec::new();
            for _ in 0..1 + rng.below(4) {
                let Some(t) = random_task(rng) else { continue };
                let mut p = placement(&t.job, t.index, t.incarnation, &pick_machine(rng));
                if rng.below(3) == 0 {
                    if let Some(v) = random_task(rng) {
                        p.preempt = vec![(TaskId::new(v.job, v.index), v.incarnation)];
                    }
                }
                placements.push(p);
            }
            Command::CommitPlan { placements }
        }
        _ => {
            let m = pick_machine(rng);
            let states = [
                TaskState::Running,
                TaskState::Running,
                TaskState::Succeeded,
                TaskState::Failed,
                TaskState::Killed,
            ];
            let mut tasks = Vec::new();
            for _ in 0..rng.below(4) {
                let Some(t) = random_task(rng) else { continue };
                let state = states[rng.below(states.len() as u64) as usize];
                let mut report = task_report(&t.job, t.index, t.incarnation, state);
                // Usage that moves reservations up and down.
                report.usage = Resources::new(rng.below(700), rng.below(GIB));
                tasks.push(report);
            }
            Command::ApplyReports {
                reports: vec![MachineReport {
                    machine: m,
                    unreachable: rng.below(12) == 0,
                    tasks,
                    usage: Resources::new(rng.below(1000), 0),
                }],
            }
        }
    }
}

const RANDOM_CAPACITY_MAX_MILLIS: u64 = 2500;

/// Checks that each machine's placed index agrees with the tasks and fits its capacity.
fn assert_consistent(state: &CellState) {
    for m in state.machines_view() {
        let name = m.info.as_ref().unwrap().name.clone();
        let placed_here = state
            .jobs_view(None)
            .iter()
            .flat_map(|j| j.tasks.clone())
            .filter(|t| {
                t.machine == name
                    && matches!(t.state(), v1::TaskState::Scheduled | v1::TaskState::Running)
            })
            .count();
        assert_eq!(m.task_count as usize, placed_here, "placed index of {name}");
        // A re-registration may shrink capacity under placed tasks, but no plan ever
        // fills a machine with prod limits beyond the largest capacity the random log
        // registers. (Non-prod tasks fit against reservations, so all limits may exceed
        // it once reservations decayed.)
        let prod_cpu_millis: u64 = state
            .jobs_view(None)
            .iter()
            .filter(|j| borg_model::Band::of(j.spec.as_ref().unwrap().priority).is_prod())
            .flat_map(|j| {
                let cpu = j.spec.as_ref().unwrap().task.as_ref().unwrap();
                let cpu = cpu.resources.unwrap().cpu_millis;
                j.tasks.iter().map(move |t| (t.clone(), cpu))
            })
            .filter(|(t, _)| {
                t.machine == name
                    && matches!(t.state(), v1::TaskState::Scheduled | v1::TaskState::Running)
            })
            .map(|(_, cpu)| cpu)
            .sum();
        assert!(
            prod_cpu_millis <= RANDOM_CAPACITY_MAX_MILLIS,
            "{name} overcommitted with prod: {prod_cpu_millis}m"
        );
    }
}

#[test]
fn replicas_applying_the_same_random_log_reach_the_same_state() {
    let mut decayed_reservations = 0;
    for seed in 1..=8u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut a = CellState::new();
        let mut b = CellState::new();
        let mut entries = Vec::new();
        for index in 1..=400u64 {
            let entry = LogEntry {
                // Some ids repeat, to exercise dedup.
                request_id: format!("r{}", rng.below(350)),
                // A minute apart: reservations pass their grace period and decay.
                time_ms: index * 60_000,
                command: random_command(&mut rng, &a),
            };
            let outcome_a = a.apply(index, &entry).outcome;
            entries.push(entry);
            assert_consistent(&a);
            decayed_reservations += a
                .jobs_view(None)
                .iter()
                .map(|j| {
                    let limit = j.spec.as_ref().unwrap().task.as_ref().unwrap().resources;
                    j.tasks
                        .iter()
                        .filter(move |t| t.reservation.is_some() && t.reservation != limit)
                        .count()
                })
                .sum::<usize>();
            if index == 200 {
                // A replica restored from a checkpoint continues identically.
                b = CellState::from_snapshot_bytes(&a.to_snapshot_bytes()).unwrap();
            }
            if index > 200 {
                let outcome_b = b.apply(index, &entries[index as usize - 1]).outcome;
                assert_eq!(outcome_a, outcome_b);
            }
        }
        let mut c = CellState::new();
        for (i, entry) in entries.iter().enumerate() {
            c.apply(i as u64 + 1, entry);
        }
        assert_eq!(a.state_hash(), b.state_hash(), "seed {seed}");
        assert_eq!(a.state_hash(), c.state_hash(), "seed {seed}");
        assert_eq!(a, c);
        assert!(
            a.jobs_view(None)
                .iter()
                .flat_map(|j| j.tasks.clone())
                .any(|t| t.state() != v1::TaskState::Pending),
            "seed {seed}: the random log should place some tasks"
        );
    }
    assert!(
        decayed_reservations > 0,
        "the random logs should exercise reservations"
    );
}
