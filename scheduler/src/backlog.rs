//! The backlog: pending tasks a round found no machine for. They stay out of later rounds
//! until the cell changes in a way that may make room for them (`view_sync::room_freed`),
//! and are then retried a bounded slice per round, highest priority first. Without it every
//! round re-examined the whole backlog: in the loaded Google 2011 cell (49k tasks that fit
//! nowhere) a round cost hundreds of ms, and a backlog larger than
//! `PlacementConfig::tasks_max` kept the same unplaceable tasks at the head of every round,
//! starving the tasks of lower priority behind them. Settled tasks are skipped without
//! building their `PendingTask`, so a round's cost follows its new and retried tasks, not
//! the backlog.

use crate::view::{CellView, PendingTask};
use borg_model::{Priority, TaskId, TaskState};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    incarnation: u64,
    priority: Priority,
    /// Room may have appeared since the task was last tried: retry it.
    stale: bool,
    /// The last scan that found the task pending (entries not found are dropped).
    seen_scan: u64,
}

#[derive(Debug, Default)]
pub struct Backlog {
    /// Job name → task index → entry (looked up without building a `TaskId`).
    jobs: HashMap<String, HashMap<u32, Entry>>,
    scan: u64,
    /// The last round left stale tasks out for new ones.
    retries_waited: bool,
}

/// A round's tasks, from `Backlog::collect`.
#[derive(Debug, Default)]
pub struct Collected {
    pub tasks: Vec<PendingTask>,
    /// Every pending task of the view, backlog included.
    pub pending: usize,
}

impl Backlog {
    pub fn new() -> Self {
        Backlog::default()
    }

    pub fn len(&self) -> usize {
        self.jobs.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Tasks waiting to be retried.
    pub fn stale_len(&self) -> usize {
        self.entries().filter(|e| e.stale).count()
    }

    fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.jobs.values().flat_map(HashMap::values)
    }

    /// Forgets every task (after a reconnect, when the view is rebuilt).
    pub fn clear(&mut self) {
        self.jobs.clear();
    }

    /// Room may have appeared: every task is to be retried.
    pub fn room_freed(&mut self) {
        for job in self.jobs.values_mut() {
            for entry in job.values_mut() {
                entry.stale = true;
            }
        }
    }

    /// The tasks of this round: every pending task of active jobs that `skip` does not
    /// exclude (plans being committed) and that is not in the backlog, and at most
    /// `retry_max` stale backlog tasks (highest priority first, then task id), unless the
    /// new tasks have a round of their own (never two in a row). Entries of
    /// tasks no longer pending, or pending in a new incarnation, are dropped.
    pub fn collect(
        &mut self,
        view: &CellView,
        skip: impl Fn(&TaskId) -> bool,
        retry_max: usize,
    ) -> Collected {
        self.scan = self.scan.wrapping_add(1);
        let scan = self.scan;
        let mut out = Collected::default();
        let mut stale = Vec::new();
        for job in view.jobs_with_pending() {
            let mut entries = self.jobs.get_mut(job.name.as_str());
            for (index, task) in &job.tasks {
                if task.state != TaskState::Pending {
                    continue;
                }
                out.pending += 1;
                let entry = entries
                    .as_mut()
                    .and_then(|e| e.get_mut(index))
                    .filter(|e| e.incarnation == task.incarnation);
                let in_backlog = match entry {
                    Some(entry) => {
                        entry.seen_scan = scan;
                        if !entry.stale {
                            continue;
                        }
                        true
                    }
                    None => false,
                };
                let pending = job.pending_task(*index, task);
                if skip(&pending.id) {
                    continue;
                }
                if in_backlog {
                    stale.push(pending);
                } else {
                    out.tasks.push(pending);
                }
            }
        }
        for job in self.jobs.values_mut() {
            job.retain(|_, e| e.seen_scan == scan);
        }
        self.jobs.retain(|_, job| !job.is_empty());
        // New tasks go first, alone: a new job's round costs its own tasks, not retries.
        // Only one round in a row, so a steady stream of new tasks cannot starve retries.
        if !out.tasks.is_empty() && !stale.is_empty() && !self.retries_waited {
            self.retries_waited = true;
            return out;
        }
        self.retries_waited = false;
        if stale.len() > retry_max {
            stale.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.id.cmp(&b.id)));
            stale.truncate(retry_max);
        }
        out.tasks.extend(stale);
        out
    }

    /// The round left these tasks unplaced: they wait for room.
    pub fn unplaced<'a>(&mut self, tasks: impl IntoIterator<Item = &'a PendingTask>) {
        for task in tasks {
            self.jobs.entry(task.id.job.clone()).or_default().insert(
                task.id.index,
                Entry {
                    incarnation: task.incarnation,
                    priority: task.priority,
                    stale: false,
                    seen_scan: self.scan,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{JobView, TaskView};
    use borg_model::Resources;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn view(jobs: &[(&str, Priority, u64)]) -> CellView {
        let mut view = CellView::new();
        for (name, priority, incarnation) in jobs {
            view.upsert_job(JobView {
                name: (*name).into(),
                owner: "u".into(),
                priority: *priority,
                limits: Resources::new(100, 1 << 20),
                limits_by_task: BTreeMap::new(),
                ports_by_task: BTreeMap::new(),
                alloc_set: None,
                constraints: Arc::from(Vec::new()),
                package: Arc::from("/bin/true"),
                ports: 0,
                active: true,
                tasks: BTreeMap::from([(
                    0,
                    TaskView {
                        state: TaskState::Pending,
                        machine: String::new(),
                        incarnation: *incarnation,
                    },
                )]),
            });
        }
        view
    }

    fn ids(tasks: &[PendingTask]) -> Vec<&str> {
        tasks.iter().map(|t| t.id.job.as_str()).collect()
    }

    fn collect(backlog: &mut Backlog, view: &CellView, retry_max: usize) -> Vec<PendingTask> {
        backlog.collect(view, |_| false, retry_max).tasks
    }

    #[test]
    fn unplaced_tasks_wait_until_room_may_have_appeared() {
        let mut backlog = Backlog::new();
        let cell = view(&[("big", 100, 1)]);
        let round = collect(&mut backlog, &cell, 10);
        backlog.unplaced(&round);
        let cell = view(&[("big", 100, 1), ("new", 100, 1)]);
        let collected = backlog.collect(&cell, |_| false, 10);
        assert_eq!(ids(&collected.tasks), ["new"]);
        assert_eq!(collected.pending, 2);
        assert_eq!(backlog.len(), 1);

        backlog.room_freed();
        assert_eq!(backlog.stale_len(), 1);
        let cell = view(&[("big", 100, 1)]);
        let round = collect(&mut backlog, &cell, 10);
        assert_eq!(ids(&round), ["big"]);
        // Tried again and still unplaced: it waits again.
        backlog.unplaced(&round);
        assert!(collect(&mut backlog, &cell, 10).is_empty());
    }

    #[test]
    fn retries_are_bounded_per_round_highest_priority_first() {
        let mut backlog = Backlog::new();
        let cell = view(&[("a", 100, 1), ("b", 200, 1), ("c", 150, 1)]);
        let all = collect(&mut backlog, &cell, 10);
        backlog.unplaced(&all);
        backlog.room_freed();
        let round = collect(&mut backlog, &cell, 2);
        assert_eq!(ids(&round), ["b", "c"]);
        backlog.unplaced(&round);
        assert_eq!(ids(&collect(&mut backlog, &cell, 2)), ["a"]);
    }

    #[test]
    fn new_tasks_are_planned_before_retries() {
        let mut backlog = Backlog::new();
        let cell = view(&[("old", 200, 1)]);
        let all = collect(&mut backlog, &cell, 10);
        backlog.unplaced(&all);
        backlog.room_freed();
        let cell = view(&[("old", 200, 1), ("new", 100, 1)]);
        assert_eq!(ids(&collect(&mut backlog, &cell, 10)), ["new"]);
        assert_eq!(backlog.stale_len(), 1, "the retry waits for the next round");
        // Not twice in a row: new tasks then share the round with the retries.
        let cell = view(&[("old", 200, 1), ("new", 100, 1), ("newer", 100, 1)]);
        assert_eq!(
            ids(&collect(&mut backlog, &cell, 10)),
            ["new", "newer", "old"]
        );
    }

    #[test]
    fn skipped_tasks_are_left_out() {
        let mut backlog = Backlog::new();
        let cell = view(&[("a", 100, 1), ("b", 100, 1)]);
        let collected = backlog.collect(&cell, |id| id.job == "a", 10);
        assert_eq!(ids(&collected.tasks), ["b"]);
    }

    #[test]
    fn tasks_no_longer_pending_or_in_a_new_incarnation_leave_the_backlog() {
        let mut backlog = Backlog::new();
        let cell = view(&[("a", 100, 1), ("b", 100, 1)]);
        let all = collect(&mut backlog, &cell, 10);
        backlog.unplaced(&all);
        assert_eq!(backlog.len(), 2);
        let cell = view(&[("b", 100, 2)]);
        assert_eq!(ids(&collect(&mut backlog, &cell, 10)), ["b"]);
        assert!(backlog.is_empty());
    }
}
