//! The scheduler's read-only picture of the cell: machines, the tasks placed on them, and
//! jobs with their tasks. Built from the master's cell-state stream (`view_sync`) or
//! directly by the simulator. Pure: no I/O, no clock.

use borg_model::{Constraint, MachineInfo, MachineState, Priority, Resources, TaskId, TaskState};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A task that holds resources on a machine (`Scheduled` or `Running`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedTask {
    pub id: TaskId,
    pub incarnation: u64,
    pub priority: Priority,
    /// Limits: what the master charges against the machine's capacity.
    pub limits: Resources,
}

/// A machine as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineView {
    pub name: String,
    pub capacity: Resources,
    pub attributes: BTreeMap<String, String>,
    pub state: MachineState,
    /// The master's version of the machine, named in placements (optimistic concurrency).
    pub version: u64,
    /// Allocation as the master reported it (sum of limits of its placed tasks).
    pub reported_allocated: Resources,
}

impl MachineView {
    pub fn new(info: MachineInfo, state: MachineState, version: u64) -> Self {
        MachineView {
            name: info.name,
            capacity: info.capacity,
            attributes: info.attributes,
            state,
            version,
            reported_allocated: Resources::ZERO,
        }
    }
}

/// One task of a job, whatever its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskView {
    pub state: TaskState,
    /// Machine the task is placed on; empty while pending.
    pub machine: String,
    pub incarnation: u64,
}

/// What the scheduler needs of a job: the requirements shared by its tasks, and the tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobView {
    pub name: String,
    pub owner: String,
    pub priority: Priority,
    /// Per-task limits.
    pub limits: Resources,
    pub constraints: Arc<[Constraint]>,
    /// False once the job is killed or done: its pending tasks are not placed.
    pub active: bool,
    pub tasks: BTreeMap<u32, TaskView>,
}

/// A task waiting for a machine, with everything placement needs to know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingTask {
    pub id: TaskId,
    /// Incarnation seen while pending; the master refuses a placement naming another.
    pub incarnation: u64,
    pub owner: String,
    pub priority: Priority,
    pub limits: Resources,
    pub constraints: Arc<[Constraint]>,
}

/// Tasks placed on one machine (kept apart from `MachineView` because a job may name a
/// machine the view has not received yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct MachineTasks {
    tasks: BTreeMap<TaskId, PlacedTask>,
    allocated: Resources,
}

impl MachineTasks {
    fn recompute_allocated(&mut self) {
        self.allocated = self
            .tasks
            .values()
            .fold(Resources::ZERO, |sum, t| sum + t.limits);
    }
}

/// The whole cell as of log index `index`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CellView {
    index: u64,
    machines: BTreeMap<String, MachineView>,
    jobs: BTreeMap<String, JobView>,
    placed: BTreeMap<String, MachineTasks>,
}

impl CellView {
    pub fn new() -> Self {
        CellView::default()
    }

    /// Log index the view reflects.
    pub fn index(&self) -> u64 {
        self.index
    }

    pub fn set_index(&mut self, index: u64) {
        self.index = index;
    }

    /// Forgets everything (before applying a fresh snapshot).
    pub fn clear(&mut self) {
        *self = CellView::default();
    }

    pub fn upsert_machine(&mut self, machine: MachineView) {
        self.machines.insert(machine.name.clone(), machine);
    }

    pub fn remove_machine(&mut self, name: &str) {
        self.machines.remove(name);
    }

    /// Replaces a job and re-indexes its placed tasks by machine.
    pub fn upsert_job(&mut self, job: JobView) {
        self.unindex_job(&job.name);
        for (index, task) in &job.tasks {
            if !task.state.is_placed() || task.machine.is_empty() {
                continue;
            }
            let id = TaskId::new(job.name.clone(), *index);
            let on_machine = self.placed.entry(task.machine.clone()).or_default();
            on_machine.tasks.insert(
                id.clone(),
                PlacedTask {
                    id,
                    incarnation: task.incarnation,
                    priority: job.priority,
                    limits: job.limits,
                },
            );
            on_machine.recompute_allocated();
        }
        self.jobs.insert(job.name.clone(), job);
    }

    pub fn remove_job(&mut self, name: &str) {
        self.unindex_job(name);
        self.jobs.remove(name);
    }

    fn unindex_job(&mut self, name: &str) {
        let Some(old) = self.jobs.get(name) else {
            return;
        };
        for (index, task) in &old.tasks {
            if task.machine.is_empty() {
                continue;
            }
            if let Some(on_machine) = self.placed.get_mut(&task.machine) {
                if on_machine
                    .tasks
                    .remove(&TaskId::new(name.to_owned(), *index))
                    .is_some()
                {
                    on_machine.recompute_allocated();
                }
                if on_machine.tasks.is_empty() {
                    self.placed.remove(&task.machine);
                }
            }
        }
    }

    /// Machines in name order.
    pub fn machines(&self) -> impl Iterator<Item = &MachineView> {
        self.machines.values()
    }

    pub fn machine(&self, name: &str) -> Option<&MachineView> {
        self.machines.get(name)
    }

    pub fn machine_count(&self) -> usize {
        self.machines.len()
    }

    pub fn jobs(&self) -> impl Iterator<Item = &JobView> {
        self.jobs.values()
    }

    pub fn job(&self, name: &str) -> Option<&JobView> {
        self.jobs.get(name)
    }

    /// Tasks placed on `machine`, in task id order.
    pub fn placed_on(&self, machine: &str) -> impl Iterator<Item = &PlacedTask> {
        self.placed
            .get(machine)
            .into_iter()
            .flat_map(|m| m.tasks.values())
    }

    /// What is allocated on the machine: per dimension the larger of the master's figure and
    /// the sum over the tasks the view knows, so a view caught between a machine update and
    /// the job update that explains it never sees room that is not there.
    pub fn allocated(&self, machine: &MachineView) -> Resources {
        let known = self
            .placed
            .get(&machine.name)
            .map(|m| m.allocated)
            .unwrap_or_default();
        max_per_dimension(&machine.reported_allocated, &known)
    }

    /// Pending tasks of active jobs, in (job, index) order.
    pub fn pending_tasks(&self) -> Vec<PendingTask> {
        let mut out = Vec::new();
        for job in self.jobs.values().filter(|j| j.active) {
            for (index, task) in &job.tasks {
                if task.state != TaskState::Pending {
                    continue;
                }
                out.push(PendingTask {
                    id: TaskId::new(job.name.clone(), *index),
                    incarnation: task.incarnation,
                    owner: job.owner.clone(),
                    priority: job.priority,
                    limits: job.limits,
                    constraints: Arc::clone(&job.constraints),
                });
            }
        }
        out
    }
}

/// Per-dimension maximum of two resource vectors.
pub fn max_per_dimension(a: &Resources, b: &Resources) -> Resources {
    Resources {
        cpu_millis: a.cpu_millis.max(b.cpu_millis),
        ram_bytes: a.ram_bytes.max(b.ram_bytes),
        disk_bytes: a.disk_bytes.max(b.disk_bytes),
        gpus: a.gpus.max(b.gpus),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, tasks: Vec<(TaskState, &str)>) -> JobView {
        JobView {
            name: name.into(),
            owner: "alice".into(),
            priority: 100,
            limits: Resources::new(100, 10),
            constraints: Arc::from(Vec::new()),
            active: true,
            tasks: tasks
                .into_iter()
                .enumerate()
                .map(|(i, (state, machine))| {
                    (
                        i as u32,
                        TaskView {
                            state,
                            machine: machine.into(),
                            incarnation: 1,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn placed_tasks_follow_job_updates() {
        let mut view = CellView::new();
        view.upsert_machine(MachineView::new(
            MachineInfo {
                name: "m1".into(),
                capacity: Resources::new(1000, 1000),
                ..Default::default()
            },
            MachineState::Up,
            1,
        ));
        view.upsert_job(job(
            "a",
            vec![(TaskState::Running, "m1"), (TaskState::Pending, "")],
        ));
        let m1 = view.machine("m1").unwrap().clone();
        assert_eq!(view.allocated(&m1), Resources::new(100, 10));
        assert_eq!(view.pending_tasks().len(), 1);

        view.upsert_job(job(
            "a",
            vec![(TaskState::Succeeded, "m1"), (TaskState::Running, "m1")],
        ));
        assert_eq!(view.placed_on("m1").count(), 1);
        assert_eq!(view.allocated(&m1), Resources::new(100, 10));
        assert!(view.pending_tasks().is_empty());

        view.remove_job("a");
        assert_eq!(view.placed_on("m1").count(), 0);
        assert_eq!(view.allocated(&m1), Resources::ZERO);
    }

    #[test]
    fn the_reported_allocation_is_never_ignored() {
        let mut view = CellView::new();
        let mut m = MachineView::new(
            MachineInfo {
                name: "m1".into(),
                capacity: Resources::new(1000, 1000),
                ..Default::default()
            },
            MachineState::Up,
            1,
        );
        m.reported_allocated = Resources::new(500, 5);
        view.upsert_machine(m.clone());
        view.upsert_job(job("a", vec![(TaskState::Running, "m1")]));
        assert_eq!(view.allocated(&m), Resources::new(500, 10));
    }

    #[test]
    fn inactive_jobs_have_no_pending_tasks() {
        let mut view = CellView::new();
        let mut j = job("a", vec![(TaskState::Pending, "")]);
        j.active = false;
        view.upsert_job(j);
        assert!(view.pending_tasks().is_empty());
    }
}
