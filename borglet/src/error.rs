//! Errors that stop a borglet from starting or serving.

use crate::machine::CapacityError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BorgletError {
    #[error("invalid borglet configuration: {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read this machine's capacity (set a capacity override to skip this): {0}")]
    Capacity(#[from] CapacityError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot serve metrics on {address}: {source}")]
    MetricsServe {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the task keeper program {path} cannot be used ({reason}): install borg-keeper beside the borglet's binary or configure another")]
    KeeperProgram { path: PathBuf, reason: String },
    #[error("the gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}
