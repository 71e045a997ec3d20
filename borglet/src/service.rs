//! The gRPC face of the borglet: `Poll`, `ReadLogs` and `Exec` (borgssh).

use crate::assignment::TaskKey;
use crate::log_reader::{stream_log, LogRead, LOG_STREAM_QUEUE_MAX};
use crate::metrics::BorgletMetrics;
use crate::report_changes::ReportCursor;
use crate::supervisor::{ExecError, PollError, Supervisor};
use borg_common::now_ms;
use borg_model::MachineInfo;
use borg_proto::convert::group_task_keys;
use borg_proto::v1;
use borg_proto::v1::borglet_service_server::BorgletService;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::{Request, Response, Status};

pub struct BorgletRpc {
    pub supervisor: Arc<Supervisor>,
    pub info: MachineInfo,
    pub metrics: BorgletMetrics,
    /// Bounds the log streams served at once.
    pub log_readers: Arc<tokio::sync::Semaphore>,
    /// Users besides a task's owner who may enter it.
    pub exec_admin_users: Vec<String>,
    pub exec_timeout_max_ms: u64,
    /// Bounds the interactive sessions served at once.
    pub shell_sessions: Arc<tokio::sync::Semaphore>,
    /// Interactive sessions open per task (at most `SHELL_SESSIONS_PER_TASK_MAX` each).
    pub shell_sessions_per_task: Arc<Mutex<HashMap<TaskKey, usize>>>,
    /// See `BorgletConfig::shell_idle_timeout_s`.
    pub shell_idle_timeout: Duration,
}

/// One open interactive session of a task; gives its place back when dropped.
struct TaskSession {
    open: Arc<Mutex<HashMap<TaskKey, usize>>>,
    key: TaskKey,
}

impl TaskSession {
    /// Takes a place among the task's sessions, if one is free.
    fn open(open: &Arc<Mutex<HashMap<TaskKey, usize>>>, key: &TaskKey) -> Option<TaskSession> {
        let mut counts = open.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(key.clone()).or_insert(0);
        if *count >= SHELL_SESSIONS_PER_TASK_MAX {
            return None;
        }
        *count += 1;
        Some(TaskSession {
            open: Arc::clone(open),
            key: key.clone(),
        })
    }
}

impl Drop for TaskSession {
    fn drop(&mut self) {
        let mut counts = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// Most argv elements of a borgssh command.
pub const EXEC_ARGS_MAX: usize = 1_024;
/// Most interactive borgssh sessions at once.
pub const SHELL_SESSIONS_MAX: usize = 64;
/// Most interactive borgssh sessions into one task at once.
pub const SHELL_SESSIONS_PER_TASK_MAX: usize = 8;
/// What an interactive session runs when no command is given.
const DEFAULT_SHELL: &str = "/bin/sh";
/// TERM of a session whose caller did not say.
const DEFAULT_TERM: &str = "xterm";

impl BorgletRpc {
    /// The running incarnation `incarnation` (0: the current one) of `job/index`.
    fn running_task(
        &self,
        job: &str,
        index: u32,
        incarnation: u64,
    ) -> Result<crate::supervisor::LocatedTask, Status> {
        self.supervisor
            .locate(job, index, incarnation)
            .filter(|t| t.running_pid.is_some())
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "task {job}/{index} is not running on machine {}",
                    self.info.name
                ))
            })
    }

    /// `user` and `caller_admin` come from the master, which authenticated the caller; the
    /// check here is a second line behind the master's.
    fn authorize(
        &self,
        task: &crate::supervisor::LocatedTask,
        user: &str,
        caller_admin: bool,
    ) -> Result<(), Status> {
        let owner = task.task.as_ref().map(|a| a.owner.as_str()).unwrap_or("");
        let allowed = !user.is_empty()
            && (user == owner || caller_admin || self.exec_admin_users.iter().any(|u| u == user));
        if allowed {
            return Ok(());
        }
        self.metrics
            .exec_sessions
            .with_label_values(&["refused"])
            .inc();
        tracing::warn!(task = %task.key, %user, "borgssh refused: not the owner or an admin");
        Err(Status::permission_denied(format!(
            "user {user:?} may not enter task {}: only its owner ({owner}) or an admin may",
            task.key
        )))
    }
}

impl From<ExecError> for Status {
    fn from(error: ExecError) -> Status {
        match &error {
            ExecError::NotRunning { .. } => Status::failed_precondition(error.to_string()),
            ExecError::EmptyCommand => Status::invalid_argument(error.to_string()),
            ExecError::Namespaces { .. } | ExecError::Terminal(_) => {
                Status::unavailable(error.to_string())
            }
            ExecError::Spawn(spawn) if spawn.is_permanent() => {
                Status::invalid_argument(error.to_string())
            }
            ExecError::Spawn(_) => Status::internal(error.to_string()),
        }
    }
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
    type ReadLogsStream = tokio_stream::wrappers::ReceiverStream<Result<v1::LogChunk, Status>>;
    type ShellStream = tokio_stream::wrappers::ReceiverStream<Result<v1::ShellOutput, Status>>;

    async fn shell(
        &self,
        request: Request<tonic::Streaming<v1::ShellInput>>,
    ) -> Result<Response<Self::ShellStream>, Status> {
        let mut inputs = request.into_inner();
        let start = match inputs.message().await?.and_then(|m| m.input) {
            Some(v1::shell_input::Input::Start(start)) => start,
            _ => {
                return Err(Status::invalid_argument(
                    "a shell must begin with a `start` message",
                ))
            }
        };
        if start.command.len() > EXEC_ARGS_MAX {
            return Err(Status::invalid_argument(format!(
                "give a command of at most {EXEC_ARGS_MAX} arguments"
            )));
        }
        let task = self.running_task(&start.job, start.index, start.incarnation)?;
        self.authorize(&task, &start.user, start.caller_admin)?;
        let permit = Arc::clone(&self.shell_sessions)
            .try_acquire_owned()
            .map_err(|_| {
                Status::resource_exhausted(
                    "this borglet runs its most interactive sessions at once; try again later",
                )
            })?;
        let task_session = TaskSession::open(&self.shell_sessions_per_task, &task.key)
            .ok_or_else(|| {
                Status::resource_exhausted(format!(
                    "task {}/{} already has {SHELL_SESSIONS_PER_TASK_MAX} interactive sessions open; close one first",
                    task.key.job, task.key.index
                ))
            })?;
        let command = if start.command.is_empty() {
            vec![DEFAULT_SHELL.to_owned()]
        } else {
            start.command.clone()
        };
        let window = start
            .window
            .unwrap_or(v1::WindowSize { rows: 24, cols: 80 });
        let term = if start.term.is_empty() {
            DEFAULT_TERM
        } else {
            start.term.as_str()
        };
        tracing::info!(task = %task.key, user = %start.user, command = ?command, "borgssh terminal session");
        let opened = self.supervisor.open_terminal_in_task(
            &task,
            &command,
            (
                crate::shell::window_dimension(window.rows),
                crate::shell::window_dimension(window.cols),
            ),
            term,
        );
        let result = if opened.is_ok() { "ran" } else { "failed" };
        self.metrics
            .exec_sessions
            .with_label_values(&[result])
            .inc();
        let (master, process) = opened?;
        let (sender, receiver) = tokio::sync::mpsc::channel(crate::shell::SHELL_OUTPUT_QUEUE_MAX);
        let idle_timeout = self.shell_idle_timeout;
        tokio::spawn(async move {
            crate::shell::relay(master, process, inputs, sender, idle_timeout).await;
            drop(task_session);
            drop(permit);
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            receiver,
        )))
    }

    async fn read_logs(
        &self,
        request: Request<v1::ReadLogsRequest>,
    ) -> Result<Response<Self::ReadLogsStream>, Status> {
        let request = request.into_inner();
        let stream = v1::LogStream::try_from(request.stream).map_err(|_| {
            Status::invalid_argument(format!("unknown log stream {}", request.stream))
        })?;
        let task = self
            .supervisor
            .locate(&request.job, request.index, request.incarnation)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "task {}/{} has no logs on machine {}: it may run elsewhere, or its sandbox was deleted",
                    request.job, request.index, self.info.name
                ))
            })?;
        let permit = Arc::clone(&self.log_readers)
            .try_acquire_owned()
            .map_err(|_| {
                Status::resource_exhausted(
                    "this borglet serves its most log streams at once; try again later",
                )
            })?;
        let read = LogRead {
            path: match stream {
                v1::LogStream::Stdout => task.sandbox.stdout(),
                v1::LogStream::Stderr => task.sandbox.stderr(),
            },
            incarnation: task.key.incarnation,
            tail_bytes: request.tail_bytes,
            follow: request.follow,
        };
        let (sender, receiver) = tokio::sync::mpsc::channel(LOG_STREAM_QUEUE_MAX);
        let supervisor = Arc::clone(&self.supervisor);
        let key = task.key;
        tokio::spawn(async move {
            stream_log(read, || supervisor.is_live(&key), sender).await;
            drop(permit);
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            receiver,
        )))
    }

    async fn exec(
        &self,
        request: Request<v1::ExecRequest>,
    ) -> Result<Response<v1::ExecResponse>, Status> {
        let request = request.into_inner();
        if request.command.is_empty() || request.command.len() > EXEC_ARGS_MAX {
            return Err(Status::invalid_argument(format!(
                "give a command of 1 to {EXEC_ARGS_MAX} arguments"
            )));
        }
        let task = self.running_task(&request.job, request.index, request.incarnation)?;
        self.authorize(&task, &request.user, request.caller_admin)?;
        let timeout_ms = match request.timeout_ms {
            0 => self.exec_timeout_max_ms,
            asked => asked.min(self.exec_timeout_max_ms),
        };
        tracing::info!(task = %task.key, user = %request.user, command = ?request.command, "borgssh session");
        let output = self
            .supervisor
            .run_in_task(
                &task,
                &request.command,
                std::time::Duration::from_millis(timeout_ms),
            )
            .await;
        let result = if output.is_ok() { "ran" } else { "failed" };
        self.metrics
            .exec_sessions
            .with_label_values(&[result])
            .inc();
        let output = output?;
        Ok(Response::new(v1::ExecResponse {
            exit_code: output.exit.exit_code(),
            stdout: output.stdout,
            stderr: output.stderr,
            truncated: output.truncated || output.timed_out,
            incarnation: task.key.incarnation,
        }))
    }

    async fn poll(
        &self,
        request: Request<v1::PollRequest>,
    ) -> Result<Response<v1::PollResponse>, Status> {
        let request = request.into_inner();
        let keys = request
            .keyed
            .then(|| task_keys_from_wire(request.desired_keys));
        let since = ReportCursor {
            epoch: request.report_epoch,
            seq: request.reports_since,
        };
        let (report, unknown) = self
            .supervisor
            .poll_keyed(&request.machine, request.desired, keys, since)
            .await?;
        let forgotten = group_task_keys(
            report
                .forgotten
                .iter()
                .map(|k| (k.job.as_str(), k.index, k.incarnation)),
        );
        Ok(Response::new(v1::PollResponse {
            machine: self.info.name.clone(),
            info: Some(self.info.clone().into()),
            tasks: report.tasks,
            usage: Some(report.usage.into()),
            report_time_ms: now_ms(),
            keyed_polls: true,
            unknown: group_task_keys(
                unknown
                    .iter()
                    .map(|k| (k.job.as_str(), k.index, k.incarnation)),
            ),
            report_epoch: report.cursor.epoch,
            report_seq: report.cursor.seq,
            incremental: report.incremental,
            forgotten,
        }))
    }
}

/// Keys of a keyed poll (pairs beyond the shorter of a job's two lists are ignored).
fn task_keys_from_wire(keys: Vec<v1::JobTaskKeys>) -> Vec<TaskKey> {
    keys.into_iter()
        .flat_map(|k| {
            let job = k.job;
            k.indices
                .into_iter()
                .zip(k.incarnations)
                .map(move |(index, incarnation)| TaskKey::new(job.clone(), index, incarnation))
        })
        .collect()
}
