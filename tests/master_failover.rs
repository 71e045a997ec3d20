//! Five master replicas as separate `borg master` processes. A client submits 2,000 jobs with
//! retries while the leader is killed with SIGKILL; every acknowledged job must exist exactly
//! once, at the index it was acknowledged with. Then the old leader rejoins, all five agree on
//! one state hash, and a stop/start of all five keeps every job.

/// `borg master status`, run here against the live replicas.
#[path = "../src/cli/master_status.rs"]
mod master_status;
mod support;

use borg_common::{MasterClient, MasterClientConfig};
use borg_proto::v1;
use borg_proto::v1::cell_service_client::CellServiceClient;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use support::{eventually, replica_status, TestCell};
use tokio::sync::Mutex;

const REPLICAS: usize = 5;
const JOBS: usize = 2_000;
/// Writes in flight at once.
const CLIENT_CONCURRENCY: usize = 16;
/// The leader is killed once this many writes are acknowledged.
const KILL_AFTER_ACKS: usize = 500;
const DEADLINE: Duration = Duration::from_secs(60);

/// The id (1-based) of the replica that leads, once the running ones agree.
async fn leader(cell: &TestCell) -> usize {
    let addresses = cell.master_addresses();
    let token = &cell.cluster_token;
    eventually("an agreed leader", DEADLINE, || {
        let addresses = addresses.clone();
        let running: Vec<usize> = (1..=REPLICAS)
            .filter(|id| cell.masters[id - 1].is_some())
            .collect();
        async move {
            let mut leaders = Vec::new();
            for id in running {
                leaders.push(replica_status(&addresses[id - 1], token).await?.leader_id as usize);
            }
            let first = leaders[0];
            (first != 0 && leaders.iter().all(|l| *l == first)).then_some(first)
        }
    })
    .await
}

/// Waits until every running replica applied the same index with the same state hash.
async fn converged(cell: &TestCell) -> String {
    let addresses = cell.master_addresses();
    let token = &cell.cluster_token;
    eventually("all replicas at one state hash", DEADLINE, || {
        let addresses = addresses.clone();
        async move {
            let mut seen = Vec::new();
            for address in &addresses {
                let s = replica_status(address, token).await?;
                seen.push((s.applied_index, s.state_hash));
            }
            let first = seen[0].clone();
            (!first.1.is_empty() && seen.iter().all(|s| *s == first)).then_some(first.1)
        }
    })
    .await
}

/// Every job of the cell, read through the leader.
async fn jobs(client: &MasterClient) -> Vec<v1::Job> {
    client
        .call(|channel| async move {
            CellServiceClient::new(channel)
                .max_decoding_message_size(64 << 20)
                .list_jobs(v1::ListJobsRequest {
                    consistent: true,
                    owner: String::new(),
                })
                .await
                .map(|r| r.into_inner().jobs)
        })
        .await
        .expect("list jobs")
}

/// Every acknowledged job exists exactly once, created at the acknowledged index.
fn check_acknowledged(acked: &BTreeMap<String, u64>, jobs: &[v1::Job]) {
    let mut by_name: BTreeMap<&str, Vec<&v1::Job>> = BTreeMap::new();
    for job in jobs {
        let name = job.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("");
        by_name.entry(name).or_default().push(job);
    }
    for (name, index) in acked {
        let found = by_name.get(name.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        assert_eq!(
            found.len(),
            1,
            "acknowledged job {name} found {} times",
            found.len()
        );
        assert_eq!(
            found[0].create_index, *index,
            "job {name} acknowledged at index {index} but created at {}",
            found[0].create_index
        );
        assert_eq!(
            found[0].modify_index, *index,
            "job {name} was applied again"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_killed_leader_and_a_full_restart() {
    let mut cell = TestCell::with_masters(REPLICAS);
    cell.wait_for_leader();
    let first_leader = leader(&cell).await;

    let mut config = MasterClientConfig::new(cell.master_addresses());
    config.call_deadline_ms = 30_000;
    config.request_timeout_ms = 5_000;
    config.token = Some(cell.admin_token.clone());
    let client = Arc::new(MasterClient::new(config).unwrap());
    let acked: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..CLIENT_CONCURRENCY {
        let (client, acked, next) = (client.clone(), acked.clone(), next.clone());
        writers.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= JOBS {
                    return;
                }
                let name = format!("fo-{i}");
                let request = v1::SubmitJobRequest {
                    spec: Some(support::tiny_job(&name)),
                    request_id: format!("failover-{i}"),
                    check_index: None,
                };
                // The client retries on the next leader with the same request id.
                let answer = support::submit_job(&client, &request).await;
                if let Ok(response) = answer {
                    acked.lock().await.insert(name, response.index);
                }
            }
        });
    }

    eventually(
        "enough acknowledgements before the kill",
        DEADLINE,
        || async { (acked.lock().await.len() >= KILL_AFTER_ACKS).then_some(()) },
    )
    .await;
    cell.kill_master(first_leader);
    while writers.join_next().await.is_some() {}

    let acked = acked.lock().await.clone();
    assert!(
        acked.len() >= JOBS * 95 / 100,
        "only {} of {JOBS} writes were acknowledged",
        acked.len()
    );
    let new_leader = leader(&cell).await;
    assert_ne!(new_leader, first_leader);
    let all = jobs(&client).await;
    check_acknowledged(&acked, &all);
    assert!(all.len() <= JOBS);

    // The killed leader rejoins and all five converge.
    cell.restart_master(first_leader);
    let hash = converged(&cell).await;
    let admin = Some(cell.admin_token.clone());
    master_status::run(cell.master_addresses(), admin.clone(), false)
        .await
        .unwrap();
    master_status::run(cell.master_addresses(), admin, true)
        .await
        .unwrap();

    // Stop all five (SIGKILL) and start them again on their data directories.
    for id in 1..=REPLICAS {
        cell.kill_master(id);
    }
    for id in 1..=REPLICAS {
        cell.restart_master(id);
    }
    leader(&cell).await;
    let after = converged(&cell).await;
    let all_after = jobs(&client).await;
    check_acknowledged(&acked, &all_after);
    assert_eq!(all_after.len(), all.len());
    // A consistent read appends a barrier, so the hash may move only by that.
    let _ = (hash, after);
}
