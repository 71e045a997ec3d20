//! The scheduler process loop against a *fake* `SchedulerService` served by tonic on
//! 127.0.0.1:0. The fake is not the master: it plays the protocol (a snapshot then changes
//! on `WatchCell`; `CommitPlan` accepting placements of pending tasks with the named
//! incarnation) so that the loop's handling of it can be checked: placing, not placing a
//! task twice, following a leader hint, reconnecting after the stream ends, shutting down.
//! The lead's integration tests run the loop against the real master.

mod common;

use borg_proto::v1;
use borg_proto::v1::scheduler_service_server::{SchedulerService, SchedulerServiceServer};
use scheduler::{run, SchedulerConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// Buffered updates per watcher of the fake.
const FAKE_WATCH_BUFFER: usize = 64;

#[derive(Default)]
struct FakeState {
    index: u64,
    machines: BTreeMap<String, v1::Machine>,
    jobs: BTreeMap<String, v1::Job>,
    watchers: Vec<mpsc::Sender<Result<v1::CellUpdate, Status>>>,
    watch_count: usize,
    /// The first watch gets its snapshot, then the stream ends.
    end_first_watch: bool,
    commits: Vec<v1::CommitPlanRequest>,
    /// This many CommitPlan calls reject every placement (as a master whose state moved on
    /// would) and change nothing.
    reject_commits: usize,
    /// Every CommitPlan answers this late (a slow master).
    commit_delay: Duration,
    /// CommitPlan calls being answered now, and the most at once.
    committing: usize,
    committing_max: usize,
}

#[derive(Clone, Default)]
struct Fake {
    state: Arc<Mutex<FakeState>>,
    /// Answer every call with "not the leader; the leader is there".
    redirect_to: Option<String>,
    /// Set: the first CommitPlan is answered only once a second one arrived (at most
    /// `HELD_COMMIT_MAX`), so a second plan must be sent while the first is in flight.
    hold_first_commit: Option<Arc<tokio::sync::Notify>>,
}

/// Longest the fake holds its first commit for `Fake::hold_first_commit`.
const HELD_COMMIT_MAX: Duration = Duration::from_secs(10);

impl FakeState {
    fn broadcast(&mut self, change: v1::CellChange) {
        self.index += 1;
        let update = v1::CellUpdate {
            index: self.index,
            update: Some(v1::cell_update::Update::Change(change)),
        };
        self.watchers
            .retain(|w| w.try_send(Ok(update.clone())).is_ok());
    }

    fn submit(&mut self, name: &str, replicas: u32, cpu_millis: u64) {
        let job = common::wire_job(name, replicas, cpu_millis, &[]);
        self.jobs.insert(name.into(), job.clone());
        self.broadcast(v1::CellChange {
            jobs_upserted: vec![job],
            ..Default::default()
        });
    }

    fn add_machine(&mut self, name: &str, cpu_millis: u64) {
        self.machines
            .insert(name.into(), common::wire_machine(name, cpu_millis, None));
    }

    fn scheduled_tasks(&self) -> usize {
        self.jobs
            .values()
            .flat_map(|j| &j.tasks)
            .filter(|t| t.state == v1::TaskState::Scheduled as i32)
            .count()
    }

    fn placement(&mut self, p: &v1::Placement) -> Result<(), String> {
        let task = p.task.as_ref().ok_or("no task")?;
        let job = self.jobs.get_mut(&task.job).ok_or("no such job")?;
        let limits = job
            .spec
            .as_ref()
            .and_then(|s| s.task.as_ref())
            .and_then(|t| t.resources)
            .unwrap_or_default();
        let t = job
            .tasks
            .iter_mut()
            .find(|t| t.index == task.index)
            .ok_or("no such task")?;
        if t.state != v1::TaskState::Pending as i32 || t.incarnation != task.incarnation {
            return Err(format!(
                "task {}/{} is not pending at that incarnation",
                task.job, task.index
            ));
        }
        let machine = self.machines.get_mut(&p.machine).ok_or("no such machine")?;
        let mut allocated = machine.allocated.unwrap_or_default();
        let capacity = machine
            .info
            .as_ref()
            .and_then(|i| i.capacity)
            .unwrap_or_default();
        if allocated.cpu_millis + limits.cpu_millis > capacity.cpu_millis {
            return Err("cpu exhausted".into());
        }
        allocated.cpu_millis += limits.cpu_millis;
        machine.allocated = Some(allocated);
        machine.version += 1;
        t.state = v1::TaskState::Scheduled as i32;
        t.machine = p.machine.clone();
        t.incarnation += 1;
        Ok(())
    }
}

#[tonic::async_trait]
impl SchedulerService for Fake {
    type WatchCellStream = ReceiverStream<Result<v1::CellUpdate, Status>>;

    async fn watch_cell(
        &self,
        _request: Request<v1::WatchCellRequest>,
    ) -> Result<Response<Self::WatchCellStream>, Status> {
        if let Some(leader) = &self.redirect_to {
            return Err(borg_proto::leader::not_leader(Some(leader)));
        }
        let (tx, rx) = mpsc::channel(FAKE_WATCH_BUFFER);
        let mut state = self.state.lock().unwrap();
        state.watch_count += 1;
        let snapshot = v1::CellUpdate {
            index: state.index,
            update: Some(v1::cell_update::Update::Snapshot(v1::CellSnapshot {
                machines: state.machines.values().cloned().collect(),
                jobs: state.jobs.values().cloned().collect(),
            })),
        };
        tx.try_send(Ok(snapshot))
            .map_err(|_| Status::internal("fake watch buffer full"))?;
        if !(state.end_first_watch && state.watch_count == 1) {
            state.watchers.push(tx);
        }
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn commit_plan(
        &self,
        request: Request<v1::CommitPlanRequest>,
    ) -> Result<Response<v1::CommitPlanResponse>, Status> {
        if let Some(leader) = &self.redirect_to {
            return Err(borg_proto::leader::not_leader(Some(leader)));
        }
        let request = request.into_inner();
        let (arrived, delay) = {
            let mut state = self.state.lock().unwrap();
            state.commits.push(request.clone());
            state.committing += 1;
            state.committing_max = state.committing_max.max(state.committing);
            (state.commits.len(), state.commit_delay)
        };
        if let Some(second_arrived) = &self.hold_first_commit {
            match arrived {
                1 => {
                    let _ = tokio::time::timeout(HELD_COMMIT_MAX, second_arrived.notified()).await;
                }
                2 => second_arrived.notify_one(),
                _ => {}
            }
        }
        tokio::time::sleep(delay).await;
        let mut state = self.state.lock().unwrap();
        state.committing -= 1;
        if state.reject_commits > 0 {
            state.reject_commits -= 1;
            let results = request
                .placements
                .iter()
                .map(|p| v1::PlacementResult {
                    task: p.task.clone(),
                    accepted: false,
                    reason: "machine version is stale".into(),
                })
                .collect();
            // Nothing changed, so no update is sent: the scheduler must retry on its own.
            state.index += 1;
            return Ok(Response::new(v1::CommitPlanResponse {
                results,
                index: state.index,
            }));
        }
        let mut results = Vec::new();
        let (mut jobs, mut machines) = (BTreeSet::new(), BTreeSet::new());
        for p in &request.placements {
            let outcome = state.placement(p);
            if outcome.is_ok() {
                jobs.insert(p.task.as_ref().map(|t| t.job.clone()).unwrap_or_default());
                machines.insert(p.machine.clone());
            }
            results.push(v1::PlacementResult {
                task: p.task.clone(),
                accepted: outcome.is_ok(),
                reason: outcome.err().unwrap_or_default(),
            });
        }
        let change = v1::CellChange {
            jobs_upserted: jobs.iter().map(|j| state.jobs[j].clone()).collect(),
            machines_upserted: machines.iter().map(|m| state.machines[m].clone()).collect(),
            ..Default::default()
        };
        state.broadcast(change);
        Ok(Response::new(v1::CommitPlanResponse {
            results,
            index: state.index,
        }))
    }
}

async fn serve(fake: Fake, shutdown: CancellationToken) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(SchedulerServiceServer::new(fake))
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                shutdown.cancelled_owned(),
            )
            .await
    });
    address
}

/// Polls `condition` until it holds or `deadline` passes.
async fn wait_for(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + deadline;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Shuts the scheduler down (it must return cleanly), then the fake.
async fn stop(
    shutdown: CancellationToken,
    scheduler: tokio::task::JoinHandle<Result<(), scheduler::SchedulerError>>,
    server_shutdown: CancellationToken,
) {
    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), scheduler)
        .await
        .expect("run returns after shutdown")
        .expect("run does not panic");
    assert!(result.is_ok(), "{result:?}");
    server_shutdown.cancel();
}

/// Serves `fake`, runs a scheduler (its test config changed by `adjust`) until `tasks` tasks
/// are scheduled, then shuts it down (it must return cleanly) and the fake.
async fn run_until_scheduled(fake: &Fake, tasks: usize, adjust: impl FnOnce(&mut SchedulerConfig)) {
    let server_shutdown = CancellationToken::new();
    let address = serve(fake.clone(), server_shutdown.clone()).await;
    let shutdown = CancellationToken::new();
    let mut config = config(vec![address.to_string()]);
    adjust(&mut config);
    let scheduler = tokio::spawn(run(config, shutdown.clone()));
    let state = Arc::clone(&fake.state);
    wait_for(
        &format!("{tasks} tasks scheduled"),
        Duration::from_secs(20),
        || state.lock().unwrap().scheduled_tasks() == tasks,
    )
    .await;
    stop(shutdown, scheduler, server_shutdown).await;
}

fn config(masters: Vec<String>) -> SchedulerConfig {
    let mut config = SchedulerConfig::new(masters);
    config.scheduler_id = "test-scheduler".into();
    config.plan_batch_max = 2;
    config.reconnect_backoff_initial_ms = 10;
    config.reconnect_backoff_max_ms = 100;
    config
}

#[tokio::test]
async fn pending_tasks_are_placed_once_in_bounded_batches() {
    let fake = Fake::default();
    {
        let mut state = fake.state.lock().unwrap();
        state.add_machine("m1", 1000);
        state.add_machine("m2", 1000);
        state.submit("web", 5, 100);
    }
    let server_shutdown = CancellationToken::new();
    let address = serve(fake.clone(), server_shutdown.clone()).await;
    let shutdown = CancellationToken::new();
    let scheduler = tokio::spawn(run(config(vec![address.to_string()]), shutdown.clone()));

    let state = Arc::clone(&fake.state);
    wait_for("5 tasks scheduled", Duration::from_secs(20), || {
        state.lock().unwrap().scheduled_tasks() == 5
    })
    .await;
    // A job submitted later arrives as a change and is placed too.
    state.lock().unwrap().submit("batch", 3, 100);
    wait_for("8 tasks scheduled", Duration::from_secs(20), || {
        state.lock().unwrap().scheduled_tasks() == 8
    })
    .await;

    stop(shutdown, scheduler, server_shutdown).await;

    let state = state.lock().unwrap();
    let placements: Vec<&v1::Placement> =
        state.commits.iter().flat_map(|c| &c.placements).collect();
    assert_eq!(placements.len(), 8, "each task is placed exactly once");
    assert!(
        state.commits.iter().all(|c| c.placements.len() <= 2),
        "batches are bounded"
    );
    let ids: BTreeSet<&str> = state
        .commits
        .iter()
        .map(|c| c.request_id.as_str())
        .collect();
    assert_eq!(ids.len(), state.commits.len(), "request ids are unique");
    assert!(state
        .commits
        .iter()
        .all(|c| c.scheduler_id == "test-scheduler"));
}

#[tokio::test]
async fn the_leader_is_followed_and_a_lost_stream_is_reopened() {
    let leader = Fake::default();
    {
        let mut state = leader.state.lock().unwrap();
        state.add_machine("m1", 1000);
        state.end_first_watch = true;
    }
    let server_shutdown = CancellationToken::new();
    let leader_address = serve(leader.clone(), server_shutdown.clone()).await;
    let follower = Fake {
        redirect_to: Some(leader_address.to_string()),
        ..Fake::default()
    };
    let follower_address = serve(follower, server_shutdown.clone()).await;

    let shutdown = CancellationToken::new();
    let scheduler = tokio::spawn(run(
        config(vec![follower_address.to_string()]),
        shutdown.clone(),
    ));
    let state = Arc::clone(&leader.state);
    wait_for("the watch to be reopened", Duration::from_secs(20), || {
        state.lock().unwrap().watch_count >= 2
    })
    .await;
    state.lock().unwrap().submit("web", 2, 100);
    wait_for("2 tasks scheduled", Duration::from_secs(20), || {
        state.lock().unwrap().scheduled_tasks() == 2
    })
    .await;

    stop(shutdown, scheduler, server_shutdown).await;
}

#[tokio::test]
async fn a_bad_configuration_is_refused() {
    let result = run(SchedulerConfig::new(vec![]), CancellationToken::new()).await;
    assert!(matches!(result, Err(scheduler::SchedulerError::NoMasters)));
    let mut config = SchedulerConfig::new(vec!["127.0.0.1:1".into()]);
    config.plan_batch_max = 0;
    let result = run(config, CancellationToken::new()).await;
    assert!(
        matches!(
            result,
            Err(scheduler::SchedulerError::InvalidConfig {
                field: "plan_batch_max",
                ..
            })
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn rejected_placements_are_retried() {
    let fake = Fake::default();
    {
        let mut state = fake.state.lock().unwrap();
        state.add_machine("m1", 1000);
        state.submit("web", 2, 100);
        state.reject_commits = 2;
    }
    run_until_scheduled(&fake, 2, |config| config.retry_interval_ms = 20).await;
    let state = fake.state.lock().unwrap();
    // Two rejected rounds, then the accepted one (plans of at most 2 placements).
    assert_eq!(state.commits.len(), 3, "{:?}", state.commits.len());
}

/// A fake of `machines` machines of 10 cores, and a job "big" of 100 tasks of 100m cpu.
fn fake_with_a_large_job(machines: usize) -> Fake {
    let fake = Fake::default();
    {
        let mut state = fake.state.lock().unwrap();
        for m in 0..machines {
            state.add_machine(&format!("m{m:02}"), 10_000);
        }
        state.submit("big", 100, 100);
    }
    fake
}

/// `fake_with_a_large_job` and a job "small" of 10 tasks arriving with it.
fn fake_with_a_burst(machines: usize) -> Fake {
    let fake = fake_with_a_large_job(machines);
    fake.state.lock().unwrap().submit("small", 10, 100);
    fake
}

/// Runs a scheduler on `fake` (plans sent whole, rounds with a new job beside others of at
/// most 10 tasks) until `tasks` are scheduled; the placements of each commit.
async fn commit_sizes_in_rounds_of_10(fake: &Fake, tasks: usize) -> Vec<usize> {
    run_until_scheduled(fake, tasks, |config| {
        config.plan_batch_max = 1_000;
        config.new_round_tasks_max = 10;
    })
    .await;
    let state = fake.state.lock().unwrap();
    state.commits.iter().map(|c| c.placements.len()).collect()
}

fn machines_of(commit: &v1::CommitPlanRequest) -> BTreeSet<&str> {
    commit
        .placements
        .iter()
        .map(|p| p.machine.as_str())
        .collect()
}

#[tokio::test]
async fn a_job_alone_is_planned_in_one_round_and_a_burst_heads_first_then_in_one() {
    let fake = fake_with_a_large_job(40);
    // Alone, the job is one round (`continued_round_tasks_max`, 256), not eight of 13.
    assert_eq!(commit_sizes_in_rounds_of_10(&fake, 100).await, [100]);

    let fake = fake_with_a_burst(40);
    // Two jobs arrived: the first round plans max(10, 110 / 8) = 14 tasks, each job's
    // first two among them; then both have had their turn and the other 96 go in one
    // round. Each task once (the fake rejects a placement of a task already placed).
    assert_eq!(commit_sizes_in_rounds_of_10(&fake, 110).await, [14, 96]);
    let state = fake.state.lock().unwrap();
    let first_jobs: BTreeSet<&str> = state.commits[0]
        .placements
        .iter()
        .filter_map(|p| p.task.as_ref().map(|t| t.job.as_str()))
        .collect();
    assert_eq!(first_jobs, BTreeSet::from(["big", "small"]));
}

#[tokio::test]
async fn the_next_round_is_planned_and_sent_while_a_commit_is_in_flight_on_other_machines() {
    let fake = Fake {
        hold_first_commit: Some(Arc::new(tokio::sync::Notify::new())),
        ..fake_with_a_burst(40)
    };
    assert_eq!(commit_sizes_in_rounds_of_10(&fake, 110).await, [14, 96]);
    let state = fake.state.lock().unwrap();
    // The fake answered the first only once the second arrived.
    assert_eq!(
        state.committing_max, 2,
        "two plans were being committed at once"
    );
    // The second was planned before the view showed the first: on other machines.
    let (first, second) = (
        machines_of(&state.commits[0]),
        machines_of(&state.commits[1]),
    );
    assert!(first.is_disjoint(&second), "{first:?} / {second:?}");
}

#[tokio::test]
async fn tasks_left_unplaced_beside_a_commit_in_flight_are_placed_once_it_shows() {
    // One machine: a round planned while the first commit is in flight has no machine.
    let fake = fake_with_a_burst(1);
    {
        let mut state = fake.state.lock().unwrap();
        state.add_machine("m00", 20_000);
        state.commit_delay = Duration::from_millis(200);
    }
    run_until_scheduled(&fake, 110, |config| {
        config.plan_batch_max = 1_000;
        config.new_round_tasks_max = 10;
        // Only the room reappearing with the first commit can retry them in time.
        config.backlog_retry_interval_ms = 600_000;
    })
    .await;
    let state = fake.state.lock().unwrap();
    let sizes: Vec<usize> = state.commits.iter().map(|c| c.placements.len()).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 110, "{sizes:?}");
    assert_eq!(state.committing_max, 1, "{sizes:?}");
}
