//! `CellService`: the users' API.

use super::auth::{identity, on_behalf_of, require_admin, user_name, AuthMetrics, Identity};
use super::{accepted, unexpected};
use crate::context::ReplicaContext;
use crate::state::{token_id, Command, Outcome, StateError, TokenInfo};
use crate::wire;
use borg_proto::v1;
use borg_proto::v1::cell_service_server::CellService;
use std::sync::Arc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Events read from the state per page while streaming.
const EVENTS_PAGE_MAX: usize = 256;
/// A task's events returned when the request names no limit, and the most returned.
const TASK_EVENTS_DEFAULT: usize = 50;
const TASK_EVENTS_MAX: usize = 1_000;
/// Requests of one `SubmitJobs` stream being handled at once; the stream is not read further
/// until one finishes, so HTTP/2 flow control holds the client back.
const SUBMIT_STREAM_IN_FLIGHT_MAX: usize = 1_024;

#[derive(Clone)]
pub struct CellApi {
    pub ctx: Arc<ReplicaContext>,
    pub metrics: AuthMetrics,
}

impl CellApi {
    async fn submit(
        &self,
        identity: &Identity,
        request: v1::SubmitJobRequest,
        must_exist: bool,
    ) -> Result<v1::SubmitJobResponse, Status> {
        let (name, index, created) = self.commit_submit(identity, request, must_exist).await?;
        Ok(v1::SubmitJobResponse {
            job: self.ctx.state()?.job_view(&name),
            index,
            created,
        })
    }

    /// Proposes a submit and waits for its commit: the job's name, the write's index and
    /// whether it created the job.
    async fn commit_submit(
        &self,
        identity: &Identity,
        mut request: v1::SubmitJobRequest,
        must_exist: bool,
    ) -> Result<(String, u64, bool), Status> {
        // A job without an owner belongs to whoever submits it.
        if let (Some(spec), Some(user)) = (request.spec.as_mut(), user_name(identity)) {
            if spec.owner.is_empty() {
                spec.owner = user.to_owned();
            }
        }
        let spec = wire::job_spec(request.spec)?;
        let request_id = wire::request_id(&request.request_id)?;
        let name = spec.name.clone();
        let command = on_behalf_of(
            identity,
            Command::SubmitJob {
                spec,
                check_index: request.check_index,
                must_exist,
            },
        )?;
        let committed = self.ctx.propose(request_id, command).await?;
        if let Outcome::Rejected(error) = &committed.outcome {
            self.count_refusal(&name, error);
        }
        match accepted(committed.outcome)? {
            Outcome::JobSubmitted { created, .. } => Ok((name, committed.index, created)),
            other => Err(unexpected(&other)),
        }
    }

    /// One request of a `SubmitJobs` stream, answered by its request id.
    async fn submit_reply(
        &self,
        identity: &Identity,
        request: v1::SubmitJobRequest,
    ) -> v1::SubmitJobsReply {
        let request_id = request.request_id.clone();
        match self.commit_submit(identity, request, false).await {
            Ok((_, index, created)) => v1::SubmitJobsReply {
                request_id,
                index,
                created,
                ..Default::default()
            },
            Err(status) => v1::SubmitJobsReply {
                request_id,
                code: status.code() as i32,
                message: status.message().to_owned(),
                ..Default::default()
            },
        }
    }

    /// Counts and logs a submit refused by admission (ownership, band or quota).
    fn count_refusal(&self, job: &str, error: &StateError) {
        let reason = match error {
            StateError::PermissionDenied { .. } => "permission_denied",
            StateError::NoQuota { .. } => "no_quota",
            StateError::QuotaExceeded { .. } => "quota_exceeded",
            _ => return,
        };
        self.metrics
            .submits_refused
            .with_label_values(&[reason])
            .inc();
        tracing::info!(job, reason, %error, "submit refused by admission");
    }
}

#[tonic::async_trait]
impl CellService for CellApi {
    async fn submit_job(
        &self,
        request: Request<v1::SubmitJobRequest>,
    ) -> Result<Response<v1::SubmitJobResponse>, Status> {
        let identity = identity(&request)?;
        self.submit(&identity, request.into_inner(), false)
            .await
            .map(Response::new)
    }

    type SubmitJobsStream = ReceiverStream<Result<v1::SubmitJobsReply, Status>>;

    async fn submit_jobs(
        &self,
        request: Request<tonic::Streaming<v1::SubmitJobRequest>>,
    ) -> Result<Response<Self::SubmitJobsStream>, Status> {
        let identity = identity(&request)?;
        let mut incoming = request.into_inner();
        let (replies, receiver) = tokio::sync::mpsc::channel(SUBMIT_STREAM_IN_FLIGHT_MAX);
        let in_flight = Arc::new(tokio::sync::Semaphore::new(SUBMIT_STREAM_IN_FLIGHT_MAX));
        let api = self.clone();
        let shutdown = self.ctx.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    return;
                };
                // On shutdown the stream is read no further: the reply stream ends once the
                // writes in flight are answered, so the server can stop.
                let message = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    message = incoming.message() => message,
                };
                let request = match message {
                    Ok(Some(request)) => request,
                    Ok(None) => return,
                    Err(status) => {
                        let _ = replies.send(Err(status)).await;
                        return;
                    }
                };
                let (api, identity, replies) = (api.clone(), identity.clone(), replies.clone());
                tokio::spawn(async move {
                    let reply = api.submit_reply(&identity, request).await;
                    // A client that went away no longer wants its answers.
                    let _ = replies.send(Ok(reply)).await;
                    drop(permit);
                });
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn update_job(
        &self,
        request: Request<v1::SubmitJobRequest>,
    ) -> Result<Response<v1::SubmitJobResponse>, Status> {
        let identity = identity(&request)?;
        self.submit(&identity, request.into_inner(), true)
            .await
            .map(Response::new)
    }

    async fn kill_job(
        &self,
        request: Request<v1::KillJobRequest>,
    ) -> Result<Response<v1::KillJobResponse>, Status> {
        let identity = identity(&request)?;
        let request = request.into_inner();
        let name = wire::name("job name", &request.name)?;
        let request_id = wire::request_id(&request.request_id)?;
        let command = on_behalf_of(&identity, Command::KillJob { name: name.clone() })?;
        let committed = self.ctx.propose(request_id, command).await?;
        match accepted(committed.outcome)? {
            Outcome::JobKilled { .. } => Ok(Response::new(v1::KillJobResponse {
                job: self.ctx.state()?.job_view(&name),
                index: committed.index,
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn get_job(
        &self,
        request: Request<v1::GetJobRequest>,
    ) -> Result<Response<v1::GetJobResponse>, Status> {
        let request = request.into_inner();
        let name = wire::name("job name", &request.name)?;
        self.ctx.prepare_read(request.consistent).await?;
        let state = self.ctx.state()?;
        let (job, task_counts) = if request.summary {
            state.job_summary_view(&name)
        } else {
            state.job_view(&name).map(|job| (job, Vec::new()))
        }
        .ok_or_else(|| Status::not_found(format!("job {name:?} does not exist")))?;
        Ok(Response::new(v1::GetJobResponse {
            job: Some(job),
            meta: Some(self.ctx.read_meta(&state)),
            task_counts,
        }))
    }

    async fn list_jobs(
        &self,
        request: Request<v1::ListJobsRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        let request = request.into_inner();
        let owner = if request.owner.is_empty() {
            None
        } else {
            Some(wire::name("owner", &request.owner)?)
        };
        self.ctx.prepare_read(request.consistent).await?;
        let state = self.ctx.state()?;
        Ok(Response::new(v1::ListJobsResponse {
            jobs: state.jobs_view(owner.as_deref()),
            meta: Some(self.ctx.read_meta(&state)),
        }))
    }

    async fn list_machines(
        &self,
        request: Request<v1::ListMachinesRequest>,
    ) -> Result<Response<v1::ListMachinesResponse>, Status> {
        self.ctx
            .prepare_read(request.into_inner().consistent)
            .await?;
        let state = self.ctx.state()?;
        Ok(Response::new(v1::ListMachinesResponse {
            machines: state.machines_view(),
            meta: Some(self.ctx.read_meta(&state)),
        }))
    }

    type StreamEventsStream = ReceiverStream<Result<v1::Event, Status>>;

    async fn stream_events(
        &self,
        request: Request<v1::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let request = request.into_inner();
        let job = if request.job.is_empty() {
            None
        } else {
            Some(wire::name("job name", &request.job)?)
        };
        let (tx, rx) = tokio::sync::mpsc::channel(self.ctx.watch_buffer_max.max(1));
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            let mut progress = ctx.progress.clone();
            let mut next = request.from_index;
            loop {
                let page = ctx
                    .state()
                    .map(|state| state.events_view(next, job.as_deref(), EVENTS_PAGE_MAX));
                let page = match page {
                    Ok(page) => page,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                let full = page.len() >= EVENTS_PAGE_MAX;
                for event in page {
                    next = event.index + 1;
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                if full {
                    continue;
                }
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    changed = progress.changed() => if changed.is_err() { return },
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn who_am_i(
        &self,
        request: Request<v1::WhoAmIRequest>,
    ) -> Result<Response<v1::WhoAmIResponse>, Status> {
        let response = match identity(&request)? {
            Identity::Open => v1::WhoAmIResponse {
                user: String::new(),
                admin: true,
                control_plane: true,
            },
            Identity::ControlPlane => v1::WhoAmIResponse {
                user: String::new(),
                admin: false,
                control_plane: true,
            },
            Identity::User(caller) => v1::WhoAmIResponse {
                user: caller.user,
                admin: caller.admin,
                control_plane: false,
            },
        };
        Ok(Response::new(response))
    }

    async fn create_token(
        &self,
        request: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        let identity = identity(&request)?;
        require_admin(&identity, "create tokens")?;
        let request = request.into_inner();
        let user = wire::name("user", &request.user)?;
        let request_id = wire::request_id(&request.request_id)?;
        let id = token_id(&request.token_sha256).to_owned();
        let command = on_behalf_of(
            &identity,
            Command::CreateToken {
                token_sha256: request.token_sha256,
                user: user.clone(),
                admin: request.admin,
            },
        )?;
        let committed = self.ctx.propose(request_id, command).await?;
        match accepted(committed.outcome)? {
            Outcome::TokenCreated { .. } => Ok(Response::new(v1::CreateTokenResponse {
                user,
                admin: request.admin,
                index: committed.index,
                id,
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn list_tokens(
        &self,
        request: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        require_admin(&identity(&request)?, "list tokens")?;
        let request = request.into_inner();
        let user = if request.user.is_empty() {
            None
        } else {
            Some(wire::name("user", &request.user)?)
        };
        self.ctx.prepare_read(request.consistent).await?;
        let state = self.ctx.state()?;
        Ok(Response::new(v1::ListTokensResponse {
            tokens: state
                .tokens_view(user.as_deref())
                .into_iter()
                .map(token_to_wire)
                .collect(),
            meta: Some(self.ctx.read_meta(&state)),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::RevokeTokenResponse>, Status> {
        let identity = identity(&request)?;
        require_admin(&identity, "revoke tokens")?;
        let request = request.into_inner();
        let target = wire::name("token id or user", &request.target)?;
        let request_id = wire::request_id(&request.request_id)?;
        let command = on_behalf_of(&identity, Command::RevokeTokens { target })?;
        let committed = self.ctx.propose(request_id, command).await?;
        match accepted(committed.outcome)? {
            Outcome::TokensRevoked { tokens } => Ok(Response::new(v1::RevokeTokenResponse {
                revoked: tokens.into_iter().map(token_to_wire).collect(),
                index: committed.index,
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn list_task_events(
        &self,
        request: Request<v1::ListTaskEventsRequest>,
    ) -> Result<Response<v1::ListTaskEventsResponse>, Status> {
        let request = request.into_inner();
        let job = wire::name("job name", &request.job)?;
        let limit = match request.limit {
            0 => TASK_EVENTS_DEFAULT,
            n => usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(TASK_EVENTS_MAX),
        };
        self.ctx.prepare_read(request.consistent).await?;
        let state = self.ctx.state()?;
        Ok(Response::new(v1::ListTaskEventsResponse {
            events: state.task_events_view(&job, request.index, limit),
            meta: Some(self.ctx.read_meta(&state)),
        }))
    }

    async fn set_quota(
        &self,
        request: Request<v1::SetQuotaRequest>,
    ) -> Result<Response<v1::SetQuotaResponse>, Status> {
        let identity = identity(&request)?;
        require_admin(&identity, "set quotas")?;
        let request = request.into_inner();
        let user = wire::name("user", &request.user)?;
        let band = wire::quota_band(&request.band)?;
        let request_id = wire::request_id(&request.request_id)?;
        let limit = request
            .limit
            .map(borg_model::Resources::from)
            .ok_or_else(|| Status::invalid_argument("field `limit` is required"))?;
        let command = on_behalf_of(
            &identity,
            Command::SetQuota {
                user: user.clone(),
                band,
                limit,
            },
        )?;
        let committed = self.ctx.propose(request_id, command).await?;
        match accepted(committed.outcome)? {
            Outcome::QuotaSet { .. } => {
                let state = self.ctx.state()?;
                let quota = state
                    .quotas_view(Some(&user))
                    .into_iter()
                    .find(|q| q.band == band)
                    .map(wire::quota_to_wire);
                Ok(Response::new(v1::SetQuotaResponse {
                    quota,
                    index: committed.index,
                }))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn get_quota(
        &self,
        request: Request<v1::GetQuotaRequest>,
    ) -> Result<Response<v1::GetQuotaResponse>, Status> {
        let request = request.into_inner();
        let user = if request.user.is_empty() {
            None
        } else {
            Some(wire::name("user", &request.user)?)
        };
        let state = self.ctx.state()?;
        Ok(Response::new(v1::GetQuotaResponse {
            quotas: state
                .quotas_view(user.as_deref())
                .into_iter()
                .map(wire::quota_to_wire)
                .collect(),
            meta: Some(self.ctx.read_meta(&state)),
        }))
    }
}

fn token_to_wire(token: TokenInfo) -> v1::TokenInfo {
    v1::TokenInfo {
        id: token.id,
        user: token.user,
        admin: token.admin,
        created_index: token.created_index,
        created_ms: token.created_ms,
    }
}
