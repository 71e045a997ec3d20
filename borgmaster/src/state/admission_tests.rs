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

fn create_token(hash: &str, who: &str) -> Command {
    as_user(
        &admin(),
        Command::CreateToken {
            token_sha256: hash.into(),
            user: who.into(),
            admin: false,
        },
    )
}

fn revoke(caller: &Caller, target: &str) -> Command {
    as_user(
        caller,
        Command::RevokeTokens {
            target: target.into(),
        },
    )
}

#[test]
fn admins_list_tokens_without_secrets_and_revoke_them_by_id_or_user() {
    let mut cell = Cell::new();
    let (bob1, bob2, eve) = ("b1".repeat(32), "b2".repeat(32), "ee".repeat(32));
    cell.apply(create_token(&bob1, "bob"));
    cell.apply(create_token(&eve, "eve"));
    cell.apply(create_token(&bob2, "bob"));
    let listed = cell.state.tokens_view(None);
    let ids: Vec<(&str, &str, u64)> = listed
        .iter()
        .map(|t| (t.user.as_str(), t.id.as_str(), t.created_ms))
        .collect();
    assert_eq!(
        ids,
        [
            ("bob", &bob1[..TOKEN_ID_LEN], 1_000),
            ("bob", &bob2[..TOKEN_ID_LEN], 3_000),
            ("eve", &eve[..TOKEN_ID_LEN], 2_000),
        ]
    );
    assert_eq!(cell.state.tokens_view(Some("eve")).len(), 1);

    // A user may not revoke, not even its own tokens; nothing changes.
    let error = cell.refused(revoke(&user("bob"), "bob"));
    assert!(error.to_string().contains("only an admin"), "{error}");
    assert_eq!(cell.state.token_user(&bob1), Some(("bob", false)));
    // Unknown targets and too short ids are refused, naming what to do.
    let error = cell.refused(revoke(&admin(), "nobody"));
    assert!(error.to_string().contains("borg token list"), "{error}");
    cell.refused(revoke(&admin(), &bob1[..TOKEN_ID_LEN - 1]));

    // By id: just that token.
    let Outcome::TokensRevoked { tokens } = cell.apply(revoke(&admin(), &bob1[..TOKEN_ID_LEN]))
    else {
        panic!("not revoked");
    };
    assert_eq!(tokens.len(), 1);
    assert_eq!(cell.state.token_user(&bob1), None);
    assert_eq!(cell.state.token_user(&bob2), Some(("bob", false)));
    // By user: all of them.
    cell.apply(create_token(&bob1, "bob"));
    let Outcome::TokensRevoked { tokens } = cell.apply(revoke(&admin(), "bob")) else {
        panic!("not revoked");
    };
    assert_eq!(tokens.len(), 2);
    assert_eq!(cell.state.token_user(&bob1), None);
    assert_eq!(cell.state.token_user(&bob2), None);
    assert_eq!(cell.state.token_user(&eve), Some(("eve", false)));
    let events = cell.state.events_view(0, None, usize::MAX);
    assert_eq!(
        events.iter().filter(|e| e.kind == "token_revoked").count(),
        3
    );
}

#[test]
fn an_ambiguous_token_id_is_refused() {
    let mut cell = Cell::new();
    let shared = "0123456789ab";
    cell.apply(create_token(&format!("{shared}{}", "1".repeat(52)), "bob"));
    cell.apply(create_token(&format!("{shared}{}", "2".repeat(52)), "eve"));
    let error = cell.refused(revoke(&admin(), shared));
    assert!(matches!(
        error,
        StateError::TokenIdAmbiguous { count: 2, .. }
    ));
    let longer = format!("{shared}1");
    assert!(matches!(
        cell.apply(revoke(&admin(), &longer)),
        Outcome::TokensRevoked { .. }
    ));
}

fn ssh_event(job: &str, index: u32, message: &str) -> Command {
    Command::RecordTaskEvent {
        task: borg_model::TaskId::new(job, index),
        incarnation: 1,
        kind: TaskEventKind::SshSession,
        message: message.into(),
    }
}

#[test]
fn the_control_plane_records_ssh_sessions_on_tasks_and_users_may_not() {
    let mut cell = Cell::new();
    cell.apply(Command::SubmitJob {
        spec: spec("web", "bob", 2, 50, 100),
        check_index: None,
        must_exist: false,
    });
    assert_eq!(
        cell.apply(ssh_event("web", 1, "shell by bob")),
        Outcome::TaskEventRecorded
    );
    let events = cell.state.task_events_view("web", 1, 10);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, "task_ssh_session");
    assert_eq!(events[0].message, "incarnation 1: shell by bob");
    assert!(cell.state.task_events_view("web", 0, 10).is_empty());

    // Users cannot forge one; unknown tasks and oversized messages are refused.
    let error = cell.refused(as_user(&admin(), ssh_event("web", 1, "forged")));
    assert!(matches!(error, StateError::PermissionDenied { .. }));
    cell.refused(ssh_event("web", 7, "no such task"));
    cell.refused(ssh_event("nope", 0, "no such job"));
    cell.refused(ssh_event(
        "web",
        0,
        &"x".repeat(TASK_EVENT_MESSAGE_MAX_LEN + 1),
    ));
}
