//! `borg master status`: every replica's view: who leads, decided and applied log index,
//! applied writes (several may share a log entry), last checkpoint (index and age), trim
//! point and lag behind the leader in log entries.

use borg_proto::v1;
use borg_proto::v1::replica_service_client::ReplicaServiceClient;
use std::time::Duration;
use tonic::transport::Endpoint;

/// Deadline of one replica's status call; a replica that does not answer is shown as down.
const STATUS_TIMEOUT_MS: u64 = 2_000;

/// One replica's answer, or why there is none.
struct Row {
    endpoint: String,
    status: Result<v1::ReplicaStatus, String>,
}

/// `token`: an admin's or the cluster token (replicas answer `Status` to no one else when
/// authentication is on).
pub async fn run(endpoints: Vec<String>, token: Option<String>, json: bool) -> anyhow::Result<()> {
    if endpoints.is_empty() {
        anyhow::bail!("no master endpoints given: pass --master HOST:PORT,HOST:PORT,...");
    }
    let token = borg_common::master_client::TokenInterceptor::new(token.as_deref())
        .map_err(|status| anyhow::anyhow!("{}", status.message()))?;
    // Asked at once, so one unreachable replica costs one timeout, not one each.
    let calls: Vec<_> = endpoints
        .iter()
        .map(|e| {
            let (endpoint, token) = (e.clone(), token.clone());
            tokio::spawn(async move { status_of(&endpoint, token).await })
        })
        .collect();
    let mut rows = Vec::with_capacity(calls.len());
    for (endpoint, call) in endpoints.iter().zip(calls) {
        let status = call
            .await
            .unwrap_or_else(|e| Err(format!("status task failed: {e}")));
        rows.push(Row {
            endpoint: endpoint.clone(),
            status,
        });
    }
    // Lag is measured against the highest decided index any replica reports (the leader's,
    // unless it is down).
    let decided_max = rows
        .iter()
        .filter_map(|r| r.status.as_ref().ok())
        .map(|s| s.decided_index)
        .max()
        .unwrap_or(0);
    if json {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|row| match &row.status {
                Ok(s) => serde_json::json!({
                    "endpoint": row.endpoint,
                    "up": true,
                    "id": s.id,
                    "leader_id": s.leader_id,
                    "is_leader": s.is_leader,
                    "decided_index": s.decided_index,
                    "applied_index": s.applied_index,
                    "applied_log_index": s.applied_log_index,
                    "checkpoint_index": s.checkpoint_index,
                    "checkpoint_age_ms": s.checkpoint_age_ms,
                    "compacted_index": s.compacted_index,
                    "lag": decided_max.saturating_sub(s.applied_log_index),
                    "state_hash": s.state_hash,
                }),
                Err(error) => serde_json::json!({
                    "endpoint": row.endpoint,
                    "up": false,
                    "error": error,
                }),
            })
            .collect();
        println!("{:#}", serde_json::Value::Array(items));
        return Ok(());
    }
    println!(
        "{:<4} {:<22} {:<7} {:>9} {:>9} {:>9} {:>11} {:>10} {:>9} {:>6}  STATE",
        "ID",
        "ENDPOINT",
        "ROLE",
        "DECIDED",
        "APPLIED",
        "WRITES",
        "CHECKPOINT",
        "CKPT AGE",
        "TRIMMED",
        "LAG"
    );
    for row in &rows {
        match &row.status {
            Ok(s) => println!(
                "{:<4} {:<22} {:<7} {:>9} {:>9} {:>9} {:>11} {:>10} {:>9} {:>6}  {}",
                s.id,
                row.endpoint,
                if s.is_leader { "leader" } else { "follower" },
                s.decided_index,
                s.applied_log_index,
                s.applied_index,
                s.checkpoint_index,
                age_text(s.checkpoint_index, s.checkpoint_age_ms),
                s.compacted_index,
                decided_max.saturating_sub(s.applied_log_index),
                short_hash(&s.state_hash),
            ),
            Err(error) => println!("{:<4} {:<22} {:<7} {error}", "-", row.endpoint, "down"),
        }
    }
    let leaders: Vec<u64> = rows
        .iter()
        .filter_map(|r| r.status.as_ref().ok())
        .filter(|s| s.is_leader)
        .map(|s| s.id)
        .collect();
    match leaders.as_slice() {
        [id] => println!("leader: replica {id}"),
        [] => println!("leader: none known (election in progress or no quorum)"),
        many => println!("leader: several claim it {many:?} (an election is settling)"),
    }
    Ok(())
}

async fn status_of(
    endpoint: &str,
    token: borg_common::master_client::TokenInterceptor,
) -> Result<v1::ReplicaStatus, String> {
    let channel = Endpoint::from_shared(format!("http://{endpoint}"))
        .map_err(|e| format!("bad address: {e}"))?
        .connect_timeout(Duration::from_millis(STATUS_TIMEOUT_MS))
        .timeout(Duration::from_millis(STATUS_TIMEOUT_MS))
        .connect()
        .await
        .map_err(|e| format!("unreachable: {e}"))?;
    ReplicaServiceClient::with_interceptor(channel, token)
        .status(v1::ReplicaStatusRequest {
            with_state_hash: true,
        })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| s.message().to_owned())
}

fn age_text(checkpoint_index: u64, age_ms: u64) -> String {
    if checkpoint_index == 0 {
        "-".into()
    } else if age_ms < 10_000 {
        format!("{:.1}s", age_ms as f64 / 1000.0)
    } else {
        format!("{}s", age_ms / 1000)
    }
}

fn short_hash(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}
