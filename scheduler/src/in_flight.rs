//! Tasks of plans being committed or just committed, kept out of new plans until the view
//! shows the commit, so a task is never placed twice by two plans.

use borg_model::TaskId;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    /// The plan's CommitPlan has not answered yet.
    Answered,
    /// Accepted at this log index: wait until the view reflects it.
    ViewIndex(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    until: Until,
    since_ms: u64,
}

#[derive(Debug, Default)]
pub struct InFlight {
    entries: BTreeMap<TaskId, Entry>,
}

impl InFlight {
    pub fn new() -> Self {
        InFlight::default()
    }

    pub fn contains(&self, task: &TaskId) -> bool {
        self.entries.contains_key(task)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A plan naming these tasks is being sent.
    pub fn start<'a>(&mut self, tasks: impl IntoIterator<Item = &'a TaskId>, now_ms: u64) {
        for task in tasks {
            self.entries.insert(
                task.clone(),
                Entry {
                    until: Until::Answered,
                    since_ms: now_ms,
                },
            );
        }
    }

    /// The master accepted these placements at `index`.
    pub fn accepted<'a>(&mut self, tasks: impl IntoIterator<Item = &'a TaskId>, index: u64) {
        for task in tasks {
            if let Some(entry) = self.entries.get_mut(task) {
                entry.until = Until::ViewIndex(index);
            }
        }
    }

    /// Placements rejected or whose commit failed: free to be planned again (the caller
    /// decides when: after the view changes).
    pub fn release<'a>(&mut self, tasks: impl IntoIterator<Item = &'a TaskId>) {
        for task in tasks {
            self.entries.remove(task);
        }
    }

    /// Drops entries the view has caught up with, and any older than `timeout_ms` (a lost
    /// answer or an update that never came must not keep a task out of plans for ever).
    /// Returns how many were dropped.
    pub fn release_settled(&mut self, view_index: u64, now_ms: u64, timeout_ms: u64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, entry| {
            let caught_up = matches!(entry.until, Until::ViewIndex(i) if i <= view_index);
            let expired = now_ms.saturating_sub(entry.since_ms) >= timeout_ms;
            !caught_up && !expired
        });
        before - self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_stay_out_until_the_view_shows_the_commit() {
        let (a, b) = (TaskId::new("j", 0), TaskId::new("j", 1));
        let mut in_flight = InFlight::new();
        in_flight.start([&a, &b], 1_000);
        assert!(in_flight.contains(&a) && in_flight.contains(&b));
        // Unanswered plans are not settled by the view moving on.
        assert_eq!(in_flight.release_settled(100, 1_001, 60_000), 0);
        in_flight.accepted([&a], 50);
        in_flight.release([&b]);
        assert!(!in_flight.contains(&b));
        assert_eq!(in_flight.release_settled(49, 1_002, 60_000), 0);
        assert!(in_flight.contains(&a));
        assert_eq!(in_flight.release_settled(50, 1_003, 60_000), 1);
        assert!(in_flight.is_empty());
    }

    #[test]
    fn entries_expire() {
        let a = TaskId::new("j", 0);
        let mut in_flight = InFlight::new();
        in_flight.start([&a], 1_000);
        assert_eq!(in_flight.release_settled(0, 1_500, 1_000), 0);
        assert_eq!(in_flight.release_settled(0, 2_000, 1_000), 1);
    }
}
