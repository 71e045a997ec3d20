//! The scheduler process: follows the leader's cell-state stream into a `ViewSync`, runs
//! `schedule` when the view changed and tasks are pending, and commits the plans. One plan
//! is in flight at a time; its tasks stay out of new plans until the view shows the commit.

use crate::backlog::Backlog;
use crate::cache::ScoreCache;
use crate::commit::{commit_plan, CommitOutcome};
use crate::config::SchedulerConfig;
use crate::error::SchedulerError;
use crate::in_flight::InFlight;
use crate::metrics::SchedulerMetrics;
use crate::schedule::schedule_with_cache;
use crate::view_sync::ViewSync;
use borg_common::{now_ms, MasterClient, MasterClientConfig};
use borg_proto::v1;
use borg_proto::v1::scheduler_service_client::SchedulerServiceClient;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// Unplaced tasks logged per round (the rest are counted in a metric).
const UNPLACED_LOGGED_MAX: usize = 5;

/// Runs the scheduler until `shutdown` is cancelled.
pub async fn run(
    config: SchedulerConfig,
    shutdown: CancellationToken,
) -> Result<(), SchedulerError> {
    config.validate()?;
    let metrics = SchedulerMetrics::new()?;
    let metrics_shutdown = shutdown.child_token();
    if let Some(address) = config.metrics_address {
        let bound =
            borg_common::serve_metrics(address, metrics.registry.clone(), metrics_shutdown.clone())
                .await
                .map_err(|source| SchedulerError::MetricsServe { address, source })?;
        tracing::info!(%bound, "scheduler metrics listening");
    }
    let mut client_config = MasterClientConfig::new(config.masters.clone());
    client_config.call_deadline_ms = config.commit_deadline_ms;
    client_config.token = config.master_token.clone();
    let client = Arc::new(MasterClient::new(client_config).map_err(|_| SchedulerError::NoMasters)?);
    let mut scheduler = Scheduler::new(config, client, metrics);
    scheduler.run(&shutdown).await;
    metrics_shutdown.cancel();
    Ok(())
}

enum Event {
    Shutdown,
    Update(Result<Option<v1::CellUpdate>, Status>),
    Committed(Option<(CommitOutcome, Duration)>),
    Tick,
    /// A round left work for the next one (deferred or backlog retries) and no commit is
    /// being awaited: plan again once the stream's ready updates are applied.
    Replan,
}

struct Scheduler {
    config: SchedulerConfig,
    client: Arc<MasterClient>,
    metrics: SchedulerMetrics,
    sync: ViewSync,
    in_flight: InFlight,
    /// Pending tasks that fit nowhere when last tried, waiting for room.
    backlog: Backlog,
    /// When the whole backlog was last marked for retry.
    backlog_retried: Instant,
    commit: Option<JoinHandle<(CommitOutcome, Duration)>>,
    /// The view changed (or tasks were released) since the last round.
    dirty: bool,
    /// The last commit had rejections or failed: retry on the next tick even without a
    /// view change.
    retry_on_tick: bool,
    round: u64,
    /// Verdicts per (class, machine) kept across rounds until the machine or class changes.
    score_cache: ScoreCache,
}

impl Scheduler {
    fn new(config: SchedulerConfig, client: Arc<MasterClient>, metrics: SchedulerMetrics) -> Self {
        let score_cache = ScoreCache::new(config.placement.score_cache_entries_max);
        Scheduler {
            score_cache,
            config,
            client,
            metrics,
            sync: ViewSync::new(),
            in_flight: InFlight::new(),
            backlog: Backlog::new(),
            backlog_retried: Instant::now(),
            commit: None,
            dirty: false,
            retry_on_tick: false,
            round: 0,
        }
    }

    async fn run(&mut self, shutdown: &CancellationToken) {
        let mut backoff_ms = self.config.reconnect_backoff_initial_ms;
        while !shutdown.is_cancelled() {
            let opened = tokio::select! {
                _ = shutdown.cancelled() => break,
                opened = self.open_watch() => opened,
            };
            match opened {
                Ok(stream) => {
                    tracing::info!(leader = %self.client.current_endpoint(), "watching the cell");
                    if self.follow(stream, shutdown).await {
                        backoff_ms = self.config.reconnect_backoff_initial_ms;
                    }
                }
                Err(status) => {
                    tracing::warn!(error = %status.message(), "cannot open the cell-state stream");
                }
            }
            if shutdown.is_cancelled() {
                break;
            }
            self.metrics.watch_restarts.inc();
            self.sync.reset();
            self.backlog.clear();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
            }
            backoff_ms = backoff_ms
                .saturating_mul(2)
                .clamp(1, self.config.reconnect_backoff_max_ms.max(1));
        }
        // The master deduplicates by request id, so abandoning a commit is safe.
        if let Some(commit) = self.commit.take() {
            commit.abort();
        }
    }

    async fn open_watch(&self) -> Result<tonic::Streaming<v1::CellUpdate>, Status> {
        let request = v1::WatchCellRequest {
            scheduler_id: self.config.scheduler_id.clone(),
        };
        let message_bytes_max = self.config.watch_message_bytes_max;
        self.client
            .call(|channel| {
                let request = request.clone();
                async move {
                    SchedulerServiceClient::new(channel)
                        .max_decoding_message_size(message_bytes_max)
                        .watch_cell(request)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await
    }

    /// Follows one stream until it ends, fails or shutdown. Returns whether a snapshot was
    /// received (the connection was healthy, so back-off restarts from its initial value).
    async fn follow(
        &mut self,
        mut stream: tonic::Streaming<v1::CellUpdate>,
        shutdown: &CancellationToken,
    ) -> bool {
        // The replica the stream comes from. When a commit finds the leader elsewhere,
        // this stream is from a deposed leader that may never end on its own.
        let watched = self.client.current_endpoint();
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.retry_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => Event::Shutdown,
                update = stream.message() => Event::Update(update),
                done = async {
                    match self.commit.as_mut() {
                        Some(handle) => handle.await.ok(),
                        None => std::future::pending().await,
                    }
                }, if self.commit.is_some() => Event::Committed(done),
                _ = tick.tick() => Event::Tick,
                _ = std::future::ready(()), if self.dirty && self.commit.is_none() && self.sync.has_snapshot() => Event::Replan,
            };
            match event {
                Event::Shutdown => return self.sync.has_snapshot(),
                Event::Update(Ok(Some(update))) => {
                    if !self.apply(update) {
                        return self.sync.has_snapshot();
                    }
                    // Apply a burst of ready updates before planning once for all of them.
                    for _ in 1..self.config.updates_per_round_max {
                        match tokio::time::timeout(Duration::ZERO, stream.message()).await {
                            Ok(Ok(Some(update))) => {
                                if !self.apply(update) {
                                    return self.sync.has_snapshot();
                                }
                            }
                            Ok(Ok(None)) => {
                                tracing::info!("the cell-state stream ended; reconnecting");
                                return self.sync.has_snapshot();
                            }
                            Ok(Err(status)) => {
                                tracing::warn!(error = %status.message(), "the cell-state stream failed; reconnecting");
                                return self.sync.has_snapshot();
                            }
                            // Nothing more ready now.
                            Err(_) => break,
                        }
                    }
                }
                Event::Update(Ok(None)) => {
                    tracing::info!("the cell-state stream ended (leader change?); reconnecting");
                    return self.sync.has_snapshot();
                }
                Event::Update(Err(status)) => {
                    tracing::warn!(error = %status.message(), "the cell-state stream failed; reconnecting");
                    return self.sync.has_snapshot();
                }
                Event::Committed(done) => {
                    self.commit = None;
                    self.on_committed(done);
                }
                Event::Replan => {}
                Event::Tick => {
                    let leader = self.client.current_endpoint();
                    if leader != watched {
                        tracing::info!(%watched, %leader, "the leader moved; re-watching at the leader");
                        return self.sync.has_snapshot();
                    }
                    let released = self.in_flight.release_settled(
                        self.sync.view().index(),
                        now_ms(),
                        self.config.in_flight_timeout_ms,
                    );
                    if released > 0 || self.retry_on_tick {
                        self.retry_on_tick = false;
                        self.dirty = true;
                    }
                    let retry_interval =
                        Duration::from_millis(self.config.backlog_retry_interval_ms);
                    if self.backlog_retried.elapsed() >= retry_interval && !self.backlog.is_empty()
                    {
                        self.backlog_retried = Instant::now();
                        self.backlog.room_freed();
                        self.dirty = true;
                    }
                }
            }
            self.metrics
                .in_flight_tasks
                .set(self.in_flight.len() as i64);
            self.maybe_schedule();
        }
    }

    /// Applies one update; false when the stream must be restarted.
    fn apply(&mut self, update: v1::CellUpdate) -> bool {
        match self.sync.apply(update) {
            Ok(skipped) => {
                for error in &skipped {
                    tracing::warn!(%error, "skipping malformed item of the cell-state stream");
                }
                self.metrics.view_items_skipped.inc_by(skipped.len() as u64);
                let index = self.sync.view().index();
                self.metrics
                    .view_index
                    .set(i64::try_from(index).unwrap_or(i64::MAX));
                self.in_flight
                    .release_settled(index, now_ms(), self.config.in_flight_timeout_ms);
                self.dirty = true;
                true
            }
            Err(error) => {
                tracing::warn!(%error, "unusable cell update; restarting the watch");
                false
            }
        }
    }

    fn on_committed(&mut self, done: Option<(CommitOutcome, Duration)>) {
        let Some((outcome, elapsed)) = done else {
            // The commit task panicked or was aborted: its tasks may be planned again.
            tracing::warn!("a plan commit ended without an answer");
            self.in_flight = InFlight::new();
            self.retry_on_tick = true;
            return;
        };
        self.metrics
            .plan_commit_seconds
            .observe(elapsed.as_secs_f64());
        self.metrics
            .placements_accepted
            .inc_by(outcome.accepted.len() as u64);
        self.metrics
            .placements_rejected
            .inc_by(outcome.rejected.len() as u64);
        self.in_flight.accepted(&outcome.accepted, outcome.index);
        for (task, reason) in outcome.rejected.iter().take(UNPLACED_LOGGED_MAX) {
            tracing::debug!(%task, %reason, "placement rejected by the master");
        }
        self.in_flight
            .release(outcome.rejected.iter().map(|(task, _)| task));
        self.in_flight.release(&outcome.unanswered);
        if let Some(status) = &outcome.error {
            self.metrics.commit_failures.inc();
            tracing::warn!(error = %status.message(), tasks = outcome.unanswered.len(), "plan commit failed");
        }
        tracing::debug!(
            accepted = outcome.accepted.len(),
            rejected = outcome.rejected.len(),
            index = outcome.index,
            "plan committed"
        );
        if !outcome.rejected.is_empty() || outcome.error.is_some() {
            self.retry_on_tick = true;
            // The plan's rounds counted room these placements took: tasks they left
            // unplaced may fit after all.
            self.backlog.room_freed();
        }
        self.in_flight.release_settled(
            self.sync.view().index(),
            now_ms(),
            self.config.in_flight_timeout_ms,
        );
        // Tasks released now wait for the next view change or tick.
    }

    fn maybe_schedule(&mut self) {
        if !self.dirty || self.commit.is_some() || !self.sync.has_snapshot() {
            return;
        }
        self.dirty = false;
        if self.sync.take_room_freed() {
            self.backlog.room_freed();
        }
        let collect_started = Instant::now();
        let view = self.sync.view();
        let in_flight = &self.in_flight;
        let collected = self.backlog.collect(
            view,
            |id| in_flight.contains(id),
            self.config.backlog_retries_per_round_max,
        );
        self.metrics.pending_tasks.set(collected.pending as i64);
        let pending = collected.tasks;
        if pending.is_empty() {
            self.metrics.unplaced_tasks.set(self.backlog.len() as i64);
            return;
        }
        self.round = self.round.wrapping_add(1);
        let collect_elapsed = collect_started.elapsed();
        let started = Instant::now();
        let plan = schedule_with_cache(
            view,
            &pending,
            &self.config.placement,
            self.config.seed.wrapping_add(self.round),
            &mut self.score_cache,
        );
        self.metrics
            .schedule_seconds
            .observe(started.elapsed().as_secs_f64());
        for (task, reason) in plan.unplaced.iter().take(UNPLACED_LOGGED_MAX) {
            tracing::debug!(%task, %reason, "task stays pending");
        }
        let unplaced: std::collections::HashSet<&borg_model::TaskId> =
            plan.unplaced.iter().map(|(task, _)| task).collect();
        self.backlog
            .unplaced(pending.iter().filter(|t| unplaced.contains(&t.id)));
        self.metrics.unplaced_tasks.set(self.backlog.len() as i64);
        tracing::debug!(
            round = self.round,
            view_index = view.index(),
            placements = plan.placements.len(),
            unplaced = plan.unplaced.len(),
            deferred = plan.deferred,
            tasks = pending.len(),
            collect_ms = collect_elapsed.as_secs_f64() * 1e3,
            schedule_ms = started.elapsed().as_secs_f64() * 1e3,
            "planned"
        );
        if plan.deferred > 0 || self.backlog.stale_len() > 0 {
            // More pending or to retry than one round takes: plan again once this commit
            // is answered.
            self.dirty = true;
        }
        if plan.placements.is_empty() {
            return;
        }
        self.in_flight
            .start(plan.placements.iter().map(|p| &p.task), now_ms());
        let client = Arc::clone(&self.client);
        let scheduler_id = self.config.scheduler_id.clone();
        let batch_max = self.config.plan_batch_max;
        self.commit = Some(tokio::spawn(async move {
            let started = Instant::now();
            let outcome = commit_plan(&client, &scheduler_id, &plan.placements, batch_max).await;
            (outcome, started.elapsed())
        }));
    }
}
