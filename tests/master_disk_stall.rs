//! Five master replicas as separate `borg master` processes whose disks stall: fault injection
//! (`BORG_FAULT_FSYNC_STALL_MS`) makes every fsync of every replica's log, the leader's
//! included, take `STALL_MS` longer than the election timeout (10 ticks of 10 ms). Writes go on
//! for `WRITING` and the leader must not change: the replicas' fsyncs run off their Paxos
//! loops, so heartbeats keep flowing while the disk stalls.

mod support;

use borg_common::{MasterClient, MasterClientConfig};
use borg_proto::v1;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{eventually, replica_status, TestCell};

const REPLICAS: usize = 5;
/// Added to every fsync; longer than the election timeout (100 ms), shorter than a write's
/// deadline.
const STALL_MS: u64 = 150;
/// How long writers keep writing while the disks stall.
const WRITING: Duration = Duration::from_secs(6);
const WRITERS: usize = 8;
/// Writes that must commit meanwhile (a few per stall: the cell is slow, not stopped).
const WRITES_MIN: u64 = 10;
const DEADLINE: Duration = Duration::from_secs(60);

/// The leader every replica names, and the leader changes they have seen in all, once all
/// five answer and agree.
async fn leadership(cell: &TestCell) -> (u64, u64) {
    let addresses = cell.master_addresses();
    let token = &cell.cluster_token;
    eventually("all replicas naming one leader", DEADLINE, || {
        let addresses = addresses.clone();
        async move {
            let mut leaders = Vec::new();
            let mut changes = 0;
            for address in &addresses {
                let status = replica_status(address, token).await?;
                leaders.push(status.leader_id);
                changes += status.leader_changes;
            }
            let first = leaders[0];
            (first != 0 && leaders.iter().all(|l| *l == first)).then_some((first, changes))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalling_disk_does_not_change_the_leader_while_writes_flow() {
    // Read by every replica this test starts (this test is alone in its binary, so no other
    // test's processes see it).
    std::env::set_var(
        borgmaster::config::FAULT_FSYNC_STALL_ENV,
        STALL_MS.to_string(),
    );
    let cell = TestCell::with_masters(REPLICAS);
    // Grants the admin its quota (the jobs are in the batch band) through the first leader.
    cell.wait_for_leader();
    let (leader_before, changes_before) = leadership(&cell).await;

    let mut config = MasterClientConfig::new(cell.master_addresses());
    config.call_deadline_ms = 20_000;
    config.request_timeout_ms = 5_000;
    config.token = Some(cell.admin_token.clone());
    let client = Arc::new(MasterClient::new(config).expect("master client"));
    let committed = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + WRITING;
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let (client, committed) = (client.clone(), committed.clone());
        writers.spawn(async move {
            let mut n = 0;
            while Instant::now() < stop {
                let request = v1::SubmitJobRequest {
                    spec: Some(support::tiny_job(&format!("stall-{w}-{n}"))),
                    request_id: format!("stall-{w}-{n}"),
                    check_index: None,
                };
                n += 1;
                let answer = support::submit_job(&client, &request).await;
                if answer.is_ok() {
                    committed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while writers.join_next().await.is_some() {}

    let committed = committed.load(Ordering::Relaxed);
    let (leader_after, changes_after) = leadership(&cell).await;
    let logs = || cell.logs();
    eprintln!(
        "{committed} writes committed in {WRITING:?} with {STALL_MS} ms fsync stalls; leader {leader_before} throughout"
    );
    assert!(
        committed >= WRITES_MIN,
        "only {committed} writes committed in {WRITING:?} with {STALL_MS} ms fsync stalls\n{}",
        logs()
    );
    assert_eq!(
        (leader_after, changes_after),
        (leader_before, changes_before),
        "the leader changed while fsyncs stalled {STALL_MS} ms ({committed} writes committed)\n{}",
        logs()
    );
}
