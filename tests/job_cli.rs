//! `borg job plan` and `--check-index` against a live cell (masters only: nothing needs to
//! run for these).

mod support;

use support::TestCell;

const V1: &str = r#"
job api = {
  priority = 100
  replicas = 2
  command = "/bin/sleep"
  args = ["1000"]
  requirements = { cpu = 100m  ram = 16Mi }
}
"#;

fn v2() -> String {
    V1.replace("replicas = 2", "replicas = 4")
}

#[test]
fn plan_shows_the_diff_and_check_index_guards_against_lost_updates() {
    let cell = TestCell::with_masters(3);
    cell.wait_for_leader();
    let file = cell.write_file("api.bcl", V1);
    let path = file.to_str().unwrap();

    let plan = cell
        .borg_json(&["job", "plan", path])
        .expect("plan of a new job");
    assert_eq!(plan[0]["exists"], false);
    assert_eq!(plan[0]["tasks_created"].as_array().unwrap().len(), 2);
    // No machine has registered: the dry run says nothing would fit.
    assert_eq!(plan[0]["dry_run"]["placed"], 0);

    let created = cell.borg(&["job", "run", "--detach", "--check-index", "0", path]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let status = cell.borg_json(&["job", "status", "api"]).unwrap();
    let index = status["modify_index"].as_u64().unwrap();

    // Creating again with --check-index 0 is refused: the job exists now.
    let again = cell.borg(&["job", "run", "--detach", "--check-index", "0", path]);
    assert_eq!(again.status.code(), Some(4), "rejected exits 4");

    std::fs::write(&file, v2()).unwrap();
    let plan = cell.borg_json(&["job", "plan", path]).unwrap();
    assert_eq!(plan[0]["exists"], true);
    assert_eq!(plan[0]["modify_index"].as_u64(), Some(index));
    assert_eq!(plan[0]["tasks_created"], serde_json::json!([2, 3]));
    assert_eq!(plan[0]["tasks_recreated"], serde_json::json!([]));

    // A stale index is refused and changes nothing; the current one is accepted.
    let stale = (index + 100).to_string();
    let refused = cell.borg(&["job", "run", "--detach", "--check-index", &stale, path]);
    assert_eq!(refused.status.code(), Some(4));
    let unchanged = cell.borg_json(&["job", "status", "api"]).unwrap();
    assert_eq!(unchanged["replicas"], 2);
    let current = index.to_string();
    let updated = cell.borg(&["job", "run", "--detach", "--check-index", &current, path]);
    assert!(
        updated.status.success(),
        "{}",
        String::from_utf8_lossy(&updated.stderr)
    );
    let status = cell.borg_json(&["job", "status", "api"]).unwrap();
    assert_eq!(status["replicas"], 4);
    assert_eq!(status["tasks"].as_array().unwrap().len(), 4);
}

#[test]
fn inspect_shows_per_task_overrides_and_allocs_without_a_master() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leader.bcl");
    std::fs::write(
        &path,
        r#"
alloc pair = { replicas = 2 resources = { cpu = 200m ram = 32Mi } }
job leader = {
  priority = 100
  replicas = 2
  alloc = 'pair'
  command = "/bin/sleep"
  args = ["1000"]
  requirements = { cpu = 100m  ram = 16Mi }
  tasks = { 0 = { env = { ROLE = 'leader' } } }
}
"#,
    )
    .unwrap();
    // No master is needed: inspect shows the whole evaluation, overrides and allocs included.
    let inspected = std::process::Command::new(support::BORG)
        .args(["job", "inspect"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(inspected.status.success());
    let json: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert_eq!(
        json["job_extras"]["leader"]["task_overrides"]["0"]["env"]["ROLE"],
        "leader"
    );
    assert_eq!(json["job_extras"]["leader"]["alloc"], "pair");
    assert_eq!(json["allocs"][0]["replicas"], 2);
}
