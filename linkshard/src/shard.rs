//! One link shard's rounds: assignment from the master, concurrent polls, diffs, forwards.

use crate::assignments::HeldAssignments;
use crate::borglets::{poll, BorgletPool, PollFailure};
use crate::config::LinkShardConfig;
use crate::diff::{MachineRecord, Observation};
use crate::keyed::{self, SentTasks};
use crate::metrics::{
    Metrics, POLL_OUTCOME_ERROR, POLL_OUTCOME_OK, POLL_OUTCOME_TIMEOUT, POLL_OUTCOME_WRONG_MACHINE,
};
use borg_common::master_client::TokenInterceptor;
use borg_common::MasterClient;
use borg_proto::v1::link_service_client::LinkServiceClient;
use borg_proto::v1::{
    ForwardDiffsRequest, GetAssignmentRequest, MachineAssignment, MachineDiff, PollResponse,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tonic::Status;

/// What one round did, for logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundSummary {
    pub machines: usize,
    pub polls_failed: usize,
    pub diffs_forwarded: usize,
    pub diffs_unforwarded: usize,
    /// Tasks the borglets accepted but have not started yet (reported `SCHEDULED`).
    pub tasks_starting: usize,
}

impl RoundSummary {
    /// Work is flowing: task states changed, or tasks are still being started (their
    /// starts are news soon); the next round comes at the busy pace.
    pub fn found_work(&self) -> bool {
        self.diffs_forwarded > 0 || self.tasks_starting > 0
    }
}

/// A round that could not even learn the shard's machines.
#[derive(Debug, thiserror::Error)]
#[error("cannot get the assignment of shard {shard_index}/{shard_count} from the master: {code:?}: {message}")]
pub struct AssignmentError {
    pub shard_index: u32,
    pub shard_count: u32,
    pub code: tonic::Code,
    pub message: String,
}

type PollOutcome = (String, Result<PollResponse, PollFailure>, Duration);

pub struct Shard {
    config: LinkShardConfig,
    master: MasterClient,
    borglets: BorgletPool,
    /// What the master was last told, per machine of the shard.
    records: HashMap<String, MachineRecord>,
    /// The machines' desired sets as of the last assignment (the master sends differences).
    assignments: HeldAssignments,
    /// Per borglet that takes keyed polls, the tasks of its last answered poll.
    sent: HashMap<String, SentTasks>,
    metrics: Metrics,
}

impl Shard {
    /// `borglet_token` authenticates the polls (the cluster token; see `LinkShardConfig`).
    pub fn new(
        config: LinkShardConfig,
        master: MasterClient,
        borglet_token: TokenInterceptor,
        metrics: Metrics,
    ) -> Shard {
        let poll_timeout = Duration::from_millis(config.poll_timeout_ms);
        Shard {
            config,
            master,
            borglets: BorgletPool::new(poll_timeout, borglet_token),
            records: HashMap::new(),
            assignments: HeldAssignments::default(),
            sent: HashMap::new(),
            metrics,
        }
    }

    pub async fn round(&mut self) -> Result<RoundSummary, AssignmentError> {
        let started = Instant::now();
        let result = self.round_inner().await;
        self.metrics
            .round_duration_seconds
            .observe(started.elapsed().as_secs_f64());
        result
    }

    async fn round_inner(&mut self) -> Result<RoundSummary, AssignmentError> {
        let master_index = self.assignment(0).await?;
        // Taken out for the round so that polls may borrow `self` mutably; put back below.
        let held = std::mem::take(&mut self.assignments);
        let summary = self.round_with(held.machines(), master_index).await;
        self.assignments = held;
        Ok(summary)
    }

    async fn round_with(
        &mut self,
        machines: &BTreeMap<String, Arc<MachineAssignment>>,
        master_index: u64,
    ) -> RoundSummary {
        let names: BTreeSet<String> = machines.keys().cloned().collect();
        self.borglets.retain(&names);
        self.records.retain(|machine, _| names.contains(machine));
        self.sent.retain(|machine, _| names.contains(machine));
        self.metrics
            .machines_in_shard
            .set(i64::try_from(machines.len()).unwrap_or(i64::MAX));

        let outcomes = self.poll_all(machines, master_index).await;
        let mut summary = RoundSummary {
            machines: machines.len(),
            ..RoundSummary::default()
        };
        let mut to_forward: Vec<(String, Observation)> = Vec::new();
        for (machine, outcome, latency) in outcomes {
            self.metrics
                .poll_latency_seconds
                .observe(latency.as_secs_f64());
            match &outcome {
                Ok(response) => self.remember_sent(&machine, machines.get(&machine), response),
                // Unknown whether the borglet took the poll: the next one is full.
                Err(_) => {
                    self.sent.remove(&machine);
                }
            }
            let record = self.records.entry(machine.clone()).or_default();
            let observation = match outcome {
                Ok(response) => {
                    self.metrics
                        .polls
                        .with_label_values(&[POLL_OUTCOME_OK])
                        .inc();
                    let desired = machines
                        .get(&machine)
                        .map(|a| a.desired.as_slice())
                        .unwrap_or_default();
                    if record.is_unreachable_forwarded() {
                        tracing::info!(shard = %self.config.shard_id, %machine, "unreachable machine answers again");
                    }
                    let observation = if response.incremental {
                        self.metrics.incremental_reports.inc();
                        std::mem::take(record).observe_changes(&machine, &response)
                    } else {
                        record.observe_report(&machine, desired, &response)
                    };
                    summary.tasks_starting += observation.next.tasks_starting();
                    observation
                }
                Err(failure) => {
                    summary.polls_failed += 1;
                    self.metrics
                        .polls
                        .with_label_values(&[outcome_label(&failure)])
                        .inc();
                    tracing::debug!(shard = %self.config.shard_id, %machine, failed_polls = record.failed_polls() + 1, %failure, "poll failed");
                    record.observe_failure(&machine, self.config.unreachable_polls_max)
                }
            };
            if observation.diff.is_some() {
                to_forward.push((machine, observation));
            } else {
                *record = observation.next;
            }
        }

        // After one refused batch the rest wait for the next round rather than each spend
        // the master client's whole call deadline.
        let mut master_refused = false;
        while !to_forward.is_empty() {
            let take = to_forward.len().min(self.config.forward_batch_machines_max);
            let batch: Vec<(String, Observation)> = to_forward.drain(..take).collect();
            let forwarded = !master_refused && self.forward(&batch).await;
            master_refused |= !forwarded;
            for (machine, observation) in batch {
                let record = self.records.entry(machine).or_default();
                if forwarded {
                    *record = observation.next;
                } else {
                    *record = std::mem::take(record).unforwarded(&observation.next);
                }
            }
            if forwarded {
                summary.diffs_forwarded += take;
            } else {
                summary.diffs_unforwarded += take;
            }
        }
        summary
    }

    /// Waits (at most `wait`) until the master has placed or removed tasks on the shard's
    /// machines, or changed its machines, and brings `assignments` up to date; true when the
    /// assignment changed. A master that does not wait answers at once (false if unchanged).
    pub async fn wait_for_assignment_change(
        &mut self,
        wait: Duration,
    ) -> Result<bool, AssignmentError> {
        let before: Vec<(String, u64)> = self
            .assignments
            .versions()
            .into_iter()
            .map(|(machine, version)| (machine.to_owned(), version))
            .collect();
        let wait_ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX).max(1);
        self.assignment(wait_ms).await?;
        let after = self.assignments.versions();
        Ok(after.len() != before.len()
            || after
                .iter()
                .zip(&before)
                .any(|((m, v), (m0, v0))| m != m0 || v != v0))
    }

    /// Brings `assignments` up to date with the master (which sends only what changed since
    /// the sets the shard holds); returns the master's log index they were read at. With
    /// `wait_ms`, the master may hold the answer until the assignment changes.
    async fn assignment(&mut self, wait_ms: u32) -> Result<u64, AssignmentError> {
        let request = GetAssignmentRequest {
            wait_ms,
            shard_index: self.config.shard_index,
            shard_count: self.config.shard_count,
            known: if self.config.send_held_sets {
                self.assignments.known()
            } else {
                Vec::new()
            },
        };
        let response = self
            .master
            .call(|channel| {
                let request = request.clone();
                async move {
                    LinkServiceClient::new(channel)
                        .get_assignment(request)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await
            .map_err(|status| {
                self.metrics
                    .master_errors
                    .with_label_values(&["get_assignment"])
                    .inc();
                AssignmentError {
                    shard_index: self.config.shard_index,
                    shard_count: self.config.shard_count,
                    code: status.code(),
                    message: status.message().to_owned(),
                }
            })?;
        self.assignments.apply(response.machines);
        Ok(response.index)
    }

    /// Polls every machine, at most `poll_concurrency_max` at once.
    async fn poll_all(
        &mut self,
        machines: &BTreeMap<String, Arc<MachineAssignment>>,
        master_index: u64,
    ) -> Vec<PollOutcome> {
        let timeout = Duration::from_millis(self.config.poll_timeout_ms);
        let mut in_flight: JoinSet<PollOutcome> = JoinSet::new();
        let mut outcomes = Vec::with_capacity(machines.len());
        for (machine, assignment) in machines {
            while in_flight.len() >= self.config.poll_concurrency_max {
                collect_one(&mut in_flight, &mut outcomes).await;
            }
            let channel = match self.borglets.channel(machine, &assignment.address) {
                Ok(channel) => channel,
                Err(failure) => {
                    outcomes.push((machine.clone(), Err(failure), Duration::ZERO));
                    continue;
                }
            };
            let mut request = keyed::poll_request(assignment, self.sent.get(machine), master_index);
            let (report_epoch, reports_since) = self
                .records
                .get(machine)
                .map_or((0, 0), MachineRecord::reports_since);
            request.report_epoch = report_epoch;
            request.reports_since = reports_since;
            let machine = machine.clone();
            let assignment = Arc::clone(assignment);
            in_flight.spawn(async move {
                let started = Instant::now();
                let mut result = poll(channel.clone(), request, timeout).await;
                if result.as_ref().is_ok_and(|r| !r.unknown.is_empty()) {
                    // The borglet lacks some assignments (it restarted, say): the whole set.
                    let mut full = keyed::full_poll_request(&assignment, master_index);
                    full.report_epoch = report_epoch;
                    full.reports_since = reports_since;
                    result = poll(channel, full, timeout).await;
                }
                (machine, result, started.elapsed())
            });
        }
        while !in_flight.is_empty() {
            collect_one(&mut in_flight, &mut outcomes).await;
        }
        outcomes
    }

    /// After an answered poll: what the borglet holds now, if it takes keyed polls.
    fn remember_sent(
        &mut self,
        machine: &str,
        assignment: Option<&Arc<MachineAssignment>>,
        response: &PollResponse,
    ) {
        match assignment {
            Some(assignment) if response.keyed_polls && self.config.send_held_sets => {
                let current = self.sent.get(machine).is_some_and(|s| s.is_of(assignment));
                if !current {
                    self.sent
                        .insert(machine.to_owned(), SentTasks::of(assignment));
                }
            }
            _ => {
                self.sent.remove(machine);
            }
        }
    }

    /// Sends one batch of diffs; true when the master took it.
    async fn forward(&mut self, batch: &[(String, Observation)]) -> bool {
        let diffs: Vec<MachineDiff> = batch
            .iter()
            .filter_map(|(_, observation)| observation.diff.clone())
            .collect();
        let request = ForwardDiffsRequest {
            shard_id: self.config.shard_id.clone(),
            request_id: borg_common::new_request_id(&self.config.shard_id),
            diffs,
        };
        let result: Result<_, Status> = self
            .master
            .call(|channel| {
                let request = request.clone();
                async move { LinkServiceClient::new(channel).forward_diffs(request).await }
            })
            .await;
        match result {
            Ok(_) => {
                let tasks: usize = request.diffs.iter().map(|d| d.changed.len()).sum();
                self.metrics
                    .diffs_forwarded
                    .inc_by(u64::try_from(request.diffs.len()).unwrap_or(u64::MAX));
                self.metrics
                    .tasks_changed
                    .inc_by(u64::try_from(tasks).unwrap_or(u64::MAX));
                for diff in request.diffs.iter().filter(|d| d.unreachable) {
                    self.metrics.machines_unreachable_forwarded.inc();
                    tracing::info!(shard = %self.config.shard_id, machine = %diff.machine, failed_polls = diff.unreachable_polls, "forwarded machine as unreachable");
                }
                tracing::debug!(shard = %self.config.shard_id, diffs = request.diffs.len(), tasks, "forwarded diffs");
                true
            }
            Err(status) => {
                self.metrics
                    .master_errors
                    .with_label_values(&["forward_diffs"])
                    .inc();
                tracing::warn!(shard = %self.config.shard_id, diffs = request.diffs.len(), code = ?status.code(), error = %status.message(), "forwarding diffs failed; they are sent again next round");
                false
            }
        }
    }
}

async fn collect_one(in_flight: &mut JoinSet<PollOutcome>, outcomes: &mut Vec<PollOutcome>) {
    match in_flight.join_next().await {
        Some(Ok(outcome)) => outcomes.push(outcome),
        // A poll task that panicked: that machine is simply not observed this round.
        Some(Err(error)) => tracing::error!(%error, "poll task failed"),
        None => {}
    }
}

fn outcome_label(failure: &PollFailure) -> &'static str {
    match failure {
        PollFailure::Timeout { .. } => POLL_OUTCOME_TIMEOUT,
        PollFailure::WrongMachine { .. } => POLL_OUTCOME_WRONG_MACHINE,
        PollFailure::BadAddress { .. } | PollFailure::Rpc { .. } => POLL_OUTCOME_ERROR,
    }
}
