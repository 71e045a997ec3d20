//! Glue shared by the daemons and the CLI: the leader-following master client, the
//! Prometheus `/metrics` endpoint, and time helpers for the (impure) process loops.

pub mod auth;
pub mod master_client;
pub mod metrics_http;

pub use master_client::{MasterChannel, MasterClient, MasterClientConfig};
pub use metrics_http::serve_metrics;

/// Wall-clock milliseconds since the Unix epoch. Only process loops call this; the state
/// machine and the scheduler library receive time as an argument.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A request id that is unique across processes and restarts: idempotency keys for writes.
pub fn new_request_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{}-{n}", std::process::id(), now_ms())
}
