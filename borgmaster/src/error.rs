//! Errors of a replica process.

use crate::storage::StorageError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("replica id {id} is not among the peers {peers:?}: list every replica, this one included, as ID=HOST:PORT")]
    NotAPeer { id: u64, peers: Vec<u64> },
    #[error("a replicated master needs at least 2 replicas (OmniPaxos), got {count}")]
    TooFewReplicas { count: usize },
    #[error("replica id must be 1 or more, got 0")]
    ZeroId,
    #[error("invalid replica configuration: {reason}")]
    Config { reason: String },
    #[error("cannot resolve listen address {address:?} of replica {id}: {reason}")]
    BadAddress {
        id: u64,
        address: String,
        reason: String,
    },
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("checkpoint at {path} cannot be restored: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    #[error("OmniPaxos refused the configuration: {reason}")]
    Paxos { reason: String },
    #[error("metrics: {reason}")]
    Metrics { reason: String },
    #[error("authentication setup failed: {0}")]
    Auth(#[from] borg_common::auth::TokenFileError),
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}
