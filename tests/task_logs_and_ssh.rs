//! `borg logs` and `borg ssh` against a real cell: the CLI finds the task's machine through the
//! master and talks to its borglet.

mod support;

use std::time::Duration;
use support::{wait_for, TestCell};

const JOB: &str = "job talk = {
  command = '/bin/sh'
  args = ['-c', 'echo hello-%task_index%; echo oops >&2; exec sleep 100000']
  replicas = 1
  priority = 100
  resources = { cpu = 100m ram = 32Mi }
}
";

#[test]
fn logs_and_ssh_reach_a_running_task_for_its_owner_only() {
    let cell = TestCell::full(3);
    let file = cell.write_file("talk.bcl", JOB);
    let run = cell.borg(&["job", "run", file.to_str().unwrap()]);
    assert!(
        run.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&run.stderr),
        cell.logs()
    );

    let stdout = wait_for("the task's stdout", Duration::from_secs(30), || {
        let out = cell.borg(&["logs", "talk/0"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && text.contains("hello-0")).then_some(text)
    });
    assert_eq!(stdout, "hello-0\n");
    let stderr = cell.borg(&["logs", "talk/0", "--stderr"]);
    assert_eq!(String::from_utf8_lossy(&stderr.stdout), "oops\n");

    // The owner (the admin submitted it) runs a command inside the task's cgroup.
    let inside = cell.borg(&["ssh", "talk/0", "--", "cat", "/proc/self/cgroup"]);
    assert!(
        inside.status.success(),
        "{}",
        String::from_utf8_lossy(&inside.stderr)
    );
    let cgroups = String::from_utf8_lossy(&inside.stdout);
    assert!(
        cgroups
            .lines()
            .any(|l| l.contains(&format!("/{}/talk.0.", cell.cgroup_parent))),
        "{cgroups}"
    );
    let code = cell.borg(&["ssh", "talk/0", "--", "sh", "-c", "exit 3"]);
    assert_eq!(code.status.code(), Some(3));

    // Anyone else is refused (exit 4: rejected).
    let refused = cell.borg(&["ssh", "--as", "mallory", "talk/0", "--", "true"]);
    assert_eq!(
        refused.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("only its owner"));

    let missing = cell.borg(&["logs", "nosuchjob/0"]);
    assert_eq!(missing.status.code(), Some(3), "not found exits 3");
    let killed = cell.borg(&["job", "kill", "talk"]);
    assert!(killed.status.success());
}
