//! `ReplicaService`: Paxos messages between replicas, a replica's status, checkpoints for
//! replicas that catch up, writes forwarded by followers, and the test-only peer filter.
//!
//! When authentication is on, every call must carry the cluster token (the replicas send it
//! from `transport`, `catchup` and `context`); `Status` also takes an admin's token, for
//! `borg master status`. The interceptor (`Authenticator::any_caller`) refuses a missing or
//! unknown token with UNAUTHENTICATED before a handler runs; `require_peer` refuses user tokens.

use crate::context::ReplicaContext;
use crate::entry::decode_message;
use crate::paxos::Incoming;
use crate::services::auth::{identity, AuthMetrics, Identity};
use crate::state::LogEntry;
use crate::storage::hex;
use bincode::Options;
use borg_proto::v1;
use borg_proto::v1::replica_service_server::ReplicaService;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Most messages accepted in one `Deliver`.
pub const DELIVER_MESSAGES_MAX: usize = 4_096;

pub struct ReplicaApi {
    pub ctx: Arc<ReplicaContext>,
    /// Counts the user tokens refused here (the interceptor counts unknown ones).
    pub auth_metrics: AuthMetrics,
}

impl ReplicaApi {
    /// Only the replicas (the cluster token) may call `method`, or anyone when authentication
    /// is off; an admin too if `admin_allowed`.
    fn require_peer<T>(
        &self,
        request: &Request<T>,
        method: &str,
        admin_allowed: bool,
    ) -> Result<(), Status> {
        match identity(request)? {
            Identity::Open | Identity::ControlPlane => Ok(()),
            Identity::User(caller) if admin_allowed && caller.admin => Ok(()),
            Identity::User(caller) => {
                self.auth_metrics
                    .requests_refused
                    .with_label_values(&["permission_denied"])
                    .inc();
                Err(Status::permission_denied(format!(
                    "ReplicaService.{method} is for master replicas only (the cluster token), \
                     and user {} holds a user token",
                    caller.user
                )))
            }
        }
    }
}

#[tonic::async_trait]
impl ReplicaService for ReplicaApi {
    async fn deliver(
        &self,
        request: Request<v1::DeliverRequest>,
    ) -> Result<Response<v1::DeliverResponse>, Status> {
        self.require_peer(&request, "Deliver", false)?;
        let request = request.into_inner();
        check_sender(&self.ctx, request.from)?;
        accept_delivery(&self.ctx, request.from, &request.messages)?;
        Ok(Response::new(v1::DeliverResponse {}))
    }

    type DeliverStreamStream = ReceiverStream<Result<v1::DeliverResponse, Status>>;

    /// The sender is checked when it opens the stream (token, peer, filter), so a refused
    /// sender learns it at once; each batch is then checked like a `Deliver`. A batch that
    /// fails a check ends the stream with that status (the sender reopens after a pause).
    async fn deliver_stream(
        &self,
        request: Request<Streaming<v1::DeliverRequest>>,
    ) -> Result<Response<Self::DeliverStreamStream>, Status> {
        self.require_peer(&request, "DeliverStream", false)?;
        let from = stream_sender(request.metadata())?;
        check_sender(&self.ctx, from)?;
        let mut inbound = request.into_inner();
        let (answer, answers) = mpsc::channel(1);
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            if let Err(status) = receive_deliveries(&ctx, from, &mut inbound).await {
                tracing::debug!(from, error = %status.message(), "delivery stream refused");
                let _ = answer.send(Err(status)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(answers)))
    }

    async fn status(
        &self,
        request: Request<v1::ReplicaStatusRequest>,
    ) -> Result<Response<v1::ReplicaStatus>, Status> {
        self.require_peer(&request, "Status", true)?;
        let state_hash = if request.into_inner().with_state_hash {
            hex(&self.ctx.state()?.state_hash())
        } else {
            String::new()
        };
        let leader = self.ctx.leader();
        let progress = *self.ctx.progress.borrow();
        let checkpoint_age_ms = if progress.checkpoint_time_ms == 0 {
            0
        } else {
            borg_common::now_ms().saturating_sub(progress.checkpoint_time_ms)
        };
        Ok(Response::new(v1::ReplicaStatus {
            id: self.ctx.id,
            address: self
                .ctx
                .peers
                .get(&self.ctx.id)
                .cloned()
                .unwrap_or_default(),
            leader_id: leader.leader_id.unwrap_or(0),
            leader_address: leader.leader_address.unwrap_or_default(),
            decided_index: progress.decided_index,
            applied_index: progress.applied_index,
            checkpoint_index: progress.checkpoint_index,
            checkpoint_age_ms,
            state_hash,
            compacted_index: progress.compacted_index,
            is_leader: leader.is_self,
            leader_changes: self.ctx.metrics.leader_changes.get(),
            applied_log_index: progress.applied_log_index,
        }))
    }

    async fn fetch_checkpoint(
        &self,
        request: Request<v1::FetchCheckpointRequest>,
    ) -> Result<Response<v1::CheckpointData>, Status> {
        self.require_peer(&request, "FetchCheckpoint", false)?;
        let checkpoint = self.ctx.db.load_checkpoint().map_err(|e| {
            Status::internal(format!(
                "replica {} cannot read its checkpoint: {e}",
                self.ctx.id
            ))
        })?;
        Ok(Response::new(match checkpoint {
            Some(c) => v1::CheckpointData {
                index: c.index,
                time_ms: c.time_ms,
                sha256: c.sha256.to_vec(),
                state: c.state,
            },
            None => v1::CheckpointData::default(),
        }))
    }

    async fn forward(
        &self,
        request: Request<v1::ForwardRequest>,
    ) -> Result<Response<v1::ForwardResponse>, Status> {
        self.require_peer(&request, "Forward", false)?;
        let request = request.into_inner();
        if request.from == self.ctx.id || !self.ctx.peers.contains_key(&request.from) {
            return Err(Status::permission_denied(format!(
                "replica {} is not a peer of replica {}; only replicas forward writes",
                request.from, self.ctx.id
            )));
        }
        let entry: LogEntry = bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .allow_trailing_bytes()
            .with_limit(self.ctx.message_max_bytes as u64)
            .deserialize(&request.entry)
            .map_err(|e| Status::invalid_argument(format!("forwarded write is unreadable: {e}")))?;
        let committed = self.ctx.propose_local(entry).await?;
        let bytes = bincode::serialize(&committed)
            .map_err(|e| Status::internal(format!("cannot encode the outcome: {e}")))?;
        Ok(Response::new(v1::ForwardResponse { committed: bytes }))
    }

    /// A fault-injection hook for tests (a partition on loopback): refused unless the replica
    /// was started with `peer_filter_enabled`, and, with authentication on, without the
    /// cluster token.
    async fn set_peer_filter(
        &self,
        request: Request<v1::SetPeerFilterRequest>,
    ) -> Result<Response<v1::SetPeerFilterResponse>, Status> {
        self.require_peer(&request, "SetPeerFilter", false)?;
        if !self.ctx.peer_filter_enabled {
            return Err(Status::permission_denied(
                "the peer filter is for fault tests; start the replica with it enabled (`borg master --test-only-peer-filter`, or ReplicaConfig::peer_filter_enabled)",
            ));
        }
        let blocked = request.into_inner().blocked;
        tracing::warn!(replica = self.ctx.id, ?blocked, "test peer filter set");
        self.ctx.peer_filter.set(blocked);
        Ok(Response::new(v1::SetPeerFilterResponse {}))
    }
}

/// The header naming the replica that opens a `DeliverStream`.
pub const DELIVER_STREAM_FROM_HEADER: &str = "borg-replica-from";

/// The sending replica's id from the `DeliverStream` header.
fn stream_sender(metadata: &tonic::metadata::MetadataMap) -> Result<u64, Status> {
    metadata
        .get(DELIVER_STREAM_FROM_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "a delivery stream must name its sending replica's id in the \
                 `{DELIVER_STREAM_FROM_HEADER}` header"
            ))
        })
}

/// `from` must be another replica of this cell, and not cut off by the test peer filter.
fn check_sender(ctx: &ReplicaContext, from: u64) -> Result<(), Status> {
    let me = ctx.id;
    if from == me || !ctx.peers.contains_key(&from) {
        return Err(Status::permission_denied(format!(
            "replica {from} is not a peer of replica {me}; check every replica's peer list"
        )));
    }
    if ctx.peer_filter.blocks(from) {
        return Err(Status::unavailable(format!(
            "replica {me} drops traffic from replica {from} (test peer filter)"
        )));
    }
    Ok(())
}

/// Decodes one batch of messages from `from` and queues it for the Paxos loop.
fn accept_delivery(ctx: &ReplicaContext, from: u64, batch: &[Vec<u8>]) -> Result<(), Status> {
    let me = ctx.id;
    if batch.len() > DELIVER_MESSAGES_MAX {
        return Err(Status::invalid_argument(format!(
            "{} messages in one delivery; the most is {DELIVER_MESSAGES_MAX}",
            batch.len()
        )));
    }
    let limit = ctx.message_max_bytes as u64;
    let mut messages = Vec::with_capacity(batch.len());
    for bytes in batch {
        let message =
            decode_message(bytes, limit).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if message.get_sender() != from || message.get_receiver() != me {
            return Err(Status::invalid_argument(format!(
                "message from {} to {} delivered by {from} to {me}",
                message.get_sender(),
                message.get_receiver(),
            )));
        }
        messages.push(message);
    }
    let count = messages.len() as u64;
    if ctx.incoming.try_send(Incoming::Messages(messages)).is_err() {
        // Paxos tolerates loss; the sender's resend timer heals it.
        ctx.metrics.incoming_dropped.inc_by(count);
    }
    Ok(())
}

/// Reads a delivery stream until the sender ends it, it breaks, or the replica stops.
async fn receive_deliveries(
    ctx: &ReplicaContext,
    from: u64,
    inbound: &mut Streaming<v1::DeliverRequest>,
) -> Result<(), Status> {
    loop {
        let next = tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(()),
            next = inbound.message() => next,
        };
        let request = match next {
            Ok(Some(request)) => request,
            // The sender closed the stream or went away; it reopens one when it can.
            Ok(None) | Err(_) => return Ok(()),
        };
        if request.from != from {
            return Err(Status::invalid_argument(format!(
                "a delivery from replica {} on the stream replica {from} opened",
                request.from
            )));
        }
        check_sender(ctx, from)?;
        accept_delivery(ctx, from, &request.messages)?;
    }
}
