//! Users, tokens, quotas and admission through `apply` (docs/security.md).

use super::*;
use borg_model::{JobSpec, Resources, TaskTemplate};

const GIB: u64 = 1 << 30;

fn spec(name: &str, owner: &str, replicas: u32, priority: u32, cpu_millis: u64) -> JobSpec {
    JobSpec {
        name: name.into(),
        owner: owner.into(),
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

fn user(name: &str) -> Caller {
    Caller {
        user: name.into(),
        admin: false,
    }
}

fn admin() -> Caller {
    Caller {
        user: "root".into(),
        admin: true,
    }
}

fn as_user(caller: &Caller, command: Command) -> Command {
    Command::AsUser {
        caller: caller.clone(),
        command: Box::new(command),
    }
}

fn submit(caller: &Caller, spec: JobSpec) -> Command {
    as_user(
        caller,
        Command::SubmitJob {
            spec,
            check_index: None,
            must_exist: false,
        },
    )
}

fn kill(caller: &Caller, name: &str) -> Command {
    as_user(caller, Command::KillJob { name: name.into() })
}

fn set_quota(caller: &Caller, who: &str, band: Band, cpu_millis: u64, ram_bytes: u64) -> Command {
    as_user(
        caller,
        Command::SetQuota {
            user: who.into(),
            band,
            limit: Resources::new(cpu_millis, ram_bytes),
        },
    )
}

struct Cell {
    state: CellState,
    next_index: u64,
}

impl Cell {
    fn new() -> Self {
        Cell {
            state: CellState::new(),
            next_index: 1,
        }
    }

    fn apply(&mut self, command: Command) -> Outcome {
        let index = self.next_index;
        self.next_index += 1;
        let entry = LogEntry {
            request_id: format!("req-{index}"),
            time_ms: index * 1000,
            command,
        };
        self.state.apply(index, &entry).outcome
    }

    /// Applies `command`, expecting a refusal, and checks that it changed nothing but the
    /// applied index and the request window (compared by hashing a copy without them).
    fn refused(&mut self, command: Command) -> StateError {
        let before = self.observable();
        let outcome = self.apply(command);
        assert_eq!(
            before,
            self.observable(),
            "a refused entry changed the cell"
        );
        match outcome {
            Outcome::Rejected(error) => error,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn observable(&self) -> (Vec<borg_proto::v1::Job>, Vec<QuotaUsage>, usize) {
        (
            self.state.jobs_view(None),
            self.state.quotas_view(None),
            self.state.tokens.len(),
        )
    }
}

#[test]
fn a_submit_over_quota_is_refused_naming_the_dimension_and_shortfall() {
    let mut cell = Cell::new();
    let bob = user("bob");
    assert!(matches!(
        cell.apply(set_quota(&admin(), "bob", Band::Batch, 2_000, 4 * GIB)),
        Outcome::QuotaSet { .. }
    ));
    assert!(matches!(
        cell.apply(submit(&bob, spec("a", "bob", 1, 100, 500))),
        Outcome::JobSubmitted { created: true, .. }
    ));
    // 3 more tasks of 1 Gi each: ram is short by 1 Gi (4 Gi quota, 1 Gi used), cpu fits.
    let error = cell.refused(submit(&bob, spec("b", "bob", 4, 150, 300)));
    let message = error.to_string();
    assert!(
        matches!(&error, StateError::QuotaExceeded { shortfalls, .. }
            if shortfalls.len() == 1 && shortfalls[0].dimension == "ram"
                && shortfalls[0].needed == 4 * GIB && shortfalls[0].remaining == 3 * GIB),
        "{error:?}"
    );
    assert!(
        message.contains("ram needs 4Gi more but 3Gi remain (short by 1Gi)"),
        "{message}"
    );
    assert!(message.contains("batch band"), "{message}");
    // Both dimensions short: both are named.
    let error = cell.refused(submit(&bob, spec("c", "bob", 4, 100, 1_000)));
    assert!(
        error
            .to_string()
            .contains("cpu needs 4000m more but 1500m remain"),
        "{error}"
    );
    assert!(error.to_string().contains("ram needs"), "{error}");
    // A job of another band does not count against the batch quota; the free band needs none.
    assert!(matches!(
        cell.apply(submit(&bob, spec("free", "bob", 10, 0, 1_000))),
        Outcome::JobSubmitted { .. }
    ));
}

#[test]
fn a_band_without_quota_is_refused_and_killed_jobs_free_their_quota() {
    let mut cell = Cell::new();
    let bob = user("bob");
    let error = cell.refused(submit(&bob, spec("p", "bob", 1, 200, 100)));
    assert!(matches!(error, StateError::NoQuota { ref band, .. } if band == "production"));
    assert!(
        error.to_string().contains("borg quota set bob production"),
        "{error}"
    );

    cell.apply(set_quota(&admin(), "bob", Band::Production, 1_000, 2 * GIB));
    assert!(matches!(
        cell.apply(submit(&bob, spec("p", "bob", 2, 200, 500))),
        Outcome::JobSubmitted { .. }
    ));
    cell.refused(submit(&bob, spec("q", "bob", 1, 250, 100)));
    assert!(matches!(
        cell.apply(kill(&bob, "p")),
        Outcome::JobKilled { .. }
    ));
    assert!(matches!(
        cell.apply(submit(&bob, spec("q", "bob", 1, 250, 100))),
        Outcome::JobSubmitted { .. }
    ));
    let usage = cell.state.quotas_view(Some("bob"));
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].used, Resources::new(100, GIB));
}

#[test]
fn an_update_is_checked_on_the_difference_only() {
    let mut cell = Cell::new();
    let bob = user("bob");
    cell.apply(set_quota(&admin(), "bob", Band::Batch, 1_000, 4 * GIB));
    cell.apply(submit(&bob, spec("a", "bob", 2, 100, 500)));
    // Lower the quota below what the job holds: changing the job without growing it is
    // still admitted, and so is shrinking it.
    cell.apply(set_quota(&admin(), "bob", Band::Batch, 500, 4 * GIB));
    let mut changed = spec("a", "bob", 2, 100, 500);
    changed.task.args = vec!["2000".into()];
    assert!(matches!(
        cell.apply(submit(&bob, changed)),
        Outcome::JobSubmitted { created: false, .. }
    ));
    // Growing by one task is checked on that task alone: cpu 500m more with 0 remaining.
    let error = cell.refused(submit(&bob, spec("a", "bob", 3, 100, 500)));
    assert!(
        error
            .to_string()
            .contains("cpu needs 500m more but 0m remain"),
        "{error}"
    );
    // Raise the quota by exactly the difference: now it fits.
    cell.apply(set_quota(&admin(), "bob", Band::Batch, 1_500, 4 * GIB));
    assert!(matches!(
        cell.apply(submit(&bob, spec("a", "bob", 3, 100, 500))),
        Outcome::JobSubmitted { created: false, .. }
    ));
}

#[test]
fn only_the_owner_or_an_admin_may_update_or_kill_a_job() {
    let mut cell = Cell::new();
    let (bob, eve) = (user("bob"), user("eve"));
    cell.apply(set_quota(&admin(), "bob", Band::Batch, 10_000, 100 * GIB));
    cell.apply(set_quota(&admin(), "eve", Band::Batch, 10_000, 100 * GIB));
    cell.apply(submit(&bob, spec("web", "bob", 1, 100, 100)));

    let error = cell.refused(kill(&eve, "web"));
    assert!(matches!(error, StateError::PermissionDenied { ref user, .. } if user == "eve"));
    assert!(error.to_string().contains("belongs to bob"), "{error}");
    // Taking the job over by submitting it with oneself as owner is refused too.
    let error = cell.refused(submit(&eve, spec("web", "eve", 1, 100, 100)));
    assert!(error.to_string().contains("belongs to bob"), "{error}");
    // So is submitting in someone else's name.
    let error = cell.refused(submit(&eve, spec("other", "bob", 1, 100, 100)));
    assert!(
        error.to_string().contains("owned by someone else"),
        "{error}"
    );
    // An admin may do both (and is charged to the owner's quota).
    assert!(matches!(
        cell.apply(submit(&admin(), spec("web", "bob", 2, 100, 100))),
        Outcome::JobSubmitted { created: false, .. }
    ));
    assert!(matches!(
        cell.apply(kill(&admin(), "web")),
        Outcome::JobKilled { .. }
    ));
    assert!(matches!(
        cell.apply(kill(&bob, "web")),
        Outcome::JobKilled { .. }
    ));
}

#[test]
fn quota_changes_and_tokens_are_for_admins_and_control_commands_for_nobody() {
    let mut cell = Cell::new();
    let bob = user("bob");
    let error = cell.refused(set_quota(&bob, "bob", Band::Batch, 1_000_000, GIB));
    assert!(matches!(error, StateError::PermissionDenied { .. }));
    assert!(error.to_string().contains("only an admin"), "{error}");
    let hash = "ab".repeat(32);
    cell.refused(as_user(
        &bob,
        Command::CreateToken {
            token_sha256: hash.clone(),
            user: "bob".into(),
            admin: true,
        },
    ));
    cell.refused(as_user(&admin(), Command::ApplyReports { reports: vec![] }));
    cell.refused(as_user(&bob, as_user(&admin(), Command::Noop)));

    assert!(matches!(
        cell.apply(as_user(
            &admin(),
            Command::CreateToken {
                token_sha256: hash.clone(),
                user: "bob".into(),
                admin: false,
            },
        )),
        Outcome::TokenCreated { .. }
    ));
    assert_eq!(cell.state.token_user(&hash), Some(("bob", false)));
    // The same hash for someone else is refused; a malformed hash too.
    let taken = Command::CreateToken {
        token_sha256: hash,
        user: "eve".into(),
        admin: false,
    };
    assert!(cell
        .refused(as_user(&admin(), taken))
        .to_string()
        .contains("already registered"));
    let bad = Command::CreateToken {
        token_sha256: "XYZ".into(),
        user: "eve".into(),
        admin: false,
    };
    cell.refused(as_user(&admin(), bad));
    // The free band takes no quota.
    cell.refused(set_quota(&admin(), "bob", Band::Free, 1, 1));
}

#[test]
fn tokens_and_quotas_survive_a_snapshot() {
    let mut cell = Cell::new();
    cell.apply(set_quota(&admin(), "bob", Band::Monitoring, 1, 2));
    cell.apply(Command::CreateToken {
        token_sha256: "cd".repeat(32),
        user: "bob".into(),
        admin: false,
    });
    let restored = CellState::from_snapshot_bytes(&cell.state.to_snapshot_bytes()).unwrap();
    assert_eq!(restored, cell.state);
    assert_eq!(restored.quotas_view(None).len(), 1);
    // Setting a quota to zero removes it.
    cell.apply(set_quota(&admin(), "bob", Band::Monitoring, 0, 0));
    assert!(cell.state.quotas_view(None).is_empty());
}

#[test]
fn replicas_applying_the_same_admission_log_reach_the_same_state() {
    let log = [
        set_quota(&admin(), "bob", Band::Batch, 1_000, 4 * GIB),
        submit(&user("bob"), spec("a", "bob", 2, 100, 400)),
        submit(&user("bob"), spec("b", "bob", 2, 100, 400)),
        kill(&user("eve"), "a"),
        as_user(
            &admin(),
            Command::CreateToken {
                token_sha256: "ef".repeat(32),
                user: "eve".into(),
                admin: false,
            },
        ),
        kill(&user("bob"), "a"),
        submit(&user("bob"), spec("b", "bob", 2, 100, 400)),
    ];
    let replay = || {
        let mut cell = Cell::new();
        let outcomes: Vec<Outcome> = log.iter().cloned().map(|c| cell.apply(c)).collect();
        (cell.state.state_hash(), outcomes)
    };
    let (first, outcomes) = replay();
    assert_eq!(replay().0, first);
    // The second job did not fit while the first held 800m; after the kill it does.
    assert!(matches!(
        outcomes[2],
        Outcome::Rejected(StateError::QuotaExceeded { .. })
    ));
    assert!(matches!(
        outcomes[6],
        Outcome::JobSubmitted { created: true, .. }
    ));
}
