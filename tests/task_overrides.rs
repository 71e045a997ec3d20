//! Per-task overrides run end to end: task 1 of a job runs its own command line through the
//! master's desired state and a real borglet, and the cell shows what each task runs.

mod support;

use std::time::Duration;
use support::{wait_for, TestCell};

/// Two batch tasks; task 1 runs other arguments and asks for more cpu. Each prints what it
/// is and fails unless it got its own arguments (task 1 checks that it is task 1).
const SHARDED: &str = r#"
job sharded = {
  priority = 100
  type = 'batch'
  replicas = 2
  command = '/bin/sh'
  args = ['-c', 'echo base-%task_index%']
  requirements = { cpu = 10m  ram = 16Mi }
  tasks = {
    1 = {
      args = ['-c', 'echo override-%task_index%; test %task_index% = 1']
      requirements = { cpu = 20m }
    }
  }
}
"#;

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_per_task_override_runs_its_own_command_line() {
    let cell = TestCell::full(3);
    let file = cell.write_file("sharded.bcl", SHARDED);
    let run = cell.borg(&["job", "run", file.to_str().unwrap()]);
    assert!(run.status.success(), "{}\n{}", stderr(&run), cell.logs());

    let status = cell.borg_json(&["job", "status", "sharded"]).unwrap();
    let tasks = status["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    assert!(
        tasks.iter().all(|t| t["state"] == "succeeded"),
        "{status:#}"
    );
    assert_eq!(status["task"]["args"][1], "echo base-%task_index%");
    assert_eq!(
        status["task_overrides"]["1"]["args"][1],
        "echo override-%task_index%; test %task_index% = 1"
    );
    assert_eq!(status["task_overrides"]["1"]["resources"]["cpu_millis"], 20);
    assert!(status["task_overrides"].get("0").is_none(), "{status:#}");

    // What each process printed: the borglet ran each task's own template.
    for (index, expected) in [(0, "base-0\n"), (1, "override-1\n")] {
        let target = format!("sharded/{index}");
        let printed = wait_for(
            &format!("the stdout of {target}"),
            Duration::from_secs(30),
            || {
                let out = cell.borg(&["logs", &target]);
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                (out.status.success() && !text.is_empty()).then_some(text)
            },
        );
        assert_eq!(printed, expected, "{target}");
    }

    let text = cell.borg(&["job", "status", "sharded"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("Overrides     task 1: /bin/sh -c \"echo override-%task_index%; test %task_index% = 1\""),
        "{text}"
    );
}
