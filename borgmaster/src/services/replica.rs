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
use tonic::{Request, Response, Status};

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
        let me = self.ctx.id;
        if request.from == me || !self.ctx.peers.contains_key(&request.from) {
            return Err(Status::permission_denied(format!(
                "replica {} is not a peer of replica {me}; check every replica's peer list",
                request.from
            )));
        }
        if self.ctx.peer_filter.blocks(request.from) {
            return Err(Status::unavailable(format!(
                "replica {me} drops traffic from replica {} (test peer filter)",
                request.from
            )));
        }
        if request.messages.len() > DELIVER_MESSAGES_MAX {
            return Err(Status::invalid_argument(format!(
                "{} messages in one delivery; the most is {DELIVER_MESSAGES_MAX}",
                request.messages.len()
            )));
        }
        let limit = self.ctx.message_max_bytes as u64;
        let mut messages = Vec::with_capacity(request.messages.len());
        for bytes in &request.messages {
            let message = decode_message(bytes, limit)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            if message.get_sender() != request.from || message.get_receiver() != me {
                return Err(Status::invalid_argument(format!(
                    "message from {} to {} delivered by {} to {me}",
                    message.get_sender(),
                    message.get_receiver(),
                    request.from
                )));
            }
            messages.push(message);
        }
        let count = messages.len() as u64;
        if self
            .ctx
            .incoming
            .try_send(Incoming::Messages(messages))
            .is_err()
        {
            // Paxos tolerates loss; the sender's resend timer heals it.
            self.ctx.metrics.incoming_dropped.inc_by(count);
        }
        Ok(Response::new(v1::DeliverResponse {}))
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
