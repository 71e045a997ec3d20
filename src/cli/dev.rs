//! `borg dev` and `borg demo`: a whole cell on loopback in one process.
//!
//! Ports are laid out from `--port-base` (default 7100): master replica i serves gRPC on
//! base+i and metrics on base+10+i; the scheduler's metrics are on base+21, the link shard's
//! on base+31; the borglet serves on base+41 and its metrics on base+42.

use super::daemons::host_name;
use super::job::{get_job, submit_file};
use super::render;
use super::{shutdown_on_signal, GlobalArgs, OutputFormat};
use crate::cli::rpc::cell_client;
use anyhow::{bail, Context};
use borg_common::MasterClient;
use borg_proto::v1;
use clap::Args;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Cell name of `borg dev` (tasks see it as `%cell%`).
const DEV_CELL_NAME: &str = "dev";

/// How long the cell may take to elect a leader and see its borglet.
const CELL_READY_TIMEOUT_MS: u64 = 60_000;
/// How long each tier may take to stop on shutdown before it is abandoned.
const TIER_STOP_TIMEOUT_MS: u64 = 15_000;

#[derive(Debug, Args, Clone)]
pub struct DevArgs {
    /// Where the cell keeps its state (master data, task sandboxes); reusing it restarts the
    /// same cell with its jobs.
    #[arg(long, default_value = "/var/tmp/borg-dev")]
    pub data_dir: PathBuf,
    /// Master replicas: 3 or 5.
    #[arg(long, default_value_t = 3, value_parser = parse_replicas)]
    pub replicas: u64,
    /// First port of the cell's port range (see `borg dev --help`).
    #[arg(long, default_value_t = 7100)]
    pub port_base: u16,
    /// Run tasks without cgroups even when available.
    #[arg(long)]
    pub no_cgroups: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub dev: DevArgs,
    /// The job to run.
    #[arg(long, default_value = "examples/hello.bcl")]
    pub file: PathBuf,
    /// Stop the cell after showing the job's status instead of running until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
}

/// Endpoints of a running dev cell.
pub struct DevCell {
    pub masters: Vec<String>,
    /// Token of the cell's admin (the user running `borg dev`), kept in DATA_DIR/admin.token.
    pub admin_token: String,
    pub borglet: String,
    pub metrics: BTreeMap<String, SocketAddr>,
    borglet_stop: CancellationToken,
    control_stop: CancellationToken,
    masters_stop: CancellationToken,
    borglet_tier: JoinSet<(String, anyhow::Result<()>)>,
    control_tier: JoinSet<(String, anyhow::Result<()>)>,
    masters_tier: JoinSet<(String, anyhow::Result<()>)>,
}

fn parse_replicas(text: &str) -> Result<u64, String> {
    match text {
        "3" => Ok(3),
        "5" => Ok(5),
        _ => Err(format!(
            "a dev cell runs 3 or 5 master replicas, not {text:?}"
        )),
    }
}

fn port(base: u16, offset: u16) -> anyhow::Result<u16> {
    base.checked_add(offset)
        .with_context(|| format!("--port-base {base} leaves no room for port offset {offset}"))
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Starts every daemon of a cell in this process and waits until it is ready.
pub async fn start_cell(args: &DevArgs) -> anyhow::Result<DevCell> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data directory {}", args.data_dir.display()))?;
    let base = args.port_base;
    let mut peers = BTreeMap::new();
    for id in 1..=args.replicas {
        peers.insert(id, format!("127.0.0.1:{}", port(base, id as u16)?));
    }
    let masters: Vec<String> = peers.values().cloned().collect();
    let mut metrics = BTreeMap::new();
    // Tokens first, so every daemon of the cell reads the same ones (docs/security.md).
    let admin_token = borg_common::auth::load_or_create_token_file(
        &args.data_dir.join(super::token::ADMIN_TOKEN_FILE_NAME),
    )?;
    let cluster_token = borg_common::auth::load_or_create_token_file(
        &args.data_dir.join(super::token::CLUSTER_TOKEN_FILE_NAME),
    )?;
    let admin_user = super::job::current_user();

    let masters_stop = CancellationToken::new();
    let mut masters_tier = JoinSet::new();
    for id in 1..=args.replicas {
        let mut config = borgmaster::ReplicaConfig::new(
            id,
            peers.clone(),
            args.data_dir.join(format!("master-{id}")),
        );
        let metrics_address = local(port(base, 10 + id as u16)?);
        config.metrics_address = Some(metrics_address);
        config.auth = Some(borgmaster::services::auth::AuthConfig::in_dir(
            &args.data_dir,
            &admin_user,
        ));
        metrics.insert(format!("master-{id}"), metrics_address);
        let stop = masters_stop.clone();
        masters_tier.spawn(async move {
            let result = borgmaster::run(config, stop)
                .await
                .map_err(anyhow::Error::from);
            (format!("master-{id}"), result)
        });
    }

    let client = admin_client(masters.clone(), &admin_token)?;
    wait_until(
        &mut masters_tier,
        "a master leader to be elected",
        || async {
            client
                .call(|channel| async move {
                    cell_client(channel)
                        .list_machines(v1::ListMachinesRequest { consistent: true })
                        .await
                })
                .await
                .is_ok()
        },
    )
    .await?;

    grant_unlimited_quota(&client, &admin_user).await?;

    let control_stop = CancellationToken::new();
    let mut control_tier = JoinSet::new();
    let mut scheduler_config = scheduler::SchedulerConfig::new(masters.clone());
    scheduler_config.master_token = Some(cluster_token.clone());
    let scheduler_metrics = local(port(base, 21)?);
    scheduler_config.metrics_address = Some(scheduler_metrics);
    metrics.insert("scheduler".into(), scheduler_metrics);
    let stop = control_stop.clone();
    control_tier.spawn(async move {
        let result = scheduler::run(scheduler_config, stop)
            .await
            .map_err(anyhow::Error::from);
        ("scheduler".to_owned(), result)
    });
    let mut link_config = linkshard::LinkShardConfig::new(masters.clone(), 0, 1);
    let link_metrics = local(port(base, 31)?);
    link_config.metrics_address = Some(link_metrics);
    link_config.master_token = Some(cluster_token.clone());
    metrics.insert("linkshard".into(), link_metrics);
    let stop = control_stop.clone();
    control_tier.spawn(async move {
        let result = linkshard::run(link_config, stop)
            .await
            .map_err(anyhow::Error::from);
        ("linkshard".to_owned(), result)
    });

    let borglet_stop = CancellationToken::new();
    let mut borglet_tier = JoinSet::new();
    let borglet_address = format!("127.0.0.1:{}", port(base, 41)?);
    let machine = host_name();
    let mut borglet_config = borglet::BorgletConfig::new(
        masters.clone(),
        borglet_address.clone(),
        machine.clone(),
        args.data_dir.join("borglet"),
    );
    borglet_config.kill_tasks_on_exit = true;
    borglet_config.cell_name = DEV_CELL_NAME.to_owned();
    borglet_config.master_token = Some(cluster_token);
    borglet_config.cgroup_parent = format!("borg-dev-{}", base);
    if args.no_cgroups {
        borglet_config.cgroups = borglet::CgroupMode::Off;
    }
    let borglet_metrics = local(port(base, 42)?);
    borglet_config.metrics_address = Some(borglet_metrics);
    metrics.insert("borglet".into(), borglet_metrics);
    let stop = borglet_stop.clone();
    borglet_tier.spawn(async move {
        let result = borglet::run(borglet_config, stop)
            .await
            .map_err(anyhow::Error::from);
        ("borglet".to_owned(), result)
    });

    wait_until(
        &mut borglet_tier,
        "the borglet to register its machine",
        || async {
            client
                .call(|channel| async move {
                    cell_client(channel)
                        .list_machines(v1::ListMachinesRequest { consistent: false })
                        .await
                        .map(|r| r.into_inner())
                })
                .await
                .is_ok_and(|r| {
                    r.machines
                        .iter()
                        .any(|m| m.info.as_ref().is_some_and(|i| i.name == machine))
                })
        },
    )
    .await?;

    Ok(DevCell {
        masters,
        admin_token,
        borglet: borglet_address,
        metrics,
        borglet_stop,
        control_stop,
        masters_stop,
        borglet_tier,
        control_tier,
        masters_tier,
    })
}

/// A client of the dev cell's masters as its admin.
pub fn admin_client(masters: Vec<String>, admin_token: &str) -> anyhow::Result<MasterClient> {
    Ok(MasterClient::new(borg_common::MasterClientConfig {
        token: Some(admin_token.to_owned()),
        ..borg_common::MasterClientConfig::new(masters)
    })?)
}

/// The dev cell's admin may use every band without limit, so examples run as they are.
async fn grant_unlimited_quota(client: &MasterClient, admin_user: &str) -> anyhow::Result<()> {
    for band in ["batch", "production", "monitoring"] {
        let request = v1::SetQuotaRequest {
            user: admin_user.to_owned(),
            band: band.to_owned(),
            limit: Some(super::quota::UNLIMITED.into()),
            request_id: borg_common::new_request_id("dev-quota"),
        };
        client
            .call(|channel| {
                let request = request.clone();
                async move { cell_client(channel).set_quota(request).await }
            })
            .await
            .with_context(|| format!("granting {admin_user} an unlimited {band} quota"))?;
    }
    Ok(())
}

/// Polls `ready` until true, failing early if a daemon of `tier` exits, or at the deadline.
async fn wait_until<F, Fut>(
    tier: &mut JoinSet<(String, anyhow::Result<()>)>,
    what: &str,
    mut ready: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_millis(CELL_READY_TIMEOUT_MS);
    loop {
        if ready().await {
            return Ok(());
        }
        if let Some(Ok((name, result))) = tier.try_join_next() {
            match result {
                Ok(()) => bail!("{name} stopped while waiting for {what}"),
                Err(error) => return Err(error.context(format!("{name} failed"))),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {CELL_READY_TIMEOUT_MS} ms waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl DevCell {
    pub fn print_endpoints(&self, data_dir: &Path) {
        println!("borg dev cell is up");
        println!("  masters   {}", self.masters.join(","));
        println!("  borglet   {}", self.borglet);
        for (name, address) in &self.metrics {
            println!("  metrics   {name:<10} http://{address}/metrics");
        }
        println!("  data      {}", data_dir.display());
        let token_file = data_dir.join(super::token::ADMIN_TOKEN_FILE_NAME);
        println!(
            "  admin     {} (token in {})",
            super::job::current_user(),
            token_file.display()
        );
        if token_file != Path::new(super::token::DEV_ADMIN_TOKEN_FILE) {
            println!(
                "  (CLI: export BORG_TOKEN_FILE={} to act as the admin)",
                token_file.display()
            );
        }
        if self.masters.join(",") != super::DEV_MASTERS {
            println!(
                "  (CLI: export BORG_MASTER={} so `borg job ...` finds this cell)",
                self.masters.join(",")
            );
        }
    }

    /// Runs until `stop` fires or a daemon dies, then stops the cell tier by tier: the
    /// borglet first (it stops its tasks), then the scheduler and link shard, then masters.
    pub async fn run_until(mut self, stop: CancellationToken) -> anyhow::Result<()> {
        let failure = tokio::select! {
            _ = stop.cancelled() => None,
            Some(Ok((name, result))) = self.borglet_tier.join_next() => Some((name, result)),
            Some(Ok((name, result))) = self.control_tier.join_next() => Some((name, result)),
            Some(Ok((name, result))) = self.masters_tier.join_next() => Some((name, result)),
        };
        self.shutdown().await;
        match failure {
            None => Ok(()),
            Some((name, Ok(()))) => bail!("{name} stopped unexpectedly; the cell was shut down"),
            Some((name, Err(error))) => {
                Err(error.context(format!("{name} failed; the cell was shut down")))
            }
        }
    }

    pub async fn shutdown(mut self) {
        for (stop, tier) in [
            (&self.borglet_stop, &mut self.borglet_tier),
            (&self.control_stop, &mut self.control_tier),
            (&self.masters_stop, &mut self.masters_tier),
        ] {
            stop.cancel();
            let drained = tokio::time::timeout(Duration::from_millis(TIER_STOP_TIMEOUT_MS), async {
                while let Some(joined) = tier.join_next().await {
                    if let Ok((name, Err(error))) = joined {
                        tracing::warn!(daemon = %name, error = %format!("{error:#}"), "stopped with an error");
                    }
                }
            })
            .await;
            if drained.is_err() {
                tracing::warn!("some daemons did not stop within {TIER_STOP_TIMEOUT_MS} ms");
                tier.abort_all();
            }
        }
    }
}

pub async fn run_dev(args: DevArgs) -> anyhow::Result<()> {
    let stop = shutdown_on_signal();
    let cell = start_cell(&args).await?;
    cell.print_endpoints(&args.data_dir);
    println!("Press Ctrl-C to stop the cell.");
    cell.run_until(stop).await?;
    println!("borg dev cell stopped");
    Ok(())
}

pub async fn run_demo(args: DemoArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    if !args.file.exists() {
        bail!(
            "{} not found: run `borg demo` from the repository root or pass --file",
            args.file.display()
        );
    }
    let stop = shutdown_on_signal();
    println!("Starting a dev cell in {} ...", args.dev.data_dir.display());
    let cell = start_cell(&args.dev).await?;
    cell.print_endpoints(&args.dev.data_dir);
    let client = admin_client(cell.masters.clone(), &cell.admin_token)?;
    println!("\nSubmitting {} ...", args.file.display());
    let submitted = submit_file(
        &client,
        &args.file,
        None,
        None,
        false,
        120,
        OutputFormat::Text,
    )
    .await;
    if let Err(error) = submitted {
        cell.shutdown().await;
        return Err(error);
    }
    if global.output == OutputFormat::Json {
        let jobs = bcl::load_file(&args.file)
            .map_err(|d| anyhow::anyhow!("{d}"))?
            .jobs;
        for spec in jobs {
            println!(
                "{:#}",
                render::job_json(&get_job(&client, &spec.name, false).await?)
            );
        }
    }
    if args.exit {
        cell.shutdown().await;
        println!("\nDemo done; the cell was stopped.");
        return Ok(());
    }
    println!(
        "\nThe cell keeps running. In another terminal try:\n  borg job status hello\n  borg machine list\nPress Ctrl-C to stop it."
    );
    cell.run_until(stop).await
}
