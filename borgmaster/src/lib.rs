//! A borgmaster replica: pure cell state machine, OmniPaxos replication, RocksDB storage, RPC services
//!
//! - `state`: the pure, deterministic cell state machine (see docs/lifecycle.md).
//! - `storage`: OmniPaxos' log and metadata, and checkpoints, on the replica's RocksDB;
//!   `sync_ledger` and `persist_gate`: what is durable, and the messages that wait for it.
//! - `paxos`: the loop that owns OmniPaxos and applies decided entries to the state.
//! - `transport`: per-peer queues and senders of Paxos messages.
//! - `services`, `server`, `wire`, `context`: the gRPC API and its validation at the edge.
//! - `replica`: `run`, which ties it together.

pub mod state;

pub mod catchup;
pub mod config;
pub mod context;
pub mod entry;
pub mod error;
pub mod log_syncer;
pub mod loop_watch;
pub mod metrics;
pub mod paxos;
pub mod persist_gate;
pub mod replica;
pub mod server;
pub mod services;
pub mod storage;
pub mod sync_ledger;
pub mod transport;
pub mod wire;

pub use config::{PeersParseError, ReplicaConfig};
pub use entry::{ENTRY_BYTES_MAX, ENTRY_COMMANDS_MAX};
pub use error::MasterError;
pub use replica::{run, run_with_listener};
