//! `borg logs JOB/INDEX [--stderr] [-f]`: a task's output, streamed through the master
//! (`TaskAccessService.ReadLogs`), which checks that the caller owns the job (or is an admin)
//! and relays the stream from the borglet of the task's machine.

use super::{master_client, GlobalArgs};
use anyhow::Context;
use borg_proto::v1;
use borg_proto::v1::task_access_service_client::TaskAccessServiceClient;
use clap::Args;
use std::io::Write;

/// Largest message accepted from the master (a log chunk, an Exec's output).
pub const ACCESS_MESSAGE_MAX_BYTES: usize = 16 << 20;

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

pub async fn run(args: LogsArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let (job, index) = parse_task(&args.task)?;
    let stream = if args.stderr {
        v1::LogStream::Stderr
    } else {
        v1::LogStream::Stdout
    };
    let request = v1::ReadLogsRequest {
        job,
        index,
        incarnation: 0,
        stream: stream as i32,
        follow: args.follow,
        tail_bytes: args.tail_bytes.unwrap_or(0),
    };
    let mut chunks = master_client(global)?
        .call(|channel| {
            let request = request.clone();
            async move {
                TaskAccessServiceClient::new(channel)
                    .max_decoding_message_size(ACCESS_MESSAGE_MAX_BYTES)
                    .read_logs(request)
                    .await
            }
        })
        .await
        .with_context(|| format!("reading the logs of {}", args.task))?
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
