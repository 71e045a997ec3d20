//! Token management across processes: `borg token list` and `borg token revoke` against
//! three real master replicas; a revoked token is refused by every replica.

mod support;

use std::process::{Command, Output, Stdio};
use std::time::Duration;
use support::{wait_for, TestCell, BORG};

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `borg token whoami` with `token` against the replica on `port` alone.
fn whoami_on(port: u16, token: &str) -> Output {
    Command::new(BORG)
        .args(["--master", &format!("127.0.0.1:{port}"), "token", "whoami"])
        .env("BORG_TOKEN", token)
        .stdin(Stdio::null())
        .output()
        .expect("run borg CLI")
}

/// Creates a token for `user` as the admin: (token, id).
fn create_token(cell: &TestCell, user: &str) -> (String, String) {
    let created = cell
        .borg_json(&["token", "create", user])
        .expect("token create as json");
    (
        created["token"].as_str().expect("a token").to_owned(),
        created["id"].as_str().expect("an id").to_owned(),
    )
}

/// Waits until every replica answers `whoami` for `token` as `expected` (None: refused).
fn wait_until_every_replica_says(cell: &TestCell, token: &str, expected: Option<&str>) {
    for &port in &cell.master_ports {
        wait_for(
            &format!("replica on port {port} to answer {expected:?}"),
            Duration::from_secs(20),
            || {
                let output = whoami_on(port, token);
                let answer = output
                    .status
                    .success()
                    .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned());
                (answer.as_deref() == expected).then_some(())
            },
        );
    }
}

#[test]
fn admins_list_and_revoke_tokens_and_every_replica_refuses_a_revoked_one() {
    let cell = TestCell::with_masters(3);
    cell.wait_for_leader();
    let (bob, bob_id) = create_token(&cell, "bob");
    let (bob2, _) = create_token(&cell, "bob");
    let (eve, eve_id) = create_token(&cell, "eve");
    assert_eq!(bob_id.len(), 12);
    wait_until_every_replica_says(&cell, &bob, Some("bob"));

    // The admin lists them with ids, users and creation times, never a secret.
    let listed = cell.borg(&["--output", "json", "token", "list"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(!text.contains(&bob) && !text.contains(&eve), "{text}");
    let tokens: serde_json::Value = serde_json::from_str(&text).expect("json");
    let rows: Vec<(&str, &str)> = tokens
        .as_array()
        .expect("a list")
        .iter()
        .map(|t| (t["user"].as_str().unwrap(), t["id"].as_str().unwrap()))
        .collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows.contains(&("bob", bob_id.as_str())));
    assert!(rows.contains(&("eve", eve_id.as_str())));
    assert!(tokens[0]["created_ms"].as_u64().unwrap() > 0);

    // A non-admin may neither list nor revoke (exit 4: rejected), and nothing changes.
    let denied = cell.borg_as(&bob, "bob", &["token", "list"]);
    assert_eq!(denied.status.code(), Some(4), "{}", stderr(&denied));
    assert!(
        stderr(&denied).contains("only an admin"),
        "{}",
        stderr(&denied)
    );
    let denied = cell.borg_as(&bob, "bob", &["token", "revoke", "eve"]);
    assert_eq!(denied.status.code(), Some(4), "{}", stderr(&denied));
    wait_until_every_replica_says(&cell, &eve, Some("eve"));
    // An unknown target is "not found" (exit 3) and says where to look.
    let unknown = cell.borg(&["token", "revoke", "nobody"]);
    assert_eq!(unknown.status.code(), Some(3), "{}", stderr(&unknown));
    assert!(
        stderr(&unknown).contains("borg token list"),
        "{}",
        stderr(&unknown)
    );

    // Revoked by id: every replica refuses that token once it applied the revocation;
    // bob's other token still works.
    let revoked = cell.borg(&["token", "revoke", &bob_id]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    wait_until_every_replica_says(&cell, &bob, None);
    let refused = cell.borg_as(&bob, "bob", &["token", "whoami"]);
    assert_eq!(refused.status.code(), Some(4), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("not known to this cell"),
        "{}",
        stderr(&refused)
    );
    wait_until_every_replica_says(&cell, &bob2, Some("bob"));

    // Revoked by user: all of bob's tokens; eve's stays.
    let revoked = cell.borg(&["token", "revoke", "bob"]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    wait_until_every_replica_says(&cell, &bob2, None);
    wait_until_every_replica_says(&cell, &eve, Some("eve"));
    let left = cell.borg_json(&["token", "list"]).expect("token list");
    assert_eq!(left.as_array().map(Vec::len), Some(1), "{left}");
}
