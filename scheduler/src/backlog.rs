//! The backlog: pending tasks a round found no machine for. They stay out of later rounds
//! until the cell changes in a way that may make room for them, and are then retried a
//! bounded slice per round, highest priority first. Without it every round re-examined the
//! whole backlog: in the loaded Google 2011 cell (49k tasks that fit nowhere) a round cost
//! hundreds of ms, and a backlog larger than `PlacementConfig::tasks_max` kept the same
//! unplaceable tasks at the head of every round, starving the tasks of lower priority
//! behind them.
//!
//! Three things keep a round's cost with its new and retried tasks rather than the cell:
//! a job the view did not change since its tasks were all found waiting is skipped without
//! a look at its tasks (`CellView::job_generation`); room freed on a few machines
//! (`room::RoomFreed::On`) marks for retry only the tasks whose class fits on one of them
//! now (`room_freed_on`); and a retried task that still fits nowhere settles the job's
//! other tasks of the same shape with it (`unplaced`), as a round's equivalence class does.
//!
//! Tasks marked for room freed on named machines are retried on those machines only
//! (`Collected::among`, for `schedule::schedule_among`): a retry that examined the cell at
//! random (2,000 of 12,477 machines in the Google cell) would most often miss the few
//! machines with room, find nothing, and cost 20-300 ms a round for nothing.

use crate::class::Classes;
use crate::feasibility;
use crate::order::queue_order;
use crate::view::{CellView, PendingTask};
use crate::work::MachineWork;
use borg_model::{Priority, Resources, TaskId, TaskState};
use std::collections::{BTreeSet, HashMap, HashSet};

/// Most machines whose freed room targeted retries examine (`Backlog::room_freed_on`);
/// beyond it the targeted tasks are retried as room anywhere (a retry then examines the
/// cell at random, as a round of new tasks does).
pub const ROOM_ON_MACHINES_MAX: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    incarnation: u64,
    /// Room may have appeared since the task was last tried: retry it.
    stale: bool,
    /// (When stale) the room is on `Backlog::room_on`'s machines: retry it there.
    targeted: bool,
}

/// The backlog tasks of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
struct JobEntries {
    priority: Priority,
    /// Task index → entry.
    tasks: HashMap<u32, Entry>,
    /// Entries with `stale` set, and of these those with `targeted` set.
    stale: usize,
    targeted: usize,
    /// The job generation at which `tasks` held exactly the job's pending tasks (0: the
    /// job had pending tasks outside the backlog at the last look). While the view's
    /// generation of the job stays this, a round skips the job without a look at its tasks.
    complete_at: u64,
    /// The last scan that found the job with pending tasks (others are dropped).
    seen_scan: u64,
}

impl JobEntries {
    fn new(priority: Priority, scan: u64) -> Self {
        JobEntries {
            priority,
            tasks: HashMap::new(),
            stale: 0,
            targeted: 0,
            complete_at: 0,
            seen_scan: scan,
        }
    }

    fn mark_all_stale(&mut self) -> usize {
        let marked = self.tasks.len() - self.stale;
        for entry in self.tasks.values_mut() {
            entry.stale = true;
            entry.targeted = false;
        }
        self.stale = self.tasks.len();
        self.targeted = 0;
        marked
    }

    /// Targeted retries become retries anywhere.
    fn untarget(&mut self) {
        if self.targeted == 0 {
            return;
        }
        for entry in self.tasks.values_mut() {
            entry.targeted = false;
        }
        self.targeted = 0;
    }
}

#[derive(Debug, Default)]
pub struct Backlog {
    /// Job name → its backlog tasks.
    jobs: HashMap<String, JobEntries>,
    scan: u64,
    /// Machines room was freed on since targeted retries were last all done (at most
    /// `ROOM_ON_MACHINES_MAX`).
    room_on: BTreeSet<String>,
}

/// A round's candidates, from `Backlog::collect`.
#[derive(Debug, Default)]
pub struct Collected {
    /// Pending tasks not in the backlog: new, or back from a plan that did not commit.
    pub new: Vec<PendingTask>,
    /// Backlog tasks to retry: at most the `retries_max` asked for, highest priority first.
    pub retries: Vec<PendingTask>,
    /// Every pending task of the view, backlog included.
    pub pending: usize,
    /// Backlog tasks waiting for a retry, chosen in `retries` or not.
    pub stale: usize,
    /// When `retries` are targeted: the machines with room to retry them on.
    pub among: Option<Vec<String>>,
}

impl Backlog {
    pub fn new() -> Self {
        Backlog::default()
    }

    pub fn len(&self) -> usize {
        self.jobs.values().map(|j| j.tasks.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Tasks waiting to be retried.
    pub fn stale_len(&self) -> usize {
        self.jobs.values().map(|j| j.stale).sum()
    }

    /// Forgets every task.
    pub fn clear(&mut self) {
        self.jobs.clear();
        self.room_on.clear();
    }

    /// Room may have appeared anywhere: every task is to be retried. Returns how many
    /// tasks were not already.
    pub fn room_freed(&mut self) -> usize {
        self.room_on.clear();
        self.jobs.values_mut().map(JobEntries::mark_all_stale).sum()
    }

    /// Room may have appeared on `machines` (and nowhere else): marks for retry the tasks
    /// whose class fits on one of them in `view` now (feasibility as a round judges it,
    /// preemption included), to be retried on those machines (`Collected::among`). Tasks
    /// of jobs in alloc sets are marked whatever the machines, for a retry anywhere: their
    /// room is their alloc's. Returns how many tasks were marked.
    pub fn room_freed_on<'a>(
        &mut self,
        view: &CellView,
        machines: impl IntoIterator<Item = &'a str>,
    ) -> usize {
        let works: Vec<MachineWork<'_>> = machines
            .into_iter()
            .filter_map(|name| view.machine(name))
            .map(|machine| MachineWork::new(view, machine))
            .collect();
        let marked = self.mark_fitting(view, &works);
        if marked > 0 {
            self.room_on
                .extend(works.iter().map(|w| w.machine.name.clone()));
            if self.room_on.len() > ROOM_ON_MACHINES_MAX {
                self.room_on.clear();
                self.jobs.values_mut().for_each(JobEntries::untarget);
            }
        }
        marked
    }

    /// Marks for a targeted retry the tasks whose class fits on one of `works`.
    fn mark_fitting(&mut self, view: &CellView, works: &[MachineWork<'_>]) -> usize {
        let mut classes = Classes::new(true);
        // Class → fits on one of the machines.
        let mut fits: HashMap<usize, bool> = HashMap::new();
        let mut marked = 0;
        for (name, entries) in &mut self.jobs {
            if entries.stale == entries.tasks.len() {
                continue;
            }
            let Some(job) = view.job(name) else { continue };
            if job.alloc_set.is_some() {
                marked += entries.mark_all_stale();
                continue;
            }
            let package = view.package_of(name);
            // Shapes of the job's tasks (limits, ports) and whether they fit.
            let mut shapes: Vec<(Resources, u32, bool)> = Vec::new();
            let mut newly_stale = 0;
            for (index, entry) in entries.tasks.iter_mut().filter(|(_, e)| !e.stale) {
                let (limits, ports) = (job.limits_of(*index), job.ports_of(*index));
                let fit = match shapes.iter().find(|s| s.0 == limits && s.1 == ports) {
                    Some(shape) => shape.2,
                    None => {
                        let Some(task) = job.tasks.get(index) else {
                            continue;
                        };
                        let class = classes.class_of(&job.pending_task(*index, task), &package);
                        let fit = *fits.entry(class).or_insert_with(|| {
                            works
                                .iter()
                                .any(|w| feasibility::check(w, classes.get(class)).is_ok())
                        });
                        shapes.push((limits, ports, fit));
                        fit
                    }
                };
                if fit {
                    entry.stale = true;
                    entry.targeted = true;
                    newly_stale += 1;
                }
            }
            entries.stale += newly_stale;
            entries.targeted += newly_stale;
            marked += newly_stale;
        }
        marked
    }

    /// The candidates of a round: every pending task of active jobs that is not in the
    /// backlog and that `skip` does not exclude (plans being committed), and at most
    /// `retries_max` stale backlog tasks (highest priority first, then task id; none when
    /// 0): targeted ones first, alone, with the machines to retry them on in `among`.
    /// Entries of tasks no longer pending, or pending in a new incarnation, are dropped.
    pub fn collect(
        &mut self,
        view: &CellView,
        skip: impl Fn(&TaskId) -> bool,
        retries_max: usize,
    ) -> Collected {
        self.scan = self.scan.wrapping_add(1);
        let scan = self.scan;
        let mut out = Collected::default();
        let mut targeted = 0;
        for job in view.jobs_with_pending() {
            let generation = view.job_generation(&job.name);
            if let Some(entries) = self.jobs.get_mut(job.name.as_str()) {
                if entries.complete_at == generation && generation != 0 {
                    entries.seen_scan = scan;
                    out.pending += entries.tasks.len();
                    out.stale += entries.stale;
                    targeted += entries.targeted;
                    continue;
                }
            }
            // The job changed (or has tasks outside the backlog): look at every task.
            let mut old = self.jobs.remove(job.name.as_str());
            let mut entries = JobEntries::new(job.priority, scan);
            let mut complete = true;
            for (index, task) in &job.tasks {
                if task.state != TaskState::Pending {
                    continue;
                }
                out.pending += 1;
                let kept = old
                    .as_mut()
                    .and_then(|o| o.tasks.remove(index))
                    .filter(|e| e.incarnation == task.incarnation);
                if let Some(entry) = kept {
                    entries.stale += usize::from(entry.stale);
                    entries.targeted += usize::from(entry.stale && entry.targeted);
                    entries.tasks.insert(*index, entry);
                    continue;
                }
                complete = false;
                let pending = job.pending_task(*index, task);
                if !skip(&pending.id) {
                    out.new.push(pending);
                }
            }
            if complete {
                entries.complete_at = generation;
            }
            out.stale += entries.stale;
            targeted += entries.targeted;
            if !entries.tasks.is_empty() {
                self.jobs.insert(job.name.clone(), entries);
            }
        }
        self.jobs.retain(|_, entries| entries.seen_scan == scan);
        if targeted == 0 {
            self.room_on.clear();
        }
        if retries_max > 0 && targeted > 0 {
            out.retries = self.retries(view, &skip, retries_max, true);
            if !out.retries.is_empty() {
                out.among = Some(self.room_on.iter().cloned().collect());
                return out;
            }
        }
        if retries_max > 0 && out.stale > targeted {
            out.retries = self.retries(view, &skip, retries_max, false);
        }
        out
    }

    /// Up to `max` stale tasks, targeted or not as asked, highest priority first, then
    /// task id.
    fn retries(
        &self,
        view: &CellView,
        skip: &impl Fn(&TaskId) -> bool,
        max: usize,
        targeted: bool,
    ) -> Vec<PendingTask> {
        let mut jobs: Vec<(&str, &JobEntries)> = self
            .jobs
            .iter()
            .filter(|(_, e)| {
                if targeted {
                    e.targeted > 0
                } else {
                    e.stale > e.targeted
                }
            })
            .map(|(name, e)| (name.as_str(), e))
            .collect();
        jobs.sort_by(|a, b| b.1.priority.cmp(&a.1.priority).then_with(|| a.0.cmp(b.0)));
        let mut out = Vec::new();
        for (name, entries) in jobs {
            let Some(job) = view.job(name) else { continue };
            for (index, task) in &job.tasks {
                if out.len() >= max {
                    return out;
                }
                let stale = entries.tasks.get(index).is_some_and(|e| {
                    e.stale && e.targeted == targeted && e.incarnation == task.incarnation
                });
                if !stale || task.state != TaskState::Pending {
                    continue;
                }
                let pending = job.pending_task(*index, task);
                if !skip(&pending.id) {
                    out.push(pending);
                }
            }
        }
        out
    }

    /// The round left these tasks unplaced: they wait for room. So do the job's other
    /// backlog tasks of the same shape (limits and ports; the job gives the rest of the
    /// class), which the round would have found to fit nowhere too. Not for jobs in alloc
    /// sets: each of their tasks has its own alloc.
    pub fn unplaced<'a>(
        &mut self,
        view: &CellView,
        tasks: impl IntoIterator<Item = &'a PendingTask>,
    ) {
        // A retry settles the entries retried as it was (targeted or not): a task that
        // fit nowhere in the cell at random may still fit where room was freed.
        let mut shapes: HashSet<(&str, Resources, u32, bool)> = HashSet::new();
        for task in tasks {
            let entries = self
                .jobs
                .entry(task.id.job.clone())
                .or_insert_with(|| JobEntries::new(task.priority, self.scan));
            let entry = Entry {
                incarnation: task.incarnation,
                stale: false,
                targeted: false,
            };
            let mut targeted = false;
            if let Some(old) = entries.tasks.insert(task.id.index, entry) {
                if old.stale {
                    entries.stale -= 1;
                    if old.targeted {
                        entries.targeted -= 1;
                        targeted = true;
                    }
                }
            }
            if entries.stale > 0 {
                shapes.insert((task.id.job.as_str(), task.limits, task.ports, targeted));
            }
        }
        for (name, limits, ports, targeted) in shapes {
            let (Some(entries), Some(job)) = (self.jobs.get_mut(name), view.job(name)) else {
                continue;
            };
            if job.alloc_set.is_some() {
                continue;
            }
            let mut settled = 0;
            for (index, entry) in entries.tasks.iter_mut() {
                if entry.stale
                    && entry.targeted == targeted
                    && job.limits_of(*index) == limits
                    && job.ports_of(*index) == ports
                {
                    entry.stale = false;
                    entry.targeted = false;
                    settled += 1;
                }
            }
            entries.stale -= settled;
            if targeted {
                entries.targeted -= settled;
            }
        }
    }
}

/// A round's new tasks with at most `replacements_max` of those placed before (victims of
/// preemptions and tasks of lost machines: incarnation above 0), highest priority first;
/// tasks never placed all stay (with `replacements_max` 0, they alone). Returns them and how
/// many were left for a later round.
/// A preemption of a large job re-pends hundreds of tasks, which in turn preempt; in one
/// round their plan and its commit took 140-500 ms, and a job arriving meanwhile waited for
/// both. In bounded rounds it waits for one small round at most, and its own round is
/// small. Within a round the library still orders tasks by priority.
pub fn bound_replacements(
    new: Vec<PendingTask>,
    replacements_max: usize,
) -> (Vec<PendingTask>, usize) {
    let replacements = new.iter().filter(|t| t.incarnation > 0).count();
    if replacements <= replacements_max {
        return (new, 0);
    }
    let (mut out, mut replaced): (Vec<PendingTask>, Vec<PendingTask>) =
        new.into_iter().partition(|t| t.incarnation == 0);
    // Stable: task order within a priority is kept.
    replaced.sort_by_key(|t| std::cmp::Reverse(t.priority));
    let left = replaced.len() - replacements_max;
    replaced.truncate(replacements_max);
    out.extend(replaced);
    (out, left)
}

/// At most `max` of a round's new tasks: first the first `heads_per_job` tasks never placed
/// of each job (jobs in queue order: priority, then owners in turn), then the rest in queue
/// order. Returns them and how many were left for later rounds. A large round delays every
/// job arriving while it is planned and committed, so rounds are small; and in a burst of
/// several jobs each gets its first placements in the first round rather than after every
/// task of the jobs of higher priority (which still go first within each round).
pub fn bound_new_round(
    new: Vec<PendingTask>,
    max: usize,
    heads_per_job: usize,
) -> (Vec<PendingTask>, usize) {
    if new.len() <= max {
        return (new, 0);
    }
    let order = queue_order(&new);
    let mut taken = vec![false; new.len()];
    let mut count = 0;
    let mut heads: HashMap<&str, usize> = HashMap::new();
    for &i in &order {
        if count >= max {
            break;
        }
        let task = &new[i];
        if task.incarnation != 0 {
            continue;
        }
        let head = heads.entry(task.id.job.as_str()).or_default();
        if *head < heads_per_job {
            *head += 1;
            taken[i] = true;
            count += 1;
        }
    }
    for &i in &order {
        if count >= max {
            break;
        }
        if !taken[i] {
            taken[i] = true;
            count += 1;
        }
    }
    let left = new.len() - count;
    let round = new
        .into_iter()
        .zip(taken)
        .filter_map(|(task, taken)| taken.then_some(task))
        .collect();
    (round, left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{JobView, MachineView, TaskView};
    use borg_model::{MachineInfo, MachineState};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    /// A job of `tasks` pending tasks of 100m cpu each (in `incarnation`).
    fn job(name: &str, priority: Priority, tasks: u32, incarnation: u64) -> JobView {
        JobView {
            name: name.into(),
            owner: "u".into(),
            priority,
            limits: Resources::new(100, 1 << 20),
            limits_by_task: BTreeMap::new(),
            ports_by_task: BTreeMap::new(),
            alloc_set: None,
            constraints: Arc::from(Vec::new()),
            package: Arc::from("/bin/true"),
            ports: 0,
            active: true,
            tasks: (0..tasks)
                .map(|i| {
                    let task = TaskView {
                        state: TaskState::Pending,
                        machine: String::new(),
                        incarnation,
                    };
                    (i, task)
                })
                .collect(),
        }
    }

    fn view(jobs: &[(&str, Priority, u64)]) -> CellView {
        let mut view = CellView::new();
        for (name, priority, incarnation) in jobs {
            view.upsert_job(job(name, *priority, 1, *incarnation));
        }
        view
    }

    fn ids(tasks: &[PendingTask]) -> Vec<String> {
        tasks.iter().map(|t| t.id.to_string()).collect()
    }

    /// A round: new tasks and up to `retries_max` retries, all left unplaced.
    fn round_unplaced(backlog: &mut Backlog, view: &CellView, retries_max: usize) -> Vec<String> {
        let collected = backlog.collect(view, |_| false, retries_max);
        let tasks: Vec<PendingTask> = collected.new.into_iter().chain(collected.retries).collect();
        backlog.unplaced(view, &tasks);
        ids(&tasks)
    }

    #[test]
    fn unplaced_tasks_wait_until_room_may_have_appeared() {
        let mut backlog = Backlog::new();
        let mut cell = view(&[("big", 100, 1)]);
        assert_eq!(round_unplaced(&mut backlog, &cell, 10), ["big/0"]);
        cell.upsert_job(job("new", 100, 1, 1));
        let collected = backlog.collect(&cell, |_| false, 10);
        assert_eq!(ids(&collected.new), ["new/0"]);
        assert!(collected.retries.is_empty());
        assert_eq!((collected.pending, collected.stale), (2, 0));
        assert_eq!(backlog.len(), 1);

        assert_eq!(backlog.room_freed(), 1);
        assert_eq!(backlog.stale_len(), 1);
        cell.remove_job("new");
        let collected = backlog.collect(&cell, |_| false, 0);
        assert!(collected.retries.is_empty(), "no retries unless asked");
        assert_eq!(collected.stale, 1);
        assert_eq!(round_unplaced(&mut backlog, &cell, 10), ["big/0"]);
        // Tried again and still unplaced: it waits again.
        assert!(round_unplaced(&mut backlog, &cell, 10).is_empty());
        assert_eq!(backlog.stale_len(), 0);
    }

    #[test]
    fn retries_are_bounded_per_round_highest_priority_first() {
        let mut backlog = Backlog::new();
        let cell = view(&[("a", 100, 1), ("b", 200, 1), ("c", 150, 1)]);
        round_unplaced(&mut backlog, &cell, 10);
        backlog.room_freed();
        assert_eq!(round_unplaced(&mut backlog, &cell, 2), ["b/0", "c/0"]);
        assert_eq!(round_unplaced(&mut backlog, &cell, 2), ["a/0"]);
    }

    #[test]
    fn a_retry_that_fits_nowhere_settles_its_jobs_tasks_of_the_same_shape() {
        let mut backlog = Backlog::new();
        let mut cell = CellView::new();
        cell.upsert_job(job("many", 200, 5, 1));
        cell.upsert_job(job("other", 100, 1, 1));
        round_unplaced(&mut backlog, &cell, 10);
        backlog.room_freed();
        assert_eq!(backlog.stale_len(), 6);
        assert_eq!(round_unplaced(&mut backlog, &cell, 1), ["many/0"]);
        assert_eq!(backlog.stale_len(), 1, "the other four of many settle too");
        assert_eq!(round_unplaced(&mut backlog, &cell, 1), ["other/0"]);
    }

    #[test]
    fn skipped_tasks_are_left_out() {
        let mut backlog = Backlog::new();
        let cell = view(&[("a", 100, 1), ("b", 100, 1)]);
        let collected = backlog.collect(&cell, |id| id.job == "a", 10);
        assert_eq!(ids(&collected.new), ["b/0"]);
    }

    #[test]
    fn tasks_no_longer_pending_or_in_a_new_incarnation_leave_the_backlog() {
        let mut backlog = Backlog::new();
        let mut cell = view(&[("a", 100, 1), ("b", 100, 1)]);
        round_unplaced(&mut backlog, &cell, 10);
        assert_eq!(backlog.len(), 2);
        cell.remove_job("a");
        cell.upsert_job(job("b", 100, 1, 2));
        let collected = backlog.collect(&cell, |_| false, 10);
        assert_eq!(ids(&collected.new), ["b/0"]);
        assert!(backlog.is_empty());
    }

    #[test]
    fn room_on_some_machines_retries_only_the_tasks_that_fit_there() {
        let mut cell = CellView::new();
        for (name, cpu) in [("small", 150), ("large", 10_000)] {
            let info = MachineInfo {
                name: name.into(),
                address: "127.0.0.1:1".into(),
                capacity: Resources::new(cpu, 1 << 30),
                ..MachineInfo::default()
            };
            cell.upsert_machine(MachineView::new(info, MachineState::Up, 1));
        }
        let mut big = job("big", 100, 2, 1);
        big.limits = Resources::new(1_000, 1 << 20);
        cell.upsert_job(big);
        cell.upsert_job(job("tiny", 100, 3, 1));
        let mut backlog = Backlog::new();
        round_unplaced(&mut backlog, &cell, 10);

        assert_eq!(backlog.room_freed_on(&cell, ["small"]), 3, "only tiny fits");
        let collected = backlog.collect(&cell, |_| false, 10);
        assert_eq!(ids(&collected.retries), ["tiny/0", "tiny/1", "tiny/2"]);
        assert_eq!(collected.among, Some(vec!["small".to_owned()]));
        assert_eq!(backlog.room_freed_on(&cell, ["large"]), 2, "big fits there");
        assert_eq!(backlog.room_freed_on(&cell, ["gone"]), 0);
        assert_eq!(backlog.stale_len(), 5);
        let collected = backlog.collect(&cell, |_| false, 10);
        assert_eq!(collected.retries.len(), 5);
        assert_eq!(
            collected.among,
            Some(vec!["large".to_owned(), "small".to_owned()])
        );
    }

    #[test]
    fn targeted_retries_go_first_alone_and_room_anywhere_untargets_them() {
        let mut cell = CellView::new();
        let info = MachineInfo {
            name: "m".into(),
            address: "127.0.0.1:1".into(),
            capacity: Resources::new(10_000, 1 << 30),
            ..MachineInfo::default()
        };
        cell.upsert_machine(MachineView::new(info, MachineState::Up, 1));
        cell.upsert_job(job("a", 100, 2, 1));
        cell.upsert_job(job("b", 200, 1, 1));
        let mut backlog = Backlog::new();
        round_unplaced(&mut backlog, &cell, 10);
        // b's retry is anywhere; a's are on "m" (a's tasks are listed, b's not).
        assert_eq!(backlog.room_freed(), 3);
        let collected = backlog.collect(&cell, |_| false, 10);
        backlog.unplaced(&cell, collected.retries.iter().filter(|t| t.id.job == "a"));
        assert_eq!(backlog.room_freed_on(&cell, ["m"]), 2);
        let collected = backlog.collect(&cell, |_| false, 10);
        assert_eq!(ids(&collected.retries), ["a/0", "a/1"], "targeted first");
        assert_eq!(collected.among, Some(vec!["m".to_owned()]));
        // A targeted retry that fits nowhere settles only the job's targeted entries.
        backlog.unplaced(&cell, &collected.retries[..1]);
        let collected = backlog.collect(&cell, |_| false, 10);
        assert_eq!(ids(&collected.retries), ["b/0"]);
        assert_eq!(collected.among, None);

        assert_eq!(backlog.room_freed_on(&cell, ["m"]), 2);
        assert_eq!(backlog.room_freed(), 0, "all were stale already");
        let collected = backlog.collect(&cell, |_| false, 10);
        assert_eq!(ids(&collected.retries), ["b/0", "a/0", "a/1"]);
        assert_eq!(collected.among, None, "room anywhere: retried anywhere");
    }

    #[test]
    fn replacements_are_bounded_per_round_and_new_jobs_always_go() {
        let task = |job: &str, index: u32, priority: Priority, incarnation: u64| {
            let mut j = self::job(job, priority, index + 1, incarnation);
            let t = j.tasks.remove(&index).expect("task");
            j.pending_task(index, &t)
        };
        let new = vec![
            task("victims", 0, 100, 2),
            task("fresh", 0, 50, 0),
            task("victims", 1, 100, 2),
            task("high", 0, 200, 1),
            task("fresh", 1, 50, 0),
        ];
        let (round, left) = bound_replacements(new.clone(), 2);
        assert_eq!(ids(&round), ["fresh/0", "fresh/1", "high/0", "victims/0"]);
        assert_eq!(left, 1);
        let (round, left) = bound_replacements(new.clone(), 0);
        assert_eq!(ids(&round), ["fresh/0", "fresh/1"], "never placed alone");
        assert_eq!(left, 3);
        let (round, left) = bound_replacements(new, 3);
        assert_eq!(round.len(), 5, "within the bound: unchanged");
        assert_eq!(left, 0);
    }

    #[test]
    fn a_bounded_round_takes_each_jobs_head_then_priority_order() {
        let tasks = |name: &str, priority: Priority, n: u32| {
            let j = self::job(name, priority, n, 0);
            j.tasks
                .iter()
                .map(|(index, t)| j.pending_task(*index, t))
                .collect::<Vec<_>>()
        };
        let mut new = tasks("big", 200, 6);
        new.extend(tasks("small", 100, 3));
        new.extend(tasks("low", 50, 1));
        let (round, left) = bound_new_round(new.clone(), 6, 2);
        let mut got = ids(&round);
        got.sort();
        // Heads: big/0-1, small/0-1, low/0; then the next in priority order: big/2.
        assert_eq!(
            got,
            ["big/0", "big/1", "big/2", "low/0", "small/0", "small/1"]
        );
        assert_eq!(left, 4);
        let (round, left) = bound_new_round(new.clone(), 10, 2);
        assert_eq!((round.len(), left), (10, 0), "within the bound: unchanged");
        // Fewer slots than heads: the heads of the higher priorities.
        let (round, _) = bound_new_round(new, 3, 2);
        let mut got = ids(&round);
        got.sort();
        assert_eq!(got, ["big/0", "big/1", "small/0"]);
    }
}
