//! A real borglet on loopback, driven over gRPC: real processes, real cgroups (when running as
//! root with cgroups available), real files. Each test uses its own data directory and cgroup
//! parent, and cleans up processes and cgroups even when it fails.

use borg_proto::v1;
use borg_proto::v1::borglet_service_client::BorgletServiceClient;
use borglet::cgroups::TaskCgroups;
use borglet::state_dir::StateDir;
use borglet::{Borglet, BorgletConfig, CgroupMode};
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const MACHINE: &str = "test-machine";
/// Longest wait for any condition; generous for a loaded 2-core machine.
const WAIT_MAX: Duration = Duration::from_secs(30);
const POLL_PAUSE: Duration = Duration::from_millis(20);

static HARNESS_COUNTER: AtomicU32 = AtomicU32::new(0);

struct Harness {
    config: BorgletConfig,
    data_dir: tempfile::TempDir,
    cgroups: Option<Arc<dyn TaskCgroups>>,
    registry: prometheus::Registry,
    client: BorgletServiceClient<Channel>,
    shutdown: CancellationToken,
    server: Option<JoinHandle<Result<(), borglet::BorgletError>>>,
}

impl Harness {
    async fn start(mode: CgroupMode) -> Harness {
        Self::start_with(mode, |_| {}).await
    }

    async fn start_with(mode: CgroupMode, adjust: impl FnOnce(&mut BorgletConfig)) -> Harness {
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = BorgletConfig::new(vec![], "127.0.0.1:0", MACHINE, data_dir.path());
        config.cgroups = mode;
        config.cgroup_parent = format!(
            "borg-test-{}-{}",
            std::process::id(),
            HARNESS_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        config.stop_grace_period_ms = 2_000;
        config.kill_tasks_on_exit = true;
        config.capacity_override = Some(borg_model::Resources::new(4_000, 8 << 30));
        adjust(&mut config);
        let (cgroups, registry, client, shutdown, server) = Self::launch(&config).await;
        Harness {
            config,
            data_dir,
            cgroups,
            registry,
            client,
            shutdown,
            server: Some(server),
        }
    }

    #[allow(clippy::type_complexity)]
    async fn launch(
        config: &BorgletConfig,
    ) -> (
        Option<Arc<dyn TaskCgroups>>,
        prometheus::Registry,
        BorgletServiceClient<Channel>,
        CancellationToken,
        JoinHandle<Result<(), borglet::BorgletError>>,
    ) {
        let borglet = Borglet::bind(config.clone()).await.unwrap();
        let address = borglet.local_addr();
        let cgroups = borglet.cgroups();
        let registry = borglet.registry().clone();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(borglet.run(shutdown.clone()));
        let client = BorgletServiceClient::connect(format!("http://{address}"))
            .await
            .unwrap();
        (cgroups, registry, client, shutdown, server)
    }

    /// Stops the borglet and starts a new one on the same data directory and cgroup parent.
    async fn restart_borglet(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
        let (cgroups, registry, client, shutdown, server) = Self::launch(&self.config).await;
        self.cgroups = cgroups;
        self.registry = registry;
        self.client = client;
        self.shutdown = shutdown;
        self.server = Some(server);
    }

    async fn poll(&mut self, desired: &[v1::AssignedTask]) -> v1::PollResponse {
        self.client
            .poll(v1::PollRequest {
                machine: MACHINE.into(),
                desired: desired.to_vec(),
                master_index: 1,
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// Polls with `desired` until `done` holds for the report.
    async fn poll_until(
        &mut self,
        desired: &[v1::AssignedTask],
        what: &str,
        done: impl Fn(&v1::PollResponse) -> bool,
    ) -> v1::PollResponse {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            let response = self.poll(desired).await;
            if done(&response) {
                return response;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last report: {:#?}",
                response.tasks
            );
            tokio::time::sleep(POLL_PAUSE).await;
        }
    }

    /// Value of a counter or gauge, summed over the series whose labels include `label`.
    fn metric(&self, name: &str, label: Option<&str>) -> f64 {
        self.registry
            .gather()
            .iter()
            .filter(|family| family.name() == name)
            .flat_map(|family| family.get_metric())
            .filter(|m| label.is_none_or(|l| m.get_label().iter().any(|p| p.value() == l)))
            .map(|m| m.get_counter().get_value() + m.get_gauge().get_value())
            .sum()
    }

    fn sandbox(&self, task: &v1::AssignedTask) -> PathBuf {
        self.data_dir
            .path()
            .join("sandboxes")
            .join(format!("{}.{}.{}", task.job, task.index, task.incarnation))
    }

    /// Stops the borglet (which stops its tasks) and checks that nothing is left.
    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
        let records = StateDir::new(self.data_dir.path()).load_all().unwrap();
        assert!(records.is_empty(), "task records left behind: {records:?}");
    }
}

impl Drop for Harness {
    /// Last resort when a test failed half-way: kill what the records name, remove cgroups.
    fn drop(&mut self) {
        self.shutdown.cancel();
        for record in StateDir::new(self.data_dir.path())
            .load_all()
            .unwrap_or_default()
        {
            borglet::runner::signal_group(record.pid, Signal::SIGKILL);
            if let (Some(cgroups), Some(name)) = (&self.cgroups, &record.cgroup) {
                borglet::runner::signal_pids(&cgroups.pids(name), Signal::SIGKILL);
                for _ in 0..50 {
                    if cgroups.remove(name).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        if let Some(cgroups) = &self.cgroups {
            let _ = cgroups.remove_parent();
        }
    }
}

fn task(job: &str, index: u32, command: &str, args: &[&str]) -> v1::AssignedTask {
    v1::AssignedTask {
        job: job.into(),
        index,
        incarnation: 1,
        owner: "alice".into(),
        priority: 100,
        job_type: v1::JobType::Service as i32,
        app_class: v1::AppClass::LatencySensitive as i32,
        restart: Some(v1::RestartPolicy {
            max_attempts: 3,
            interval_s: 60,
            delay_ms: 10,
        }),
        template: Some(v1::TaskTemplate {
            command: command.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: HashMap::new(),
            resources: Some(v1::Resources {
                cpu_millis: 250,
                ram_bytes: 64 << 20,
                disk_bytes: 0,
                gpus: 0,
            }),
            ports: vec![],
        }),
    }
}

fn batch(mut task: v1::AssignedTask) -> v1::AssignedTask {
    task.job_type = v1::JobType::Batch as i32;
    task
}

fn report_of<'a>(
    response: &'a v1::PollResponse,
    task: &v1::AssignedTask,
) -> Option<&'a v1::TaskReport> {
    response
        .tasks
        .iter()
        .find(|r| r.job == task.job && r.index == task.index && r.incarnation == task.incarnation)
}

fn state_of(response: &v1::PollResponse, task: &v1::AssignedTask) -> Option<v1::TaskState> {
    report_of(response, task).map(|r| r.state())
}

/// Alive: exists and is not a zombie waiting to be reaped.
fn process_exists(pid: u32) -> bool {
    borglet::runner::process_start_ticks(pid).is_some()
}

async fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.ends_with('\n') {
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {}",
            path.display()
        );
        tokio::time::sleep(POLL_PAUSE).await;
    }
}

#[tokio::test]
async fn a_desired_task_runs_in_its_cgroup_and_is_stopped_when_removed() {
    let mut harness = Harness::start(CgroupMode::Auto).await;
    let Some(cgroups) = harness.cgroups.clone() else {
        // As root (this machine, CI) cgroups must work; elsewhere there is nothing to test.
        assert!(
            !nix::unistd::geteuid().is_root(),
            "running as root but cgroups are unavailable"
        );
        eprintln!("skipped: not running as root, so tasks run without cgroups");
        harness.stop().await;
        return;
    };
    let sleeper = task("sleeper", 0, "/bin/sleep", &["300"]);
    let desired = vec![sleeper.clone()];
    let response = harness
        .poll_until(&desired, "the task to run", |r| {
            report_of(r, &sleeper).is_some_and(|t| t.state() == v1::TaskState::Running && t.pid > 0)
        })
        .await;
    assert_eq!(response.machine, MACHINE);
    let pid = report_of(&response, &sleeper).unwrap().pid;
    assert!(process_exists(pid));
    assert_eq!(harness.metric("borglet_tasks_running", None), 1.0);
    assert_eq!(harness.metric("borglet_task_starts_total", None), 1.0);
    assert_eq!(harness.metric("borglet_cgroups_enabled", None), 1.0);

    // The process is in the task's cgroup, whose memory limit is the task's ram limit.
    let name = "sleeper.0.1";
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        membership
            .lines()
            .any(|line| line.ends_with(&format!("/{name}"))),
        "{membership}"
    );
    assert_eq!(cgroups.pids(name), vec![pid]);
    let memory_dir = cgroups.memory_dir(name);
    let limit_file = match cgroups.version() {
        borglet::cgroups::CgroupVersion::V1 => "memory.limit_in_bytes",
        borglet::cgroups::CgroupVersion::V2 => "memory.max",
    };
    let limit = std::fs::read_to_string(memory_dir.join(limit_file)).unwrap();
    assert_eq!(limit.trim(), (64u64 << 20).to_string());
    if cgroups.version() == borglet::cgroups::CgroupVersion::V1 {
        let cpu_line = membership
            .lines()
            .find(|l| {
                l.split(':')
                    .nth(1)
                    .is_some_and(|c| c.split(',').any(|c| c == "cpu"))
            })
            .unwrap();
        let cpu_path = cpu_line.split(':').nth(2).unwrap();
        let (mount, _) = cgroups_rs::fs::hierarchies::V1::new()
            .get_mount_point(cgroups_rs::fs::Controllers::Cpu)
            .unwrap();
        let shares = std::fs::read_to_string(
            mount
                .join(cpu_path.trim_start_matches('/'))
                .join("cpu.shares"),
        )
        .unwrap();
        assert_eq!(shares.trim(), "256");
    }

    // Removed from the desired set: reported KILLED, then forgotten once gone and cleaned up.
    let mut saw_killed = false;
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let response = harness.poll(&[]).await;
        match state_of(&response, &sleeper) {
            Some(v1::TaskState::Killed) => saw_killed = true,
            None => break,
            Some(other) => panic!("unexpected state {other:?} after removal"),
        }
        assert!(Instant::now() < deadline, "the task was not forgotten");
        tokio::time::sleep(POLL_PAUSE).await;
    }
    assert!(saw_killed, "the stop was never reported as KILLED");
    assert!(!process_exists(pid), "process {pid} still exists");
    assert!(
        !memory_dir.exists(),
        "cgroup {} not removed",
        memory_dir.display()
    );
    assert_eq!(harness.metric("borglet_tasks_running", None), 0.0);
    assert_eq!(
        harness.metric("borglet_task_exits_total", Some("stopped")),
        1.0
    );
    assert!(harness.metric("borglet_polls_total", None) >= 2.0);
    harness.stop().await;
}

#[tokio::test]
async fn batch_tasks_succeed_or_fail_after_their_restarts() {
    let mut harness = Harness::start(CgroupMode::Auto).await;
    let ok = batch(task("ok", 0, "/bin/true", &[]));
    let mut bad = batch(task(
        "bad",
        0,
        "/bin/sh",
        &["-c", "echo run >> runs; exit 3"],
    ));
    bad.restart = Some(v1::RestartPolicy {
        max_attempts: 2,
        interval_s: 60,
        delay_ms: 10,
    });
    let desired = vec![ok.clone(), bad.clone()];
    let response = harness
        .poll_until(&desired, "both tasks to end", |r| {
            state_of(r, &ok) == Some(v1::TaskState::Succeeded)
                && state_of(r, &bad) == Some(v1::TaskState::Failed)
        })
        .await;
    let ok_report = report_of(&response, &ok).unwrap();
    assert_eq!(ok_report.exit_code, Some(0));
    assert_eq!(ok_report.restarts, 0);
    let bad_report = report_of(&response, &bad).unwrap();
    assert_eq!(bad_report.exit_code, Some(3));
    assert_eq!(bad_report.restarts, 2);
    assert!(
        bad_report.message.contains("restart policy exhausted"),
        "{}",
        bad_report.message
    );
    let runs = std::fs::read_to_string(harness.sandbox(&bad).join("runs")).unwrap();
    assert_eq!(runs.lines().count(), 3, "first run plus two restarts");

    // Terminal tasks are reported while desired, and forgotten silently once removed.
    let again = harness.poll(&desired).await;
    assert_eq!(state_of(&again, &ok), Some(v1::TaskState::Succeeded));
    let removed = harness.poll(&[]).await;
    assert!(removed.tasks.is_empty(), "{:?}", removed.tasks);
    harness.stop().await;
}

#[tokio::test]
async fn args_env_and_stdout_reach_the_process() {
    let mut harness = Harness::start(CgroupMode::Auto).await;
    let script = r#"echo "$1|$BORG_JOB|$BORG_TASK_INDEX|$BORG_USER|$GREETING|$(pwd)" > seen; echo to-stdout; echo to-stderr >&2"#;
    let mut echo = batch(task(
        "echo-job",
        4,
        "sh",
        &["-c", script, "sh", "%job%-%task_index%-%user%"],
    ));
    echo.template
        .as_mut()
        .unwrap()
        .env
        .insert("GREETING".into(), "hello %user%".into());
    let desired = vec![echo.clone()];
    harness
        .poll_until(&desired, "the task to succeed", |r| {
            state_of(r, &echo) == Some(v1::TaskState::Succeeded)
        })
        .await;
    let sandbox = harness.sandbox(&echo);
    let seen = wait_for_file(&sandbox.join("seen")).await;
    let sandbox_path = sandbox.canonicalize().unwrap();
    assert_eq!(
        seen.trim_end(),
        format!(
            "echo-job-4-alice|echo-job|4|alice|hello alice|{}",
            sandbox_path.display()
        )
    );
    assert_eq!(
        std::fs::read_to_string(sandbox.join("stdout")).unwrap(),
        "to-stdout\n"
    );
    assert_eq!(
        std::fs::read_to_string(sandbox.join("stderr")).unwrap(),
        "to-stderr\n"
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_task_ignoring_sigterm_is_killed_with_its_children_after_the_grace_period() {
    let mut harness = Harness::start_with(CgroupMode::Auto, |c| c.stop_grace_period_ms = 300).await;
    let stubborn = task(
        "stubborn",
        0,
        "/bin/sh",
        &["-c", "trap '' TERM; sleep 300 & echo $! > child.pid; wait"],
    );
    let desired = vec![stubborn.clone()];
    let response = harness
        .poll_until(&desired, "the task to run", |r| {
            state_of(r, &stubborn) == Some(v1::TaskState::Running)
        })
        .await;
    let pid = report_of(&response, &stubborn).unwrap().pid;
    let child: u32 = wait_for_file(&harness.sandbox(&stubborn).join("child.pid"))
        .await
        .trim()
        .parse()
        .unwrap();
    assert!(process_exists(child));
    let started = Instant::now();
    harness
        .poll_until(&[], "the task to be forgotten", |r| {
            state_of(r, &stubborn).is_none()
        })
        .await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "SIGTERM was not ignored?"
    );
    assert!(!process_exists(pid), "leader {pid} survived");
    assert!(!process_exists(child), "child {child} survived");
    harness.stop().await;
}

#[tokio::test]
async fn tasks_run_without_cgroups_and_bad_assignments_fail_with_a_reason() {
    let mut harness = Harness::start(CgroupMode::Off).await;
    assert!(harness.cgroups.is_none());
    let service = task("svc", 1, "/bin/sleep", &["300"]);
    let missing = task("missing", 0, "/nonexistent/binary", &[]);
    let mut no_template = task("empty", 0, "/bin/true", &[]);
    no_template.template = None;
    let desired = vec![service.clone(), missing.clone(), no_template.clone()];
    let response = harness
        .poll_until(&desired, "states of all three", |r| {
            state_of(r, &service) == Some(v1::TaskState::Running)
                && state_of(r, &missing) == Some(v1::TaskState::Failed)
                && state_of(r, &no_template) == Some(v1::TaskState::Failed)
        })
        .await;
    assert!(report_of(&response, &missing)
        .unwrap()
        .message
        .contains("/nonexistent/binary"));
    assert!(report_of(&response, &no_template)
        .unwrap()
        .message
        .contains("template"));
    assert_eq!(response.info.as_ref().unwrap().name, MACHINE);
    let pid = report_of(&response, &service).unwrap().pid;
    assert!(process_exists(pid));

    // A new incarnation replaces the old one: the old process is stopped, the new one started.
    let mut next = service.clone();
    next.incarnation = 2;
    let response = harness
        .poll_until(&[next.clone()], "the old incarnation to go", |r| {
            state_of(r, &service).is_none() && state_of(r, &next) == Some(v1::TaskState::Running)
        })
        .await;
    assert!(!process_exists(pid));
    assert_ne!(report_of(&response, &next).unwrap().pid, pid);

    // A poll for another machine is refused with a reason.
    let error = harness
        .client
        .poll(v1::PollRequest {
            machine: "other-machine".into(),
            desired: vec![],
            master_index: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::FailedPrecondition);
    assert!(
        error.message().contains("other-machine"),
        "{}",
        error.message()
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_restarted_borglet_adopts_its_running_tasks() {
    let mut harness = Harness::start_with(CgroupMode::Auto, |c| c.kill_tasks_on_exit = false).await;
    let service = task("adoptee", 0, "/bin/sleep", &["300"]);
    let desired = vec![service.clone()];
    let response = harness
        .poll_until(&desired, "the task to run", |r| {
            report_of(r, &service).is_some_and(|t| t.state() == v1::TaskState::Running && t.pid > 0)
        })
        .await;
    let pid = report_of(&response, &service).unwrap().pid;

    harness.restart_borglet().await;
    assert!(process_exists(pid), "the task did not outlive the borglet");
    let response = harness.poll(&desired).await;
    let report = report_of(&response, &service).unwrap();
    assert_eq!(report.state(), v1::TaskState::Running);
    assert_eq!(
        report.pid, pid,
        "the task was started again instead of adopted"
    );
    assert_eq!(report.restarts, 0);

    harness
        .poll_until(&[], "the adopted task to be stopped", |r| {
            state_of(r, &service).is_none()
        })
        .await;
    assert!(!process_exists(pid));
    if let Some(cgroups) = &harness.cgroups {
        assert!(!cgroups.exists("adoptee.0.1"));
    }
    harness.stop().await;
}

#[tokio::test]
async fn a_task_past_its_memory_limit_is_reported_oom_killed() {
    let mut harness = Harness::start(CgroupMode::Auto).await;
    if harness.cgroups.is_none() {
        assert!(
            !nix::unistd::geteuid().is_root(),
            "running as root but cgroups are unavailable"
        );
        eprintln!("skipped: not running as root, so no memory limit is enforced");
        harness.stop().await;
        return;
    }
    // `tail` keeps a whole line in memory, and /dev/zero has no newline.
    let mut hog = batch(task(
        "hog",
        0,
        "/bin/sh",
        &["-c", "head -c 268435456 /dev/zero | tail -n 1"],
    ));
    hog.template
        .as_mut()
        .unwrap()
        .resources
        .as_mut()
        .unwrap()
        .ram_bytes = 16 << 20;
    hog.restart = Some(v1::RestartPolicy {
        max_attempts: 0,
        interval_s: 60,
        delay_ms: 10,
    });
    let desired = vec![hog.clone()];
    let response = harness
        .poll_until(&desired, "the task to fail", |r| {
            state_of(r, &hog) == Some(v1::TaskState::Failed)
        })
        .await;
    let report = report_of(&response, &hog).unwrap();
    assert!(
        report
            .message
            .starts_with("OOM-killed at its memory limit of 16Mi"),
        "{}",
        report.message
    );
    assert_eq!(harness.metric("borglet_task_exits_total", Some("oom")), 1.0);
    harness.stop().await;
}

/// Not a pass/fail test: prints how long starting a task takes (desired set received →
/// process running in its cgroup), beside plain fork+exec of the same program.
/// Run with `cargo test -p borglet --test tasks -- --ignored --nocapture start_latency`.
#[tokio::test]
#[ignore]
async fn start_latency() {
    const TASKS: u32 = 200;
    let mut harness = Harness::start(CgroupMode::Auto).await;
    let desired: Vec<v1::AssignedTask> = (0..TASKS)
        .map(|i| batch(task("latency", i, "/bin/true", &[])))
        .collect();
    let first_poll = Instant::now();
    harness.poll(&desired).await;
    let per_start_ms = first_poll.elapsed().as_secs_f64() * 1000.0 / f64::from(TASKS);
    harness
        .poll_until(&desired, "every task to succeed", |r| {
            r.tasks
                .iter()
                .filter(|t| t.state() == v1::TaskState::Succeeded)
                .count()
                == TASKS as usize
        })
        .await;
    let family = harness
        .registry
        .gather()
        .into_iter()
        .find(|f| f.name() == "borglet_task_start_latency_seconds")
        .unwrap();
    let histogram = family.get_metric()[0].get_histogram().clone();
    let mean_ms = histogram.get_sample_sum() * 1000.0 / histogram.get_sample_count() as f64;
    let plain = Instant::now();
    for _ in 0..TASKS {
        std::process::Command::new("/bin/true").status().unwrap();
    }
    let plain_ms = plain.elapsed().as_secs_f64() * 1000.0 / f64::from(TASKS);
    println!(
        "{} starts in one poll, cgroups {}: {per_start_ms:.3} ms per start; mean latency from the desired set {mean_ms:.3} ms (plain fork+exec+wait of /bin/true: {plain_ms:.3} ms)",
        histogram.get_sample_count(),
        if harness.cgroups.is_some() { "on" } else { "off" },
    );
    harness.poll(&[]).await;
    harness.stop().await;
}
