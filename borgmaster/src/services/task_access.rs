//! `TaskAccessService`: users' way into their tasks (`borg logs`, `borg ssh`). The borglet
//! obeys only the control plane, so the master stands between: it takes the caller's
//! identity from the token (services::auth), lets in the job's owner or an admin, finds the
//! task's machine and borglet address in the applied state, and calls that borglet with the
//! cluster token, passing the answer (or stream) back unchanged. Every session is logged and
//! counted.

use super::auth::{identity, Identity};
use crate::context::ReplicaContext;
use crate::state::{Command, TaskEventKind, TASK_EVENT_MESSAGE_MAX_LEN};
use borg_common::master_client::TokenInterceptor;
use borg_proto::v1;
use borg_proto::v1::borglet_service_client::BorgletServiceClient;
use borg_proto::v1::task_access_service_server::TaskAccessService;
use prometheus::{IntCounterVec, Opts, Registry};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

/// Deadline of connecting to a borglet.
const BORGLET_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Channels to borglets kept; past this the cache is emptied (channels reconnect lazily).
const BORGLET_CHANNELS_MAX: usize = 1_024;
/// Largest message passed through from a borglet (an Exec's output).
const BORGLET_MESSAGE_MAX_BYTES: usize = 16 << 20;

type BorgletClient = BorgletServiceClient<InterceptedService<Channel, TokenInterceptor>>;

/// Sessions by kind (`logs`, `exec`, `shell`) and result (`allowed`, `refused`).
fn sessions_counter(registry: &Registry) -> Result<IntCounterVec, prometheus::Error> {
    let sessions = IntCounterVec::new(
        Opts::new(
            "task_access_sessions_total",
            "Users' log reads and borgssh sessions through the master, by kind and result",
        ),
        &["kind", "result"],
    )?;
    registry.register(Box::new(sessions.clone()))?;
    Ok(sessions)
}

pub struct TaskAccessApi {
    ctx: Arc<ReplicaContext>,
    /// None when it could not be registered (access works all the same).
    sessions: Option<IntCounterVec>,
    channels: Mutex<HashMap<String, Channel>>,
}

/// Where a task runs and who asked for it.
#[derive(Clone)]
struct Placement {
    incarnation: u64,
    machine: String,
    address: String,
    user: String,
    admin: bool,
}

impl TaskAccessApi {
    /// Registers its metrics in the replica's registry.
    pub fn new(ctx: Arc<ReplicaContext>) -> Self {
        let sessions = sessions_counter(&ctx.metrics.registry)
            .inspect_err(|error| tracing::warn!(%error, "task access metrics are not served"))
            .ok();
        TaskAccessApi {
            ctx,
            sessions,
            channels: Mutex::new(HashMap::new()),
        }
    }

    fn count(&self, kind: &str, result: &str) {
        if let Some(sessions) = &self.sessions {
            sessions.with_label_values(&[kind, result]).inc();
        }
    }

    /// Authorizes `identity` for task `job/index` and finds its borglet.
    fn place(
        &self,
        kind: &str,
        identity: &Identity,
        job: &str,
        index: u32,
    ) -> Result<Placement, Status> {
        let state = self.ctx.state()?;
        let record = state
            .job_view(job)
            .ok_or_else(|| Status::not_found(format!("no job named {job:?}")))?;
        let owner = record
            .spec
            .as_ref()
            .map(|s| s.owner.clone())
            .unwrap_or_default();
        let (user, admin) = match identity {
            // Authentication is off: every caller is trusted, and acts as the owner.
            Identity::Open => (owner.clone(), true),
            Identity::User(caller) => (caller.user.clone(), caller.admin),
            Identity::ControlPlane => {
                self.count(kind, "refused");
                return Err(Status::permission_denied(
                    "the cluster token acts for no user: use a user token to read logs or enter a task",
                ));
            }
        };
        if !admin && user != owner {
            self.count(kind, "refused");
            tracing::warn!(%user, %job, index, kind, "task access refused: not the owner or an admin");
            return Err(Status::permission_denied(format!(
                "user {user:?} may not enter task {job}/{index}: only its owner ({owner}) or an admin may"
            )));
        }
        let task = record
            .tasks
            .iter()
            .find(|t| t.index == index)
            .ok_or_else(|| Status::not_found(format!("job {job:?} has no task {index}")))?;
        if task.machine.is_empty() {
            return Err(Status::failed_precondition(format!(
                "task {job}/{index} is not placed on a machine (pending): nothing to read or enter yet"
            )));
        }
        let address = state
            .machine_view(&task.machine)
            .and_then(|m| m.info)
            .map(|info| info.address)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| {
                Status::unavailable(format!(
                    "machine {} of task {job}/{index} has no registered borglet address",
                    task.machine
                ))
            })?;
        Ok(Placement {
            incarnation: task.incarnation,
            machine: task.machine.clone(),
            address,
            user,
            admin,
        })
    }

    /// A client of the borglet at `address` that sends the cluster token.
    fn borglet(&self, placement: &Placement) -> Result<BorgletClient, Status> {
        let channel = {
            let mut channels = self.channels.lock().map_err(|_| {
                Status::internal("borglet channel cache poisoned; restart this replica")
            })?;
            match channels.get(&placement.address) {
                Some(channel) => channel.clone(),
                None => {
                    let endpoint = Endpoint::from_shared(format!("http://{}", placement.address))
                        .map_err(|e| {
                            Status::unavailable(format!(
                                "machine {} registered a bad borglet address {:?}: {e}",
                                placement.machine, placement.address
                            ))
                        })?
                        .connect_timeout(Duration::from_millis(BORGLET_CONNECT_TIMEOUT_MS))
                        .tcp_nodelay(true);
                    let channel = endpoint.connect_lazy();
                    if channels.len() >= BORGLET_CHANNELS_MAX {
                        channels.clear();
                    }
                    channels.insert(placement.address.clone(), channel.clone());
                    channel
                }
            }
        };
        Ok(
            BorgletServiceClient::with_interceptor(channel, self.ctx.peer_token.clone())
                .max_decoding_message_size(BORGLET_MESSAGE_MAX_BYTES)
                .max_encoding_message_size(BORGLET_MESSAGE_MAX_BYTES),
        )
    }
}

/// Records a borgssh session as a replicated event on the task (`borg job status JOB/INDEX`
/// shows it). In the background: a session does not wait for the log, and a cell without a
/// leader still lets owners in (the log line and metric remain).
fn record_session(
    ctx: &Arc<ReplicaContext>,
    job: &str,
    index: u32,
    placement: &Placement,
    kind: TaskEventKind,
    what: String,
) {
    tracing::info!(
        user = %placement.user,
        task = %format!("{job}/{index}"),
        machine = %placement.machine,
        "borgssh session: {what}"
    );
    let mut message = format!(
        "user {} on machine {}: {what}",
        placement.user, placement.machine
    );
    if message.len() > TASK_EVENT_MESSAGE_MAX_LEN {
        let mut cut = TASK_EVENT_MESSAGE_MAX_LEN;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    let command = Command::RecordTaskEvent {
        task: borg_model::TaskId::new(job, index),
        incarnation: placement.incarnation,
        kind,
        message,
    };
    let ctx = Arc::clone(ctx);
    tokio::spawn(async move {
        if let Err(status) = ctx.propose(String::new(), command).await {
            tracing::warn!(error = %status.message(), "a borgssh session was not recorded as a task event");
        }
    });
}

/// A borglet's refusal or failure, told as the machine's.
fn from_borglet(machine: &str, status: Status) -> Status {
    Status::new(
        status.code(),
        format!("borglet of machine {machine}: {}", status.message()),
    )
}

#[tonic::async_trait]
impl TaskAccessService for TaskAccessApi {
    type ReadLogsStream = Streaming<v1::LogChunk>;
    type ShellStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<v1::ShellOutput, Status>> + Send + 'static>,
    >;

    async fn read_logs(
        &self,
        request: Request<v1::ReadLogsRequest>,
    ) -> Result<Response<Self::ReadLogsStream>, Status> {
        let identity = identity(&request)?;
        let mut request = request.into_inner();
        let placement = self.place("logs", &identity, &request.job, request.index)?;
        if request.incarnation == 0 {
            request.incarnation = placement.incarnation;
        }
        self.count("logs", "allowed");
        let stream = self
            .borglet(&placement)?
            .read_logs(request)
            .await
            .map_err(|s| from_borglet(&placement.machine, s))?
            .into_inner();
        Ok(Response::new(stream))
    }

    async fn exec(
        &self,
        request: Request<v1::ExecRequest>,
    ) -> Result<Response<v1::ExecResponse>, Status> {
        let identity = identity(&request)?;
        let mut request = request.into_inner();
        let placement = self.place("exec", &identity, &request.job, request.index)?;
        request.user = placement.user.clone();
        request.caller_admin = placement.admin;
        if request.incarnation == 0 {
            request.incarnation = placement.incarnation;
        }
        self.count("exec", "allowed");
        record_session(
            &self.ctx,
            &request.job,
            request.index,
            &placement,
            TaskEventKind::SshCommand,
            format!("ran {:?}", request.command),
        );
        let response = self
            .borglet(&placement)?
            .exec(request)
            .await
            .map_err(|s| from_borglet(&placement.machine, s))?;
        Ok(Response::new(response.into_inner()))
    }

    async fn shell(
        &self,
        request: Request<Streaming<v1::ShellInput>>,
    ) -> Result<Response<Self::ShellStream>, Status> {
        let identity = identity(&request)?;
        let mut inputs = request.into_inner();
        let first = inputs
            .message()
            .await?
            .and_then(|m| m.input)
            .ok_or_else(|| Status::invalid_argument("a shell must begin with a `start` message"))?;
        let v1::shell_input::Input::Start(mut start) = first else {
            return Err(Status::invalid_argument(
                "a shell must begin with a `start` message",
            ));
        };
        let placement = self.place("shell", &identity, &start.job, start.index)?;
        start.user = placement.user.clone();
        start.caller_admin = placement.admin;
        if start.incarnation == 0 {
            start.incarnation = placement.incarnation;
        }
        self.count("shell", "allowed");
        record_session(
            &self.ctx,
            &start.job,
            start.index,
            &placement,
            TaskEventKind::SshSession,
            match start.command.is_empty() {
                true => "opened a shell".to_owned(),
                false => format!("opened a terminal running {:?}", start.command),
            },
        );
        // A session the borglet closes (idle timeout) is recorded on the task as well.
        let (ctx, job, index, session) = (
            Arc::clone(&self.ctx),
            start.job.clone(),
            start.index,
            placement.clone(),
        );
        let opening = v1::ShellInput {
            input: Some(v1::shell_input::Input::Start(start)),
        };
        // The user's keystrokes after the start, until they hang up or the stream breaks.
        let rest = inputs.map_while(|message| message.ok());
        let outbound = tokio_stream::once(opening).chain(rest);
        let outputs = self
            .borglet(&placement)?
            .shell(outbound)
            .await
            .map_err(|s| from_borglet(&placement.machine, s))?
            .into_inner()
            .map(move |output| {
                if let Ok(v1::ShellOutput {
                    output: Some(v1::shell_output::Output::Closed(reason)),
                }) = &output
                {
                    let what = format!("shell closed by the borglet: {reason}");
                    record_session(&ctx, &job, index, &session, TaskEventKind::SshSession, what);
                }
                output
            });
        Ok(Response::new(Box::pin(outputs)))
    }
}
