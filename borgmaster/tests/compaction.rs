//! Five replicas in one process over real gRPC and RocksDB: checkpoints trim the log, a
//! restart recovers from checkpoints, a replica that lost its disk catches up by snapshot
//! transfer, a corrupt checkpoint is refused, and a partitioned minority converges to the
//! same state hash after healing.

mod cluster;

use borg_proto::v1;
use borg_proto::v1::cell_service_client::CellServiceClient;
use borgmaster::storage::{Checkpoint, ReplicaDb, StorageError};
use cluster::*;
use tonic::Code;

/// Checkpoint (and trim) every few entries so a short test crosses several.
const CHECKPOINT_EVERY_ENTRIES: u64 = 5;

fn small_checkpoints(config: &mut borgmaster::ReplicaConfig) {
    config.checkpoint_every_entries = CHECKPOINT_EVERY_ENTRIES;
    config.bootstrap_fetch_timeout_ms = 2_000;
    config.trim_lag_max_entries = 10;
}

async fn submit_jobs(cluster: &Cluster, prefix: &str, count: usize) -> u64 {
    let mut last = 0;
    for i in 0..count {
        let leader = cluster.wait_for_leader().await;
        let name = format!("{prefix}-{i}");
        let response = submit_at_leader(
            cluster.address(leader),
            job_spec(&name, 1),
            &format!("{name}-req"),
        )
        .await;
        last = response.index;
    }
    last
}

/// Waits until every running replica applied at least `index` and reports equal state hashes.
async fn wait_converged(cluster: &Cluster, index: u64) -> Vec<v1::ReplicaStatus> {
    eventually("every replica at the same state", || async {
        let mut statuses = Vec::new();
        for id in cluster.replicas.keys() {
            statuses.push(cluster.status(*id).await?);
        }
        let first = &statuses[0];
        let same = statuses.iter().all(|s| {
            s.applied_index >= index
                && s.applied_index == first.applied_index
                && s.state_hash == first.state_hash
        });
        same.then_some(statuses)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_trim_the_log_and_a_restart_recovers_from_them() {
    let mut cluster = Cluster::start_with(5, small_checkpoints).await;
    let last = submit_jobs(&cluster, "job", 30).await;
    let statuses = wait_converged(&cluster, last).await;
    // Every replica checkpointed and trimmed below its checkpoint, never above it.
    let trimmed = eventually("the log trimmed on every replica", || async {
        let mut all = Vec::new();
        for id in 1..=5 {
            let s = cluster.status(id).await?;
            (s.compacted_index > 0 && s.compacted_index <= s.checkpoint_index).then_some(())?;
            all.push(s);
        }
        Some(all)
    })
    .await;
    assert_eq!(trimmed.len(), 5);

    // Stop all five and start them again: recovered from checkpoint + the log suffix.
    cluster.restart().await;
    let after = wait_converged(&cluster, last).await;
    assert_eq!(after[0].state_hash, statuses[0].state_hash);
    for status in &after {
        assert!(status.checkpoint_index > 0, "{status:?}");
    }
    for i in [0, 17, 29] {
        let name = format!("job-{i}");
        assert!(get_job(cluster.address(3), &name).await.is_some(), "{name}");
    }
    // And takes new writes.
    let more = submit_jobs(&cluster, "after", 3).await;
    assert!(more > last);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_behind_the_trim_point_or_without_a_disk_catch_up_from_a_checkpoint() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut cluster = Cluster::start_with(5, small_checkpoints).await;
    let leader = cluster.wait_for_leader().await;
    let mut followers = (1..=5).filter(|id| *id != leader);
    let lost = followers.next().unwrap();
    let behind = followers.next().unwrap();
    let first = submit_jobs(&cluster, "early", 12).await;
    wait_converged(&cluster, first).await;

    // One replica loses its disk, another is down, while the cell goes on and trims past
    // both (more than `trim_lag_max_entries`).
    cluster.stop_one(lost).await;
    cluster.wipe(lost);
    cluster.stop_one(behind).await;
    let last = submit_jobs(&cluster, "late", 20).await;
    eventually("the leader trimmed past the lost replica's log", || async {
        let leader = cluster.wait_for_leader().await;
        let s = cluster.status(leader).await?;
        (s.compacted_index > first).then_some(())
    })
    .await;

    cluster.start_one(lost).await;
    cluster.start_one(behind).await;
    let statuses = wait_converged(&cluster, last).await;
    for id in [lost, behind] {
        let rejoined = statuses.iter().find(|s| s.id == id).unwrap();
        assert!(rejoined.checkpoint_index > first, "{rejoined:?}");
        assert!(get_job(cluster.address(id), "early-0").await.is_some());
        assert!(get_job(cluster.address(id), "late-19").await.is_some());
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_failing_its_checksum_is_refused() {
    let mut cluster = Cluster::start_with(3, small_checkpoints).await;
    let last = submit_jobs(&cluster, "job", 8).await;
    wait_converged(&cluster, last).await;
    cluster.stop_one(2).await;

    // Flip a byte of replica 2's checkpoint behind its back.
    let dir = cluster.data_dir(2);
    {
        let db = ReplicaDb::open(&dir).unwrap();
        let good = db.load_checkpoint().unwrap().expect("a checkpoint");
        let mut bad = Checkpoint::new(good.index, good.time_ms, good.state.clone());
        bad.sha256 = good.sha256;
        bad.state[0] ^= 0xff;
        db.save_checkpoint(&bad).unwrap();
    }
    let mut config = cluster.config(2);
    config.peers = cluster.addresses.clone();
    let listener = tokio::net::TcpListener::bind(cluster.address(2))
        .await
        .unwrap();
    let error = borgmaster::run_with_listener(config, listener, Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            borgmaster::MasterError::Storage(StorageError::CheckpointChecksum { .. })
        ),
        "{error}"
    );
    assert!(error.to_string().contains("checksum"), "{error}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_minority_refuses_writes_and_converges_after_healing() {
    let mut cluster = Cluster::start_with(5, |config| {
        small_checkpoints(config);
        config.proposal_timeout_ms = 1_000;
    })
    .await;
    let leader = cluster.wait_for_leader().await;
    let before = submit_jobs(&cluster, "before", 5).await;
    wait_converged(&cluster, before).await;

    // The old leader and one follower are cut off from the other three.
    let minority = [leader, (1..=5).find(|id| *id != leader).unwrap()];
    let majority: Vec<u64> = (1..=5).filter(|id| !minority.contains(id)).collect();
    for id in 1..=5u64 {
        let blocked = if minority.contains(&id) {
            majority.clone()
        } else {
            minority.to_vec()
        };
        cluster.set_peer_filter(id, blocked).await;
    }

    // The minority cannot decide a write.
    let mut client = CellServiceClient::new(channel(cluster.address(minority[0])));
    let refused = client
        .submit_job(v1::SubmitJobRequest {
            spec: Some(job_spec("minority", 1)),
            request_id: "minority-1".into(),
            check_index: None,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(refused.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{refused}"
    );

    // The majority elects a leader and goes on.
    let new_leader = eventually("a leader in the majority", || async {
        let s = cluster.status(majority[0]).await?;
        (s.leader_id != 0 && majority.contains(&s.leader_id)).then_some(s.leader_id)
    })
    .await;
    let mut last = 0;
    for i in 0..10 {
        let name = format!("during-{i}");
        last = submit_at_leader(cluster.address(new_leader), job_spec(&name, 1), &name)
            .await
            .index;
    }

    // Heal: all five converge to one state, the minority's write nowhere.
    for id in 1..=5 {
        cluster.set_peer_filter(id, Vec::new()).await;
    }
    let statuses = wait_converged(&cluster, last).await;
    assert_eq!(statuses.len(), 5);
    assert!(!statuses[0].state_hash.is_empty());
    for id in 1..=5 {
        let address = cluster.address(id).to_owned();
        eventually("the majority's writes everywhere", || {
            get_job(&address, "during-9")
        })
        .await;
    }
    for id in 1..=5 {
        assert!(get_job(cluster.address(id), "minority").await.is_none());
    }
    cluster.stop().await;
}
