//! What the RPC services share: the applied cell state, the leader and progress as the Paxos
//! loop publishes them, and the way into the log.

use crate::metrics::ReplicaMetrics;
use crate::paxos::{Committed, Incoming, LeaderInfo, Progress, Proposal, ProposeError};
use crate::state::{CellState, Command, LogEntry};
use crate::storage::ReplicaDb;
use crate::transport::{peer_client, PeerFilter};
use borg_common::master_client::TokenInterceptor;
use borg_proto::leader::not_leader;
use borg_proto::v1;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

pub struct ReplicaContext {
    pub id: u64,
    pub peers: BTreeMap<u64, String>,
    pub state: Arc<RwLock<CellState>>,
    pub leader: watch::Receiver<LeaderInfo>,
    pub progress: watch::Receiver<Progress>,
    pub updates: broadcast::Sender<Arc<v1::CellUpdate>>,
    pub proposals: mpsc::Sender<Proposal>,
    pub incoming: mpsc::Sender<Incoming>,
    pub metrics: ReplicaMetrics,
    pub proposal_timeout_ms: u64,
    pub watch_buffer_max: usize,
    /// Largest encoded Paxos message accepted from a peer.
    pub message_max_bytes: usize,
    pub shutdown: CancellationToken,
    /// The replica's database (checkpoints served to peers that catch up).
    pub db: ReplicaDb,
    /// Peers whose Paxos traffic is dropped (fault tests only).
    pub peer_filter: Arc<PeerFilter>,
    /// Whether `SetPeerFilter` is accepted (`ReplicaConfig::peer_filter_enabled`).
    pub peer_filter_enabled: bool,
    /// Channels to peers for forwarded writes, by address.
    pub forward_channels: Mutex<HashMap<String, Channel>>,
    /// Attaches the cluster token to calls to peers (forwarded writes).
    pub peer_token: TokenInterceptor,
}

/// Connect timeout of a forwarded write's channel to the leader.
const FORWARD_CONNECT_TIMEOUT_MS: u64 = 500;

impl ReplicaContext {
    pub fn leader(&self) -> LeaderInfo {
        self.leader.borrow().clone()
    }

    /// `Ok` if this replica leads; else the not-leader status with the leader's address.
    pub fn require_leader(&self) -> Result<(), Status> {
        let leader = self.leader();
        if leader.is_self {
            Ok(())
        } else {
            Err(not_leader(leader.leader_address.as_deref()))
        }
    }

    /// The applied state, read-locked.
    pub fn state(&self) -> Result<RwLockReadGuard<'_, CellState>, Status> {
        self.state
            .read()
            .map_err(|_| Status::internal("cell state lock poisoned; restart this replica"))
    }

    pub fn read_meta(&self, state: &CellState) -> v1::ReadMeta {
        v1::ReadMeta {
            replica_id: u32::try_from(self.id).unwrap_or(u32::MAX),
            applied_index: state.applied_index(),
            from_leader: self.leader().is_self,
        }
    }

    /// Before a read: for `consistent`, this replica must lead and a barrier entry must be
    /// decided and applied here, so the read reflects every write acknowledged before it.
    pub async fn prepare_read(&self, consistent: bool) -> Result<(), Status> {
        if consistent {
            self.require_leader()?;
            let id = borg_common::new_request_id("barrier");
            self.propose(id, Command::Noop).await?;
        }
        Ok(())
    }

    /// Appends `command` through the leader's log and waits for its outcome: here when this
    /// replica leads, else forwarded to the leader (the answer then waits until this replica
    /// has applied the entry too, so what the caller reads next from here includes it). An
    /// empty `request_id` gets a fresh one (no dedup across retries then).
    pub async fn propose(&self, request_id: String, command: Command) -> Result<Committed, Status> {
        let request_id = if request_id.is_empty() {
            borg_common::new_request_id("master")
        } else {
            request_id
        };
        let entry = LogEntry {
            request_id,
            time_ms: 0,
            command,
        };
        let leader = self.leader();
        if leader.is_self {
            return self.propose_local(entry).await;
        }
        match leader.leader_address {
            Some(address) if leader.leader_id != Some(self.id) => {
                self.forward(&address, entry).await
            }
            other => Err(not_leader(other.as_deref())),
        }
    }

    /// Appends `entry` through this replica's log; it must lead.
    pub async fn propose_local(&self, entry: LogEntry) -> Result<Committed, Status> {
        self.require_leader()?;
        let (reply, answer) = oneshot::channel();
        let proposal = Proposal { entry, reply };
        if self.proposals.try_send(proposal).is_err() {
            self.metrics
                .proposals_refused
                .with_label_values(&["queue_full"])
                .inc();
            return Err(Status::unavailable(
                "too many writes are queued at the leader; retry shortly",
            ));
        }
        let timeout = Duration::from_millis(self.proposal_timeout_ms);
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(Ok(committed))) => Ok(committed),
            Ok(Ok(Err(error))) => Err(propose_error_status(error)),
            Ok(Err(_)) => Err(Status::unavailable(
                "the replica stopped before the write was decided; retry with the same request id",
            )),
            Err(_) => Err(propose_error_status(ProposeError::Timeout {
                timeout_ms: self.proposal_timeout_ms,
            })),
        }
    }

    /// Passes a write to the leader at `address` (one hop: the leader does not forward again)
    /// and waits until this replica applied it. If the leader cannot be reached, the caller
    /// gets the not-leader status with its address and may go there itself.
    async fn forward(&self, address: &str, entry: LogEntry) -> Result<Committed, Status> {
        let bytes = bincode::serialize(&entry)
            .map_err(|e| Status::internal(format!("cannot encode the write to forward: {e}")))?;
        let mut client = peer_client(
            self.forward_channel(address)?,
            &self.peer_token,
            self.message_max_bytes,
        );
        let mut request = tonic::Request::new(v1::ForwardRequest {
            from: self.id,
            entry: bytes,
        });
        request.set_timeout(Duration::from_millis(self.proposal_timeout_ms));
        self.metrics.forwarded_writes.inc();
        let response = match client.forward(request).await {
            Ok(response) => response.into_inner(),
            Err(status) if borg_proto::leader::leader_hint(&status).is_some() => {
                return Err(status)
            }
            Err(status) if status.code() == tonic::Code::Unavailable => {
                tracing::debug!(leader = address, error = %status.message(), "cannot forward a write");
                return Err(not_leader(Some(address)));
            }
            // The leader took too long: it may have lost its majority (this replica may be on
            // the minority side of a partition). The write may still commit later.
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
                ) =>
            {
                return Err(Status::unavailable(format!(
                    "the leader at {address} did not commit the write within {} ms (it or this \
                     replica may be cut off from a majority); its outcome is unknown: retrying \
                     with the same request id is safe, or try another replica",
                    self.proposal_timeout_ms
                )));
            }
            Err(status) => return Err(status),
        };
        let committed: Committed = bincode::deserialize(&response.committed).map_err(|e| {
            Status::internal(format!(
                "the leader's answer to a forwarded write is unreadable: {e}"
            ))
        })?;
        let mut progress = self.progress.clone();
        let applied = tokio::time::timeout(
            Duration::from_millis(self.proposal_timeout_ms),
            progress.wait_for(|p| p.applied_index >= committed.index),
        )
        .await;
        match applied {
            Ok(Ok(_)) => Ok(committed),
            _ => Err(not_leader(Some(address))),
        }
    }

    fn forward_channel(&self, address: &str) -> Result<Channel, Status> {
        let mut channels = self
            .forward_channels
            .lock()
            .map_err(|_| Status::internal("forward channel lock poisoned"))?;
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| Status::internal(format!("bad leader address {address:?}: {e}")))?
            .connect_timeout(Duration::from_millis(FORWARD_CONNECT_TIMEOUT_MS))
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }
}

pub fn propose_error_status(error: ProposeError) -> Status {
    match error {
        ProposeError::NotLeader { leader_address } => not_leader(leader_address.as_deref()),
        other => Status::unavailable(other.to_string()),
    }
}
