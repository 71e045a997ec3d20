//! The link shard's loop against a fake master (`LinkService`) and fake borglets
//! (`BorgletService`), both served by tonic on 127.0.0.1:0. They are fakes for testing the
//! loop's protocol only: what it asks for, what it polls with, and what it forwards.

use borg_proto::v1::borglet_service_server::{BorgletService, BorgletServiceServer};
use borg_proto::v1::link_service_server::{LinkService, LinkServiceServer};
use borg_proto::v1::{
    AssignedTask, ForwardDiffsRequest, ForwardDiffsResponse, GetAssignmentRequest,
    GetAssignmentResponse, JobTaskKeys, KnownAssignment, MachineAssignment, MachineDiff,
    PollRequest, PollResponse, RegisterMachineRequest, RegisterMachineResponse, TaskReport,
    TaskState,
};
use linkshard::{run, LinkShardConfig};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

/// How long any condition may take to come true on a loaded machine.
const WAIT_DEADLINE_MS: u64 = 20_000;
const POLL_INTERVAL_MS: u64 = 20;

/// Fake master for testing the loop's protocol: serves a settable assignment and records
/// every `ForwardDiffs` (refusing them while `refuse_forwards` is set).
#[derive(Default)]
struct FakeMasterState {
    machines: Vec<MachineAssignment>,
    assignment_calls: u64,
    forwards: Vec<ForwardDiffsRequest>,
    refused_forwards: u64,
    refuse_forwards: bool,
    /// `known` of the last `GetAssignment`.
    last_known: Vec<KnownAssignment>,
    /// `GetAssignment`s that asked to wait for a change.
    waits: u64,
    /// Notified (by a test) when `machines` changed, ending a waiting `GetAssignment`.
    changed: Arc<tokio::sync::Notify>,
}

#[derive(Clone, Default)]
struct FakeMaster(Arc<Mutex<FakeMasterState>>);

#[tonic::async_trait]
impl LinkService for FakeMaster {
    async fn register_machine(
        &self,
        _request: Request<RegisterMachineRequest>,
    ) -> Result<Response<RegisterMachineResponse>, Status> {
        Err(Status::unimplemented(
            "the fake master takes no registrations",
        ))
    }

    async fn get_assignment(
        &self,
        request: Request<GetAssignmentRequest>,
    ) -> Result<Response<GetAssignmentResponse>, Status> {
        let request = request.into_inner();
        assert_eq!((request.shard_index, request.shard_count), (0, 1));
        if request.wait_ms > 0 {
            // Like the master: wait while the shard holds every machine at its version.
            let (unchanged, changed) = {
                let mut state = self.0.lock().unwrap();
                state.waits += 1;
                let held = |m: &MachineAssignment| {
                    request
                        .known
                        .iter()
                        .any(|k| k.machine == m.machine && k.version == m.version)
                };
                let unchanged =
                    request.known.len() == state.machines.len() && state.machines.iter().all(held);
                (unchanged, Arc::clone(&state.changed))
            };
            if unchanged {
                let wait = Duration::from_millis(u64::from(request.wait_ms));
                let _ = tokio::time::timeout(wait, changed.notified()).await;
            }
        }
        let mut state = self.0.lock().unwrap();
        state.assignment_calls += 1;
        state.last_known = request.known;
        Ok(Response::new(GetAssignmentResponse {
            machines: state.machines.clone(),
            index: 42,
        }))
    }

    async fn forward_diffs(
        &self,
        request: Request<ForwardDiffsRequest>,
    ) -> Result<Response<ForwardDiffsResponse>, Status> {
        let mut state = self.0.lock().unwrap();
        if state.refuse_forwards {
            state.refused_forwards += 1;
            // Not retryable, so the master client returns it at once.
            return Err(Status::failed_precondition("the fake master refuses diffs"));
        }
        state.forwards.push(request.into_inner());
        Ok(Response::new(ForwardDiffsResponse {
            index: state.forwards.len() as u64,
        }))
    }
}

/// Fake borglet for testing the loop's protocol: answers polls with a settable report (or
/// an error while `failing`), and records every poll request.
#[derive(Default)]
struct FakeBorgletState {
    machine: String,
    tasks: Vec<TaskReport>,
    failing: bool,
    polls: Vec<PollRequest>,
    /// The `authorization` metadata of each poll.
    authorizations: Vec<Option<String>>,
    /// Answer that keyed polls are taken.
    keyed_polls: bool,
    /// Answered (once) to the next keyed poll as the keys it does not have.
    unknown_once: Vec<JobTaskKeys>,
    /// Index in `polls` of the poll that was answered `unknown_once`.
    unknown_answered_at: Option<usize>,
}

#[derive(Clone, Default)]
struct FakeBorglet(Arc<Mutex<FakeBorgletState>>);

#[tonic::async_trait]
impl BorgletService for FakeBorglet {
    async fn poll(&self, request: Request<PollRequest>) -> Result<Response<PollResponse>, Status> {
        let mut state = self.0.lock().unwrap();
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        state.authorizations.push(authorization);
        let request = request.into_inner();
        let unknown = if request.keyed && !state.unknown_once.is_empty() {
            state.unknown_answered_at = Some(state.polls.len());
            std::mem::take(&mut state.unknown_once)
        } else {
            vec![]
        };
        state.polls.push(request);
        if state.failing {
            return Err(Status::unavailable("the fake borglet is failing"));
        }
        Ok(Response::new(PollResponse {
            machine: state.machine.clone(),
            tasks: state.tasks.clone(),
            keyed_polls: state.keyed_polls,
            unknown,
            ..PollResponse::default()
        }))
    }

    type ReadLogsStream = tonic::codegen::BoxStream<borg_proto::v1::LogChunk>;

    async fn read_logs(
        &self,
        _: Request<borg_proto::v1::ReadLogsRequest>,
    ) -> Result<Response<Self::ReadLogsStream>, Status> {
        Err(Status::unimplemented("the fake borglet keeps no logs"))
    }

    async fn exec(
        &self,
        _: Request<borg_proto::v1::ExecRequest>,
    ) -> Result<Response<borg_proto::v1::ExecResponse>, Status> {
        Err(Status::unimplemented("the fake borglet runs no tasks"))
    }

    type ShellStream = tonic::codegen::BoxStream<borg_proto::v1::ShellOutput>;

    async fn shell(
        &self,
        _: Request<tonic::Streaming<borg_proto::v1::ShellInput>>,
    ) -> Result<Response<Self::ShellStream>, Status> {
        Err(Status::unimplemented("the fake borglet runs no tasks"))
    }
}

impl FakeBorglet {
    fn poll_count(&self) -> usize {
        self.0.lock().unwrap().polls.len()
    }
}

/// Serves `router` on 127.0.0.1:0 until `shutdown`; returns the bound address.
async fn serve(
    router: tonic::transport::server::Router,
    shutdown: CancellationToken,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        router
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown.cancelled_owned()),
    );
    address
}

async fn start_master(master: FakeMaster, shutdown: CancellationToken) -> SocketAddr {
    serve(
        Server::builder().add_service(LinkServiceServer::new(master)),
        shutdown,
    )
    .await
}

async fn start_borglet(borglet: FakeBorglet, shutdown: CancellationToken) -> SocketAddr {
    serve(
        Server::builder().add_service(BorgletServiceServer::new(borglet)),
        shutdown,
    )
    .await
}

fn assigned(job: &str, index: u32, incarnation: u64) -> AssignedTask {
    AssignedTask {
        job: job.into(),
        index,
        incarnation,
        ..AssignedTask::default()
    }
}

fn running(job: &str, index: u32, incarnation: u64, pid: u32) -> TaskReport {
    TaskReport {
        job: job.into(),
        index,
        incarnation,
        state: TaskState::Running as i32,
        pid,
        ..TaskReport::default()
    }
}

fn start_shard(
    master: SocketAddr,
    unreachable_polls_max: u32,
) -> (JoinHandle<()>, CancellationToken) {
    let mut config = LinkShardConfig::new(vec![], 0, 1);
    config.unreachable_polls_max = unreachable_polls_max;
    start_shard_with(master, config)
}

fn start_shard_with(
    master: SocketAddr,
    mut config: LinkShardConfig,
) -> (JoinHandle<()>, CancellationToken) {
    config.masters = vec![master.to_string()];
    config.poll_interval_ms = POLL_INTERVAL_MS;
    spawn_shard(config)
}

/// Runs a shard with `config` (a 2 s poll timeout, named test-shard) until the token is
/// cancelled.
fn spawn_shard(mut config: LinkShardConfig) -> (JoinHandle<()>, CancellationToken) {
    config.poll_timeout_ms = 2_000;
    config.shard_id = "test-shard".into();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let handle = tokio::spawn(async move {
        run(config, token).await.expect("link shard runs");
    });
    (handle, shutdown)
}

async fn stop_shard(handle: JoinHandle<()>, shutdown: CancellationToken) {
    shutdown.cancel();
    tokio::time::timeout(Duration::from_millis(WAIT_DEADLINE_MS), handle)
        .await
        .expect("the link shard stops when cancelled")
        .expect("the link shard task did not panic");
}

/// Polls `condition` until it holds, failing the test at the deadline.
async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(WAIT_DEADLINE_MS);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the borglet has been polled `rounds` more times.
async fn wait_polls(borglet: &FakeBorglet, rounds: usize) {
    let target = borglet.poll_count() + rounds;
    wait_for("more polls", || borglet.poll_count() >= target).await;
}

fn forwards(master: &FakeMaster) -> Vec<ForwardDiffsRequest> {
    master.0.lock().unwrap().forwards.clone()
}

fn diffs_of(master: &FakeMaster, machine: &str) -> Vec<MachineDiff> {
    forwards(master)
        .into_iter()
        .flat_map(|f| f.diffs)
        .filter(|d| d.machine == machine)
        .collect()
}

/// A fake borglet of machine m1 reporting `tasks`, and a fake master assigning m1 `desired`
/// at `version`, both served until `servers` is cancelled; the master's address last.
async fn one_machine(
    servers: &CancellationToken,
    tasks: Vec<TaskReport>,
    desired: Vec<AssignedTask>,
    version: u64,
) -> (FakeBorglet, FakeMaster, SocketAddr) {
    let borglet = FakeBorglet::default();
    {
        let mut state = borglet.0.lock().unwrap();
        state.machine = "m1".into();
        state.tasks = tasks;
    }
    let borglet_address = start_borglet(borglet.clone(), servers.clone()).await;
    let master = FakeMaster::default();
    master.0.lock().unwrap().machines = vec![MachineAssignment {
        machine: "m1".into(),
        address: borglet_address.to_string(),
        desired,
        version,
        ..MachineAssignment::default()
    }];
    let master_address = start_master(master.clone(), servers.clone()).await;
    (borglet, master, master_address)
}

/// A shard whose idle rounds never come within a test's deadline: only early or busy
/// rounds can do what the test waits for.
fn start_idle_paced_shard(
    master: SocketAddr,
    busy_rounds_after_work: u32,
) -> (JoinHandle<()>, CancellationToken) {
    let mut config = LinkShardConfig::new(vec![master.to_string()], 0, 1);
    config.poll_interval_ms = 10 * WAIT_DEADLINE_MS;
    config.busy_rounds_after_work = busy_rounds_after_work;
    spawn_shard(config)
}

#[tokio::test]
async fn an_unchanged_report_is_not_forwarded_and_a_change_is() {
    let servers = CancellationToken::new();
    let (borglet, master, master_address) = one_machine(
        &servers,
        vec![running("web", 0, 1, 100)],
        vec![assigned("web", 0, 1)],
        0,
    )
    .await;
    let (shard, shutdown) = start_shard(master_address, 3);

    // The first report goes out in full, and the poll carried the desired set down.
    wait_for("the first forward", || !forwards(&master).is_empty()).await;
    let first = forwards(&master).remove(0);
    assert_eq!(first.shard_id, "test-shard");
    assert!(!first.request_id.is_empty());
    assert_eq!(first.diffs.len(), 1);
    assert_eq!(first.diffs[0].machine, "m1");
    assert!(!first.diffs[0].unreachable);
    assert_eq!(first.diffs[0].changed, vec![running("web", 0, 1, 100)]);
    {
        let state = borglet.0.lock().unwrap();
        let poll = &state.polls[0];
        assert_eq!(poll.machine, "m1");
        assert_eq!(poll.desired, vec![assigned("web", 0, 1)]);
        assert_eq!(poll.master_index, 42);
    }

    // Unchanged reports: polls go on, forwards do not.
    wait_polls(&borglet, 5).await;
    assert_eq!(
        forwards(&master).len(),
        1,
        "an unchanged report was forwarded"
    );

    // A change (the task restarted with a new pid) is forwarded alone, once.
    let mut restarted = running("web", 0, 1, 200);
    restarted.restarts = 1;
    borglet.0.lock().unwrap().tasks = vec![restarted.clone()];
    wait_for("the change to be forwarded", || {
        forwards(&master).len() >= 2
    })
    .await;
    let second = forwards(&master).remove(1);
    assert_eq!(second.diffs.len(), 1);
    assert_eq!(second.diffs[0].changed, vec![restarted]);
    assert_ne!(second.request_id, first.request_id);
    wait_polls(&borglet, 5).await;
    assert_eq!(forwards(&master).len(), 2, "a change was forwarded twice");

    stop_shard(shard, shutdown).await;
    servers.cancel();
}

#[tokio::test]
async fn held_sets_are_sent_as_keys_and_unknown_keys_get_a_full_poll() {
    let servers = CancellationToken::new();
    let borglet = FakeBorglet::default();
    {
        let mut state = borglet.0.lock().unwrap();
        state.machine = "m1".into();
        state.tasks = vec![running("web", 0, 1, 100)];
        state.keyed_polls = true;
    }
    let borglet_address = start_borglet(borglet.clone(), servers.clone()).await;
    let master = FakeMaster::default();
    master.0.lock().unwrap().machines = vec![MachineAssignment {
        machine: "m1".into(),
        address: borglet_address.to_string(),
        desired: vec![assigned("web", 0, 1)],
        version: 7,
        ..MachineAssignment::default()
    }];
    let master_address = start_master(master.clone(), servers.clone()).await;
    let (shard, shutdown) = start_shard(master_address, 3);
    let web_keys = vec![JobTaskKeys {
        job: "web".into(),
        indices: vec![0],
        incarnations: vec![1],
    }];

    // The first poll is full; once the borglet said it takes keyed polls, keys only.
    wait_polls(&borglet, 3).await;
    {
        let state = borglet.0.lock().unwrap();
        assert!(!state.polls[0].keyed);
        assert_eq!(state.polls[0].desired, vec![assigned("web", 0, 1)]);
        let last = state.polls.last().unwrap();
        assert!(last.keyed);
        assert!(last.desired.is_empty());
        assert_eq!(last.desired_keys, web_keys);
    }
    // The master is told what the shard holds.
    {
        let state = master.0.lock().unwrap();
        assert_eq!(state.last_known.len(), 1);
        assert_eq!(state.last_known[0].machine, "m1");
        assert_eq!(state.last_known[0].version, 7);
        assert_eq!(state.last_known[0].tasks, web_keys);
    }

    // A borglet that lost the task names it unknown: the shard polls again in full at once.
    borglet.0.lock().unwrap().unknown_once = web_keys.clone();
    wait_for("the unknown key to be answered", || {
        borglet.0.lock().unwrap().unknown_answered_at.is_some()
    })
    .await;
    wait_polls(&borglet, 2).await;
    {
        let state = borglet.0.lock().unwrap();
        let answered = state.unknown_answered_at.unwrap();
        let next = &state.polls[answered + 1];
        assert!(!next.keyed);
        assert_eq!(next.desired, vec![assigned("web", 0, 1)]);
    }
    assert_eq!(forwards(&master).len(), 1, "only the first report is news");

    stop_shard(shard, shutdown).await;
    servers.cancel();
}

#[tokio::test]
async fn unreachable_machines_are_forwarded_once_and_their_return_in_full() {
    let servers = CancellationToken::new();
    let borglet = FakeBorglet::default();
    {
        let mut state = borglet.0.lock().unwrap();
        state.machine = "m1".into();
        state.tasks = vec![running("web", 0, 1, 100)];
    }
    let borglet_address = start_borglet(borglet.clone(), servers.clone()).await;
    let master = FakeMaster::default();
    master.0.lock().unwrap().machines = vec![
        MachineAssignment {
            machine: "m1".into(),
            address: borglet_address.to_string(),
            desired: vec![assigned("web", 0, 1)],
            ..MachineAssignment::default()
        },
        // Nothing listens on port 1: every poll is refused.
        MachineAssignment {
            machine: "dead".into(),
            address: "127.0.0.1:1".into(),
            desired: vec![],
            ..MachineAssignment::default()
        },
    ];
    let master_address = start_master(master.clone(), servers.clone()).await;
    let (shard, shutdown) = start_shard(master_address, 3);

    wait_for("m1's first report and dead's unreachable", || {
        !diffs_of(&master, "m1").is_empty() && !diffs_of(&master, "dead").is_empty()
    })
    .await;
    let dead = diffs_of(&master, "dead");
    assert_eq!(dead.len(), 1);
    assert!(dead[0].unreachable);
    assert_eq!(dead[0].unreachable_polls, 3);

    // m1 stops answering: forwarded unreachable once, however many polls fail.
    borglet.0.lock().unwrap().failing = true;
    wait_for("m1 to be forwarded unreachable", || {
        diffs_of(&master, "m1").iter().any(|d| d.unreachable)
    })
    .await;
    wait_polls(&borglet, 5).await;
    let m1 = diffs_of(&master, "m1");
    assert_eq!(m1.iter().filter(|d| d.unreachable).count(), 1, "{m1:?}");
    assert_eq!(
        diffs_of(&master, "dead").len(),
        1,
        "dead was forwarded again"
    );

    // m1 answers again: its full (unchanged) report is forwarded.
    let before = m1.len();
    borglet.0.lock().unwrap().failing = false;
    wait_for("m1's return", || diffs_of(&master, "m1").len() > before).await;
    let back = diffs_of(&master, "m1").remove(before);
    assert!(!back.unreachable);
    assert_eq!(back.changed, vec![running("web", 0, 1, 100)]);

    stop_shard(shard, shutdown).await;
    servers.cancel();
}

#[tokio::test]
async fn refused_diffs_are_sent_again_and_machines_rejoin_in_full() {
    let servers = CancellationToken::new();
    let borglet = FakeBorglet::default();
    {
        let mut state = borglet.0.lock().unwrap();
        state.machine = "m1".into();
        state.tasks = vec![running("web", 0, 1, 100)];
    }
    let borglet_address = start_borglet(borglet.clone(), servers.clone()).await;
    let assignment = MachineAssignment {
        machine: "m1".into(),
        address: borglet_address.to_string(),
        desired: vec![assigned("web", 0, 1)],
        ..MachineAssignment::default()
    };
    let master = FakeMaster::default();
    {
        let mut state = master.0.lock().unwrap();
        state.machines = vec![assignment.clone()];
        state.refuse_forwards = true;
    }
    let master_address = start_master(master.clone(), servers.clone()).await;
    let (shard, shutdown) = start_shard(master_address, 3);

    // While the master refuses, the same diff is offered every round.
    wait_for("two refused forwards", || {
        master.0.lock().unwrap().refused_forwards >= 2
    })
    .await;
    master.0.lock().unwrap().refuse_forwards = false;
    wait_for("the forward to go through", || {
        !forwards(&master).is_empty()
    })
    .await;
    assert_eq!(
        diffs_of(&master, "m1")[0].changed,
        vec![running("web", 0, 1, 100)]
    );

    // The machine leaves the shard (no polls), then comes back: its report is news again.
    let assignment_calls = || master.0.lock().unwrap().assignment_calls;
    master.0.lock().unwrap().machines.clear();
    let calls = assignment_calls();
    wait_for("rounds without m1", || assignment_calls() >= calls + 3).await;
    let polls = borglet.poll_count();
    let calls = assignment_calls();
    wait_for("more rounds without m1", || assignment_calls() >= calls + 3).await;
    assert!(
        borglet.poll_count() <= polls + 1,
        "a machine outside the shard was polled"
    );
    master.0.lock().unwrap().machines = vec![assignment];
    wait_for("m1's report after rejoining", || {
        diffs_of(&master, "m1").len() >= 2
    })
    .await;
    assert_eq!(
        diffs_of(&master, "m1")[1].changed,
        vec![running("web", 0, 1, 100)]
    );

    stop_shard(shard, shutdown).await;
    servers.cancel();
}

#[tokio::test]
async fn diffs_are_forwarded_in_bounded_batches() {
    let servers = CancellationToken::new();
    // One fake borglet answers for both machines (it names no machine in its reports).
    let borglet = FakeBorglet::default();
    borglet.0.lock().unwrap().tasks = vec![running("web", 0, 1, 100)];
    let borglet_address = start_borglet(borglet.clone(), servers.clone()).await;
    let master = FakeMaster::default();
    master.0.lock().unwrap().machines = ["m1", "m2"]
        .into_iter()
        .map(|machine| MachineAssignment {
            machine: machine.into(),
            address: borglet_address.to_string(),
            desired: vec![assigned("web", 0, 1)],
            ..MachineAssignment::default()
        })
        .collect();
    let master_address = start_master(master.clone(), servers.clone()).await;
    let mut config = LinkShardConfig::new(vec![], 0, 1);
    config.forward_batch_machines_max = 1;
    let (shard, shutdown) = start_shard_with(master_address, config);

    wait_for("both first reports", || forwards(&master).len() >= 2).await;
    wait_polls(&borglet, 4).await;
    let sent = forwards(&master);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.iter().all(|f| f.diffs.len() == 1), "{sent:?}");
    let mut machines: Vec<&str> = sent.iter().map(|f| f.diffs[0].machine.as_str()).collect();
    machines.sort();
    assert_eq!(machines, vec!["m1", "m2"]);

    stop_shard(shard, shutdown).await;
    servers.cancel();
}

#[tokio::test]
async fn polls_carry_the_cluster_token() {
    let servers = CancellationToken::new();
    let borglet = FakeBorglet::default();
    borglet.0.lock().unwrap().machine = "m1".into();
    let borglet_address = start_borglet(borglet.clone(), servers.clone()).await;
    let master = FakeMaster::default();
    master.0.lock().unwrap().machines = vec![MachineAssignment {
        machine: "m1".into(),
        address: borglet_address.to_string(),
        desired: vec![],
        ..MachineAssignment::default()
    }];
    let master_address = start_master(master.clone(), servers.clone()).await;
    let mut config = LinkShardConfig::new(vec![], 0, 1);
    config.master_token = Some("cluster-secret".into());
    let (shard, shutdown) = start_shard_with(master_address, config);
    wait_polls(&borglet, 2).await;
    let authorizations = borglet.0.lock().unwrap().authorizations.clone();
    assert!(
        authorizations
            .iter()
            .all(|a| a.as_deref() == Some("Bearer cluster-secret")),
        "{authorizations:?}"
    );
    stop_shard(shard, shutdown).await;
    servers.cancel();
}

#[tokio::test]
async fn an_idle_shard_starts_a_round_as_soon_as_its_assignment_changes() {
    let servers = CancellationToken::new();
    let (borglet, master, master_address) = one_machine(&servers, vec![], vec![], 1).await;
    let (shard, shutdown) = start_idle_paced_shard(master_address, 0);

    wait_for("the shard to wait for changes", || {
        master.0.lock().unwrap().waits > 0
    })
    .await;
    let polls = borglet.poll_count();
    {
        let mut state = master.0.lock().unwrap();
        state.machines[0].version = 2;
        state.machines[0].desired = vec![assigned("web", 0, 1)];
        state.changed.notify_one();
    }
    wait_for("a poll with the new task", || {
        let state = borglet.0.lock().unwrap();
        state.polls[polls..].iter().any(|p| {
            p.desired.contains(&assigned("web", 0, 1))
                || p.desired_keys.iter().any(|k| k.job == "web")
        })
    })
    .await;

    stop_shard(shard, shutdown).await;
    servers.cancel();
}

#[tokio::test]
async fn rounds_keep_the_busy_pace_for_a_while_after_work() {
    let servers = CancellationToken::new();
    let (borglet, master, master_address) = one_machine(
        &servers,
        vec![running("batch", 0, 1, 100)],
        vec![assigned("batch", 0, 1)],
        1,
    )
    .await;
    // Busy rounds linger for about the test's deadline (20 ms apart).
    let linger = u32::try_from(WAIT_DEADLINE_MS / 20).unwrap();
    let (shard, shutdown) = start_idle_paced_shard(master_address, linger);

    wait_for("the running task to be forwarded", || {
        !forwards(&master).is_empty()
    })
    .await;
    let mut ended = running("batch", 0, 1, 100);
    ended.state = TaskState::Succeeded as i32;
    ended.exit_code = Some(0);
    borglet.0.lock().unwrap().tasks = vec![ended.clone()];
    wait_for("the end to be forwarded", || {
        diffs_of(&master, "m1")
            .iter()
            .any(|d| d.changed.contains(&ended))
    })
    .await;

    stop_shard(shard, shutdown).await;
    servers.cancel();
}
