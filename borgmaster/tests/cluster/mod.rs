//! An in-process cluster of replicas over real gRPC and real RocksDB, for the tests of this
//! crate; and helpers to wait, submit and read.

#![allow(dead_code)]

use borg_common::master_client::TokenInterceptor;
use borg_proto::v1;
use borg_proto::v1::cell_service_client::CellServiceClient;
use borg_proto::v1::replica_service_client::ReplicaServiceClient;
use borgmaster::transport::PeerClient;
use borgmaster::ReplicaConfig;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Code;

pub const WAIT_DEADLINE_MS: u64 = 20_000;
pub const POLL_INTERVAL_MS: u64 = 20;

pub struct Cluster {
    pub dirs: Vec<tempfile::TempDir>,
    pub addresses: BTreeMap<u64, String>,
    pub replicas: BTreeMap<u64, Replica>,
    pub tweak: fn(&mut ReplicaConfig),
    /// With authentication on: the directory of the token files every replica is given.
    pub auth_dir: Option<tempfile::TempDir>,
    /// The cluster token, sent with the helpers' `ReplicaService` calls.
    pub cluster_token: Option<String>,
}

pub type Replica = (
    CancellationToken,
    JoinHandle<Result<(), borgmaster::MasterError>>,
);

impl Cluster {
    pub async fn start(count: u64) -> Cluster {
        Cluster::start_with(count, |_| {}).await
    }

    /// Starts `count` replicas whose configurations `tweak` adjusts.
    pub async fn start_with(count: u64, tweak: fn(&mut ReplicaConfig)) -> Cluster {
        Cluster::start_inner(count, tweak, false).await
    }

    /// Starts `count` replicas with authentication on (shared admin and cluster token files).
    pub async fn start_authenticated(count: u64) -> Cluster {
        Cluster::start_inner(count, |_| {}, true).await
    }

    async fn start_inner(count: u64, tweak: fn(&mut ReplicaConfig), auth: bool) -> Cluster {
        let mut listeners = BTreeMap::new();
        for id in 1..=count {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listeners.insert(id, listener);
        }
        let addresses = listeners
            .iter()
            .map(|(id, l)| (*id, l.local_addr().unwrap().to_string()))
            .collect();
        let dirs = (0..count).map(|_| tempfile::tempdir().unwrap()).collect();
        let auth_dir = auth.then(|| tempfile::tempdir().unwrap());
        let cluster_token = auth_dir.as_ref().map(|dir| {
            borg_common::auth::load_or_create_token_file(&dir.path().join("cluster.token")).unwrap()
        });
        let mut cluster = Cluster {
            dirs,
            addresses,
            replicas: BTreeMap::new(),
            tweak,
            auth_dir,
            cluster_token,
        };
        cluster.spawn(listeners);
        cluster
    }

    pub fn config(&self, id: u64) -> ReplicaConfig {
        let mut config = ReplicaConfig::new(
            id,
            self.addresses.clone(),
            self.dirs[(id - 1) as usize].path().to_owned(),
        );
        // Replica 1 recovers by replaying its log, the others from checkpoint + suffix.
        config.checkpoint_every_entries = if id == 1 { 0 } else { 1 };
        config.peer_filter_enabled = true;
        config.auth = self
            .auth_dir
            .as_ref()
            .map(|dir| borgmaster::services::auth::AuthConfig::in_dir(dir.path(), "root"));
        (self.tweak)(&mut config);
        config
    }

    pub fn spawn(&mut self, listeners: BTreeMap<u64, TcpListener>) {
        for (id, listener) in listeners {
            let token = CancellationToken::new();
            let config = self.config(id);
            let handle = tokio::spawn(borgmaster::run_with_listener(
                config,
                listener,
                token.clone(),
            ));
            self.replicas.insert(id, (token, handle));
        }
    }

    pub async fn stop(&mut self) {
        let ids: Vec<u64> = self.replicas.keys().copied().collect();
        for id in ids {
            self.stop_one(id).await;
        }
    }

    /// Stops replica `id` and waits until it has shut down.
    pub async fn stop_one(&mut self, id: u64) {
        let (token, handle) = self.replicas.remove(&id).expect("a running replica");
        token.cancel();
        handle.await.unwrap().unwrap();
    }

    /// Starts every replica again on the same addresses and data directories.
    pub async fn restart(&mut self) {
        self.stop().await;
        let mut listeners = BTreeMap::new();
        for (id, address) in &self.addresses {
            listeners.insert(*id, TcpListener::bind(address).await.unwrap());
        }
        self.spawn(listeners);
    }

    /// Starts replica `id` again on its address and data directory.
    pub async fn start_one(&mut self, id: u64) {
        let listener = TcpListener::bind(self.address(id)).await.unwrap();
        self.spawn([(id, listener)].into());
    }

    /// Gives (stopped) replica `id` a new, empty data directory: a lost disk.
    pub fn wipe(&mut self, id: u64) {
        self.dirs[(id - 1) as usize] = tempfile::tempdir().unwrap();
    }

    pub fn data_dir(&self, id: u64) -> std::path::PathBuf {
        self.dirs[(id - 1) as usize].path().to_owned()
    }

    /// A `ReplicaService` client of replica `id` that sends the cluster token (if any).
    pub fn replica_client(&self, id: u64) -> PeerClient {
        let token = TokenInterceptor::new(self.cluster_token.as_deref()).unwrap();
        ReplicaServiceClient::with_interceptor(channel(self.address(id)), token)
    }

    /// Replica `id`'s status, with its state hash; None if it does not answer.
    pub async fn status(&self, id: u64) -> Option<v1::ReplicaStatus> {
        let mut client = self.replica_client(id);
        client
            .status(v1::ReplicaStatusRequest {
                with_state_hash: true,
            })
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    /// Drops Paxos traffic between replica `id` and `blocked` (empty: heal).
    pub async fn set_peer_filter(&self, id: u64, blocked: Vec<u64>) {
        let mut client = self.replica_client(id);
        client
            .set_peer_filter(v1::SetPeerFilterRequest { blocked })
            .await
            .unwrap();
    }

    pub fn address(&self, id: u64) -> &str {
        &self.addresses[&id]
    }

    /// Polls every running replica's status until all name the same leader; returns its id.
    pub async fn wait_for_leader(&self) -> u64 {
        eventually("one agreed leader", || async {
            let mut leaders = Vec::new();
            for id in self.replicas.keys() {
                let mut client = self.replica_client(*id);
                let status = client
                    .status(v1::ReplicaStatusRequest::default())
                    .await
                    .ok()?
                    .into_inner();
                leaders.push(status.leader_id);
            }
            let first = leaders[0];
            let agreed = first != 0 && leaders.iter().all(|l| *l == first);
            (agreed && self.replicas.contains_key(&first)).then_some(first)
        })
        .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (token, _) in self.replicas.values() {
            token.cancel();
        }
    }
}

pub fn channel(address: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(10))
        .connect_lazy()
}

/// Polls `check` until it yields a value, or panics naming `what` after the deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_millis(WAIT_DEADLINE_MS);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    }
}

pub fn job_spec(name: &str, replicas: u32) -> v1::JobSpec {
    v1::JobSpec {
        name: name.into(),
        owner: "alice".into(),
        priority: 100,
        replicas,
        task: Some(v1::TaskTemplate {
            command: "/bin/sleep".into(),
            args: vec!["100".into()],
            resources: Some(v1::Resources {
                cpu_millis: 100,
                ram_bytes: 64 << 20,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Submits through the leader, retrying while it is still settling (UNAVAILABLE).
pub async fn submit_at_leader(
    address: &str,
    spec: v1::JobSpec,
    request_id: &str,
) -> v1::SubmitJobResponse {
    eventually("the leader to accept a write", || {
        let spec = spec.clone();
        async move {
            let mut client = CellServiceClient::new(channel(address));
            match client
                .submit_job(v1::SubmitJobRequest {
                    spec: Some(spec),
                    request_id: request_id.into(),
                    check_index: None,
                })
                .await
            {
                Ok(response) => Some(response.into_inner()),
                Err(status) if status.code() == Code::Unavailable => None,
                Err(status) => panic!("submit failed: {status}"),
            }
        }
    })
    .await
}

pub async fn get_job(address: &str, name: &str) -> Option<v1::Job> {
    let mut client = CellServiceClient::new(channel(address));
    client
        .get_job(v1::GetJobRequest {
            name: name.into(),
            consistent: false,
            summary: false,
        })
        .await
        .ok()
        .and_then(|r| r.into_inner().job)
}
