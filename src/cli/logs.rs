//! `borg logs JOB/INDEX [--stderr] [-f]`: a task's output, streamed from the borglet of the
//! machine it runs on (found through the master: GetJob names the machine, ListMachines its
//! borglet's address).

use super::job::get_job;
use super::{master_client, GlobalArgs};
use anyhow::{bail, Context};
use borg_proto::v1;
use borg_proto::v1::borglet_service_client::BorgletServiceClient;
use clap::Args;
use std::io::Write;
use tonic::transport::Channel;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The task, as JOB/INDEX.
    pub task: String,
    /// Show stderr instead of stdout.
    #[arg(long)]
    pub stderr: bool,
    /// Keep streaming what the task writes until it ends (Ctrl-C to stop).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Start this many bytes before the end of the current log file.
    #[arg(long)]
    pub tail_bytes: Option<u64>,
}

/// A task's placement: its borglet and incarnation.
pub struct TaskPlacement {
    pub job: String,
    pub index: u32,
    pub incarnation: u64,
    pub machine: String,
    pub borglet: BorgletServiceClient<Channel>,
}

/// Splits `JOB/INDEX`.
pub fn parse_task(task: &str) -> anyhow::Result<(String, u32)> {
    let (job, index) = task
        .rsplit_once('/')
        .with_context(|| format!("{task:?} is not JOB/INDEX (for example web/0)"))?;
    let index = index
        .parse()
        .with_context(|| format!("{index:?} in {task:?} is not a task index"))?;
    Ok((job.to_owned(), index))
}

/// Finds where `JOB/INDEX` runs and connects to that machine's borglet.
pub async fn locate_task(global: &GlobalArgs, task: &str) -> anyhow::Result<TaskPlacement> {
    let (job_name, index) = parse_task(task)?;
    let client = master_client(global)?;
    let job = get_job(&client, &job_name, false).await?;
    let Some(placed) = job.tasks.iter().find(|t| t.index == index) else {
        bail!("job {job_name:?} has no task {index}");
    };
    if placed.machine.is_empty() {
        bail!("task {job_name}/{index} is not placed on a machine (pending): it has no logs yet");
    }
    let machines = super::machine::list_machines(&client).await?;
    let address = machines
        .machines
        .iter()
        .filter_map(|m| m.info.as_ref())
        .find(|info| info.name == placed.machine)
        .map(|info| info.address.clone())
        .with_context(|| format!("machine {:?} is not registered", placed.machine))?;
    let borglet = BorgletServiceClient::connect(format!("http://{address}"))
        .await
        .with_context(|| {
            format!(
                "connecting to the borglet of machine {} at {address}",
                placed.machine
            )
        })?
        .max_decoding_message_size(16 << 20);
    Ok(TaskPlacement {
        job: job_name,
        index,
        incarnation: placed.incarnation,
        machine: placed.machine.clone(),
        borglet,
    })
}

pub async fn run(args: LogsArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let mut placement = locate_task(global, &args.task).await?;
    let stream = if args.stderr {
        v1::LogStream::Stderr
    } else {
        v1::LogStream::Stdout
    };
    let mut chunks = placement
        .borglet
        .read_logs(v1::ReadLogsRequest {
            job: placement.job.clone(),
            index: placement.index,
            incarnation: placement.incarnation,
            stream: stream as i32,
            follow: args.follow,
            tail_bytes: args.tail_bytes.unwrap_or(0),
        })
        .await
        .with_context(|| {
            format!(
                "reading the logs of {} on machine {}",
                args.task, placement.machine
            )
        })?
        .into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = chunks
        .message()
        .await
        .with_context(|| format!("streaming the logs of {}", args.task))?
    {
        out.write_all(&chunk.data)?;
        out.flush()?;
    }
    Ok(())
}
