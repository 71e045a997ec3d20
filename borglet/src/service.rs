//! The gRPC face of the borglet: `BorgletService.Poll`.

use crate::supervisor::{PollError, Supervisor};
use borg_common::now_ms;
use borg_model::MachineInfo;
use borg_proto::v1;
use borg_proto::v1::borglet_service_server::BorgletService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct BorgletRpc {
    pub supervisor: Arc<Supervisor>,
    pub info: MachineInfo,
}

impl From<PollError> for Status {
    fn from(error: PollError) -> Status {
        match error {
            PollError::WrongMachine { .. } => Status::failed_precondition(error.to_string()),
            PollError::TooManyTasks { .. } => Status::invalid_argument(error.to_string()),
        }
    }
}

#[tonic::async_trait]
impl BorgletService for BorgletRpc {
    async fn poll(
        &self,
        request: Request<v1::PollRequest>,
    ) -> Result<Response<v1::PollResponse>, Status> {
        let request = request.into_inner();
        let report = self
            .supervisor
            .poll(&request.machine, request.desired)
            .await?;
        Ok(Response::new(v1::PollResponse {
            machine: self.info.name.clone(),
            info: Some(self.info.clone().into()),
            tasks: report.tasks,
            usage: Some(report.usage.into()),
            report_time_ms: now_ms(),
        }))
    }
}
