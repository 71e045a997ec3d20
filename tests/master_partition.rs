//! Five master replicas as separate `borg master` processes, cut 2-vs-3 with the test-only
//! peer filter (`--test-only-peer-filter`; every replica drops the other side's Paxos
//! messages). The minority, which holds the old leader, refuses writes (or lets them time
//! out) and applies none; the majority elects a leader and goes on; after healing all five
//! converge to one applied index and state hash, with the majority's writes everywhere and
//! the minority's nowhere. A replica started without the flag refuses the hook.

mod support;

use borg_common::master_client::TokenInterceptor;
use borg_common::{MasterClient, MasterClientConfig};
use borg_proto::v1;
use borg_proto::v1::cell_service_client::CellServiceClient;
use borg_proto::v1::replica_service_client::ReplicaServiceClient;
use std::time::Duration;
use support::{eventually, replica_status, TestCell};
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;
use tonic::Code;

const REPLICAS: u64 = 5;
/// The master flag that enables `ReplicaService.SetPeerFilter`.
const PEER_FILTER_FLAG: &str = "--test-only-peer-filter";
/// Writes through the leader before the partition, and through the majority during it.
const WRITES_BEFORE: usize = 5;
const WRITES_DURING: usize = 10;
/// Deadline of every poll in this test.
const DEADLINE: Duration = Duration::from_secs(60);
/// Deadline of one RPC: longer than a master's proposal timeout (5 s), so a refused write is
/// answered by the replica rather than cut off here.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

type Authed = InterceptedService<Channel, TokenInterceptor>;

fn channel(address: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("a loopback address")
        .connect_timeout(Duration::from_millis(500))
        .timeout(CALL_TIMEOUT)
        .connect_lazy()
}

fn interceptor(token: &str) -> TokenInterceptor {
    TokenInterceptor::new(Some(token)).expect("a valid token")
}

fn cell_client(cell: &TestCell, id: u64) -> CellServiceClient<Authed> {
    CellServiceClient::with_interceptor(channel(&address(cell, id)), interceptor(&cell.admin_token))
}

/// `ReplicaService` needs the cluster token.
fn replica_client(cell: &TestCell, id: u64) -> ReplicaServiceClient<Authed> {
    ReplicaServiceClient::with_interceptor(
        channel(&address(cell, id)),
        interceptor(&cell.cluster_token),
    )
}

fn address(cell: &TestCell, id: u64) -> String {
    format!("127.0.0.1:{}", cell.master_ports[id as usize - 1])
}

fn submit_request(name: &str) -> v1::SubmitJobRequest {
    v1::SubmitJobRequest {
        spec: Some(support::tiny_job(name)),
        request_id: format!("{name}-req"),
        check_index: None,
    }
}

async fn status(cell: &TestCell, id: u64) -> Option<v1::ReplicaStatus> {
    replica_status(&address(cell, id), &cell.cluster_token).await
}

/// The leader all of `ids` name, once they agree on one among them.
async fn agreed_leader(cell: &TestCell, ids: &[u64]) -> u64 {
    eventually(
        &format!("a leader agreed by replicas {ids:?}"),
        DEADLINE,
        || async {
            let mut leaders = Vec::new();
            for id in ids {
                leaders.push(status(cell, *id).await?.leader_id);
            }
            let first = leaders[0];
            (ids.contains(&first) && leaders.iter().all(|l| *l == first)).then_some(first)
        },
    )
    .await
}

/// Waits until all five applied the same index, at least `index`, with the same state hash.
async fn converged(cell: &TestCell, index: u64) -> Vec<v1::ReplicaStatus> {
    eventually(
        &format!("all replicas at one state hash, applied index >= {index}"),
        DEADLINE,
        || async {
            let mut statuses = Vec::new();
            for id in 1..=REPLICAS {
                statuses.push(status(cell, id).await?);
            }
            let first = &statuses[0];
            let same = !first.state_hash.is_empty()
                && statuses.iter().all(|s| {
                    s.applied_index >= index
                        && s.applied_index == first.applied_index
                        && s.state_hash == first.state_hash
                });
            same.then_some(statuses)
        },
    )
    .await
}

async fn set_peer_filter(cell: &TestCell, id: u64, blocked: Vec<u64>) {
    let result = replica_client(cell, id)
        .set_peer_filter(v1::SetPeerFilterRequest { blocked })
        .await;
    if let Err(status) = result {
        panic!("SetPeerFilter on replica {id}: {status}");
    }
}

/// Whether replica `id` has applied job `name`, read from its own state (not the leader's);
/// None if the replica could not answer.
async fn has_job(cell: &TestCell, id: u64, name: &str) -> Option<bool> {
    let answer = cell_client(cell, id)
        .get_job(v1::GetJobRequest {
            name: name.into(),
            consistent: false,
            summary: false,
        })
        .await;
    match answer {
        Ok(response) => Some(response.into_inner().job.is_some()),
        Err(status) if status.code() == Code::NotFound => Some(false),
        Err(_) => None,
    }
}

/// Submits `count` jobs `{prefix}-{i}` through `client`; the last acknowledged index.
async fn submit_jobs(client: &MasterClient, prefix: &str, count: usize) -> u64 {
    let mut last = 0;
    for i in 0..count {
        let request = submit_request(&format!("{prefix}-{i}"));
        let response = support::submit_job(client, &request)
            .await
            .unwrap_or_else(|e| panic!("submit {prefix}-{i}: {e}"));
        assert!(response.index > last, "indexes go up: {response:?}");
        last = response.index;
    }
    last
}

/// A client that follows the leader among `ids` only.
fn client_of(cell: &TestCell, ids: &[u64]) -> MasterClient {
    let mut config = MasterClientConfig::new(ids.iter().map(|id| address(cell, *id)).collect());
    config.call_deadline_ms = 30_000;
    config.request_timeout_ms = 5_000;
    config.token = Some(cell.admin_token.clone());
    MasterClient::new(config).expect("a master client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_minority_refuses_writes_and_all_five_converge_after_healing() {
    let cell = TestCell::with_masters_and_args(REPLICAS as usize, &[PEER_FILTER_FLAG]);
    cell.wait_for_leader();
    let all: Vec<u64> = (1..=REPLICAS).collect();
    let leader = agreed_leader(&cell, &all).await;
    let before = submit_jobs(&client_of(&cell, &all), "before", WRITES_BEFORE).await;
    converged(&cell, before).await;

    // The leader and one follower are cut off from the other three, both ways.
    let minority = [
        leader,
        all.iter().copied().find(|id| *id != leader).unwrap(),
    ];
    let majority: Vec<u64> = all
        .iter()
        .copied()
        .filter(|id| !minority.contains(id))
        .collect();
    for id in 1..=REPLICAS {
        let blocked = if minority.contains(&id) {
            majority.clone()
        } else {
            minority.to_vec()
        };
        set_peer_filter(&cell, id, blocked).await;
    }

    // A write through each minority replica (the old leader, and a follower forwarding to
    // it) cannot be decided, while the majority elects a leader among itself and goes on.
    let minority_write = |id: u64| {
        let mut client = cell_client(&cell, id);
        async move {
            let answer = client
                .submit_job(submit_request(&format!("minority-{id}")))
                .await;
            (id, answer)
        }
    };
    let minority_writes = async {
        let (first, second) =
            tokio::join!(minority_write(minority[0]), minority_write(minority[1]));
        [first, second]
    };
    let majority_writes = async {
        let new_leader = agreed_leader(&cell, &majority).await;
        let last = submit_jobs(&client_of(&cell, &majority), "during", WRITES_DURING).await;
        (new_leader, last)
    };
    let (refusals, (new_leader, during)) = tokio::join!(minority_writes, majority_writes);
    for (id, answer) in refusals {
        match answer {
            Ok(response) => panic!("replica {id} in the minority acknowledged {response:?}"),
            Err(status) => assert!(
                // Unavailable from the replica; DeadlineExceeded only if the test's own client
                // deadline ran out first on a very loaded machine.
                matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded),
                "replica {id} in the minority answered {status}, not a refusal or a timeout"
            ),
        }
    }
    assert!(majority.contains(&new_leader), "{new_leader} leads");
    assert!(during > before);
    // Nothing of the minority's was applied, on either side.
    for id in 1..=REPLICAS {
        for written in minority {
            let name = format!("minority-{written}");
            let present = eventually(&format!("replica {id} to answer"), DEADLINE, || {
                has_job(&cell, id, &name)
            })
            .await;
            assert!(!present, "replica {id} applied {name} during the partition");
        }
    }
    for id in minority {
        let s = status(&cell, id).await.expect("a minority replica answers");
        assert!(
            s.applied_index < during,
            "replica {id} in the minority applied {} (the majority is at {during})",
            s.applied_index
        );
    }

    // Heal: all five converge to one state, the majority's writes everywhere, the
    // minority's nowhere.
    for id in 1..=REPLICAS {
        set_peer_filter(&cell, id, Vec::new()).await;
    }
    let statuses = converged(&cell, during).await;
    for id in 1..=REPLICAS {
        for i in 0..WRITES_DURING {
            let name = format!("during-{i}");
            assert_eq!(
                has_job(&cell, id, &name).await,
                Some(true),
                "{name} on {id}"
            );
        }
        for written in minority {
            let name = format!("minority-{written}");
            assert_eq!(
                has_job(&cell, id, &name).await,
                Some(false),
                "{name} on {id}"
            );
        }
    }

    // And the healed cell takes writes again, asked at a former minority replica.
    let after = submit_jobs(&client_of(&cell, &[minority[1]]), "after", 1).await;
    assert!(after > statuses[0].applied_index);
    let final_statuses = converged(&cell, after).await;
    assert_eq!(final_statuses.len(), REPLICAS as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_without_the_flag_refuses_the_peer_filter() {
    // Two replicas: the fewest a replicated master runs with.
    let cell = TestCell::with_masters(2);
    let refused = eventually("the replica to answer SetPeerFilter", DEADLINE, || async {
        let answer = replica_client(&cell, 1)
            .set_peer_filter(v1::SetPeerFilterRequest { blocked: vec![2] })
            .await;
        match answer {
            Ok(_) => panic!("a replica without {PEER_FILTER_FLAG} accepted SetPeerFilter"),
            // Not listening yet.
            Err(status) if status.code() == Code::Unavailable => None,
            Err(status) => Some(status),
        }
    })
    .await;
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused}");
}
