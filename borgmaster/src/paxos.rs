//! The Paxos loop: one task owns the `OmniPaxos` instance and the only writable `CellState`.
//!
//! It ticks OmniPaxos' logical clock, feeds it messages from peers, appends proposals while
//! this replica leads, sends outgoing messages to the peers' queues, and applies decided
//! entries in log order: answering the proposer's waiter with the `Outcome`, publishing the
//! change to watchers, and checkpointing the state every `checkpoint_every_entries`.
//!
//! Log indices: OmniPaxos' position `p` (0-based) is log index `p + 1`, so a state's
//! `applied_index()` is also the next position to apply.

use crate::entry::PaxosMessage;
use crate::metrics::ReplicaMetrics;
use crate::state::{CellState, LogEntry, Outcome};
use crate::storage::{Checkpoint, ReplicaDb, RocksStorage};
use crate::transport::PeerSenders;
use borg_proto::v1;
use omnipaxos::util::LogEntry as PaxosLogEntry;
use omnipaxos::OmniPaxos;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

pub type Paxos = OmniPaxos<LogEntry, RocksStorage<LogEntry>>;

/// Most decided entries applied in one pass of the loop (the rest on the next pass), so
/// ticks and messages are not starved while a recovering replica catches up.
pub const APPLY_BATCH_MAX: usize = 1_024;
/// Most queued messages or proposals handled per wake-up before the loop ticks again.
const DRAIN_MAX: usize = 256;

/// What a write's waiter learns.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// Log index the entry was decided at.
    pub index: u64,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProposeError {
    #[error("this replica is not the leader")]
    NotLeader { leader_address: Option<String> },
    #[error("too many writes are in flight at this replica; retry shortly")]
    Busy,
    #[error("the entry was not decided within {timeout_ms} ms (leader change or lost quorum?); retry with the same request id")]
    Timeout { timeout_ms: u64 },
    #[error("the replica is shutting down")]
    ShuttingDown,
}

/// A write on its way into the log.
pub struct Proposal {
    pub entry: LogEntry,
    pub reply: oneshot::Sender<Result<Committed, ProposeError>>,
}

/// What peers send to the loop.
pub enum Incoming {
    Messages(Vec<PaxosMessage>),
    /// A peer answers again after failures: OmniPaxos re-syncs with it.
    Reconnected(u64),
}

/// Who leads, as this replica sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeaderInfo {
    pub leader_id: Option<u64>,
    pub leader_address: Option<String>,
    /// This replica leads and has finished the prepare phase: it may append.
    pub is_self: bool,
}

/// Progress indices published by the loop.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Progress {
    pub decided_index: u64,
    pub applied_index: u64,
    pub checkpoint_index: u64,
    /// Wall-clock ms of the latest checkpoint (0: none).
    pub checkpoint_time_ms: u64,
}

/// Channels between the loop and the rest of the replica.
pub struct LoopChannels {
    pub proposals: mpsc::Receiver<Proposal>,
    pub incoming: mpsc::Receiver<Incoming>,
    pub leader: watch::Sender<LeaderInfo>,
    pub progress: watch::Sender<Progress>,
    pub updates: broadcast::Sender<Arc<v1::CellUpdate>>,
}

pub struct LoopSettings {
    pub id: u64,
    pub peers: std::collections::BTreeMap<u64, String>,
    pub tick_interval_ms: u64,
    pub proposal_timeout_ms: u64,
    /// Writes waiting for their entry at once; more are refused as busy.
    pub waiters_max: usize,
    pub checkpoint_every_entries: u64,
}

struct Waiter {
    reply: oneshot::Sender<Result<Committed, ProposeError>>,
    proposed_at: Instant,
}

pub struct PaxosLoop {
    settings: LoopSettings,
    paxos: Paxos,
    db: ReplicaDb,
    state: Arc<RwLock<CellState>>,
    senders: PeerSenders,
    metrics: ReplicaMetrics,
    channels: LoopChannels,
    /// Waiting writes by request id (several clients may retry the same id).
    waiters: HashMap<String, Vec<Waiter>>,
    waiter_count: usize,
    leader: LeaderInfo,
    progress: Progress,
    outgoing: Vec<PaxosMessage>,
}

impl PaxosLoop {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: LoopSettings,
        paxos: Paxos,
        db: ReplicaDb,
        state: Arc<RwLock<CellState>>,
        senders: PeerSenders,
        metrics: ReplicaMetrics,
        channels: LoopChannels,
        progress: Progress,
    ) -> Self {
        PaxosLoop {
            settings,
            paxos,
            db,
            state,
            senders,
            metrics,
            channels,
            waiters: HashMap::new(),
            waiter_count: 0,
            leader: LeaderInfo::default(),
            progress,
            outgoing: Vec::new(),
        }
    }

    /// Runs until `shutdown`; then answers every waiter and returns.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut ticker =
            tokio::time::interval(Duration::from_millis(self.settings.tick_interval_ms.max(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // Entries decided before a restart are applied before anything else happens.
        self.apply_decided();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {
                    self.paxos.tick();
                    self.expire_waiters();
                }
                Some(incoming) = self.channels.incoming.recv() => {
                    self.handle_incoming(incoming);
                    for _ in 0..DRAIN_MAX {
                        match self.channels.incoming.try_recv() {
                            Ok(more) => self.handle_incoming(more),
                            Err(_) => break,
                        }
                    }
                }
                Some(proposal) = self.channels.proposals.recv() => {
                    self.handle_proposal(proposal);
                    for _ in 0..DRAIN_MAX {
                        match self.channels.proposals.try_recv() {
                            Ok(more) => self.handle_proposal(more),
                            Err(_) => break,
                        }
                    }
                }
            }
            self.send_outgoing();
            self.update_leader();
            self.apply_decided();
        }
        for (_, waiters) in self.waiters.drain() {
            for waiter in waiters {
                let _ = waiter.reply.send(Err(ProposeError::ShuttingDown));
            }
        }
    }

    fn handle_incoming(&mut self, incoming: Incoming) {
        match incoming {
            Incoming::Messages(messages) => {
                for message in messages {
                    self.paxos.handle_incoming(message);
                }
            }
            Incoming::Reconnected(peer) => {
                tracing::info!(peer, "peer reachable again; re-syncing");
                self.paxos.reconnected(peer);
            }
        }
    }

    fn handle_proposal(&mut self, proposal: Proposal) {
        // Leadership is re-checked here: the RPC's check may be stale.
        self.update_leader();
        if !self.leader.is_self {
            self.metrics
                .proposals_refused
                .with_label_values(&["not_leader"])
                .inc();
            let _ = proposal.reply.send(Err(ProposeError::NotLeader {
                leader_address: self.leader.leader_address.clone(),
            }));
            return;
        }
        if self.waiter_count >= self.settings.waiters_max {
            self.metrics
                .proposals_refused
                .with_label_values(&["busy"])
                .inc();
            let _ = proposal.reply.send(Err(ProposeError::Busy));
            return;
        }
        let mut entry = proposal.entry;
        entry.time_ms = borg_common::now_ms();
        let request_id = entry.request_id.clone();
        match self.paxos.append(entry) {
            Ok(()) => {
                self.metrics.proposals.inc();
                self.waiter_count += 1;
                self.waiters.entry(request_id).or_default().push(Waiter {
                    reply: proposal.reply,
                    proposed_at: Instant::now(),
                });
            }
            Err(error) => {
                tracing::warn!(?error, "OmniPaxos refused an entry");
                self.metrics
                    .proposals_refused
                    .with_label_values(&["refused"])
                    .inc();
                let _ = proposal.reply.send(Err(ProposeError::NotLeader {
                    leader_address: None,
                }));
            }
        }
    }

    /// Waiters past their deadline (or whose caller went away) are dropped; the RPC side
    /// answers UNAVAILABLE on its own deadline.
    fn expire_waiters(&mut self) {
        let timeout = Duration::from_millis(self.settings.proposal_timeout_ms);
        let mut expired = 0usize;
        let mut remaining = 0usize;
        self.waiters.retain(|_, waiters| {
            waiters.retain(|w| {
                let keep = !w.reply.is_closed() && w.proposed_at.elapsed() < timeout;
                if !keep {
                    expired += 1;
                }
                keep
            });
            remaining += waiters.len();
            !waiters.is_empty()
        });
        if expired > 0 {
            self.metrics.proposal_timeouts.inc_by(expired as u64);
        }
        self.waiter_count = remaining;
    }

    fn send_outgoing(&mut self) {
        self.paxos.take_outgoing_messages(&mut self.outgoing);
        for message in self.outgoing.drain(..) {
            self.senders.send(message);
        }
    }

    fn update_leader(&mut self) {
        let current = self.paxos.get_current_leader();
        let leader_id = current.map(|(pid, _)| pid).filter(|pid| *pid != 0);
        let is_self = matches!(current, Some((pid, true)) if pid == self.settings.id);
        if leader_id == self.leader.leader_id && is_self == self.leader.is_self {
            return;
        }
        let was_self = self.leader.is_self;
        if leader_id != self.leader.leader_id {
            self.metrics.leader_changes.inc();
            tracing::info!(
                replica = self.settings.id,
                leader = ?leader_id,
                "leader changed"
            );
        }
        self.leader = LeaderInfo {
            leader_id,
            leader_address: leader_id.and_then(|id| self.settings.peers.get(&id).cloned()),
            is_self,
        };
        self.metrics.is_leader.set(i64::from(is_self));
        if was_self && !is_self {
            // Entries may still be decided by the next leader; the callers retry there with
            // the same request ids, which the state machine answers from its dedup window.
            let leader_address = self.leader.leader_address.clone();
            for (_, waiters) in self.waiters.drain() {
                for waiter in waiters {
                    let _ = waiter.reply.send(Err(ProposeError::NotLeader {
                        leader_address: leader_address.clone(),
                    }));
                }
            }
            self.waiter_count = 0;
        }
        self.channels.leader.send_replace(self.leader.clone());
    }

    /// Applies decided entries not applied yet, at most `APPLY_BATCH_MAX` per call.
    fn apply_decided(&mut self) {
        let decided = self.paxos.get_decided_idx() as u64;
        self.metrics.decided_index.set(decided as i64);
        self.progress.decided_index = decided;
        let applied = self.progress.applied_index;
        if decided <= applied {
            self.publish_progress();
            return;
        }
        let to = decided.min(applied + APPLY_BATCH_MAX as u64);
        let Some(entries) = self.paxos.read_entries(applied as usize..to as usize) else {
            tracing::error!(
                from = applied,
                to,
                "decided entries are missing from the log"
            );
            return;
        };
        let watched = self.channels.updates.receiver_count() > 0;
        let mut replies = Vec::new();
        {
            let Ok(mut state) = self.state.write() else {
                tracing::error!("cell state lock poisoned; not applying");
                return;
            };
            for (offset, entry) in entries.into_iter().enumerate() {
                let index = applied + 1 + offset as u64;
                let entry = match entry {
                    PaxosLogEntry::Decided(entry) => entry,
                    other => {
                        // Trimmed/snapshotted prefixes are never created (no OmniPaxos
                        // compaction yet); a stop sign is not used.
                        tracing::error!(index, ?other, "unexpected log entry kind; stopping apply");
                        break;
                    }
                };
                let started = Instant::now();
                let result = state.apply(index, &entry);
                self.metrics
                    .apply_latency_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.metrics.commits.inc();
                self.progress.applied_index = index;
                if watched && !result.changes.is_empty() {
                    let update = v1::CellUpdate {
                        index,
                        update: Some(v1::cell_update::Update::Change(
                            state.change_view(&result.changes),
                        )),
                    };
                    // Sent under the write lock, so a watcher that subscribes under the read
                    // lock after its snapshot neither misses nor repeats a change.
                    let _ = self.channels.updates.send(Arc::new(update));
                }
                if !entry.request_id.is_empty() {
                    if let Some(waiters) = self.waiters.remove(&entry.request_id) {
                        replies.push((waiters, index, result.outcome));
                    }
                }
            }
        }
        for (waiters, index, outcome) in replies {
            self.waiter_count = self.waiter_count.saturating_sub(waiters.len());
            for waiter in waiters {
                self.metrics
                    .commit_latency_seconds
                    .observe(waiter.proposed_at.elapsed().as_secs_f64());
                let _ = waiter.reply.send(Ok(Committed {
                    index,
                    outcome: outcome.clone(),
                }));
            }
        }
        self.metrics
            .applied_index
            .set(self.progress.applied_index as i64);
        self.maybe_checkpoint();
        self.publish_progress();
    }

    fn maybe_checkpoint(&mut self) {
        let every = self.settings.checkpoint_every_entries;
        if every == 0 || self.progress.applied_index < self.progress.checkpoint_index + every {
            return;
        }
        let bytes = match self.state.read() {
            Ok(state) => state.to_snapshot_bytes(),
            Err(_) => return,
        };
        let checkpoint = Checkpoint {
            index: self.progress.applied_index,
            time_ms: borg_common::now_ms(),
            state: bytes,
        };
        match self.db.save_checkpoint(&checkpoint) {
            Ok(()) => {
                self.progress.checkpoint_index = checkpoint.index;
                self.progress.checkpoint_time_ms = checkpoint.time_ms;
                self.metrics.checkpoint_index.set(checkpoint.index as i64);
                tracing::debug!(index = checkpoint.index, "checkpoint written");
            }
            Err(error) => tracing::warn!(%error, "checkpoint failed; will retry"),
        }
    }

    fn publish_progress(&self) {
        self.channels.progress.send_if_modified(|p| {
            if *p == self.progress {
                false
            } else {
                *p = self.progress;
                true
            }
        });
    }
}
