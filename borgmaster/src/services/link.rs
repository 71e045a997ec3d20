//! `LinkService`: borglet registration, link shards' assignments and their diffs.

use super::{accepted, unexpected};
use crate::context::ReplicaContext;
use crate::state::{known_versions, Command, Outcome};
use crate::wire;
use borg_proto::v1;
use borg_proto::v1::link_service_server::LinkService;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Longest a `GetAssignment` waits for the shard's assignment to change (below the link
/// shard's request deadline, so an idle shard is answered before its call gives up).
pub const ASSIGNMENT_WAIT_MAX_MS: u64 = 5_000;

pub struct LinkApi {
    pub ctx: Arc<ReplicaContext>,
}

impl LinkApi {
    /// Returns once a machine of the shard is not at its `known` version (checked after each
    /// applied batch of writes), or after `wait_ms`.
    async fn wait_for_assignment_change(
        &self,
        shard_index: u32,
        shard_count: u32,
        known: &[v1::KnownAssignment],
        wait_ms: u64,
    ) -> Result<(), Status> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
        let known = known_versions(known);
        let mut progress = self.ctx.progress.clone();
        loop {
            // Marked seen before the check, so a write applied in between wakes the wait.
            progress.borrow_and_update();
            if !self
                .ctx
                .state()?
                .assignment_is_known(shard_index, shard_count, &known)
            {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, progress.changed()).await {
                Ok(Ok(())) => continue,
                // The deadline, or a replica shutting down: answer with what there is.
                Ok(Err(_)) | Err(_) => return Ok(()),
            }
        }
    }
}

#[tonic::async_trait]
impl LinkService for LinkApi {
    async fn register_machine(
        &self,
        request: Request<v1::RegisterMachineRequest>,
    ) -> Result<Response<v1::RegisterMachineResponse>, Status> {
        let request = request.into_inner();
        let info = wire::machine_info(request.info)?;
        let request_id = wire::request_id(&request.request_id)?;
        let name = info.name.clone();
        let committed = self
            .ctx
            .propose(request_id, Command::RegisterMachine { info })
            .await?;
        match accepted(committed.outcome)? {
            Outcome::MachineRegistered { .. } => Ok(Response::new(v1::RegisterMachineResponse {
                machine: self.ctx.state()?.machine_view(&name),
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn get_assignment(
        &self,
        request: Request<v1::GetAssignmentRequest>,
    ) -> Result<Response<v1::GetAssignmentResponse>, Status> {
        let request = request.into_inner();
        let shard_count = request.shard_count.max(1);
        if request.shard_index >= shard_count {
            return Err(Status::invalid_argument(format!(
                "shard_index {} is out of range for shard_count {shard_count}",
                request.shard_index
            )));
        }
        if request.wait_ms > 0 {
            let wait_ms = u64::from(request.wait_ms).min(ASSIGNMENT_WAIT_MAX_MS);
            self.wait_for_assignment_change(
                request.shard_index,
                shard_count,
                &request.known,
                wait_ms,
            )
            .await?;
        }
        let state = self.ctx.state()?;
        Ok(Response::new(v1::GetAssignmentResponse {
            machines: state.assignment_delta_view(request.shard_index, shard_count, &request.known),
            index: state.applied_index(),
        }))
    }

    async fn forward_diffs(
        &self,
        request: Request<v1::ForwardDiffsRequest>,
    ) -> Result<Response<v1::ForwardDiffsResponse>, Status> {
        let request = request.into_inner();
        let request_id = wire::request_id(&request.request_id)?;
        let reports = wire::machine_reports(request.diffs)?;
        if reports.is_empty() {
            // Nothing to log; answer with where the state is.
            return Ok(Response::new(v1::ForwardDiffsResponse {
                index: self.ctx.state()?.applied_index(),
            }));
        }
        let committed = self
            .ctx
            .propose(request_id, Command::ApplyReports { reports })
            .await?;
        match accepted(committed.outcome)? {
            Outcome::ReportsApplied => Ok(Response::new(v1::ForwardDiffsResponse {
                index: committed.index,
            })),
            other => Err(unexpected(&other)),
        }
    }
}
