//! Errors of the scheduler process.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("no master addresses given: pass at least one master HOST:PORT")]
    NoMasters,
    #[error("invalid scheduler configuration: {field} {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    #[error("cannot create metric {name}: {source}")]
    Metric {
        name: &'static str,
        #[source]
        source: prometheus::Error,
    },
    #[error("cannot serve metrics on {address}: {source} (is the port in use?)")]
    MetricsServe {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}
