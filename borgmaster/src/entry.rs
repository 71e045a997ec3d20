//! The OmniPaxos log entry (a shared batch of commands), and the byte encoding of Paxos
//! messages between replicas.

use crate::state::LogEntry;
use omnipaxos::messages::Message;
use omnipaxos::storage::{Entry, NoSnapshot};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::Arc;

/// Most commands the leader puts into one log entry. Each entry costs a storage write, a
/// log key and a read at apply on every replica; batching the commands queued in one pass
/// of the Paxos loop shares that cost (master_bench, 64 in flight).
pub const ENTRY_COMMANDS_MAX: usize = 64;
/// Most encoded bytes of commands in one log entry (one command larger than this still
/// gets an entry of its own), so an entry stays well inside a replica message.
pub const ENTRY_BYTES_MAX: u64 = 1024 * 1024;

/// One entry of the replicated log: one or more commands (`LogEntry`, applied in order, each
/// with its own command index) behind an `Arc`. OmniPaxos clones an entry for its storage
/// step, for each follower's `AcceptDecide` and for every read of the log (applying it);
/// sharing makes each of those a reference count instead of a deep copy. Encoded as the
/// sequence of commands it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedEntry(pub Arc<Vec<LogEntry>>);

impl SharedEntry {
    pub fn new(commands: Vec<LogEntry>) -> Self {
        SharedEntry(Arc::new(commands))
    }
}

impl std::ops::Deref for SharedEntry {
    type Target = [LogEntry];

    fn deref(&self) -> &[LogEntry] {
        &self.0
    }
}

impl Serialize for SharedEntry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SharedEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<LogEntry>::deserialize(deserializer).map(SharedEntry::new)
    }
}

/// OmniPaxos' own snapshots are not used: compaction works from the replica's checkpoints of
/// the cell state (see `storage::Checkpoint`), which need log indices that
/// `Snapshot::create(&[T])` does not get.
impl Entry for SharedEntry {
    type Snapshot = NoSnapshot;
}

/// A Paxos message between replicas.
pub type PaxosMessage = Message<SharedEntry>;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot encode a Paxos message: {0}")]
    Encode(bincode::Error),
    #[error("cannot decode a Paxos message (corrupt, too large, or from another version): {0}")]
    Decode(bincode::Error),
}

fn options(limit_bytes: u64) -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new().with_limit(limit_bytes)
}

pub fn encode_message(message: &PaxosMessage, limit_bytes: u64) -> Result<Vec<u8>, CodecError> {
    use bincode::Options;
    options(limit_bytes)
        .serialize(message)
        .map_err(CodecError::Encode)
}

/// Decodes a message from a peer; `limit_bytes` bounds what a corrupt length can allocate.
pub fn decode_message(bytes: &[u8], limit_bytes: u64) -> Result<PaxosMessage, CodecError> {
    use bincode::Options;
    options(limit_bytes)
        .deserialize(bytes)
        .map_err(CodecError::Decode)
}
