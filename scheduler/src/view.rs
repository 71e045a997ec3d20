//! The scheduler's read-only picture of the cell: machines, the tasks placed on them, and
//! jobs with their tasks. Built from the master's cell-state stream (`view_sync`) or
//! directly by the simulator. Pure: no I/O, no clock.

use crate::scoring::{POWER_ATTRIBUTE, RACK_ATTRIBUTE};
use crate::spread::Domains;
use borg_model::{
    Constraint, JobSpec, MachineInfo, MachineState, Priority, Resources, TaskId, TaskState,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// A task that holds resources on a machine (`Scheduled` or `Running`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedTask {
    pub id: TaskId,
    pub incarnation: u64,
    pub priority: Priority,
    /// Limits: what the master charges against the machine's capacity.
    pub limits: Resources,
    /// What the task is expected to use: non-prod feasibility counts this instead of the
    /// limit (reclaimed resources). Starts at the limit; the master will compute it from
    /// reported usage once reservations are on the wire (see `CellView::set_reservation`).
    pub reservation: Resources,
    /// The task's package (its command path), for package locality.
    pub package: Arc<str>,
    /// Ports of the machine's range the task holds (`borg_model::ports_needed`).
    pub ports: u32,
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
    /// Ports the machine's borglet hands out (`MachineInfo::ports`).
    pub port_capacity: u32,
}

impl MachineView {
    pub fn new(info: MachineInfo, state: MachineState, version: u64) -> Self {
        let port_capacity = info.ports();
        MachineView {
            port_capacity,
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
    /// Limits of the tasks whose per-task override asks for other limits than `limits`.
    pub limits_by_task: BTreeMap<u32, Resources>,
    /// Ports of the tasks whose per-task override asks for a different number than `ports`.
    pub ports_by_task: BTreeMap<u32, u32>,
    /// The alloc set whose alloc i holds task i: such tasks are placed in their allocs and
    /// take no room of their own on a machine (see `alloc`).
    pub alloc_set: Option<String>,
    pub constraints: Arc<[Constraint]>,
    /// The tasks' package: the command path (machines that ran it have it cached).
    pub package: Arc<str>,
    /// Ports each task holds on its machine (`borg_model::ports_needed` of its port names).
    pub ports: u32,
    /// False once the job is killed or done: its pending tasks are not placed.
    pub active: bool,
    pub tasks: BTreeMap<u32, TaskView>,
}

impl JobView {
    /// The view of a job with `spec`, whose tasks are `tasks`.
    pub fn from_spec(spec: &JobSpec, active: bool, tasks: BTreeMap<u32, TaskView>) -> JobView {
        JobView {
            name: spec.name.clone(),
            owner: spec.owner.clone(),
            priority: spec.priority,
            limits: spec.task.resources,
            limits_by_task: spec
                .task_overrides
                .iter()
                .filter(|(_, t)| t.resources != spec.task.resources)
                .map(|(index, t)| (*index, t.resources))
                .collect(),
            ports_by_task: spec
                .task_overrides
                .iter()
                .map(|(index, t)| (*index, borg_model::ports_needed(&t.ports)))
                .filter(|(_, ports)| *ports != borg_model::ports_needed(&spec.task.ports))
                .collect(),
            alloc_set: spec.alloc_set.clone(),
            constraints: Arc::from(spec.constraints.as_slice()),
            package: Arc::from(spec.task.command.as_str()),
            ports: borg_model::ports_needed(&spec.task.ports),
            active,
            tasks,
        }
    }

    /// Limits of task `index`: its override's, else the job's.
    pub fn limits_of(&self, index: u32) -> Resources {
        self.limits_by_task
            .get(&index)
            .copied()
            .unwrap_or(self.limits)
    }

    /// Task `index` (`task` in `tasks`) as a task to place.
    pub fn pending_task(&self, index: u32, task: &TaskView) -> PendingTask {
        PendingTask {
            id: TaskId::new(self.name.clone(), index),
            incarnation: task.incarnation,
            owner: self.owner.clone(),
            priority: self.priority,
            limits: self.limits_of(index),
            constraints: Arc::clone(&self.constraints),
            ports: self.ports_of(index),
        }
    }

    /// Whether `other` asks the same of every task (all but the tasks themselves equal):
    /// then a task that did not change holds the same on its machine.
    pub fn same_shape(&self, other: &JobView) -> bool {
        self.name == other.name
            && self.owner == other.owner
            && self.priority == other.priority
            && self.limits == other.limits
            && self.limits_by_task == other.limits_by_task
            && self.ports_by_task == other.ports_by_task
            && self.alloc_set == other.alloc_set
            && self.constraints == other.constraints
            && self.package == other.package
            && self.ports == other.ports
            && self.active == other.active
    }

    /// Ports task `index` holds: its override's, else the job's.
    pub fn ports_of(&self, index: u32) -> u32 {
        self.ports_by_task
            .get(&index)
            .copied()
            .unwrap_or(self.ports)
    }
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
    /// Ports it will hold on its machine (a feasibility dimension beside `limits`).
    pub ports: u32,
}

/// Tasks placed on one machine (kept apart from `MachineView` because a job may name a
/// machine the view has not received yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct MachineTasks {
    tasks: PlacedTasks,
    allocated: Resources,
    /// Sum of the placed tasks' reservations.
    reserved: Resources,
    /// Sum of the placed tasks' ports.
    ports: u32,
}

impl MachineTasks {
    fn recompute_allocated(&mut self) {
        self.allocated = self
            .tasks
            .iter()
            .fold(Resources::ZERO, |sum, t| sum + t.limits);
        self.reserved = self
            .tasks
            .iter()
            .fold(Resources::ZERO, |sum, t| sum + t.reservation);
        self.ports = self
            .tasks
            .iter()
            .fold(0u32, |sum, t| sum.saturating_add(t.ports));
    }
}

/// A machine's placed tasks in eviction preference order: priority, then task id. Every
/// `schedule` call copies this order for each machine it examines (`MachineWork::of`), so
/// it is kept sorted here rather than sorted per call. A look-up by id alone searches each
/// priority's run (a machine holds few priorities, and may hold a thousand tasks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PlacedTasks(Vec<PlacedTask>);

impl PlacedTasks {
    fn position(&self, task: &PlacedTask) -> Result<usize, usize> {
        self.0
            .binary_search_by(|t| (t.priority, &t.id).cmp(&(task.priority, &task.id)))
    }

    /// Adds `task`, replacing the task of the same id (at whatever priority).
    fn insert(&mut self, task: PlacedTask) {
        match self.position(&task) {
            Ok(i) => self.0[i] = task,
            Err(_) => {
                self.remove(&task.id);
                let i = self.position(&task).unwrap_or_else(|i| i);
                self.0.insert(i, task);
            }
        }
    }

    /// Where task `id` is, searching each priority's run by id.
    fn find(&self, id: &TaskId) -> Option<usize> {
        let mut start = 0;
        while let Some(first) = self.0.get(start) {
            let run = &self.0[start..];
            let end = run.partition_point(|t| t.priority == first.priority);
            if let Ok(i) = run[..end].binary_search_by(|t| t.id.cmp(id)) {
                return Some(start + i);
            }
            start += end;
        }
        None
    }

    fn remove(&mut self, id: &TaskId) {
        if let Some(i) = self.find(id) {
            self.0.remove(i);
        }
    }

    fn get(&self, id: &TaskId) -> Option<&PlacedTask> {
        self.find(id).map(|i| &self.0[i])
    }

    /// For changes that keep the order (not the priority or id).
    fn reservation_mut(&mut self, id: &TaskId) -> Option<&mut Resources> {
        self.find(id).map(|i| &mut self.0[i].reservation)
    }

    fn iter(&self) -> std::slice::Iter<'_, PlacedTask> {
        self.0.iter()
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Everything the view holds about one machine name, kept together so that placement
/// reads a machine's tasks, packages and generation without a look-up by name per machine.
/// A job may name a machine the view has not received yet: then `machine` is `None`.
/// Small (the rest is boxed): a scan over the cell's entries and their generations reads
/// the map's nodes, not a cache line per machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct MachineEntry {
    /// The view generation at which the machine or its tasks last changed: score caches key
    /// on it.
    changed_at: u64,
    machine: Option<Box<MachineView>>,
    held: Box<Held>,
}

/// What the view holds on a machine besides the machine itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Held {
    tasks: MachineTasks,
    /// Tasks (any state) per package that ran or run there, per the view.
    packages: HashMap<Arc<str>, u32>,
    /// The machine's rack and power domain, interned (see `CellView::domain_ids`).
    domains: Domains,
}

impl MachineEntry {
    /// Holds nothing worth keeping (its generation only matters while it holds something).
    fn is_empty(&self) -> bool {
        self.machine.is_none() && self.held.tasks.tasks.is_empty() && self.held.packages.is_empty()
    }
}

/// A machine of the view with what the view holds about it: what `CellView`'s per-machine
/// questions (`allocated`, `placed_on`, `machine_generation`, ...) answer, without a
/// look-up by name. From `CellView::machine_refs` (in name order) or
/// `CellView::machine_ref`.
#[derive(Debug, Clone, Copy)]
pub struct MachineRef<'a> {
    pub machine: &'a MachineView,
    /// `None`: the view holds no task or generation for the machine's name.
    entry: Option<&'a MachineEntry>,
}

impl<'a> MachineRef<'a> {
    /// Generation at which the machine or its tasks last changed (0: the view holds nothing
    /// under the name).
    pub fn generation(&self) -> u64 {
        self.entry.map_or(0, |e| e.changed_at)
    }

    /// Tasks placed on the machine, in eviction preference order (priority, then task id).
    pub fn placed(&self) -> impl Iterator<Item = &'a PlacedTask> + 'a {
        self.entry
            .into_iter()
            .flat_map(|e| e.held.tasks.tasks.iter())
    }

    /// How many tasks are placed on the machine.
    pub fn placed_count(&self) -> usize {
        self.entry.map_or(0, |e| e.held.tasks.tasks.len())
    }

    /// See `CellView::allocated`.
    pub fn allocated(&self) -> Resources {
        let known = self
            .entry
            .map(|e| e.held.tasks.allocated)
            .unwrap_or_default();
        max_per_dimension(&self.machine.reported_allocated, &known)
    }

    /// See `CellView::ports_used`.
    pub fn ports_used(&self) -> u32 {
        self.entry.map_or(0, |e| e.held.tasks.ports)
    }

    /// See `CellView::reserved`.
    pub fn reserved(&self) -> Resources {
        let Some(tasks) = self.entry.map(|e| &e.held.tasks) else {
            return self.machine.reported_allocated;
        };
        let unexplained = self
            .machine
            .reported_allocated
            .saturating_sub(&tasks.allocated);
        tasks.reserved + unexplained
    }

    /// Whether a task of `package` runs or ran on the machine, per the view.
    pub fn has_package(&self, package: &str) -> bool {
        self.entry
            .is_some_and(|e| e.held.packages.contains_key(package))
    }

    /// The machine's rack and power domain, interned: equal ids, equal domains.
    pub fn domains(&self) -> Domains {
        self.entry.map_or([None; 2], |e| e.held.domains)
    }
}

/// The whole cell as of log index `index`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CellView {
    index: u64,
    /// Per machine name: the machine (once received), its tasks, packages and generation.
    machines: BTreeMap<String, MachineEntry>,
    /// Entries of `machines` that hold a machine.
    machine_count: usize,
    /// Per failure-domain attribute (rack, power), an id per value seen, so that spreading
    /// compares integers. Grows with the distinct values seen (a cell's racks and power
    /// domains); reset by `clear`.
    domain_ids: [HashMap<String, u32>; 2],
    jobs: BTreeMap<String, JobView>,
    /// Active jobs with at least one pending task: a round scans these, not every task of a
    /// cell where most tasks run.
    pending_jobs: BTreeSet<String>,
    generation: u64,
    machine_set_generation: u64,
    /// Per job, the job generation at which it was last upserted: the scheduler's backlog
    /// skips a job that did not change without looking at its tasks.
    job_changed_at: HashMap<String, u64>,
    jobs_generation: u64,
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
        // Generations keep counting so that score caches never mistake a new machine state
        // for an old one.
        let generation = self.generation + 1;
        let jobs_generation = self.jobs_generation;
        *self = CellView::default();
        self.generation = generation;
        self.machine_set_generation = generation;
        self.jobs_generation = jobs_generation;
    }

    /// Generation at which the job was last upserted (0: not in the view). Never reused,
    /// not even across `clear`.
    pub fn job_generation(&self, name: &str) -> u64 {
        self.job_changed_at.get(name).copied().unwrap_or(0)
    }

    pub fn upsert_machine(&mut self, machine: MachineView) {
        let domains = self.intern_domains(&machine);
        let entry = self.touch(&machine.name);
        entry.held.domains = domains;
        if entry.machine.replace(Box::new(machine)).is_none() {
            self.machine_count += 1;
            self.machine_set_generation = self.generation;
        }
    }

    pub fn remove_machine(&mut self, name: &str) {
        if self.machines.contains_key(name) && self.touch(name).machine.take().is_some() {
            self.machine_count -= 1;
            self.machine_set_generation = self.generation;
        }
        self.prune(name);
    }

    /// The machine's rack and power domain as ids (new values get the next id).
    fn intern_domains(&mut self, machine: &MachineView) -> Domains {
        let mut out = [None; 2];
        for (kind, attribute) in [RACK_ATTRIBUTE, POWER_ATTRIBUTE].into_iter().enumerate() {
            if let Some(value) = machine.attributes.get(attribute) {
                let ids = &mut self.domain_ids[kind];
                let next = u32::try_from(ids.len()).unwrap_or(u32::MAX);
                out[kind] = Some(match ids.get(value) {
                    Some(&id) => id,
                    None => {
                        ids.insert(value.clone(), next);
                        next
                    }
                });
            }
        }
        out
    }

    /// The interned rack and power domain of machine `name` (`None`: not in the view).
    pub fn domains_of(&self, name: &str) -> Option<Domains> {
        self.machines
            .get(name)
            .filter(|e| e.machine.is_some())
            .map(|e| e.held.domains)
    }

    /// Drops the entry of `name` if it holds nothing any more.
    fn prune(&mut self, name: &str) {
        if self.machines.get(name).is_some_and(MachineEntry::is_empty) {
            self.machines.remove(name);
        }
    }

    /// Generation at which a machine was last added or removed: positions in `machines()`
    /// are stable while it stays the same.
    pub fn machine_set_generation(&self) -> u64 {
        self.machine_set_generation
    }

    /// Generation at which the machine or its tasks last changed (0: the view holds nothing
    /// under the name).
    pub fn machine_generation(&self, name: &str) -> u64 {
        self.machines.get(name).map_or(0, |e| e.changed_at)
    }

    /// Marks the machine changed (a new generation); returns its entry (created if new).
    fn touch(&mut self, machine: &str) -> &mut MachineEntry {
        self.generation += 1;
        let entry = self.machines.entry(machine.to_owned()).or_default();
        entry.changed_at = self.generation;
        entry
    }

    /// Whether a task of `package` runs or ran on the machine, per the view.
    pub fn has_package(&self, machine: &str, package: &str) -> bool {
        self.machines
            .get(machine)
            .is_some_and(|e| e.held.packages.contains_key(package))
    }

    /// Sets a placed task's reservation (the seam for reservations computed from usage;
    /// until they are on the wire every reservation is the task's limit). False when the
    /// task is not placed on `machine` in the view.
    pub fn set_reservation(
        &mut self,
        machine: &str,
        task: &TaskId,
        reservation: Resources,
    ) -> bool {
        let mut resum = BTreeSet::new();
        let placed = self.note_reservation(machine, task, reservation, &mut resum);
        self.recompute_allocated_on(resum);
        placed
    }

    /// `set_reservation` without the re-sum: a changed machine is added to `resum`.
    fn note_reservation(
        &mut self,
        machine: &str,
        task: &TaskId,
        reservation: Resources,
        resum: &mut BTreeSet<String>,
    ) -> bool {
        let Some(held) = self
            .machines
            .get_mut(machine)
            .and_then(|m| m.held.tasks.tasks.reservation_mut(task))
        else {
            return false;
        };
        if *held != reservation {
            *held = reservation;
            self.touch(machine);
            resum.insert(machine.to_owned());
        }
        true
    }

    /// A job changed: `collect` looks at it again.
    fn job_changed(&mut self, name: &str) {
        self.jobs_generation += 1;
        self.job_changed_at
            .insert(name.to_owned(), self.jobs_generation);
    }

    /// Keeps `pending_jobs` holding the active jobs with a pending task.
    fn note_pending(&mut self, job: &JobView) {
        if job.active && job.tasks.values().any(|t| t.state == TaskState::Pending) {
            self.pending_jobs.insert(job.name.clone());
        } else {
            self.pending_jobs.remove(&job.name);
        }
    }

    /// Replaces a job and re-indexes its placed tasks by machine. When the job's
    /// requirements are unchanged (`JobView::same_shape`) only the tasks that changed move
    /// in the indexes: an update of one task of a large job costs that task.
    pub fn upsert_job(&mut self, job: JobView) {
        self.job_changed(&job.name);
        let mut resum = BTreeSet::new();
        match self.jobs.remove(&job.name) {
            Some(old) if old.same_shape(&job) => {
                for (index, before) in &old.tasks {
                    if job.tasks.get(index) != Some(before) {
                        self.unindex_task(&old, *index, before, &mut resum);
                    }
                }
                for (index, now) in &job.tasks {
                    if old.tasks.get(index) != Some(now) {
                        self.index_task(&job, *index, now, &mut resum);
                    }
                }
            }
            old => {
                if let Some(old) = &old {
                    for (index, task) in &old.tasks {
                        self.unindex_task(old, *index, task, &mut resum);
                    }
                }
                for (index, task) in &job.tasks {
                    self.index_task(&job, *index, task, &mut resum);
                }
            }
        }
        self.recompute_allocated_on(resum);
        self.note_pending(&job);
        self.jobs.insert(job.name.clone(), job);
    }

    /// Adds task `index` (`task`) of `job` to the machine indexes; machines whose sums
    /// changed are added to `resum`.
    fn index_task(
        &mut self,
        job: &JobView,
        index: u32,
        task: &TaskView,
        resum: &mut BTreeSet<String>,
    ) {
        if task.machine.is_empty() {
            return;
        }
        let entry = self.touch(&task.machine);
        *entry
            .held
            .packages
            .entry(Arc::clone(&job.package))
            .or_insert(0) += 1;
        // A task in an alloc holds the alloc's room, not the machine's.
        if !task.state.is_placed() || job.alloc_set.is_some() {
            return;
        }
        let id = TaskId::new(job.name.clone(), index);
        entry.held.tasks.tasks.insert(PlacedTask {
            id,
            incarnation: task.incarnation,
            priority: job.priority,
            limits: job.limits_of(index),
            reservation: job.limits_of(index),
            package: Arc::clone(&job.package),
            ports: job.ports_of(index),
        });
        if !resum.contains(task.machine.as_str()) {
            resum.insert(task.machine.clone());
        }
    }

    /// Removes task `index` (`task`) of `job` from the machine indexes.
    fn unindex_task(
        &mut self,
        job: &JobView,
        index: u32,
        task: &TaskView,
        resum: &mut BTreeSet<String>,
    ) {
        if task.machine.is_empty() {
            return;
        }
        let entry = self.touch(&task.machine);
        if let Some(count) = entry.held.packages.get_mut(&job.package) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                entry.held.packages.remove(&job.package);
            }
        }
        entry
            .held
            .tasks
            .tasks
            .remove(&TaskId::new(job.name.clone(), index));
        // Re-summed, and its entry dropped once it holds nothing, by `recompute_allocated_on`.
        if !resum.contains(task.machine.as_str()) {
            resum.insert(task.machine.clone());
        }
    }

    /// Re-sums the machines a job update touched, once each: per task it would cost the
    /// square of a machine's task count for a large job on one machine.
    fn recompute_allocated_on(&mut self, machines: BTreeSet<String>) {
        for machine in machines {
            if let Some(entry) = self.machines.get_mut(&machine) {
                entry.held.tasks.recompute_allocated();
            }
            self.prune(&machine);
        }
    }

    /// Replaces some tasks of a job the view holds, whose requirements did not change (the
    /// master's per-task changes): only these tasks move in the indexes. Each task comes
    /// with its reservation while placed (`None`: its limits). False when the view does
    /// not hold the job.
    pub fn upsert_tasks(
        &mut self,
        name: &str,
        active: bool,
        tasks: Vec<(u32, TaskView, Option<Resources>)>,
    ) -> bool {
        let Some(mut job) = self.jobs.remove(name) else {
            return false;
        };
        self.job_changed(name);
        let mut resum = BTreeSet::new();
        for (index, task, reservation) in tasks {
            if job.tasks.get(&index) != Some(&task) {
                if let Some(before) = job.tasks.get(&index) {
                    self.unindex_task(&job, index, before, &mut resum);
                }
                self.index_task(&job, index, &task, &mut resum);
            }
            let id = TaskId::new(name.to_owned(), index);
            let reservation = reservation.unwrap_or_else(|| job.limits_of(index));
            self.note_reservation(&task.machine, &id, reservation, &mut resum);
            job.tasks.insert(index, task);
        }
        self.recompute_allocated_on(resum);
        job.active = active;
        self.note_pending(&job);
        self.jobs.insert(job.name.clone(), job);
        true
    }

    pub fn remove_job(&mut self, name: &str) {
        let mut resum = BTreeSet::new();
        if let Some(old) = self.jobs.remove(name) {
            for (index, task) in &old.tasks {
                self.unindex_task(&old, *index, task, &mut resum);
            }
        }
        self.recompute_allocated_on(resum);
        self.pending_jobs.remove(name);
        self.job_changed_at.remove(name);
    }

    /// Machines in name order.
    pub fn machines(&self) -> impl Iterator<Item = &MachineView> {
        self.machines.values().filter_map(|e| e.machine.as_deref())
    }

    /// Machines in name order (as `machines`), each with what the view holds about it.
    pub fn machine_refs(&self) -> impl Iterator<Item = MachineRef<'_>> {
        self.machines.values().filter_map(|e| {
            e.machine.as_deref().map(|machine| MachineRef {
                machine,
                entry: Some(e),
            })
        })
    }

    /// `machine` with what the view holds under its name (which need not be the view's
    /// own copy of the machine).
    pub fn machine_ref<'a>(&'a self, machine: &'a MachineView) -> MachineRef<'a> {
        MachineRef {
            machine,
            entry: self.machines.get(&machine.name),
        }
    }

    pub fn machine(&self, name: &str) -> Option<&MachineView> {
        self.machines.get(name).and_then(|e| e.machine.as_deref())
    }

    pub fn machine_count(&self) -> usize {
        self.machine_count
    }

    pub fn jobs(&self) -> impl Iterator<Item = &JobView> {
        self.jobs.values()
    }

    /// Active jobs with a pending task, in name order.
    pub fn jobs_with_pending(&self) -> impl Iterator<Item = &JobView> {
        self.pending_jobs
            .iter()
            .filter_map(|name| self.jobs.get(name))
    }

    pub fn job(&self, name: &str) -> Option<&JobView> {
        self.jobs.get(name)
    }

    /// The package of a job's tasks; empty when the view does not hold the job (a
    /// simulator's pending tasks), which disables package locality for them.
    pub fn package_of(&self, job: &str) -> Arc<str> {
        self.jobs
            .get(job)
            .map(|j| Arc::clone(&j.package))
            .unwrap_or_else(|| Arc::from(""))
    }

    /// Tasks placed on `machine`, in eviction preference order (priority, then task id).
    pub fn placed_on(&self, machine: &str) -> impl Iterator<Item = &PlacedTask> {
        self.machines
            .get(machine)
            .into_iter()
            .flat_map(|m| m.held.tasks.tasks.iter())
    }

    /// Task `task` as placed on `machine`, if the view holds it there.
    pub fn placed_task(&self, machine: &str, task: &TaskId) -> Option<&PlacedTask> {
        self.machines
            .get(machine)
            .and_then(|m| m.held.tasks.tasks.get(task))
    }

    /// What is allocated on the machine: per dimension the larger of the master's figure and
    /// the sum over the tasks the view knows, so a view caught between a machine update and
    /// the job update that explains it never sees room that is not there.
    pub fn allocated(&self, machine: &MachineView) -> Resources {
        self.machine_ref(machine).allocated()
    }

    /// Ports held by the tasks the view knows on the machine (the master does not report
    /// them: the view's tasks are the only account).
    pub fn ports_used(&self, machine: &str) -> u32 {
        self.machines.get(machine).map_or(0, |m| m.held.tasks.ports)
    }

    /// What the machine's placed tasks reserve (their reservations; never less than the
    /// master's allocation minus what the view's tasks account for, so unknown tasks count
    /// at their limits).
    pub fn reserved(&self, machine: &MachineView) -> Resources {
        self.machine_ref(machine).reserved()
    }

    /// Pending tasks of active jobs, in (job, index) order.
    pub fn pending_tasks(&self) -> Vec<PendingTask> {
        let mut out = Vec::new();
        for job in self.jobs_with_pending() {
            for (index, task) in &job.tasks {
                if task.state != TaskState::Pending {
                    continue;
                }
                out.push(job.pending_task(*index, task));
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
    use crate::work::MachineWork;

    fn job(name: &str, tasks: Vec<(TaskState, &str)>) -> JobView {
        JobView {
            name: name.into(),
            owner: "alice".into(),
            priority: 100,
            limits: Resources::new(100, 10),
            limits_by_task: BTreeMap::new(),
            ports_by_task: BTreeMap::new(),
            alloc_set: None,
            constraints: Arc::from(Vec::new()),
            package: Arc::from("/bin/true"),
            ports: 1,
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

    /// What placement reads of a view, per machine and for the pending tasks.
    fn picture(view: &CellView, machines: &[&str]) -> Vec<String> {
        let mut out: Vec<String> = machines
            .iter()
            .map(|name| {
                let placed: Vec<&PlacedTask> = view.placed_on(name).collect();
                let machine = view.machine(name).unwrap();
                format!(
                    "{name}: {placed:?} {} {} {} {}",
                    view.allocated(machine),
                    view.reserved(machine),
                    view.ports_used(name),
                    view.has_package(name, "/bin/true")
                )
            })
            .collect();
        out.push(format!("{:?}", view.pending_tasks()));
        out
    }

    #[test]
    fn an_update_of_some_tasks_leaves_the_view_a_full_rebuild_gives() {
        let machine = |name: &str| {
            let info = MachineInfo {
                name: name.into(),
                capacity: Resources::new(1000, 1000),
                ..Default::default()
            };
            MachineView::new(info, MachineState::Up, 1)
        };
        let before = job(
            "a",
            vec![
                (TaskState::Running, "m1"),
                (TaskState::Running, "m2"),
                (TaskState::Pending, ""),
                (TaskState::Running, "m1"),
            ],
        );
        let mut after = job(
            "a",
            vec![
                (TaskState::Running, "m1"),
                (TaskState::Pending, ""),
                (TaskState::Scheduled, "m2"),
            ],
        );
        after.tasks.get_mut(&1).unwrap().incarnation = 2;
        let mut updated = CellView::new();
        let mut rebuilt = CellView::new();
        for view in [&mut updated, &mut rebuilt] {
            view.upsert_machine(machine("m1"));
            view.upsert_machine(machine("m2"));
            view.upsert_job(job("b", vec![(TaskState::Running, "m2")]));
        }
        updated.upsert_job(before);
        let generation = updated.machine_generation("m1");
        updated.upsert_job(after.clone());
        rebuilt.upsert_job(after);
        assert_eq!(
            picture(&updated, &["m1", "m2"]),
            picture(&rebuilt, &["m1", "m2"])
        );
        assert_ne!(
            updated.machine_generation("m1"),
            generation,
            "task 3 left m1"
        );
        // The same job again: no machine changes.
        let generation = updated.machine_generation("m2");
        let same = updated.job("a").unwrap().clone();
        updated.upsert_job(same);
        assert_eq!(updated.machine_generation("m2"), generation);
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
    fn an_overridden_task_has_its_own_limits_and_class() {
        let mut view = CellView::new();
        let mut j = job(
            "a",
            vec![(TaskState::Pending, ""), (TaskState::Pending, "")],
        );
        j.limits_by_task.insert(1, Resources::new(700, 10));
        j.ports_by_task.insert(1, 3);
        view.upsert_job(j);
        let pending = view.pending_tasks();
        assert_eq!(pending[0].limits, Resources::new(100, 10));
        assert_eq!(pending[1].limits, Resources::new(700, 10));
        assert_eq!((pending[0].ports, pending[1].ports), (1, 3));
        let package: Arc<str> = Arc::from("/bin/true");
        let mut classes = crate::class::Classes::default();
        assert_ne!(
            classes.class_of(&pending[0], &package),
            classes.class_of(&pending[1], &package)
        );
    }

    #[test]
    fn inactive_jobs_have_no_pending_tasks() {
        let mut view = CellView::new();
        let mut j = job("a", vec![(TaskState::Pending, "")]);
        j.active = false;
        view.upsert_job(j);
        assert!(view.pending_tasks().is_empty());
    }

    #[test]
    fn the_pending_index_follows_job_updates() {
        let names = |view: &CellView| -> Vec<String> {
            view.jobs_with_pending().map(|j| j.name.clone()).collect()
        };
        let mut view = CellView::new();
        view.upsert_job(job("a", vec![(TaskState::Pending, "")]));
        view.upsert_job(job("b", vec![(TaskState::Running, "m1")]));
        assert_eq!(names(&view), vec!["a"]);

        view.upsert_job(job("a", vec![(TaskState::Running, "m1")]));
        view.upsert_job(job(
            "b",
            vec![(TaskState::Running, "m1"), (TaskState::Pending, "")],
        ));
        assert_eq!(names(&view), vec!["b"]);
        assert_eq!(view.pending_tasks().len(), 1);

        view.remove_job("b");
        assert!(names(&view).is_empty());
        assert!(view.pending_tasks().is_empty());
    }

    fn racked(name: &str, rack: &str) -> MachineView {
        let info = MachineInfo {
            name: name.into(),
            capacity: Resources::new(1000, 1000),
            attributes: [("rack".to_string(), rack.to_string())].into(),
            ..Default::default()
        };
        MachineView::new(info, MachineState::Up, 1)
    }

    #[test]
    fn machine_refs_answer_what_the_questions_by_name_answer() {
        let mut view = CellView::new();
        for (name, rack) in [("m2", "r1"), ("m1", "r1"), ("m3", "r2")] {
            view.upsert_machine(racked(name, rack));
        }
        view.upsert_job(job(
            "b",
            vec![(TaskState::Running, "m1"), (TaskState::Running, "m9")],
        ));
        let mut low = job("a", vec![(TaskState::Running, "m1")]);
        low.priority = 50;
        view.upsert_job(low);
        let names: Vec<&str> = view.machines().map(|m| m.name.as_str()).collect();
        let refs: Vec<MachineRef<'_>> = view.machine_refs().collect();
        assert_eq!(
            refs.iter()
                .map(|r| r.machine.name.as_str())
                .collect::<Vec<_>>(),
            names,
            "the same machines in the same (name) order; m9 is not a machine yet"
        );
        assert_eq!(names, ["m1", "m2", "m3"]);
        for r in &refs {
            let name = r.machine.name.as_str();
            assert_eq!(r.generation(), view.machine_generation(name));
            assert_eq!(r.allocated(), view.allocated(r.machine));
            assert_eq!(r.reserved(), view.reserved(r.machine));
            assert_eq!(r.ports_used(), view.ports_used(name));
            assert_eq!(
                r.has_package("/bin/true"),
                view.has_package(name, "/bin/true")
            );
            assert!(r.placed().eq(view.placed_on(name)));
            assert_eq!(Some(r.domains()), view.domains_of(name));
        }
        assert_eq!(refs[0].domains(), refs[1].domains(), "m1 and m2 share r1");
        assert_ne!(refs[0].domains(), refs[2].domains());
        // Eviction order: lowest priority first, then task id.
        let work = MachineWork::of(refs[0]);
        let order: Vec<String> = work.evictable.iter().map(|t| t.id.to_string()).collect();
        assert_eq!(order, ["a/0", "b/0"]);
    }

    #[test]
    fn placed_tasks_stay_in_eviction_order_and_an_id_is_held_once() {
        let task = |job: &str, priority: Priority| PlacedTask {
            id: TaskId::new(job.to_owned(), 0),
            incarnation: 1,
            priority,
            limits: Resources::new(1, 1),
            reservation: Resources::new(1, 1),
            package: Arc::from(""),
            ports: 0,
        };
        let mut tasks = PlacedTasks::default();
        for (job, priority) in [("c", 200), ("b", 100), ("a", 200), ("d", 0)] {
            tasks.insert(task(job, priority));
        }
        let order = |tasks: &PlacedTasks| -> Vec<String> {
            tasks.iter().map(|t| t.id.to_string()).collect()
        };
        assert_eq!(order(&tasks), ["d/0", "b/0", "a/0", "c/0"]);
        // The same id again at another priority replaces it, in its new place.
        tasks.insert(task("b", 300));
        assert_eq!(order(&tasks), ["d/0", "a/0", "c/0", "b/0"]);
        *tasks
            .reservation_mut(&TaskId::new("a".to_owned(), 0))
            .expect("a is held") = Resources::new(0, 0);
        assert_eq!(
            tasks
                .get(&TaskId::new("a".to_owned(), 0))
                .map(|t| t.reservation),
            Some(Resources::new(0, 0))
        );
        tasks.remove(&TaskId::new("d".to_owned(), 0));
        assert_eq!(order(&tasks), ["a/0", "c/0", "b/0"]);
        assert_eq!(tasks.len(), 3);
        // Look-ups by id find every task whatever its priority's run.
        let mut many = PlacedTasks::default();
        for i in 0..60u32 {
            let mut t = task("j", [100, 0, 200][i as usize % 3]);
            t.id = TaskId::new("j".to_owned(), i);
            many.insert(t);
        }
        for i in 0..60u32 {
            let id = TaskId::new("j".to_owned(), i);
            assert_eq!(many.get(&id).map(|t| &t.id), Some(&id));
        }
        assert!(many.get(&TaskId::new("j".to_owned(), 60)).is_none());
    }

    #[test]
    fn a_removed_machine_keeps_its_tasks_until_they_leave() {
        let mut view = CellView::new();
        view.upsert_machine(racked("m1", "r1"));
        view.upsert_job(job("a", vec![(TaskState::Running, "m1")]));
        let set = view.machine_set_generation();
        view.remove_machine("m1");
        assert_ne!(view.machine_set_generation(), set);
        assert_eq!((view.machine_count(), view.machines().count()), (0, 0));
        assert_eq!(view.placed_on("m1").count(), 1);
        assert_eq!(view.domains_of("m1"), None);
        view.remove_job("a");
        assert_eq!(view.placed_on("m1").count(), 0);
        assert_eq!(view.machine_generation("m1"), 0, "nothing is left under m1");
        view.upsert_machine(racked("m1", "r2"));
        assert_eq!(view.machine_count(), 1);
        assert!(view.machine_generation("m1") > 0);
    }
}
