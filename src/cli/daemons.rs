//! `borg master|scheduler|linkshard|borglet`: run one daemon until Ctrl-C or SIGTERM.

use super::{shutdown_on_signal, GlobalArgs};
use anyhow::{bail, Context};
use clap::Args;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// `borg master` runs a replica; `borg master status` shows the replicas of a cell.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct MasterArgs {
    #[command(subcommand)]
    pub action: Option<MasterAction>,
    /// This replica's id (1-based), one of the ids in --peers.
    #[arg(long, required = true)]
    pub id: Option<u64>,
    /// Every replica of the cell, this one included: `1=host:port,2=host:port,...`.
    /// This replica listens on its own entry.
    #[arg(long, value_delimiter = ',', required = true)]
    pub peers: Vec<String>,
    /// Where the replica keeps its RocksDB (log, Paxos metadata, checkpoints).
    #[arg(long, required = true)]
    pub data_dir: Option<PathBuf>,
    /// Checkpoint the state (and trim the log below it) after this many entries (0: never).
    #[arg(long)]
    pub checkpoint_every_entries: Option<u64>,
    /// ... or after this many seconds, whichever comes first.
    #[arg(long)]
    pub checkpoint_every_s: Option<u64>,
    /// The leader trims the log even if a replica lags this far behind (it then catches up
    /// from a checkpoint).
    #[arg(long)]
    pub trim_lag_max_entries: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    /// Paxos tick; election and heartbeat timeouts are counted in ticks.
    #[arg(long)]
    pub tick_interval_ms: Option<u64>,
    /// Ticks without hearing the leader before a new election.
    #[arg(long)]
    pub election_timeout_ticks: Option<u64>,
    /// Token file of the bootstrap admin, created with a random token if missing. Give every
    /// replica the same file (docs/security.md).
    #[arg(long, required_unless_present = "no_auth")]
    pub admin_token_file: Option<PathBuf>,
    /// User name of the bootstrap admin.
    #[arg(long, default_value = "admin")]
    pub admin_user: String,
    /// Token file of the control plane (scheduler, link shards, borglets), created if missing.
    /// Give every replica and component the same file.
    #[arg(long, required_unless_present = "no_auth")]
    pub cluster_token_file: Option<PathBuf>,
    /// Trust every caller: no tokens, no ownership or quota checks. For experiments only.
    #[arg(long, conflicts_with_all = ["admin_token_file", "cluster_token_file"])]
    pub no_auth: bool,
    /// TEST-ONLY fault-injection hook: accept `ReplicaService.SetPeerFilter`, with which fault
    /// tests cut replicas apart on loopback (a partition). Hidden; never use in production.
    #[arg(long, hide = true)]
    pub test_only_peer_filter: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum MasterAction {
    /// Every replica of the cell (from --master): who leads, decided and applied index, last
    /// checkpoint index and age, trim point and lag.
    Status,
}

/// `--cluster-token-file` of the control plane's daemons.
#[derive(Debug, Args)]
pub struct ClusterTokenArgs {
    /// File with the cluster token the masters were given (their --cluster-token-file).
    #[arg(long, env = "BORG_CLUSTER_TOKEN_FILE")]
    pub cluster_token_file: Option<PathBuf>,
}

impl ClusterTokenArgs {
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        self.cluster_token_file
            .as_deref()
            .map(borg_common::auth::read_token_file)
            .transpose()
            .context("reading --cluster-token-file")
    }
}

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Name of this scheduler in plans and logs.
    #[arg(long, default_value = "scheduler-1")]
    pub id: String,
    /// Seed of the randomised machine order (same seed and state → same placements).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Most placements sent in one plan.
    #[arg(long)]
    pub plan_batch_max: Option<usize>,
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    #[command(flatten)]
    pub cluster_token: ClusterTokenArgs,
}

#[derive(Debug, Args)]
pub struct LinkShardArgs {
    /// This shard's index among --shard-count shards.
    #[arg(long, default_value_t = 0)]
    pub shard_index: u32,
    #[arg(long, default_value_t = 1)]
    pub shard_count: u32,
    /// How often every borglet of the shard is polled.
    #[arg(long, default_value_t = 1000)]
    pub poll_interval_ms: u64,
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    #[command(flatten)]
    pub cluster_token: ClusterTokenArgs,
}

#[derive(Debug, Args)]
pub struct BorgletArgs {
    /// Address the borglet serves on and registers with the master (host:port).
    #[arg(long, default_value = "127.0.0.1:7141")]
    pub listen: String,
    /// Machine name in the cell (default: the host name).
    #[arg(long)]
    pub machine: Option<String>,
    /// Name of the cell, given to tasks as `%cell%` and `BORG_CELL`.
    #[arg(long, default_value = borglet::config::DEFAULT_CELL_NAME)]
    pub cell: String,
    /// Ports handed out for tasks' named ports (`%port%`), FIRST-LAST.
    #[arg(long, value_name = "FIRST-LAST", value_parser = parse_port_range, default_value = "20000-29999")]
    pub port_range: (u16, u16),
    /// Task sandboxes, logs and the borglet's state.
    #[arg(long, default_value = "/var/lib/borg/borglet")]
    pub data_dir: PathBuf,
    /// Machine attribute for constraints, `key=value`; repeat for several.
    #[arg(long = "attr", value_name = "KEY=VALUE")]
    pub attributes: Vec<String>,
    /// Parent cgroup of every task cgroup; nothing outside it is touched.
    #[arg(long, default_value = "borg")]
    pub cgroup_parent: String,
    /// Run tasks without cgroups even when they are available.
    #[arg(long)]
    pub no_cgroups: bool,
    /// Offer this many millicores instead of all cores.
    #[arg(long)]
    pub cpu_millis: Option<u64>,
    /// Offer this much memory (bytes) instead of all of it.
    #[arg(long)]
    pub ram_bytes: Option<u64>,
    /// Stop every task when the borglet exits (by default tasks outlive it).
    #[arg(long)]
    pub kill_tasks_on_exit: bool,
    /// Close an interactive `borg ssh` session after this many seconds without input or output.
    #[arg(long, default_value_t = borglet::config::SHELL_IDLE_TIMEOUT_DEFAULT_S)]
    pub shell_idle_timeout_s: u64,
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    #[command(flatten)]
    pub cluster_token: ClusterTokenArgs,
}

/// Parses `FIRST-LAST` (inclusive) into a port range.
fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let (first, last) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not FIRST-LAST (e.g. 20000-29999)"))?;
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{p:?} is not a port (1-65535)"))
    };
    let (first, last) = (port(first)?, port(last)?);
    if first > last {
        return Err(format!(
            "the range {first}-{last} is empty: FIRST must not exceed LAST"
        ));
    }
    Ok((first, last))
}

/// Parses `1=host:port,2=host:port` into id → address.
pub fn parse_peers(entries: &[String]) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut peers = BTreeMap::new();
    for entry in entries {
        let (id, address) = entry
            .split_once('=')
            .with_context(|| format!("peer {entry:?} is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .with_context(|| format!("peer {entry:?}: id {id:?} is not a number"))?;
        if id == 0 {
            bail!("peer {entry:?}: replica ids start at 1");
        }
        let address = address.trim();
        if address.rsplit_once(':').is_none() {
            bail!("peer {entry:?}: address {address:?} has no port");
        }
        if peers.insert(id, address.to_owned()).is_some() {
            bail!("replica id {id} appears twice in --peers");
        }
    }
    Ok(peers)
}

/// Parses repeated `key=value` attributes.
pub fn parse_attributes(entries: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    entries
        .iter()
        .map(|entry| {
            let (key, value) = entry
                .split_once('=')
                .with_context(|| format!("attribute {entry:?} is not KEY=VALUE"))?;
            if key.trim().is_empty() {
                bail!("attribute {entry:?} has an empty key");
            }
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

pub fn master_config(args: &MasterArgs) -> anyhow::Result<borgmaster::ReplicaConfig> {
    let (Some(id), Some(data_dir)) = (args.id, args.data_dir.clone()) else {
        bail!("a master replica needs --id, --peers and --data-dir");
    };
    let peers = parse_peers(&args.peers)?;
    if !peers.contains_key(&id) {
        bail!(
            "--id {id} is not among --peers (ids: {:?})",
            peers.keys().collect::<Vec<_>>()
        );
    }
    let mut config = borgmaster::ReplicaConfig::new(id, peers, data_dir);
    config.metrics_address = args.metrics;
    if let Some(entries) = args.checkpoint_every_entries {
        config.checkpoint_every_entries = entries;
    }
    if let Some(seconds) = args.checkpoint_every_s {
        config.checkpoint_every_s = seconds;
    }
    if let Some(entries) = args.trim_lag_max_entries {
        config.trim_lag_max_entries = entries;
    }
    if let Some(ms) = args.tick_interval_ms {
        config.tick_interval_ms = ms;
    }
    if let Some(ticks) = args.election_timeout_ticks {
        config.election_timeout_ticks = ticks;
    }
    config.peer_filter_enabled = args.test_only_peer_filter;
    if let (Some(admin), Some(cluster)) = (&args.admin_token_file, &args.cluster_token_file) {
        config.auth = Some(borgmaster::services::auth::AuthConfig {
            admin_token_file: admin.clone(),
            admin_user: args.admin_user.clone(),
            cluster_token_file: cluster.clone(),
        });
    }
    Ok(config)
}

pub async fn run_master(args: MasterArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    if let Some(MasterAction::Status) = args.action {
        return super::master_status::run(
            global.master.clone(),
            super::token::resolve(global.token.as_deref(), global.token_file.as_deref())?,
            global.output == super::OutputFormat::Json,
        )
        .await;
    }
    let config = master_config(&args)?;
    let shutdown = shutdown_on_signal();
    borgmaster::run(config, shutdown)
        .await
        .context("master replica failed")
}

pub fn scheduler_config(
    args: &SchedulerArgs,
    masters: Vec<String>,
) -> anyhow::Result<scheduler::SchedulerConfig> {
    let mut config = scheduler::SchedulerConfig::new(masters);
    config.master_token = args.cluster_token.token()?;
    config.scheduler_id = args.id.clone();
    config.seed = args.seed;
    config.metrics_address = args.metrics;
    if let Some(max) = args.plan_batch_max {
        config.plan_batch_max = max;
    }
    Ok(config)
}

pub async fn run_scheduler(args: SchedulerArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let config = scheduler_config(&args, global.master.clone())?;
    scheduler::run(config, shutdown_on_signal())
        .await
        .context("scheduler failed")
}

pub fn linkshard_config(
    args: &LinkShardArgs,
    masters: Vec<String>,
) -> anyhow::Result<linkshard::LinkShardConfig> {
    let mut config = linkshard::LinkShardConfig::new(masters, args.shard_index, args.shard_count);
    config.poll_interval_ms = args.poll_interval_ms;
    config.metrics_address = args.metrics;
    config.master_token = args.cluster_token.token()?;
    Ok(config)
}

pub async fn run_linkshard(args: LinkShardArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    if args.shard_count == 0 || args.shard_index >= args.shard_count {
        bail!(
            "--shard-index {} must be below --shard-count {}",
            args.shard_index,
            args.shard_count
        );
    }
    let config = linkshard_config(&args, global.master.clone())?;
    linkshard::run(config, shutdown_on_signal())
        .await
        .context("link shard failed")
}

pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| borg_model::is_valid_name(h))
        .unwrap_or_else(|| "localhost".to_owned())
}

pub fn borglet_config(
    args: &BorgletArgs,
    masters: Vec<String>,
) -> anyhow::Result<borglet::BorgletConfig> {
    let machine = args.machine.clone().unwrap_or_else(host_name);
    if !borg_model::is_valid_name(&machine) {
        bail!("machine name {machine:?} is invalid: use letters, digits, '-', '_' or '.'");
    }
    let mut config =
        borglet::BorgletConfig::new(masters, args.listen.clone(), machine, args.data_dir.clone());
    if !borg_model::is_valid_name(&args.cell) {
        bail!(
            "cell name {:?} is invalid: use letters, digits, '-', '_' or '.'",
            args.cell
        );
    }
    config.cell_name = args.cell.clone();
    config.port_range = args.port_range;
    config.attributes = parse_attributes(&args.attributes)?;
    config.cgroup_parent = args.cgroup_parent.clone();
    if args.no_cgroups {
        config.cgroups = borglet::CgroupMode::Off;
    }
    if args.cpu_millis.is_some() || args.ram_bytes.is_some() {
        let detected =
            borglet::machine::detect_capacity().context("reading this machine's capacity")?;
        config.capacity_override = Some(borg_model::Resources {
            cpu_millis: args.cpu_millis.unwrap_or(detected.cpu_millis),
            ram_bytes: args.ram_bytes.unwrap_or(detected.ram_bytes),
            ..detected
        });
    }
    config.kill_tasks_on_exit = args.kill_tasks_on_exit;
    config.shell_idle_timeout_s = args.shell_idle_timeout_s;
    config.metrics_address = args.metrics;
    config.master_token = args.cluster_token.token()?;
    Ok(config)
}

pub async fn run_borglet(args: BorgletArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let config = borglet_config(&args, global.master.clone())?;
    borglet::run(config, shutdown_on_signal())
        .await
        .context("borglet failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_parse_and_bad_ones_are_explained() {
        assert_eq!(parse_port_range("20000-29999"), Ok((20000, 29999)));
        assert!(parse_port_range("20000")
            .unwrap_err()
            .contains("FIRST-LAST"));
        assert!(parse_port_range("0-10").unwrap_err().contains("not a port"));
        assert!(parse_port_range("9-8").unwrap_err().contains("empty"));
    }

    #[test]
    fn peers_parse_and_bad_ones_are_explained() {
        let peers = parse_peers(&["1=127.0.0.1:7101".into(), "2=127.0.0.1:7102".into()]).unwrap();
        assert_eq!(peers[&2], "127.0.0.1:7102");
        let error = parse_peers(&["x=127.0.0.1:1".into()]).unwrap_err();
        assert!(error.to_string().contains("not a number"), "{error}");
        let error = parse_peers(&["1=a:1".into(), "1=b:2".into()]).unwrap_err();
        assert!(error.to_string().contains("twice"), "{error}");
        assert!(parse_peers(&["0=a:1".into()]).is_err());
        assert!(parse_peers(&["1=nohost".into()]).is_err());
    }

    #[test]
    fn attributes_parse() {
        let attrs = parse_attributes(&["rack=r1".into(), "os = linux".into()]).unwrap();
        assert_eq!(attrs["rack"], "r1");
        assert_eq!(attrs["os"], "linux");
        assert!(parse_attributes(&["=x".into()]).is_err());
        assert!(parse_attributes(&["novalue".into()]).is_err());
    }
}
