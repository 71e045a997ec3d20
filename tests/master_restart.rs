//! Every master replica restarted on its data directory: the cell still knows its jobs.

mod support;

use std::time::Duration;
use support::{wait_for, TestCell};

const PERSISTENT: &str = r#"
job persistent = {
  priority = 100
  replicas = 2
  command = "/bin/true"
  requirements = { cpu = 10m  ram = 8Mi }
}
"#;

#[test]
fn a_cell_restarted_on_its_data_directories_still_knows_its_jobs() {
    let mut cell = TestCell::with_masters(3);
    cell.wait_for_leader();
    let file = cell.write_file("persistent.bcl", PERSISTENT);
    let submitted = cell.borg(&["job", "run", "--detach", file.to_str().unwrap()]);
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let before = cell
        .borg_json(&["job", "status", "--consistent", "persistent"])
        .expect("job readable before the restart");

    // SIGKILL: only what was made durable before the acknowledgement may be relied on.
    for id in 1..=3 {
        cell.kill_master(id);
    }
    for id in 1..=3 {
        cell.restart_master(id);
    }
    cell.wait_for_leader();

    let after = wait_for("the job after the restart", Duration::from_secs(60), || {
        cell.borg_json(&["job", "status", "--consistent", "persistent"])
    });
    assert_eq!(after["replicas"], 2);
    assert_eq!(after["tasks"].as_array().unwrap().len(), 2);
    assert_eq!(after["modify_index"], before["modify_index"]);
    assert_eq!(after["owner"], before["owner"]);

    // The restarted cell takes new writes.
    let again = cell.borg(&["job", "kill", "persistent"]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let killed = cell
        .borg_json(&["job", "status", "--consistent", "persistent"])
        .unwrap();
    assert_eq!(killed["state"], "killed");
}
