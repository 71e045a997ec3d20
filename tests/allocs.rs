//! Alloc sets run end to end: `borg job run` submits a file's alloc set before its jobs, the
//! scheduler places the allocs on two real borglets, both jobs' task i run on alloc i's
//! machine, a job too big for what an alloc has left stays pending with the reason, and the
//! set cannot be killed while jobs use it.

mod support;

use std::time::Duration;
use support::{wait_for, Daemon, TestCell};

/// Each alloc takes 1200m: at most one fits on the second machine (1500m), so the set
/// spreads over two machines whatever the first one offers.
const SHARED: &str = r#"
alloc shared = { priority = 100 replicas = 2 resources = { cpu = 1200m ram = 256Mi } }
job server = {
  priority = 100
  alloc = 'shared'
  replicas = 2
  command = '/bin/sleep'
  args = ['100000']
  requirements = { cpu = 300m ram = 64Mi }
}
job saver = {
  priority = 100
  alloc = 'shared'
  replicas = 2
  command = '/bin/sleep'
  args = ['100001']
  requirements = { cpu = 100m ram = 32Mi }
}
"#;

/// The same set with a third job that fits an empty alloc (900m of 1200m) but not what
/// server and saver left (800m).
const BIG: &str = r#"
alloc shared = { priority = 100 replicas = 2 resources = { cpu = 1200m ram = 256Mi } }
job big = {
  priority = 100
  alloc = 'shared'
  replicas = 1
  command = '/bin/sleep'
  args = ['100002']
  requirements = { cpu = 900m ram = 32Mi }
}
"#;

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// (state, machine) of each task of `job` by index.
fn tasks(cell: &TestCell, job: &str) -> Option<Vec<(String, String)>> {
    let status = cell.borg_json(&["job", "status", job])?;
    Some(
        status["tasks"]
            .as_array()?
            .iter()
            .map(|t| {
                (
                    t["state"].as_str().unwrap_or("").to_string(),
                    t["machine"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect(),
    )
}

fn all_running(cell: &TestCell, job: &str, n: usize) -> Option<Vec<String>> {
    let tasks = tasks(cell, job)?;
    (tasks.len() == n && tasks.iter().all(|(state, _)| state == "running"))
        .then(|| tasks.into_iter().map(|(_, machine)| machine).collect())
}

#[test]
fn jobs_in_an_alloc_set_run_on_their_allocs_machines() {
    let mut cell = TestCell::full(3);
    // A second machine with 1500m.
    let second = format!("{}-b", cell.machine);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let args: Vec<String> = [
        "borglet",
        "--master",
        &cell.master_list(),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--machine",
        &second,
        "--cpu-millis",
        "1500",
        "--port-range",
        "30000-30999",
        "--data-dir",
        &cell.dir.path().join("borglet-b").display().to_string(),
        "--cgroup-parent",
        &format!("{}/b", cell.cgroup_parent),
        "--kill-tasks-on-exit",
        "--cluster-token-file",
        &cell.token_file("cluster.token"),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    cell.others
        .push(Daemon::spawn("borglet-b", &args, cell.dir.path()));
    wait_for(
        "the second borglet to register",
        Duration::from_secs(60),
        || {
            let machines = cell.borg_json(&["machine", "list"])?;
            (machines.as_array()?.len() == 2).then_some(())
        },
    );

    let file = cell.write_file("shared.bcl", SHARED);
    let run = cell.borg(&["job", "run", "--detach", file.to_str().unwrap()]);
    assert!(run.status.success(), "{}\n{}", stderr(&run), cell.logs());
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(out.contains("alloc set shared created"), "{out}");

    let allocs = wait_for("both allocs reserved", Duration::from_secs(60), || {
        all_running(&cell, "shared", 2)
    });
    assert_ne!(allocs[0], allocs[1], "1200m allocs need two machines");
    for job in ["server", "saver"] {
        let machines = wait_for(&format!("{job} running"), Duration::from_secs(60), || {
            all_running(&cell, job, 2)
        });
        assert_eq!(
            machines, allocs,
            "task i of {job} runs on alloc i's machine"
        );
    }
    // The allocs run nothing and the machines count each alloc once, not its tasks again.
    let machines = cell.borg_json(&["machine", "list"]).unwrap();
    for m in machines.as_array().unwrap() {
        assert_eq!(m["allocated"]["cpu_millis"], 1200, "{m:#}");
        assert_eq!(m["task_count"], 3, "{m:#}");
    }
    let status = cell.borg_json(&["alloc", "status", "shared"]).unwrap();
    assert_eq!(status["allocs"][0]["used"]["cpu_millis"], 400, "{status:#}");
    assert_eq!(
        status["allocs"][1]["tasks"],
        serde_json::json!(["saver/1", "server/1"])
    );

    // 900m does not fit the 800m alloc 0 has left: pending, and `why` says so.
    let big = cell.write_file("big.bcl", BIG);
    let run = cell.borg(&["job", "run", "--detach", big.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    let why = wait_for("big explained as pending", Duration::from_secs(30), || {
        let out = cell.borg(&["job", "why", "big"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("exhausted").then_some(text)
    });
    assert!(
        why.contains("cpu exhausted in alloc shared/0") && why.contains("cpu=800m"),
        "{why}"
    );
    assert_eq!(tasks(&cell, "big").unwrap()[0].0, "pending");

    // The set cannot go while jobs use it; --with-jobs takes them along.
    let refused = cell.borg(&["alloc", "kill", "shared"]);
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert!(
        message.contains("big, saver, server") && message.contains("--with-jobs"),
        "{message}"
    );
    let killed = cell.borg(&["alloc", "kill", "--with-jobs", "shared"]);
    assert!(killed.status.success(), "{}", stderr(&killed));
    let status = cell.borg_json(&["job", "status", "server"]).unwrap();
    assert_eq!(status["state"], "killed");
}
