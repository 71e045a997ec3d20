//! A real borglet on loopback, driven over gRPC: real processes, real cgroups (when running as
//! root with cgroups available), real files. Each test uses its own data directory and cgroup
//! parent, and cleans up processes and cgroups even when it fails.

use borg_proto::v1;
use borg_proto::v1::borglet_service_client::BorgletServiceClient;
use borglet::cgroups::spares::spare_name;
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
        // The keeper installed beside `borg` (`borg-keeper`), built for this crate's tests.
        config.keeper_program = Some(env!("CARGO_BIN_EXE_borglet-keeper").into());
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
                ..Default::default()
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
    /// Makes `target` the whole desired set and polls until its program runs.
    async fn run_until_running(&mut self, target: &v1::AssignedTask) {
        self.poll_until(std::slice::from_ref(target), "the task to run", |r| {
            report_of(r, target).is_some_and(|t| t.state() == v1::TaskState::Running && t.pid > 0)
        })
        .await;
    }

    /// Opens a terminal session with `inputs` sent first; the input stream stays open (as a
    /// user's would) until the returned sender is dropped.
    async fn open_shell(
        &mut self,
        inputs: Vec<v1::ShellInput>,
    ) -> (
        tokio::sync::mpsc::Sender<v1::ShellInput>,
        tonic::Streaming<v1::ShellOutput>,
    ) {
        let (sender, receiver) = tokio::sync::mpsc::channel(inputs.len().max(1));
        for input in inputs {
            sender.send(input).await.unwrap();
        }
        let outputs = self
            .client
            .shell(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await
            .unwrap()
            .into_inner();
        (sender, outputs)
    }

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

/// Runs `task` without restarts until it failed; its report.
async fn run_once_until_failed(harness: &mut Harness, task: &v1::AssignedTask) -> v1::TaskReport {
    let mut task = task.clone();
    task.restart = Some(v1::RestartPolicy {
        max_attempts: 0,
        interval_s: 60,
        delay_ms: 10,
    });
    let desired = vec![task.clone()];
    let response = harness
        .poll_until(&desired, "the task to fail", |r| {
            state_of(r, &task) == Some(v1::TaskState::Failed)
        })
        .await;
    report_of(&response, &task).unwrap().clone()
}

/// Alive: exists and is not a zombie waiting to be reaped.
fn process_exists(pid: u32) -> bool {
    borglet::runner::process_start_ticks(pid).is_some()
}

async fn wait_for_file(path: &Path) -> String {
    wait_for_lines(path, 1).await
}

/// Waits until `path` holds at least `lines` whole lines.
async fn wait_for_lines(path: &Path, lines: usize) -> String {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.ends_with('\n') && text.lines().count() >= lines {
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {lines} line(s) in {}",
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
    // The keeper and the program (the reported pid); a forked keeper forks a namespace init
    // between them, an exec'd keeper is that init itself.
    let members = cgroups.pids(name);
    let isolated = harness.metric("borglet_isolation_enabled", None) == 1.0;
    let forked_init = isolated && harness.config.keeper_program.is_none();
    let processes = if forked_init { 3 } else { 2 };
    assert!(
        members.contains(&pid) && members.len() == processes,
        "{members:?}"
    );
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

/// The keys of `tasks`, for a keyed poll.
fn keys_of(tasks: &[&v1::AssignedTask]) -> Vec<v1::JobTaskKeys> {
    borg_proto::convert::group_task_keys(
        tasks
            .iter()
            .map(|t| (t.job.as_str(), t.index, t.incarnation)),
    )
}

#[tokio::test]
async fn a_keyed_poll_keeps_held_tasks_and_names_the_unknown_ones() {
    let mut harness = Harness::start(CgroupMode::Off).await;
    let held = task("held", 0, "/bin/sleep", &["1000"]);
    let missing = task("missing", 0, "/bin/sleep", &["1000"]);
    let fresh = task("fresh", 0, "/bin/sleep", &["1000"]);
    harness.run_until_running(&held).await;
    let keyed = |keys: &[&v1::AssignedTask], desired: Vec<v1::AssignedTask>| v1::PollRequest {
        machine: MACHINE.into(),
        desired,
        master_index: 2,
        keyed: true,
        desired_keys: keys_of(keys),
        ..Default::default()
    };
    // `held` by key, `fresh` in full, `missing` by key although this borglet never had it.
    let response = harness
        .client
        .poll(keyed(&[&held, &missing, &fresh], vec![fresh.clone()]))
        .await
        .unwrap()
        .into_inner();
    assert!(response.keyed_polls);
    assert_eq!(response.unknown, keys_of(&[&missing]));
    assert_eq!(state_of(&response, &held), Some(v1::TaskState::Running));
    assert!(
        state_of(&response, &fresh).is_some(),
        "{:?}",
        response.tasks
    );
    assert_eq!(state_of(&response, &missing), None);
    // A key left out of a keyed poll stops its task, as in a full poll.
    let response = harness
        .client
        .poll(keyed(&[&fresh], vec![]))
        .await
        .unwrap()
        .into_inner();
    assert!(response.unknown.is_empty());
    assert_eq!(state_of(&response, &held), Some(v1::TaskState::Killed));
    harness
        .poll_until(&[], "every task to be gone", |r| r.tasks.is_empty())
        .await;
    harness.stop().await;
}

/// The exec'd keeper is its task's namespace init: it reaps the orphans the task leaves, and
/// a task killed by a signal is reported so (an init cannot die of the task's signal, so the
/// keeper hands the borglet the task's wait status).
impl Harness {
    /// A full poll asking only for the report changes after `since` (epoch, change number).
    async fn poll_since(
        &mut self,
        desired: &[v1::AssignedTask],
        since: (u64, u64),
    ) -> v1::PollResponse {
        self.client
            .poll(v1::PollRequest {
                machine: MACHINE.into(),
                desired: desired.to_vec(),
                master_index: 1,
                report_epoch: since.0,
                reports_since: since.1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    }
}

fn cursor_of(response: &v1::PollResponse) -> (u64, u64) {
    (response.report_epoch, response.report_seq)
}

#[tokio::test]
async fn incremental_reports_carry_only_changes_and_restarts_bring_a_full_one() {
    let mut harness = Harness::start_with(CgroupMode::Off, |c| c.kill_tasks_on_exit = false).await;
    let kept = task("kept", 0, "/bin/sleep", &["1000"]);
    let dropped = task("dropped", 0, "/bin/sleep", &["1000"]);
    let both = vec![kept.clone(), dropped.clone()];
    let running = harness
        .poll_until(&both, "both tasks to run", |r| {
            [&kept, &dropped].iter().all(|t| {
                report_of(r, t).is_some_and(|t| t.state() == v1::TaskState::Running && t.pid > 0)
            })
        })
        .await;
    assert!(
        !running.incremental,
        "a poll without a cursor is answered in full"
    );
    assert_ne!(running.report_epoch, 0);
    let quiet = harness.poll_since(&both, cursor_of(&running)).await;
    assert!(quiet.incremental);
    assert!(quiet.tasks.is_empty(), "nothing changed: {:?}", quiet.tasks);
    assert!(quiet.forgotten.is_empty());
    assert_eq!(quiet.report_seq, running.report_seq);

    // A task leaves the desired set: reported KILLED, then forgotten, both incrementally.
    let mut since = cursor_of(&quiet);
    let mut killed_seen = false;
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let response = harness.poll_since(std::slice::from_ref(&kept), since).await;
        assert!(response.incremental);
        assert_eq!(state_of(&response, &kept), None, "`kept` did not change");
        killed_seen |= state_of(&response, &dropped) == Some(v1::TaskState::Killed);
        since = cursor_of(&response);
        if response.forgotten == keys_of(&[&dropped]) {
            break;
        }
        assert!(Instant::now() < deadline, "`dropped` was never forgotten");
        tokio::time::sleep(POLL_PAUSE).await;
    }
    assert!(
        killed_seen,
        "the stopped task was forgotten without a KILLED report"
    );

    // A cursor of another epoch (another borglet, or this one restarted) gets everything.
    let stranger = harness
        .poll_since(std::slice::from_ref(&kept), (since.0 + 1, since.1))
        .await;
    assert!(!stranger.incremental);
    assert_eq!(state_of(&stranger, &kept), Some(v1::TaskState::Running));
    harness.restart_borglet().await;
    let after_restart = harness.poll_since(std::slice::from_ref(&kept), since).await;
    assert!(!after_restart.incremental);
    assert_ne!(after_restart.report_epoch, since.0);
    assert_eq!(
        state_of(&after_restart, &kept),
        Some(v1::TaskState::Running)
    );

    harness
        .poll_until(&[], "every task to be gone", |r| r.tasks.is_empty())
        .await;
    harness.stop().await;
}

#[tokio::test]
async fn usage_is_sampled_on_its_own_timer_and_reported_as_a_change() {
    let mut harness = Harness::start_with(CgroupMode::Auto, |c| {
        c.enforcement_interval_ms = 20;
        c.usage_sample_interval_ms = 100;
    })
    .await;
    if harness.cgroups.is_none() {
        eprintln!("skipped: no cgroups, so no usage is read");
        harness.stop().await;
        return;
    }
    let spinner = task("spinner", 0, "/bin/sh", &["-c", "while :; do :; done"]);
    let desired = vec![spinner.clone()];
    let first = harness
        .poll_until(&desired, "the task to run", |r| {
            report_of(r, &spinner).is_some_and(|t| t.pid > 0)
        })
        .await;
    // Polled with a cursor, the task comes back only when its usage sample changes it.
    let mut since = cursor_of(&first);
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let response = harness.poll_since(&desired, since).await;
        assert!(response.incremental);
        since = cursor_of(&response);
        let usage = report_of(&response, &spinner).and_then(|t| t.usage);
        if usage.is_some_and(|u| u.cpu_millis > 0 && u.ram_bytes > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "no usage was reported");
        tokio::time::sleep(POLL_PAUSE).await;
    }
    harness
        .poll_until(&[], "every task to be gone", |r| r.tasks.is_empty())
        .await;
    harness.stop().await;
}

#[tokio::test]
async fn the_keeper_as_init_reaps_orphans_and_reports_a_death_by_signal() {
    let mut harness = Harness::start(CgroupMode::Auto).await;
    // An orphan that writes its pid and ends; the task waits (up to 10 s) until the orphan
    // is reaped (its /proc entry stays while it is a zombie), records how long, and kills
    // itself with SIGUSR1.
    let script = "(sh -c 'echo $$ > orphan.tmp; mv orphan.tmp orphan' &); i=0; \
                  while [ $i -lt 100 ] && [ ! -e orphan ]; do sleep 0.1; i=$((i+1)); done; \
                  while [ $i -lt 100 ] && [ -e /proc/$(cat orphan) ]; do \
                  sleep 0.1; i=$((i+1)); done; echo $i > waited; kill -USR1 $$";
    let dying = batch(task("dying", 0, "/bin/sh", &["-c", script]));
    let report = run_once_until_failed(&mut harness, &dying).await;
    assert_eq!(report.exit_code, Some(128 + 10));
    assert!(
        report.message.contains("killed by signal 10 (SIGUSR1)"),
        "{}",
        report.message
    );
    let waited = std::fs::read_to_string(harness.sandbox(&dying).join("waited")).unwrap();
    let waited: u32 = waited.trim().parse().unwrap();
    assert!(waited < 100, "the orphan was not reaped within 10 s");
    assert!(harness.poll(&[]).await.tasks.is_empty());
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
    let mut harness =
        Harness::start_with(CgroupMode::Auto, |c| c.cell_name = "ic".to_owned()).await;
    let script = r#"echo "$1|$BORG_JOB|$BORG_TASK_INDEX|$BORG_USER|$BORG_CELL|$GREETING|$(pwd)" > seen; echo to-stdout; echo to-stderr >&2"#;
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
        .insert("GREETING".into(), "hello %user%@%cell%".into());
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
            "echo-job-4-alice|echo-job|4|alice|ic|hello alice@ic|{}",
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
async fn named_ports_are_allocated_substituted_reported_and_kept_across_restarts() {
    let mut harness = Harness::start(CgroupMode::Auto).await;
    // Exits at once, so it is restarted: the ports must stay the same.
    let script = r#"echo "$1|$2|$BORG_PORT|$BORG_PORT_ADMIN" >> seen"#;
    let mut ports = task(
        "ports-job",
        0,
        "sh",
        &["-c", script, "sh", "%port%", "%port:admin%"],
    );
    ports.template.as_mut().unwrap().ports = vec!["http".into(), "admin".into()];
    let desired = vec![ports.clone()];
    let report = harness
        .poll_until(&desired, "the task to be reported with its ports", |r| {
            r.tasks
                .iter()
                .any(|t| t.job == "ports-job" && t.ports.len() == 2)
        })
        .await;
    let reported = &report
        .tasks
        .iter()
        .find(|t| t.job == "ports-job")
        .unwrap()
        .ports;
    let (http, admin) = (reported["http"], reported["admin"]);
    assert_ne!(http, admin);
    let sandbox = harness.sandbox(&ports);
    let seen = wait_for_lines(&sandbox.join("seen"), 2).await;
    for line in seen.lines().take(2) {
        assert_eq!(line, format!("{http}|{admin}|{http}|{admin}"), "{seen}");
    }
    harness.poll(&[]).await;
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
    wait_for_file(&harness.sandbox(&stubborn).join("child.pid")).await;
    // The child's pid in the file is one of the task's PID namespace: take the host's view.
    let mut members = vec![pid];
    if let Some(cgroups) = &harness.cgroups {
        members = cgroups.pids("stubborn.0.1");
        assert!(
            members.len() >= 3,
            "keeper (the namespace's init), shell and sleep: {members:?}"
        );
    }
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
    for member in members {
        assert!(
            !process_exists(member),
            "process {member} of the task survived"
        );
    }
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
            ..Default::default()
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
    let report = run_once_until_failed(&mut harness, &hog).await;
    assert!(
        report
            .message
            .starts_with("OOM-killed at its memory limit of 16Mi"),
        "{}",
        report.message
    );
    assert_eq!(harness.metric("borglet_task_exits_total", Some("oom")), 1.0);
    if let Some(cgroups) = &harness.cgroups {
        // The kernel's OOM count cannot be reset: such a group is removed, never reused.
        assert!(!cgroups.memory_dir("hog.0.1").exists());
        assert!(!cgroups.memory_dir(&spare_name(0)).exists());
    }
    harness.stop().await;
}

/// The directory of the borglet's group `name` in the v1 hierarchy of `controller`.
fn v1_group_dir(harness: &Harness, controller: cgroups_rs::fs::Controllers, name: &str) -> PathBuf {
    let (mount, _) = cgroups_rs::fs::hierarchies::V1::new()
        .get_mount_point(controller)
        .unwrap();
    mount.join(&harness.config.cgroup_parent).join(name)
}

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

#[tokio::test]
async fn a_finished_tasks_cgroup_is_reused_without_its_limits_usage_or_processes() {
    use cgroups_rs::fs::Controllers;
    use std::os::unix::fs::MetadataExt;
    let mut harness = Harness::start(CgroupMode::Auto).await;
    let Some(cgroups) = harness.cgroups.clone() else {
        assert!(
            !nix::unistd::geteuid().is_root(),
            "running as root but no cgroups"
        );
        harness.stop().await;
        return;
    };
    if cgroups.version() != borglet::cgroups::CgroupVersion::V1 {
        eprintln!("skipped: only v1 groups are reused (v2 cannot rename them)");
        harness.stop().await;
        return;
    }
    // Charges 2 MiB of page cache and burns CPU under a 64 MiB limit. The cache is synced:
    // dirty pages may not be reclaimable by `memory.force_empty` at once, and a group that
    // cannot be emptied is (rightly) removed rather than kept.
    let first = batch(task(
        "first",
        0,
        "/bin/sh",
        &[
            "-c",
            "head -c 2097152 /dev/zero > \"$HOME/f\"; sync; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done",
        ],
    ));
    harness
        .poll_until(
            std::slice::from_ref(&first),
            "the first task to succeed",
            |r| state_of(r, &first) == Some(v1::TaskState::Succeeded),
        )
        .await;
    // Seen terminal means cleaned up: the group is now a reset spare.
    let spare = spare_name(0);
    let spare_memory = cgroups.memory_dir(&spare);
    assert!(!cgroups.exists("first.0.1"));
    assert!(spare_memory.is_dir(), "the finished group was not kept");
    let spare_inode = std::fs::metadata(&spare_memory).unwrap().ino();
    assert_eq!(
        read_trimmed(&v1_group_dir(&harness, Controllers::CpuAcct, &spare).join("cpuacct.usage")),
        "0"
    );
    assert!(cgroups.pids(&spare).is_empty());

    // The next task, without a memory limit, gets that group under its own name.
    let mut second = task("second", 0, "/bin/sleep", &["300"]);
    let resources = second
        .template
        .as_mut()
        .unwrap()
        .resources
        .as_mut()
        .unwrap();
    resources.ram_bytes = 0;
    harness.run_until_running(&second).await;
    let name = "second.0.1";
    let memory_dir = cgroups.memory_dir(name);
    assert_eq!(
        std::fs::metadata(&memory_dir).unwrap().ino(),
        spare_inode,
        "not reused"
    );
    assert!(!spare_memory.exists());
    let limit: u64 = read_trimmed(&memory_dir.join("memory.limit_in_bytes"))
        .parse()
        .unwrap();
    assert!(limit >= 1 << 62, "the first task's limit stayed: {limit}");
    let charged: u64 = read_trimmed(&memory_dir.join("memory.usage_in_bytes"))
        .parse()
        .unwrap();
    assert!(
        charged < 2 << 20,
        "the first task's page cache stayed charged: {charged}"
    );
    assert_eq!(
        read_trimmed(&v1_group_dir(&harness, Controllers::Cpu, name).join("cpu.cfs_quota_us")),
        "-1"
    );
    let report = harness.poll(std::slice::from_ref(&second)).await;
    let pid = report_of(&report, &second).unwrap().pid;
    for member in cgroups.pids(name) {
        assert!(process_exists(member));
        let cmdline = std::fs::read_to_string(format!("/proc/{member}/cmdline")).unwrap();
        assert!(
            member == pid || !cmdline.contains("/bin/sh"),
            "a process of the first task: {cmdline}"
        );
    }
    harness.stop().await;
}

#[tokio::test]
async fn finished_sandboxes_are_deleted_beyond_the_retention_and_never_outside() {
    let mut harness = Harness::start_with(CgroupMode::Off, |c| c.finished_sandboxes_max = 0).await;
    // What a job named "../outside" would address if its name were trusted.
    let outside = harness.data_dir.path().join("outside.0.1");
    std::fs::create_dir(&outside).unwrap();
    let done = batch(task("done", 0, "/bin/true", &[]));
    let evil = task("../outside", 0, "/bin/true", &[]);
    let desired = vec![done.clone(), evil.clone()];
    harness
        .poll_until(&desired, "both tasks to end", |r| {
            state_of(r, &done) == Some(v1::TaskState::Succeeded)
                && state_of(r, &evil) == Some(v1::TaskState::Failed)
        })
        .await;
    let sandbox = harness.sandbox(&done);
    assert!(sandbox.is_dir());
    assert!(harness.poll(&[]).await.tasks.is_empty());
    let deadline = Instant::now() + WAIT_MAX;
    while sandbox.exists() {
        assert!(Instant::now() < deadline, "the finished sandbox was kept");
        tokio::time::sleep(POLL_PAUSE).await;
    }
    assert!(outside.exists(), "a path outside the sandboxes was deleted");
    harness.stop().await;
}

#[tokio::test]
async fn a_task_sees_only_its_own_processes_and_tmp_and_is_not_root() {
    isolation_probe(Harness::start(CgroupMode::Auto).await).await;
}

#[tokio::test]
async fn a_forked_keeper_isolates_tasks_the_same_way() {
    let harness = Harness::start_with(CgroupMode::Auto, |c| c.keeper_program = None).await;
    isolation_probe(harness).await;
}

/// The parent of process `pid` (0 if it is gone).
fn parent_of(pid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The command name may hold spaces: fields resume after its closing parenthesis.
            let rest = stat.rsplit_once(')')?.1;
            rest.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Runs a probe task beside a neighbour and checks what the probe could see; also that the
/// task's keeper is the configured keeper program (or a fork of the borglet without one).
async fn isolation_probe(mut harness: Harness) {
    if harness.metric("borglet_isolation_enabled", None) == 0.0 {
        assert!(
            !nix::unistd::geteuid().is_root(),
            "running as root but tasks are not isolated"
        );
        eprintln!("skipped: not running as root, so tasks run without namespaces");
        harness.stop().await;
        return;
    }
    // Another task runs meanwhile; the probe must not see it.
    let neighbour = task("neighbour", 0, "/bin/sleep", &["300"]);
    let script = "for p in /proc/[0-9]*; do echo ${p#/proc/}; done > procs; id -u > uid; \
                  echo private > /tmp/isolation-marker; ls /tmp > tmp-listing";
    let probe = batch(task("probe", 0, "/bin/sh", &["-c", script]));
    let desired = vec![neighbour.clone(), probe.clone()];
    harness
        .poll_until(&desired, "the probe to succeed", |r| {
            state_of(r, &probe) == Some(v1::TaskState::Succeeded)
                && state_of(r, &neighbour) == Some(v1::TaskState::Running)
        })
        .await;
    // The reported pid is the program's (as the machine sees it), not its keeper's.
    let response = harness.poll(&desired).await;
    let neighbour_pid = report_of(&response, &neighbour).unwrap().pid;
    let cmdline = std::fs::read(format!("/proc/{neighbour_pid}/cmdline")).unwrap();
    assert_eq!(cmdline, b"/bin/sleep\x00300\x00");
    // An exec'd keeper is the namespace's init; a forked one forks the init.
    let init = parent_of(neighbour_pid);
    let keeper = match harness.config.keeper_program {
        Some(_) => init,
        None => parent_of(init),
    };
    let keeper_exe = std::fs::read_link(format!("/proc/{keeper}/exe")).unwrap();
    let expected = harness
        .config
        .keeper_program
        .clone()
        .unwrap_or_else(|| std::env::current_exe().unwrap());
    assert_eq!(keeper_exe, expected.canonicalize().unwrap());
    let sandbox = harness.sandbox(&probe);
    let procs = std::fs::read_to_string(sandbox.join("procs")).unwrap();
    // The namespace's init and the shell itself: nothing of the machine or of the neighbour.
    assert_eq!(
        procs.split_whitespace().collect::<Vec<_>>(),
        ["1", "2"],
        "{procs}"
    );
    let uid = std::fs::read_to_string(sandbox.join("uid")).unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert_eq!(uid.trim(), nobody.uid.to_string());
    assert_ne!(uid.trim(), "0");
    // /tmp is the sandbox's own.
    assert_eq!(
        std::fs::read_to_string(sandbox.join("tmp/isolation-marker")).unwrap(),
        "private\n"
    );
    let listing = std::fs::read_to_string(sandbox.join("tmp-listing")).unwrap();
    assert!(
        listing.lines().any(|l| l == "isolation-marker"),
        "{listing}"
    );
    harness
        .poll_until(&[], "the tasks to be forgotten", |r| r.tasks.is_empty())
        .await;
    harness.stop().await;
}

#[tokio::test]
async fn task_logs_are_rotated_at_the_configured_size() {
    const MAX_BYTES: u64 = 4_096;
    let mut harness = Harness::start_with(CgroupMode::Auto, |c| {
        c.log_max_bytes = MAX_BYTES;
        c.log_files_kept = 2;
    })
    .await;
    // 2,000 lines of 50 bytes: 100 kB, about 25 files' worth.
    let script =
        "i=0; while [ $i -lt 2000 ]; do printf 'line %04d %039d\\n' $i 0; i=$((i+1)); done; \
                  echo err-line >&2";
    let chatty = batch(task("chatty", 0, "/bin/sh", &["-c", script]));
    let desired = vec![chatty.clone()];
    harness
        .poll_until(&desired, "the task to succeed", |r| {
            state_of(r, &chatty) == Some(v1::TaskState::Succeeded)
        })
        .await;
    let sandbox = harness.sandbox(&chatty);
    let mut retained = 0;
    for name in ["stdout", "stdout.1", "stdout.2"] {
        let text = std::fs::read_to_string(sandbox.join(name)).unwrap();
        assert!(
            text.len() as u64 <= MAX_BYTES,
            "{name} holds {} bytes",
            text.len()
        );
        assert!(
            text.ends_with('\n') && text.starts_with("line "),
            "lines are kept whole"
        );
        retained += text.len();
    }
    assert!(retained as u64 > 2 * MAX_BYTES, "the files are used fully");
    assert!(
        !sandbox.join("stdout.3").exists(),
        "only 2 rotated files are kept"
    );
    let current = std::fs::read_to_string(sandbox.join("stdout")).unwrap();
    assert!(
        current.ends_with(&format!("line 1999 {:039}\n", 0)),
        "{current}"
    );
    assert_eq!(
        std::fs::read_to_string(sandbox.join("stderr")).unwrap(),
        "err-line\n"
    );
    harness.stop().await;
}

fn with_priority(mut task: v1::AssignedTask, priority: u32) -> v1::AssignedTask {
    task.priority = priority;
    task
}

fn message_of(response: &v1::PollResponse, task: &v1::AssignedTask) -> String {
    report_of(response, task)
        .map(|r| r.message.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn under_memory_pressure_free_tasks_die_before_batch_and_production_survives() {
    let pressure = Arc::new(borglet::pressure::TestPressure::new());
    let mut harness = Harness::start_with(CgroupMode::Auto, |c| {
        c.pressure = Some(pressure.clone());
        c.enforcement_interval_ms = 20;
        c.reclaim_free_memory_min_bytes = 1 << 30;
    })
    .await;
    let free = with_priority(task("free-job", 0, "/bin/sleep", &["300"]), 10);
    let batch_task = with_priority(task("batch-job", 0, "/bin/sleep", &["300"]), 150);
    let prod = with_priority(task("prod-job", 0, "/bin/sleep", &["300"]), 250);
    let desired = vec![free.clone(), batch_task.clone(), prod.clone()];
    let running = |r: &v1::PollResponse, t: &v1::AssignedTask| {
        report_of(r, t).is_some_and(|t| t.state() == v1::TaskState::Running && t.pid > 0)
    };
    harness
        .poll_until(&desired, "every task to run", |r| {
            desired.iter().all(|t| running(r, t))
        })
        .await;

    // One round under pressure: only the free band is reclaimed.
    pressure.pulse(0, 1);
    let response = harness
        .poll_until(&desired, "the free task to be killed", |r| {
            state_of(r, &free) == Some(v1::TaskState::Killed)
        })
        .await;
    assert!(
        message_of(&response, &free).starts_with("killed to reclaim memory"),
        "{}",
        message_of(&response, &free)
    );
    assert!(running(&response, &batch_task) && running(&response, &prod));

    // The next round under pressure reaches batch.
    pressure.pulse(0, 1);
    let response = harness
        .poll_until(&desired, "the batch task to be killed", |r| {
            state_of(r, &batch_task) == Some(v1::TaskState::Killed)
        })
        .await;
    assert!(running(&response, &prod));

    // Production is never reclaimed, however long the pressure lasts.
    let reads = pressure.memory_reads();
    pressure.pulse(0, 3);
    let deadline = Instant::now() + WAIT_MAX;
    while pressure.memory_reads() < reads + 4 {
        assert!(Instant::now() < deadline, "no enforcement rounds ran");
        tokio::time::sleep(POLL_PAUSE).await;
    }
    let response = harness.poll(&desired).await;
    assert!(running(&response, &prod), "{:#?}", response.tasks);
    assert_eq!(
        harness.metric("borglet_reclaim_kills_total", Some("free")),
        1.0
    );
    assert_eq!(
        harness.metric("borglet_reclaim_kills_total", Some("batch")),
        1.0
    );
    harness
        .poll_until(&[], "the tasks to be forgotten", |r| r.tasks.is_empty())
        .await;
    harness.stop().await;
}

/// The v1 `cpu` controller directory a process is in.
fn cpu_cgroup_dir(pid: u32) -> Option<PathBuf> {
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let line = membership.lines().find(|l| {
        l.split(':')
            .nth(1)
            .is_some_and(|c| c.split(',').any(|c| c == "cpu"))
    })?;
    let path = line.split(':').nth(2)?;
    let (mount, _) =
        cgroups_rs::fs::hierarchies::V1::new().get_mount_point(cgroups_rs::fs::Controllers::Cpu)?;
    Some(mount.join(path.trim_start_matches('/')))
}

#[tokio::test]
async fn a_busy_machine_caps_batch_cpu_but_not_latency_sensitive_and_kills_nothing() {
    let pressure = Arc::new(borglet::pressure::TestPressure::new());
    let mut harness = Harness::start_with(CgroupMode::Auto, |c| {
        c.pressure = Some(pressure.clone());
        c.enforcement_interval_ms = 20;
    })
    .await;
    let v1_cgroups = harness
        .cgroups
        .as_ref()
        .is_some_and(|c| c.version() == borglet::cgroups::CgroupVersion::V1);
    if !v1_cgroups {
        eprintln!("skipped: the CFS files are read through cgroup v1 here");
        harness.stop().await;
        return;
    }
    let mut cruncher = batch(task("cruncher", 0, "/bin/sleep", &["300"]));
    cruncher.app_class = v1::AppClass::Batch as i32;
    let server = task("server", 0, "/bin/sleep", &["300"]);
    let desired = vec![cruncher.clone(), server.clone()];
    let response = harness
        .poll_until(&desired, "both tasks to run", |r| {
            desired
                .iter()
                .all(|t| report_of(r, t).is_some_and(|t| t.pid > 0))
        })
        .await;
    let quota = |task: &v1::AssignedTask| {
        let pid = report_of(&response, task).unwrap().pid;
        let dir = cpu_cgroup_dir(pid).unwrap();
        std::fs::read_to_string(dir.join("cpu.cfs_quota_us"))
            .unwrap()
            .trim()
            .to_owned()
    };
    let wait_for_quota = |task: v1::AssignedTask, want: &'static str| {
        let quota = &quota;
        async move {
            let deadline = Instant::now() + WAIT_MAX;
            while quota(&task) != want {
                assert!(Instant::now() < deadline, "quota stayed {}", quota(&task));
                tokio::time::sleep(POLL_PAUSE).await;
            }
        }
    };
    pressure.set_cpu_busy_permille(1000);
    // 250 millicores: 25 ms per 100 ms period.
    wait_for_quota(cruncher.clone(), "25000").await;
    assert_eq!(quota(&server), "-1");
    assert_eq!(harness.metric("borglet_tasks_cpu_capped", None), 1.0);
    pressure.set_cpu_busy_permille(100);
    wait_for_quota(cruncher.clone(), "-1").await;
    let response = harness.poll(&desired).await;
    for task in &desired {
        assert_eq!(state_of(&response, task), Some(v1::TaskState::Running));
    }
    harness
        .poll_until(&[], "the tasks to be forgotten", |r| r.tasks.is_empty())
        .await;
    harness.stop().await;
}

fn exec_request(task: &v1::AssignedTask, user: &str, command: &[&str]) -> v1::ExecRequest {
    v1::ExecRequest {
        job: task.job.clone(),
        index: task.index,
        incarnation: 0,
        user: user.into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        timeout_ms: 20_000,
        caller_admin: false,
    }
}

#[tokio::test]
async fn ssh_runs_inside_the_task_for_its_owner_only() {
    let mut harness = Harness::start(CgroupMode::Auto).await;
    let target = task("sshd-target", 0, "/bin/sleep", &["300"]);
    harness.run_until_running(&target).await;
    let refused = harness
        .client
        .exec(exec_request(&target, "mallory", &["id"]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused}");
    assert_eq!(
        harness.metric("borglet_exec_sessions_total", Some("refused")),
        1.0
    );

    let output = harness
        .client
        .exec(exec_request(
            &target,
            "alice",
            &[
                "sh",
                "-c",
                "cat /proc/self/cgroup; echo; ls /proc | grep -E '^[0-9]+$' | wc -l; id -u; pwd",
            ],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        output.exit_code,
        0,
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let (cgroup, rest) = stdout.split_once("\n\n").unwrap();
    if harness.cgroups.is_some() {
        assert!(
            cgroup.lines().any(|l| l.ends_with("/sshd-target.0.1")),
            "{cgroup}"
        );
    }
    if harness.metric("borglet_isolation_enabled", None) == 1.0 {
        let mut lines = rest.lines();
        // init, sleep, and the session's sh, ls and grep: no process of the machine.
        let visible: u32 = lines.next().unwrap().trim().parse().unwrap();
        assert!((3..=6).contains(&visible), "{stdout}");
        assert_ne!(lines.next(), Some("0"), "the session runs as root");
        let sandbox = harness.sandbox(&target).canonicalize().unwrap();
        assert_eq!(lines.next(), Some(sandbox.to_str().unwrap()));
    }
    let failed = harness
        .client
        .exec(exec_request(&target, "admin", &["sh", "-c", "exit 7"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failed.exit_code, 7);
    assert_eq!(
        harness.metric("borglet_exec_sessions_total", Some("ran")),
        2.0
    );
    harness
        .poll_until(&[], "the task to be forgotten", |r| r.tasks.is_empty())
        .await;
    harness.stop().await;
}

async fn log_stream(
    harness: &mut Harness,
    task: &v1::AssignedTask,
    stream: v1::LogStream,
    tail_bytes: u64,
    follow: bool,
) -> tonic::Streaming<v1::LogChunk> {
    harness
        .client
        .read_logs(v1::ReadLogsRequest {
            job: task.job.clone(),
            index: task.index,
            incarnation: 0,
            stream: stream as i32,
            follow,
            tail_bytes,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn read_log(
    harness: &mut Harness,
    task: &v1::AssignedTask,
    stream: v1::LogStream,
    tail_bytes: u64,
) -> String {
    let mut chunks = log_stream(harness, task, stream, tail_bytes, false).await;
    let mut text = Vec::new();
    while let Some(chunk) = chunks.message().await.unwrap() {
        text.extend(chunk.data);
    }
    String::from_utf8(text).unwrap()
}

#[tokio::test]
async fn logs_are_read_whole_by_tail_and_followed_across_rotations() {
    let mut harness = Harness::start_with(CgroupMode::Auto, |c| {
        c.log_max_bytes = 1_000;
        c.log_files_kept = 1;
    })
    .await;
    // Prints a line every 10 ms until told to stop, then ends.
    let script = "i=0; while [ ! -e stop ]; do echo line-$i; i=$((i+1)); sleep 0.01; done; \
                  echo bye >&2; echo last";
    let talker = batch(task("talker", 0, "/bin/sh", &["-c", script]));
    let desired = vec![talker.clone()];
    harness
        .poll_until(&desired, "the task to run", |r| {
            state_of(r, &talker) == Some(v1::TaskState::Running)
        })
        .await;
    let mut follow = log_stream(&mut harness, &talker, v1::LogStream::Stdout, 0, true).await;
    // Let it rotate a few times (each file holds about 100 lines), then stop it.
    let sandbox = harness.sandbox(&talker);
    let deadline = Instant::now() + WAIT_MAX;
    let mut followed = String::new();
    while !followed.contains("line-400\n") {
        assert!(Instant::now() < deadline, "followed only {followed:?}");
        let chunk = follow.message().await.unwrap().unwrap();
        followed.push_str(std::str::from_utf8(&chunk.data).unwrap());
    }
    // Its stderr file does not exist before its first output: a follower waits for it.
    assert!(!sandbox.join("stderr").exists());
    let mut follow_stderr = log_stream(&mut harness, &talker, v1::LogStream::Stderr, 0, true).await;
    std::fs::write(sandbox.join("stop"), "").unwrap();
    harness
        .poll_until(&desired, "the task to succeed", |r| {
            state_of(r, &talker) == Some(v1::TaskState::Succeeded)
        })
        .await;
    while let Some(chunk) = follow.message().await.unwrap() {
        followed.push_str(std::str::from_utf8(&chunk.data).unwrap());
    }
    let mut followed_stderr = Vec::new();
    while let Some(chunk) = follow_stderr.message().await.unwrap() {
        followed_stderr.extend(chunk.data);
    }
    assert_eq!(followed_stderr, b"bye\n");
    // Nothing lost or repeated across rotations, up to the last line.
    let lines: Vec<&str> = followed.lines().collect();
    let count = lines.len() - 1;
    assert_eq!(lines[count], "last");
    for (n, line) in lines[..count].iter().enumerate() {
        assert_eq!(*line, format!("line-{n}"));
    }
    assert!(std::fs::metadata(sandbox.join("stdout")).unwrap().len() <= 1_000);

    let whole = read_log(&mut harness, &talker, v1::LogStream::Stdout, 0).await;
    assert!(whole.ends_with("last\n") && whole.len() <= 1_000, "{whole}");
    let tail = read_log(&mut harness, &talker, v1::LogStream::Stdout, 5).await;
    assert_eq!(tail, "last\n");
    let stderr = read_log(&mut harness, &talker, v1::LogStream::Stderr, 0).await;
    assert_eq!(stderr, "bye\n");
    let missing = harness
        .client
        .read_logs(v1::ReadLogsRequest {
            job: "nobody-here".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    harness.stop().await;
}

#[tokio::test]
async fn with_a_cluster_token_only_callers_holding_it_are_obeyed() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = BorgletConfig::new(vec![], "127.0.0.1:0", MACHINE, data_dir.path());
    config.cgroups = CgroupMode::Off;
    config.kill_tasks_on_exit = true;
    config.master_token = Some("the-cluster-token".into());
    let borglet = Borglet::bind(config).await.unwrap();
    let address = format!("http://{}", borglet.local_addr());
    let registry = borglet.registry().clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(borglet.run(shutdown.clone()));
    let poll = v1::PollRequest {
        machine: MACHINE.into(),
        desired: vec![],
        master_index: 1,
        ..Default::default()
    };
    let channel = tonic::transport::Endpoint::from_shared(address)
        .unwrap()
        .connect()
        .await
        .unwrap();

    let mut anonymous = BorgletServiceClient::new(channel.clone());
    let refused = anonymous.poll(poll.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
    let exec = anonymous
        .exec(v1::ExecRequest {
            job: "any".into(),
            user: "admin".into(),
            command: vec!["true".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(exec.code(), tonic::Code::Unauthenticated, "{exec}");
    let user_token = borg_common::master_client::TokenInterceptor::new(Some("a-user-token"));
    let mut user = BorgletServiceClient::with_interceptor(channel.clone(), user_token.unwrap());
    let refused = user.poll(poll.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");

    let cluster = borg_common::master_client::TokenInterceptor::new(Some("the-cluster-token"));
    let mut control_plane = BorgletServiceClient::with_interceptor(channel, cluster.unwrap());
    let answer = control_plane.poll(poll).await.unwrap().into_inner();
    assert_eq!(answer.machine, MACHINE);
    let refused_total = registry
        .gather()
        .iter()
        .find(|f| f.name() == "borglet_requests_unauthenticated_total")
        .map(|f| f.get_metric()[0].get_counter().get_value())
        .unwrap_or(0.0);
    assert_eq!(refused_total, 3.0);
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_terminal_session_runs_a_shell_inside_the_task_and_reports_its_exit() {
    use v1::shell_input::Input;
    use v1::shell_output::Output;
    let mut harness = Harness::start(CgroupMode::Auto).await;
    let target = task("pty-target", 0, "/bin/sleep", &["300"]);
    harness.run_until_running(&target).await;
    let message = |input| v1::ShellInput { input: Some(input) };
    let start = v1::ShellStart {
        job: target.job.clone(),
        index: 0,
        user: "alice".into(),
        window: Some(v1::WindowSize {
            rows: 40,
            cols: 132,
        }),
        ..Default::default()
    };
    let inputs = vec![
        message(Input::Start(start)),
        message(Input::Stdin(
            b"stty size; cat /proc/self/cgroup; echo hi-$((6*7)); exit 3\n".to_vec(),
        )),
    ];
    let (sender, mut outputs) = harness.open_shell(inputs).await;
    let mut printed = Vec::new();
    let code = loop {
        match outputs.message().await.unwrap().and_then(|o| o.output) {
            Some(Output::Data(data)) => printed.extend_from_slice(&data),
            Some(Output::ExitCode(code)) => break code,
            Some(Output::Closed(reason)) => panic!("the session was closed: {reason}"),
            None => panic!("the session ended without an exit code"),
        }
    };
    drop(sender);
    let printed = String::from_utf8_lossy(&printed);
    assert_eq!(code, 3, "{printed}");
    assert!(printed.contains("hi-42"), "{printed}");
    assert!(printed.contains("40 132"), "{printed}");
    if harness.cgroups.is_some() {
        assert!(printed.contains("/pty-target.0.1"), "{printed}");
    }
    harness
        .poll_until(&[], "the task to be forgotten", |r| r.tasks.is_empty())
        .await;
    harness.stop().await;
}

#[tokio::test]
async fn an_idle_terminal_session_is_closed_with_a_reason() {
    use v1::shell_input::Input;
    use v1::shell_output::Output;
    let mut harness = Harness::start_with(CgroupMode::Off, |config| {
        config.shell_idle_timeout_s = 1;
    })
    .await;
    let target = task("pty-idle", 0, "/bin/sleep", &["300"]);
    harness.run_until_running(&target).await;
    let start = v1::ShellStart {
        job: target.job.clone(),
        index: 0,
        user: "alice".into(),
        // Prints once, then waits for input that never comes.
        command: vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo ready; read line".into(),
        ],
        ..Default::default()
    };
    let opened = Instant::now();
    let (sender, mut outputs) = harness
        .open_shell(vec![v1::ShellInput {
            input: Some(Input::Start(start)),
        }])
        .await;
    let (mut printed, mut closed) = (Vec::new(), None);
    let code = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match outputs.message().await.unwrap().and_then(|o| o.output) {
                Some(Output::Data(data)) => printed.extend_from_slice(&data),
                Some(Output::Closed(reason)) => closed = Some(reason),
                Some(Output::ExitCode(code)) => break code,
                None => panic!("the session ended without an exit code"),
            }
        }
    })
    .await
    .expect("the idle session is closed");
    drop(sender);
    let printed = String::from_utf8_lossy(&printed);
    assert!(printed.contains("ready"), "{printed}");
    let reason = closed.expect("the caller is told why the session was closed");
    assert!(reason.contains("1 s without input or output"), "{reason}");
    // The shell got SIGHUP when its terminal was closed.
    assert_eq!(code, 128 + 1, "{printed}");
    assert!(opened.elapsed() >= Duration::from_secs(1));
    harness
        .poll_until(&[], "the task to be forgotten", |r| r.tasks.is_empty())
        .await;
    harness.stop().await;
}
