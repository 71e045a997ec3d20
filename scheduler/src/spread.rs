//! Failure-domain counts per job: how many of a job's tasks each machine, rack and power
//! domain holds (from the view, plus this plan's placements, less its evictions), for the
//! spreading score terms. Domain names are interned by the view (`MachineRef::domains`) so
//! the per-candidate lookups compare integers, and the counts live with the job (whose
//! tasks are placed one after another), not with each machine, so a candidate's lookup
//! stays in cache.

use crate::cache::PositionHasher;
use crate::view::{CellView, MachineRef};
use borg_model::TaskId;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;

type Counts = HashMap<u32, u32, BuildHasherDefault<PositionHasher>>;

/// A machine's rack and power domain, interned (`None`: the attribute is missing).
pub type Domains = [Option<u32>; 2];

/// Index of a job's counts within one `Spread`.
pub type JobSlot = usize;

#[derive(Debug, Default)]
struct JobDomains {
    /// Per domain kind (rack, power): tasks per interned domain.
    counts: [Counts; 2],
    /// Tasks per machine (by index into the call's machines).
    on_machine: Counts,
}

/// Counts for the jobs seen in one `schedule` call, built lazily from the view.
#[derive(Debug, Default)]
pub struct Spread {
    jobs: Vec<JobDomains>,
    by_job: HashMap<String, JobSlot>,
}

impl Spread {
    /// The slot of `job`, its counts built from the view on first sight. `machines` are the
    /// call's machines in name order (as `CellView::machine_refs` gives them); tasks in
    /// `evicted` (by this plan) do not count on their machine.
    pub fn prepare(
        &mut self,
        view: &CellView,
        job: &str,
        machines: &[MachineRef<'_>],
        evicted: &HashSet<TaskId>,
    ) -> JobSlot {
        if let Some(&slot) = self.by_job.get(job) {
            return slot;
        }
        let mut domains = JobDomains::default();
        if let Some(j) = view.job(job) {
            for (index, task) in j.tasks.iter().filter(|(_, t)| t.state.is_placed()) {
                if let Some(of) = view.domains_of(&task.machine) {
                    domains.add(of);
                }
                let position =
                    machines.binary_search_by(|m| m.machine.name.as_str().cmp(&task.machine));
                if let (Ok(m), false) = (
                    position,
                    !evicted.is_empty() && evicted.contains(&TaskId::new(job, *index)),
                ) {
                    *domains.on_machine.entry(index_key(m)).or_insert(0) += 1;
                }
            }
        }
        let slot = self.jobs.len();
        self.jobs.push(domains);
        self.by_job.insert(job.to_owned(), slot);
        slot
    }

    /// Tasks of the job in slot `job` in the given rack and power domain.
    pub fn counts(&self, job: JobSlot, domains: Domains) -> (u32, u32) {
        let Some(j) = self.jobs.get(job) else {
            return (0, 0);
        };
        let count = |kind: usize| {
            domains[kind]
                .and_then(|d| j.counts[kind].get(&d))
                .copied()
                .unwrap_or(0)
        };
        (count(0), count(1))
    }

    /// Tasks of the job in slot `job` on machine `m` (an index into the call's machines).
    pub fn on_machine(&self, job: JobSlot, m: usize) -> u32 {
        self.jobs
            .get(job)
            .and_then(|j| j.on_machine.get(&index_key(m)))
            .copied()
            .unwrap_or(0)
    }

    /// Records a placement of a task of the job in slot `job` on machine `m`, in the given
    /// domains.
    pub fn record(&mut self, job: JobSlot, m: usize, domains: Domains) {
        if let Some(j) = self.jobs.get_mut(job) {
            j.add(domains);
            *j.on_machine.entry(index_key(m)).or_insert(0) += 1;
        }
    }

    /// Records that a task of `job` was evicted from machine `m` (a job not seen yet counts
    /// its tasks from the view, less the evicted ones, when prepared).
    pub fn evict(&mut self, job: &str, m: usize) {
        let Some(&slot) = self.by_job.get(job) else {
            return;
        };
        if let Some(count) = self.jobs[slot].on_machine.get_mut(&index_key(m)) {
            *count = count.saturating_sub(1);
        }
    }
}

fn index_key(m: usize) -> u32 {
    u32::try_from(m).unwrap_or(u32::MAX)
}

impl JobDomains {
    fn add(&mut self, domains: Domains) {
        for (kind, domain) in domains.into_iter().enumerate() {
            if let Some(d) = domain {
                *self.counts[kind].entry(d).or_insert(0) += 1;
            }
        }
    }
}
