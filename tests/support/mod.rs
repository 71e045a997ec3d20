//! Harness for cross-process tests: starts the real `borg` daemons as separate processes on
//! loopback, runs the real CLI against them, and cleans up every process, task and cgroup
//! it made, even when a test fails.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const BORG: &str = env!("CARGO_BIN_EXE_borg");
/// User name of a test cell's bootstrap admin (the CLI runs as it unless told otherwise).
pub const ADMIN_USER: &str = "admin";

/// Ports handed out in this process are never handed out twice.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// Polls `check` every 100 ms until it yields a value, panicking with `what` at the deadline.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A daemon process, killed when dropped; its output goes to a log file.
pub struct Daemon {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn spawn(name: &str, args: &[String], log_dir: &Path) -> Daemon {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open daemon log");
        let child = Command::new(BORG)
            .args(args)
            .env("BORG_LOG", "info,borgmaster=debug")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Daemon {
            name: name.to_owned(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.pid());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

static CELL_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Where test cells keep their data. Not /tmp: a task's private /tmp hides anything under
/// /tmp, so a keeper whose sandbox lies there must rebuild the sandbox's path inside the
/// private /tmp for every task (four directories on disk per start).
const CELL_DIR_PARENT: &str = "/var/tmp";

/// A cell of real daemon processes on loopback.
pub struct TestCell {
    pub dir: tempfile::TempDir,
    pub master_ports: Vec<u16>,
    pub masters: Vec<Option<Daemon>>,
    pub others: Vec<Daemon>,
    pub machine: String,
    pub cgroup_parent: String,
    /// The bootstrap admin's token (the CLI's default identity) and the control plane's.
    pub admin_token: String,
    pub cluster_token: String,
    /// Extra flags every `borg master` of this cell is started (and restarted) with.
    pub master_extra_args: Vec<String>,
}

impl TestCell {
    /// Every master replica's gRPC address, in replica order.
    pub fn master_addresses(&self) -> Vec<String> {
        self.master_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    /// Master replicas only; add the rest with `start_control_plane` and `start_borglet`.
    pub fn with_masters(replicas: usize) -> TestCell {
        TestCell::with_masters_and_args(replicas, &[])
    }

    /// Master replicas started with `extra_args` on top of the usual flags.
    pub fn with_masters_and_args(replicas: usize, extra_args: &[&str]) -> TestCell {
        let n = CELL_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}-{n}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix("borg-test-")
            .tempdir_in(CELL_DIR_PARENT)
            .expect("temp dir");
        let token = |name: &str| {
            borg_common::auth::load_or_create_token_file(&dir.path().join(name))
                .expect("create a token file")
        };
        let (admin_token, cluster_token) = (token("admin.token"), token("cluster.token"));
        let mut cell = TestCell {
            dir,
            admin_token,
            cluster_token,
            master_extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            master_ports: (0..replicas).map(|_| free_port()).collect(),
            masters: Vec::new(),
            others: Vec::new(),
            machine: format!("test-machine-{tag}"),
            cgroup_parent: format!("borg-test-{tag}"),
        };
        for id in 1..=replicas {
            let daemon = cell.spawn_master(id);
            cell.masters.push(Some(daemon));
        }
        cell
    }

    /// Masters, scheduler, one link shard and one borglet.
    pub fn full(replicas: usize) -> TestCell {
        let mut cell = TestCell::with_masters(replicas);
        cell.wait_for_leader();
        cell.start_control_plane();
        cell.start_borglet();
        cell.wait_for_machine();
        cell
    }

    pub fn master_list(&self) -> String {
        self.master_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn peers(&self) -> String {
        self.master_ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn_master(&self, id: usize) -> Daemon {
        let mut args = vec![
            "master".into(),
            "--id".into(),
            id.to_string(),
            "--peers".into(),
            self.peers(),
            "--data-dir".into(),
            self.dir
                .path()
                .join(format!("master-{id}"))
                .display()
                .to_string(),
            "--admin-token-file".into(),
            self.token_file("admin.token"),
            "--admin-user".into(),
            ADMIN_USER.into(),
            "--cluster-token-file".into(),
            self.token_file("cluster.token"),
        ];
        args.extend(self.master_extra_args.iter().cloned());
        Daemon::spawn(&format!("master-{id}"), &args, self.dir.path())
    }

    /// Starts replica `id` (1-based) again on its data directory.
    pub fn restart_master(&mut self, id: usize) {
        let daemon = self.spawn_master(id);
        self.masters[id - 1] = Some(daemon);
    }

    pub fn kill_master(&mut self, id: usize) {
        if let Some(mut daemon) = self.masters[id - 1].take() {
            daemon.kill();
        }
    }

    pub fn start_control_plane(&mut self) {
        let masters = self.master_list();
        let scheduler = Daemon::spawn(
            "scheduler",
            &[
                "scheduler".into(),
                "--master".into(),
                masters.clone(),
                "--cluster-token-file".into(),
                self.token_file("cluster.token"),
            ],
            self.dir.path(),
        );
        let linkshard = Daemon::spawn(
            "linkshard",
            &[
                "linkshard".into(),
                "--master".into(),
                masters,
                "--poll-interval-ms".into(),
                "200".into(),
                "--cluster-token-file".into(),
                self.token_file("cluster.token"),
            ],
            self.dir.path(),
        );
        self.others.push(scheduler);
        self.others.push(linkshard);
    }

    pub fn start_borglet(&mut self) {
        let args = vec![
            "borglet".into(),
            "--master".into(),
            self.master_list(),
            "--listen".into(),
            format!("127.0.0.1:{}", free_port()),
            "--machine".into(),
            self.machine.clone(),
            "--data-dir".into(),
            self.dir.path().join("borglet").display().to_string(),
            "--cgroup-parent".into(),
            self.cgroup_parent.clone(),
            "--kill-tasks-on-exit".into(),
            "--cluster-token-file".into(),
            self.token_file("cluster.token"),
        ];
        let borglet = Daemon::spawn("borglet", &args, self.dir.path());
        self.others.push(borglet);
    }

    pub fn token_file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Runs the CLI against this cell as its admin.
    pub fn borg(&self, args: &[&str]) -> Output {
        self.borg_as(&self.admin_token, ADMIN_USER, args)
    }

    /// Runs the CLI with `token`, filling in `user` as the owner of jobs without one.
    pub fn borg_as(&self, token: &str, user: &str, args: &[&str]) -> Output {
        Command::new(BORG)
            .arg("--master")
            .arg(self.master_list())
            .args(args)
            .env("BORG_TOKEN", token)
            .env("BORG_USER", user)
            .stdin(Stdio::null())
            .output()
            .expect("run borg CLI")
    }

    /// Gives the admin an unlimited quota in every band, so tests submit at any priority;
    /// false if a write failed (no leader yet).
    pub fn grant_admin_quota(&self) -> bool {
        ["batch", "production", "monitoring"].iter().all(|band| {
            self.borg(&["quota", "set", ADMIN_USER, band, "--unlimited"])
                .status
                .success()
        })
    }

    /// Runs the CLI with `--output json` and parses what it printed; None if it failed.
    pub fn borg_json(&self, args: &[&str]) -> Option<serde_json::Value> {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let output = self.borg(&all);
        if !output.status.success() {
            return None;
        }
        serde_json::from_slice(&output.stdout).ok()
    }

    /// Waits until a leader takes writes (granting the admin its quota on the way).
    pub fn wait_for_leader(&self) {
        wait_for("a master leader", Duration::from_secs(60), || {
            self.grant_admin_quota().then_some(())
        });
    }

    pub fn wait_for_machine(&self) {
        wait_for("the borglet to register", Duration::from_secs(60), || {
            let machines = self.borg_json(&["machine", "list"])?;
            machines
                .as_array()?
                .iter()
                .any(|m| m["name"] == self.machine.as_str())
                .then_some(())
        });
    }

    pub fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write test file");
        path
    }

    /// Logs of every daemon, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for daemon in self.masters.iter().flatten().chain(self.others.iter()) {
            out.push_str(&format!(
                "--- {} ---\n{}\n",
                daemon.name,
                daemon.log_tail(40)
            ));
        }
        out
    }

    /// Kills every process left in this cell's task cgroups and removes the cgroups.
    fn clean_cgroups(&self) {
        for hierarchy in ["memory", "cpu", "cpuacct", "pids", "unified"] {
            let root = Path::new("/sys/fs/cgroup")
                .join(hierarchy)
                .join(&self.cgroup_parent);
            if root.exists() {
                remove_cgroup_tree(&root);
            }
        }
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::remove_dir(dir).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for TestCell {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("daemon logs of the failed test:\n{}", self.logs());
        }
        // The borglet first, gracefully: it stops its tasks on the way out.
        for daemon in self.others.iter_mut().rev() {
            daemon.stop(Duration::from_secs(10));
        }
        for daemon in self.masters.iter_mut().flatten() {
            daemon.kill();
        }
        self.clean_cgroups();
    }
}

/// Whether a process exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            !matches!(state.and_then(|s| s.chars().next()), Some('Z') | Some('X'))
        }
        Err(_) => false,
    }
}

pub fn process_cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
        .unwrap_or_default()
}

/// A one-task job of the smallest size, owned by the admin: for tests that count writes.
pub fn tiny_job(name: &str) -> borg_proto::v1::JobSpec {
    borg_proto::v1::JobSpec {
        name: name.into(),
        owner: ADMIN_USER.into(),
        priority: 100,
        replicas: 1,
        task: Some(borg_proto::v1::TaskTemplate {
            command: "/bin/true".into(),
            resources: Some(borg_proto::v1::Resources {
                cpu_millis: 1,
                ram_bytes: 1 << 20,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Submits `request` through `client` (which follows the leader and retries with the same
/// request id, as a real client does).
pub async fn submit_job(
    client: &borg_common::MasterClient,
    request: &borg_proto::v1::SubmitJobRequest,
) -> Result<borg_proto::v1::SubmitJobResponse, tonic::Status> {
    client
        .call(|channel| {
            let request = request.clone();
            async move {
                borg_proto::v1::cell_service_client::CellServiceClient::new(channel)
                    .submit_job(request)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
}

/// Polls the async `check` until it yields a value, panicking with `what` after `timeout`
/// (the async twin of `wait_for`).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A master replica's status with its state hash, asked with the cluster token (replicas
/// refuse `ReplicaService` calls without it); None if it does not answer.
pub async fn replica_status(
    address: &str,
    cluster_token: &str,
) -> Option<borg_proto::v1::ReplicaStatus> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .ok()?;
    let token = borg_common::master_client::TokenInterceptor::new(Some(cluster_token)).ok()?;
    borg_proto::v1::replica_service_client::ReplicaServiceClient::with_interceptor(channel, token)
        .status(borg_proto::v1::ReplicaStatusRequest {
            with_state_hash: true,
        })
        .await
        .ok()
        .map(|r| r.into_inner())
}
