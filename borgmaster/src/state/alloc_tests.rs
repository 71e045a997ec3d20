//! Alloc sets and the jobs placed in them, through `apply` (docs/lifecycle.md, "Alloc sets").

use super::tests::{accepted, machine, placement, spec, submit, Cell};
use super::*;
use borg_model::{AllocSetSpec, JobSpec, Resources, TaskId};
use borg_proto::v1;

const GIB: u64 = 1 << 30;

/// Alloc set `shared`: 2 allocs of 1000m / 2 GiB at priority 100.
fn shared() -> JobSpec {
    AllocSetSpec {
        name: "shared".into(),
        owner: "alice".into(),
        priority: 100,
        replicas: 2,
        resources: Resources::new(1000, 2 * GIB),
        constraints: vec![],
    }
    .to_job_spec()
}

/// A 2-task job of `cpu_millis` and 1 GiB per task in `shared`.
fn tenant(name: &str, cpu_millis: u64) -> JobSpec {
    JobSpec {
        alloc_set: Some("shared".into()),
        ..spec(name, 2, 100, cpu_millis)
    }
}

/// Machines m1 and m2 (4000m each) with `shared` placed on them, alloc i on m(i+1).
fn cell_with_allocs() -> Cell {
    let mut cell = Cell::new();
    for name in ["m1", "m2"] {
        cell.apply(Command::RegisterMachine {
            info: machine(name, 4000),
        });
    }
    cell.apply(submit(shared()));
    let results = cell.plan(vec![
        placement("shared", 0, 0, "m1"),
        placement("shared", 1, 0, "m2"),
    ]);
    assert_eq!(accepted(&results), vec![true, true]);
    cell
}

fn rejected(outcome: Outcome) -> String {
    match outcome {
        Outcome::Rejected(e) => e.to_string(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn allocs_reserve_from_placement_and_never_reach_a_borglet() {
    let cell = cell_with_allocs();
    let alloc = cell.task("shared", 0);
    assert_eq!(alloc.state(), v1::TaskState::Running);
    assert_eq!(alloc.machine, "m1");
    assert_eq!(
        cell.machine("m1").allocated.map(|a| a.cpu_millis),
        Some(1000)
    );
    assert!(cell.desired("m1").is_empty(), "an alloc runs nothing");
    let view = cell.state.job_view("shared").unwrap();
    assert!(view.spec.unwrap().is_alloc_set);
}

#[test]
fn task_i_runs_in_alloc_i_within_what_it_has_left() {
    let mut cell = cell_with_allocs();
    cell.apply(submit(tenant("server", 600)));
    cell.apply(submit(tenant("saver", 300)));
    // Only alloc i's machine takes task i.
    let results = cell.plan(vec![placement("server", 0, 0, "m2")]);
    assert!(
        results[0].reason.contains("alloc shared/0 is on \"m1\""),
        "{results:?}"
    );
    let results = cell.plan(vec![
        placement("server", 0, 0, "m1"),
        placement("server", 1, 0, "m2"),
        placement("saver", 0, 0, "m1"),
    ]);
    assert_eq!(accepted(&results), vec![true, true, true]);
    // The tasks are in the desired set, but the machine counts only the alloc.
    assert_eq!(cell.desired("m1").len(), 2);
    assert_eq!(
        cell.machine("m1").allocated.map(|a| a.cpu_millis),
        Some(1000)
    );

    // 600m + 300m used of 1000m: a 200m task does not fit alloc 0, and says why.
    cell.apply(submit(tenant("extra", 200)));
    let results = cell.plan(vec![placement("extra", 0, 0, "m1")]);
    assert!(!results[0].accepted);
    assert!(
        results[0]
            .reason
            .starts_with("cpu, ram exhausted in alloc shared/0: task needs cpu=200m"),
        "{results:?}"
    );
    assert!(results[0].reason.contains("cpu=100m"), "{results:?}");
}

#[test]
fn a_job_must_name_an_existing_set_of_its_owner_with_enough_allocs() {
    let mut cell = Cell::new();
    let message = rejected(cell.apply(submit(tenant("server", 100))).outcome);
    assert!(message.contains("submit the set first"), "{message}");
    cell.apply(submit(shared()));
    let mut three = tenant("server", 100);
    three.replicas = 3;
    let message = rejected(cell.apply(submit(three)).outcome);
    assert!(message.contains("has only 2 allocs"), "{message}");
    let mut bobs = tenant("server", 100);
    bobs.owner = "bob".into();
    let message = rejected(cell.apply(submit(bobs)).outcome);
    assert!(message.contains("its owner's jobs only"), "{message}");
    // A job cannot replace a set of the same name, nor the reverse.
    let message = rejected(cell.apply(submit(spec("shared", 1, 100, 100))).outcome);
    assert!(message.contains("share names"), "{message}");
}

#[test]
fn the_set_is_charged_to_quota_and_its_jobs_are_not() {
    let mut cell = Cell::new();
    let as_user = |user: &str, admin: bool, command: Command| Command::AsUser {
        caller: Caller {
            user: user.into(),
            admin,
        },
        command: Box::new(command),
    };
    cell.apply(as_user(
        "root",
        true,
        Command::SetQuota {
            user: "alice".into(),
            band: Band::Batch,
            limit: Resources::new(2000, 4 * GIB),
        },
    ));
    let outcome = cell
        .apply(as_user("alice", false, submit(shared())))
        .outcome;
    assert!(
        matches!(outcome, Outcome::JobSubmitted { .. }),
        "{outcome:?}"
    );
    // The quota is used up by the set; its jobs still go in.
    let outcome = cell
        .apply(as_user("alice", false, submit(tenant("server", 600))))
        .outcome;
    assert!(
        matches!(outcome, Outcome::JobSubmitted { .. }),
        "{outcome:?}"
    );
    let used = cell.state.quotas_view(Some("alice"));
    assert_eq!(used[0].used, Resources::new(2000, 4 * GIB));
}

#[test]
fn a_set_in_use_cannot_be_killed_or_shrunk_below_its_jobs() {
    let mut cell = cell_with_allocs();
    cell.apply(submit(tenant("server", 600)));
    cell.apply(submit(tenant("saver", 300)));
    let message = rejected(
        cell.apply(Command::KillJob {
            name: "shared".into(),
        })
        .outcome,
    );
    assert!(message.contains("job(s) saver, server"), "{message}");
    let mut one = shared();
    one.replicas = 1;
    let message = rejected(cell.apply(submit(one)).outcome);
    assert!(
        message.contains("saver (2 tasks), server (2 tasks)"),
        "{message}"
    );

    for job in ["server", "saver"] {
        cell.apply(Command::KillJob { name: job.into() });
    }
    let outcome = cell
        .apply(Command::KillJob {
            name: "shared".into(),
        })
        .outcome;
    assert!(matches!(outcome, Outcome::JobKilled { .. }), "{outcome:?}");
    assert_eq!(cell.machine("m1").allocated.map(|a| a.cpu_millis), Some(0));
}

#[test]
fn tasks_follow_their_alloc_when_it_leaves_the_machine() {
    let mut cell = cell_with_allocs();
    cell.apply(submit(tenant("server", 600)));
    cell.plan(vec![
        placement("server", 0, 0, "m1"),
        placement("server", 1, 0, "m2"),
    ]);
    // A production task preempts alloc 0 (m1 has 4000m: 1000m alloc + 3500m does not fit).
    cell.apply(submit(spec("prod", 1, 200, 3500)));
    let mut p = placement("prod", 0, 0, "m1");
    p.preempt = vec![(TaskId::new("shared", 0), 1)];
    let results = cell.plan(vec![p]);
    assert_eq!(accepted(&results), vec![true], "{results:?}");
    assert_eq!(cell.task("shared", 0).state(), v1::TaskState::Pending);
    let server = cell.task("server", 0);
    assert_eq!(server.state(), v1::TaskState::Pending);
    assert!(
        server.message.contains("alloc shared/0 left machine m1"),
        "{server:?}"
    );
    assert_eq!(cell.task("server", 1).state(), v1::TaskState::Scheduled);

    // A task in an alloc is never a victim itself.
    cell.apply(submit(spec("prod2", 1, 200, 3500)));
    let mut p = placement("prod2", 0, 0, "m2");
    p.preempt = vec![(TaskId::new("server", 1), 1)];
    let results = cell.plan(vec![p]);
    assert!(
        results[0].reason.contains("preempt the alloc instead"),
        "{results:?}"
    );
}
