//! Admission across processes: tokens, ownership, quotas and the control-plane role against
//! real master replicas (nothing needs to run, so no borglet).

mod support;

use borg_common::{MasterClient, MasterClientConfig};
use borg_proto::v1;
use borg_proto::v1::cell_service_client::CellServiceClient;
use borg_proto::v1::link_service_client::LinkServiceClient;
use borg_proto::v1::scheduler_service_client::SchedulerServiceClient;
use std::process::Output;
use support::TestCell;
use tonic::Code;

/// Two tasks of 300 millicores; `replicas` is rewritten by the tests.
const JOB: &str = r#"
job web = {
  priority = 100
  replicas = 2
  command = "/bin/sleep"
  args = ["1000"]
  requirements = { cpu = 300m  ram = 64Mi }
}
"#;

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Creates a token for `user` as the admin and returns it.
fn create_token(cell: &TestCell, user: &str) -> String {
    let output = cell.borg(&["token", "create", user]);
    assert!(output.status.success(), "{}", stderr(&output));
    let token = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert_eq!(token.len(), 64, "a token is 64 hex digits: {token:?}");
    token
}

fn job_exists(cell: &TestCell, name: &str) -> bool {
    cell.borg_json(&["job", "list"])
        .and_then(|jobs| jobs.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .any(|job| job["name"] == name)
}

#[test]
fn quotas_and_ownership_are_enforced_for_users_of_the_cli() {
    let cell = TestCell::with_masters(3);
    cell.wait_for_leader();
    let bob = create_token(&cell, "bob");
    let eve = create_token(&cell, "eve");
    let whoami = cell.borg_as(&bob, "bob", &["token", "whoami"]);
    assert_eq!(String::from_utf8_lossy(&whoami.stdout).trim(), "bob");

    // A non-admin may not set quotas (exit 4: rejected), not even its own.
    let denied = cell.borg_as(
        &bob,
        "bob",
        &["quota", "set", "bob", "batch", "cpu=100", "ram=1Ti"],
    );
    assert_eq!(denied.status.code(), Some(4), "{}", stderr(&denied));
    assert!(
        stderr(&denied).contains("only an admin"),
        "{}",
        stderr(&denied)
    );
    // Without a quota the batch band is closed to bob; the error says how to get one.
    let file = cell.write_file("web.bcl", JOB);
    let path = file.to_str().unwrap();
    let no_quota = cell.borg_as(&bob, "bob", &["job", "run", "--detach", path]);
    assert_eq!(no_quota.status.code(), Some(4));
    assert!(
        stderr(&no_quota).contains("borg quota set bob batch"),
        "{}",
        stderr(&no_quota)
    );

    let set = cell.borg(&["quota", "set", "bob", "batch", "cpu=1", "ram=1Gi"]);
    assert!(set.status.success(), "{}", stderr(&set));
    let run = cell.borg_as(&bob, "bob", &["job", "run", "--detach", path]);
    assert!(run.status.success(), "{}", stderr(&run));
    let quota = cell
        .borg_json(&["quota", "get", "bob"])
        .expect("quota get as json");
    assert_eq!(quota[0]["limit"]["cpu_millis"], 1000);
    assert_eq!(quota[0]["used"]["cpu_millis"], 600);

    // A second job of 4 x 300m does not fit the 400m left: refused, naming the dimension
    // and the shortfall, and nothing changes.
    let big = cell.write_file(
        "big.bcl",
        &JOB.replace("job web", "job big")
            .replace("replicas = 2", "replicas = 4"),
    );
    let refused = cell.borg_as(
        &bob,
        "bob",
        &["job", "run", "--detach", big.to_str().unwrap()],
    );
    assert_eq!(refused.status.code(), Some(4), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("cpu needs 1200m more but 400m remain (short by 800m)"),
        "{}",
        stderr(&refused)
    );
    assert!(!job_exists(&cell, "big"));
    let quota = cell.borg_json(&["quota", "get", "bob"]).unwrap();
    assert_eq!(quota[0]["used"]["cpu_millis"], 600);

    // Growing web by one task is checked on the 300m difference, which fits (its whole
    // 900m would not).
    std::fs::write(&file, JOB.replace("replicas = 2", "replicas = 3")).unwrap();
    let grown = cell.borg_as(&bob, "bob", &["job", "run", "--detach", path]);
    assert!(grown.status.success(), "{}", stderr(&grown));
    assert_eq!(
        cell.borg_json(&["job", "status", "web"]).unwrap()["replicas"],
        3
    );

    // Eve may neither kill nor take over bob's job; bob may kill it.
    let kill = cell.borg_as(&eve, "eve", &["job", "kill", "web"]);
    assert_eq!(kill.status.code(), Some(4), "{}", stderr(&kill));
    assert!(
        stderr(&kill).contains("belongs to bob"),
        "{}",
        stderr(&kill)
    );
    let status = cell.borg_json(&["job", "status", "web"]).unwrap();
    assert_eq!(status["state"], "active");
    let kill = cell.borg_as(&bob, "bob", &["job", "kill", "web"]);
    assert!(kill.status.success(), "{}", stderr(&kill));
}

async fn call_as(cell: &TestCell, token: Option<&str>) -> (Code, Code, Code, Code) {
    let client = MasterClient::new(MasterClientConfig {
        token: token.map(str::to_owned),
        ..MasterClientConfig::new(cell.master_list().split(',').map(str::to_owned).collect())
    })
    .expect("a master client");
    let code = |r: Result<(), tonic::Status>| r.err().map_or(Code::Ok, |s| s.code());
    let read = client
        .call(|channel| async move {
            CellServiceClient::new(channel)
                .list_jobs(v1::ListJobsRequest::default())
                .await
                .map(|_| ())
        })
        .await;
    let kill = client
        .call(|channel| async move {
            CellServiceClient::new(channel)
                .kill_job(v1::KillJobRequest {
                    name: "nothing".into(),
                    request_id: String::new(),
                })
                .await
                .map(|_| ())
        })
        .await;
    let assignment = client
        .call(|channel| async move {
            LinkServiceClient::new(channel)
                .get_assignment(v1::GetAssignmentRequest {
                    shard_index: 0,
                    shard_count: 1,
                    known: vec![],
                    wait_ms: 0,
                })
                .await
                .map(|_| ())
        })
        .await;
    let plan = client
        .call(|channel| async move {
            SchedulerServiceClient::new(channel)
                .commit_plan(v1::CommitPlanRequest::default())
                .await
                .map(|_| ())
        })
        .await;
    (code(read), code(kill), code(assignment), code(plan))
}

#[test]
fn requests_need_a_known_token_and_control_plane_calls_the_cluster_token() {
    let cell = TestCell::with_masters(3);
    cell.wait_for_leader();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");

    // No token, or an unknown one: nothing is served.
    let all_unauthenticated = (
        Code::Unauthenticated,
        Code::Unauthenticated,
        Code::Unauthenticated,
        Code::Unauthenticated,
    );
    assert_eq!(runtime.block_on(call_as(&cell, None)), all_unauthenticated);
    assert_eq!(
        runtime.block_on(call_as(&cell, Some("not-a-token"))),
        all_unauthenticated
    );
    let unknown = cell.borg_as("not-a-token", "admin", &["job", "list"]);
    assert_eq!(unknown.status.code(), Some(4));
    assert!(
        stderr(&unknown).contains("borg token create"),
        "{}",
        stderr(&unknown)
    );

    // A user (even the admin) reads and writes the cell but is no control plane.
    assert_eq!(
        runtime.block_on(call_as(&cell, Some(&cell.admin_token))),
        (
            Code::Ok,
            Code::NotFound,
            Code::PermissionDenied,
            Code::PermissionDenied
        )
    );
    // The cluster token reads and serves the control plane, but acts for no user.
    assert_eq!(
        runtime.block_on(call_as(&cell, Some(&cell.cluster_token))),
        (Code::Ok, Code::PermissionDenied, Code::Ok, Code::Ok)
    );
}
