//! `borg ssh JOB/INDEX -- CMD...`: runs one command inside a running task (its namespaces,
//! cgroup and user) through its borglet, and exits with the command's exit code.
//!
//! The borglet lets in the task's owner or an admin, by the user name this command sends: it
//! is NOT yet authenticated at the borglet (the name comes from the master's WhoAmI when the
//! cell has tokens, else from $USER). An interactive PTY shell is not implemented yet.

use super::logs::locate_task;
use super::{master_client, GlobalArgs};
use anyhow::Context;
use borg_proto::v1;
use borg_proto::v1::cell_service_client::CellServiceClient;
use clap::Args;
use std::io::Write;

#[derive(Debug, Args)]
pub struct SshArgs {
    /// The task, as JOB/INDEX.
    pub task: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
    /// The user to act as (default: who the master says your token is, else $USER).
    #[arg(long = "as")]
    pub as_user: Option<String>,
    /// Kill the command after this long.
    #[arg(long, default_value_t = 60_000)]
    pub timeout_ms: u64,
}

/// Who the caller is: the master's answer for its token, else the local user name.
async fn caller(global: &GlobalArgs) -> String {
    let from_master = async {
        let client = master_client(global).ok()?;
        let me = client
            .call(|channel| async move {
                CellServiceClient::new(channel)
                    .who_am_i(v1::WhoAmIRequest {})
                    .await
                    .map(|r| r.into_inner())
            })
            .await
            .ok()?;
        // A cell without authentication answers for the control plane, not for a person.
        (!me.user.is_empty() && !me.control_plane).then_some(me.user)
    };
    match from_master.await {
        Some(user) => user,
        None => std::env::var("USER").unwrap_or_default(),
    }
}

pub async fn run(args: SshArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let user = match args.as_user {
        Some(user) => user,
        None => caller(global).await,
    };
    let mut placement = locate_task(global, &args.task).await?;
    let output = placement
        .borglet
        .exec(v1::ExecRequest {
            job: placement.job.clone(),
            index: placement.index,
            incarnation: placement.incarnation,
            user,
            command: args.command.clone(),
            timeout_ms: args.timeout_ms,
        })
        .await
        .with_context(|| {
            format!(
                "running {:?} in {} on machine {}",
                args.command, args.task, placement.machine
            )
        })?
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
