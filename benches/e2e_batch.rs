//! End to end: 1,000 trivial batch tasks (`/bin/true`) submitted to a real cell (3 master
//! replicas, scheduler, link shard and one borglet, each its own `borg` process on loopback,
//! as `borg dev` runs them) until every task has SUCCEEDED; prints tasks per second. Beside
//! it, in the same run, the same number of plain fork+exec+wait of `/bin/true`.
//!
//! Run (as root, for cgroups and namespaces):
//! `cargo bench -p borg --bench e2e_batch --profile dev` (the dev profile avoids a release
//! build of RocksDB). `TASKS=200` changes the number of tasks.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::{wait_for, TestCell};

/// Tasks of `job` per state ("pending", "running", "succeeded", ...), sorted by state.
fn states(cell: &TestCell, job: &str) -> Option<Vec<(String, usize)>> {
    let status = cell.borg_json(&["job", "status", job])?;
    let mut counts = std::collections::BTreeMap::new();
    for task in status["tasks"].as_array()? {
        let state = task["state"].as_str().unwrap_or("unknown").to_lowercase();
        *counts.entry(state).or_insert(0) += 1;
    }
    Some(counts.into_iter().collect())
}

fn main() {
    let tasks: usize = std::env::var("TASKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000);
    let plain = Instant::now();
    for _ in 0..tasks {
        std::process::Command::new("/bin/true")
            .status()
            .expect("run /bin/true");
    }
    let plain_per_s = tasks as f64 / plain.elapsed().as_secs_f64();

    let cell = TestCell::full(3);
    let bcl = format!(
        "job e2e = {{\n  type = 'batch'\n  appclass = 'batch'\n  priority = 'batch'\n  replicas = {tasks}\n  \
         command = '/bin/true'\n  resources = {{ cpu = 1m ram = 16Mi }}\n}}\n"
    );
    let file = cell.write_file("e2e.bcl", &bcl);
    let submitted = Instant::now();
    let output = cell.borg(&["job", "run", "--detach", file.to_str().expect("utf-8 path")]);
    assert!(
        output.status.success(),
        "submitting: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        cell.logs()
    );
    let mut last = Vec::new();
    wait_for("every task to succeed", Duration::from_secs(600), || {
        let now = states(&cell, "e2e")?;
        if now != last {
            eprintln!("{:>6.1} s: {now:?}", submitted.elapsed().as_secs_f64());
            last = now;
        }
        let done = last
            .iter()
            .find(|(s, _)| s == "succeeded")
            .map_or(0, |(_, n)| *n);
        (done == tasks).then_some(())
    });
    let elapsed = submitted.elapsed().as_secs_f64();
    println!("| path | tasks | seconds | tasks/s |");
    println!("|---|---|---|---|");
    println!(
        "| cell: submit → all SUCCEEDED (3 masters, scheduler, link shard, 1 borglet) | {tasks} | {elapsed:.2} | {:.0} |",
        tasks as f64 / elapsed
    );
    println!(
        "| plain fork+exec+wait of /bin/true, one at a time | {tasks} | {:.2} | {plain_per_s:.0} |",
        tasks as f64 / plain_per_s
    );
}
