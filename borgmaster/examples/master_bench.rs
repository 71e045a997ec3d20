//! Benchmark: five borgmaster replicas against five etcd 3.4 members, all on loopback, in one
//! run. Each replica and each etcd member is its own process (this binary re-executes itself as
//! `master_bench replica ...`), so the leader can be killed with SIGKILL.
//!
//! Figures: committed mutations/s at 1 and 64 in flight, each writer with one write
//! outstanding at a time (borgmaster: a `SubmitJob`, as a unary call on one connection and
//! on one `SubmitJobs` stream shared by the writers; etcd: a put through its HTTP/JSON gateway
//! `/v3/kv/put` on keep-alive connections, one per writer, and through its native gRPC
//! `KV/Put` over 1 and over 8 HTTP/2 connections; the ratio is against etcd's faster path),
//! failover (SIGKILL the leader → next committed write, median and max over the trials),
//! recovery of a replica from a checkpoint of a cell with 100,000 tasks, and the replicas'
//! memory (VmRSS) holding them.
//!
//! Run: `cargo run -p borgmaster --example master_bench` (dev profile: dependencies are
//! optimised; see the printed settings). `--quick` runs shorter phases. etcd is installed with
//! apt-get (`etcd-server`) when missing. `--inject-fsync-stall-ms N` turns on the replicas'
//! fault injection (`BORG_FAULT_FSYNC_STALL_MS`): every fsync of every borgmaster replica
//! takes N ms longer (etcd's do not), to show that a stalling disk changes no leader.

use borg_common::master_client::{SubmitStream, TokenInterceptor};
use borg_proto::v1;
use borg_proto::v1::cell_service_client::CellServiceClient;
use borg_proto::v1::replica_service_client::ReplicaServiceClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::service::interceptor::InterceptedService;

const MEMBERS: usize = 5;
const FAILOVER_WRITE_ATTEMPT_TIMEOUT_MS: u64 = 300;
const FAILOVER_DEADLINE_S: u64 = 30;
const RECOVERY_JOBS: usize = 100;
const RECOVERY_TASKS_PER_JOB: u32 = 1_000;
/// `/proc/PID/stat` counts CPU time in these (USER_HZ, 100 on Linux).
const CLOCK_TICKS_PER_S: f64 = 100.0;

struct Settings {
    throughput_s: u64,
    /// Throughput rounds (borgmaster then etcd, at each concurrency); medians are reported.
    rounds: usize,
    failover_trials: usize,
    etcd: bool,
    /// Only the throughput rounds (for profiling).
    throughput_only: bool,
    /// Only the failover trials (A/B of election settings).
    failover_only: bool,
    /// Client paths to borgmaster measured in each round (`--borg-path`).
    borg_paths: Vec<BorgPath>,
    /// etcd gRPC phases at 64 in flight: one per connection count (`--etcd-grpc-connections`).
    etcd_grpc_connections: Vec<usize>,
}

/// Passes `--sync-inline-wait-ms` to the replica processes (A/B of the setting).
const SYNC_INLINE_WAIT_ENV: &str = "MASTER_BENCH_SYNC_INLINE_WAIT_MS";
/// Passes `--leader-lost-tick-speedup` to the replica processes (A/B of the setting).
const LEADER_LOST_SPEEDUP_ENV: &str = "MASTER_BENCH_LEADER_LOST_TICK_SPEEDUP";

const USAGE: &str = "master_bench [--quick] [--rounds N] [--no-etcd] [--throughput-only] [--borg-path unary|stream|both] [--etcd-grpc-connections N,N..] [--inject-fsync-stall-ms N] [--sync-inline-wait-ms N] [--leader-lost-tick-speedup N] [--failover-only]";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("replica") {
        run_replica(&args[2..]);
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let rounds = match args.iter().position(|a| a == "--rounds") {
        Some(i) => match args.get(i + 1).and_then(|n| n.parse().ok()) {
            Some(n) if n >= 1 => n,
            _ => {
                eprintln!("--rounds needs a number of 1 or more\n{USAGE}");
                std::process::exit(2);
            }
        },
        None => 3,
    };
    if let Some(i) = args.iter().position(|a| a == "--inject-fsync-stall-ms") {
        match args.get(i + 1).and_then(|n| n.parse::<u64>().ok()) {
            // The replicas are child processes: they read it at startup.
            Some(ms) => {
                std::env::set_var(borgmaster::config::FAULT_FSYNC_STALL_ENV, ms.to_string())
            }
            None => {
                eprintln!("--inject-fsync-stall-ms needs a number of ms\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    if let Some(i) = args.iter().position(|a| a == "--sync-inline-wait-ms") {
        match args.get(i + 1).and_then(|n| n.parse::<u64>().ok()) {
            Some(ms) => std::env::set_var(SYNC_INLINE_WAIT_ENV, ms.to_string()),
            None => {
                eprintln!("--sync-inline-wait-ms needs a number of ms\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    if let Some(i) = args.iter().position(|a| a == "--leader-lost-tick-speedup") {
        match args.get(i + 1).and_then(|n| n.parse::<u64>().ok()) {
            Some(n) if n >= 1 => std::env::set_var(LEADER_LOST_SPEEDUP_ENV, n.to_string()),
            _ => {
                eprintln!("--leader-lost-tick-speedup needs a number of 1 or more\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let borg_paths = match args.iter().position(|a| a == "--borg-path") {
        None => vec![BorgPath::Unary, BorgPath::Stream],
        Some(i) => match args.get(i + 1).map(String::as_str) {
            Some("unary") => vec![BorgPath::Unary],
            Some("stream") => vec![BorgPath::Stream],
            Some("both") => vec![BorgPath::Unary, BorgPath::Stream],
            _ => {
                eprintln!("--borg-path takes unary, stream or both\n{USAGE}");
                std::process::exit(2);
            }
        },
    };
    let etcd_grpc_connections = match args.iter().position(|a| a == "--etcd-grpc-connections") {
        None => vec![1, 8],
        Some(i) => {
            let list: Option<Vec<usize>> = args.get(i + 1).and_then(|list| {
                list.split(',')
                    .map(|n| n.parse().ok().filter(|n| *n >= 1))
                    .collect()
            });
            match list {
                Some(list) => list,
                None => {
                    eprintln!("--etcd-grpc-connections takes counts of 1 or more, comma-separated\n{USAGE}");
                    std::process::exit(2);
                }
            }
        }
    };
    let settings = Settings {
        borg_paths,
        etcd_grpc_connections,
        throughput_s: if quick { 3 } else { 10 },
        rounds,
        failover_trials: 7,
        etcd: !args.iter().any(|a| a == "--no-etcd"),
        throughput_only: args.iter().any(|a| a == "--throughput-only"),
        failover_only: args.iter().any(|a| a == "--failover-only"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench(settings));
}

/// Child mode: one replica until killed.
fn run_replica(args: &[String]) {
    // Warnings and errors go to the replica's log file (stderr), from RUST_LOG.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let id: u64 = args[0].parse().expect("replica id");
    let peers = borgmaster::ReplicaConfig::parse_peers(&args[1]).expect("peers");
    let mut config = borgmaster::ReplicaConfig::new(id, peers, PathBuf::from(&args[2]));
    config.checkpoint_every_entries = args[3].parse().expect("checkpoint every");
    if let Ok(ms) = std::env::var(SYNC_INLINE_WAIT_ENV) {
        config.sync_inline_wait_ms = ms.parse().expect("sync inline wait ms");
    }
    if let Ok(speedup) = std::env::var(LEADER_LOST_SPEEDUP_ENV) {
        config.leader_lost_tick_speedup = speedup.parse().expect("leader lost tick speedup");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(borgmaster::run(config, Default::default()));
    if let Err(error) = result {
        eprintln!("replica {id}: {error}");
        std::process::exit(1);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A member process, killed when dropped.
struct Member {
    child: Option<Child>,
    start: Command,
}

impl Member {
    fn spawn(mut command: Command) -> Member {
        let child = command.spawn().expect("spawn member");
        Member {
            child: Some(child),
            start: command,
        }
    }
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }
    fn restart(&mut self) {
        self.kill();
        self.child = Some(self.start.spawn().expect("respawn member"));
    }
    /// CPU time (user + system) the process has used, in clock ticks (0 once it is gone).
    fn cpu_ticks(&self) -> u64 {
        let Some(child) = &self.child else { return 0 };
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
        // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| {
            fields
                .get(n - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        field(14) + field(15)
    }

    fn rss_bytes(&self) -> u64 {
        let Some(child) = &self.child else { return 0 };
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

fn median_max(mut values: Vec<f64>) -> (f64, f64) {
    values.sort_by(|a, b| a.total_cmp(b));
    let median = values.get(values.len() / 2).copied().unwrap_or(f64::NAN);
    (median, values.last().copied().unwrap_or(f64::NAN))
}

/// Median of `values` (the upper one of an even count); NaN when empty.
fn median(values: &[f64]) -> f64 {
    median_max(values.to_vec()).0
}

async fn bench(settings: Settings) {
    let dir = tempfile::Builder::new()
        .prefix("master-bench-")
        .tempdir()
        .expect("temp dir");
    let defaults = borgmaster::ReplicaConfig::new(1, Default::default(), PathBuf::new());
    println!(
        "machine: {} cores; borgmaster defaults: tick {} ms, election timeout {} ticks, at most {} commands per log entry; etcd defaults (heartbeat 100 ms, election 1000 ms)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        defaults.tick_interval_ms,
        defaults.election_timeout_ticks,
        borgmaster::ENTRY_COMMANDS_MAX,
    );
    if let Ok(ms) = std::env::var(SYNC_INLINE_WAIT_ENV) {
        println!(
            "replicas wait at most {ms} ms for an fsync inline (default {} ms)",
            defaults.sync_inline_wait_ms
        );
    }
    println!(
        "borgmaster: heartbeat rounds {}x faster for {} ms once the leader's connection is lost{}",
        std::env::var(LEADER_LOST_SPEEDUP_ENV)
            .unwrap_or_else(|_| defaults.leader_lost_tick_speedup.to_string()),
        defaults.leader_lost_fast_ms,
        if std::env::var(LEADER_LOST_SPEEDUP_ENV).is_ok() {
            " (set by --leader-lost-tick-speedup)"
        } else {
            " (default)"
        },
    );
    if defaults.fault_fsync_stall_ms > 0 {
        println!(
            "FAULT INJECTION: every fsync of every borgmaster replica takes {} ms longer (etcd's do not)",
            defaults.fault_fsync_stall_ms
        );
    }
    let concurrencies = [1usize, 64];
    let mut rows: Vec<(String, String, String)> = Vec::new();
    if settings.failover_only {
        let mut cell = BorgCell::start(&dir.path().join("failover"), 1_000_000);
        cell.wait_leader().await;
        let times = cell.failover(settings.failover_trials).await;
        let (median_ms, max_ms) = median_max(times.clone());
        println!("borgmaster: failover ms {times:?}: median {median_ms:.0}, max {max_ms:.0}");
        return;
    }
    let cell = BorgCell::start(dir.path(), 1_000_000);
    cell.wait_leader().await;
    let etcd = if settings.etcd && ensure_etcd() {
        let etcd = EtcdCell::start(dir.path());
        etcd.wait_ready().await;
        Some(etcd)
    } else {
        None
    };
    // Both cells run side by side; each round measures borgmaster, then etcd, at every
    // concurrency and through every client path, so both see the same machine load.
    let (leader_before, changes_before) = cell.leadership().await;
    let etcd_paths: Vec<EtcdPath> = std::iter::once(EtcdPath::Http)
        .chain(
            settings
                .etcd_grpc_connections
                .iter()
                .map(|&connections| EtcdPath::Grpc { connections }),
        )
        .collect();
    // Per concurrency: each path's rate in every round.
    let mut ours: Vec<Vec<(BorgPath, Vec<f64>)>> = concurrencies
        .iter()
        .map(|_| {
            settings
                .borg_paths
                .iter()
                .map(|p| (*p, Vec::new()))
                .collect()
        })
        .collect();
    // No etcd cell: no etcd series (nothing to print for it).
    let mut theirs: Vec<Vec<(EtcdPath, Vec<f64>)>> = concurrencies
        .iter()
        .map(|&inflight| {
            if etcd.is_none() {
                return Vec::new();
            }
            etcd_paths
                .iter()
                .filter(|p| {
                    inflight > 1
                        || **p == EtcdPath::Http
                        || **p == EtcdPath::Grpc { connections: 1 }
                })
                .map(|p| (*p, Vec::new()))
                .collect()
        })
        .collect();
    for round in 1..=settings.rounds {
        for (c, &inflight) in concurrencies.iter().enumerate() {
            for (path, rates) in ours[c].iter_mut() {
                let rate = cell
                    .throughput(*path, inflight, settings.throughput_s)
                    .await;
                println!(
                    "round {round}, {inflight} in flight: borgmaster {}: {rate:.0} committed mutations/s",
                    path.name()
                );
                rates.push(rate);
            }
            if let Some(etcd) = &etcd {
                for (path, rates) in theirs[c].iter_mut() {
                    let rate = etcd
                        .throughput(*path, inflight, settings.throughput_s)
                        .await;
                    println!(
                        "round {round}, {inflight} in flight: etcd {}: {rate:.0} committed puts/s",
                        path.name()
                    );
                    rates.push(rate);
                }
            }
            let (ours_best, theirs_best) = (
                headline(&ours[c], round - 1),
                headline(&theirs[c], round - 1),
            );
            println!(
                "round {round}, {inflight} in flight: borgmaster's faster path ({}) / etcd's faster path ({}): {:.2}x",
                ours_best.1,
                theirs_best.1,
                ours_best.0 / theirs_best.0
            );
        }
    }
    let (leader_after, changes_after) = cell.leadership().await;
    let changes = changes_after.saturating_sub(changes_before);
    println!(
        "borgmaster: leader before/after the throughput runs: {leader_before:?}/{leader_after:?}; leader changes seen by the replicas meanwhile: {changes} ({})",
        if changes == 0 && leader_before.is_some() && leader_before == leader_after { "no leader change" } else { "LEADER CHANGED" }
    );
    report_replica_logs(dir.path());
    for (c, inflight) in concurrencies.iter().enumerate() {
        for (path, rates) in &ours[c] {
            println!(
                "median of {} rounds at {inflight} in flight: borgmaster {}: {:.0}/s (rounds {})",
                settings.rounds,
                path.name(),
                median(rates),
                format_rates(rates)
            );
        }
        for (path, rates) in &theirs[c] {
            println!(
                "median of {} rounds at {inflight} in flight: etcd {}: {:.0}/s (rounds {})",
                settings.rounds,
                path.name(),
                median(rates),
                format_rates(rates)
            );
        }
        // The headline: borgmaster's last path (the stream, when measured) against etcd's
        // faster path by median, and each borgmaster path against it.
        let etcd_best = theirs[c]
            .iter()
            .map(|(path, rates)| (median(rates), path.name()))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .unwrap_or((f64::NAN, "-".into()));
        for (path, rates) in &ours[c] {
            let per_round: Vec<String> = (0..rates.len())
                .map(|r| {
                    let best = headline(&theirs[c], r).0;
                    format!("{:.2}", rates[r] / best)
                })
                .collect();
            let ratio = median(rates) / etcd_best.0;
            println!(
                "ratio at {inflight} in flight: borgmaster {} {:.0}/s against etcd's faster path ({}) {:.0}/s: {ratio:.2}x (per round against that round's best etcd path: {})",
                path.name(),
                median(rates),
                etcd_best.1,
                etcd_best.0,
                per_round.join(" / ")
            );
            rows.push((
                format!(
                    "mutations/s, {inflight} in flight, borgmaster {} vs etcd {} (median of {})",
                    path.name(),
                    etcd_best.1,
                    settings.rounds
                ),
                format!("{:.0}", median(rates)),
                format!("{:.0} ({ratio:.2}x)", etcd_best.0),
            ));
        }
        for (path, rates) in &theirs[c] {
            rows.push((
                format!(
                    "etcd {}, {inflight} in flight (median of {})",
                    path.name(),
                    settings.rounds
                ),
                String::new(),
                format!("{:.0}", median(rates)),
            ));
        }
    }
    rows.push((
        "leader changes during the throughput runs".into(),
        changes.to_string(),
        String::new(),
    ));
    if settings.throughput_only {
        print_rows(rows);
        return;
    }
    // Failover on a fresh cell: the throughput rounds leave ~150,000 jobs behind, past the
    // cell's JOBS_MAX (50,000), so new jobs would be refused there.
    drop(cell);
    let mut cell = BorgCell::start(&dir.path().join("failover"), 1_000_000);
    cell.wait_leader().await;
    let times = cell.failover(settings.failover_trials).await;
    let (median_ms, max_ms) = median_max(times.clone());
    println!("borgmaster: failover ms {times:?}: median {median_ms:.0}, max {max_ms:.0}");
    let mut failover_row = (
        "failover median / max (ms)".to_string(),
        format!("{median_ms:.0} / {max_ms:.0}"),
        String::new(),
    );
    drop(cell);
    if let Some(mut etcd) = etcd {
        let times = etcd.failover(settings.failover_trials).await;
        let (median_ms, max_ms) = median_max(times.clone());
        println!("etcd: failover ms {times:?}: median {median_ms:.0}, max {max_ms:.0}");
        failover_row.2 = format!("{median_ms:.0} / {max_ms:.0}");
    }
    rows.push(failover_row);
    {
        let mut cell = BorgCell::start(&dir.path().join("recovery"), 50);
        cell.wait_leader().await;
        let (recovery_ms, rss) = cell.recovery().await;
        rows.push((
            "recovery from a checkpoint, 100,000 tasks (ms)".into(),
            format!("{recovery_ms:.0}"),
            "-".into(),
        ));
        rows.push((
            "replica memory (VmRSS), 100,000 tasks (MiB)".into(),
            format!("{:.0}", rss as f64 / (1 << 20) as f64),
            "-".into(),
        ));
    }
    print_rows(rows);
}

/// What the replicas' logs say about stalls of their Paxos loops (warnings are always
/// logged; checkpoint timings at `BENCH_REPLICA_LOG=info`), and a copy of the logs in
/// `BENCH_KEEP_LOGS` (a directory) if set: the bench's own directory is removed at its end.
fn report_replica_logs(dir: &Path) {
    let keep = std::env::var_os("BENCH_KEEP_LOGS").map(PathBuf::from);
    for id in 1..=MEMBERS {
        let path = dir.join(format!("replica-{id}.log"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let count = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
        let longest_pass_ms = text
            .lines()
            .filter_map(|l| l.split("pass_ms=").nth(1))
            .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        println!(
            "borgmaster replica {id} log: {} slow loop passes (longest {longest_pass_ms} ms), {} late ticks, {} applies blocked on the state lock, {} checkpoints logged, {} leader changes logged",
            count("a pass of the Paxos loop took longer"),
            count("did not tick for a long time"),
            count("blocked the loop on the cell state"),
            count("checkpoint written"),
            count("leader changed"),
        );
        if let Some(keep) = &keep {
            let copied = std::fs::create_dir_all(keep)
                .and_then(|_| std::fs::copy(&path, keep.join(format!("replica-{id}.log"))));
            if let Err(error) = copied {
                eprintln!(
                    "cannot copy {} to {}: {error}",
                    path.display(),
                    keep.display()
                );
            }
        }
    }
}

/// The fastest path's rate in round `round` (and its name); NaN when none was measured.
fn headline<P: PathName>(paths: &[(P, Vec<f64>)], round: usize) -> (f64, String) {
    paths
        .iter()
        .filter_map(|(path, rates)| rates.get(round).map(|r| (*r, path.label())))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap_or((f64::NAN, "-".into()))
}

trait PathName {
    fn label(&self) -> String;
}

impl PathName for BorgPath {
    fn label(&self) -> String {
        self.name().into()
    }
}

impl PathName for EtcdPath {
    fn label(&self) -> String {
        self.name()
    }
}

fn format_rates(rates: &[f64]) -> String {
    rates
        .iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn print_rows(rows: Vec<(String, String, String)>) {
    println!("\n| figure | borgmaster | etcd 3.4 |\n|---|---|---|");
    for (name, ours, theirs) in rows {
        println!("| {name} | {ours} | {theirs} |");
    }
}

/// Five replica processes of this binary.
struct BorgCell {
    addresses: Vec<String>,
    members: Vec<Member>,
}

impl BorgCell {
    fn start(dir: &Path, checkpoint_every_entries: u64) -> BorgCell {
        std::fs::create_dir_all(dir).expect("bench dir");
        let addresses: Vec<String> = (0..MEMBERS)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let peers = addresses
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let exe = std::env::current_exe().expect("own path");
        let members = (1..=MEMBERS)
            .map(|id| {
                let log =
                    std::fs::File::create(dir.join(format!("replica-{id}.log"))).expect("log");
                let mut command = Command::new(&exe);
                command
                    .args(["replica", &id.to_string(), &peers])
                    .arg(dir.join(format!("replica-{id}")))
                    .arg(checkpoint_every_entries.to_string())
                    .env(
                        "RUST_LOG",
                        std::env::var("BENCH_REPLICA_LOG").unwrap_or_else(|_| "warn".into()),
                    )
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log);
                Member::spawn(command)
            })
            .collect();
        BorgCell { addresses, members }
    }

    async fn status(&self, index: usize) -> Option<v1::ReplicaStatus> {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.addresses[index]))
                .ok()?
                .connect_timeout(Duration::from_millis(200))
                .timeout(Duration::from_secs(10))
                .connect()
                .await
                .ok()?;
        ReplicaServiceClient::new(channel)
            .status(v1::ReplicaStatusRequest::default())
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    /// Index (0-based) of the leader once a live replica reports it leads.
    async fn wait_leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for i in 0..MEMBERS {
                if self.members[i].child.is_none() {
                    continue;
                }
                if let Some(s) = self.status(i).await {
                    if s.is_leader {
                        return i;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no borgmaster leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The leader every replica names (None if they disagree, none is known or one does not
    /// answer), and the leader changes they have seen in all.
    async fn leadership(&self) -> (Option<u64>, u64) {
        let mut leaders = Vec::new();
        let mut changes = 0;
        for i in 0..MEMBERS {
            match self.status(i).await {
                Some(status) => {
                    leaders.push(status.leader_id);
                    changes += status.leader_changes;
                }
                None => return (None, changes),
            }
        }
        let first = leaders[0];
        let agreed = (first != 0 && leaders.iter().all(|l| *l == first)).then_some(first);
        (agreed, changes)
    }

    fn channel(&self, address: &str) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .expect("endpoint")
            .connect_timeout(Duration::from_millis(200))
            .timeout(Duration::from_millis(
                FAILOVER_WRITE_ATTEMPT_TIMEOUT_MS.max(5_000),
            ))
            .tcp_nodelay(true)
            .connect_lazy()
    }

    fn client(&self, address: &str) -> CellServiceClient<tonic::transport::Channel> {
        CellServiceClient::new(self.channel(address))
    }

    /// CPU ticks used by each replica so far.
    fn cpu_ticks(&self) -> Vec<u64> {
        self.members.iter().map(Member::cpu_ticks).collect()
    }

    /// Committed writes/s with `inflight` writers, each with one write outstanding at a time,
    /// through `path`: unary `SubmitJob` calls on one connection, or one shared `SubmitJobs`
    /// stream.
    async fn throughput(&self, path: BorgPath, inflight: usize, seconds: u64) -> f64 {
        let leader = self.wait_leader().await;
        let cpu_before = self.cpu_ticks();
        let status_before = self.status(leader).await;
        let client = self.client(&self.addresses[leader]);
        let stream = match path {
            BorgPath::Unary => None,
            BorgPath::Stream => Some(Arc::new(
                SubmitStream::open(
                    InterceptedService::new(
                        self.channel(&self.addresses[leader]),
                        TokenInterceptor::default(),
                    ),
                    inflight,
                    Duration::from_secs(5),
                )
                .await
                .expect("open a SubmitJobs stream"),
            )),
        };
        let tally = Arc::new(Tally::default());
        let stop = Instant::now() + Duration::from_secs(seconds);
        let mut writers = tokio::task::JoinSet::new();
        for w in 0..inflight {
            let (mut client, stream, tally) = (client.clone(), stream.clone(), tally.clone());
            writers.spawn(async move {
                let mut n = 0u64;
                while Instant::now() < stop {
                    // Each writer cycles over a few jobs and changes one each time, so every
                    // write is a real update and the cell never fills up (JOBS_MAX): new
                    // names per write used to hit the cap within the first round, after
                    // which refused writes went uncounted and capped every later round.
                    let name = format!("t{inflight}-{w}-{}", n % JOBS_PER_WRITER);
                    let sequence = WRITE_SEQUENCE.fetch_add(1, Ordering::Relaxed);
                    let mut spec = job(&name, 1);
                    if let Some(task) = spec.task.as_mut() {
                        task.args = vec![sequence.to_string()];
                    }
                    n += 1;
                    let request = v1::SubmitJobRequest {
                        spec: Some(spec),
                        request_id: format!("w{sequence}"),
                        check_index: None,
                    };
                    let committed = match &stream {
                        Some(stream) => stream.submit(request).await.is_ok(),
                        None => client.submit_job(request).await.is_ok(),
                    };
                    tally.count(committed);
                }
            });
        }
        let started = Instant::now();
        while writers.join_next().await.is_some() {}
        let elapsed_s = started.elapsed().as_secs_f64();
        let committed = tally.committed.load(Ordering::Relaxed);
        let failed = tally.failed.load(Ordering::Relaxed);
        if failed > 0 {
            println!("  borgmaster: {failed} writes failed at {inflight} in flight (not counted)");
        }
        // CPU per write is what a busy shared machine changes least (throughput depends on
        // what else runs); clock ticks are 10 ms on Linux.
        let used_s: Vec<f64> = self
            .cpu_ticks()
            .iter()
            .zip(&cpu_before)
            .map(|(after, before)| after.saturating_sub(*before) as f64 / CLOCK_TICKS_PER_S)
            .collect();
        let cpu_s: f64 = used_s.iter().sum();
        if let (Some(before), Some(after)) = (status_before, self.status(leader).await) {
            let commands = after.applied_index.saturating_sub(before.applied_index);
            let entries = after
                .applied_log_index
                .saturating_sub(before.applied_log_index);
            println!(
                "  borgmaster {}, {inflight} in flight: {commands} commands in {entries} log entries ({:.1} per entry)",
                path.name(),
                commands as f64 / entries.max(1) as f64
            );
        }
        let per_write_us = |s: f64| s * 1e6 / committed.max(1) as f64;
        println!(
            "  borgmaster {}, {inflight} in flight: the five replicas used {cpu_s:.2} CPU-s: {:.0} µs of CPU per committed write (leader {:.0} µs, followers {:.0} µs)",
            path.name(),
            per_write_us(cpu_s),
            per_write_us(used_s[leader]),
            per_write_us(cpu_s - used_s[leader]),
        );
        committed as f64 / elapsed_s
    }

    /// One write accepted by any live replica (followers forward), trying each in turn.
    async fn write_anywhere(&self, name: &str) -> bool {
        for i in 0..MEMBERS {
            if self.members[i].child.is_none() {
                continue;
            }
            let mut client = self.client(&self.addresses[i]);
            let mut request = tonic::Request::new(v1::SubmitJobRequest {
                spec: Some(job(name, 1)),
                request_id: name.into(),
                check_index: None,
            });
            request.set_timeout(Duration::from_millis(FAILOVER_WRITE_ATTEMPT_TIMEOUT_MS));
            match client.submit_job(request).await {
                Ok(_) => return true,
                Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                    println!("replica {} refuses the write: {}", i + 1, status.message());
                }
                Err(_) => {}
            }
        }
        false
    }

    async fn failover(&mut self, trials: usize) -> Vec<f64> {
        // With replica logs on (BENCH_REPLICA_LOG), the kill times line up with them.
        let verbose = std::env::var("BENCH_REPLICA_LOG").is_ok();
        let mut times = Vec::new();
        for trial in 0..trials {
            let leader = self.wait_leader().await;
            // The cell takes a write before the kill (not timed; the machine may be busy).
            let ready = Instant::now();
            let mut attempt = 0;
            while !self.write_anywhere(&format!("pre-{trial}-{attempt}")).await {
                attempt += 1;
                if attempt % 10 == 0 {
                    for i in 0..MEMBERS {
                        println!(
                            "no write yet; replica {}: {:?}",
                            i + 1,
                            self.status(i).await
                        );
                    }
                }
                assert!(
                    ready.elapsed() < Duration::from_secs(FAILOVER_DEADLINE_S),
                    "no write before the failover"
                );
            }
            self.members[leader].kill();
            let killed = Instant::now();
            if verbose {
                println!(
                    "trial {trial}: killed replica {} at {} ms (Unix)",
                    leader + 1,
                    borg_common::now_ms()
                );
            }
            let mut attempt = 0;
            loop {
                attempt += 1;
                if self.write_anywhere(&format!("fo-{trial}-{attempt}")).await {
                    break;
                }
                assert!(
                    killed.elapsed() < Duration::from_secs(FAILOVER_DEADLINE_S),
                    "no write after failover"
                );
            }
            times.push(killed.elapsed().as_secs_f64() * 1000.0);
            if verbose {
                println!(
                    "trial {trial}: write after {:.0} ms, {attempt} attempts",
                    killed.elapsed().as_secs_f64() * 1000.0
                );
            }
            self.members[leader].restart();
            // Let the restarted replica catch up before the next trial.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        times
    }

    /// Loads 100,000 tasks, waits for a checkpoint covering them on a follower, restarts that
    /// follower (SIGKILL) and times it until it serves at the leader's applied index.
    async fn recovery(&mut self) -> (f64, u64) {
        let mut leader = self.wait_leader().await;
        for j in 0..RECOVERY_JOBS {
            let name = format!("big-{j}");
            // Retried at the (new) leader with the same request id if the leader changes
            // while loading: the loop's checkpoints of a 100,000-task state on a busy machine
            // can hold it past a heartbeat round. Counted and printed.
            let mut attempts = 0;
            loop {
                let request = v1::SubmitJobRequest {
                    spec: Some(job(&name, RECOVERY_TASKS_PER_JOB)),
                    request_id: name.clone(),
                    check_index: None,
                };
                let mut client = self.client(&self.addresses[leader]);
                match client.submit_job(request).await {
                    Ok(_) => break,
                    Err(status) => {
                        attempts += 1;
                        println!(
                            "loading tasks: {name} refused ({}); retrying at the leader",
                            status.message()
                        );
                        assert!(attempts < 20, "cannot load tasks: {status:?}");
                        leader = self.wait_leader().await;
                    }
                }
            }
        }
        let leader_status = self.status(leader).await.expect("leader status");
        let (target, target_log) = (leader_status.applied_index, leader_status.applied_log_index);
        let follower = (0..MEMBERS).find(|i| *i != leader).expect("a follower");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(s) = self.status(follower).await {
                if s.checkpoint_index >= target_log - 1 && s.applied_index >= target {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no checkpoint of the loaded cell"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rss = (0..MEMBERS)
            .map(|i| self.members[i].rss_bytes())
            .max()
            .unwrap_or(0);
        self.members[follower].kill();
        let started = Instant::now();
        self.members[follower].restart();
        loop {
            if let Some(s) = self.status(follower).await {
                if s.applied_index >= target {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "replica did not recover"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let recovery_ms = started.elapsed().as_secs_f64() * 1000.0;
        println!("borgmaster: recovery of a replica from a checkpoint of {} tasks: {recovery_ms:.0} ms; largest replica VmRSS {} MiB", RECOVERY_JOBS as u32 * RECOVERY_TASKS_PER_JOB, rss >> 20);
        (recovery_ms, rss)
    }
}

/// How the bench's writers reach borgmaster.
#[derive(Debug, Clone, Copy, PartialEq)]
enum BorgPath {
    /// One unary `SubmitJob` call per write, all writers on one HTTP/2 connection.
    Unary,
    /// One `SubmitJobs` stream shared by all writers (`borg_common`'s `SubmitStream`).
    Stream,
}

impl BorgPath {
    fn name(self) -> &'static str {
        match self {
            BorgPath::Unary => "unary SubmitJob",
            BorgPath::Stream => "SubmitJobs stream",
        }
    }
}

/// How the bench's writers reach etcd.
#[derive(Debug, Clone, Copy, PartialEq)]
enum EtcdPath {
    /// `/v3/kv/put` on etcd's HTTP/JSON gateway, one keep-alive HTTP/1.1 connection per
    /// writer.
    Http,
    /// etcd's native gRPC `KV/Put`, the writers spread over this many HTTP/2 connections.
    Grpc { connections: usize },
}

impl EtcdPath {
    fn name(self) -> String {
        match self {
            EtcdPath::Http => "HTTP/JSON gateway".into(),
            EtcdPath::Grpc { connections: 1 } => "gRPC KV/Put, 1 connection".into(),
            EtcdPath::Grpc { connections } => format!("gRPC KV/Put, {connections} connections"),
        }
    }
}

/// Writes counted by a throughput phase's writers.
#[derive(Default)]
struct Tally {
    committed: AtomicU64,
    failed: AtomicU64,
}

impl Tally {
    fn count(&self, committed: bool) {
        let counter = if committed {
            &self.committed
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Jobs each throughput writer cycles over (updating one per write).
const JOBS_PER_WRITER: u64 = 16;

/// Numbers every throughput write, across rounds, for unique request ids and job changes.
static WRITE_SEQUENCE: AtomicU64 = AtomicU64::new(0);

fn job(name: &str, replicas: u32) -> v1::JobSpec {
    v1::JobSpec {
        name: name.into(),
        owner: "bench".into(),
        priority: 100,
        replicas,
        task: Some(v1::TaskTemplate {
            command: "/bin/true".into(),
            resources: Some(v1::Resources {
                cpu_millis: 1,
                ram_bytes: 1 << 20,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Installs Debian's etcd-server when `etcd` is missing; false if that fails.
fn ensure_etcd() -> bool {
    if Command::new("etcd").arg("--version").output().is_ok() {
        return true;
    }
    println!("installing etcd-server with apt-get");
    let ok = Command::new("apt-get")
        .args(["install", "-y", "etcd-server"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("etcd could not be installed: its column stays empty");
    }
    ok
}

/// Five etcd members on loopback.
struct EtcdCell {
    clients: Vec<String>,
    members: Vec<Member>,
}

impl EtcdCell {
    fn start(dir: &Path) -> EtcdCell {
        let clients: Vec<String> = (0..MEMBERS)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let peers: Vec<String> = (0..MEMBERS)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let cluster = peers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("m{i}=http://{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let members = (0..MEMBERS)
            .map(|i| {
                let log = std::fs::File::create(dir.join(format!("etcd-{i}.log"))).expect("log");
                let mut command = Command::new("etcd");
                command
                    .arg("--name")
                    .arg(format!("m{i}"))
                    .arg("--data-dir")
                    .arg(dir.join(format!("etcd-{i}")))
                    .arg("--listen-client-urls")
                    .arg(format!("http://{}", clients[i]))
                    .arg("--advertise-client-urls")
                    .arg(format!("http://{}", clients[i]))
                    .arg("--listen-peer-urls")
                    .arg(format!("http://{}", peers[i]))
                    .arg("--initial-advertise-peer-urls")
                    .arg(format!("http://{}", peers[i]))
                    .arg("--initial-cluster")
                    .arg(&cluster)
                    .arg("--initial-cluster-token")
                    .arg("bench")
                    .arg("--initial-cluster-state")
                    .arg("new")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log);
                Member::spawn(command)
            })
            .collect();
        EtcdCell { clients, members }
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.leader().await.is_none() {
            assert!(Instant::now() < deadline, "etcd did not elect a leader");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Index of the member that leads, from `/v3/maintenance/status` of the live members.
    async fn leader(&self) -> Option<usize> {
        for i in 0..MEMBERS {
            if self.members[i].child.is_none() {
                continue;
            }
            let Ok(Ok(mut conn)) = tokio::time::timeout(
                Duration::from_millis(500),
                HttpConn::connect(&self.clients[i]),
            )
            .await
            else {
                continue;
            };
            let Ok(Ok((200, body))) = tokio::time::timeout(
                Duration::from_millis(500),
                conn.post("/v3/maintenance/status", "{}"),
            )
            .await
            else {
                continue;
            };
            let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) else {
                continue;
            };
            let leader = json["leader"].as_str().unwrap_or("");
            if !leader.is_empty() && json["header"]["member_id"].as_str() == Some(leader) {
                return Some(i);
            }
        }
        None
    }

    /// Committed puts/s with `inflight` writers, each with one put outstanding at a time,
    /// through `path`, at the leader.
    async fn throughput(&self, path: EtcdPath, inflight: usize, seconds: u64) -> f64 {
        let leader = self.leader().await.unwrap_or(0);
        let address = self.clients[leader].clone();
        let cpu_before: u64 = self.members.iter().map(Member::cpu_ticks).sum();
        let tally = Arc::new(Tally::default());
        let stop = Instant::now() + Duration::from_secs(seconds);
        let grpc_channels: Vec<tonic::transport::Channel> = match path {
            EtcdPath::Http => Vec::new(),
            EtcdPath::Grpc { connections } => (0..connections.max(1))
                .map(|_| etcd_grpc_channel(&address))
                .collect(),
        };
        let mut writers = tokio::task::JoinSet::new();
        for w in 0..inflight {
            let (address, tally) = (address.clone(), tally.clone());
            let key = move |n: u64| format!("t{inflight}-{w}-{n}");
            match path {
                EtcdPath::Http => writers.spawn(async move {
                    let Ok(mut conn) = HttpConn::connect(&address).await else {
                        return;
                    };
                    let mut n = 0u64;
                    while Instant::now() < stop {
                        let body = put_body(&key(n), "value");
                        n += 1;
                        match conn.post("/v3/kv/put", &body).await {
                            Ok((code, _)) => tally.count(code == 200),
                            Err(_) => {
                                tally.count(false);
                                match HttpConn::connect(&address).await {
                                    Ok(c) => conn = c,
                                    Err(_) => return,
                                }
                            }
                        }
                    }
                }),
                EtcdPath::Grpc { .. } => {
                    let channel = grpc_channels[w % grpc_channels.len()].clone();
                    writers.spawn(async move {
                        let mut kv = tonic::client::Grpc::new(channel);
                        let mut n = 0u64;
                        while Instant::now() < stop {
                            let put =
                                etcd_grpc_put(&mut kv, key(n).into_bytes(), b"value".to_vec());
                            n += 1;
                            tally.count(put.await.is_ok());
                        }
                    })
                }
            };
        }
        let started = Instant::now();
        while writers.join_next().await.is_some() {}
        let elapsed_s = started.elapsed().as_secs_f64();
        let committed = tally.committed.load(Ordering::Relaxed);
        let failed = tally.failed.load(Ordering::Relaxed);
        if failed > 0 {
            println!("  etcd: {failed} puts failed at {inflight} in flight (not counted)");
        }
        let cpu_after: u64 = self.members.iter().map(Member::cpu_ticks).sum();
        let cpu_s = cpu_after.saturating_sub(cpu_before) as f64 / CLOCK_TICKS_PER_S;
        println!(
            "  etcd {}, {inflight} in flight: the five members used {cpu_s:.2} CPU-s: {:.0} µs of CPU per committed put",
            path.name(),
            cpu_s * 1e6 / committed.max(1) as f64
        );
        committed as f64 / elapsed_s
    }

    async fn put_anywhere(&self, key: &str) -> bool {
        for i in 0..MEMBERS {
            if self.members[i].child.is_none() {
                continue;
            }
            let attempt = async {
                let mut conn = HttpConn::connect(&self.clients[i]).await.ok()?;
                let (code, _) = conn.post("/v3/kv/put", &put_body(key, "v")).await.ok()?;
                (code == 200).then_some(())
            };
            if let Ok(Some(())) = tokio::time::timeout(
                Duration::from_millis(FAILOVER_WRITE_ATTEMPT_TIMEOUT_MS),
                attempt,
            )
            .await
            {
                return true;
            }
        }
        false
    }

    async fn failover(&mut self, trials: usize) -> Vec<f64> {
        let mut times = Vec::new();
        for trial in 0..trials {
            self.wait_ready().await;
            let Some(leader) = self.leader().await else {
                continue;
            };
            let ready = Instant::now();
            let mut attempt = 0;
            while !self.put_anywhere(&format!("pre-{trial}-{attempt}")).await {
                attempt += 1;
                assert!(
                    ready.elapsed() < Duration::from_secs(FAILOVER_DEADLINE_S),
                    "etcd: no write before the failover"
                );
            }
            self.members[leader].kill();
            let killed = Instant::now();
            let mut attempt = 0;
            loop {
                attempt += 1;
                if self.put_anywhere(&format!("fo-{trial}-{attempt}")).await {
                    break;
                }
                assert!(
                    killed.elapsed() < Duration::from_secs(FAILOVER_DEADLINE_S),
                    "etcd: no write after failover"
                );
            }
            times.push(killed.elapsed().as_secs_f64() * 1000.0);
            self.members[leader].restart();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        times
    }
}

/// etcd's `etcdserverpb.PutRequest`, the two fields the bench sets (etcd's rpc.proto).
#[derive(Clone, PartialEq, prost::Message)]
struct EtcdPutRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// etcd's `etcdserverpb.ResponseHeader`.
#[derive(Clone, PartialEq, prost::Message)]
struct EtcdResponseHeader {
    #[prost(uint64, tag = "1")]
    cluster_id: u64,
    #[prost(uint64, tag = "2")]
    member_id: u64,
    #[prost(int64, tag = "3")]
    revision: i64,
    #[prost(uint64, tag = "4")]
    raft_term: u64,
}

/// etcd's `etcdserverpb.PutResponse` (without `prev_kv`, which the bench never asks for).
#[derive(Clone, PartialEq, prost::Message)]
struct EtcdPutResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<EtcdResponseHeader>,
}

/// An HTTP/2 connection to an etcd member's client port (gRPC and the gateway share it).
fn etcd_grpc_channel(address: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect_lazy()
}

/// One `etcdserverpb.KV/Put`: the revision it committed at.
async fn etcd_grpc_put(
    kv: &mut tonic::client::Grpc<tonic::transport::Channel>,
    key: Vec<u8>,
    value: Vec<u8>,
) -> Result<i64, tonic::Status> {
    kv.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("etcd connection: {e}")))?;
    let response: tonic::Response<EtcdPutResponse> = kv
        .unary(
            tonic::Request::new(EtcdPutRequest { key, value }),
            tonic::codegen::http::uri::PathAndQuery::from_static("/etcdserverpb.KV/Put"),
            tonic_prost::ProstCodec::default(),
        )
        .await?;
    Ok(response.into_inner().header.map_or(0, |h| h.revision))
}

fn put_body(key: &str, value: &str) -> String {
    format!(
        r#"{{"key":"{}","value":"{}"}}"#,
        base64(key.as_bytes()),
        base64(value.as_bytes())
    )
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A minimal HTTP/1.1 keep-alive client for etcd's JSON gateway (POST, Content-Length bodies).
struct HttpConn {
    stream: TcpStream,
    host: String,
    buffer: Vec<u8>,
}

impl HttpConn {
    async fn connect(address: &str) -> std::io::Result<HttpConn> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(HttpConn {
            stream,
            host: address.to_owned(),
            buffer: Vec::with_capacity(4096),
        })
    }

    async fn post(&mut self, path: &str, body: &str) -> std::io::Result<(u16, Vec<u8>)> {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.stream.write_all(request.as_bytes()).await?;
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
        loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buffer[..end]).to_string();
                let code: u16 = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| bad("status line"))?;
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .ok_or_else(|| bad("no content-length"))?;
                while self.buffer.len() < end + 4 + length {
                    self.fill().await?;
                }
                let body = self.buffer[end + 4..end + 4 + length].to_vec();
                self.buffer.drain(..end + 4 + length);
                return Ok((code, body));
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed",
            ));
        }
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
