//! The scheduler process: follows the leader's cell-state stream into a `ViewSync`, runs
//! `schedule` when the view changed and tasks are pending, and commits the plans. Up to
//! `commits_in_flight_max` plans are being committed at once: their tasks stay out of new
//! plans, and new plans stay off their machines, until the view shows the commit.

use crate::backlog::{bound_new_round, bound_replacements, Backlog, ROOM_ON_MACHINES_MAX};
use crate::cache::ScoreCache;
use crate::commit::{commit_plan, CommitOutcome};
use crate::config::SchedulerConfig;
use crate::error::SchedulerError;
use crate::in_flight::{Claims, InFlight};
use crate::metrics::SchedulerMetrics;
use crate::room::RoomFreed;
use crate::schedule::schedule_among_except;
use crate::view::PendingTask;
use crate::view_sync::ViewSync;
use borg_common::{now_ms, MasterClient, MasterClientConfig};
use borg_model::TaskId;
use borg_proto::v1;
use borg_proto::v1::scheduler_service_client::SchedulerServiceClient;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// Unplaced tasks logged per round (the rest are counted in a metric).
const UNPLACED_LOGGED_MAX: usize = 5;
/// Jobs of a round's new tasks named in its debug log.
const JOBS_LOGGED_MAX: usize = 3;
/// Room freed on at most this many machines is checked against the backlog's classes
/// machine by machine (`Backlog::room_freed_on`) and the tasks that fit there are retried
/// there; on more, every backlog task is retried anywhere.
const ROOM_FREED_MACHINES_CHECKED_MAX: usize = ROOM_ON_MACHINES_MAX;
/// Due backlog retries, and tasks placed before (victims), give way to rounds of tasks never
/// placed at most this long; then they join one, so that a steady stream of new jobs cannot
/// starve them.
const GIVE_WAY_MAX_MS: u64 = 1_000;
/// A burst of new tasks larger than `new_round_tasks_max` times this (a cold start, a large
/// job) is planned in rounds of a this-th of what waits: throughput where latency cannot be
/// had anyway, in a bounded number of rounds.
const ROUNDS_PER_BURST_MAX: usize = 8;
/// A bounded round of new tasks takes this many of each job's first tasks before the rest
/// in queue order (`backlog::bound_new_round`).
const JOB_HEAD_TASKS_PER_ROUND: usize = 2;
/// Most tasks remembered as held once (`Scheduler::held_before`); the memory is dropped
/// when full (a task may then be held once more).
const HELD_BEFORE_MAX: usize = 10_000;

/// Work that gives way to rounds of other work for at most `GIVE_WAY_MAX_MS`, so that a
/// steady stream of the other cannot starve it.
#[derive(Debug, Default)]
struct GiveWay {
    /// Since when it has given way (`None`: it is not waiting).
    since: Option<Instant>,
}

impl GiveWay {
    /// Whether the work waits this round: when `contended` (it and the other both wait),
    /// unless it has given way for `GIVE_WAY_MAX_MS` already.
    fn waits(&mut self, contended: bool, now: Instant) -> bool {
        let starved = self
            .since
            .is_some_and(|since| now - since >= Duration::from_millis(GIVE_WAY_MAX_MS));
        let waits = contended && !starved;
        self.since = if waits {
            self.since.or(Some(now))
        } else {
            None
        };
        waits
    }
}

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
    Committed(Option<Committed>),
    Tick,
    /// A round may be due: backlog retries may run again (`backlog_round_interval_ms`
    /// passed).
    Wakeup,
    /// A round left work for the next one (deferred or backlog retries) and another plan
    /// may be committed: plan again once the stream's ready updates are applied.
    Replan,
}

/// A round's commit, answered: the round, the master's answer, how long it took.
type Committed = (u64, CommitOutcome, Duration);

struct Scheduler {
    config: SchedulerConfig,
    client: Arc<MasterClient>,
    metrics: SchedulerMetrics,
    sync: ViewSync,
    in_flight: InFlight,
    /// Machines of the plans being committed, until the view shows them.
    claims: Claims,
    /// Claimed machines a round left alone while it left tasks unplaced: once released,
    /// room counts as freed there (`room_reappeared`), so the backlog retries those tasks
    /// on them (a small cell may have had no other machine).
    claimed_while_unplaced: BTreeSet<String>,
    room_reappeared: RoomFreed,
    /// Tasks never placed that a round left unplaced while it left claimed machines alone
    /// (a job's later pieces: its earlier ones went there), each with the newest claimed
    /// round then: planned again as new work once those claims settled
    /// (the machines left alone may have room), not parked in the backlog. A task is held
    /// once (`held_before`); unplaced again, it goes to the backlog.
    held: HashMap<TaskId, u64>,
    held_before: HashSet<TaskId>,
    /// Pending tasks that fit nowhere when last tried, waiting for room.
    backlog: Backlog,
    /// When the whole backlog was last marked for retry.
    backlog_retried: Instant,
    /// Backlog retries may not start a round before this (pacing).
    retries_due_at: Instant,
    /// Due retries give way to rounds of new tasks.
    retries_give_way: GiveWay,
    /// Re-pended tasks (victims) give way to rounds of tasks never placed.
    replacements_give_way: GiveWay,
    /// Wake up to plan when retries wait only for `retries_due_at`.
    wakeup: Option<tokio::time::Instant>,
    /// Jobs with tasks never placed that waited at the last round: a round in which no
    /// other job waits continues them in larger rounds (`continued_round_tasks_max`).
    continuing: HashSet<String>,
    /// When the first update not yet planned from arrived, and time spent applying updates
    /// since the last round (a round's wait, for the debug log and metrics).
    unplanned_since: Option<Instant>,
    applied_for: Duration,
    /// The plans being committed (at most `commits_in_flight_max`).
    commits: JoinSet<Committed>,
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
            claims: Claims::new(),
            claimed_while_unplaced: BTreeSet::new(),
            room_reappeared: RoomFreed::Nowhere,
            held: HashMap::new(),
            held_before: HashSet::new(),
            backlog: Backlog::new(),
            backlog_retried: Instant::now(),
            retries_due_at: Instant::now(),
            retries_give_way: GiveWay::default(),
            replacements_give_way: GiveWay::default(),
            wakeup: None,
            continuing: HashSet::new(),
            unplanned_since: None,
            applied_for: Duration::ZERO,
            commits: JoinSet::new(),
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
            // The backlog is kept: its entries name task incarnations, and the snapshot that
            // follows marks them all for retry (room anywhere), behind new tasks.
            self.sync.reset();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
            }
            backoff_ms = backoff_ms
                .saturating_mul(2)
                .clamp(1, self.config.reconnect_backoff_max_ms.max(1));
        }
        // The master deduplicates by request id, so abandoning a commit is safe.
        self.commits.abort_all();
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
            let wakeup = self.wakeup;
            let can_plan = self.dirty && self.may_commit() && self.sync.has_snapshot();
            // Biased: updates (new work) are taken before a round is planned, so a job whose
            // update arrives while a round runs is planned in the next one.
            // Updates before commit answers: while rounds run back to back (a commit answered
            // during each), the stream must still be read between them.
            let event = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Event::Shutdown,
                _ = tick.tick() => Event::Tick,
                update = stream.message() => Event::Update(update),
                done = self.commits.join_next(), if !self.commits.is_empty() => {
                    Event::Committed(done.and_then(Result::ok))
                }
                _ = async {
                    match wakeup {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                }, if wakeup.is_some() => Event::Wakeup,
                _ = std::future::ready(()), if can_plan => Event::Replan,
            };
            // A round is planned once the ready updates are applied: after a burst of
            // them, or when nothing else is ready (`Replan`, lowest in the select).
            let plans = matches!(event, Event::Update(Ok(Some(_))) | Event::Replan);
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
                Event::Committed(done) => self.on_committed(done),
                // Planned below.
                Event::Replan => {}
                Event::Wakeup => {
                    self.wakeup = None;
                    self.dirty = true;
                }
                Event::Tick => {
                    let leader = self.client.current_endpoint();
                    if leader != watched {
                        tracing::info!(%watched, %leader, "the leader moved; re-watching at the leader");
                        return self.sync.has_snapshot();
                    }
                    let released = self.release_settled();
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
            if plans {
                self.maybe_schedule();
            }
        }
    }

    /// Applies one update; false when the stream must be restarted.
    fn apply(&mut self, update: v1::CellUpdate) -> bool {
        let started = Instant::now();
        self.unplanned_since.get_or_insert(started);
        let applied = self.sync.apply(update);
        let elapsed = started.elapsed();
        self.applied_for += elapsed;
        self.metrics
            .update_apply_seconds
            .observe(elapsed.as_secs_f64());
        match applied {
            Ok(skipped) => {
                for error in &skipped {
                    tracing::warn!(%error, "skipping malformed item of the cell-state stream");
                }
                self.metrics.view_items_skipped.inc_by(skipped.len() as u64);
                let index = self.sync.view().index();
                self.metrics
                    .view_index
                    .set(i64::try_from(index).unwrap_or(i64::MAX));
                self.release_settled();
                self.dirty = true;
                true
            }
            Err(error) => {
                tracing::warn!(%error, "unusable cell update; restarting the watch");
                false
            }
        }
    }

    /// Drops the in-flight tasks and machine claims the view has caught up with (or that
    /// expired); returns how many tasks were released.
    fn release_settled(&mut self) -> usize {
        let (index, now_ms) = (self.sync.view().index(), now_ms());
        let timeout_ms = self.config.in_flight_timeout_ms;
        let released = self.claims.release_settled(index, now_ms, timeout_ms);
        self.room_reappeared_on(released);
        if !self.held.is_empty() {
            let oldest = self.claims.oldest_round();
            let before = self.held.len();
            self.held
                .retain(|_, newest| oldest.is_some_and(|oldest| oldest <= *newest));
            if self.held.len() < before {
                self.dirty = true;
            }
        }
        if self.claims.is_empty() || self.held_before.len() > HELD_BEFORE_MAX {
            self.held_before.clear();
        }
        self.in_flight.release_settled(index, now_ms, timeout_ms)
    }

    /// `machines` are no longer claimed: room counts as freed on those a round left alone
    /// while leaving tasks unplaced.
    fn room_reappeared_on(&mut self, machines: BTreeSet<String>) {
        if self.claimed_while_unplaced.is_empty() {
            return;
        }
        let reappeared: BTreeSet<String> = machines
            .into_iter()
            .filter(|m| self.claimed_while_unplaced.remove(m))
            .collect();
        if !reappeared.is_empty() {
            self.room_reappeared.merge(RoomFreed::On(reappeared));
            self.dirty = true;
        }
    }

    /// Whether another plan may be sent now.
    fn may_commit(&self) -> bool {
        self.commits.len() < self.config.commits_in_flight_max
    }

    fn on_committed(&mut self, done: Option<Committed>) {
        let Some((round, outcome, elapsed)) = done else {
            // A commit task panicked or was aborted: its tasks may be planned again (the
            // master rejects a placement of a task another plan placed meanwhile).
            tracing::warn!("a plan commit ended without an answer");
            self.in_flight = InFlight::new();
            self.claims.clear();
            let left_alone = std::mem::take(&mut self.claimed_while_unplaced);
            if !left_alone.is_empty() {
                self.room_reappeared.merge(RoomFreed::On(left_alone));
                self.dirty = true;
            }
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
        // Nothing accepted: nothing changed on the plan's machines.
        self.claims.answered(
            round,
            (!outcome.accepted.is_empty()).then_some(outcome.index),
        );
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
            round,
            accepted = outcome.accepted.len(),
            rejected = outcome.rejected.len(),
            index = outcome.index,
            commit_ms = elapsed.as_secs_f64() * 1e3,
            "plan committed"
        );
        if !outcome.rejected.is_empty() || outcome.error.is_some() {
            self.retry_on_tick = true;
            // The plan's rounds counted room these placements took: tasks they left
            // unplaced may fit after all.
            self.backlog.room_freed();
        }
        self.release_settled();
        // Tasks released now wait for the next view change or tick.
    }

    /// Marks for retry the backlog tasks that room freed since the last round may fit.
    fn note_room_freed(&mut self) {
        let started = Instant::now();
        let mut room = self.sync.take_room_freed();
        room.merge(std::mem::take(&mut self.room_reappeared));
        let (machines, marked) = match room {
            RoomFreed::Nowhere => return,
            RoomFreed::On(machines) if machines.len() <= ROOM_FREED_MACHINES_CHECKED_MAX => {
                let view = self.sync.view();
                let marked = self
                    .backlog
                    .room_freed_on(view, machines.iter().map(String::as_str));
                (machines.len(), marked)
            }
            RoomFreed::On(_) | RoomFreed::Everywhere => (usize::MAX, self.backlog.room_freed()),
        };
        tracing::debug!(
            machines = (machines != usize::MAX).then_some(machines),
            marked,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "room freed: backlog tasks marked for retry"
        );
    }

    fn maybe_schedule(&mut self) {
        if !self.dirty || !self.may_commit() || !self.sync.has_snapshot() {
            return;
        }
        self.dirty = false;
        self.note_room_freed();
        let collect_started = Instant::now();
        let retries_due = collect_started >= self.retries_due_at;
        let view = self.sync.view();
        let (in_flight, held) = (&self.in_flight, &self.held);
        let collected = self.backlog.collect(
            view,
            |id| in_flight.contains(id) || held.contains_key(id),
            if retries_due {
                self.config.backlog_retries_per_round_max
            } else {
                0
            },
        );
        self.metrics.pending_tasks.set(collected.pending as i64);
        self.metrics.unplaced_tasks.set(self.backlog.len() as i64);
        // New tasks go first, alone: a new job's round costs its own tasks, not retries.
        // Retries have rounds of their own, at most one per `backlog_round_interval_ms`,
        // and join a round of new tasks only once they gave way for
        // `GIVE_WAY_MAX_MS`. Likewise tasks never placed (new jobs) go before tasks placed
        // before (victims, who may preempt in turn, and who fit nowhere cost a whole scan
        // each: 1-4 ms a task), which have rounds of their own, bounded.
        let fresh = collected.new.iter().filter(|t| t.incarnation == 0).count();
        let replaced = collected.new.len() - fresh;
        let replacements_wait = self
            .replacements_give_way
            .waits(fresh > 0 && replaced > 0, collect_started);
        let (pending, replacements_left) = bound_replacements(
            collected.new,
            if replacements_wait {
                0
            } else {
                self.config.replacements_per_round_max
            },
        );
        // A round with a job that arrived since the last round, beside other jobs, plans
        // at most `new_round_tasks_max` new tasks (each job's first ones first), so every
        // job's first placements come soon; a job waiting alone, and jobs that have all had
        // their turn, go in larger rounds (fewer calls and commits for a job's whole plan:
        // a job's first round costs the most, its class's first scan). Either way at least
        // a share of a larger burst.
        let waiting: HashSet<String> = pending
            .iter()
            .filter(|t| t.incarnation == 0)
            .map(|t| t.id.job.clone())
            .collect();
        let arrived = waiting.iter().any(|job| !self.continuing.contains(job));
        let base_tasks_max = if arrived && waiting.len() > 1 {
            self.config.new_round_tasks_max
        } else {
            self.config.continued_round_tasks_max
        };
        self.continuing = waiting;
        let round_tasks_max = base_tasks_max
            .max(pending.len().div_ceil(ROUNDS_PER_BURST_MAX))
            .min(self.config.placement.tasks_max);
        let (mut pending, new_left) =
            bound_new_round(pending, round_tasks_max, JOB_HEAD_TASKS_PER_ROUND);
        let held_back = replacements_left + new_left;
        if held_back > 0 {
            // The rest in the next round, once this round's commit shows in the view.
            self.dirty = true;
        }
        let new = pending.len();
        let has_retries = !collected.retries.is_empty();
        let with_retries = has_retries
            && !self
                .retries_give_way
                .waits(has_retries && new > 0, collect_started);
        let mut retries = 0;
        // Targeted retries examine only the machines with freed room, in a round of their
        // own; joined to new tasks they are tried anywhere.
        let among = collected.among.filter(|_| with_retries && new == 0);
        if with_retries {
            retries = collected.retries.len();
            pending.extend(collected.retries);
            self.retries_due_at =
                collect_started + Duration::from_millis(self.config.backlog_round_interval_ms);
            self.metrics.backlog_retry_rounds.inc();
        }
        if has_retries && !with_retries {
            // Plan them once this round's commit is answered.
            self.dirty = true;
        } else if collected.stale > retries {
            self.wakeup = Some(tokio::time::Instant::from_std(
                self.retries_due_at.max(collect_started),
            ));
        }
        let waited = self.unplanned_since.take().map(|at| collect_started - at);
        let applied_for = std::mem::take(&mut self.applied_for);
        if pending.is_empty() {
            return;
        }
        if new > 0 {
            if let Some(waited) = waited {
                self.metrics
                    .round_wait_seconds
                    .observe(waited.as_secs_f64());
            }
        }
        self.round = self.round.wrapping_add(1);
        let collect_elapsed = collect_started.elapsed();
        self.metrics
            .collect_seconds
            .observe(collect_elapsed.as_secs_f64());
        // Machines of plans being committed are left alone: the view does not show them.
        let except = self.claims.machines();
        let started = Instant::now();
        let plan = schedule_among_except(
            view,
            &pending,
            &self.config.placement,
            self.config.seed.wrapping_add(self.round),
            &mut self.score_cache,
            among.as_deref(),
            &except,
        );
        self.metrics
            .schedule_seconds
            .observe(started.elapsed().as_secs_f64());
        for (task, reason) in plan.unplaced.iter().take(UNPLACED_LOGGED_MAX) {
            tracing::debug!(%task, %reason, "task stays pending");
        }
        let mut unplaced: HashSet<&TaskId> = plan.unplaced.iter().map(|(task, _)| task).collect();
        if let Some(newest) = self.claims.newest_round().filter(|_| !unplaced.is_empty()) {
            // Tasks never placed (new jobs; not retries, not victims) unplaced beside plans
            // being committed: held, once.
            for task in pending[..new].iter().filter(|t| t.incarnation == 0) {
                if unplaced.contains(&task.id) && self.held_before.insert(task.id.clone()) {
                    self.held.insert(task.id.clone(), newest);
                    unplaced.remove(&task.id);
                }
            }
            if !unplaced.is_empty() {
                self.claimed_while_unplaced.extend(except.iter().cloned());
            }
        }
        self.backlog
            .unplaced(view, pending.iter().filter(|t| unplaced.contains(&t.id)));
        self.metrics.unplaced_tasks.set(self.backlog.len() as i64);
        if tracing::enabled!(tracing::Level::DEBUG) {
            // Jobs never placed first: the ones a round's wait matters to.
            let (fresh, placed_before): (Vec<&PendingTask>, Vec<&PendingTask>) =
                pending[..new].iter().partition(|t| t.incarnation == 0);
            let mut jobs: Vec<&str> = fresh
                .iter()
                .chain(&placed_before)
                .map(|t| t.id.job.as_str())
                .collect();
            jobs.dedup();
            jobs.truncate(JOBS_LOGGED_MAX);
            tracing::debug!(
                round = self.round,
                view_index = view.index(),
                new,
                retries,
                among = among.as_ref().map(Vec::len),
                except = except.len(),
                commits = self.commits.len(),
                placements = plan.placements.len(),
                unplaced = plan.unplaced.len(),
                deferred = plan.deferred,
                held_back,
                waited_ms = waited.map(|w| w.as_secs_f64() * 1e3),
                apply_ms = applied_for.as_secs_f64() * 1e3,
                collect_ms = collect_elapsed.as_secs_f64() * 1e3,
                schedule_ms = started.elapsed().as_secs_f64() * 1e3,
                jobs = ?jobs,
                "planned"
            );
        }
        if plan.deferred > 0 {
            // More pending than one round takes: plan again (while this commit runs).
            self.dirty = true;
        }
        if plan.placements.is_empty() {
            return;
        }
        let round = self.round;
        self.in_flight
            .start(plan.placements.iter().map(|p| &p.task), now_ms());
        self.claims.start(
            round,
            plan.placements.iter().map(|p| p.machine.clone()).collect(),
            now_ms(),
        );
        let client = Arc::clone(&self.client);
        let scheduler_id = self.config.scheduler_id.clone();
        let batch_max = self.config.plan_batch_max;
        self.commits.spawn(async move {
            let started = Instant::now();
            let outcome = commit_plan(&client, &scheduler_id, &plan.placements, batch_max).await;
            (round, outcome, started.elapsed())
        });
    }
}
