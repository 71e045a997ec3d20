//! `LogEntry` as an OmniPaxos entry, and the byte encoding of Paxos messages between replicas.

use crate::state::LogEntry;
use omnipaxos::messages::Message;
use omnipaxos::storage::{Entry, NoSnapshot};

/// OmniPaxos' own snapshots are not used: compaction works from the replica's checkpoints of
/// the cell state (see `storage::Checkpoint`), which need log indices that
/// `Snapshot::create(&[T])` does not get.
impl Entry for LogEntry {
    type Snapshot = NoSnapshot;
}

/// A Paxos message between replicas.
pub type PaxosMessage = Message<LogEntry>;

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
