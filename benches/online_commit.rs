//! Issue 4, benchmark (4) through the real control plane: 100 new jobs arriving into the
//! loaded Google 2011 cell; for each, the time from SubmitJob acknowledged to all its tasks
//! placed in a plan the master committed.
//!
//! The cell: five `borg master` replicas (their own processes, fsync on, tokens on, as in
//! production) and one `borg scheduler` process, talking gRPC (WatchCell / CommitPlan). The
//! benchmark registers the Google 2011 machines at t = 600 s as the link shard does (the
//! cluster token, RegisterMachine; no borglets, so nothing reports and nothing is marked
//! lost), submits the trace's jobs running or pending then (as their owners' jobs, each
//! owner given an unlimited quota) and lets the scheduler place them. Then the online jobs
//! (the pure-library benchmark's, `sim::online::online_jobs`) arrive one at a time, each
//! after the previous one's plan is committed; then in groups arriving together.
//!
//! A placement is seen committed on the benchmark's own WatchCell stream: the leader
//! publishes each entry's change as it applies it, before it answers the CommitPlan, so this
//! adds no latency. A job is complete when all its tasks are placed, or, for a job some of
//! whose tasks fit nowhere, when no more of them are placed within `SETTLE_MS`; its time is
//! then that of the last task's first placement seen. A task counts once: one preempted by
//! a later job and placed again was already in a committed plan. The time to the job's
//! first placement is printed too; a task placed after its job's own rounds is a backlog
//! retry that found room which appeared since (the library examines the whole cell before
//! it leaves a task unplaced).
//!
//! Beside it, in the same run, the pure library's time per plan (`sim::online::run_online`
//! on the cell the library itself loaded, as `cargo bench -p sim --bench scheduler online`).
//!
//! Run: `cargo bench -p borg --bench online_commit --profile dev` (dev profile: no release
//! build of RocksDB; the master, scheduler and their dependencies are built optimised).
//! Options: `--jobs N` (default 100), `--together K` (group size of the variant; 0 skips
//! it; default 10).

#[path = "../tests/support/mod.rs"]
mod support;

use borg_common::{new_request_id, MasterClient, MasterClientConfig};
use borg_model::{AppClass, Band, JobSpec, JobType, MachineInfo, Resources, TaskTemplate};
use borg_proto::v1;
use borg_proto::v1::cell_service_client::CellServiceClient;
use borg_proto::v1::link_service_client::LinkServiceClient;
use borg_proto::v1::scheduler_service_client::SchedulerServiceClient;
use scheduler::{PendingTask, PlacementConfig, ScoreCache};
use sim::online::{
    loaded_view, online_jobs, percentile, run_online, with_topology, ONLINE_JOBS,
    ONLINE_JOB_PREFIX, ONLINE_TASKS_PER_JOB_MAX,
};
use sim::trace::google2011::{self, Google2011Options, TRACE_WINDOW_START_US};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{free_port, Daemon, TestCell};
use tokio::sync::{watch, Semaphore};

const REPLICAS: usize = 5;
/// Writes in flight while loading the cell (machines, quotas, jobs).
const LOAD_IN_FLIGHT: usize = 32;
/// A job some of whose tasks fit nowhere is complete when no more are placed for this long.
const SETTLE_MS: u64 = 2_000;
/// A job none of whose tasks is placed within this is counted as never placed (the
/// scheduler plans a new job in its next round, well within this on the loaded cell).
const JOB_DEADLINE_MS: u64 = 5_000;
/// The loaded cell is settled when no placement was committed for this long.
const LOAD_SETTLE_MS: u64 = 10_000;
const LOAD_DEADLINE_S: u64 = 1_800;
/// Pause before the bench's own cell stream reconnects (it runs until the bench ends).
const WATCH_RETRY_BACKOFF_MS: u64 = 200;
/// A quota of every dimension at its maximum (the CLI's `quota set --unlimited`).
const UNLIMITED: Resources = Resources::UNLIMITED;
/// The master refuses a task without cpu or ram; the trace has a few.
const CPU_MIN_MILLIS: u64 = 1;
const RAM_MIN_BYTES: u64 = 1 << 20;
const SEED: u64 = 2011;
/// The address machines register with (the discard port: nothing calls it).
const NO_BORGLET_ADDRESS: &str = "127.0.0.1:9";

struct Args {
    jobs: usize,
    together: usize,
}

fn parse_args() -> Args {
    let args: Vec<String> = std::env::args().collect();
    let number = |flag: &str, default: usize| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(default)
    };
    Args {
        jobs: number("--jobs", ONLINE_JOBS),
        together: number("--together", 10),
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn unix_now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// p50, p99 and max of `times` as text.
fn summary(times: &mut [Duration]) -> String {
    times.sort();
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(percentile(times, 0.5)),
        ms(percentile(times, 0.99)),
        ms(percentile(times, 1.0))
    )
}

/// What the benchmark's watch has seen: placed tasks per job, and for online jobs the time
/// each new placement was seen.
#[derive(Default)]
struct Seen {
    placed_by_job: HashMap<String, usize>,
    placed_total: usize,
    last_placement: Option<Instant>,
    /// Per online job: tasks placed at least once, when the first and the last task's first
    /// placement were seen.
    online: HashMap<String, (usize, Instant, Instant)>,
    /// Per online job: (tasks placed at least once, when seen) at each update that placed
    /// another task for the first time.
    online_timeline: HashMap<String, Vec<(usize, Instant)>>,
    /// Per online job: the indices of its tasks placed at least once. A task preempted by a
    /// later job and placed again is not counted again: its job's plan was committed when
    /// it was first placed.
    online_ever_placed: HashMap<String, HashSet<u32>>,
    updates: u64,
}

impl Seen {
    fn apply(&mut self, job: &v1::Job, at: Instant) {
        let Some(spec) = &job.spec else { return };
        let placed = job.tasks.iter().filter(|t| !t.machine.is_empty()).count();
        let before = self
            .placed_by_job
            .insert(spec.name.clone(), placed)
            .unwrap_or(0);
        self.placed_total = (self.placed_total + placed).saturating_sub(before);
        if placed > before {
            self.last_placement = Some(at);
        }
        if !spec.name.starts_with(ONLINE_JOB_PREFIX) {
            return;
        }
        let ever = self
            .online_ever_placed
            .entry(spec.name.clone())
            .or_default();
        let ever_before = ever.len();
        ever.extend(
            job.tasks
                .iter()
                .filter(|t| !t.machine.is_empty())
                .map(|t| t.index),
        );
        let ever_placed = ever.len();
        if ever_placed > ever_before {
            let first = self.online.get(&spec.name).map_or(at, |o| o.1);
            self.online
                .insert(spec.name.clone(), (ever_placed, first, at));
            self.online_timeline
                .entry(spec.name.clone())
                .or_default()
                .push((ever_placed, at));
        }
    }
}

/// Follows the leader's cell stream, timestamping each update as it arrives.
async fn watch_cell(
    client: Arc<MasterClient>,
    seen: Arc<Mutex<Seen>>,
    changed: watch::Sender<u64>,
) {
    let request = v1::WatchCellRequest {
        scheduler_id: "online-bench".into(),
    };
    // The jobs as the watch has them, to fold per-task changes into.
    let mut whole_jobs: HashMap<String, v1::Job> = HashMap::new();
    loop {
        let stream = client
            .call(|channel| {
                let request = request.clone();
                async move {
                    SchedulerServiceClient::new(channel)
                        .max_decoding_message_size(scheduler::config::WATCH_MESSAGE_BYTES_MAX)
                        .watch_cell(request)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await;
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(status) => {
                eprintln!("bench watch: {}", status.message());
                tokio::time::sleep(Duration::from_millis(WATCH_RETRY_BACKOFF_MS)).await;
                continue;
            }
        };
        loop {
            let update = match stream.message().await {
                Ok(Some(update)) => update,
                Ok(None) => break,
                Err(status) => {
                    eprintln!("bench watch ended: {}", status.message());
                    break;
                }
            };
            let at = Instant::now();
            let (jobs, changed_tasks) = match update.update {
                Some(v1::cell_update::Update::Snapshot(s)) => {
                    let mut seen = seen.lock().expect("seen lock");
                    seen.placed_by_job.clear();
                    seen.placed_total = 0;
                    whole_jobs.clear();
                    (s.jobs, Vec::new())
                }
                Some(v1::cell_update::Update::Change(c)) => {
                    for name in &c.jobs_removed {
                        whole_jobs.remove(name);
                    }
                    (c.jobs_upserted, c.jobs_tasks_changed)
                }
                None => (Vec::new(), Vec::new()),
            };
            let mut seen = seen.lock().expect("seen lock");
            seen.updates += 1;
            for job in jobs {
                seen.apply(&job, at);
                if let Some(spec) = &job.spec {
                    whole_jobs.insert(spec.name.clone(), job);
                }
            }
            // A job whose spec did not change arrives as its changed tasks only.
            for changed in changed_tasks {
                if let Some(job) = whole_jobs.get_mut(&changed.job) {
                    borg_proto::convert::apply_tasks_change(job, changed);
                    seen.apply(job, at);
                }
            }
            changed.send_modify(|n| *n += 1);
        }
    }
}

/// A job of `tasks` (as the sim sees them) as the master takes it: the first task's
/// template, and an override for each task whose limits differ.
fn job_spec(name: &str, tasks: &[&PendingTask], clamped: &mut usize) -> JobSpec {
    let first = tasks[0];
    let mut limits = |t: &PendingTask| {
        let mut r = t.limits;
        if r.cpu_millis < CPU_MIN_MILLIS || r.ram_bytes < RAM_MIN_BYTES {
            *clamped += 1;
            r.cpu_millis = r.cpu_millis.max(CPU_MIN_MILLIS);
            r.ram_bytes = r.ram_bytes.max(RAM_MIN_BYTES);
        }
        r
    };
    let template = TaskTemplate {
        command: "/bin/true".into(),
        resources: limits(first),
        ..TaskTemplate::default()
    };
    let mut task_overrides = BTreeMap::new();
    for (i, t) in tasks.iter().enumerate().skip(1) {
        let own = limits(t);
        if own != template.resources {
            task_overrides.insert(
                i as u32,
                TaskTemplate {
                    resources: own,
                    ..template.clone()
                },
            );
        }
    }
    let batch = !Band::of(first.priority).is_prod();
    JobSpec {
        name: name.to_owned(),
        owner: first.owner.clone(),
        priority: first.priority,
        replicas: tasks.len() as u32,
        task: template,
        constraints: first.constraints.to_vec(),
        job_type: if batch {
            JobType::Batch
        } else {
            JobType::Service
        },
        app_class: if batch {
            AppClass::Batch
        } else {
            AppClass::LatencySensitive
        },
        task_overrides,
        ..JobSpec::default()
    }
}

async fn submit(client: &MasterClient, spec: JobSpec) -> Result<(), tonic::Status> {
    let request = v1::SubmitJobRequest {
        spec: Some(spec.into()),
        request_id: new_request_id("online-bench"),
        check_index: None,
    };
    client
        .call(|channel| {
            let request = request.clone();
            async move { CellServiceClient::new(channel).submit_job(request).await }
        })
        .await
        .map(|_| ())
}

/// Runs `calls` with at most `LOAD_IN_FLIGHT` at once; panics naming the first failure.
async fn in_parallel<F>(what: &str, calls: Vec<F>)
where
    F: std::future::Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(LOAD_IN_FLIGHT));
    let mut set = tokio::task::JoinSet::new();
    for call in calls {
        let permit = Arc::clone(&limit).acquire_owned().await.expect("semaphore");
        set.spawn(async move {
            let out = call.await;
            drop(permit);
            out
        });
    }
    while let Some(done) = set.join_next().await {
        if let Err(status) = done.expect("load task") {
            panic!("{what}: {}", status.message());
        }
    }
}

/// Waits until `done` holds on what the watch saw, or `deadline` passes.
async fn wait_seen(
    seen: &Mutex<Seen>,
    changed: &mut watch::Receiver<u64>,
    deadline: Instant,
    mut done: impl FnMut(&Seen) -> bool,
) -> bool {
    loop {
        if done(&seen.lock().expect("seen lock")) {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        // A tick now and then re-checks conditions that depend on time passing.
        let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), changed.changed()).await;
    }
}

/// Per job: tasks, placed, and the time from ack to its first placement and to its last
/// task's first placement (None if never placed). `fit` is the time until as many were placed as the pure library placed
/// for the job in its own loaded cell (all placed, if fewer): "all that fit at arrival",
/// from the bench's view (None if that count is 0).
struct JobResult {
    tasks: usize,
    placed: usize,
    first: Option<Duration>,
    last: Option<Duration>,
    fit: Option<Duration>,
}

/// Submits `group` together and waits until each is complete (see the module's comment).
async fn run_group(
    client: &Arc<MasterClient>,
    seen: &Mutex<Seen>,
    changed: &mut watch::Receiver<u64>,
    group: &[(String, Vec<PendingTask>)],
    library_placed: &HashMap<String, usize>,
) -> Vec<JobResult> {
    // Submitted concurrently; each job's clock starts at its own acknowledgement.
    let mut clamped = 0;
    let mut acked = Vec::new();
    for (name, tasks) in group {
        let refs: Vec<&PendingTask> = tasks.iter().collect();
        let spec = job_spec(name, &refs, &mut clamped);
        let (client, name) = (Arc::clone(client), name.clone());
        acked.push(tokio::spawn(async move {
            submit(&client, spec)
                .await
                .unwrap_or_else(|s| panic!("submitting {name}: {}", s.message()));
            Instant::now()
        }));
    }
    let mut ack_at = Vec::new();
    for a in acked {
        ack_at.push(a.await.expect("submit task"));
    }
    let mut results = Vec::new();
    for ((name, tasks), ack) in group.iter().zip(ack_at) {
        let want = tasks.len();
        wait_seen(
            seen,
            changed,
            ack + Duration::from_millis(JOB_DEADLINE_MS),
            |s| match s.online.get(name) {
                Some((placed, _, at)) => {
                    *placed >= want || at.elapsed() >= Duration::from_millis(SETTLE_MS)
                }
                None => false,
            },
        )
        .await;
        let s = seen.lock().expect("seen lock");
        let result = match s.online.get(name) {
            Some((placed, first, last)) => {
                let target = library_placed.get(name).copied().unwrap_or(0).min(*placed);
                let fit = s.online_timeline.get(name).and_then(|timeline| {
                    timeline
                        .iter()
                        .find(|(n, _)| target > 0 && *n >= target)
                        .map(|(_, at)| at.saturating_duration_since(ack))
                });
                JobResult {
                    tasks: want,
                    placed: *placed,
                    first: Some(first.saturating_duration_since(ack)),
                    last: Some(last.saturating_duration_since(ack)),
                    fit,
                }
            }
            None => JobResult {
                tasks: want,
                placed: 0,
                first: None,
                last: None,
                fit: None,
            },
        };
        if std::env::var_os("BENCH_VERBOSE").is_some() {
            let time =
                |t: Option<Duration>| t.map_or("never".to_owned(), |t| format!("{:.1} ms", ms(t)));
            println!(
                "    {name}: acknowledged at {:.3} s (Unix), {want} tasks at priority {}, {} placed, {} (first placement {}; the library's count {})",
                unix_now_s() - ack.elapsed().as_secs_f64(),
                tasks[0].priority,
                result.placed,
                time(result.last),
                time(result.first),
                time(result.fit)
            );
        }
        results.push(result);
    }
    results
}

/// Scrapes the scheduler's Prometheus text (sums and counts of its histograms).
async fn scrape(address: &str) -> BTreeMap<String, f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut out = BTreeMap::new();
    let Ok(mut stream) = tokio::net::TcpStream::connect(address).await else {
        return out;
    };
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return out;
    }
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text).await;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut parts = line.split_whitespace();
        if let (Some(name), Some(value)) = (parts.next(), parts.next()) {
            if let Ok(v) = value.parse() {
                out.insert(name.to_owned(), v);
            }
        }
    }
    out
}

/// Mean of a histogram between two scrapes, in ms.
fn mean_ms(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, name: &str) -> String {
    let delta = |suffix: &str| {
        let key = format!("{name}_{suffix}");
        after.get(&key).copied().unwrap_or(0.0) - before.get(&key).copied().unwrap_or(0.0)
    };
    let (sum, count) = (delta("sum"), delta("count"));
    if count <= 0.0 {
        return "none".into();
    }
    format!("{count:.0} x {:.1} ms", sum * 1e3 / count)
}

fn print_results(label: &str, results: &[JobResult], library: Option<&str>) -> String {
    let asked: usize = results.iter().map(|r| r.tasks).sum();
    let placed: usize = results.iter().map(|r| r.placed).sum();
    let never = results.iter().filter(|r| r.last.is_none()).count();
    let mut last: Vec<Duration> = results.iter().filter_map(|r| r.last).collect();
    let mut first: Vec<Duration> = results.iter().filter_map(|r| r.first).collect();
    let mut fit: Vec<Duration> = results.iter().filter_map(|r| r.fit).collect();
    let fit_jobs = fit.len();
    let (last, first, fit) = (summary(&mut last), summary(&mut first), summary(&mut fit));
    println!(
        "{label}: {} jobs ({asked} tasks, {placed} placed; {never} jobs with no task placed): ack -> committed plan {last}; ack -> first committed placement {first}; ack -> as many placed as the library placed ({fit_jobs} jobs) {fit}",
        results.len()
    );
    format!(
        "| {label} | {last} | {first} | {fit} | {} jobs, {asked} tasks, {placed} placed | {} |",
        results.len(),
        library.unwrap_or("")
    )
}

fn main() {
    let args = parse_args();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/traces/google-2011");
    if !dir.join("task_events").is_dir() {
        println!("skipping: {} not found", dir.display());
        return;
    }
    println!("load average at start: {}", load_average());
    let started = Instant::now();
    let trace = google2011::load(&dir, &Google2011Options::new(TRACE_WINDOW_START_US))
        .unwrap_or_else(|e| panic!("reading the trace: {e}"));
    let machines = with_topology(trace.workload.machines);
    let pending = sim::cell::pending_tasks(&trace.workload.tasks);
    drop(trace.workload.tasks);
    println!(
        "Google 2011 cell at t=600 s: {} machines, {} tasks (read in {:.1} s)",
        machines.len(),
        pending.len(),
        started.elapsed().as_secs_f64()
    );
    let online = online_jobs(&pending, args.jobs, ONLINE_TASKS_PER_JOB_MAX);

    // The pure library's figure, in this run, on the cell the library loads itself.
    let (library, library_placed) = library_online(&machines, &pending, &online);

    let mut cell = TestCell::with_masters_and_args(REPLICAS, &["--log", "warn"]);
    cell.wait_for_leader();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let rows = runtime.block_on(bench(
        &mut cell,
        &args,
        machines,
        pending,
        online,
        (&library, &library_placed),
    ));
    println!("load average at end: {}", load_average());
    if let Some(keep) = std::env::var_os("BENCH_KEEP_LOG") {
        // The cell's directory goes with it: keep the scheduler's log for a breakdown, and
        // the masters' beside it (KEEP.master-N.log), for commit latency.
        let _ = std::fs::copy(cell.dir.path().join("scheduler.log"), &keep);
        for id in 1..=REPLICAS {
            let mut to = keep.clone();
            to.push(format!(".master-{id}.log"));
            let _ = std::fs::copy(cell.dir.path().join(format!("master-{id}.log")), to);
        }
    }
    println!("\n| benchmark | ack -> last placement | ack -> first placement | ack -> the library's count placed | jobs | pure library, same run |\n|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
}

/// `sim::online::run_online` on the library's own loaded cell: p50/p99/max per plan, and
/// the tasks placed per online job.
fn library_online(
    machines: &[MachineInfo],
    pending: &[PendingTask],
    online: &[Vec<PendingTask>],
) -> (String, HashMap<String, usize>) {
    let config = PlacementConfig {
        tasks_max: pending.len(),
        ..PlacementConfig::new()
    };
    let started = Instant::now();
    let plan = scheduler::schedule(&sim::cell::empty_view(machines), pending, &config, SEED);
    println!(
        "pure library: whole cell in {:.2} s wall ({} placed, {} pending)",
        started.elapsed().as_secs_f64(),
        plan.placements.len(),
        plan.unplaced.len() + plan.deferred
    );
    let mut loaded = loaded_view(machines, pending, &plan);
    let mut cache = ScoreCache::new(PlacementConfig::new().score_cache_entries_max);
    let plans = run_online(
        &mut loaded,
        online,
        &PlacementConfig::new(),
        SEED,
        &mut cache,
    );
    let mut times: Vec<Duration> = plans.iter().map(|p| p.time).collect();
    let figures = summary(&mut times);
    println!(
        "pure library: {} online jobs, {} of {} tasks placed, per plan (on-CPU) {figures}",
        plans.len(),
        plans.iter().map(|p| p.placed).sum::<usize>(),
        plans.iter().map(|p| p.tasks).sum::<usize>()
    );
    // `run_online` skips empty jobs, as the benchmark does.
    let placed = online
        .iter()
        .filter_map(|tasks| tasks.first())
        .zip(&plans)
        .map(|(task, plan)| (task.id.job.clone(), plan.placed))
        .collect();
    (figures, placed)
}

async fn bench(
    cell: &mut TestCell,
    args: &Args,
    machines: Vec<MachineInfo>,
    pending: Vec<PendingTask>,
    online: Vec<Vec<PendingTask>>,
    (library, library_placed): (&str, &HashMap<String, usize>),
) -> Vec<String> {
    let masters: Vec<String> = cell.master_list().split(',').map(str::to_owned).collect();
    let client = |token: &str| {
        Arc::new(
            MasterClient::new(MasterClientConfig {
                token: Some(token.to_owned()),
                ..MasterClientConfig::new(masters.clone())
            })
            .expect("master client"),
        )
    };
    let admin = client(&cell.admin_token);
    let control = client(&cell.cluster_token);

    let seen = Arc::new(Mutex::new(Seen::default()));
    let (changed_tx, mut changed) = watch::channel(0u64);
    tokio::spawn(watch_cell(
        Arc::clone(&control),
        Arc::clone(&seen),
        changed_tx,
    ));

    // Machines, as the link shard registers them.
    let t = Instant::now();
    let calls = machines
        .iter()
        .map(|m| {
            let control = Arc::clone(&control);
            // No borglet listens there: no link shard runs to call it.
            let info = MachineInfo {
                address: NO_BORGLET_ADDRESS.into(),
                ..m.clone()
            };
            let request = v1::RegisterMachineRequest {
                info: Some(info.into()),
                request_id: new_request_id("online-bench-machine"),
            };
            async move {
                control
                    .call(|channel| {
                        let request = request.clone();
                        async move {
                            LinkServiceClient::new(channel)
                                .register_machine(request)
                                .await
                        }
                    })
                    .await
                    .map(|_| ())
            }
        })
        .collect();
    in_parallel("registering a machine", calls).await;
    println!(
        "registered {} machines in {:.1} s",
        machines.len(),
        t.elapsed().as_secs_f64()
    );

    // Every owner may use every band without limit: admission is not what is measured.
    let owners: BTreeSet<&str> = pending
        .iter()
        .chain(online.iter().flatten())
        .map(|t| t.owner.as_str())
        .collect();
    let calls = owners
        .iter()
        .flat_map(|owner| {
            ["batch", "production", "monitoring"].map(|band| {
                let admin = Arc::clone(&admin);
                let request = v1::SetQuotaRequest {
                    user: (*owner).to_owned(),
                    band: band.to_owned(),
                    limit: Some(UNLIMITED.into()),
                    request_id: new_request_id("online-bench-quota"),
                };
                async move {
                    admin
                        .call(|channel| {
                            let request = request.clone();
                            async move { CellServiceClient::new(channel).set_quota(request).await }
                        })
                        .await
                        .map(|_| ())
                }
            })
        })
        .collect();
    in_parallel("setting a quota", calls).await;

    // The trace's jobs, placed by the scheduler once all are in.
    let t = Instant::now();
    let mut by_job: BTreeMap<&str, Vec<&PendingTask>> = BTreeMap::new();
    for task in &pending {
        by_job.entry(task.id.job.as_str()).or_default().push(task);
    }
    let mut clamped = 0;
    let specs: Vec<JobSpec> = by_job
        .iter()
        .map(|(name, tasks)| job_spec(name, tasks, &mut clamped))
        .collect();
    let overrides: usize = specs.iter().map(|s| s.task_overrides.len()).sum();
    let calls = specs
        .into_iter()
        .map(|spec| {
            let admin = Arc::clone(&admin);
            async move { submit(&admin, spec).await }
        })
        .collect();
    in_parallel("submitting a trace job", calls).await;
    println!(
        "submitted {} jobs ({} tasks, {overrides} per-task overrides, {clamped} tasks raised to 1m cpu / 1 MiB ram) in {:.1} s",
        by_job.len(),
        pending.len(),
        t.elapsed().as_secs_f64()
    );

    let metrics_address = format!("127.0.0.1:{}", free_port());
    cell.others.push(Daemon::spawn(
        "scheduler",
        &[
            "scheduler".into(),
            "--master".into(),
            cell.master_list(),
            "--cluster-token-file".into(),
            cell.token_file("cluster.token"),
            "--metrics".into(),
            metrics_address.clone(),
            "--log".into(),
            std::env::var("BENCH_SCHEDULER_LOG").unwrap_or_else(|_| "warn".into()),
        ],
        cell.dir.path(),
    ));
    let t = Instant::now();
    let settled = wait_seen(
        &seen,
        &mut changed,
        t + Duration::from_secs(LOAD_DEADLINE_S),
        |s| {
            s.last_placement
                .is_some_and(|at| at.elapsed() >= Duration::from_millis(LOAD_SETTLE_MS))
        },
    )
    .await;
    let placed_total = seen.lock().expect("seen lock").placed_total;
    println!(
        "the scheduler placed {placed_total} of {} tasks in {:.1} s (settled: {settled}; {} left pending)",
        pending.len(),
        t.elapsed().as_secs_f64() - LOAD_SETTLE_MS as f64 / 1e3,
        pending.len() - placed_total
    );
    println!("load average before the online jobs: {}", load_average());

    let mut rows = Vec::new();
    let named: Vec<(String, Vec<PendingTask>)> = online
        .into_iter()
        .filter(|tasks| !tasks.is_empty())
        .map(|tasks| (tasks[0].id.job.clone(), tasks))
        .collect();
    let before = scrape(&metrics_address).await;
    let mut results = Vec::new();
    for job in named.chunks(1) {
        results.extend(run_group(&admin, &seen, &mut changed, job, library_placed).await);
    }
    let after = scrape(&metrics_address).await;
    rows.push(print_results(
        "one at a time",
        &results,
        Some(&format!("per plan {library}")),
    ));
    print_scheduler(&before, &after);
    if args.together > 0 {
        // The same jobs again under new names, `together` submitted at once.
        let library_placed: HashMap<String, usize> = library_placed
            .iter()
            .map(|(name, placed)| (group_name(name), *placed))
            .collect();
        let renamed: Vec<(String, Vec<PendingTask>)> = named
            .iter()
            .map(|(name, tasks)| {
                let name = group_name(name);
                let tasks = tasks
                    .iter()
                    .map(|t| PendingTask {
                        id: borg_model::TaskId::new(name.clone(), t.id.index),
                        ..t.clone()
                    })
                    .collect();
                (name, tasks)
            })
            .collect();
        let before = scrape(&metrics_address).await;
        let mut results = Vec::new();
        for group in renamed.chunks(args.together) {
            results.extend(run_group(&admin, &seen, &mut changed, group, &library_placed).await);
        }
        let after = scrape(&metrics_address).await;
        rows.push(print_results(
            &format!("{} at a time", args.together),
            &results,
            None,
        ));
        print_scheduler(&before, &after);
    }
    rows
}

/// The name of an online job's copy in the groups submitted together.
fn group_name(name: &str) -> String {
    name.replacen(ONLINE_JOB_PREFIX, &format!("{ONLINE_JOB_PREFIX}g-"), 1)
}

fn print_scheduler(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) {
    let delta = |name: &str| {
        after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
    };
    println!(
        "  the scheduler meanwhile: schedule calls {}; CommitPlan calls {}",
        mean_ms(before, after, "borg_scheduler_schedule_seconds"),
        mean_ms(before, after, "borg_scheduler_plan_commit_seconds")
    );
    println!(
        "  placements committed {:.0}, rejected by the master {:.0}",
        delta("borg_scheduler_placements_accepted_total"),
        delta("borg_scheduler_placements_rejected_total"),
    );
    println!(
        "  per round: wait of new work for its round {}; collect {}; updates applied {}; backlog retry rounds {:.0}; watch restarts {:.0}",
        mean_ms(before, after, "borg_scheduler_round_wait_seconds"),
        mean_ms(before, after, "borg_scheduler_collect_seconds"),
        mean_ms(before, after, "borg_scheduler_update_apply_seconds"),
        delta("borg_scheduler_backlog_retry_rounds_total"),
        delta("borg_scheduler_watch_restarts_total"),
    );
}
