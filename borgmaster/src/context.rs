//! What the RPC services share: the applied cell state, the leader and progress as the Paxos
//! loop publishes them, and the way into the log.

use crate::metrics::ReplicaMetrics;
use crate::paxos::{Committed, Incoming, LeaderInfo, Progress, Proposal, ProposeError};
use crate::state::{CellState, Command, LogEntry};
use borg_proto::leader::not_leader;
use borg_proto::v1;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
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
}

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

    /// Appends `command` through the leader's log and waits for its outcome. An empty
    /// `request_id` gets a fresh one (no dedup across retries then).
    pub async fn propose(&self, request_id: String, command: Command) -> Result<Committed, Status> {
        self.require_leader()?;
        let request_id = if request_id.is_empty() {
            borg_common::new_request_id("master")
        } else {
            request_id
        };
        let (reply, answer) = oneshot::channel();
        let proposal = Proposal {
            entry: LogEntry {
                request_id,
                time_ms: 0,
                command,
            },
            reply,
        };
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
}

pub fn propose_error_status(error: ProposeError) -> Status {
    match error {
        ProposeError::NotLeader { leader_address } => not_leader(leader_address.as_deref()),
        other => Status::unavailable(other.to_string()),
    }
}
