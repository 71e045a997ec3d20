//! Reservations through `apply`: computed from reported usage with the entry's time, on the
//! wire for readers, and used when a non-prod placement is checked.

use super::*;
use borg_model::{JobSpec, MachineInfo, Resources, TaskId, TaskState, TaskTemplate};

const GIB: u64 = 1 << 30;
const S: u64 = 1_000;
/// When the prod task starts running (master time, ms).
const START_MS: u64 = 10 * S;

fn job(name: &str, priority: u32, cpu_millis: u64, ram_bytes: u64) -> JobSpec {
    JobSpec {
        name: name.into(),
        owner: "alice".into(),
        priority,
        replicas: 1,
        task: TaskTemplate {
            command: "/bin/sleep".into(),
            resources: Resources::new(cpu_millis, ram_bytes),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A cell whose entries carry the times the test chooses.
struct Cell {
    state: CellState,
    index: u64,
}

impl Cell {
    /// One machine of 4 cores and 8 GiB, fully allocated to a prod job `prod` (one task)
    /// that is running since `START_MS`.
    fn with_a_full_machine() -> Cell {
        let mut cell = Cell {
            state: CellState::new(),
            index: 0,
        };
        cell.apply(
            S,
            Command::RegisterMachine {
                info: MachineInfo {
                    name: "m1".into(),
                    address: "127.0.0.1:1".into(),
                    capacity: Resources::new(4_000, 8 * GIB),
                    ..Default::default()
                },
            },
        );
        cell.submit(S, job("prod", 200, 4_000, 8 * GIB));
        assert!(cell.place(S, "prod"));
        cell.report(START_MS, "prod", 1, Resources::ZERO);
        cell
    }

    fn apply(&mut self, time_ms: u64, command: Command) -> Applied {
        self.index += 1;
        let entry = LogEntry {
            request_id: format!("r{}", self.index),
            time_ms,
            command,
        };
        self.state.apply(self.index, &entry)
    }

    fn submit(&mut self, time_ms: u64, spec: JobSpec) {
        let applied = self.apply(
            time_ms,
            Command::SubmitJob {
                spec,
                check_index: None,
                must_exist: false,
            },
        );
        assert!(matches!(applied.outcome, Outcome::JobSubmitted { .. }));
    }

    /// Places task 0 of `job` (incarnation 0) on m1; whether the master accepted it.
    fn place(&mut self, time_ms: u64, job: &str) -> bool {
        let applied = self.apply(
            time_ms,
            Command::CommitPlan {
                placements: vec![PlannedPlacement {
                    task: TaskId::new(job, 0),
                    incarnation: 0,
                    machine: "m1".into(),
                    machine_version: 0,
                    preempt: vec![],
                }],
            },
        );
        match applied.outcome {
            Outcome::PlanApplied { results } => results[0].accepted,
            other => panic!("plan not applied: {other:?}"),
        }
    }

    fn report(&mut self, time_ms: u64, job: &str, incarnation: u64, usage: Resources) -> Applied {
        self.apply(
            time_ms,
            Command::ApplyReports {
                reports: vec![MachineReport {
                    machine: "m1".into(),
                    unreachable: false,
                    tasks: vec![TaskReport {
                        task: TaskId::new(job, 0),
                        incarnation,
                        state: TaskState::Running,
                        exit_code: None,
                        restarts: 0,
                        pid: 7,
                        usage,
                        message: String::new(),
                        ports: Default::default(),
                    }],
                    usage: Resources::ZERO,
                }],
            },
        )
    }

    /// Reports `usage` of the prod task every 10 s from `from_ms` to `to_ms`.
    fn report_for(&mut self, from_ms: u64, to_ms: u64, usage: Resources) {
        let mut now = from_ms;
        while now <= to_ms {
            self.report(now, "prod", 1, usage);
            now += 10 * S;
        }
    }

    fn reservation(&self, job: &str) -> Option<Resources> {
        let task = self.state.job_view(job)?.tasks.into_iter().next()?;
        task.reservation.map(Resources::from)
    }
}

fn low_usage() -> Resources {
    Resources::new(400, GIB)
}

#[test]
fn a_placed_task_reserves_its_limits_and_a_pending_one_nothing() {
    let mut cell = Cell::with_a_full_machine();
    assert_eq!(
        cell.reservation("prod"),
        Some(Resources::new(4_000, 8 * GIB))
    );
    cell.submit(S, job("batch", 100, 1_000, GIB));
    assert_eq!(cell.reservation("batch"), None);
}

#[test]
fn no_decay_within_the_grace_period() {
    let mut cell = Cell::with_a_full_machine();
    cell.report_for(
        START_MS,
        START_MS + RESERVATION_GRACE_S * S - 1,
        low_usage(),
    );
    assert_eq!(
        cell.reservation("prod"),
        Some(Resources::new(4_000, 8 * GIB))
    );
    let task = cell.state.job_view("prod").unwrap().tasks[0].clone();
    assert_eq!(task.usage.map(Resources::from), Some(low_usage()));
}

#[test]
fn after_the_grace_period_it_decays_toward_usage_plus_margin_never_below() {
    let mut cell = Cell::with_a_full_machine();
    let grace_end = START_MS + RESERVATION_GRACE_S * S;
    cell.report_for(START_MS, grace_end + 60 * S, low_usage());
    let decaying = cell.reservation("prod").unwrap();
    assert!(decaying.cpu_millis < 4_000 && decaying.cpu_millis > 1_000);
    assert!(decaying.ram_bytes < 8 * GIB);
    // An hour later it has reached usage + margin: 400m + max(20%, 5% of 4000m) = 600m,
    // 1Gi + max(20%, 5% of 8Gi) = 1.4Gi.
    cell.report_for(grace_end + 70 * S, grace_end + 3_600 * S, low_usage());
    let settled = cell.reservation("prod").unwrap();
    assert_eq!(settled.cpu_millis, 600);
    assert_eq!(settled.ram_bytes, GIB + 8 * GIB / 20);
}

#[test]
fn a_usage_rise_raises_it_at_once_capped_at_the_limit() {
    let mut cell = Cell::with_a_full_machine();
    let settled_at = START_MS + (RESERVATION_GRACE_S + 3_600) * S;
    cell.report_for(START_MS, settled_at, low_usage());
    let applied = cell.report(settled_at + 1, "prod", 1, Resources::new(2_000, GIB));
    assert!(
        applied.changes.jobs.contains("prod"),
        "the scheduler hears of it"
    );
    assert_eq!(cell.reservation("prod").unwrap().cpu_millis, 2_400);
    cell.report(settled_at + 2, "prod", 1, Resources::new(9_000, 20 * GIB));
    assert_eq!(
        cell.reservation("prod"),
        Some(Resources::new(4_000, 8 * GIB))
    );
}

#[test]
fn the_same_entries_give_the_same_reservations() {
    let run = || {
        let mut cell = Cell::with_a_full_machine();
        let mut usage = low_usage();
        for step in 0..100u64 {
            // Usage moving up and down, reported at uneven times.
            usage.cpu_millis = 200 + (step * 37) % 900;
            cell.report(START_MS + step * 7_300, "prod", 1, usage);
        }
        cell
    };
    let (a, b) = (run(), run());
    assert_eq!(a.reservation("prod"), b.reservation("prod"));
    assert_eq!(a.state.state_hash(), b.state.state_hash());
    assert_ne!(
        a.reservation("prod"),
        Some(Resources::new(4_000, 8 * GIB)),
        "it decayed"
    );
}

#[test]
fn a_batch_task_fits_beside_prod_limits_once_reservations_decayed() {
    let mut cell = Cell::with_a_full_machine();
    cell.submit(S, job("batch", 100, 1_000, GIB));
    cell.submit(S, job("prod2", 200, 1_000, GIB));
    assert!(
        !cell.place(2 * S, "batch"),
        "at first prod reserves its limits"
    );
    let settled_at = START_MS + (RESERVATION_GRACE_S + 3_600) * S;
    cell.report_for(START_MS, settled_at, low_usage());
    assert!(cell.place(settled_at, "batch"), "reclaimed resources");
    assert!(
        !cell.place(settled_at, "prod2"),
        "prod is still checked against limits"
    );
    // The batch task counts at its limit until it has run its own grace period.
    cell.submit(settled_at, job("batch2", 100, 3_000, GIB));
    assert!(
        !cell.place(settled_at, "batch2"),
        "600m + 1000m + 3000m > 4000m"
    );
}

#[test]
fn a_new_incarnation_starts_at_its_limits_again() {
    let mut cell = Cell::with_a_full_machine();
    let settled_at = START_MS + (RESERVATION_GRACE_S + 3_600) * S;
    cell.report_for(START_MS, settled_at, low_usage());
    // The machine is lost and comes back; placed again the task reserves its limits.
    cell.apply(
        settled_at + S,
        Command::ApplyReports {
            reports: vec![MachineReport {
                machine: "m1".into(),
                unreachable: true,
                tasks: vec![],
                usage: Resources::ZERO,
            }],
        },
    );
    assert_eq!(cell.reservation("prod"), None, "pending reserves nothing");
    cell.apply(
        settled_at + 2 * S,
        Command::ApplyReports {
            reports: vec![MachineReport {
                machine: "m1".into(),
                unreachable: false,
                tasks: vec![],
                usage: Resources::ZERO,
            }],
        },
    );
    let applied = cell.apply(
        settled_at + 3 * S,
        Command::CommitPlan {
            placements: vec![PlannedPlacement {
                task: TaskId::new("prod", 0),
                incarnation: 1,
                machine: "m1".into(),
                machine_version: 0,
                preempt: vec![],
            }],
        },
    );
    assert!(matches!(applied.outcome, Outcome::PlanApplied { ref results } if results[0].accepted));
    assert_eq!(
        cell.reservation("prod"),
        Some(Resources::new(4_000, 8 * GIB))
    );
}
