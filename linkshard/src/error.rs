//! Errors that stop a link shard from starting. Failures inside a round (a master or a
//! borglet not answering) are logged and counted, and the next round tries again.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum LinkShardError {
    #[error("invalid link shard configuration: `{field}` {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    #[error("cannot create the master client: {message}")]
    MasterClient { message: String },
    #[error("cannot register metric `{metric}`: {source}")]
    Metric {
        metric: &'static str,
        #[source]
        source: prometheus::Error,
    },
    #[error("cannot serve metrics on {address}: {source}")]
    MetricsServer {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}
