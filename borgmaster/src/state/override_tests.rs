//! Per-task overrides through `apply`: each task runs, is placed and is charged with its own
//! template (docs/lifecycle.md, "Per-task templates").

use super::tests::{accepted, machine, placement, spec, submit, Cell};
use super::*;
use borg_model::{JobSpec, Resources, TaskTemplate};
use borg_proto::v1;

const GIB: u64 = 1 << 30;

/// `web` with 2 tasks of 500m; task 1 runs `/bin/sleep 2000` with 900m.
fn with_override() -> JobSpec {
    let mut job = spec("web", 2, 100, 500);
    job.task_overrides.insert(
        1,
        TaskTemplate {
            args: vec!["2000".into()],
            resources: Resources::new(900, GIB),
            ..job.task.clone()
        },
    );
    job
}

/// The template the desired set of `machine` gives task `index` of `job`.
fn desired_template(cell: &Cell, machine: &str, job: &str, index: u32) -> v1::TaskTemplate {
    cell.state
        .assignment_view(0, 1)
        .into_iter()
        .find(|a| a.machine == machine)
        .and_then(|a| {
            a.desired
                .into_iter()
                .find(|t| t.job == job && t.index == index)
        })
        .and_then(|t| t.template)
        .expect("task is in the desired set with a template")
}

#[test]
fn each_task_is_assigned_its_own_template_and_charged_its_own_limits() {
    let mut cell = Cell::new();
    cell.apply(Command::RegisterMachine {
        info: machine("m1", 2000),
    });
    cell.apply(submit(with_override()));
    let results = cell.plan(vec![
        placement("web", 0, 0, "m1"),
        placement("web", 1, 0, "m1"),
    ]);
    assert_eq!(accepted(&results), vec![true, true]);

    assert_eq!(desired_template(&cell, "m1", "web", 0).args, vec!["1000"]);
    let one = desired_template(&cell, "m1", "web", 1);
    assert_eq!(one.args, vec!["2000"]);
    assert_eq!(one.resources.map(|r| r.cpu_millis), Some(900));
    let allocated = cell.machine("m1").allocated.unwrap_or_default();
    assert_eq!(allocated.cpu_millis, 500 + 900);
    assert_eq!(
        cell.task("web", 1).reservation.map(|r| r.cpu_millis),
        Some(900)
    );

    // The job's view carries the overrides, so `borg job status` can show them.
    let job = cell.state.job_view("web").unwrap();
    let spec = job.spec.unwrap();
    assert_eq!(spec.task_overrides[&1].args, vec!["2000"]);
}

#[test]
fn a_placement_fits_against_the_tasks_own_limits() {
    let mut cell = Cell::new();
    cell.apply(Command::RegisterMachine {
        info: machine("m1", 1000),
    });
    cell.apply(submit(with_override()));
    // 500m fits; the override's 900m does not fit in the 500m left.
    let results = cell.plan(vec![
        placement("web", 0, 0, "m1"),
        placement("web", 1, 0, "m1"),
    ]);
    assert_eq!(accepted(&results), vec![true, false]);
    assert!(results[1].reason.contains("cpu exhausted"), "{results:?}");
    assert!(results[1].reason.contains("cpu=900m"), "{results:?}");
}

#[test]
fn changing_one_override_restarts_only_that_task() {
    let mut cell = Cell::new();
    cell.apply(Command::RegisterMachine {
        info: machine("m1", 4000),
    });
    cell.apply(submit(with_override()));
    cell.plan(vec![
        placement("web", 0, 0, "m1"),
        placement("web", 1, 0, "m1"),
    ]);
    let mut changed = with_override();
    if let Some(one) = changed.task_overrides.get_mut(&1) {
        one.args = vec!["3000".into()];
    }
    cell.apply(submit(changed));
    let zero = cell.task("web", 0);
    assert_eq!(zero.state(), v1::TaskState::Scheduled);
    assert_eq!(zero.incarnation, 1);
    let one = cell.task("web", 1);
    assert_eq!(one.state(), v1::TaskState::Pending);
    assert_eq!(one.incarnation, 2, "re-pended with a new incarnation");
    assert_eq!(one.message, "job updated");

    // Dropping the override gives task 1 the job's template again: it restarts too, task 0
    // does not.
    cell.apply(submit(spec("web", 2, 100, 500)));
    assert_eq!(cell.task("web", 0).state(), v1::TaskState::Scheduled);
    assert_eq!(cell.task("web", 1).incarnation, 3);
}

#[test]
fn admission_charges_each_task_its_own_limits() {
    let mut cell = Cell::new();
    let admin = Caller {
        user: "root".into(),
        admin: true,
    };
    let alice = Caller {
        user: "alice".into(),
        admin: false,
    };
    let as_user = |caller: &Caller, command: Command| Command::AsUser {
        caller: caller.clone(),
        command: Box::new(command),
    };
    cell.apply(as_user(
        &admin,
        Command::SetQuota {
            user: "alice".into(),
            band: Band::Batch,
            limit: Resources::new(1_300, 4 * GIB),
        },
    ));
    // 500m + 900m = 1400m is over the 1300m quota although 2 x 500m would fit.
    let outcome = cell.apply(as_user(&alice, submit(with_override()))).outcome;
    let Outcome::Rejected(StateError::QuotaExceeded { shortfalls, .. }) = outcome else {
        panic!("expected a quota refusal, got {outcome:?}");
    };
    assert_eq!(shortfalls.len(), 1);
    assert_eq!(shortfalls[0].dimension, "cpu");
    assert_eq!(shortfalls[0].needed, 1_400);

    // Without the override it fits; adding it later is checked on the difference (400m more
    // with 300m left).
    let plain = spec("web", 2, 100, 500);
    assert!(matches!(
        cell.apply(as_user(&alice, submit(plain))).outcome,
        Outcome::JobSubmitted { created: true, .. }
    ));
    let outcome = cell.apply(as_user(&alice, submit(with_override()))).outcome;
    assert!(
        matches!(&outcome, Outcome::Rejected(StateError::QuotaExceeded { shortfalls, .. })
            if shortfalls[0].needed == 400 && shortfalls[0].remaining == 300),
        "{outcome:?}"
    );
    let used = cell.state.quotas_view(Some("alice"));
    assert_eq!(used[0].used.cpu_millis, 1_000);
}

#[test]
fn an_override_beyond_the_replicas_is_refused() {
    let mut cell = Cell::new();
    let mut job = with_override();
    job.replicas = 1;
    let outcome = cell.apply(submit(job)).outcome;
    let Outcome::Rejected(StateError::InvalidJob { reason }) = outcome else {
        panic!("expected a refusal, got {outcome:?}");
    };
    assert!(reason.contains("overrides task 1"), "{reason}");
    assert!(cell.state.job_view("web").is_none());
}
