//! `ReplicaService`: Paxos messages between replicas, and a replica's status.

use crate::context::ReplicaContext;
use crate::entry::decode_message;
use crate::paxos::Incoming;
use borg_proto::v1;
use borg_proto::v1::replica_service_server::ReplicaService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Most messages accepted in one `Deliver`.
pub const DELIVER_MESSAGES_MAX: usize = 4_096;

pub struct ReplicaApi {
    pub ctx: Arc<ReplicaContext>,
}

#[tonic::async_trait]
impl ReplicaService for ReplicaApi {
    async fn deliver(
        &self,
        request: Request<v1::DeliverRequest>,
    ) -> Result<Response<v1::DeliverResponse>, Status> {
        let request = request.into_inner();
        let me = self.ctx.id;
        if request.from == me || !self.ctx.peers.contains_key(&request.from) {
            return Err(Status::permission_denied(format!(
                "replica {} is not a peer of replica {me}; check every replica's peer list",
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
        _request: Request<v1::ReplicaStatusRequest>,
    ) -> Result<Response<v1::ReplicaStatus>, Status> {
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
        }))
    }
}
