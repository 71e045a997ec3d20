//! Snapshot transfer: a replica that starts on an empty data directory (a new replica, or one
//! that lost its disk) fetches the most recent checkpoint among its peers before it joins
//! Paxos, because the leader may have trimmed the log it would otherwise need.

use crate::storage::Checkpoint;
use crate::transport::{peer_client, PeerClient};
use borg_common::master_client::TokenInterceptor;
use borg_proto::v1;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::task::JoinSet;
use tonic::transport::Endpoint;

/// Pause between rounds of asking the peers that have not answered yet.
const FETCH_RETRY_INTERVAL_MS: u64 = 100;
/// Deadline of one `FetchCheckpoint` call (a large state takes a while to send).
const FETCH_CALL_TIMEOUT_MS: u64 = 30_000;
const FETCH_CONNECT_TIMEOUT_MS: u64 = 500;
/// Deadline of the `Status` call that asks how recent a peer's checkpoint is.
const STATUS_TIMEOUT_MS: u64 = 1_000;
const STATUS_MESSAGE_MAX_BYTES: usize = 1024 * 1024;

/// Asks every peer how recent its checkpoint is (a cheap `Status`) until all answered or
/// `timeout_ms` passed, then fetches the most recent one, falling back to the next best if a
/// transfer fails or fails its checksum. None when no peer has a checkpoint. `token` carries
/// the cluster token the peers require.
pub async fn fetch_best_checkpoint(
    own_id: u64,
    peers: &BTreeMap<u64, String>,
    timeout_ms: u64,
    message_max_bytes: usize,
    token: &TokenInterceptor,
) -> Option<Checkpoint> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    let mut waiting: BTreeMap<u64, String> = peers
        .iter()
        .filter(|(id, _)| **id != own_id)
        .map(|(id, a)| (*id, a.clone()))
        .collect();
    // (checkpoint index, peer address) of every peer that answered.
    let mut offers: Vec<(u64, String)> = Vec::new();
    while !waiting.is_empty() && tokio::time::Instant::now() < deadline {
        let mut calls = JoinSet::new();
        for (&peer, address) in &waiting {
            let address = address.clone();
            let token = token.clone();
            calls.spawn(async move {
                let index = checkpoint_index_of(&address, &token).await;
                (peer, address, index)
            });
        }
        while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, calls.join_next()).await {
            let Ok((peer, address, answer)) = joined else {
                continue;
            };
            match answer {
                Ok(index) => {
                    waiting.remove(&peer);
                    if index > 0 {
                        offers.push((index, address));
                    }
                }
                Err(status) => {
                    tracing::debug!(peer, error = %status.message(), "peer not answering yet")
                }
            }
        }
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(FETCH_RETRY_INTERVAL_MS)).await;
        }
    }
    offers.sort_by_key(|(index, _)| std::cmp::Reverse(*index));
    for (_, address) in offers {
        match fetch_one(&address, message_max_bytes, token)
            .await
            .map(checkpoint_of)
        {
            Ok(Some(checkpoint)) if checkpoint.verify().is_ok() => return Some(checkpoint),
            Ok(Some(checkpoint)) => tracing::warn!(
                peer = %address,
                index = checkpoint.index,
                "a peer's checkpoint fails its checksum; trying another"
            ),
            Ok(None) => {}
            Err(status) => {
                tracing::warn!(peer = %address, error = %status.message(), "checkpoint transfer failed; trying another")
            }
        }
    }
    None
}

async fn client(
    address: &str,
    message_max_bytes: usize,
    token: &TokenInterceptor,
) -> Result<PeerClient, tonic::Status> {
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?
        .connect_timeout(Duration::from_millis(FETCH_CONNECT_TIMEOUT_MS))
        .timeout(Duration::from_millis(FETCH_CALL_TIMEOUT_MS))
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    Ok(peer_client(channel, token, message_max_bytes))
}

async fn checkpoint_index_of(
    address: &str,
    token: &TokenInterceptor,
) -> Result<u64, tonic::Status> {
    let mut request = tonic::Request::new(v1::ReplicaStatusRequest::default());
    request.set_timeout(Duration::from_millis(STATUS_TIMEOUT_MS));
    Ok(client(address, STATUS_MESSAGE_MAX_BYTES, token)
        .await?
        .status(request)
        .await?
        .into_inner()
        .checkpoint_index)
}

async fn fetch_one(
    address: &str,
    message_max_bytes: usize,
    token: &TokenInterceptor,
) -> Result<v1::CheckpointData, tonic::Status> {
    Ok(client(address, message_max_bytes, token)
        .await?
        .fetch_checkpoint(v1::FetchCheckpointRequest {})
        .await?
        .into_inner())
}

/// The wire form as a checkpoint (None for "no checkpoint" or a malformed checksum).
pub fn checkpoint_of(data: v1::CheckpointData) -> Option<Checkpoint> {
    if data.index == 0 {
        return None;
    }
    let sha256: [u8; 32] = data.sha256.as_slice().try_into().ok()?;
    Some(Checkpoint {
        index: data.index,
        time_ms: data.time_ms,
        sha256,
        state: data.state,
    })
}
