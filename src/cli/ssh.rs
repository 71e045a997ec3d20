//! `borg ssh JOB/INDEX [-- CMD...]`: a shell on a PTY, or one command, inside a running task
//! (its namespaces, cgroup and user), through the master (`TaskAccessService`): the master
//! lets in the job's owner or an admin, by the caller's token, records the session and relays
//! it to the task's borglet. Exits with the command's (or shell's) exit code.

mod session;

use super::logs::{parse_task, ACCESS_MESSAGE_MAX_BYTES};
use super::{master_client_config, GlobalArgs};
use anyhow::Context;
use borg_common::MasterClient;
use borg_proto::v1;
use borg_proto::v1::task_access_service_client::TaskAccessServiceClient;
use clap::Args;
use std::io::Write;

/// Time allowed beyond a command's own timeout for the answer to come back.
const EXEC_ANSWER_MARGIN_MS: u64 = 5_000;

#[derive(Debug, Args)]
pub struct SshArgs {
    /// The task, as JOB/INDEX.
    pub task: String,
    /// The command and its arguments, after `--`; none opens an interactive shell.
    #[arg(last = true)]
    pub command: Vec<String>,
    /// Run the command on a terminal (PTY), as the shell is.
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Kill a command (not a shell) after this long.
    #[arg(long, default_value_t = 60_000)]
    pub timeout_ms: u64,
}

/// A master client whose calls may take `request_timeout_ms` (a command's run time).
fn access_client(global: &GlobalArgs, request_timeout_ms: u64) -> anyhow::Result<MasterClient> {
    let mut config = master_client_config(global)?;
    config.request_timeout_ms = request_timeout_ms;
    config.call_deadline_ms = config.call_deadline_ms.max(request_timeout_ms);
    Ok(MasterClient::new(config)?)
}

pub async fn run(args: SshArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let (job, index) = parse_task(&args.task)?;
    if args.command.is_empty() || args.tty {
        let code = session::run(global, job, index, args.command).await?;
        std::process::exit(code.clamp(0, 255));
    }
    let request = v1::ExecRequest {
        job,
        index,
        incarnation: 0,
        user: String::new(),
        command: args.command.clone(),
        timeout_ms: args.timeout_ms,
        caller_admin: false,
    };
    let output = access_client(global, args.timeout_ms + EXEC_ANSWER_MARGIN_MS)?
        .call(|channel| {
            let request = request.clone();
            async move {
                TaskAccessServiceClient::new(channel)
                    .max_decoding_message_size(ACCESS_MESSAGE_MAX_BYTES)
                    .exec(request)
                    .await
            }
        })
        .await
        .with_context(|| format!("running {:?} in {}", args.command, args.task))?
        .into_inner();
    std::io::stdout().write_all(&output.stdout)?;
    std::io::stdout().flush()?;
    std::io::stderr().write_all(&output.stderr)?;
    if output.truncated {
        eprintln!("borg ssh: output was cut short (too long, or the command timed out)");
    }
    if output.exit_code != 0 {
        std::process::exit(output.exit_code.clamp(1, 255));
    }
    Ok(())
}
