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

use borg_proto::v1;
use borg_proto::v1::cell_service_client::CellServiceClient;
use std::time::{Duration, Instant};
use support::TestCell;

/// Longest the cell may take to run every task.
const RUN_TIMEOUT_S: u64 = 600;

/// Time between two reads of the job's task states (a cheap gRPC read, so the figure is
/// within this of the truth without taking the CPU the cell needs).
const STATUS_POLL_MS: u64 = 50;

/// Tasks of `job` per state ("pending", "running", "succeeded", ...), sorted by state; read
/// from the master directly (the CLI costs a process and a JSON rendering of every task).
async fn states(client: &borg_common::MasterClient, job: &str) -> Option<Vec<(String, usize)>> {
    let response = client
        .call(|channel| async move {
            CellServiceClient::new(channel)
                .get_job(v1::GetJobRequest {
                    name: job.to_owned(),
                    consistent: false,
                })
                .await
        })
        .await
        .ok()?
        .into_inner();
    let mut counts = std::collections::BTreeMap::new();
    for task in response.job?.tasks {
        let state = task.state().as_str_name().trim_start_matches("TASK_STATE_");
        *counts.entry(state.to_lowercase()).or_insert(0) += 1;
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut config = borg_common::MasterClientConfig::new(
        cell.master_ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect(),
    );
    config.token = Some(cell.admin_token.clone());
    let client = borg_common::MasterClient::new(config).expect("master client");
    loop {
        if let Some(now) = runtime.block_on(states(&client, "e2e")) {
            if now != last {
                eprintln!("{:>6.2} s: {now:?}", submitted.elapsed().as_secs_f64());
                last = now;
            }
        }
        let done = last
            .iter()
            .find(|(s, _)| s == "succeeded")
            .map_or(0, |(_, n)| *n);
        if done == tasks {
            break;
        }
        assert!(
            submitted.elapsed() < Duration::from_secs(RUN_TIMEOUT_S),
            "not every task succeeded within {RUN_TIMEOUT_S} s: {last:?}\n{}",
            cell.logs()
        );
        std::thread::sleep(Duration::from_millis(STATUS_POLL_MS));
    }
    let elapsed = submitted.elapsed().as_secs_f64();
    println!(
        "load (1/5/15 min): {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
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
