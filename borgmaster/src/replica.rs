//! Running one replica: recover, start the Paxos loop, the peer senders and the gRPC server,
//! and stop them all on shutdown.

use crate::catchup::fetch_best_checkpoint;
use crate::config::ReplicaConfig;
use crate::context::ReplicaContext;
use crate::error::MasterError;
use crate::metrics::ReplicaMetrics;
use crate::paxos::{
    accepted_round_floor, ask_leader_to_sync, LeaderInfo, LoopChannels, LoopSettings, PaxosLoop,
    Progress,
};
use crate::server::serve;
use crate::services::auth::{AuthMetrics, Authenticator};
use crate::state::CellState;
use crate::storage::{ReplicaDb, RocksStorage};
use crate::transport::{PeerFilter, PeerSenders, TransportSettings};
use borg_common::auth::read_token_file;
use borg_common::master_client::TokenInterceptor;
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
    let db =
        ReplicaDb::open(&config.data_dir)?.with_fault_fsync_stall_ms(config.fault_fsync_stall_ms);
    if config.fault_fsync_stall_ms > 0 {
        tracing::warn!(
            replica = config.id,
            stall_ms = config.fault_fsync_stall_ms,
            "fault injection: every fsync of the log is delayed"
        );
    }
    let metrics = ReplicaMetrics::new(config.id).map_err(|e| MasterError::Metrics {
        reason: e.to_string(),
    })?;
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
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    let (updates_tx, _) = broadcast::channel(config.watch_buffer_max.max(1));
    let state = Arc::new(RwLock::new(CellState::new()));
    let peer_filter = Arc::new(PeerFilter::default());
    let auth_metrics =
        AuthMetrics::register(&metrics.registry).map_err(|e| MasterError::Metrics {
            reason: e.to_string(),
        })?;
    let auth = Authenticator::load(config.auth.as_ref(), state.clone(), auth_metrics)?;
    let peer_token = peer_token(&config)?;
    if !auth.enabled() {
        tracing::warn!(
            replica = config.id,
            "authentication is off: every caller is trusted (give token files to turn it on)"
        );
    }

    // The server starts first: peers that catch up at the same time (a new cell, all data
    // directories empty) must be able to ask each other for checkpoints.
    let ctx = Arc::new(ReplicaContext {
        id: config.id,
        peers: config.peers.clone(),
        state: state.clone(),
        leader: leader_rx,
        progress: progress_rx,
        updates: updates_tx.clone(),
        proposals: proposals_tx,
        incoming: incoming_tx.clone(),
        metrics: metrics.clone(),
        proposal_timeout_ms: config.proposal_timeout_ms,
        watch_buffer_max: config.watch_buffer_max,
        message_max_bytes: config.replica_message_max_bytes,
        shutdown: tasks.clone(),
        db: db.clone(),
        peer_filter: peer_filter.clone(),
        peer_filter_enabled: config.peer_filter_enabled,
        forward_channels: Default::default(),
        peer_token: peer_token.clone(),
    });
    let server = tokio::spawn(serve(
        ctx,
        listener,
        config.client_message_max_bytes,
        config.replica_message_max_bytes,
        auth,
        tasks.clone(),
    ));

    let mut installed = false;
    if db.is_blank()? {
        let fetched = tokio::select! {
            _ = tasks.cancelled() => None,
            fetched = fetch_best_checkpoint(
                config.id,
                &config.peers,
                config.bootstrap_fetch_timeout_ms,
                config.replica_message_max_bytes,
                &peer_token,
            ) => fetched,
        };
        if let Some(checkpoint) = fetched {
            tracing::info!(
                replica = config.id,
                index = checkpoint.index,
                "empty data directory: installing a peer's checkpoint"
            );
            db.install_checkpoint(
                &checkpoint,
                accepted_round_floor(CONFIGURATION_ID, config.id),
            )?;
            installed = true;
        }
    }
    let (recovered, mut progress) = recover_state(&config, &db)?;
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
    let mut paxos = cluster_config
        .clone()
        .build_for_server(server_config.clone(), storage)
        .map_err(|e| MasterError::Paxos {
            reason: e.to_string(),
        })?;
    if installed {
        ask_leader_to_sync(&mut paxos, config.id, &config.peers);
    }
    progress.compacted_index = paxos.get_compacted_idx() as u64;
    metrics.applied_index.set(progress.applied_index as i64);
    metrics
        .checkpoint_index
        .set(progress.checkpoint_index as i64);
    metrics.compacted_index.set(progress.compacted_index as i64);
    let applied_index = progress.applied_index;
    match state.write() {
        Ok(mut guard) => *guard = recovered,
        Err(_) => {
            return Err(MasterError::Config {
                reason: "cell state lock poisoned during recovery".into(),
            })
        }
    }
    progress_tx.send_replace(progress);

    let senders = PeerSenders::spawn(
        &TransportSettings {
            id: config.id,
            peers: config.peers.clone(),
            outgoing_queue_max: config.outgoing_queue_max,
            deliver_batch_max: config.deliver_batch_max,
            deliver_timeout_ms: config.deliver_timeout_ms,
            message_max_bytes: config.replica_message_max_bytes,
            token: peer_token.clone(),
        },
        incoming_tx,
        metrics.clone(),
        peer_filter,
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
            checkpoint_every_s: config.checkpoint_every_s,
            trim_lag_max_entries: config.trim_lag_max_entries,
            server_config,
            cluster_config,
            fetch_timeout_ms: config.bootstrap_fetch_timeout_ms,
            message_max_bytes: config.replica_message_max_bytes,
            peer_token,
            sync_inline_wait_ms: config.sync_inline_wait_ms,
            leader_lost_tick_speedup: config.leader_lost_tick_speedup.max(1),
            leader_lost_fast_ms: config.leader_lost_fast_ms,
        },
        paxos,
        db,
        state,
        senders,
        metrics,
        LoopChannels {
            proposals: proposals_rx,
            incoming: incoming_rx,
            leader: leader_tx,
            progress: progress_tx,
            updates: updates_tx,
        },
        progress,
    )?;
    let mut loop_task = tokio::spawn(paxos_loop.run(tasks.clone()));
    tracing::info!(replica = config.id, applied_index, "master replica serving");
    let mut server = server;
    // Whichever ends first stops the other: a replica whose Paxos loop died (OmniPaxos
    // panics on storage failures) must not keep serving stale reads.
    let result = tokio::select! {
        served = &mut server => {
            tasks.cancel();
            match loop_task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(%error, "Paxos loop stopped"),
                Err(error) => tracing::error!(%error, "Paxos loop task failed"),
            }
            match served {
                Ok(served) => served.map_err(MasterError::from),
                Err(join) => Err(MasterError::Config { reason: format!("gRPC server task failed: {join}") }),
            }
        }
        looped = &mut loop_task => {
            tasks.cancel();
            let _ = server.await;
            match looped {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(MasterError::Storage(error)),
                Err(join) => Err(MasterError::Paxos {
                    reason: format!("the Paxos loop stopped: {join}; restart the replica"),
                }),
            }
        }
    };
    tracing::info!(replica = config.id, "master replica stopped");
    result
}

/// What this replica sends to its peers: the cluster token when authentication is on (the
/// file exists by now: `Authenticator::load` created it if it was missing).
fn peer_token(config: &ReplicaConfig) -> Result<TokenInterceptor, MasterError> {
    let token = match &config.auth {
        Some(auth) => Some(read_token_file(&auth.cluster_token_file)?),
        None => None,
    };
    TokenInterceptor::new(token.as_deref()).map_err(|status| MasterError::Config {
        reason: format!("cluster token: {}", status.message()),
    })
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
        applied_index: state.applied_index(),
        applied_log_index: state.applied_log_index(),
        checkpoint_index: checkpoint.index,
        checkpoint_time_ms: checkpoint.time_ms,
        ..Progress::default()
    };
    tracing::info!(
        replica = config.id,
        index = checkpoint.index,
        "recovered the cell state from a checkpoint"
    );
    Ok((state, progress))
}
