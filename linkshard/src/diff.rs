//! The pure differ: what changed on one machine since the master was last told.
//!
//! A [`MachineRecord`] is what the master was last told about one machine. Given the outcome
//! of a poll it yields the [`MachineDiff`] to forward (if anything changed) and the record to
//! keep once that diff has reached the master. No I/O, no clock: the loop owns both.
//!
//! Rules (docs/lifecycle.md, "Link shard diffs"):
//! - a task is identified by `(job, index, incarnation)`; it is forwarded when it is new or its
//!   `(state, exit_code, restarts, pid)` changed, when its usage moved notably, and every
//!   `USAGE_REFRESH_POLLS` polls while it runs (the master decays reservations from usage
//!   reports, so a steady task must still be heard from);
//! - a task that vanished from the report while still in the desired set is forwarded as
//!   `KILLED` with a message (the borglet lost it); one that left the desired set is dropped
//!   silently (the borglet reported it `KILLED` once and forgot it);
//! - the first report of a machine (after a start of the link shard, or after the machine was
//!   forwarded unreachable) is forwarded in full, even when it holds no task, so the master
//!   learns the machine answers;
//! - after `unreachable_polls_max` failed polls in a row the machine is forwarded once as
//!   unreachable.
//!
//! Incremental reports: a borglet that numbers its report changes (`report_epoch`) is asked
//! only for what changed since the report last forwarded ([`MachineRecord::reports_since`]),
//! and the answer is folded into the record ([`MachineRecord::observe_changes`]). A full
//! report is asked for when the record is fresh, and every `USAGE_REFRESH_POLLS` polls.

use borg_proto::v1::{AssignedTask, MachineDiff, PollResponse, Resources, TaskReport, TaskState};
use std::collections::{BTreeMap, BTreeSet};

/// Machine usage is forwarded again when a dimension moved by more than this share of the
/// last forwarded value (and by more than the noise floor below).
pub const USAGE_CHANGE_NOTABLE_PERCENT: u64 = 10;
/// CPU usage changes smaller than this are noise, whatever their share.
pub const USAGE_CPU_NOISE_MILLIS: u64 = 50;
/// RAM and disk usage changes smaller than this are noise, whatever their share.
pub const USAGE_BYTES_NOISE: u64 = 16 << 20;

/// Every this many successful polls of a machine, its running tasks are forwarded with their
/// usage even if nothing changed: about 30 s at the default 1 s poll interval, so a steady
/// task's reservation keeps decaying (the master's decay step is 10 s).
pub const USAGE_REFRESH_POLLS: u32 = 30;

/// Message of a synthesised `KILLED` report for a task the borglet stopped reporting.
pub const VANISHED_MESSAGE: &str =
    "task vanished from its borglet's report while still desired on the machine";

/// Identity of a task on a machine: reports of other incarnations are different tasks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskKey {
    pub job: String,
    pub index: u32,
    pub incarnation: u64,
}

impl TaskKey {
    pub fn of_report(report: &TaskReport) -> TaskKey {
        TaskKey {
            job: report.job.clone(),
            index: report.index,
            incarnation: report.incarnation,
        }
    }

    pub fn of_assigned(task: &AssignedTask) -> TaskKey {
        TaskKey {
            job: task.job.clone(),
            index: task.index,
            incarnation: task.incarnation,
        }
    }
}

/// The parts of a report whose change is worth telling the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    state: i32,
    exit_code: Option<i32>,
    restarts: u32,
    pid: u32,
}

impl Fingerprint {
    fn of(report: &TaskReport) -> Fingerprint {
        Fingerprint {
            state: report.state,
            exit_code: report.exit_code,
            restarts: report.restarts,
            pid: report.pid,
        }
    }
}

/// What the master was last told about one machine (all of it rebuildable: a fresh record
/// makes the next report go out in full).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineRecord {
    /// Tasks as last forwarded; `None` until a report is forwarded, and again once the
    /// machine was forwarded unreachable, so that its next report goes out in full.
    forwarded: Option<BTreeMap<TaskKey, Fingerprint>>,
    /// Machine usage as last forwarded.
    usage_forwarded: Option<Resources>,
    /// Per task, its usage as last forwarded (tasks that reported one).
    task_usage_forwarded: BTreeMap<TaskKey, Resources>,
    /// Successful polls since running tasks' usage was last refreshed.
    polls_since_usage_refresh: u32,
    /// Failed polls in a row.
    failed_polls: u32,
    /// The master was told the machine is unreachable and has not heard from it since.
    unreachable_forwarded: bool,
    /// The borglet's report numbering (epoch, change number) as of the forwarded report;
    /// `None` when it does not number its reports.
    report_cursor: Option<(u64, u64)>,
}

/// The outcome of observing one poll: what to forward, and the record to keep once it is
/// forwarded (see [`MachineRecord::unforwarded`] for when it could not be).
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub diff: Option<MachineDiff>,
    pub next: MachineRecord,
}

impl MachineRecord {
    /// Failed polls in a row so far.
    pub fn failed_polls(&self) -> u32 {
        self.failed_polls
    }

    /// Whether the master was told the machine is unreachable (and not told otherwise since).
    pub fn is_unreachable_forwarded(&self) -> bool {
        self.unreachable_forwarded
    }

    /// What to ask the borglet for (`PollRequest.report_epoch`, `reports_since`): the
    /// changes after the report forwarded last, or (0, 0) for a full report (none forwarded
    /// yet, or the periodic usage refresh is due).
    pub fn reports_since(&self) -> (u64, u64) {
        let refresh = self.polls_since_usage_refresh.saturating_add(1) >= USAGE_REFRESH_POLLS;
        match self.report_cursor {
            Some(cursor) if self.forwarded.is_some() && !refresh => cursor,
            _ => (0, 0),
        }
    }

    /// Tasks last reported accepted but not started yet (`SCHEDULED`).
    pub fn tasks_starting(&self) -> usize {
        self.forwarded.as_ref().map_or(0, |tasks| {
            tasks
                .values()
                .filter(|f| f.state == TaskState::Scheduled as i32)
                .count()
        })
    }

    /// Folds an incremental report (`response.incremental`: only the tasks whose report
    /// changed since `reports_since`, and the tasks the borglet forgot) into this record,
    /// which it consumes; the diff holds the changes worth telling the master. If the diff
    /// does not reach the master, keep `MachineRecord::default()` (through `unforwarded`):
    /// the next report is then asked for and forwarded in full.
    pub fn observe_changes(mut self, machine: &str, response: &PollResponse) -> Observation {
        let epoch_known = self
            .report_cursor
            .is_some_and(|(epoch, _)| epoch == response.report_epoch);
        let Some(mut forwarded) = self.forwarded.take().filter(|_| epoch_known) else {
            // Not an answer to this record's question: start over with a full report.
            return Observation {
                diff: None,
                next: MachineRecord::default(),
            };
        };
        let mut changed: Vec<TaskReport> = Vec::new();
        for report in &response.tasks {
            let key = TaskKey::of_report(report);
            let fingerprint = Fingerprint::of(report);
            let usage_news = task_usage_news(report, self.task_usage_forwarded.get(&key), false);
            if forwarded.get(&key) != Some(&fingerprint) || usage_news {
                changed.push(report.clone());
                if let Some(usage) = report.usage {
                    self.task_usage_forwarded.insert(key.clone(), usage);
                }
            }
            forwarded.insert(key, fingerprint);
        }
        for job in &response.forgotten {
            for (index, incarnation) in job.indices.iter().zip(&job.incarnations) {
                let key = TaskKey {
                    job: job.job.clone(),
                    index: *index,
                    incarnation: *incarnation,
                };
                forwarded.remove(&key);
                self.task_usage_forwarded.remove(&key);
            }
        }
        let usage = self.machine_usage_news(response);
        let next = MachineRecord {
            forwarded: Some(forwarded),
            usage_forwarded: usage.or(self.usage_forwarded),
            task_usage_forwarded: self.task_usage_forwarded,
            polls_since_usage_refresh: self.polls_since_usage_refresh.saturating_add(1),
            failed_polls: 0,
            unreachable_forwarded: false,
            report_cursor: Some((response.report_epoch, response.report_seq)),
        };
        let diff =
            (!changed.is_empty() || usage.is_some()).then(|| answered(machine, changed, usage));
        Observation { diff, next }
    }

    /// Diffs a successful poll of `machine` (that was sent `desired`) against this record.
    pub fn observe_report(
        &self,
        machine: &str,
        desired: &[AssignedTask],
        response: &PollResponse,
    ) -> Observation {
        let mut reported: BTreeMap<TaskKey, Fingerprint> = BTreeMap::new();
        let mut task_usage_forwarded: BTreeMap<TaskKey, Resources> = BTreeMap::new();
        let mut changed: Vec<TaskReport> = Vec::new();
        let refresh = self.polls_since_usage_refresh.saturating_add(1) >= USAGE_REFRESH_POLLS;
        for report in &response.tasks {
            let key = TaskKey::of_report(report);
            // A duplicate key in one report: the first copy decides (and is forwarded once).
            if reported.contains_key(&key) {
                continue;
            }
            let fingerprint = Fingerprint::of(report);
            let previous = self.forwarded.as_ref().and_then(|f| f.get(&key));
            let usage_before = self.task_usage_forwarded.get(&key);
            let usage_news = task_usage_news(report, usage_before, refresh);
            if previous != Some(&fingerprint) || usage_news {
                changed.push(report.clone());
                if let Some(usage) = report.usage {
                    task_usage_forwarded.insert(key.clone(), usage);
                }
            } else if let Some(before) = usage_before {
                task_usage_forwarded.insert(key.clone(), *before);
            }
            reported.insert(key, fingerprint);
        }
        if let Some(forwarded) = &self.forwarded {
            let desired: BTreeSet<TaskKey> = desired.iter().map(TaskKey::of_assigned).collect();
            for key in forwarded.keys() {
                if !reported.contains_key(key) && desired.contains(key) {
                    changed.push(vanished(key));
                }
            }
        }
        let usage = self.machine_usage_news(response);
        let first_report = self.forwarded.is_none();
        let next = MachineRecord {
            forwarded: Some(reported),
            usage_forwarded: usage.or(self.usage_forwarded),
            task_usage_forwarded,
            polls_since_usage_refresh: if refresh {
                0
            } else {
                self.polls_since_usage_refresh + 1
            },
            failed_polls: 0,
            unreachable_forwarded: false,
            report_cursor: (response.report_epoch != 0)
                .then_some((response.report_epoch, response.report_seq)),
        };
        let diff = (first_report || !changed.is_empty() || usage.is_some())
            .then(|| answered(machine, changed, usage));
        Observation { diff, next }
    }

    /// The machine usage of `response` if it is news (first, or moved notably).
    fn machine_usage_news(&self, response: &PollResponse) -> Option<Resources> {
        response.usage.filter(|now| match &self.usage_forwarded {
            None => true,
            Some(before) => usage_changed_notably(before, now),
        })
    }

    /// Counts a failed poll of `machine`; forwards it as unreachable once the count reaches
    /// `unreachable_polls_max` (and not again until it has answered).
    pub fn observe_failure(&self, machine: &str, unreachable_polls_max: u32) -> Observation {
        let failed_polls = self.failed_polls.saturating_add(1);
        if self.unreachable_forwarded || failed_polls < unreachable_polls_max {
            return Observation {
                diff: None,
                next: MachineRecord {
                    failed_polls,
                    ..self.clone()
                },
            };
        }
        Observation {
            diff: Some(MachineDiff {
                machine: machine.to_owned(),
                unreachable: true,
                unreachable_polls: failed_polls,
                changed: Vec::new(),
                usage: None,
            }),
            // The master re-pends the machine's tasks; whatever it reports next is news.
            next: MachineRecord {
                forwarded: None,
                usage_forwarded: None,
                task_usage_forwarded: BTreeMap::new(),
                polls_since_usage_refresh: 0,
                failed_polls,
                unreachable_forwarded: true,
                report_cursor: None,
            },
        }
    }

    /// The record to keep when the diff computed with `next` did not reach the master: what
    /// was forwarded before stays (so the same changes are found and sent again), while the
    /// count of failed polls moves on.
    pub fn unforwarded(self, next: &MachineRecord) -> MachineRecord {
        MachineRecord {
            failed_polls: next.failed_polls,
            ..self
        }
    }
}

/// The diff of an answering machine.
fn answered(machine: &str, changed: Vec<TaskReport>, usage: Option<Resources>) -> MachineDiff {
    MachineDiff {
        machine: machine.to_owned(),
        unreachable: false,
        unreachable_polls: 0,
        changed,
        usage,
    }
}

/// Whether a task's reported usage is worth forwarding: it runs, and its usage is new, moved
/// notably since `before`, or a refresh is due.
fn task_usage_news(report: &TaskReport, before: Option<&Resources>, refresh: bool) -> bool {
    report.state == TaskState::Running as i32
        && report.usage.is_some_and(|now| {
            refresh || before.is_none_or(|before| usage_changed_notably(before, &now))
        })
}

fn vanished(key: &TaskKey) -> TaskReport {
    TaskReport {
        job: key.job.clone(),
        index: key.index,
        incarnation: key.incarnation,
        state: TaskState::Killed as i32,
        message: VANISHED_MESSAGE.to_owned(),
        ..TaskReport::default()
    }
}

/// Whether machine usage moved enough to be worth a forward.
pub fn usage_changed_notably(before: &Resources, now: &Resources) -> bool {
    fn moved(before: u64, now: u64, noise: u64) -> bool {
        let delta = before.abs_diff(now);
        delta > noise
            && u128::from(delta) * 100
                > u128::from(before) * u128::from(USAGE_CHANGE_NOTABLE_PERCENT)
    }
    moved(before.cpu_millis, now.cpu_millis, USAGE_CPU_NOISE_MILLIS)
        || moved(before.ram_bytes, now.ram_bytes, USAGE_BYTES_NOISE)
        || moved(before.disk_bytes, now.disk_bytes, USAGE_BYTES_NOISE)
        || before.gpus != now.gpus
}

#[cfg(test)]
mod tests {
    use super::*;

    const MACHINE: &str = "m1";

    fn assigned(job: &str, index: u32, incarnation: u64) -> AssignedTask {
        AssignedTask {
            job: job.into(),
            index,
            incarnation,
            ..AssignedTask::default()
        }
    }

    fn running(job: &str, index: u32, incarnation: u64, pid: u32) -> TaskReport {
        TaskReport {
            job: job.into(),
            index,
            incarnation,
            state: TaskState::Running as i32,
            pid,
            ..TaskReport::default()
        }
    }

    fn response(tasks: Vec<TaskReport>) -> PollResponse {
        PollResponse {
            machine: MACHINE.into(),
            tasks,
            ..PollResponse::default()
        }
    }

    /// A record that has forwarded `tasks` (with `desired` as the desired set).
    fn forwarded(desired: &[AssignedTask], tasks: Vec<TaskReport>) -> MachineRecord {
        MachineRecord::default()
            .observe_report(MACHINE, desired, &response(tasks))
            .next
    }

    #[test]
    fn the_first_report_is_forwarded_in_full() {
        let desired = [assigned("web", 0, 1), assigned("web", 1, 1)];
        let tasks = vec![running("web", 0, 1, 100), running("web", 1, 1, 101)];
        let seen =
            MachineRecord::default().observe_report(MACHINE, &desired, &response(tasks.clone()));
        let diff = seen.diff.expect("first report is forwarded");
        assert_eq!(diff.machine, MACHINE);
        assert!(!diff.unreachable);
        assert_eq!(diff.changed, tasks);
    }

    #[test]
    fn an_empty_first_report_is_still_forwarded_once() {
        let seen = MachineRecord::default().observe_report(MACHINE, &[], &response(vec![]));
        let diff = seen.diff.expect("the master learns the machine answers");
        assert!(diff.changed.is_empty());
        let again = seen.next.observe_report(MACHINE, &[], &response(vec![]));
        assert_eq!(again.diff, None);
    }

    #[test]
    fn an_unchanged_report_forwards_nothing() {
        let desired = [assigned("web", 0, 1)];
        let mut first = running("web", 0, 1, 100);
        first.usage = Some(Resources {
            cpu_millis: 5,
            ..Resources::default()
        });
        let record = forwarded(&desired, vec![first.clone()]);
        // A small usage move and the start time are not news.
        let mut same = first;
        same.usage = Some(Resources {
            cpu_millis: 30,
            ..Resources::default()
        });
        same.started_ms = 1234;
        let seen = record.observe_report(MACHINE, &desired, &response(vec![same]));
        assert_eq!(seen.diff, None);
        assert_eq!(seen.next.forwarded, record.forwarded);
        assert_eq!(seen.next.task_usage_forwarded, record.task_usage_forwarded);
    }

    /// An incremental answer of borglet epoch 7 up to change `seq`.
    fn changes(seq: u64, tasks: Vec<TaskReport>, forgotten: &[(&str, u32, u64)]) -> PollResponse {
        PollResponse {
            report_epoch: 7,
            report_seq: seq,
            incremental: true,
            forgotten: borg_proto::convert::group_task_keys(forgotten.iter().copied()),
            ..response(tasks)
        }
    }

    /// The record after a full report of borglet `epoch`, complete up to change `seq`.
    fn numbered(
        epoch: u64,
        seq: u64,
        desired: &[AssignedTask],
        tasks: Vec<TaskReport>,
    ) -> MachineRecord {
        let full = PollResponse {
            report_epoch: epoch,
            report_seq: seq,
            ..response(tasks)
        };
        MachineRecord::default()
            .observe_report(MACHINE, desired, &full)
            .next
    }

    #[test]
    fn incremental_reports_are_folded_into_the_record() {
        let desired = [assigned("web", 0, 1), assigned("web", 1, 1)];
        assert_eq!(MachineRecord::default().reports_since(), (0, 0));
        let tasks = vec![running("web", 0, 1, 100), running("web", 1, 1, 101)];
        let record = numbered(7, 10, &desired, tasks);
        assert_eq!(record.reports_since(), (7, 10));

        // Nothing changed: nothing forwarded, the record moves to the new change number.
        let quiet = record
            .clone()
            .observe_changes(MACHINE, &changes(12, vec![], &[]));
        assert_eq!(quiet.diff, None);
        assert_eq!(quiet.next.forwarded, record.forwarded);
        assert_eq!(quiet.next.reports_since(), (7, 12));

        // A changed task, an unchanged one reported again, a new starting one, a forgotten one.
        let mut exited = running("web", 0, 1, 100);
        exited.state = TaskState::Succeeded as i32;
        let mut starting = running("web", 2, 1, 0);
        starting.state = TaskState::Scheduled as i32;
        let seen = quiet.next.observe_changes(
            MACHINE,
            &changes(
                15,
                vec![exited.clone(), starting.clone(), running("web", 1, 1, 101)],
                &[("web", 1, 1)],
            ),
        );
        assert_eq!(seen.diff.unwrap().changed, vec![exited, starting]);
        let keys: Vec<u32> = seen
            .next
            .forwarded
            .as_ref()
            .unwrap()
            .keys()
            .map(|k| k.index)
            .collect();
        assert_eq!(keys, vec![0, 2], "the forgotten task left the record");
        assert_eq!(seen.next.tasks_starting(), 1);
        assert_eq!(seen.next.reports_since(), (7, 15));
    }

    #[test]
    fn an_incremental_report_of_another_epoch_starts_over_in_full() {
        let record = numbered(
            6,
            3,
            &[assigned("web", 0, 1)],
            vec![running("web", 0, 1, 100)],
        );
        let seen = record.observe_changes(MACHINE, &changes(4, vec![], &[]));
        assert_eq!(seen.diff, None);
        assert_eq!(seen.next, MachineRecord::default());
        assert_eq!(seen.next.reports_since(), (0, 0));
    }

    #[test]
    fn the_usage_refresh_asks_for_a_full_report() {
        let mut record = numbered(7, 1, &[], vec![]);
        for seq in 2..u64::from(USAGE_REFRESH_POLLS) {
            assert_eq!(record.reports_since(), (7, seq - 1));
            record = record
                .observe_changes(MACHINE, &changes(seq, vec![], &[]))
                .next;
        }
        assert_eq!(record.reports_since(), (0, 0));
    }

    #[test]
    fn a_borglet_that_does_not_number_reports_is_always_asked_in_full() {
        let record = forwarded(&[], vec![]);
        assert_eq!(record.reports_since(), (0, 0));
    }

    #[test]
    fn a_new_task_is_forwarded_alone() {
        let desired = [assigned("web", 0, 1), assigned("web", 1, 1)];
        let record = forwarded(&desired, vec![running("web", 0, 1, 100)]);
        let seen = record.observe_report(
            MACHINE,
            &desired,
            &response(vec![running("web", 0, 1, 100), running("web", 1, 1, 101)]),
        );
        assert_eq!(seen.diff.unwrap().changed, vec![running("web", 1, 1, 101)]);
    }

    #[test]
    fn each_field_of_the_fingerprint_is_a_change() {
        let desired = [assigned("web", 0, 1)];
        let record = forwarded(&desired, vec![running("web", 0, 1, 100)]);
        let mut variants = Vec::new();
        let mut r = running("web", 0, 1, 100);
        r.state = TaskState::Failed as i32;
        variants.push(r);
        let mut r = running("web", 0, 1, 100);
        r.exit_code = Some(1);
        variants.push(r);
        let mut r = running("web", 0, 1, 100);
        r.restarts = 1;
        variants.push(r);
        variants.push(running("web", 0, 1, 200));
        for changed in variants {
            let seen = record.observe_report(MACHINE, &desired, &response(vec![changed.clone()]));
            assert_eq!(seen.diff.unwrap().changed, vec![changed]);
        }
    }

    #[test]
    fn a_new_incarnation_is_a_new_task() {
        let record = forwarded(&[assigned("web", 0, 1)], vec![running("web", 0, 1, 100)]);
        let desired = [assigned("web", 0, 2)];
        let mut old = running("web", 0, 1, 100);
        old.state = TaskState::Killed as i32;
        let seen = record.observe_report(
            MACHINE,
            &desired,
            &response(vec![old.clone(), running("web", 0, 2, 300)]),
        );
        assert_eq!(
            seen.diff.unwrap().changed,
            vec![old, running("web", 0, 2, 300)]
        );
    }

    #[test]
    fn a_task_that_vanished_while_desired_is_forwarded_killed() {
        let desired = [assigned("web", 0, 1), assigned("web", 1, 1)];
        let record = forwarded(
            &desired,
            vec![running("web", 0, 1, 100), running("web", 1, 1, 101)],
        );
        let seen = record.observe_report(
            MACHINE,
            &desired,
            &response(vec![running("web", 0, 1, 100)]),
        );
        let changed = seen.diff.unwrap().changed;
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].job, "web");
        assert_eq!(changed[0].index, 1);
        assert_eq!(changed[0].incarnation, 1);
        assert_eq!(changed[0].state, TaskState::Killed as i32);
        assert_eq!(changed[0].message, VANISHED_MESSAGE);
        // Forwarded once: the next identical report says nothing.
        let again = seen.next.observe_report(
            MACHINE,
            &desired,
            &response(vec![running("web", 0, 1, 100)]),
        );
        assert_eq!(again.diff, None);
    }

    #[test]
    fn a_task_that_left_the_desired_set_vanishes_silently() {
        let record = forwarded(
            &[assigned("web", 0, 1), assigned("web", 1, 1)],
            vec![running("web", 0, 1, 100), running("web", 1, 1, 101)],
        );
        let desired = [assigned("web", 0, 1)];
        let seen = record.observe_report(
            MACHINE,
            &desired,
            &response(vec![running("web", 0, 1, 100)]),
        );
        assert_eq!(seen.diff, None);
    }

    #[test]
    fn a_desired_task_of_another_incarnation_does_not_keep_a_vanished_one_alive() {
        let record = forwarded(&[assigned("web", 0, 1)], vec![running("web", 0, 1, 100)]);
        let seen = record.observe_report(MACHINE, &[assigned("web", 0, 2)], &response(vec![]));
        assert_eq!(seen.diff, None);
    }

    #[test]
    fn duplicate_reports_of_one_task_are_forwarded_once() {
        let desired = [assigned("web", 0, 1)];
        let seen = MachineRecord::default().observe_report(
            MACHINE,
            &desired,
            &response(vec![running("web", 0, 1, 100), running("web", 0, 1, 999)]),
        );
        assert_eq!(seen.diff.unwrap().changed, vec![running("web", 0, 1, 100)]);
    }

    #[test]
    fn unreachable_is_forwarded_once_after_the_bound() {
        let record = forwarded(&[], vec![running("web", 0, 1, 100)]);
        let first = record.observe_failure(MACHINE, 3);
        assert_eq!(first.diff, None);
        assert_eq!(first.next.failed_polls(), 1);
        let second = first.next.observe_failure(MACHINE, 3);
        assert_eq!(second.diff, None);
        let third = second.next.observe_failure(MACHINE, 3);
        let diff = third.diff.expect("forwarded at the bound");
        assert!(diff.unreachable);
        assert_eq!(diff.unreachable_polls, 3);
        assert!(diff.changed.is_empty());
        assert!(third.next.is_unreachable_forwarded());
        let fourth = third.next.observe_failure(MACHINE, 3);
        assert_eq!(fourth.diff, None, "forwarded once only");
        assert_eq!(fourth.next.failed_polls(), 4);
    }

    #[test]
    fn a_success_resets_the_count_of_failed_polls() {
        let desired = [assigned("web", 0, 1)];
        let record = forwarded(&desired, vec![running("web", 0, 1, 100)]);
        let failed = record.observe_failure(MACHINE, 2).next;
        let back = failed.observe_report(
            MACHINE,
            &desired,
            &response(vec![running("web", 0, 1, 100)]),
        );
        assert_eq!(
            back.diff, None,
            "nothing changed and it was never forwarded unreachable"
        );
        assert_eq!(back.next.failed_polls(), 0);
        let failed = back.next.observe_failure(MACHINE, 2);
        assert_eq!(failed.diff, None, "the count starts again");
    }

    #[test]
    fn a_machine_that_comes_back_forwards_its_full_report() {
        let desired = [assigned("web", 0, 1)];
        let tasks = vec![running("web", 0, 1, 100)];
        let record = forwarded(&desired, tasks.clone());
        let down = record.observe_failure(MACHINE, 1);
        assert!(down.diff.unwrap().unreachable);
        let back = down
            .next
            .observe_report(MACHINE, &desired, &response(tasks.clone()));
        let diff = back.diff.expect("recovery is forwarded");
        assert!(!diff.unreachable);
        assert_eq!(diff.changed, tasks);
        assert!(!back.next.is_unreachable_forwarded());
        // And an empty machine that comes back is forwarded too.
        let empty = forwarded(&[], vec![]).observe_failure(MACHINE, 1).next;
        assert!(empty
            .observe_report(MACHINE, &[], &response(vec![]))
            .diff
            .is_some());
    }

    #[test]
    fn a_diff_that_was_not_forwarded_is_found_again() {
        let desired = [assigned("web", 0, 1)];
        let record = forwarded(&desired, vec![running("web", 0, 1, 100)]);
        let changed = response(vec![running("web", 0, 1, 200)]);
        let seen = record.observe_report(MACHINE, &desired, &changed);
        assert!(seen.diff.is_some());
        let kept = record.clone().unforwarded(&seen.next);
        let retry = kept.observe_report(MACHINE, &desired, &changed);
        assert_eq!(retry.diff, seen.diff);

        // An unreachable forward that failed is attempted again on the next failure.
        let down = record.observe_failure(MACHINE, 1);
        let kept = record.clone().unforwarded(&down.next);
        assert_eq!(kept.failed_polls(), 1);
        assert!(kept.observe_failure(MACHINE, 1).diff.unwrap().unreachable);
    }

    #[test]
    fn usage_is_forwarded_when_it_moves_notably() {
        let usage = |cpu_millis, ram_bytes| Resources {
            cpu_millis,
            ram_bytes,
            ..Resources::default()
        };
        let with_usage = |u| PollResponse {
            usage: Some(u),
            ..response(vec![])
        };
        let first = MachineRecord::default().observe_report(
            MACHINE,
            &[],
            &with_usage(usage(1000, 1 << 30)),
        );
        assert_eq!(first.diff.unwrap().usage, Some(usage(1000, 1 << 30)));
        let small = first
            .next
            .observe_report(MACHINE, &[], &with_usage(usage(1060, 1 << 30)));
        assert_eq!(small.diff, None, "6% is not notable");
        let big = small
            .next
            .observe_report(MACHINE, &[], &with_usage(usage(1200, 1 << 30)));
        assert_eq!(big.diff.unwrap().usage, Some(usage(1200, 1 << 30)));
        // A borglet that sends no usage changes nothing.
        let none = big.next.observe_report(MACHINE, &[], &response(vec![]));
        assert_eq!(none.diff, None);
    }

    #[test]
    fn a_running_task_is_forwarded_when_its_usage_moves_and_at_every_refresh() {
        let desired = [assigned("j", 0, 1)];
        let with_usage = |cpu_millis| {
            let mut task = running("j", 0, 1, 42);
            task.usage = Some(Resources {
                cpu_millis,
                ram_bytes: 64 << 20,
                ..Resources::default()
            });
            response(vec![task])
        };
        let first = MachineRecord::default().observe_report(MACHINE, &desired, &with_usage(500));
        assert_eq!(first.diff.unwrap().changed.len(), 1);
        let steady = first
            .next
            .observe_report(MACHINE, &desired, &with_usage(520));
        assert_eq!(steady.diff, None, "a small move is not news");
        let moved = steady
            .next
            .observe_report(MACHINE, &desired, &with_usage(900));
        let changed = moved.diff.unwrap().changed;
        assert_eq!(changed[0].usage.unwrap().cpu_millis, 900);

        // Steady from here on: silent until the refresh, which forwards it once.
        let mut record = moved.next;
        let mut forwards = Vec::new();
        for poll in 1..=2 * USAGE_REFRESH_POLLS {
            let seen = record.observe_report(MACHINE, &desired, &with_usage(900));
            if seen.diff.is_some() {
                forwards.push(poll);
            }
            record = seen.next;
        }
        assert_eq!(forwards.len(), 2, "one refresh per period: {forwards:?}");
        assert_eq!(forwards[1] - forwards[0], USAGE_REFRESH_POLLS);
    }

    #[test]
    fn usage_of_a_task_that_is_not_running_is_not_news() {
        let desired = [assigned("j", 0, 1)];
        let mut task = running("j", 0, 1, 0);
        task.state = TaskState::Succeeded as i32;
        let first = MachineRecord::default().observe_report(
            MACHINE,
            &desired,
            &response(vec![task.clone()]),
        );
        let mut record = first.next;
        task.usage = Some(Resources {
            cpu_millis: 5000,
            ..Resources::default()
        });
        for _ in 0..=USAGE_REFRESH_POLLS {
            let seen = record.observe_report(MACHINE, &desired, &response(vec![task.clone()]));
            assert_eq!(seen.diff, None);
            record = seen.next;
        }
    }

    #[test]
    fn usage_noise_on_small_values_is_ignored() {
        let before = Resources::default();
        let now = Resources {
            cpu_millis: USAGE_CPU_NOISE_MILLIS,
            ram_bytes: USAGE_BYTES_NOISE,
            ..Resources::default()
        };
        assert!(!usage_changed_notably(&before, &now));
        let more = Resources {
            cpu_millis: USAGE_CPU_NOISE_MILLIS + 1,
            ..Resources::default()
        };
        assert!(usage_changed_notably(&before, &more));
        assert!(usage_changed_notably(&more, &before));
    }
}
