//! The replica's RocksDB: OmniPaxos' log and metadata, and state-machine checkpoints.
//!
//! Column families:
//! - `log`: key = big-endian u64 log position (OmniPaxos' 0-based index), value = bincode entry.
//!   Positions are absolute: compaction deletes a prefix, it never renumbers.
//! - `meta`: the Paxos metadata (promise, accepted round, decided and compacted index,
//!   stop sign, snapshot), one key each.
//! - `checkpoint`: the latest checkpoint of the cell state, verified against its SHA-256
//!   whenever it is read (refused whole if it fails). The state's bytes are stored in chunks of
//!   `CHECKPOINT_CHUNK_BYTES` under a generation's keys (`c` + generation + chunk, big-endian),
//!   written without the WAL and flushed to SST files (durable) before one small record
//!   (`head`: index, time, checksum, generation, length, chunk count), written and flushed
//!   the same way, names the generation and, in the same batch, deletes every other
//!   generation. So a checkpoint never sits in the log's write path (one large synced WAL
//!   record made the Paxos loop's log writes queue behind its fsync for 25-80 ms), and a crash
//!   at any step leaves the previous checkpoint whole. An installed checkpoint's head goes in
//!   one synced batch with the log's reset instead. An older database's single record
//!   (`latest`) is still read when there is no `head`.
//!
//! Group commit: every call of the `Storage` trait (one OmniPaxos storage step, which may carry
//! many entries) is one `WriteBatch`, written to the WAL without waiting for the disk and
//! recorded in the `SyncLedger`. The Paxos loop keeps one fsync in flight, off its own task
//! (`ReplicaDb::begin_sync` / `sync_to`, on the fsync thread, `log_syncer`), covering every
//! write made before it began; a message or reply that depends on a write leaves the replica
//! only after the sync covering it finished (`persist_gate`). So a burst of writes costs one fsync, not
//! one per entry or per step, and a slow fsync delays only what depends on it.

use crate::sync_ledger::SyncLedger;
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::storage::{Entry, StopSign, Storage, StorageOp, StorageResult};
use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

const CF_LOG: &str = "log";
const CF_META: &str = "meta";
const CF_CHECKPOINT: &str = "checkpoint";

const KEY_PROMISE: &[u8] = b"promise";
const KEY_ACCEPTED_ROUND: &[u8] = b"accepted_round";
const KEY_DECIDED_IDX: &[u8] = b"decided_idx";
const KEY_COMPACTED_IDX: &[u8] = b"compacted_idx";
const KEY_STOPSIGN: &[u8] = b"stopsign";
const KEY_SNAPSHOT: &[u8] = b"snapshot";
/// The single-record checkpoint of databases written before chunked checkpoints.
const KEY_CHECKPOINT: &[u8] = b"latest";
const KEY_CHECKPOINT_HEAD: &[u8] = b"head";
/// Prefix of the checkpoint chunks' keys (past it: no chunk).
const CHUNK_PREFIX: u8 = b'c';

/// Bytes of a checkpoint's state per chunk: each chunk is one write that the log's writes may
/// wait behind, so it is small.
pub const CHECKPOINT_CHUNK_BYTES: usize = 1 << 20;
/// Chunks written between two flushes of the checkpoint column family, so its memtable (64
/// MiB by default) never fills and switches on its own: immutable memtables waiting for a
/// flush stall every writer of the database, the log's too.
const CHECKPOINT_FLUSH_CHUNKS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open the replica database at {path}: {source}")]
    Open {
        path: PathBuf,
        source: rocksdb::Error,
    },
    #[error("replica database I/O failed: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("column family {name} is missing from the replica database")]
    MissingColumnFamily { name: &'static str },
    #[error("cannot decode {what} from the replica database (corrupt or from another version): {source}")]
    Decode {
        what: &'static str,
        source: bincode::Error,
    },
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: bincode::Error,
    },
    #[error("log key of {len} bytes is not a big-endian u64")]
    BadLogKey { len: usize },
    #[error("a storage task failed: {reason}")]
    Task { reason: String },
    #[error("checkpoint at index {index} fails its checksum (SHA-256 {found}, recorded {expected}): it is corrupt and was not loaded; move the data directory aside so the replica catches up from its peers")]
    CheckpointChecksum {
        index: u64,
        expected: String,
        found: String,
    },
    #[error("checkpoint at index {index} (generation {generation}) is incomplete: {found} of {expected} chunks, {found_bytes} of {expected_bytes} bytes; it was not loaded; move the data directory aside so the replica catches up from its peers")]
    CheckpointIncomplete {
        index: u64,
        generation: u64,
        found: u64,
        expected: u64,
        found_bytes: u64,
        expected_bytes: u64,
    },
}

/// The replica's database, shared by the OmniPaxos storage and the checkpoint store.
#[derive(Clone)]
pub struct ReplicaDb {
    db: Arc<DB>,
    /// Kept for its statistics (WAL syncs), which show that commits are grouped.
    options: Arc<Options>,
    /// Log writes made and synced (shared by the storage, which writes, and the sync).
    ledger: Arc<Mutex<SyncLedger>>,
    /// Fault injection (0: off): added to every sync of the log, as a stalled disk would
    /// (`ReplicaConfig::fault_fsync_stall_ms`).
    fault_fsync_stall: Duration,
}

impl ReplicaDb {
    /// Opens (creating if missing) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.enable_statistics();
        // Log writes stay in RocksDB's WAL buffer until `sync_to` (or a synced write) flushes
        // and syncs them: one write(2) per pass instead of one per storage step. Nothing is
        // acknowledged before that sync, so durability is unchanged.
        options.set_manual_wal_flush(true);
        let cfs = [CF_LOG, CF_META, CF_CHECKPOINT]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db =
            DB::open_cf_descriptors(&options, dir, cfs).map_err(|source| StorageError::Open {
                path: dir.to_owned(),
                source,
            })?;
        Ok(ReplicaDb {
            db: Arc::new(db),
            options: Arc::new(options),
            ledger: Arc::default(),
            fault_fsync_stall: Duration::ZERO,
        })
    }

    /// Fault injection: every later sync of the log (`sync_to`) takes `ms` longer (0: off).
    pub fn with_fault_fsync_stall_ms(mut self, ms: u64) -> Self {
        self.fault_fsync_stall = Duration::from_millis(ms);
        self
    }

    fn ledger(&self) -> MutexGuard<'_, SyncLedger> {
        // The ledger's updates cannot panic half-way; a poisoned lock still holds a whole one.
        self.ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts a sync of every log write so far and returns its target (for `sync_to`), unless
    /// one is in flight or nothing is unsynced.
    pub fn begin_sync(&self) -> Option<u64> {
        self.ledger().begin_sync()
    }

    /// Makes the writes up to `target` (from `begin_sync`) durable: one fsync of the WAL. It
    /// blocks for as long as the disk takes: call it off the Paxos loop.
    pub fn sync_to(&self, target: u64) -> Result<u64, StorageError> {
        if !self.fault_fsync_stall.is_zero() {
            std::thread::sleep(self.fault_fsync_stall);
        }
        match self.db.flush_wal(true) {
            Ok(()) => {
                self.ledger().finish_sync(target);
                Ok(target)
            }
            Err(error) => {
                self.ledger().fail_sync(target);
                Err(error.into())
            }
        }
    }

    /// Makes every log write so far durable, here and now, unless a sync is in flight
    /// elsewhere (for callers that sync from one place only: tools and tests).
    pub fn sync_log(&self) -> Result<(), StorageError> {
        match self.begin_sync() {
            Some(target) => self.sync_to(target).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Writes counted so far, and those a finished sync made durable.
    pub fn written_seq(&self) -> u64 {
        self.ledger().written_seq()
    }

    pub fn synced_seq(&self) -> u64 {
        self.ledger().synced_seq()
    }

    /// The log's positions: those below the first number are durable here; the second is
    /// the log's end, durable or not.
    pub fn log_positions(&self) -> LogPositions {
        let ledger = self.ledger();
        LogPositions {
            durable_end: ledger.durable_log_end(),
            end: ledger.log_end(),
        }
    }

    /// Writes `batch` (log positions from `first_position` on, the log ending at `log_end`
    /// after it) to the WAL without syncing; a later sync makes it durable.
    fn write_unsynced(
        &self,
        batch: WriteBatch,
        first_position: Option<usize>,
        log_end: usize,
    ) -> Result<(), StorageError> {
        self.db.write(batch)?;
        self.ledger().record_write(first_position, log_end);
        Ok(())
    }

    /// Syncs whatever was written (a process that crashed may have left written but unsynced
    /// data readable) and starts the ledger over at a log ending at `log_end`, all durable.
    fn mark_all_durable(&self, log_end: usize) -> Result<(), StorageError> {
        self.db.flush_wal(true)?;
        self.ledger().reset(log_end);
        Ok(())
    }

    /// How many times the write-ahead log was synced since opening: one per storage step.
    pub fn wal_syncs(&self) -> u64 {
        self.options
            .get_ticker_count(rocksdb::statistics::Ticker::WalFileSynced)
    }

    fn cf(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily, StorageError> {
        self.db
            .cf_handle(name)
            .ok_or(StorageError::MissingColumnFamily { name })
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options)?;
        Ok(())
    }

    fn get_meta<V: DeserializeOwned>(
        &self,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<V>, StorageError> {
        match self.db.get_cf(self.cf(CF_META)?, key)? {
            Some(bytes) => decode(&bytes, what).map(Some),
            None => Ok(None),
        }
    }

    /// The latest checkpoint: the log index it reflects and the state's bytes, checked
    /// against its checksum (a mismatch or a missing chunk is an error, never a half-loaded
    /// state).
    pub fn load_checkpoint(&self) -> Result<Option<Checkpoint>, StorageError> {
        let Some(head) = self.checkpoint_head()? else {
            return self.load_legacy_checkpoint();
        };
        let generation = head.generation;
        let first = chunk_key(generation, 0);
        let iter = self.db.iterator_cf(
            self.cf(CF_CHECKPOINT)?,
            IteratorMode::From(&first, rocksdb::Direction::Forward),
        );
        let mut state = Vec::with_capacity(usize::try_from(head.len).unwrap_or(0));
        let mut found = 0u64;
        for item in iter {
            if found == head.chunks {
                break;
            }
            let (key, value) = item?;
            if *key != chunk_key(generation, found) {
                break;
            }
            state.extend_from_slice(&value);
            found += 1;
        }
        if found != head.chunks || state.len() as u64 != head.len {
            return Err(StorageError::CheckpointIncomplete {
                index: head.index,
                generation,
                found,
                expected: head.chunks,
                found_bytes: state.len() as u64,
                expected_bytes: head.len,
            });
        }
        let checkpoint = Checkpoint {
            index: head.index,
            time_ms: head.time_ms,
            sha256: head.sha256,
            state,
        };
        checkpoint.verify()?;
        Ok(Some(checkpoint))
    }

    fn load_legacy_checkpoint(&self) -> Result<Option<Checkpoint>, StorageError> {
        match self.db.get_cf(self.cf(CF_CHECKPOINT)?, KEY_CHECKPOINT)? {
            Some(bytes) => {
                let checkpoint: Checkpoint = decode(&bytes, "checkpoint")?;
                checkpoint.verify()?;
                Ok(Some(checkpoint))
            }
            None => Ok(None),
        }
    }

    fn checkpoint_head(&self) -> Result<Option<CheckpointHead>, StorageError> {
        match self
            .db
            .get_cf(self.cf(CF_CHECKPOINT)?, KEY_CHECKPOINT_HEAD)?
        {
            Some(bytes) => decode(&bytes, "checkpoint head").map(Some),
            None => Ok(None),
        }
    }

    /// True for a database that holds nothing yet: no checkpoint, no log, no promise.
    pub fn is_blank(&self) -> Result<bool, StorageError> {
        let checkpoints = self.cf(CF_CHECKPOINT)?;
        let no_checkpoint = self.db.get_cf(checkpoints, KEY_CHECKPOINT)?.is_none()
            && self.db.get_cf(checkpoints, KEY_CHECKPOINT_HEAD)?.is_none();
        let no_log = self
            .db
            .iterator_cf(self.cf(CF_LOG)?, IteratorMode::Start)
            .next()
            .is_none();
        let no_promise = self.db.get_cf(self.cf(CF_META)?, KEY_PROMISE)?.is_none();
        Ok(no_checkpoint && no_log && no_promise)
    }

    /// Installs a checkpoint fetched from a peer (before OmniPaxos is (re)built on this
    /// database): the log is emptied and starts after `checkpoint.index`, which counts as
    /// decided and compacted. The chunks are written first (durable, named by nothing yet),
    /// then one synced batch does the rest: all or nothing.
    ///
    /// The accepted round becomes `accepted_round_floor`, a ballot below every real one
    /// (round 0, this replica's id): the leader then syncs this replica from its decided
    /// index, never from an older round's accepted index that would lie below the checkpoint.
    pub fn install_checkpoint(
        &self,
        checkpoint: &Checkpoint,
        accepted_round_floor: Ballot,
    ) -> Result<(), StorageError> {
        checkpoint.verify()?;
        let index = checkpoint.index;
        let head = self.write_checkpoint_chunks(checkpoint)?;
        let mut batch = WriteBatch::default();
        // Past every 8-byte log key.
        batch.delete_range_cf(self.cf(CF_LOG)?, log_key(0).to_vec(), vec![0xffu8; 9]);
        let meta = self.cf(CF_META)?;
        batch.put_cf(meta, KEY_COMPACTED_IDX, encode(&index, "compacted index")?);
        batch.put_cf(meta, KEY_DECIDED_IDX, encode(&index, "decided index")?);
        batch.put_cf(
            meta,
            KEY_ACCEPTED_ROUND,
            encode(&accepted_round_floor, "accepted round")?,
        );
        self.stage_checkpoint_head(&mut batch, &head)?;
        self.write(batch)
    }

    /// Replaces the latest checkpoint: its chunks, then its head, each without the WAL and
    /// flushed (a synced head in the WAL made the log's writes wait for that fsync). Call
    /// it off the Paxos loop: it waits for the disk.
    ///
    /// Crash-safe at every step: a flush makes a prefix of these writes durable, and the head
    /// comes last; chunks that no head names are replaced by the next attempt.
    pub fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StorageError> {
        let head = self.write_checkpoint_chunks(checkpoint)?;
        let mut batch = WriteBatch::default();
        self.stage_checkpoint_head(&mut batch, &head)?;
        self.db.write_opt(batch, &no_wal())?;
        self.db.flush_cf(self.cf(CF_CHECKPOINT)?)?;
        Ok(())
    }

    /// Writes `checkpoint`'s bytes as the chunks of the generation after the current one,
    /// in writes of one chunk each without the WAL, and flushes them to disk; returns the
    /// head that names them (not written yet). Until it is, the chunks are unreferenced: a
    /// crash leaves the current checkpoint as it was, and the next attempt overwrites them.
    fn write_checkpoint_chunks(
        &self,
        checkpoint: &Checkpoint,
    ) -> Result<CheckpointHead, StorageError> {
        let generation = self
            .checkpoint_head()?
            .map_or(1, |head| head.generation.saturating_add(1));
        let cf = self.cf(CF_CHECKPOINT)?;
        let no_wal = no_wal();
        // Leftovers of an attempt at this generation that crashed before its head.
        let mut clear = WriteBatch::default();
        clear.delete_range_cf(
            cf,
            chunk_key(generation, 0),
            chunk_key(generation.saturating_add(1), 0),
        );
        self.db.write_opt(clear, &no_wal)?;
        let mut chunks = 0u64;
        for (number, chunk) in checkpoint.state.chunks(CHECKPOINT_CHUNK_BYTES).enumerate() {
            let mut batch = WriteBatch::default();
            batch.put_cf(cf, chunk_key(generation, number as u64), chunk);
            self.db.write_opt(batch, &no_wal)?;
            chunks += 1;
            if (number + 1) % CHECKPOINT_FLUSH_CHUNKS == 0 {
                self.db.flush_cf(cf)?;
            }
        }
        // Written without the WAL: durable once flushed (SST files and manifest synced).
        self.db.flush_cf(cf)?;
        Ok(CheckpointHead {
            index: checkpoint.index,
            time_ms: checkpoint.time_ms,
            sha256: checkpoint.sha256,
            generation,
            len: checkpoint.state.len() as u64,
            chunks,
        })
    }

    /// Stages `head` as the latest checkpoint, deleting every other generation's chunks and
    /// an older database's single-record checkpoint.
    fn stage_checkpoint_head(
        &self,
        batch: &mut WriteBatch,
        head: &CheckpointHead,
    ) -> Result<(), StorageError> {
        let cf = self.cf(CF_CHECKPOINT)?;
        batch.put_cf(cf, KEY_CHECKPOINT_HEAD, encode(head, "checkpoint head")?);
        batch.delete_cf(cf, KEY_CHECKPOINT);
        batch.delete_range_cf(cf, chunk_key(0, 0), chunk_key(head.generation, 0));
        batch.delete_range_cf(
            cf,
            &chunk_key(head.generation.saturating_add(1), 0)[..],
            &[CHUNK_PREFIX + 1][..],
        );
        Ok(())
    }
}

/// Writes that bypass the WAL (made durable by a flush of their column family).
fn no_wal() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.disable_wal(true);
    options
}

/// What names a chunked checkpoint (`ReplicaDb::save_checkpoint`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CheckpointHead {
    index: u64,
    time_ms: u64,
    sha256: [u8; 32],
    generation: u64,
    /// Bytes of the state, and the chunks holding them.
    len: u64,
    chunks: u64,
}

/// Key of chunk `number` of checkpoint generation `generation`.
fn chunk_key(generation: u64, number: u64) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = CHUNK_PREFIX;
    key[1..9].copy_from_slice(&generation.to_be_bytes());
    key[9..].copy_from_slice(&number.to_be_bytes());
    key
}

/// Where this replica's log ends, and up to where it is durable (`ReplicaDb::log_positions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPositions {
    pub durable_end: usize,
    pub end: usize,
}

/// A checkpoint of the cell state taken after applying log index `index` (1-based).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub index: u64,
    pub time_ms: u64,
    /// SHA-256 of `state`, computed when the checkpoint was taken.
    pub sha256: [u8; 32],
    pub state: Vec<u8>,
}

impl Checkpoint {
    /// A checkpoint of `state` (snapshot bytes) at `index`, with its checksum.
    pub fn new(index: u64, time_ms: u64, state: Vec<u8>) -> Self {
        Checkpoint {
            index,
            time_ms,
            sha256: Sha256::digest(&state).into(),
            state,
        }
    }

    /// `Ok` if the bytes still hash to the recorded checksum.
    pub fn verify(&self) -> Result<(), StorageError> {
        let found: [u8; 32] = Sha256::digest(&self.state).into();
        if found == self.sha256 {
            Ok(())
        } else {
            Err(StorageError::CheckpointChecksum {
                index: self.index,
                expected: hex(&self.sha256),
                found: hex(&found),
            })
        }
    }
}

/// Lower-case hex of `bytes` (checksums and state hashes in messages).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn encode<V: Serialize + ?Sized>(value: &V, what: &'static str) -> Result<Vec<u8>, StorageError> {
    bincode::serialize(value).map_err(|source| StorageError::Encode { what, source })
}

fn decode<V: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<V, StorageError> {
    bincode::deserialize(bytes).map_err(|source| StorageError::Decode { what, source })
}

fn log_key(position: usize) -> [u8; 8] {
    (position as u64).to_be_bytes()
}

fn position_of(key: &[u8]) -> Result<usize, StorageError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StorageError::BadLogKey { len: key.len() })?;
    Ok(u64::from_be_bytes(bytes) as usize)
}

/// Most entries dropped on the Paxos loop at once: each holds up to `ENTRY_COMMANDS_MAX`
/// commands, and freeing thousands of them takes the loop longer than a heartbeat round.
const ENTRIES_DROPPED_INLINE_MAX: usize = 64;

/// Drops `entries` on a short-lived thread when there are many.
fn drop_off_loop<T: Send + 'static>(entries: std::collections::VecDeque<T>) {
    if entries.len() <= ENTRIES_DROPPED_INLINE_MAX {
        return;
    }
    // If no thread can start, the closure and the entries are dropped here instead.
    let _ = std::thread::Builder::new()
        .name("entries-drop".into())
        .spawn(move || drop(entries));
}

/// A storage step (it runs on the Paxos loop) this slow is logged with its parts.
const SLOW_STORAGE_STEP_MS: u64 = 20;

/// Names of the kinds of storage op, by `op_kind`.
const OP_KIND_NAMES: [&str; 10] = [
    "append_entry",
    "append_entries",
    "append_on_prefix",
    "set_promise",
    "set_decided_index",
    "set_accepted_round",
    "set_compacted_index",
    "trim",
    "set_stopsign",
    "set_snapshot",
];

/// The kind of `op`, as a bit (a step's kinds are one bit set, built without allocating
/// on every step: names are needed only when the step was slow).
fn op_kind<T: Entry>(op: &StorageOp<T>) -> u16 {
    let kind = match op {
        StorageOp::AppendEntry(_) => 0,
        StorageOp::AppendEntries(_) => 1,
        StorageOp::AppendOnPrefix(..) => 2,
        StorageOp::SetPromise(_) => 3,
        StorageOp::SetDecidedIndex(_) => 4,
        StorageOp::SetAcceptedRound(_) => 5,
        StorageOp::SetCompactedIdx(_) => 6,
        StorageOp::Trim(_) => 7,
        StorageOp::SetStopsign(_) => 8,
        StorageOp::SetSnapshot(_) => 9,
    };
    1 << kind
}

/// The names of the kinds in `kinds` (bits of `op_kind`).
fn op_kind_names(kinds: u16) -> Vec<&'static str> {
    (0..OP_KIND_NAMES.len())
        .filter(|bit| kinds & (1 << bit) != 0)
        .map(|bit| OP_KIND_NAMES[bit])
        .collect()
}

/// Log entries kept in memory after they were written, so the entries a replica applies
/// just after appending them are not read back from RocksDB and decoded again.
pub const RECENT_ENTRIES_MAX: usize = 8_192;

/// OmniPaxos' `Storage` on the replica's RocksDB. Reads of metadata come from a cache that is
/// updated only after a batch has been written, so a failed write leaves it unchanged; so do
/// the recent entries.
pub struct RocksStorage<T> {
    db: ReplicaDb,
    cache: MetaCache,
    recent: RecentEntries<T>,
}

/// The last (at most `RECENT_ENTRIES_MAX`) entries of the log: positions `start..` up to the
/// log's end, always a contiguous suffix of what was stored (a trim leaves the entries below
/// the compacted index here until pushes age them out: `read_range` never serves them, and
/// dropping thousands of entries at once stalled the Paxos loop for 100-600 ms).
struct RecentEntries<T> {
    start: usize,
    entries: std::collections::VecDeque<T>,
}

impl<T: Entry + Send + 'static> RecentEntries<T> {
    fn end(&self) -> usize {
        self.start + self.entries.len()
    }

    fn restart_at(&mut self, position: usize) {
        drop_off_loop(std::mem::take(&mut self.entries));
        self.start = position;
    }

    fn truncate_to(&mut self, position: usize) {
        if position < self.start {
            self.restart_at(position);
        } else {
            drop_off_loop(self.entries.split_off(position - self.start));
        }
    }

    fn push(&mut self, position: usize, entry: T) {
        if position != self.end() {
            self.restart_at(position);
        }
        self.entries.push_back(entry);
        if self.entries.len() > RECENT_ENTRIES_MAX {
            self.entries.pop_front();
            self.start += 1;
        }
    }

    /// Records `op` (already written); `log_end` is the log's end after it.
    fn record(&mut self, op: StorageOp<T>, log_end: usize) {
        match op {
            StorageOp::AppendEntry(entry) => self.push(log_end.saturating_sub(1), entry),
            StorageOp::AppendEntries(entries) => {
                let first = log_end.saturating_sub(entries.len());
                for (offset, entry) in entries.into_iter().enumerate() {
                    self.push(first + offset, entry);
                }
            }
            StorageOp::AppendOnPrefix(from, entries) => {
                self.truncate_to(from);
                for (offset, entry) in entries.into_iter().enumerate() {
                    self.push(from + offset, entry);
                }
            }
            // Kept: see the type's comment.
            StorageOp::Trim(_) => {}
            _ => {}
        }
        if self.end() != log_end {
            self.restart_at(log_end);
        }
    }

    /// Entries `from..to` if all of them are here.
    fn get(&self, from: usize, to: usize) -> Option<Vec<T>> {
        if from < self.start || to > self.end() || from >= to {
            return None;
        }
        Some(
            self.entries
                .range(from - self.start..to - self.start)
                .cloned()
                .collect(),
        )
    }
}

#[derive(Debug, Clone, Default)]
struct MetaCache {
    promise: Option<Ballot>,
    accepted_round: Option<Ballot>,
    decided_idx: usize,
    compacted_idx: usize,
    /// One past the last stored log position (absolute).
    log_end: usize,
}

impl<T> RocksStorage<T>
where
    T: Entry + Serialize + DeserializeOwned + Send + 'static,
{
    /// Loads the metadata of an existing log, or starts an empty one.
    pub fn open(db: ReplicaDb) -> Result<Self, StorageError> {
        let compacted_idx = db
            .get_meta::<u64>(KEY_COMPACTED_IDX, "compacted index")?
            .unwrap_or(0) as usize;
        let last = db
            .db
            .iterator_cf(db.cf(CF_LOG)?, IteratorMode::End)
            .next()
            .transpose()?;
        let log_end = match last {
            Some((key, _)) => position_of(&key)? + 1,
            None => compacted_idx,
        };
        let cache = MetaCache {
            promise: db.get_meta(KEY_PROMISE, "promise")?,
            accepted_round: db.get_meta(KEY_ACCEPTED_ROUND, "accepted round")?,
            decided_idx: db
                .get_meta::<u64>(KEY_DECIDED_IDX, "decided index")?
                .unwrap_or(0) as usize,
            compacted_idx,
            log_end: log_end.max(compacted_idx),
        };
        let recent = RecentEntries {
            start: cache.log_end,
            entries: Default::default(),
        };
        db.mark_all_durable(cache.log_end)?;
        Ok(RocksStorage { db, cache, recent })
    }

    /// Stages `op` into `batch`, updating `cache` (a copy) to what it will be once written.
    fn stage(
        &self,
        batch: &mut WriteBatch,
        cache: &mut MetaCache,
        op: &StorageOp<T>,
    ) -> Result<(), StorageError> {
        let log = self.db.cf(CF_LOG)?;
        let meta = self.db.cf(CF_META)?;
        match op {
            StorageOp::AppendEntry(entry) => {
                batch.put_cf(log, log_key(cache.log_end), encode(entry, "log entry")?);
                cache.log_end += 1;
            }
            StorageOp::AppendEntries(entries) => {
                for entry in entries {
                    batch.put_cf(log, log_key(cache.log_end), encode(entry, "log entry")?);
                    cache.log_end += 1;
                }
            }
            &StorageOp::AppendOnPrefix(from, ref entries) => {
                if from < cache.log_end {
                    batch.delete_range_cf(log, log_key(from), log_key(cache.log_end));
                }
                cache.log_end = from;
                for entry in entries {
                    batch.put_cf(log, log_key(cache.log_end), encode(entry, "log entry")?);
                    cache.log_end += 1;
                }
            }
            StorageOp::SetPromise(ballot) => {
                batch.put_cf(meta, KEY_PROMISE, encode(ballot, "promise")?);
                cache.promise = Some(*ballot);
            }
            StorageOp::SetDecidedIndex(idx) => {
                batch.put_cf(
                    meta,
                    KEY_DECIDED_IDX,
                    encode(&(*idx as u64), "decided index")?,
                );
                cache.decided_idx = *idx;
            }
            StorageOp::SetAcceptedRound(ballot) => {
                batch.put_cf(meta, KEY_ACCEPTED_ROUND, encode(ballot, "accepted round")?);
                cache.accepted_round = Some(*ballot);
            }
            &StorageOp::SetCompactedIdx(idx) => {
                batch.put_cf(
                    meta,
                    KEY_COMPACTED_IDX,
                    encode(&(idx as u64), "compacted index")?,
                );
                cache.compacted_idx = idx;
                cache.log_end = cache.log_end.max(idx);
            }
            &StorageOp::Trim(idx) => {
                batch.delete_range_cf(log, log_key(0), log_key(idx));
                cache.log_end = cache.log_end.max(idx);
            }
            StorageOp::SetStopsign(stopsign) => match stopsign {
                Some(s) => batch.put_cf(meta, KEY_STOPSIGN, encode(s, "stop sign")?),
                None => batch.delete_cf(meta, KEY_STOPSIGN),
            },
            StorageOp::SetSnapshot(snapshot) => match snapshot {
                Some(s) => batch.put_cf(meta, KEY_SNAPSHOT, encode(s, "snapshot")?),
                None => batch.delete_cf(meta, KEY_SNAPSHOT),
            },
        }
        Ok(())
    }

    /// One storage step: all `ops` in one batch (made durable later by a sync of the loop),
    /// then the cache.
    ///
    /// A step that only raises the decided index is not worth an fsync of its own: a decided
    /// index lost in a crash is learned again from the leader (the entries it covers are on a
    /// majority's disks already), so such a step rides along with the next synced write
    /// instead of costing the leader an fsync between a quorum's answer and the client's.
    fn commit(&mut self, ops: Vec<StorageOp<T>>) -> Result<(), StorageError> {
        let started = std::time::Instant::now();
        let needs_sync = !ops
            .iter()
            .all(|op| matches!(op, StorageOp::SetDecidedIndex(_)));
        let mut batch = WriteBatch::default();
        let mut cache = self.cache.clone();
        let mut log_ends = Vec::with_capacity(ops.len());
        // The lowest log position this step writes (or makes count as written).
        let mut first_position: Option<usize> = None;
        for op in &ops {
            let end_before = cache.log_end;
            self.stage(&mut batch, &mut cache, op)?;
            let written_from = match op {
                StorageOp::AppendOnPrefix(from, _) => Some(*from),
                StorageOp::AppendEntry(_) | StorageOp::AppendEntries(_) => Some(end_before),
                // Compacting past the log's end moves the end without writing entries.
                StorageOp::SetCompactedIdx(_) if cache.log_end > end_before => Some(end_before),
                _ => None,
            };
            if let Some(from) = written_from {
                first_position = Some(first_position.map_or(from, |f| f.min(from)));
            }
            log_ends.push(cache.log_end);
        }
        let staged = started.elapsed();
        if needs_sync {
            self.db
                .write_unsynced(batch, first_position, cache.log_end)?;
        } else {
            self.db.db.write(batch)?;
        }
        let written = started.elapsed();
        self.cache = cache;
        let kinds = ops.iter().fold(0u16, |kinds, op| kinds | op_kind(op));
        for (op, log_end) in ops.into_iter().zip(log_ends) {
            self.recent.record(op, log_end);
        }
        let took = started.elapsed();
        if took >= Duration::from_millis(SLOW_STORAGE_STEP_MS) {
            tracing::warn!(
                ops = ?op_kind_names(kinds),
                stage_ms = staged.as_millis() as u64,
                write_ms = (written - staged).as_millis() as u64,
                record_ms = (took - written).as_millis() as u64,
                "a storage step of the Paxos loop was slow"
            );
        }
        Ok(())
    }

    fn read_range(&self, from: usize, to: usize) -> Result<Vec<T>, StorageError> {
        if from < self.cache.compacted_idx || to > self.cache.log_end || from >= to {
            return Ok(Vec::new());
        }
        if let Some(entries) = self.recent.get(from, to) {
            return Ok(entries);
        }
        let start = log_key(from);
        let iter = self.db.db.iterator_cf(
            self.db.cf(CF_LOG)?,
            IteratorMode::From(&start, rocksdb::Direction::Forward),
        );
        let mut entries = Vec::with_capacity(to - from);
        for item in iter {
            let (key, value) = item?;
            let position = position_of(&key)?;
            if position >= to {
                break;
            }
            if position != from + entries.len() {
                // A hole: the interval is not complete.
                return Ok(Vec::new());
            }
            entries.push(decode(&value, "log entry")?);
        }
        if entries.len() != to - from {
            return Ok(Vec::new());
        }
        Ok(entries)
    }
}

impl<T> Storage<T> for RocksStorage<T>
where
    T: Entry + Serialize + DeserializeOwned + Send + 'static,
{
    fn write_atomically(&mut self, ops: Vec<StorageOp<T>>) -> StorageResult<()> {
        Ok(self.commit(ops)?)
    }

    fn append_entry(&mut self, entry: T) -> StorageResult<()> {
        Ok(self.commit(vec![StorageOp::AppendEntry(entry)])?)
    }

    fn append_entries(&mut self, entries: Vec<T>) -> StorageResult<()> {
        Ok(self.commit(vec![StorageOp::AppendEntries(entries)])?)
    }

    fn append_on_prefix(&mut self, from_idx: usize, entries: Vec<T>) -> StorageResult<()> {
        Ok(self.commit(vec![StorageOp::AppendOnPrefix(from_idx, entries)])?)
    }

    fn set_promise(&mut self, n_prom: Ballot) -> StorageResult<()> {
        Ok(self.commit(vec![StorageOp::SetPromise(n_prom)])?)
    }

    fn set_decided_idx(&mut self, ld: usize) -> StorageResult<()> {
        Ok(self.commit(vec![StorageOp::SetDecidedIndex(ld)])?)
    }

    fn get_decided_idx(&self) -> StorageResult<usize> {
        Ok(self.cache.decided_idx)
    }

    fn set_accepted_round(&mut self, na: Ballot) -> StorageResult<()> {
        Ok(self.commit(vec![StorageOp::SetAcceptedRound(na)])?)
    }

    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        Ok(self.cache.accepted_round)
    }

    fn get_entries(&self, from: usize, to: usize) -> StorageResult<Vec<T>> {
        Ok(self.read_range(from, to)?)
    }

    fn get_log_len(&self) -> StorageResult<usize> {
        Ok(self.cache.log_end.saturating_sub(self.cache.compacted_idx))
    }

    fn get_suffix(&self, from: usize) -> StorageResult<Vec<T>> {
        Ok(self.read_range(from, self.cache.log_end)?)
    }

    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        Ok(self.cache.promise)
    }

    fn set_stopsign(&mut self, s: Option<StopSign>) -> StorageResult<()> {
        Ok(self.commit(vec![StorageOp::SetStopsign(s)])?)
    }

    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        Ok(self.db.get_meta(KEY_STOPSIGN, "stop sign")?)
    }

    fn trim(&mut self, idx: usize) -> StorageResult<()> {
        Ok(self.commit(vec![StorageOp::Trim(idx)])?)
    }

    fn set_compacted_idx(&mut self, idx: usize) -> StorageResult<()> {
        Ok(self.commit(vec![StorageOp::SetCompactedIdx(idx)])?)
    }

    fn get_compacted_idx(&self) -> StorageResult<usize> {
        Ok(self.cache.compacted_idx)
    }

    fn set_snapshot(&mut self, snapshot: Option<T::Snapshot>) -> StorageResult<()> {
        Ok(self.commit(vec![StorageOp::SetSnapshot(snapshot)])?)
    }

    fn get_snapshot(&self) -> StorageResult<Option<T::Snapshot>> {
        Ok(self.db.get_meta(KEY_SNAPSHOT, "snapshot")?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnipaxos::storage::NoSnapshot;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct TestEntry(u64);

    impl Entry for TestEntry {
        type Snapshot = NoSnapshot;
    }

    fn open(dir: &Path) -> (ReplicaDb, RocksStorage<TestEntry>) {
        let db = ReplicaDb::open(dir).expect("open db");
        let storage = RocksStorage::open(db.clone()).expect("open storage");
        (db, storage)
    }

    fn ballot(n: u32, pid: u64) -> Ballot {
        Ballot {
            config_id: 1,
            n,
            priority: 0,
            pid,
        }
    }

    #[test]
    fn entries_and_metadata_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_db, mut s) = open(dir.path());
            assert_eq!(s.get_log_len().unwrap(), 0);
            assert_eq!(s.get_promise().unwrap(), None);
            s.append_entries((0..5).map(TestEntry).collect()).unwrap();
            s.append_entry(TestEntry(5)).unwrap();
            s.set_promise(ballot(3, 2)).unwrap();
            s.set_accepted_round(ballot(3, 2)).unwrap();
            s.set_decided_idx(4).unwrap();
            assert_eq!(
                s.get_entries(1, 4).unwrap(),
                vec![TestEntry(1), TestEntry(2), TestEntry(3)]
            );
            // An interval that is not complete reads as empty.
            assert!(s.get_entries(4, 9).unwrap().is_empty());
        }
        let (_db, mut s) = open(dir.path());
        assert_eq!(s.get_log_len().unwrap(), 6);
        assert_eq!(s.get_decided_idx().unwrap(), 4);
        assert_eq!(s.get_promise().unwrap(), Some(ballot(3, 2)));
        assert_eq!(s.get_accepted_round().unwrap(), Some(ballot(3, 2)));
        assert_eq!(s.get_suffix(4).unwrap(), vec![TestEntry(4), TestEntry(5)]);

        // A new leader's log replaces an undecided suffix.
        s.append_on_prefix(5, vec![TestEntry(50), TestEntry(60)])
            .unwrap();
        assert_eq!(s.get_log_len().unwrap(), 7);
        assert_eq!(
            s.get_suffix(4).unwrap(),
            vec![TestEntry(4), TestEntry(50), TestEntry(60)]
        );
        s.append_on_prefix(2, vec![TestEntry(20)]).unwrap();
        assert_eq!(s.get_log_len().unwrap(), 3);
        assert_eq!(s.get_suffix(0).unwrap().last(), Some(&TestEntry(20)));
    }

    /// An entry that counts the drops made on the thread that created it.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct CountedEntry(u64);

    thread_local! {
        static DROPPED_HERE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    impl Drop for CountedEntry {
        fn drop(&mut self) {
            DROPPED_HERE.with(|count| count.set(count.get() + 1));
        }
    }

    impl Entry for CountedEntry {
        type Snapshot = NoSnapshot;
    }

    /// Freeing thousands of entries at once took the Paxos loop 100-600 ms (leader changes
    /// at checkpoints): a trim drops none of the recent entries, and a replaced log drops
    /// them on another thread. The entries still answer exactly what the database does.
    #[test]
    fn trims_and_replaced_logs_free_no_batch_of_entries_on_the_loop() {
        let dir = tempfile::tempdir().unwrap();
        let db = ReplicaDb::open(dir.path()).unwrap();
        let mut s = RocksStorage::<CountedEntry>::open(db.clone()).unwrap();
        let count = RECENT_ENTRIES_MAX as u64;
        s.append_entries((0..count).map(CountedEntry).collect())
            .unwrap();
        let dropped_here = || DROPPED_HERE.with(|c| c.get());
        let before = dropped_here();
        s.write_atomically(vec![
            StorageOp::Trim(count as usize - 10),
            StorageOp::SetCompactedIdx(count as usize - 10),
        ])
        .unwrap();
        assert_eq!(
            dropped_here() - before,
            0,
            "a trim freed entries on the loop"
        );
        assert!(s.get_entries(0, 5).unwrap().is_empty());
        let tail = s.get_entries(count as usize - 10, count as usize).unwrap();
        assert_eq!(tail.len(), 10);
        drop(tail);
        // A new leader's log replaces all but the first 100 entries.
        let dir = tempfile::tempdir().unwrap();
        let db = ReplicaDb::open(dir.path()).unwrap();
        let mut s = RocksStorage::<CountedEntry>::open(db.clone()).unwrap();
        s.append_entries((0..count).map(CountedEntry).collect())
            .unwrap();
        let before = dropped_here();
        s.append_on_prefix(100, vec![CountedEntry(7)]).unwrap();
        assert!(
            dropped_here() - before <= 1,
            "{} entries freed on the loop",
            dropped_here() - before
        );
        let reopened = RocksStorage::<CountedEntry>::open(db.clone()).unwrap();
        assert_eq!(
            s.get_entries(98, 101).unwrap(),
            reopened.get_entries(98, 101).unwrap()
        );
        assert_eq!(s.get_entries(100, 101).unwrap(), vec![CountedEntry(7)]);
    }

    /// The in-memory recent entries answer exactly what the database does, through
    /// appends, a replaced suffix, trims and more entries than they hold.
    #[test]
    fn recent_entries_read_like_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let (db, mut s) = open(dir.path());
        let fresh = |s: &RocksStorage<TestEntry>, from, to| {
            let (hot, cold) = (s.get_entries(from, to).unwrap(), {
                let reopened = RocksStorage::<TestEntry>::open(db.clone()).unwrap();
                reopened.get_entries(from, to).unwrap()
            });
            assert_eq!(hot, cold, "{from}..{to}");
            hot
        };
        s.append_entries((0..10).map(TestEntry).collect()).unwrap();
        s.append_entry(TestEntry(10)).unwrap();
        assert_eq!(
            fresh(&s, 8, 11),
            vec![TestEntry(8), TestEntry(9), TestEntry(10)]
        );
        s.append_on_prefix(4, vec![TestEntry(40), TestEntry(50)])
            .unwrap();
        assert_eq!(
            fresh(&s, 3, 6),
            vec![TestEntry(3), TestEntry(40), TestEntry(50)]
        );
        assert!(fresh(&s, 5, 8).is_empty());
        s.trim(2).unwrap();
        s.set_compacted_idx(2).unwrap();
        assert!(fresh(&s, 1, 3).is_empty());
        assert_eq!(fresh(&s, 2, 4), vec![TestEntry(2), TestEntry(3)]);
        let many = RECENT_ENTRIES_MAX as u64 + 10;
        s.append_entries((100..100 + many).map(TestEntry).collect())
            .unwrap();
        assert_eq!(fresh(&s, 2, 7).len(), 5);
        let end = s.get_log_len().unwrap() + 2;
        assert_eq!(fresh(&s, end - 1, end), vec![TestEntry(99 + many)]);
    }

    #[test]
    fn trimming_keeps_absolute_positions() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_db, mut s) = open(dir.path());
            s.append_entries((0..10).map(TestEntry).collect()).unwrap();
            s.write_atomically(vec![StorageOp::Trim(4), StorageOp::SetCompactedIdx(4)])
                .unwrap();
            assert_eq!(s.get_compacted_idx().unwrap(), 4);
            assert_eq!(s.get_log_len().unwrap(), 6);
            assert!(s.get_entries(2, 6).unwrap().is_empty());
            assert_eq!(
                s.get_entries(4, 6).unwrap(),
                vec![TestEntry(4), TestEntry(5)]
            );
        }
        let (_db, mut s) = open(dir.path());
        assert_eq!(s.get_log_len().unwrap(), 6);
        s.append_entry(TestEntry(10)).unwrap();
        assert_eq!(s.get_suffix(9).unwrap(), vec![TestEntry(9), TestEntry(10)]);
    }

    #[test]
    fn storage_steps_are_made_durable_by_one_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (db, mut s) = open(dir.path());
        let before = db.wal_syncs();
        s.append_entries((0..500).map(TestEntry).collect()).unwrap();
        for i in 500..600 {
            s.append_entry(TestEntry(i)).unwrap();
        }
        s.write_atomically(vec![
            StorageOp::AppendEntries((600..1000).map(TestEntry).collect()),
            StorageOp::SetAcceptedRound(ballot(1, 1)),
            StorageOp::SetDecidedIndex(1000),
        ])
        .unwrap();
        db.sync_log().unwrap();
        db.sync_log().unwrap();
        let syncs = db.wal_syncs() - before;
        assert_eq!(syncs, 1, "102 storage steps took {syncs} WAL syncs");
        assert_eq!(s.get_log_len().unwrap(), 1000);
        assert_eq!(s.get_decided_idx().unwrap(), 1000);
    }

    #[test]
    fn checkpoints_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _s) = open(dir.path());
        assert_eq!(db.load_checkpoint().unwrap(), None);
        let checkpoint = Checkpoint::new(42, 7, vec![1, 2, 3]);
        db.save_checkpoint(&checkpoint).unwrap();
        drop(db);
        drop(_s);
        let (db, _s) = open(dir.path());
        assert_eq!(db.load_checkpoint().unwrap(), Some(checkpoint.clone()));

        // Flipped bytes are refused, never loaded.
        let mut corrupt = checkpoint;
        corrupt.state[1] ^= 0xff;
        db.save_checkpoint(&corrupt).unwrap();
        let error = db.load_checkpoint().unwrap_err();
        assert!(
            matches!(error, StorageError::CheckpointChecksum { index: 42, .. }),
            "{error}"
        );
        assert!(db.install_checkpoint(&corrupt, ballot(0, 1)).is_err());
    }

    /// Keys of the checkpoint chunks stored, by generation.
    fn chunk_generations(db: &ReplicaDb) -> Vec<u64> {
        let cf = db.cf(CF_CHECKPOINT).unwrap();
        let mut generations: Vec<u64> = db
            .db
            .iterator_cf(cf, IteratorMode::Start)
            .map(|item| item.unwrap().0)
            .filter(|key| key.len() == 17 && key[0] == CHUNK_PREFIX)
            .map(|key| u64::from_be_bytes(key[1..9].try_into().unwrap()))
            .collect();
        generations.dedup();
        generations
    }

    fn state_of(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    /// Chunks written without a head (a crash before it) are ignored: the previous
    /// checkpoint loads whole, also after a reopen; the next checkpoint replaces both.
    #[test]
    fn a_crash_between_chunks_and_head_leaves_the_previous_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let size = CHECKPOINT_CHUNK_BYTES * 5 / 2;
        let first = Checkpoint::new(10, 1, state_of(size, 1));
        let second = Checkpoint::new(20, 2, state_of(size + 7, 2));
        {
            let (db, _s) = open(dir.path());
            db.save_checkpoint(&first).unwrap();
            assert_eq!(chunk_generations(&db), vec![1]);
            // The next checkpoint's chunks, then a "crash" before its head.
            let head = db.write_checkpoint_chunks(&second).unwrap();
            assert_eq!((head.generation, head.chunks), (2, 3));
            assert_eq!(db.load_checkpoint().unwrap(), Some(first.clone()));
        }
        let (db, _s) = open(dir.path());
        assert_eq!(db.load_checkpoint().unwrap(), Some(first));
        // A smaller checkpoint at the same generation leaves no stray chunk behind.
        let third = Checkpoint::new(30, 3, state_of(100, 3));
        db.save_checkpoint(&third).unwrap();
        assert_eq!(db.load_checkpoint().unwrap(), Some(third));
        assert_eq!(chunk_generations(&db), vec![2]);
        let cf = db.cf(CF_CHECKPOINT).unwrap();
        assert!(db.db.get_cf(cf, chunk_key(2, 1)).unwrap().is_none());
    }

    /// A missing or changed chunk makes the whole checkpoint refused, never half loaded.
    #[test]
    fn a_missing_or_flipped_chunk_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _s) = open(dir.path());
        let checkpoint = Checkpoint::new(7, 1, state_of(CHECKPOINT_CHUNK_BYTES * 2 + 1, 4));
        db.save_checkpoint(&checkpoint).unwrap();
        let cf = db.cf(CF_CHECKPOINT).unwrap();
        let chunk = db.db.get_cf(cf, chunk_key(1, 1)).unwrap().unwrap();
        db.db.delete_cf(cf, chunk_key(1, 1)).unwrap();
        let error = db.load_checkpoint().unwrap_err();
        assert!(
            matches!(
                error,
                StorageError::CheckpointIncomplete {
                    index: 7,
                    found: 1,
                    expected: 3,
                    ..
                }
            ),
            "{error}"
        );
        let mut flipped = chunk.clone();
        flipped[5] ^= 0x01;
        db.db.put_cf(cf, chunk_key(1, 1), &flipped).unwrap();
        let error = db.load_checkpoint().unwrap_err();
        assert!(
            matches!(error, StorageError::CheckpointChecksum { index: 7, .. }),
            "{error}"
        );
        db.db.put_cf(cf, chunk_key(1, 1), &chunk).unwrap();
        assert_eq!(db.load_checkpoint().unwrap(), Some(checkpoint));
    }

    /// A database written before chunked checkpoints keeps its checkpoint readable; the
    /// first new checkpoint replaces it.
    #[test]
    fn a_single_record_checkpoint_of_an_older_database_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _s) = open(dir.path());
        let old = Checkpoint::new(5, 1, vec![1, 2, 3]);
        let mut batch = WriteBatch::default();
        batch.put_cf(
            db.cf(CF_CHECKPOINT).unwrap(),
            KEY_CHECKPOINT,
            encode(&old, "checkpoint").unwrap(),
        );
        db.write(batch).unwrap();
        assert!(!db.is_blank().unwrap());
        assert_eq!(db.load_checkpoint().unwrap(), Some(old));
        let new = Checkpoint::new(6, 2, vec![4, 5]);
        db.save_checkpoint(&new).unwrap();
        assert_eq!(db.load_checkpoint().unwrap(), Some(new));
        let cf = db.cf(CF_CHECKPOINT).unwrap();
        assert!(db.db.get_cf(cf, KEY_CHECKPOINT).unwrap().is_none());
    }

    #[test]
    fn an_installed_checkpoint_starts_the_log_after_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (db, mut s) = open(dir.path());
            assert!(db.is_blank().unwrap());
            s.append_entries((0..3).map(TestEntry).collect()).unwrap();
            assert!(!db.is_blank().unwrap());
            drop(s);
            db.install_checkpoint(&Checkpoint::new(10, 1, vec![9]), ballot(0, 1))
                .unwrap();
        }
        let (db, mut s) = open(dir.path());
        assert_eq!(db.load_checkpoint().unwrap().unwrap().index, 10);
        assert_eq!(s.get_compacted_idx().unwrap(), 10);
        assert_eq!(s.get_decided_idx().unwrap(), 10);
        assert_eq!(s.get_log_len().unwrap(), 0);
        assert_eq!(s.get_accepted_round().unwrap(), Some(ballot(0, 1)));
        s.append_entry(TestEntry(10)).unwrap();
        assert_eq!(s.get_suffix(10).unwrap(), vec![TestEntry(10)]);
    }
}
