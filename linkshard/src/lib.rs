//! Link shard: polls the borglets of its share of the cell, diffs their reports and forwards
//! only the changes to the master (docs/lifecycle.md, "Link shard diffs").
//!
//! Each round (every `poll_interval_ms`; every `poll_interval_busy_ms` while rounds forward
//! changes or see tasks still starting, and for `busy_rounds_after_work` rounds after; at
//! once when the master's assignment changes between idle rounds): `LinkService.GetAssignment` from any master replica, `BorgletService.Poll` of
//! every assigned machine with its desired set (bounded concurrency, per-poll timeout), a diff of each report against what the master was last
//! told ([`diff`], pure), and one `LinkService.ForwardDiffs` per batch of changed machines
//! (none when nothing changed). All state is rebuildable: a restarted shard forwards every
//! machine's full report once. The master and the borglets are told what the shard already
//! holds and exchange differences only ([`assignments`], [`keyed`]).

pub mod assignments;
pub mod borglets;
pub mod config;
pub mod diff;
pub mod error;
pub mod keyed;
pub mod metrics;
pub mod shard;

pub use config::LinkShardConfig;
pub use error::LinkShardError;

use borg_common::{MasterClient, MasterClientConfig};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Runs the link shard until `shutdown` is cancelled. Only bad configuration or an
/// unavailable metrics address make it return an error; an unreachable master or borglet is
/// logged, counted and tried again next round.
pub async fn run(
    config: LinkShardConfig,
    shutdown: CancellationToken,
) -> Result<(), LinkShardError> {
    config.validate()?;
    let registry = prometheus::Registry::new();
    let metrics = metrics::Metrics::register(&registry)?;
    if let Some(address) = config.metrics_address {
        let bound = borg_common::serve_metrics(address, registry, shutdown.clone())
            .await
            .map_err(|source| LinkShardError::MetricsServer { address, source })?;
        tracing::info!(shard = %config.shard_id, %bound, "serving link shard metrics");
    }
    let master = MasterClient::new(MasterClientConfig {
        token: config.master_token.clone(),
        ..MasterClientConfig::new(config.masters.clone())
    })
    .map_err(|status| LinkShardError::MasterClient {
        message: status.message().to_owned(),
    })?;
    tracing::info!(
        shard = %config.shard_id,
        shard_index = config.shard_index,
        shard_count = config.shard_count,
        poll_interval_ms = config.poll_interval_ms,
        "link shard started"
    );
    let (interval, busy_interval) = (
        Duration::from_millis(config.poll_interval_ms),
        Duration::from_millis(config.poll_interval_busy_ms.min(config.poll_interval_ms)),
    );
    let mut next_round = tokio::time::Instant::now();
    let shard_id = config.shard_id.clone();
    let borglet_token = borg_common::master_client::TokenInterceptor::new(
        config.master_token.as_deref(),
    )
    .map_err(|status| LinkShardError::MasterClient {
        message: status.message().to_owned(),
    })?;
    let wait_for_changes = config.wait_for_assignment_changes;
    let busy_rounds_after_work = config.busy_rounds_after_work;
    let mut shard = shard::Shard::new(config, master, borglet_token, metrics);
    let mut busy = false;
    // Rounds since the last one that found work (none yet: idle).
    let mut rounds_since_work = busy_rounds_after_work;
    loop {
        let until_round = next_round.saturating_duration_since(tokio::time::Instant::now());
        if wait_for_changes && !busy && !until_round.is_zero() {
            // Idle: the round comes early if the master places (or removes) tasks here.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = shard.wait_for_assignment_change(until_round) => match changed {
                    Ok(true) => next_round = tokio::time::Instant::now(),
                    Ok(false) => {}
                    Err(error) => tracing::debug!(shard = %shard_id, %error, "waiting for assignment changes failed"),
                },
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(next_round) => {}
        }
        let started = tokio::time::Instant::now();
        // A round cut short by shutdown loses nothing: the state is rebuilt after a restart.
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => break,
            outcome = shard.round() => outcome,
        };
        rounds_since_work = if matches!(&outcome, Ok(summary) if summary.found_work()) {
            0
        } else {
            rounds_since_work.saturating_add(1)
        };
        busy = rounds_since_work <= busy_rounds_after_work;
        next_round = started + if busy { busy_interval } else { interval };
        match outcome {
            Ok(summary) => tracing::trace!(shard = %shard_id, ?summary, "round done"),
            Err(error) => tracing::warn!(shard = %shard_id, %error, "round skipped"),
        }
    }
    tracing::info!(shard = %shard_id, "link shard stopped");
    Ok(())
}
