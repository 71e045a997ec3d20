//! The Paxos loop: one task owns the `OmniPaxos` instance and the only writable `CellState`.
//!
//! It ticks OmniPaxos' logical clock, feeds it messages from peers, appends proposals while
//! this replica leads, sends outgoing messages to the peers' queues, and applies decided
//! entries in log order: answering the proposer's waiter with the `Outcome`, publishing the
//! change to watchers, and checkpointing the state every `checkpoint_every_entries` or
//! `checkpoint_every_s`.
//!
//! Compaction: a checkpoint is serialized on a blocking thread under the cell state's read
//! lock (so it matches the log index it records; applying waits for it without ever blocking
//! the loop) and written there (SHA-256; chunks outside the log's write path, `storage`).
//! Nothing a checkpoint does may stall the loop for a heartbeat round: a stalled loop sends
//! no heartbeats and costs the leader its place (`loop_watch` reports slow passes). Once it
//! is durable, the log below it is trimmed:
//! - the leader calls OmniPaxos' `trim` at its checkpoint index, or at the index every
//!   replica has accepted if that is lower, so no live replica is left behind the trim point;
//! - a follower applies the leader's `Trim(i)` only up to its own checkpoint, so every
//!   replica can always restart from its checkpoint plus its own log suffix. Trims it cannot
//!   apply yet are remembered and applied after its next checkpoint.
//!
//! One pass of the loop: take the queued peer messages, then the queued proposals; apply what
//! is decided and answer its writers; start an fsync of everything written if none is in
//! flight; send what may leave. Disk and loop overlap (group commit, persist-then-send):
//! - The fsync runs on the replica's fsync thread (`log_syncer`), one at a time, covering
//!   every write made before it began (`sync_ledger`); a pass never waits for it, so ticks
//!   and heartbeats (BLE) flow while the disk stalls, and a leader with a slow disk is not
//!   voted out.
//! - What claims stored state waits for the sync that covers it (`persist_gate`): a
//!   follower's `Accepted`, a promise, ...; the leader's new entries and decisions go at once
//!   (the followers write while the leader does).
//! - A follower's `Accepted` counts at the leader only once the leader's own copy of those
//!   entries is durable, so (a) a writer is answered only when its entry is on a majority's
//!   disks, the leader's counted only after its own sync covers it; (b) no message that
//!   claims stored state leaves before the sync that covers it; (c) BLE messages and ticks
//!   never wait for a sync. A failed fsync stops the replica.
//!
//! A step that only raises the decided index costs no fsync (`storage`).
//!
//! Batching: the proposals taken while this replica's fsync is in flight are gathered, and
//! become one log entry of up to `ENTRY_COMMANDS_MAX` commands (`ENTRY_BYTES_MAX` bytes) in
//! the pass that sees the sync end (at once when full); with no sync in flight, a pass's
//! proposals are appended in that pass, so a lone write waits for nothing. Holding them
//! delays no write: an entry appended during a sync is covered only by the next one. Apply
//! runs an entry's commands in order and answers each writer.
//!
//! Indices: OmniPaxos' position `p` (0-based) is log index `p + 1`, so a state's
//! `applied_log_index()` is also the next position to apply. Each command has its own
//! command index (`CellState::applied_index`), which writers, readers and watchers see;
//! decided, checkpoint and compacted indices count log entries.

use crate::catchup::fetch_best_checkpoint;
use crate::entry::{PaxosMessage, SharedEntry, ENTRY_BYTES_MAX, ENTRY_COMMANDS_MAX};
use crate::log_syncer::LogSyncer;
use crate::loop_watch::LoopWatch;
use crate::metrics::ReplicaMetrics;
use crate::persist_gate::PersistGate;
use crate::state::{CellState, LogEntry, Outcome};
use crate::storage::{Checkpoint, ReplicaDb, RocksStorage, StorageError};
use crate::transport::PeerSenders;
use borg_proto::v1;
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::messages::sequence_paxos::{Compaction, PaxosMessage as SeqMessage, PaxosMsg};
use omnipaxos::messages::Message;
use omnipaxos::util::LogEntry as PaxosLogEntry;
use omnipaxos::{ClusterConfig, CompactionErr, OmniPaxos, ServerConfig};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, TryLockError};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub type Paxos = OmniPaxos<SharedEntry, RocksStorage<SharedEntry>>;

/// Most decided commands applied in one pass of the loop (whole log entries: the entry
/// that reaches it is finished; the rest on the next pass), so ticks and messages are not
/// starved while a recovering replica catches up.
pub const APPLY_BATCH_MAX: usize = 1_024;
/// Most queued messages or proposals handled per wake-up before the loop ticks again.
const DRAIN_MAX: usize = 256;
/// Longest time the loop defers applying because readers hold the cell state (a watcher's
/// snapshot): it then waits for the lock. Deferring keeps ticks and heartbeats flowing, so a
/// long read never costs the leader its place. A checkpoint being serialized is waited for
/// without blocking however long it takes (it ends on its own, and a large state takes
/// seconds on a loaded machine); new readers queue behind a blocked writer, so short
/// readers cannot starve applying.
const APPLY_DEFER_MAX_MS: u64 = 1_000;

/// What a write's waiter learns (also the answer to a forwarded write, in bincode).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Committed {
    /// Command index the write was applied at (first applied, for a retried request id).
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
    /// The delivery stream to a peer broke (its process died, or the connection did): if
    /// it leads, heartbeat rounds run faster for a while (`LoopSettings`).
    PeerLost(u64),
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
    /// Log index (entries) decided.
    pub decided_index: u64,
    /// Command index applied (what readers see).
    pub applied_index: u64,
    /// Log index (entries) applied.
    pub applied_log_index: u64,
    /// Log index the latest checkpoint was taken at.
    pub checkpoint_index: u64,
    /// Wall-clock ms of the latest checkpoint (0: none).
    pub checkpoint_time_ms: u64,
    /// Log positions below this are trimmed.
    pub compacted_index: u64,
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
    pub checkpoint_every_s: u64,
    pub trim_lag_max_entries: u64,
    /// How to build OmniPaxos again after installing a fetched checkpoint.
    pub server_config: ServerConfig,
    pub cluster_config: ClusterConfig,
    /// Bounds of a catch-up's checkpoint fetch.
    pub fetch_timeout_ms: u64,
    pub message_max_bytes: usize,
    /// The cluster token for the checkpoint fetch.
    pub peer_token: borg_common::master_client::TokenInterceptor,
    /// How long a pass waits for the fsync it started before going on without it.
    pub sync_inline_wait_ms: u64,
    /// OmniPaxos ticks per tick of the clock while the leader's connection is lost (1: no
    /// speed-up), for at most `leader_lost_fast_ms`.
    pub leader_lost_tick_speedup: u64,
    pub leader_lost_fast_ms: u64,
}

/// Least time between two attempts to catch up from a peer's checkpoint.
const CATCH_UP_RETRY_INTERVAL_MS: u64 = 1_000;

/// A replica's checkpoint interval: `every` stretched by 0–40% by the replica's id. Replicas
/// apply the same entries, so with one interval all five checkpoint and trim at the same
/// moment; on a shared machine (the benchmark's five replicas on two cores) that burst
/// stalled every loop at once and cost the leader its place (leader changes at exactly the
/// 60 s checkpoints).
fn staggered(every: u64, id: u64) -> u64 {
    every.saturating_add(every.saturating_mul(id % 5) / 10)
}

/// A checkpoint being written on a blocking thread: what was written once durable.
type CheckpointTask = JoinHandle<Result<CheckpointWritten, StorageError>>;

/// A durable checkpoint and what each step of taking it cost (logged at info).
struct CheckpointWritten {
    index: u64,
    time_ms: u64,
    bytes: usize,
    /// Waiting for the read lock on the cell state; serializing the state under it.
    lock_wait: Duration,
    serialize: Duration,
    checksum: Duration,
    write: Duration,
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
    /// Waiters, those of `batch` included.
    waiter_count: usize,
    /// Commands accepted in this pass, not appended yet (one log entry), and their waiters.
    batch: Vec<LogEntry>,
    batch_waiters: Vec<(String, Waiter)>,
    batch_bytes: u64,
    leader: LeaderInfo,
    progress: Progress,
    outgoing: Vec<PaxosMessage>,
    checkpoint_task: Option<CheckpointTask>,
    last_checkpoint_at: Instant,
    /// Since when applying has waited for readers to release the cell state.
    apply_deferred_since: Option<Instant>,
    /// Set while a checkpoint holds the cell state's read lock (applying then never blocks).
    checkpoint_reading: Arc<AtomicBool>,
    /// Highest trim index a leader asked for (applied up to our own checkpoint).
    trim_requested: usize,
    /// A peer's checkpoint being fetched because this replica is behind the trim point.
    catch_up_task: Option<JoinHandle<Option<Checkpoint>>>,
    last_catch_up_at: Option<Instant>,
    /// The fsync thread; whether a sync is in flight there, and since when.
    syncer: LogSyncer,
    sync_in_flight: bool,
    sync_started_at: Instant,
    /// Messages waiting for a sync (see `persist_gate`).
    gate: PersistGate,
    /// Until when heartbeat rounds run faster: the connection to the leader broke.
    fast_election_until: Option<Instant>,
    /// Times each pass and reports the slow ones.
    watch: LoopWatch,
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
    ) -> Result<Self, StorageError> {
        let syncer = LogSyncer::spawn(db.clone()).map_err(|e| StorageError::Task {
            reason: format!("cannot start the fsync thread: {e}"),
        })?;
        let tick_interval = Duration::from_millis(settings.tick_interval_ms.max(1));
        let watch = LoopWatch::new(
            tick_interval,
            tick_interval * settings.server_config.election_tick_timeout.max(1) as u32,
            metrics.slow_loop_passes.clone(),
        );
        Ok(PaxosLoop {
            watch,
            settings,
            paxos,
            db,
            state,
            senders,
            metrics,
            channels,
            waiters: HashMap::new(),
            waiter_count: 0,
            batch: Vec::new(),
            batch_waiters: Vec::new(),
            batch_bytes: 0,
            leader: LeaderInfo::default(),
            progress,
            outgoing: Vec::new(),
            checkpoint_task: None,
            last_checkpoint_at: Instant::now(),
            apply_deferred_since: None,
            checkpoint_reading: Arc::default(),
            trim_requested: 0,
            catch_up_task: None,
            last_catch_up_at: None,
            syncer,
            sync_in_flight: false,
            sync_started_at: Instant::now(),
            gate: PersistGate::default(),
            fast_election_until: None,
        })
    }

    /// Runs until `shutdown`; then answers every waiter and returns. Fails (and stops) when
    /// the log cannot be made durable: nothing may be sent that depends on it.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), StorageError> {
        let mut ticker =
            tokio::time::interval(Duration::from_millis(self.settings.tick_interval_ms.max(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // Entries decided before a restart are applied before anything else happens.
        self.apply_decided();
        let mut failure = None;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {
                    self.watch.begin_pass();
                    self.watch.ticked();
                    for _ in 0..self.ticks_per_tick() {
                        self.paxos.tick();
                    }
                    self.watch.step("tick");
                    self.expire_waiters();
                    self.watch.step("expire_waiters");
                    self.maybe_checkpoint();
                    self.watch.step("checkpoint_start");
                }
                written = join_optional(&mut self.checkpoint_task) => {
                    self.watch.begin_pass();
                    self.checkpoint_written(written.unwrap_or_else(|join| Err(StorageError::Task {
                        reason: join.to_string(),
                    })));
                    self.watch.step("checkpoint_done_trim");
                }
                fetched = join_optional(&mut self.catch_up_task) => {
                    self.watch.begin_pass();
                    if let Ok(Some(checkpoint)) = fetched {
                        self.install_fetched(checkpoint);
                    }
                    self.watch.step("catch_up_install");
                }
                synced = self.syncer.finished(), if self.sync_in_flight => {
                    self.watch.begin_pass();
                    if let Err(error) = self.synced(synced) {
                        tracing::error!(%error, "cannot make the log durable; stopping the replica");
                        failure = Some(error);
                        break;
                    }
                    self.watch.step("synced");
                }
                Some(incoming) = self.channels.incoming.recv() => {
                    self.watch.begin_pass();
                    self.handle_incoming(incoming);
                    self.drain_inputs(None);
                    self.watch.step("incoming");
                }
                Some(proposal) = self.channels.proposals.recv() => {
                    self.watch.begin_pass();
                    self.drain_inputs(Some(proposal));
                    self.watch.step("proposals");
                }
            }
            self.release_held_incoming();
            self.watch.step("release_held");
            // A decided entry is on a majority's disks already (the leader's copy counted
            // only once synced), whatever this replica's own sync, so it is applied and
            // answered at once.
            self.apply_decided();
            self.watch.step("apply");
            // The writes gathered while a sync was in flight become one entry once it ends:
            // appended earlier, they would still wait for the next sync (a sync covers only
            // what was written before it began), so holding them costs a writer nothing and
            // shares the entry's cost (storage write, messages, decode) among more writes.
            if !self.sync_in_flight {
                self.append_batch();
            }
            self.watch.step("append");
            if let Err(error) = self.start_sync() {
                tracing::error!(%error, "cannot make the log durable; stopping the replica");
                failure = Some(error);
                break;
            }
            self.watch.step("sync_start");
            self.send_outgoing();
            self.watch.step("send");
            self.update_leader();
            self.watch.step("leader");
            self.watch.end_pass();
        }
        let batch = self.batch_waiters.drain(..).map(|(_, w)| w);
        for waiter in self.waiters.drain().flat_map(|(_, w)| w).chain(batch) {
            let _ = waiter.reply.send(Err(ProposeError::ShuttingDown));
        }
        // A checkpoint in flight is finished, so the database is not closed under it (so is a
        // sync: dropping the loop's `LogSyncer` joins the fsync thread).
        if let Some(task) = self.checkpoint_task.take() {
            let _ = task.await;
        }
        if let Some(task) = self.catch_up_task.take() {
            task.abort();
        }
        failure.map_or(Ok(()), Err)
    }

    /// Starts an fsync of every log write so far on the fsync thread, unless one is in
    /// flight (the writes made meanwhile wait for the next: group commit) or nothing is
    /// unsynced, and waits for it at most `sync_inline_wait_ms` (default 0: not at all). A
    /// stalled disk holds up only the messages that wait for the sync, while the loop goes on
    /// ticking and answering heartbeats.
    fn start_sync(&mut self) -> Result<(), StorageError> {
        if self.sync_in_flight {
            return Ok(());
        }
        let Some(target) = self.db.begin_sync() else {
            return Ok(());
        };
        self.sync_started_at = Instant::now();
        self.sync_in_flight = true;
        self.syncer.start(target);
        if self.settings.sync_inline_wait_ms == 0 {
            return Ok(());
        }
        let wait = Duration::from_millis(self.settings.sync_inline_wait_ms);
        match self.syncer.finished_within(wait) {
            Some(synced) => self.synced(synced),
            None => Ok(()),
        }
    }

    /// A sync finished: what it covers is released in this pass (`release_held_incoming`,
    /// `send_outgoing`).
    fn synced(&mut self, synced: Result<u64, StorageError>) -> Result<(), StorageError> {
        self.sync_in_flight = false;
        synced?;
        self.metrics
            .log_sync_seconds
            .observe(self.sync_started_at.elapsed().as_secs_f64());
        Ok(())
    }

    /// Hands OmniPaxos the held peer messages that may be handled now: at a leader, the
    /// `Accepted` messages whose entries its own finished syncs cover.
    fn release_held_incoming(&mut self) {
        let mut released = Vec::new();
        self.gate
            .release_incoming(self.db.log_positions(), &mut released);
        for message in released {
            self.paxos.handle_incoming(message);
        }
    }

    fn handle_incoming(&mut self, incoming: Incoming) {
        match incoming {
            Incoming::Messages(messages) => {
                for message in messages {
                    if let Some(index) = trim_request(&message) {
                        self.trim_requested = self.trim_requested.max(index);
                        self.trim_to_own_checkpoint();
                        continue;
                    }
                    if let Some(message) = self.gate.incoming(message, self.db.log_positions()) {
                        self.paxos.handle_incoming(message);
                    }
                }
            }
            Incoming::Reconnected(peer) => {
                tracing::info!(peer, "peer reachable again; re-syncing");
                self.paxos.reconnected(peer);
            }
            Incoming::PeerLost(peer) => {
                if self.leader.leader_id == Some(peer) && self.settings.leader_lost_tick_speedup > 1
                {
                    tracing::info!(
                        leader = peer,
                        "connection to the leader lost; faster heartbeat rounds"
                    );
                    self.fast_election_until = Some(
                        Instant::now() + Duration::from_millis(self.settings.leader_lost_fast_ms),
                    );
                }
            }
        }
    }

    /// OmniPaxos ticks to run on this tick of the clock. After the connection to the leader
    /// broke (a killed process closes its sockets at once), heartbeat rounds run
    /// `leader_lost_tick_speedup` times faster until a leader is elected or
    /// `leader_lost_fast_ms` passed: the followers find the leader gone in a fraction of the
    /// election timeout. Safety does not depend on it (ballots do); a leader that is alive
    /// still answers within a short round on loopback, and a takeover needs every other
    /// replica that answers to be unhappy too, so a live leader keeps its place.
    fn ticks_per_tick(&mut self) -> u64 {
        match self.fast_election_until {
            Some(until) if Instant::now() < until => self.settings.leader_lost_tick_speedup,
            Some(_) => {
                self.fast_election_until = None;
                1
            }
            None => 1,
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
        // Encoding cannot fail (plain serde types); an unknown size counts as the bound.
        let bytes = bincode::serialized_size(&entry).unwrap_or(ENTRY_BYTES_MAX);
        if !self.batch.is_empty() && self.batch_bytes + bytes > ENTRY_BYTES_MAX {
            self.append_batch();
        }
        self.waiter_count += 1;
        self.batch_waiters.push((
            entry.request_id.clone(),
            Waiter {
                reply: proposal.reply,
                proposed_at: Instant::now(),
            },
        ));
        self.batch.push(entry);
        self.batch_bytes += bytes;
        if self.batch.len() >= ENTRY_COMMANDS_MAX {
            self.append_batch();
        }
    }

    /// Appends the commands gathered so far as one log entry.
    fn append_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let commands = std::mem::take(&mut self.batch);
        let waiters = std::mem::take(&mut self.batch_waiters);
        self.batch_bytes = 0;
        let count = commands.len();
        match self.paxos.append(SharedEntry::new(commands)) {
            Ok(()) => {
                self.metrics.proposals.inc_by(count as u64);
                for (request_id, waiter) in waiters {
                    self.waiters.entry(request_id).or_default().push(waiter);
                }
            }
            Err(error) => {
                tracing::warn!(?error, "OmniPaxos refused an entry");
                self.metrics
                    .proposals_refused
                    .with_label_values(&["refused"])
                    .inc_by(count as u64);
                self.waiter_count = self.waiter_count.saturating_sub(count);
                for (_, waiter) in waiters {
                    let _ = waiter.reply.send(Err(ProposeError::NotLeader {
                        leader_address: None,
                    }));
                }
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

    /// One pass's input: the queued peer messages first, then the queued proposals (`first`
    /// is one already received), each at most `DRAIN_MAX`. Handling both in one pass gives one
    /// fsync and one `Deliver` per peer for what would otherwise take two passes.
    fn drain_inputs(&mut self, first: Option<Proposal>) {
        for _ in 0..DRAIN_MAX {
            match self.channels.incoming.try_recv() {
                Ok(more) => self.handle_incoming(more),
                Err(_) => break,
            }
        }
        if let Some(proposal) = first {
            self.handle_proposal(proposal);
        }
        for _ in 0..DRAIN_MAX {
            match self.channels.proposals.try_recv() {
                Ok(more) => self.handle_proposal(more),
                Err(_) => break,
            }
        }
    }

    /// Sends what may leave now: messages held for a sync that has finished, then this
    /// pass's new messages, each unless it waits for a sync (`persist_gate`).
    fn send_outgoing(&mut self) {
        self.paxos.take_outgoing_messages(&mut self.outgoing);
        let written = self.db.written_seq();
        let synced = self.db.synced_seq();
        let mut ready = Vec::new();
        self.gate.release_outgoing(synced, &mut ready);
        for message in ready {
            self.senders.send(message);
        }
        for message in std::mem::take(&mut self.outgoing) {
            if let Some(message) = self.gate.outgoing(message, written, synced) {
                self.senders.send(message);
            }
        }
        let (outgoing_dropped, incoming_dropped) = self.gate.take_dropped();
        self.metrics.outgoing_dropped.inc_by(outgoing_dropped);
        self.metrics.incoming_dropped.inc_by(incoming_dropped);
        self.metrics.held_messages.set(self.gate.held() as i64);
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
            self.fast_election_until = None;
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
        if is_self && !was_self {
            tracing::info!(replica = self.settings.id, "leading: accepting writes");
        }
        if was_self && !is_self {
            // Entries may still be decided by the next leader; the callers retry there with
            // the same request ids, which the state machine answers from its dedup window.
            self.fail_waiters(self.leader.leader_address.clone());
        }
        self.channels.leader.send_replace(self.leader.clone());
    }

    /// Answers every waiting write, and those gathered for the next entry (dropped), that
    /// this replica no longer leads.
    fn fail_waiters(&mut self, leader_address: Option<String>) {
        self.batch.clear();
        self.batch_bytes = 0;
        let batch = self.batch_waiters.drain(..).map(|(_, w)| w);
        for waiter in self.waiters.drain().flat_map(|(_, w)| w).chain(batch) {
            let _ = waiter.reply.send(Err(ProposeError::NotLeader {
                leader_address: leader_address.clone(),
            }));
        }
        self.waiter_count = 0;
    }

    /// Applies decided entries not applied yet, about `APPLY_BATCH_MAX` commands per call.
    fn apply_decided(&mut self) {
        let decided = self.paxos.get_decided_idx() as u64;
        self.metrics.decided_index.set(decided as i64);
        self.progress.decided_index = decided;
        let applied = self.progress.applied_log_index;
        if decided <= applied {
            self.publish_progress();
            return;
        }
        let to = decided.min(applied + APPLY_BATCH_MAX as u64);
        let state_lock = self.state.clone();
        let mut state = match state_lock.try_write() {
            Ok(guard) => guard,
            Err(TryLockError::WouldBlock) => {
                let since = *self.apply_deferred_since.get_or_insert_with(Instant::now);
                if since.elapsed() < Duration::from_millis(APPLY_DEFER_MAX_MS)
                    || self.checkpoint_reading.load(Ordering::Acquire)
                {
                    // Applied at a later pass; the loop goes on ticking meanwhile.
                    self.publish_progress();
                    return;
                }
                let blocked = Instant::now();
                match state_lock.write() {
                    Ok(guard) => {
                        tracing::warn!(
                            blocked_ms = blocked.elapsed().as_millis() as u64,
                            "applying waited {APPLY_DEFER_MAX_MS} ms for readers, then blocked the loop on the cell state's lock"
                        );
                        guard
                    }
                    Err(_) => {
                        tracing::error!("cell state lock poisoned; not applying");
                        return;
                    }
                }
            }
            Err(TryLockError::Poisoned(_)) => {
                tracing::error!("cell state lock poisoned; not applying");
                return;
            }
        };
        self.apply_deferred_since = None;
        let Some(entries) = self.paxos.read_entries(applied as usize..to as usize) else {
            drop(state);
            // Decided but not in this log: the leader trimmed past this replica.
            self.start_catch_up();
            self.publish_progress();
            return;
        };
        let watched = self.channels.updates.receiver_count() > 0;
        let mut replies = Vec::new();
        let mut behind_trim_point = false;
        {
            let mut commands_applied = 0usize;
            for (offset, entry) in entries.into_iter().enumerate() {
                if commands_applied >= APPLY_BATCH_MAX {
                    break;
                }
                let log_index = applied + 1 + offset as u64;
                let entry = match entry {
                    PaxosLogEntry::Decided(entry) => entry,
                    other => {
                        // Only a replica behind the trim point reads a trimmed entry (every
                        // replica trims below its own checkpoint only); stop signs are unused.
                        tracing::debug!(
                            log_index,
                            ?other,
                            "log entry trimmed: behind the trim point"
                        );
                        behind_trim_point = true;
                        break;
                    }
                };
                let first_index = state.applied_index() + 1;
                let started = Instant::now();
                let results = state.apply_entry(log_index, &entry);
                self.metrics
                    .apply_latency_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.metrics.commits.inc_by(results.len() as u64);
                commands_applied += results.len();
                self.progress.applied_log_index = log_index;
                self.progress.applied_index = state.applied_index();
                for ((index, command), result) in (first_index..).zip(entry.iter()).zip(results) {
                    if watched && !result.changes.is_empty() {
                        let update = v1::CellUpdate {
                            index,
                            update: Some(v1::cell_update::Update::Change(
                                state.change_view(&result.changes),
                            )),
                        };
                        // Sent under the write lock, so a watcher that subscribes under the
                        // read lock after its snapshot neither misses nor repeats a change.
                        let _ = self.channels.updates.send(Arc::new(update));
                    }
                    if !command.request_id.is_empty() {
                        if let Some(waiters) = self.waiters.remove(&command.request_id) {
                            replies.push((waiters, result.committed_index, result.outcome));
                        }
                    }
                }
            }
        }
        drop(state);
        if behind_trim_point {
            self.start_catch_up();
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

    /// Starts writing a checkpoint when `checkpoint_every_entries` entries or
    /// `checkpoint_every_s` seconds (with something new applied) have passed, unless one is
    /// being written.
    fn maybe_checkpoint(&mut self) {
        if self.checkpoint_task.is_some() {
            return;
        }
        let applied = self.progress.applied_log_index;
        let since = applied.saturating_sub(self.progress.checkpoint_index);
        let by_count = staggered(self.settings.checkpoint_every_entries, self.settings.id);
        let by_time_s = staggered(self.settings.checkpoint_every_s, self.settings.id);
        let due = (by_count > 0 && since >= by_count)
            || (by_time_s > 0
                && since > 0
                && self.last_checkpoint_at.elapsed() >= Duration::from_secs(by_time_s));
        if !due {
            return;
        }
        let state = self.state.clone();
        let db = self.db.clone();
        self.last_checkpoint_at = Instant::now();
        // Serializing, hashing and the synced write of a large state stay off the loop (a
        // 100,000-task state takes long enough to miss heartbeats) and off the runtime's
        // workers. The read lock makes the loop defer applying meanwhile, so the snapshot is
        // the state at the log index it records.
        let reading = ReadingFlag::raise(self.checkpoint_reading.clone());
        self.checkpoint_task = Some(tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let (applied, bytes, locked) = {
                let state = state.read().map_err(|_| StorageError::Task {
                    reason: "cell state lock poisoned".into(),
                })?;
                let locked = started.elapsed();
                (state.applied_log_index(), state.to_snapshot_bytes(), locked)
            };
            drop(reading);
            let serialized = started.elapsed();
            let time_ms = borg_common::now_ms();
            let size = bytes.len();
            let checkpoint = Checkpoint::new(applied, time_ms, bytes);
            let hashed = started.elapsed();
            db.save_checkpoint(&checkpoint)?;
            Ok(CheckpointWritten {
                index: applied,
                time_ms,
                bytes: size,
                lock_wait: locked,
                serialize: serialized - locked,
                checksum: hashed - serialized,
                write: started.elapsed() - hashed,
            })
        }));
    }

    fn checkpoint_written(&mut self, written: Result<CheckpointWritten, StorageError>) {
        match written {
            Ok(written) => {
                let index = written.index;
                self.progress.checkpoint_index = index;
                self.progress.checkpoint_time_ms = written.time_ms;
                self.metrics.checkpoint_index.set(index as i64);
                self.metrics.checkpoints.inc();
                let trim_started = Instant::now();
                self.trim_below_checkpoint();
                tracing::info!(
                    index,
                    bytes = written.bytes,
                    lock_wait_ms = written.lock_wait.as_millis() as u64,
                    serialize_ms = written.serialize.as_millis() as u64,
                    checksum_ms = written.checksum.as_millis() as u64,
                    write_ms = written.write.as_millis() as u64,
                    trim_ms = trim_started.elapsed().as_millis() as u64,
                    compacted = self.progress.compacted_index,
                    "checkpoint written"
                );
                self.publish_progress();
            }
            Err(error) => {
                self.metrics.checkpoint_failures.inc();
                tracing::warn!(%error, "checkpoint failed; will retry");
            }
        }
    }

    /// After a checkpoint: the leader trims the replicated log below it (or below what every
    /// replica accepted); any replica applies trims asked for earlier, up to it.
    fn trim_below_checkpoint(&mut self) {
        let checkpoint = self.progress.checkpoint_index as usize;
        if self.leader.is_self && checkpoint > self.paxos.get_compacted_idx() {
            let result = match self.paxos.trim(Some(checkpoint)) {
                Err(CompactionErr::NotAllDecided(all_accepted))
                    if (checkpoint - all_accepted) as u64 > self.settings.trim_lag_max_entries =>
                {
                    self.force_trim(checkpoint);
                    Ok(())
                }
                Err(CompactionErr::NotAllDecided(all_accepted))
                    if all_accepted > self.paxos.get_compacted_idx() =>
                {
                    self.paxos.trim(Some(all_accepted))
                }
                other => other,
            };
            if let Err(error) = result {
                tracing::debug!(?error, checkpoint, "log not trimmed yet");
            }
        }
        self.trim_to_own_checkpoint();
        self.metrics
            .compacted_index
            .set(self.paxos.get_compacted_idx() as i64);
        self.progress.compacted_index = self.paxos.get_compacted_idx() as u64;
    }

    /// Trims below `index` here and asks every follower to, although some replica has not
    /// accepted up to it: that replica will find itself behind the trim point and catch up
    /// from a checkpoint (`start_catch_up`).
    fn force_trim(&mut self, index: usize) {
        let id = self.settings.id;
        tracing::info!(
            index,
            "trimming past replicas that lag more than trim_lag_max_entries"
        );
        self.paxos
            .handle_incoming(Message::SequencePaxos(SeqMessage {
                from: id,
                to: id,
                msg: PaxosMsg::Compaction(Compaction::Trim(index)),
            }));
        for &peer in self.settings.peers.keys().filter(|p| **p != id) {
            self.senders.send(Message::SequencePaxos(SeqMessage {
                from: id,
                to: peer,
                msg: PaxosMsg::Compaction(Compaction::Trim(index)),
            }));
        }
    }

    /// Starts fetching the best checkpoint among the peers, at most once per
    /// `CATCH_UP_RETRY_INTERVAL_MS`.
    fn start_catch_up(&mut self) {
        let recent = self
            .last_catch_up_at
            .is_some_and(|at| at.elapsed() < Duration::from_millis(CATCH_UP_RETRY_INTERVAL_MS));
        if self.catch_up_task.is_some() || recent {
            return;
        }
        self.last_catch_up_at = Some(Instant::now());
        tracing::warn!(
            applied = self.progress.applied_log_index,
            decided = self.paxos.get_decided_idx(),
            compacted = self.paxos.get_compacted_idx(),
            "decided entries are not in this replica's log (it is behind the trim point); fetching a peer's checkpoint"
        );
        let id = self.settings.id;
        let peers = self.settings.peers.clone();
        let timeout_ms = self.settings.fetch_timeout_ms;
        let message_max_bytes = self.settings.message_max_bytes;
        let token = self.settings.peer_token.clone();
        self.catch_up_task = Some(tokio::spawn(async move {
            fetch_best_checkpoint(id, &peers, timeout_ms, message_max_bytes, &token).await
        }));
    }

    /// Replaces the log and the state with a peer's checkpoint that is ahead of this
    /// replica, and restarts OmniPaxos on it (as a process restart would).
    fn install_fetched(&mut self, checkpoint: Checkpoint) {
        let index = checkpoint.index;
        if index <= self.progress.applied_log_index || self.checkpoint_task.is_some() {
            tracing::debug!(
                index,
                applied = self.progress.applied_log_index,
                "fetched checkpoint not installed"
            );
            return;
        }
        let state = match CellState::from_snapshot_bytes(&checkpoint.state) {
            Ok(state) => state,
            Err(error) => {
                tracing::warn!(%error, index, "a peer's checkpoint cannot be read; not installed");
                return;
            }
        };
        let floor = accepted_round_floor(
            self.settings.cluster_config.configuration_id,
            self.settings.id,
        );
        if let Err(error) = self.db.install_checkpoint(&checkpoint, floor) {
            tracing::error!(%error, index, "cannot install a peer's checkpoint");
            return;
        }
        let rebuilt = RocksStorage::open(self.db.clone())
            .map_err(|e| e.to_string())
            .and_then(|storage| {
                self.settings
                    .cluster_config
                    .clone()
                    .build_for_server(self.settings.server_config.clone(), storage)
                    .map_err(|e| e.to_string())
            });
        let paxos = match rebuilt {
            Ok(paxos) => paxos,
            Err(reason) => {
                tracing::error!(%reason, "cannot restart OmniPaxos on the installed checkpoint");
                return;
            }
        };
        self.paxos = paxos;
        ask_leader_to_sync(&mut self.paxos, self.settings.id, &self.settings.peers);
        let command_index = state.applied_index();
        match self.state.write() {
            Ok(mut guard) => {
                *guard = state;
                // Watchers start over from the new state.
                let update = v1::CellUpdate {
                    index: command_index,
                    update: Some(v1::cell_update::Update::Snapshot(guard.snapshot_view())),
                };
                let _ = self.channels.updates.send(Arc::new(update));
            }
            Err(_) => {
                tracing::error!("cell state lock poisoned; not installing");
                return;
            }
        }
        self.progress = Progress {
            decided_index: index,
            applied_index: command_index,
            applied_log_index: index,
            checkpoint_index: index,
            checkpoint_time_ms: checkpoint.time_ms,
            compacted_index: index,
        };
        self.trim_requested = 0;
        self.fail_waiters(None);
        self.metrics.checkpoint_index.set(index as i64);
        self.metrics.compacted_index.set(index as i64);
        self.metrics.applied_index.set(command_index as i64);
        tracing::info!(index, "caught up from a peer's checkpoint");
        self.publish_progress();
    }

    /// Applies the leader's trim request as far as this replica's checkpoint covers it.
    fn trim_to_own_checkpoint(&mut self) {
        let index = self
            .trim_requested
            .min(self.progress.checkpoint_index as usize);
        if index <= self.paxos.get_compacted_idx() {
            return;
        }
        let id = self.settings.id;
        self.paxos
            .handle_incoming(Message::SequencePaxos(SeqMessage {
                from: id,
                to: id,
                msg: PaxosMsg::Compaction(Compaction::Trim(index)),
            }));
        self.progress.compacted_index = self.paxos.get_compacted_idx() as u64;
        self.metrics
            .compacted_index
            .set(self.progress.compacted_index as i64);
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

/// Raised from before a checkpoint asks for the cell state's read lock until it released
/// it (lowered when dropped, on every path).
struct ReadingFlag(Arc<AtomicBool>);

impl ReadingFlag {
    fn raise(flag: Arc<AtomicBool>) -> Self {
        flag.store(true, Ordering::Release);
        ReadingFlag(flag)
    }
}

impl Drop for ReadingFlag {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The index of a leader's request to trim the log, if `message` is one.
fn trim_request(message: &PaxosMessage) -> Option<usize> {
    match message {
        Message::SequencePaxos(SeqMessage {
            msg: PaxosMsg::Compaction(Compaction::Trim(index)),
            ..
        }) => Some(*index),
        _ => None,
    }
}

/// The accepted round of a replica that installed a checkpoint: below every real ballot
/// (see `ReplicaDb::install_checkpoint`).
pub fn accepted_round_floor(configuration_id: u32, id: u64) -> Ballot {
    Ballot {
        config_id: configuration_id,
        n: 0,
        priority: 0,
        pid: id,
    }
}

/// After a checkpoint was installed, OmniPaxos holds no promise and would wait for a
/// leader's Prepare that never comes (a leader only prepares followers that ask): ask every
/// peer, so the leader answers and syncs this replica from the checkpoint's index.
pub fn ask_leader_to_sync(
    paxos: &mut Paxos,
    id: u64,
    peers: &std::collections::BTreeMap<u64, String>,
) {
    for &peer in peers.keys().filter(|p| **p != id) {
        paxos.reconnected(peer);
    }
}

/// The result of a task, once there is one; pending while there is none.
async fn join_optional<T>(task: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    let Some(handle) = task.as_mut() else {
        return std::future::pending().await;
    };
    let result = handle.await;
    *task = None;
    result
}
