//! Numbering of report changes, so that a poll can be answered with only the tasks whose
//! report changed since the caller's last answer (an incremental report).
//!
//! Every change of a task's report gets the next change number (`seq`); so does every task
//! the borglet forgets. A caller that knows the borglet's `epoch` (new at each start) and the
//! number it was answered up to asks for what came after; a caller from another epoch, or
//! further behind than the forgotten tasks remembered, gets a full report.

use crate::assignment::TaskKey;
use borg_model::{Resources, TaskState};
use std::collections::VecDeque;

/// Forgotten tasks remembered for incremental reports; a caller further behind than the
/// oldest of them is answered in full.
pub const FORGOTTEN_KEYS_MAX: usize = 16_384;

/// The report changes of one borglet instance.
#[derive(Debug)]
pub struct ReportChanges {
    epoch: u64,
    seq: u64,
    /// Tasks forgotten, with the change number of their forgetting, oldest first.
    forgotten: VecDeque<(u64, TaskKey)>,
    /// A caller answered up to a number below this may have missed a forgotten task.
    horizon: u64,
}

/// What a caller was last answered up to: the borglet's epoch and change number (0: nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportCursor {
    pub epoch: u64,
    pub seq: u64,
}

impl ReportChanges {
    /// `epoch` must differ from earlier instances' (a start time does).
    pub fn new(epoch: u64) -> ReportChanges {
        ReportChanges {
            epoch: epoch.max(1),
            seq: 0,
            forgotten: VecDeque::new(),
            horizon: 0,
        }
    }

    /// Where a report made now is complete up to.
    pub fn cursor(&self) -> ReportCursor {
        ReportCursor {
            epoch: self.epoch,
            seq: self.seq,
        }
    }

    /// The next change number.
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Notes that `key` is no longer reported.
    pub fn forget(&mut self, key: TaskKey) {
        let seq = self.next_seq();
        if self.forgotten.len() >= FORGOTTEN_KEYS_MAX {
            if let Some((dropped, _)) = self.forgotten.pop_front() {
                self.horizon = dropped;
            }
        }
        self.forgotten.push_back((seq, key));
    }

    /// Whether a caller at `since` can be told only what changed after it.
    pub fn answers_incrementally(&self, since: ReportCursor) -> bool {
        since.epoch == self.epoch
            && since.seq > 0
            && since.seq <= self.seq
            && since.seq >= self.horizon
    }

    /// Tasks forgotten after change number `since`.
    pub fn forgotten_since(&self, since: u64) -> impl Iterator<Item = &TaskKey> {
        let first = self.forgotten.partition_point(|(seq, _)| *seq <= since);
        self.forgotten.range(first..).map(|(_, key)| key)
    }
}

/// A task's report as last numbered: a report that differs gets a new change number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedView {
    pub state: TaskState,
    pub pid: u32,
    pub exit_code: Option<i32>,
    pub restarts: u32,
    pub started_ms: u64,
    pub usage: Resources,
    pub message: String,
    pub ports: crate::ports::TaskPorts,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(index: u32) -> TaskKey {
        TaskKey::new("web".to_owned(), index, 1)
    }

    #[test]
    fn a_caller_of_this_epoch_is_answered_incrementally() {
        let mut changes = ReportChanges::new(7);
        assert!(!changes.answers_incrementally(ReportCursor::default()));
        changes.next_seq();
        let cursor = changes.cursor();
        assert!(changes.answers_incrementally(cursor));
        assert!(!changes.answers_incrementally(ReportCursor { epoch: 8, ..cursor }));
        assert!(!changes.answers_incrementally(ReportCursor {
            seq: cursor.seq + 1,
            ..cursor
        }));
    }

    #[test]
    fn forgotten_tasks_are_listed_after_the_callers_number() {
        let mut changes = ReportChanges::new(1);
        changes.forget(key(0));
        let since = changes.cursor().seq;
        changes.forget(key(1));
        changes.next_seq();
        changes.forget(key(2));
        let forgotten: Vec<&TaskKey> = changes.forgotten_since(since).collect();
        assert_eq!(forgotten, vec![&key(1), &key(2)]);
    }

    #[test]
    fn a_caller_behind_the_remembered_forgets_is_answered_in_full() {
        let mut changes = ReportChanges::new(1);
        changes.next_seq();
        let behind = changes.cursor();
        for index in 0..=u32::try_from(FORGOTTEN_KEYS_MAX).unwrap() {
            changes.forget(key(index));
        }
        assert!(!changes.answers_incrementally(behind));
        assert!(changes.answers_incrementally(changes.cursor()));
    }
}
