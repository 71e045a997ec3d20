//! A job goes from a BCL file through every real component to running processes, and
//! `borg job kill` stops them.

mod support;

use std::time::Duration;
use support::{process_alive, process_cmdline, wait_for, TestCell};

const SLEEPER: &str = r#"
// Three long-running replicas; the test kills them.
job sleeper = {
  priority = 100
  replicas = 3
  command = "/bin/sleep"
  args = ["100000"]
  requirements = { cpu = 50m  ram = 16Mi }
}
"#;

const PORTED: &str = r#"
job ported = {
  priority = 100
  command = "/bin/sh"
  args = ["-c", "echo port=%port% admin=%port:admin%; exec sleep 100000"]
  ports = ["http", "admin"]
  requirements = { cpu = 10m  ram = 16Mi }
}
"#;

fn running_pids(cell: &TestCell, job: &str, expected: usize) -> Option<Vec<u32>> {
    let status = cell.borg_json(&["job", "status", job])?;
    let pids: Vec<u32> = status["tasks"]
        .as_array()?
        .iter()
        .filter(|t| t["state"] == "running")
        .filter_map(|t| t["pid"].as_u64())
        .filter(|pid| *pid > 0)
        .map(|pid| pid as u32)
        .collect();
    (pids.len() == expected).then_some(pids)
}

#[test]
fn a_job_runs_as_real_processes_and_kill_stops_them() {
    let cell = TestCell::full(3);
    let file = cell.write_file("sleeper.bcl", SLEEPER);
    let submitted = cell.borg(&["job", "run", "--detach", file.to_str().unwrap()]);
    assert!(
        submitted.status.success(),
        "job run failed: {}",
        String::from_utf8_lossy(&submitted.stderr)
    );

    let pids = wait_for("3 running tasks", Duration::from_secs(60), || {
        running_pids(&cell, "sleeper", 3)
    });
    for pid in &pids {
        assert!(process_alive(*pid), "task process {pid} is not alive");
        let cmdline = process_cmdline(*pid);
        assert!(
            cmdline.contains("sleep 100000"),
            "pid {pid} runs {cmdline:?}"
        );
    }
    let cgroups_usable = nix::unistd::geteuid().is_root()
        && std::path::Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists();
    if cgroups_usable {
        for pid in &pids {
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
            assert!(
                cgroup.contains(&cell.cgroup_parent),
                "task {pid} is not in a cgroup under {}: {cgroup}",
                cell.cgroup_parent
            );
        }
    }
    let status = cell.borg_json(&["job", "status", "sleeper"]).unwrap();
    assert!(
        status["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["machine"] == cell.machine.as_str()),
        "{status:#}"
    );

    // A job no machine can hold stays pending, and `borg job why` says what is short.
    let giant = cell.write_file(
        "giant.bcl",
        &SLEEPER
            .replace("job sleeper", "job giant")
            .replace("cpu = 50m", "cpu = 1000"),
    );
    let submitted = cell.borg(&["job", "run", "--detach", giant.to_str().unwrap()]);
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let why = cell.borg_json(&["job", "why", "giant"]).expect("job why");
    assert_eq!(why["pending"], serde_json::json!([0, 1, 2]), "{why:#}");
    assert_eq!(why["why"]["machines_total"], 1, "{why:#}");
    assert_eq!(why["why"]["resource_shortfalls"]["cpu"], 1, "{why:#}");
    assert_eq!(why["why"]["best"], serde_json::json!([]), "{why:#}");
    let text = cell.borg(&["job", "why", "giant/1"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("1 task(s) pending (1)") && text.contains("short of cpu"),
        "{text}"
    );
    let settled = cell.borg_json(&["job", "why", "sleeper"]).unwrap();
    assert_eq!(settled["why"], serde_json::Value::Null, "{settled:#}");
    assert_eq!(cell.borg(&["job", "why", "nope"]).status.code(), Some(3));

    // Named ports: allocated by the borglet, substituted, reported, shown by the master.
    let ported = cell.write_file("ported.bcl", PORTED);
    let submitted = cell.borg(&["job", "run", "--detach", ported.to_str().unwrap()]);
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let task = wait_for(
        "ported/0 to run with its ports",
        Duration::from_secs(60),
        || {
            let task = cell.borg_json(&["job", "status", "ported/0"])?;
            (task["ports"].as_object()?.len() == 2).then_some(task)
        },
    );
    let ports = &task["ports"];
    let (http, admin) = (
        ports["http"].as_u64().unwrap(),
        ports["admin"].as_u64().unwrap(),
    );
    assert_ne!(http, admin);
    let expected = format!("port={http} admin={admin}");
    wait_for(
        "the task to print its ports",
        Duration::from_secs(30),
        || {
            let logs = cell.borg(&["logs", "ported/0"]);
            String::from_utf8_lossy(&logs.stdout)
                .contains(&expected)
                .then_some(())
        },
    );
    assert!(cell.borg(&["job", "kill", "ported"]).status.success());

    let killed = cell.borg(&["job", "kill", "sleeper"]);
    assert!(
        killed.status.success(),
        "job kill failed: {}",
        String::from_utf8_lossy(&killed.stderr)
    );
    wait_for(
        "every task process to exit",
        Duration::from_secs(30),
        || pids.iter().all(|pid| !process_alive(*pid)).then_some(()),
    );
    let status = cell.borg_json(&["job", "status", "sleeper"]).unwrap();
    assert_eq!(status["state"], "killed", "{status:#}");
    assert!(status["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["state"] == "killed"));
}

#[test]
fn unknown_jobs_and_bad_files_give_clear_errors_and_exit_codes() {
    let cell = TestCell::with_masters(3);
    cell.wait_for_leader();
    let missing = cell.borg(&["job", "status", "no-such-job"]);
    assert_eq!(missing.status.code(), Some(3), "not found exits 3");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no-such-job"));

    let bad = cell.write_file("bad.bcl", "job broken = {\n  replicas = \n}\n");
    let rejected = cell.borg(&["job", "run", "--detach", bad.to_str().unwrap()]);
    assert!(!rejected.status.success());
    let stderr = String::from_utf8_lossy(&rejected.stderr);
    assert!(
        stderr.contains("bad.bcl:"),
        "error names the file: {stderr}"
    );
    let listed = cell.borg_json(&["job", "list"]).unwrap();
    assert_eq!(
        listed.as_array().unwrap().len(),
        0,
        "a bad file changes nothing"
    );
}

const COUNTERS: &str = r#"
job counters = {
  type = "batch"
  priority = 100
  replicas = 3
  command = "/bin/sh"
  args = ["-c", "echo counted %task_index%"]
  requirements = { cpu = 10m  ram = 16Mi }
}

job breaker = {
  type = "batch"
  priority = 100
  replicas = 2
  command = "/bin/sh"
  args = ["-c", "exit 3"]
  requirements = { cpu = 10m  ram = 16Mi }
  restart = { max_attempts = 0  interval = 60s  delay = 1s }
}
"#;

#[test]
fn job_run_follows_a_batch_job_to_its_end_and_fails_when_tasks_fail() {
    let cell = TestCell::full(3);
    let file = cell.write_file("counters.bcl", COUNTERS);
    let run = cell.borg(&[
        "job",
        "run",
        "--wait-timeout-s",
        "90",
        file.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    // The first job settles with every task succeeded; the second's tasks fail, which
    // `job run` reports as an error naming the failed count.
    assert!(
        stdout.contains("counters: 3 succeeded"),
        "progress of counters: {stdout}\n{stderr}"
    );
    assert!(!run.status.success(), "a failed task must fail `job run`");
    assert!(
        stderr.contains("2 task(s) of job breaker failed"),
        "stderr: {stderr}\nstdout: {stdout}"
    );
    let counters = cell.borg_json(&["job", "status", "counters"]).unwrap();
    let tasks = counters["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 3);
    assert!(
        tasks.iter().all(|t| t["state"] == "succeeded"),
        "{counters}"
    );
}
