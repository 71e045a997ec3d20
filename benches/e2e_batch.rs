//! End to end: 1,000 trivial batch tasks (`/bin/true`) submitted to a real cell (3 master
//! replicas, scheduler, link shard and one borglet, each its own `borg` process on loopback,
//! as `borg dev` runs them) until every task has SUCCEEDED; prints tasks per second. Beside
//! it, in the same run, the same number of plain fork+exec+wait of `/bin/true`.
//!
//! Run (as root, for cgroups and namespaces):
//! `cargo bench -p borg --bench e2e_batch --profile dev` (the dev profile avoids a release
//! build of RocksDB). `TASKS=200` changes the number of tasks; `STATUS_READ=full` watches
//! progress by reading the whole job (every task) instead of its task counts.
//!
//! First, in process and without a cell, it prints what the scheduler's cell watch costs per
//! task for this job, changed tasks only beside whole jobs (`WATCH_ONLY=1`: only that).
//!
//! Besides tasks per second it prints the CPU each process of the cell used during the run
//! (from /proc: the borglet's line for its reaped children covers the keepers, namespace
//! inits and tasks) and how busy the whole machine was, and the daemons' pids for profiles.

#[path = "../tests/support/mod.rs"]
mod support;
#[path = "e2e_batch/watch_cost.rs"]
mod watch_cost;

use borg_proto::v1;
use borg_proto::v1::cell_service_client::CellServiceClient;
use std::time::{Duration, Instant};
use support::TestCell;

/// `/proc` counts CPU time in USER_HZ ticks, 100 per second on Linux.
const TICKS_PER_S: f64 = 100.0;

/// CPU time (user + system) in ticks of process `pid` itself and of its descendants it has
/// reaped (the borglet's keepers, their namespace inits and the tasks).
fn process_cpu_ticks(pid: i32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the parenthesised command name: utime, stime, cutime, cstime are fields 14-17.
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(4)
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    match fields[..] {
        [utime, stime, cutime, cstime] => (utime + stime, cutime + cstime),
        _ => (0, 0),
    }
}

/// The machine's busy and idle CPU ticks so far (first line of /proc/stat, all cores).
fn machine_cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...: idle and iowait are not busy.
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (ticks.iter().sum::<u64>() - idle, idle)
}

/// CPU of the cell's processes (and of the whole machine) between two moments.
struct CpuSample {
    pids: Vec<(String, i32)>,
    processes: Vec<(String, u64, u64)>,
    /// This benchmark's own CPU (its status reads).
    bench_ticks: u64,
    machine: (u64, u64),
}

impl CpuSample {
    fn take(cell: &TestCell) -> CpuSample {
        let daemons = cell.masters.iter().flatten().chain(&cell.others);
        let pids: Vec<(String, i32)> = daemons.map(|d| (d.name.clone(), d.pid())).collect();
        CpuSample {
            processes: pids
                .iter()
                .map(|(name, pid)| {
                    let (own, reaped) = process_cpu_ticks(*pid);
                    (name.clone(), own, reaped)
                })
                .collect(),
            bench_ticks: process_cpu_ticks(std::process::id() as i32).0,
            pids,
            machine: machine_cpu_ticks(),
        }
    }

    /// Prints CPU ms per task of each process since `before`.
    fn print_since(&self, before: &CpuSample, tasks: usize, seconds: f64) {
        let per_task_ms = |ticks: u64| ticks as f64 / TICKS_PER_S * 1e3 / tasks as f64;
        println!("| process | CPU s | CPU ms per task |");
        println!("|---|---|---|");
        let mut cell_ticks = 0;
        for ((name, own, reaped), (_, own0, reaped0)) in
            self.processes.iter().zip(&before.processes)
        {
            let ticks = own.saturating_sub(*own0);
            cell_ticks += ticks;
            println!(
                "| {name} | {:.2} | {:.2} |",
                ticks as f64 / TICKS_PER_S,
                per_task_ms(ticks)
            );
            let children = reaped.saturating_sub(*reaped0);
            if children > 0 {
                cell_ticks += children;
                println!(
                    "| {name}'s reaped children (keepers, inits, tasks) | {:.2} | {:.2} |",
                    children as f64 / TICKS_PER_S,
                    per_task_ms(children)
                );
            }
        }
        println!(
            "| the cell | {:.2} | {:.2} |",
            cell_ticks as f64 / TICKS_PER_S,
            per_task_ms(cell_ticks)
        );
        let bench = self.bench_ticks.saturating_sub(before.bench_ticks);
        println!(
            "| (not the cell) this benchmark's status reads | {:.2} | {:.2} |",
            bench as f64 / TICKS_PER_S,
            per_task_ms(bench)
        );
        let busy = self.machine.0.saturating_sub(before.machine.0);
        let idle = self.machine.1.saturating_sub(before.machine.1);
        println!(
            "machine CPU in the run ({seconds:.2} s): busy {:.2} s, idle {:.2} s (all processes, all cores)",
            busy as f64 / TICKS_PER_S,
            idle as f64 / TICKS_PER_S
        );
    }
}

/// Longest the cell may take to run every task.
const RUN_TIMEOUT_S: u64 = 600;

/// Time between two reads of the job's task counts (a cheap gRPC read, so the figure is
/// within this of the truth without taking the CPU the cell needs).
const STATUS_POLL_MS: u64 = 50;

/// Tasks of `job` per state ("pending", "running", "succeeded", ...), sorted by state; read
/// from the master directly (the CLI costs a process and a JSON rendering of every task).
/// `summary` asks only for the counts; else the whole job (every task) is read and counted,
/// as before the counts existed (`STATUS_READ=full`, for comparison).
async fn states(
    client: &borg_common::MasterClient,
    job: &str,
    summary: bool,
) -> Option<Vec<(String, usize)>> {
    let response = client
        .call(|channel| async move {
            CellServiceClient::new(channel)
                .get_job(v1::GetJobRequest {
                    name: job.to_owned(),
                    consistent: false,
                    summary,
                })
                .await
        })
        .await
        .ok()?
        .into_inner();
    let name = |state: i32| {
        let state = v1::TaskState::try_from(state).unwrap_or_default();
        state
            .as_str_name()
            .trim_start_matches("TASK_STATE_")
            .to_lowercase()
    };
    let mut counts = std::collections::BTreeMap::new();
    if summary {
        for count in response.task_counts {
            *counts.entry(name(count.state)).or_insert(0) += count.count as usize;
        }
    } else {
        for task in response.job?.tasks {
            *counts.entry(name(task.state)).or_insert(0) += 1;
        }
    }
    Some(counts.into_iter().collect())
}

fn main() {
    let tasks: usize = std::env::var("TASKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000);
    let summary = std::env::var("STATUS_READ").map_or(true, |v| v != "full");
    watch_cost::print(tasks);
    if std::env::var_os("WATCH_ONLY").is_some() {
        return;
    }
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
    let cpu_before = CpuSample::take(&cell);
    // For profiles of the run (`perf record -a`, then `perf report --pid PID`).
    eprintln!(
        "pids: {}",
        cpu_before
            .pids
            .iter()
            .map(|(name, pid)| format!("{name}={pid}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
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
        if let Some(now) = runtime.block_on(states(&client, "e2e", summary)) {
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
    let cpu_after = CpuSample::take(&cell);
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
    cpu_after.print_since(&cpu_before, tasks, elapsed);
}
