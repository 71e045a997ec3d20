//! Command-line interface: argument definitions and dispatch to one module per command group.

mod alloc;
mod cell_view;
mod daemons;
mod dev;
mod exit;
mod job;
mod logs;
mod machine;
mod master_status;
mod plan;
mod quota;
mod render;
mod rpc;
mod sim;
mod ssh;
mod task_status;
mod token;
mod why;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use exit::exit_code_of;

/// Master replicas of a `borg dev` cell with the default port base.
pub const DEV_MASTERS: &str = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103";

#[derive(Debug, Parser)]
#[command(
    name = "borg",
    version,
    about = "A Borg-style cell manager: run jobs on a cell of machines",
    long_about = "A Borg-style cell manager. `borg dev` starts a whole cell on this machine; \
                  `borg job run FILE.bcl` runs a job on it; `borg job status NAME` shows it.",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Master replicas to talk to (host:port, comma-separated); any one will do, the leader is
    /// found from there.
    #[arg(long, global = true, env = "BORG_MASTER", default_value = DEV_MASTERS, value_delimiter = ',')]
    pub master: Vec<String>,
    /// Output format of commands that print results.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Log filter for daemons and diagnostics (tracing's RUST_LOG syntax).
    #[arg(long, global = true, env = "BORG_LOG")]
    pub log: Option<String>,
    /// Token to authenticate with (else --token-file, ~/.config/borg/token, or a dev cell's
    /// /var/tmp/borg-dev/admin.token).
    #[arg(long, global = true, env = "BORG_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the token to authenticate with.
    #[arg(long, global = true, env = "BORG_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit, inspect and stop jobs.
    #[command(subcommand)]
    Job(job::JobCommand),
    /// Alloc sets: list them, see what their jobs use, release them.
    #[command(subcommand)]
    Alloc(alloc::AllocCommand),
    /// Look at the machines of the cell.
    #[command(subcommand)]
    Machine(machine::MachineCommand),
    /// Stream a task's stdout or stderr (JOB/INDEX).
    Logs(logs::LogsArgs),
    /// Run a command inside a running task: its namespaces, cgroup and user (JOB/INDEX -- CMD...).
    Ssh(ssh::SshArgs),
    /// Capacity planning on traces with the real scheduler (compaction, experiments, fit).
    #[command(subcommand)]
    Sim(sim::SimCommand),
    /// Quotas per user and priority band.
    #[command(subcommand)]
    Quota(quota::QuotaCommand),
    /// Tokens: create one for a user, or show who you are.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Run a borgmaster replica, or `borg master status` to see every replica.
    Master(daemons::MasterArgs),
    /// Run the scheduler.
    Scheduler(daemons::SchedulerArgs),
    /// Run a link shard.
    Linkshard(daemons::LinkShardArgs),
    /// Run the machine agent.
    Borglet(daemons::BorgletArgs),
    /// Start a whole cell on loopback in this process (masters, scheduler, link shard, borglet).
    Dev(dev::DevArgs),
    /// Start a dev cell, run examples/hello.bcl on it and show its status.
    Demo(dev::DemoArgs),
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Daemons log at info by default; client commands only warn.
pub fn init_tracing(cli: &Cli) {
    let default = match cli.command {
        Command::Master(ref args) if args.action.is_none() => "info",
        Command::Scheduler(_) | Command::Linkshard(_) | Command::Borglet(_) | Command::Dev(_) => {
            "info"
        }
        _ => "warn",
    };
    let filter = cli.global.log.clone().unwrap_or_else(|| default.to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let global = cli.global;
    match cli.command {
        Command::Job(command) => job::run(command, &global).await,
        Command::Alloc(command) => alloc::run(command, &global).await,
        Command::Machine(command) => machine::run(command, &global).await,
        Command::Logs(args) => logs::run(args, &global).await,
        Command::Ssh(args) => ssh::run(args, &global).await,
        Command::Sim(command) => sim::run(command, global.output == OutputFormat::Json).await,
        Command::Quota(command) => quota::run(command, &global).await,
        Command::Token(command) => token::run(command, &global).await,
        Command::Master(args) => daemons::run_master(args, &global).await,
        Command::Scheduler(args) => daemons::run_scheduler(args, &global).await,
        Command::Linkshard(args) => daemons::run_linkshard(args, &global).await,
        Command::Borglet(args) => daemons::run_borglet(args, &global).await,
        Command::Dev(args) => dev::run_dev(args).await,
        Command::Demo(args) => dev::run_demo(args, &global).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "borg", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// A client of the masters named on the command line.
pub fn master_client(global: &GlobalArgs) -> anyhow::Result<borg_common::MasterClient> {
    Ok(borg_common::MasterClient::new(master_client_config(
        global,
    )?)?)
}

/// The configuration `master_client` uses, for callers that change a bound (`borg ssh`).
pub fn master_client_config(
    global: &GlobalArgs,
) -> anyhow::Result<borg_common::MasterClientConfig> {
    let endpoints = global
        .master
        .iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    let token = token::resolve(global.token.as_deref(), global.token_file.as_deref())?;
    Ok(borg_common::MasterClientConfig {
        token,
        ..borg_common::MasterClientConfig::new(endpoints)
    })
}

/// Cancelled on the first Ctrl-C or SIGTERM.
pub fn shutdown_on_signal() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops this");
                    let _ = tokio::signal::ctrl_c().await;
                    trigger.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        trigger.cancel();
    });
    token
}
