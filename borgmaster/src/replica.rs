//! Running one replica: recover, start the Paxos loop, the peer senders and the gRPC server,
//! and stop them all on shutdown.

use crate::config::ReplicaConfig;
use crate::context::ReplicaContext;
use crate::error::MasterError;
use crate::metrics::ReplicaMetrics;
use crate::paxos::{LeaderInfo, LoopChannels, LoopSettings, PaxosLoop, Progress};
use crate::server::serve;
use crate::state::CellState;
use crate::storage::{ReplicaDb, RocksStorage};
use crate::transport::{PeerSenders, TransportSettings};
use omnipaxos::{ClusterConfig, ServerConfig};
use std::sync::{Arc, RwLock};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

/// OmniPaxos configuration id of the (fixed) replica set.
const CONFIGURATION_ID: u32 = 1;

/// Runs the replica on its own entry of `peers` until `shutdown` is cancelled.
pub async fn run(config: ReplicaConfig, shutdown: CancellationToken) -> Result<(), MasterError> {
    validate(&config)?;
    let address = config.own_address().unwrap_or_default().to_owned();
    let listener = TcpListener::bind(&address)
        .await
        .map_err(|source| MasterError::Bind { address, source })?;
    run_with_listener(config, listener, shutdown).await
}

/// Like `run`, on a listener the caller bound (tests bind port 0 first to learn the ports).
pub async fn run_with_listener(
    config: ReplicaConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), MasterError> {
    validate(&config)?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| MasterError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let db = ReplicaDb::open(&config.data_dir)?;
    let (state, progress) = recover_state(&config, &db)?;
    let storage = RocksStorage::open(db.clone())?;
    let server_config = ServerConfig {
        pid: config.id,
        election_tick_timeout: config.election_timeout_ticks.max(1),
        resend_message_tick_timeout: config.resend_timeout_ticks.max(1),
        batch_size: config.append_batch_max.max(1),
        flush_batch_tick_timeout: 1,
        ..ServerConfig::default()
    };
    let cluster_config = ClusterConfig {
        configuration_id: CONFIGURATION_ID,
        nodes: config.peers.keys().copied().collect(),
        flexible_quorum: None,
    };
    let paxos = cluster_config
        .build_for_server(server_config, storage)
        .map_err(|e| MasterError::Paxos {
            reason: e.to_string(),
        })?;

    let metrics = ReplicaMetrics::new(config.id).map_err(|e| MasterError::Metrics {
        reason: e.to_string(),
    })?;
    metrics.applied_index.set(progress.applied_index as i64);
    metrics
        .checkpoint_index
        .set(progress.checkpoint_index as i64);
    // Children of `shutdown`, so everything stops with it, or with this function's end.
    let tasks = shutdown.child_token();
    let _stop_tasks = tasks.clone().drop_guard();
    if let Some(address) = config.metrics_address {
        let bound = borg_common::serve_metrics(address, metrics.registry.clone(), tasks.clone())
            .await
            .map_err(|e| MasterError::Metrics {
                reason: format!("cannot serve metrics on {address}: {e}"),
            })?;
        tracing::info!(replica = config.id, %bound, "serving metrics");
    }

    let (proposals_tx, proposals_rx) = mpsc::channel(config.proposal_queue_max.max(1));
    let (incoming_tx, incoming_rx) = mpsc::channel(config.incoming_queue_max.max(1));
    let (leader_tx, leader_rx) = watch::channel(LeaderInfo::default());
    let (progress_tx, progress_rx) = watch::channel(progress);
    let (updates_tx, _) = broadcast::channel(config.watch_buffer_max.max(1));
    let state = Arc::new(RwLock::new(state));

    let senders = PeerSenders::spawn(
        &TransportSettings {
            id: config.id,
            peers: config.peers.clone(),
            outgoing_queue_max: config.outgoing_queue_max,
            deliver_batch_max: config.deliver_batch_max,
            deliver_timeout_ms: config.deliver_timeout_ms,
            message_max_bytes: config.replica_message_max_bytes,
        },
        incoming_tx.clone(),
        metrics.clone(),
        tasks.clone(),
    )
    .map_err(|e| MasterError::Config {
        reason: format!("bad peer address: {e}"),
    })?;
    let paxos_loop = PaxosLoop::new(
        LoopSettings {
            id: config.id,
            peers: config.peers.clone(),
            tick_interval_ms: config.tick_interval_ms,
            proposal_timeout_ms: config.proposal_timeout_ms,
            waiters_max: config.proposal_queue_max.max(1),
            checkpoint_every_entries: config.checkpoint_every_entries,
        },
        paxos,
        db,
        state.clone(),
        senders,
        metrics.clone(),
        LoopChannels {
            proposals: proposals_rx,
            incoming: incoming_rx,
            leader: leader_tx,
            progress: progress_tx,
            updates: updates_tx.clone(),
        },
        progress,
    );
    let loop_task = tokio::spawn(paxos_loop.run(tasks.clone()));

    let ctx = Arc::new(ReplicaContext {
        id: config.id,
        peers: config.peers.clone(),
        state,
        leader: leader_rx,
        progress: progress_rx,
        updates: updates_tx,
        proposals: proposals_tx,
        incoming: incoming_tx,
        metrics,
        proposal_timeout_ms: config.proposal_timeout_ms,
        watch_buffer_max: config.watch_buffer_max,
        message_max_bytes: config.replica_message_max_bytes,
        shutdown: tasks.clone(),
    });
    tracing::info!(
        replica = config.id,
        address = ?listener.local_addr().ok(),
        applied_index = progress.applied_index,
        "master replica serving"
    );
    let served = serve(
        ctx,
        listener,
        config.client_message_max_bytes,
        config.replica_message_max_bytes,
        tasks.clone(),
    )
    .await;
    // The server stops on shutdown (or failed): stop the loop and the senders with it, and
    // wait for the loop so the database is closed when this returns.
    tasks.cancel();
    if let Err(error) = loop_task.await {
        tracing::error!(%error, "Paxos loop task failed");
    }
    tracing::info!(replica = config.id, "master replica stopped");
    served.map_err(MasterError::from)
}

fn validate(config: &ReplicaConfig) -> Result<(), MasterError> {
    if config.id == 0 {
        return Err(MasterError::ZeroId);
    }
    if !config.peers.contains_key(&config.id) {
        return Err(MasterError::NotAPeer {
            id: config.id,
            peers: config.peers.keys().copied().collect(),
        });
    }
    if config.peers.len() < 2 {
        return Err(MasterError::TooFewReplicas {
            count: config.peers.len(),
        });
    }
    if config.tick_interval_ms == 0 {
        return Err(MasterError::Config {
            reason: "tick_interval_ms must be at least 1".into(),
        });
    }
    Ok(())
}

/// The latest checkpoint, or an empty state; the loop re-applies the decided suffix.
fn recover_state(
    config: &ReplicaConfig,
    db: &ReplicaDb,
) -> Result<(CellState, Progress), MasterError> {
    let Some(checkpoint) = db.load_checkpoint()? else {
        return Ok((CellState::new(), Progress::default()));
    };
    let state =
        CellState::from_snapshot_bytes(&checkpoint.state).map_err(|e| MasterError::Checkpoint {
            path: config.data_dir.clone(),
            reason: e.to_string(),
        })?;
    let progress = Progress {
        decided_index: 0,
        applied_index: state.applied_index(),
        checkpoint_index: checkpoint.index,
        checkpoint_time_ms: checkpoint.time_ms,
    };
    tracing::info!(
        replica = config.id,
        index = checkpoint.index,
        "recovered the cell state from a checkpoint"
    );
    Ok((state, progress))
}
