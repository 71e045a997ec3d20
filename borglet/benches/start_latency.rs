//! Task start latency: from a Poll carrying a new task until the borglet reports the task's
//! pid, which it learns once the program has been exec'd in its cgroup and namespaces as the
//! task user. Beside it, in the same run: plain fork+exec of the same
//! program (`std::process::Command::spawn`, which returns once exec succeeded), and the
//! borglet with isolation off.
//!
//! Run: `cargo bench -p borglet --bench start_latency` (as root for cgroups and namespaces).
//! `STARTS=200` changes the number of starts per row (default 1,000).

use borg_proto::v1;
use borg_proto::v1::borglet_service_client::BorgletServiceClient;
use borglet::{Borglet, BorgletConfig, CgroupMode, IsolationMode};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const PROGRAM: &str = "/bin/true";

fn assigned(index: u32) -> v1::AssignedTask {
    v1::AssignedTask {
        job: "bench".into(),
        index,
        incarnation: 1,
        owner: "bench".into(),
        priority: 100,
        job_type: v1::JobType::Batch as i32,
        app_class: v1::AppClass::Batch as i32,
        restart: Some(v1::RestartPolicy {
            max_attempts: 0,
            interval_s: 60,
            delay_ms: 10,
        }),
        template: Some(v1::TaskTemplate {
            command: PROGRAM.into(),
            args: vec![],
            env: HashMap::new(),
            resources: Some(v1::Resources {
                cpu_millis: 100,
                ram_bytes: 64 << 20,
                disk_bytes: 0,
                gpus: 0,
            }),
            ports: vec![],
        }),
    }
}

struct Summary {
    median_ms: f64,
    p99_ms: f64,
}

fn summarize(mut samples: Vec<Duration>) -> Summary {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    Summary {
        median_ms: at(0.5),
        p99_ms: at(0.99),
    }
}

/// Starts `starts` tasks one Poll at a time; each Poll also drops the previous task.
/// With `keeper`, each task's keeper is the exec'd keeper program; otherwise a fork of the
/// borglet.
async fn borglet_starts(
    starts: u32,
    isolation: IsolationMode,
    cgroup_mode: CgroupMode,
    keeper: bool,
    cgroup_spares_max: usize,
) -> (Summary, f64, bool, bool) {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut config = BorgletConfig::new(vec![], "127.0.0.1:0", "bench-machine", data_dir.path());
    config.cgroups = cgroup_mode;
    config.cgroup_parent = format!(
        "borg-bench-{}-{isolation:?}-{cgroup_mode:?}-{keeper}-{cgroup_spares_max}",
        std::process::id()
    );
    config.cgroup_spares_max = cgroup_spares_max;
    config.kill_tasks_on_exit = true;
    config.isolation = isolation;
    config.finished_sandboxes_max = 16;
    config.capacity_override = Some(borg_model::Resources::new(4_000, 8 << 30));
    config.keeper_program = keeper.then(|| env!("CARGO_BIN_EXE_borglet-keeper").into());
    let borglet = Borglet::bind(config).await.expect("borglet starts");
    let address = borglet.local_addr();
    let cgroups = borglet.cgroups().is_some();
    let registry = borglet.registry().clone();
    let isolated = isolation == IsolationMode::Auto && nix::unistd::geteuid().is_root();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(borglet.run(shutdown.clone()));
    let mut client = BorgletServiceClient::connect(format!("http://{address}"))
        .await
        .expect("connect");
    let mut samples = Vec::with_capacity(starts as usize);
    for index in 0..starts {
        let request = v1::PollRequest {
            machine: "bench-machine".into(),
            desired: vec![assigned(index)],
            master_index: u64::from(index),
            ..Default::default()
        };
        // The Poll answers at once; the task reports its pid once it was exec'd. Re-polling
        // every millisecond until then adds up to about 1 ms.
        let sent = Instant::now();
        loop {
            let response = client
                .poll(request.clone())
                .await
                .expect("poll")
                .into_inner();
            let started = response.tasks.iter().any(|t| {
                t.index == index
                    && (t.pid > 0
                        || matches!(t.state(), v1::TaskState::Succeeded | v1::TaskState::Failed))
            });
            if started {
                break;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(30),
                "task {index} did not start"
            );
            // Polling flat out would take the CPU the start needs (2 cores).
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        samples.push(sent.elapsed());
    }
    let _ = client
        .poll(v1::PollRequest {
            machine: "bench-machine".into(),
            desired: vec![],
            master_index: 0,
            ..Default::default()
        })
        .await;
    shutdown.cancel();
    let _ = server.await;
    // The borglet's own measure: Poll received → program exec'd (mean, from its histogram).
    let inside_mean_ms = registry
        .gather()
        .iter()
        .find(|f| f.name() == "borglet_task_start_latency_seconds")
        .map(|f| {
            let h = f.get_metric()[0].get_histogram();
            h.get_sample_sum() * 1000.0 / h.get_sample_count().max(1) as f64
        })
        .unwrap_or(0.0);
    (summarize(samples), inside_mean_ms, cgroups, isolated)
}

/// `Command::spawn` returns once the program was exec'd. Without `pre_exec` std uses
/// posix_spawn (vfork); with a no-op `pre_exec` it must fork, as the borglet does.
fn plain_starts(starts: u32, fork: bool) -> Summary {
    use std::os::unix::process::CommandExt;
    let mut samples = Vec::with_capacity(starts as usize);
    for _ in 0..starts {
        let mut command = std::process::Command::new(PROGRAM);
        if fork {
            // SAFETY: the closure does nothing.
            unsafe {
                command.pre_exec(|| Ok(()));
            }
        }
        let sent = Instant::now();
        let mut child = command.spawn().expect("spawn");
        samples.push(sent.elapsed());
        let _ = child.wait();
    }
    summarize(samples)
}

fn main() {
    let starts: u32 = std::env::var("STARTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let vfork = plain_starts(starts, false);
    let plain = plain_starts(starts, true);
    let spares = BorgletConfig::new(vec![], "127.0.0.1:0", "bench-machine", "/").cgroup_spares_max;
    let row = |isolation, cgroups, keeper, spares| {
        runtime.block_on(borglet_starts(starts, isolation, cgroups, keeper, spares))
    };
    let (bare, bare_inside, _, _) = row(IsolationMode::Off, CgroupMode::Off, true, spares);
    let (off, off_inside, _, _) = row(IsolationMode::Off, CgroupMode::Auto, true, spares);
    let (forked, forked_inside, _, _) = row(IsolationMode::Auto, CgroupMode::Auto, false, spares);
    // Each finished task's cgroup removed and the next one's created (as before reuse).
    let (fresh, fresh_inside, _, _) = row(IsolationMode::Auto, CgroupMode::Auto, true, 0);
    let (on, on_inside, cgroups, isolated) =
        row(IsolationMode::Auto, CgroupMode::Auto, true, spares);
    println!(
        "task start latency, {starts} starts per row ({PROGRAM}); cgroups {}, isolation {}; load {}",
        if cgroups { "on" } else { "off" },
        if isolated {
            "on (PID+mount+UTS namespaces, user nobody)"
        } else {
            "off (not root)"
        },
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    println!("| path | median ms | p99 ms | borglet-internal mean ms |");
    println!("|---|---|---|---|");
    println!(
        "| plain posix_spawn (std Command::spawn) | {:.3} | {:.3} | |",
        vfork.median_ms, vfork.p99_ms
    );
    println!(
        "| plain fork+exec (std Command::spawn with pre_exec) | {:.3} | {:.3} | |",
        plain.median_ms, plain.p99_ms
    );
    let rows = [
        ("no cgroups, no isolation", &bare, bare_inside),
        ("cgroups, no isolation", &off, off_inside),
        (
            "cgroups + namespaces + user, forked keeper",
            &forked,
            forked_inside,
        ),
        (
            "cgroups (not reused) + namespaces + user",
            &fresh,
            fresh_inside,
        ),
        ("cgroups (reused) + namespaces + user", &on, on_inside),
    ];
    for (what, summary, inside) in rows {
        println!(
            "| borglet Poll → exec'd, {what} | {:.3} | {:.3} | {inside:.3} |",
            summary.median_ms, summary.p99_ms
        );
    }
    println!(
        "ratio of medians, borglet isolated / plain fork+exec: {:.1}x",
        on.median_ms / plain.median_ms
    );
}
