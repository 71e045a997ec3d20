//! Tasks of plans being committed or just committed, kept out of new plans until the view
//! shows the commit, so a task is never placed twice by two plans; and the machines those
//! plans touch (`Claims`), left alone by plans made meanwhile.

use borg_model::TaskId;
use std::collections::{BTreeMap, BTreeSet};

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

impl Entry {
    /// The view shows the commit, or the entry is older than `timeout_ms` (a lost answer or
    /// an update that never came must not hold anything for ever).
    fn settled(&self, view_index: u64, now_ms: u64, timeout_ms: u64) -> bool {
        let caught_up = matches!(self.until, Until::ViewIndex(i) if i <= view_index);
        caught_up || now_ms.saturating_sub(self.since_ms) >= timeout_ms
    }
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
        self.entries
            .retain(|_, entry| !entry.settled(view_index, now_ms, timeout_ms));
        before - self.entries.len()
    }
}

/// The machines of each plan being committed, by round, until the view shows the commit.
/// The view does not show such a plan's placements and evictions yet: a round planned
/// meanwhile on those machines would count their room twice (and the master would reject
/// the overlap), so it plans on the others (`schedule_among_except`).
#[derive(Debug, Default)]
pub struct Claims {
    by_round: BTreeMap<u64, (Vec<String>, Entry)>,
}

impl Claims {
    pub fn new() -> Self {
        Claims::default()
    }

    pub fn is_empty(&self) -> bool {
        self.by_round.is_empty()
    }

    /// Round `round`'s plan, placing on `machines`, is being sent.
    pub fn start(&mut self, round: u64, machines: Vec<String>, now_ms: u64) {
        let entry = Entry {
            until: Until::Answered,
            since_ms: now_ms,
        };
        self.by_round.insert(round, (machines, entry));
    }

    /// Round `round`'s commit was answered: the view shows it from log index `index` on;
    /// `None` when nothing was accepted (nothing changed: the machines are free at once).
    pub fn answered(&mut self, round: u64, index: Option<u64>) {
        match index {
            Some(index) => {
                if let Some((_, entry)) = self.by_round.get_mut(&round) {
                    entry.until = Until::ViewIndex(index);
                }
            }
            None => {
                self.by_round.remove(&round);
            }
        }
    }

    /// Drops the claims the view has caught up with, and any older than `timeout_ms`.
    /// Returns the machines no longer claimed.
    pub fn release_settled(
        &mut self,
        view_index: u64,
        now_ms: u64,
        timeout_ms: u64,
    ) -> BTreeSet<String> {
        let mut released = BTreeSet::new();
        self.by_round.retain(|_, (machines, entry)| {
            let settled = entry.settled(view_index, now_ms, timeout_ms);
            if settled {
                released.extend(machines.drain(..));
            }
            !settled
        });
        if !released.is_empty() {
            for (machines, _) in self.by_round.values() {
                for machine in machines {
                    released.remove(machine);
                }
            }
        }
        released
    }

    /// The oldest and the newest round with a claim.
    pub fn oldest_round(&self) -> Option<u64> {
        self.by_round.keys().next().copied()
    }

    pub fn newest_round(&self) -> Option<u64> {
        self.by_round.keys().next_back().copied()
    }

    /// Every claimed machine, sorted, once.
    pub fn machines(&self) -> Vec<String> {
        let mut machines: Vec<String> = self
            .by_round
            .values()
            .flat_map(|(machines, _)| machines.iter().cloned())
            .collect();
        machines.sort_unstable();
        machines.dedup();
        machines
    }

    pub fn clear(&mut self) {
        self.by_round.clear();
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
    fn machines_stay_claimed_until_the_view_shows_the_commit() {
        let mut claims = Claims::new();
        claims.start(1, vec!["m2".into(), "m1".into()], 1_000);
        claims.start(2, vec!["m2".into(), "m3".into()], 1_000);
        assert_eq!(claims.machines(), ["m1", "m2", "m3"]);
        assert_eq!(
            (claims.oldest_round(), claims.newest_round()),
            (Some(1), Some(2))
        );
        // Answered at index 50: claimed until the view reaches it.
        claims.answered(1, Some(50));
        assert!(claims.release_settled(49, 1_001, 60_000).is_empty());
        assert_eq!(claims.machines(), ["m1", "m2", "m3"]);
        // m2 stays claimed by round 2.
        let released = claims.release_settled(50, 1_002, 60_000);
        assert_eq!(released, BTreeSet::from(["m1".to_owned()]));
        assert_eq!(claims.machines(), ["m2", "m3"]);
        // Nothing accepted: free at once; an unanswered claim expires.
        claims.start(3, vec!["m4".into()], 1_000);
        claims.answered(3, None);
        assert_eq!(claims.machines(), ["m2", "m3"]);
        assert_eq!(claims.release_settled(0, 2_000, 1_000).len(), 2);
        assert!(claims.is_empty());
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
