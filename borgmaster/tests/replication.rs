//! Three replicas in one process over real gRPC and real RocksDB: leader election, leader
//! hints, replication of writes, restart from the same data directories, watchers, and bad
//! input at the edge.

use borg_proto::v1;
use borg_proto::v1::cell_service_client::CellServiceClient;
use borg_proto::v1::link_service_client::LinkServiceClient;
use borg_proto::v1::replica_service_client::ReplicaServiceClient;
use borg_proto::v1::scheduler_service_client::SchedulerServiceClient;
use std::time::Duration;
use tonic::Code;

mod cluster;

use cluster::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_replicated_forwarded_by_followers_and_survives_a_restart() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let leader_address = cluster.address(leader).to_owned();
    let follower = (1..=3).find(|id| *id != leader).unwrap();

    // A follower forwards a write to the leader and answers once it applied it itself.
    let forwarded = submit_at_leader(
        cluster.address(follower),
        job_spec("forwarded", 1),
        "follower-write",
    )
    .await;
    assert!(forwarded.created);
    assert_eq!(
        forwarded.job.as_ref().unwrap().spec.as_ref().unwrap().name,
        "forwarded"
    );
    // The same request id at the leader is the same write: same outcome, same index.
    let retried =
        submit_at_leader(&leader_address, job_spec("forwarded", 1), "follower-write").await;
    assert_eq!(retried.index, forwarded.index);

    let response = submit_at_leader(&leader_address, job_spec("hello", 2), "submit-1").await;
    assert!(response.created);
    let job = response.job.expect("job in the response");
    assert_eq!(job.tasks.len(), 2);
    assert!(response.index >= 1);

    // Applied on every replica.
    for id in 1..=3 {
        let address = cluster.address(id).to_owned();
        let job = eventually("the job on every replica", || get_job(&address, "hello")).await;
        assert_eq!(job.spec.unwrap().replicas, 2);
    }

    // A retry with the same request id is answered, not applied again, with its index.
    let again = submit_at_leader(&leader_address, job_spec("hello", 2), "submit-1").await;
    assert!(again.created, "a retry answers the first outcome");
    assert_eq!(again.index, response.index);
    assert_eq!(again.job.unwrap().modify_index, job.modify_index);

    // Consistent reads go through the leader.
    let mut follower_client = CellServiceClient::new(channel(cluster.address(follower)));
    let status = follower_client
        .list_jobs(v1::ListJobsRequest {
            consistent: true,
            owner: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let mut leader_client = CellServiceClient::new(channel(&leader_address));
    let listed = leader_client
        .list_jobs(v1::ListJobsRequest {
            consistent: true,
            owner: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.jobs.len(), 2);
    let meta = listed.meta.unwrap();
    assert!(meta.from_leader);
    assert!(meta.applied_index > response.index);

    // Replicas 2 and 3 checkpoint every entry, on a thread of their own: wait until a
    // checkpoint covering the write is durable (a stop does not take one).
    for id in 2..=3 {
        eventually("a checkpoint covering the write", || async {
            let status = cluster.status(id).await?;
            (status.checkpoint_index >= response.index).then_some(())
        })
        .await;
    }
    // Stop all three and start them again on the same data directories.
    cluster.restart().await;
    for id in 1..=3 {
        let address = cluster.address(id).to_owned();
        let job = eventually("the job after a restart", || get_job(&address, "hello")).await;
        assert_eq!(job.tasks.len(), 2);
    }
    // Replicas 2 and 3 restored a checkpoint and replayed the suffix; replica 1 replayed all.
    for id in 1..=3 {
        let mut client = ReplicaServiceClient::new(channel(cluster.address(id)));
        let status = client
            .status(v1::ReplicaStatusRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(status.applied_index > response.index, "{status:?}");
        if id == 1 {
            assert_eq!(status.checkpoint_index, 0, "{status:?}");
        } else {
            assert!(status.checkpoint_index >= response.index, "{status:?}");
        }
    }
    // And the cell keeps working: a new leader takes writes.
    let leader = cluster.wait_for_leader().await;
    let response =
        submit_at_leader(cluster.address(leader), job_spec("world", 1), "submit-2").await;
    assert!(response.created);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_log_entries_but_each_has_its_own_index() {
    const WRITES: usize = 48;
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let address = cluster.address(leader).to_owned();
    submit_at_leader(&address, job_spec("warm-up", 1), "warm-up").await;
    let status = |id: u64| {
        let address = cluster.address(id).to_owned();
        async move {
            ReplicaServiceClient::new(channel(&address))
                .status(v1::ReplicaStatusRequest {
                    with_state_hash: true,
                })
                .await
                .ok()
                .map(|r| r.into_inner())
        }
    };
    let before = status(leader).await.expect("leader status");
    // All at once: the leader's loop puts those that arrive in one pass into one entry.
    let writes = (0..WRITES).map(|i| {
        let address = address.clone();
        tokio::spawn(async move {
            submit_at_leader(&address, job_spec(&format!("c{i}"), 1), &format!("c-{i}")).await
        })
    });
    let mut indices = Vec::new();
    for write in writes {
        let response = write.await.expect("writer task");
        assert!(response.created);
        assert_eq!(response.job.unwrap().modify_index, response.index);
        indices.push(response.index);
    }
    indices.sort_unstable();
    indices.dedup();
    assert_eq!(indices.len(), WRITES, "every write has its own index");
    let after = status(leader).await.expect("leader status");
    let commands = after.applied_index - before.applied_index;
    let entries = after.applied_log_index - before.applied_log_index;
    assert!(commands >= WRITES as u64, "{before:?} {after:?}");
    assert!(entries <= commands, "{before:?} {after:?}");
    // Every replica applies the same entries to the same state.
    let hashes = eventually("equal states on every replica", || async {
        let mut seen = Vec::new();
        for id in 1..=3 {
            let s = status(id).await?;
            (s.applied_log_index == after.applied_log_index).then_some(())?;
            seen.push((s.applied_index, s.state_hash));
        }
        Some(seen)
    })
    .await;
    assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_invalid_argument_and_changes_nothing() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let address = cluster.address(leader).to_owned();
    submit_at_leader(&address, job_spec("keep", 1), "keep-1").await;
    let before = eventually("a readable state", || async {
        let mut client = CellServiceClient::new(channel(&address));
        client
            .list_jobs(v1::ListJobsRequest::default())
            .await
            .ok()
            .map(|r| r.into_inner())
    })
    .await;

    let mut cell = CellServiceClient::new(channel(&address));
    let missing_spec = cell
        .submit_job(v1::SubmitJobRequest {
            spec: None,
            request_id: "bad-1".into(),
            check_index: None,
        })
        .await
        .unwrap_err();
    assert_eq!(missing_spec.code(), Code::InvalidArgument);
    assert!(
        missing_spec.message().contains("spec"),
        "{}",
        missing_spec.message()
    );

    let mut unknown_enum = job_spec("bad", 1);
    unknown_enum.job_type = 42;
    let status = cell
        .submit_job(v1::SubmitJobRequest {
            spec: Some(unknown_enum),
            request_id: "bad-2".into(),
            check_index: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("job_type"),
        "{}",
        status.message()
    );

    let mut no_resources = job_spec("bad", 1);
    no_resources.task.as_mut().unwrap().resources = None;
    let status = cell
        .submit_job(v1::SubmitJobRequest {
            spec: Some(no_resources),
            request_id: "bad-3".into(),
            check_index: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    let mut link = LinkServiceClient::new(channel(&address));
    let status = link
        .forward_diffs(v1::ForwardDiffsRequest {
            shard_id: "s0".into(),
            request_id: "bad-4".into(),
            diffs: vec![v1::MachineDiff {
                machine: "m1".into(),
                changed: vec![v1::TaskReport {
                    job: "keep".into(),
                    state: 77,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    let status = link
        .get_assignment(v1::GetAssignmentRequest {
            shard_index: 3,
            shard_count: 2,
            known: vec![],
            wait_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // check-index mismatch is refused by the state machine with FAILED_PRECONDITION.
    let status = cell
        .submit_job(v1::SubmitJobRequest {
            spec: Some(job_spec("keep", 3)),
            request_id: "bad-5".into(),
            check_index: Some(999),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status}");

    let after = cell
        .list_jobs(v1::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.jobs, before.jobs);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_streams_a_snapshot_then_changes() {
    // Also exercises batched appends (flushed every tick).
    let mut cluster = Cluster::start_with(3, |config| config.append_batch_max = 8).await;
    let leader = cluster.wait_for_leader().await;
    let address = cluster.address(leader).to_owned();
    submit_at_leader(&address, job_spec("first", 1), "first-1").await;

    let mut scheduler = SchedulerServiceClient::new(channel(&address));
    let mut stream = scheduler
        .watch_cell(v1::WatchCellRequest {
            scheduler_id: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let Some(v1::cell_update::Update::Snapshot(snapshot)) = first.update else {
        panic!("first update is not a snapshot: {first:?}");
    };
    assert_eq!(snapshot.jobs.len(), 1);

    let mut link = LinkServiceClient::new(channel(&address));
    link.register_machine(v1::RegisterMachineRequest {
        info: Some(v1::MachineInfo {
            name: "m1".into(),
            address: "127.0.0.1:1".into(),
            capacity: Some(v1::Resources {
                cpu_millis: 4000,
                ram_bytes: 8 << 30,
                ..Default::default()
            }),
            ..Default::default()
        }),
        request_id: "register-m1".into(),
    })
    .await
    .unwrap();
    let next = tokio::time::timeout(Duration::from_millis(WAIT_DEADLINE_MS), stream.message())
        .await
        .expect("a change within the deadline")
        .unwrap()
        .unwrap();
    assert!(next.index > first.index);
    let Some(v1::cell_update::Update::Change(change)) = next.update else {
        panic!("expected a change: {next:?}");
    };
    assert_eq!(change.machines_upserted.len(), 1);
    assert_eq!(
        change.machines_upserted[0].info.as_ref().unwrap().name,
        "m1"
    );

    // Events are streamed by any replica, from an index on, then as they are committed.
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let follower_address = cluster.address(follower).to_owned();
    eventually("the job on the follower", || {
        get_job(&follower_address, "first")
    })
    .await;
    let mut cell = CellServiceClient::new(channel(&follower_address));
    let mut events = cell
        .stream_events(v1::StreamEventsRequest {
            from_index: 0,
            job: "first".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let event = events.message().await.unwrap().unwrap();
    assert_eq!(event.job, "first");
    let mut leader_cell = CellServiceClient::new(channel(&address));
    leader_cell
        .kill_job(v1::KillJobRequest {
            name: "first".into(),
            request_id: "kill-first".into(),
        })
        .await
        .unwrap();
    // Every event up to and including the kill arrives, in order, without another request.
    let mut last_index = event.index;
    let later = loop {
        let next = tokio::time::timeout(Duration::from_millis(WAIT_DEADLINE_MS), events.message())
            .await
            .expect("the kill event within the deadline")
            .unwrap()
            .unwrap();
        assert!(next.index > last_index);
        last_index = next.index;
        if next.kind == "job_killed" {
            break next;
        }
    };
    assert_eq!(later.job, "first");

    // Followers do not serve the cell stream.
    let mut follower_scheduler = SchedulerServiceClient::new(channel(cluster.address(follower)));
    let status = follower_scheduler
        .watch_cell(v1::WatchCellRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_takes_over_and_a_leader_without_quorum_times_out() {
    let mut cluster = Cluster::start_with(3, |config| config.proposal_timeout_ms = 500).await;
    let first_leader = cluster.wait_for_leader().await;
    submit_at_leader(
        cluster.address(first_leader),
        job_spec("before", 1),
        "before-1",
    )
    .await;

    cluster.stop_one(first_leader).await;
    let leader = cluster.wait_for_leader().await;
    assert_ne!(leader, first_leader);
    submit_at_leader(cluster.address(leader), job_spec("after", 1), "after-1").await;
    let survivor = (1..=3)
        .find(|id| *id != leader && *id != first_leader)
        .unwrap();
    let survivor_address = cluster.address(survivor).to_owned();
    for name in ["before", "after"] {
        eventually("both jobs on the survivor", || {
            get_job(&survivor_address, name)
        })
        .await;
    }

    // Alone, the leader cannot decide anything: the write is answered UNAVAILABLE in time.
    cluster.stop_one(survivor).await;
    let mut client = CellServiceClient::new(channel(cluster.address(leader)));
    let started = std::time::Instant::now();
    let status = client
        .submit_job(v1::SubmitJobRequest {
            spec: Some(job_spec("lonely", 1)),
            request_id: "lonely-1".into(),
            check_index: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(get_job(cluster.address(leader), "lonely").await.is_none());
    cluster.stop().await;
}

/// `ReplicaService` with authentication on: the replicas elect, replicate and forward with
/// the cluster token; a caller without it is refused UNAUTHENTICATED (a user token is refused
/// PERMISSION_DENIED, except for `Status` with an admin's) and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_calls_need_the_cluster_token() {
    use borg_common::master_client::TokenInterceptor;
    use borgmaster::state::{Command, LogEntry};

    let mut cluster = Cluster::start_authenticated(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let auth_dir = cluster.auth_dir.as_ref().unwrap().path().to_owned();
    let admin = borg_common::auth::read_token_file(&auth_dir.join("admin.token")).unwrap();
    let with_token = |id: u64, token: Option<&str>| {
        let token = TokenInterceptor::new(token).unwrap();
        (
            ReplicaServiceClient::with_interceptor(channel(cluster.address(id)), token.clone()),
            CellServiceClient::with_interceptor(channel(cluster.address(id)), token),
        )
    };
    // An admin's write at a follower is forwarded to the leader (with the cluster token).
    let create_token = |id: u64, name: &str| {
        let (_, mut cell) = with_token(id, Some(&admin));
        let request = v1::CreateTokenRequest {
            user: name.into(),
            admin: false,
            token_sha256: borg_common::auth::token_hash(name),
            request_id: name.into(),
        };
        async move { cell.create_token(request).await }
    };
    eventually("a forwarded write", || async {
        create_token(follower, "forwarded").await.ok()
    })
    .await;
    let converged = || async {
        let mut seen = Vec::new();
        for id in 1..=3 {
            let s = cluster.status(id).await?;
            seen.push((s.applied_index, s.state_hash));
        }
        seen.windows(2)
            .all(|w| w[0] == w[1])
            .then(|| seen[0].clone())
    };
    let before = eventually("equal states", converged).await;

    let noop = bincode::serialize(&LogEntry {
        request_id: "intruder".into(),
        time_ms: 0,
        command: Command::Noop,
    })
    .unwrap();
    for token in [None, Some("not-a-token")] {
        for id in [leader, follower] {
            let (mut client, _) = with_token(id, token);
            let refusals = [
                client
                    .deliver(v1::DeliverRequest {
                        from: follower,
                        messages: vec![vec![0; 8]],
                    })
                    .await
                    .map(drop),
                client
                    .forward(v1::ForwardRequest {
                        from: follower,
                        entry: noop.clone(),
                    })
                    .await
                    .map(drop),
                client
                    .deliver_stream(delivery_stream(Some(follower)))
                    .await
                    .map(drop),
                client
                    .fetch_checkpoint(v1::FetchCheckpointRequest {})
                    .await
                    .map(drop),
                client
                    .status(v1::ReplicaStatusRequest::default())
                    .await
                    .map(drop),
                client
                    .set_peer_filter(v1::SetPeerFilterRequest {
                        blocked: vec![1, 2, 3],
                    })
                    .await
                    .map(drop),
            ];
            for (call, refusal) in refusals.into_iter().enumerate() {
                let status = refusal.expect_err("refused without the cluster token");
                assert_eq!(
                    status.code(),
                    Code::Unauthenticated,
                    "call {call}: {status}"
                );
            }
        }
    }
    // With the cluster token, a delivery stream must still name a peer when it opens.
    let mut peer = cluster.replica_client(leader);
    for (from, code) in [
        (None, Code::InvalidArgument),
        (Some(leader), Code::PermissionDenied),
        (Some(99), Code::PermissionDenied),
    ] {
        let status = peer
            .deliver_stream(delivery_stream(from))
            .await
            .expect_err("a stream from no peer is refused when it opens");
        assert_eq!(status.code(), code, "from {from:?}: {status}");
    }
    // A user's (even an admin's) token is not a replica's; an admin may read Status.
    let (mut client, _) = with_token(leader, Some(&admin));
    let status = client
        .set_peer_filter(v1::SetPeerFilterRequest {
            blocked: vec![1, 2, 3],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status}");
    let status = client
        .forward(v1::ForwardRequest {
            from: follower,
            entry: noop.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status}");
    assert!(client
        .status(v1::ReplicaStatusRequest::default())
        .await
        .is_ok());

    // Nothing changed: no entry was added, and the refused filter cuts nobody off (a write
    // reaches all three).
    assert_eq!(eventually("equal states", converged).await, before);
    eventually("a write at the leader", || async {
        create_token(leader, "after").await.ok()
    })
    .await;
    let after = eventually("equal states", converged).await;
    assert!(after.0 > before.0, "{before:?} {after:?}");

    // With the cluster token the hook works: the leader cut off from both peers cannot commit.
    let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    cluster.set_peer_filter(leader, others.clone()).await;
    for id in &others {
        cluster.set_peer_filter(*id, vec![leader]).await;
    }
    let (_, mut cell) = with_token(leader, Some(&admin));
    let mut request = tonic::Request::new(v1::CreateTokenRequest {
        user: "cut-off".into(),
        admin: false,
        token_sha256: borg_common::auth::token_hash("cut-off"),
        request_id: "cut-off".into(),
    });
    request.set_timeout(Duration::from_millis(1_000));
    assert!(cell.create_token(request).await.is_err());
    for id in 1..=3 {
        cluster.set_peer_filter(id, vec![]).await;
    }
    cluster.stop().await;
}

/// A `DeliverStream` request with one garbage message, naming `from` in its header (if any).
fn delivery_stream(
    from: Option<u64>,
) -> tonic::Request<tokio_stream::Iter<std::vec::IntoIter<v1::DeliverRequest>>> {
    let batch = v1::DeliverRequest {
        from: from.unwrap_or(0),
        messages: vec![vec![0; 8]],
    };
    let mut request = tonic::Request::new(tokio_stream::iter(vec![batch]));
    if let Some(from) = from {
        request.metadata_mut().insert(
            borgmaster::services::replica::DELIVER_STREAM_FROM_HEADER,
            tonic::metadata::MetadataValue::from(from),
        );
    }
    request
}

fn slow_fsync(config: &mut borgmaster::ReplicaConfig) {
    config.fault_fsync_stall_ms = 100;
}

/// While the leader's fsync is in flight it gathers the writes that arrive and appends them
/// as one entry when the sync ends (appended earlier they would wait for the next sync
/// anyway), so a burst of writes during a slow sync costs a few entries, not one each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_arriving_during_the_leaders_fsync_share_one_entry() {
    const WRITES: usize = 32;
    let mut cluster = Cluster::start_with(3, slow_fsync).await;
    let leader = cluster.wait_for_leader().await;
    let address = cluster.address(leader).to_owned();
    submit_at_leader(&address, job_spec("warm-up", 1), "warm-up").await;
    let mut client = ReplicaServiceClient::new(channel(&address));
    let before = client
        .status(v1::ReplicaStatusRequest::default())
        .await
        .expect("leader status")
        .into_inner();
    let writes: Vec<_> = (0..WRITES)
        .map(|i| {
            let address = address.clone();
            tokio::spawn(async move {
                submit_at_leader(&address, job_spec(&format!("s{i}"), 1), &format!("s-{i}")).await
            })
        })
        .collect();
    for write in writes {
        assert!(write.await.expect("writer task").created);
    }
    let after = client
        .status(v1::ReplicaStatusRequest::default())
        .await
        .expect("leader status")
        .into_inner();
    let commands = after.applied_index - before.applied_index;
    let entries = after.applied_log_index - before.applied_log_index;
    assert!(commands >= WRITES as u64, "{before:?} {after:?}");
    // Each 100 ms sync gathers what arrived meanwhile: one entry per write would be 32.
    assert!(
        entries * 4 <= commands,
        "{commands} writes in {entries} entries: {before:?} {after:?}"
    );
    cluster.stop().await;
}
