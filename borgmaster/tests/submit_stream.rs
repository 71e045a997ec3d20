//! `CellService.SubmitJobs`: many submits on one stream, each answered by its request id once
//! committed or refused, at the leader or through a follower, with the same admission as
//! `SubmitJob`. Three replicas in one process over real gRPC and RocksDB.

use borg_common::master_client::{MasterChannel, SubmitStream, TokenInterceptor};
use borg_proto::v1;
use borg_proto::v1::cell_service_client::CellServiceClient;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

mod cluster;

use cluster::*;

/// How long a test waits for one write's answer on a stream.
const REPLY_TIMEOUT_MS: u64 = 10_000;

fn request(spec: v1::JobSpec, request_id: &str) -> v1::SubmitJobRequest {
    v1::SubmitJobRequest {
        spec: Some(spec),
        request_id: request_id.into(),
        check_index: None,
    }
}

fn master_channel(address: &str, token: Option<&str>) -> MasterChannel {
    tonic::service::interceptor::InterceptedService::new(
        channel(address),
        TokenInterceptor::new(token).unwrap(),
    )
}

/// A stream opened at `address` once that replica takes it (a leader that is still settling
/// may refuse writes: those come back as replies, so the first write is retried).
async fn open_stream(address: &str, token: Option<&str>) -> SubmitStream {
    let stream = SubmitStream::open(
        master_channel(address, token),
        64,
        Duration::from_millis(REPLY_TIMEOUT_MS),
    )
    .await
    .unwrap();
    // In the free band: no quota needed, whoever owns it.
    let mut ready = job_spec("stream-ready", 1);
    ready.priority = 50;
    eventually("the cell to take a write on the stream", || async {
        match stream.submit(request(ready.clone(), "stream-ready")).await {
            Ok(_) => Some(()),
            Err(status) if status.code() == Code::Unavailable => None,
            Err(status) => panic!("first write on the stream refused: {status}"),
        }
    })
    .await;
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_writes_on_one_stream_are_answered_by_id_and_refusals_do_not_end_it() {
    const WRITES: usize = 200;
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let address = cluster.address(leader).to_owned();
    let first = submit_at_leader(&address, job_spec("warm-up", 1), "warm-up").await;
    let mut updated = job_spec("warm-up", 1);
    updated.task.as_mut().unwrap().args = vec!["200".into()];
    submit_at_leader(&address, updated, "warm-up-2").await;

    // The raw stream: every request is sent before any answer is read.
    let (sender, outgoing) = tokio::sync::mpsc::channel(WRITES + 8);
    let mut replies = CellServiceClient::new(channel(&address))
        .submit_jobs(ReceiverStream::new(outgoing))
        .await
        .unwrap()
        .into_inner();
    for i in 0..WRITES {
        let spec = job_spec(&format!("s{}", i % 50), 1 + (i / 50) as u32);
        sender.send(request(spec, &format!("s-{i}"))).await.unwrap();
    }
    // Refused ones on the same stream: a spec without a task, and a stale check_index.
    let mut no_task = job_spec("no-task", 1);
    no_task.task = None;
    sender.send(request(no_task, "bad-spec")).await.unwrap();
    let mut stale = request(job_spec("warm-up", 2), "stale");
    stale.check_index = Some(first.index);
    sender.send(stale).await.unwrap();
    // And a write after them, which must still be answered.
    sender
        .send(request(job_spec("after", 1), "after"))
        .await
        .unwrap();

    let mut answered: HashMap<String, v1::SubmitJobsReply> = HashMap::new();
    while answered.len() < WRITES + 3 {
        let reply =
            tokio::time::timeout(Duration::from_millis(WAIT_DEADLINE_MS), replies.message())
                .await
                .expect("a reply within the deadline")
                .expect("the stream does not fail")
                .expect("the stream stays open while requests are outstanding");
        let id = reply.request_id.clone();
        assert!(
            answered.insert(id.clone(), reply).is_none(),
            "{id} answered twice"
        );
    }
    let mut indices = HashSet::new();
    for i in 0..WRITES {
        let reply = &answered[&format!("s-{i}")];
        assert_eq!(reply.code, Code::Ok as i32, "{reply:?}");
        assert!(indices.insert(reply.index), "index {} twice", reply.index);
    }
    // Requests of one stream are handled concurrently, so a job's four writes may commit
    // in any order: the first committed created the job, the last committed is its spec.
    for j in 0..50 {
        let mut writes: Vec<(u64, bool, u32)> = (0..4)
            .map(|k| {
                let reply = &answered[&format!("s-{}", j + 50 * k)];
                (reply.index, reply.created, 1 + k as u32)
            })
            .collect();
        writes.sort_unstable();
        let created: Vec<bool> = writes.iter().map(|w| w.1).collect();
        assert_eq!(created, [true, false, false, false], "job s{j}: {writes:?}");
        if j % 16 == 0 {
            let job = get_job(&address, &format!("s{j}")).await.expect("job");
            assert_eq!(job.spec.unwrap().replicas, writes[3].2, "job s{j}");
            assert_eq!(job.modify_index, writes[3].0, "job s{j}");
        }
    }
    let bad = &answered["bad-spec"];
    assert_eq!(bad.code, Code::InvalidArgument as i32, "{bad:?}");
    assert!(!bad.message.is_empty());
    let stale = &answered["stale"];
    assert_eq!(stale.code, Code::FailedPrecondition as i32, "{stale:?}");
    assert!(stale.message.contains("index"), "{stale:?}");
    assert_eq!(answered["after"].code, Code::Ok as i32);

    assert!(get_job(&address, "no-task").await.is_none());
    let warm_up = get_job(&address, "warm-up").await.unwrap().spec.unwrap();
    assert_eq!(warm_up.replicas, 1, "the stale write changed nothing");

    // Closing the request side ends the reply stream once everything is answered.
    drop(sender);
    let end = tokio::time::timeout(Duration::from_millis(WAIT_DEADLINE_MS), replies.message())
        .await
        .expect("the stream ends")
        .expect("cleanly");
    assert!(end.is_none());
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_id_is_applied_once() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let address = cluster.address(leader).to_owned();
    let stream = open_stream(&address, None).await;

    let first = stream
        .submit(request(job_spec("once", 1), "once-1"))
        .await
        .unwrap();
    assert!(first.created);
    // The same id again (a client's retry) carries a different spec: it is answered with
    // the first outcome and not applied.
    let retry = stream
        .submit(request(job_spec("once", 3), "once-1"))
        .await
        .unwrap();
    assert_eq!(retry.index, first.index);
    assert!(retry.created);
    // On a second stream, and as a unary call, it is the same write too.
    let other = open_stream(&address, None).await;
    let again = other
        .submit(request(job_spec("once", 3), "once-1"))
        .await
        .unwrap();
    assert_eq!(again.index, first.index);
    let unary = submit_at_leader(&address, job_spec("once", 3), "once-1").await;
    assert_eq!(unary.index, first.index);
    let job = get_job(&address, "once").await.unwrap();
    assert_eq!(job.spec.unwrap().replicas, 1);
    assert_eq!(job.modify_index, first.index);

    // Two writes with one id cannot be in flight on one stream at once: the client refuses
    // the second, since answers are matched by id.
    let (a, b) = tokio::join!(
        stream.submit(request(job_spec("twin", 1), "twin")),
        stream.submit(request(job_spec("twin", 1), "twin")),
    );
    let codes = [
        a.as_ref().map(|_| Code::Ok).unwrap_or_else(|s| s.code()),
        b.as_ref().map(|_| Code::Ok).unwrap_or_else(|s| s.code()),
    ];
    assert!(codes.contains(&Code::Ok), "{a:?} {b:?}");
    assert!(
        codes
            .iter()
            .all(|c| matches!(c, Code::Ok | Code::InvalidArgument)),
        "{a:?} {b:?}"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_at_a_follower_reaches_the_leader() {
    const WRITES: usize = 64;
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let address = cluster.address(follower).to_owned();
    let stream = std::sync::Arc::new(open_stream(&address, None).await);

    // Many writers share the stream, each with one write outstanding at a time.
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let stream = stream.clone();
        writers.spawn(async move {
            let mut indices = Vec::new();
            for n in 0..WRITES / 8 {
                let name = format!("f{w}-{n}");
                let reply = stream
                    .submit(request(job_spec(&name, 1), &name))
                    .await
                    .unwrap_or_else(|status| panic!("{name}: {status}"));
                assert!(reply.created);
                indices.push(reply.index);
            }
            indices
        });
    }
    let mut indices = HashSet::new();
    while let Some(done) = writers.join_next().await {
        for index in done.unwrap() {
            assert!(indices.insert(index), "index {index} twice");
        }
    }
    assert_eq!(indices.len(), WRITES);
    // A forwarded write is answered once the follower applied it: readable there at once.
    for name in ["f0-0", "f7-7", "f3-5"] {
        assert!(
            get_job(&address, name).await.is_some(),
            "{name} not yet at the follower"
        );
    }
    drop(stream);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_needs_a_token_and_users_are_admitted_as_for_submit_job() {
    let mut cluster = Cluster::start_authenticated(3).await;
    let leader = cluster.wait_for_leader().await;
    let address = cluster.address(leader).to_owned();
    let auth_dir = cluster.auth_dir.as_ref().unwrap().path().to_owned();
    let admin = borg_common::auth::read_token_file(&auth_dir.join("admin.token")).unwrap();

    // Without a token the stream is refused when it opens, as SubmitJob is.
    let unauthenticated = SubmitStream::open(
        master_channel(&address, None),
        8,
        Duration::from_millis(REPLY_TIMEOUT_MS),
    )
    .await
    .err()
    .expect("refused without a token");
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
    let unary = CellServiceClient::new(channel(&address))
        .submit_job(request(job_spec("x", 1), "x"))
        .await
        .unwrap_err();
    assert_eq!(unary.code(), unauthenticated.code());

    // The admin registers bob and gives him a small batch quota.
    let admin_stream = open_stream(&address, Some(&admin)).await;
    let mut cell = CellServiceClient::with_interceptor(
        channel(&address),
        TokenInterceptor::new(Some(&admin)).unwrap(),
    );
    let bob = "bob-secret-token";
    cell.create_token(v1::CreateTokenRequest {
        user: "bob".into(),
        admin: false,
        token_sha256: borg_common::auth::token_hash(bob),
        request_id: "bob-token".into(),
    })
    .await
    .unwrap();
    cell.set_quota(v1::SetQuotaRequest {
        user: "bob".into(),
        band: "batch".into(),
        limit: Some(v1::Resources {
            cpu_millis: 150,
            ram_bytes: 1 << 30,
            ..Default::default()
        }),
        request_id: "bob-quota".into(),
    })
    .await
    .unwrap();
    // Every replica knows bob's token once it applied it; the leader has.
    let stream = eventually("bob's token to be known", || async {
        SubmitStream::open(
            master_channel(&address, Some(bob)),
            8,
            Duration::from_millis(REPLY_TIMEOUT_MS),
        )
        .await
        .ok()
    })
    .await;

    let owned_by = |owner: &str, name: &str, priority: u32| {
        let mut spec = job_spec(name, 1);
        spec.owner = owner.into();
        spec.priority = priority;
        spec
    };
    // Each refusal comes back with SubmitJob's code and a message, and the stream goes on.
    let cases = [
        (
            owned_by("alice", "alices", 50),
            Code::PermissionDenied,
            "owned by someone else",
        ),
        (
            owned_by("bob", "prod", 200),
            Code::PermissionDenied,
            "production",
        ),
        (
            owned_by("bob", "big", 100),
            Code::ResourceExhausted,
            "quota",
        ),
    ];
    for (spec, code, words) in cases {
        let mut spec = spec;
        if spec.name == "big" {
            spec.replicas = 2; // 200 millicores against a quota of 150
        }
        let name = spec.name.clone();
        let status = stream
            .submit(request(spec, &format!("bob-{name}")))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code, "{name}: {status}");
        assert!(status.message().contains(words), "{name}: {status}");
    }
    // Within quota, and in the free band (no quota needed), bob's writes commit; a job
    // without an owner is his.
    let fits = stream
        .submit(request(owned_by("bob", "small", 100), "bob-small"))
        .await
        .unwrap();
    assert!(fits.created);
    let free = stream
        .submit(request(owned_by("", "free", 50), "bob-free"))
        .await
        .unwrap();
    assert!(free.created);
    let free_job = cell
        .get_job(v1::GetJobRequest {
            name: "free".into(),
            consistent: false,
            summary: false,
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(free_job.spec.unwrap().owner, "bob");
    // The admin may submit for anyone.
    admin_stream
        .submit(request(owned_by("alice", "alices", 50), "admin-alice"))
        .await
        .unwrap();
    cluster.stop().await;
}
