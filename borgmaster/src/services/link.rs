//! `LinkService`: borglet registration, link shards' assignments and their diffs.

use super::{accepted, unexpected};
use crate::context::ReplicaContext;
use crate::state::{Command, Outcome};
use crate::wire;
use borg_proto::v1;
use borg_proto::v1::link_service_server::LinkService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct LinkApi {
    pub ctx: Arc<ReplicaContext>,
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
