//! Wire → view: applies the master's `CellUpdate`s (a snapshot, then changes) to a
//! `CellView`. Malformed items are skipped and reported, never a panic: one bad job must not
//! stop the scheduler from placing every other.

use crate::room::{RoomFreed, RoomNotes};
use crate::view::{CellView, JobView, MachineView, TaskView};
use borg_model::{Resources, TaskId};
use borg_proto::convert::{self, ConvertError};
use borg_proto::v1;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewSyncError {
    #[error("cell update at index {index} carries neither a snapshot nor a change")]
    EmptyUpdate { index: u64 },
    #[error("cell change at index {index} arrived before any snapshot; the watch must restart")]
    ChangeBeforeSnapshot { index: u64 },
    #[error("machine {machine:?} skipped: {source}")]
    BadMachine {
        machine: String,
        #[source]
        source: ConvertError,
    },
    #[error("job {job:?} skipped: {source}")]
    BadJob {
        job: String,
        #[source]
        source: ConvertError,
    },
    #[error("tasks of job {job:?} skipped: the view does not hold the job (skipped earlier as malformed?)")]
    UnknownJob { job: String },
}

/// Applies the stream's updates to a view and remembers whether a snapshot has been seen.
#[derive(Debug, Default)]
pub struct ViewSync {
    view: CellView,
    has_snapshot: bool,
    /// Where the updates since the last `take_room_freed` may have made room.
    room_freed: RoomFreed,
}

impl ViewSync {
    pub fn new() -> Self {
        ViewSync::default()
    }

    pub fn view(&self) -> &CellView {
        &self.view
    }

    pub fn has_snapshot(&self) -> bool {
        self.has_snapshot
    }

    /// Forgets the view; the next update must be a snapshot (after a reconnect).
    pub fn reset(&mut self) {
        self.view.clear();
        self.has_snapshot = false;
    }

    /// Where the updates applied since the last call may have made room for a task that
    /// fit nowhere before (see `room`).
    pub fn take_room_freed(&mut self) -> RoomFreed {
        std::mem::take(&mut self.room_freed)
    }

    /// Applies one update. `Err` means the stream is unusable (restart the watch); `Ok`
    /// lists the items that were skipped as malformed.
    pub fn apply(&mut self, update: v1::CellUpdate) -> Result<Vec<ViewSyncError>, ViewSyncError> {
        let index = update.index;
        match update.update {
            Some(v1::cell_update::Update::Snapshot(snapshot)) => {
                self.has_snapshot = true;
                self.room_freed = RoomFreed::Everywhere;
                Ok(apply_snapshot(&mut self.view, index, snapshot))
            }
            Some(v1::cell_update::Update::Change(change)) => {
                if !self.has_snapshot {
                    return Err(ViewSyncError::ChangeBeforeSnapshot { index });
                }
                let mut notes = RoomNotes::new();
                let skipped = apply_change_noting(&mut self.view, index, change, Some(&mut notes));
                self.room_freed.merge(notes.finish());
                Ok(skipped)
            }
            None => Err(ViewSyncError::EmptyUpdate { index }),
        }
    }
}

/// Replaces the view with a snapshot taken at `index`.
pub fn apply_snapshot(
    view: &mut CellView,
    index: u64,
    snapshot: v1::CellSnapshot,
) -> Vec<ViewSyncError> {
    view.clear();
    apply_change(
        view,
        index,
        v1::CellChange {
            machines_upserted: snapshot.machines,
            machines_removed: Vec::new(),
            jobs_upserted: snapshot.jobs,
            jobs_removed: Vec::new(),
            jobs_tasks_changed: Vec::new(),
        },
    )
}

/// Applies a change at `index`. A malformed job is removed from the view (its old picture
/// would be wrong) and reported.
pub fn apply_change(view: &mut CellView, index: u64, change: v1::CellChange) -> Vec<ViewSyncError> {
    apply_change_noting(view, index, change, None)
}

/// `apply_change`, noting in `notes` where the change may have made room.
fn apply_change_noting(
    view: &mut CellView,
    index: u64,
    change: v1::CellChange,
    mut notes: Option<&mut RoomNotes>,
) -> Vec<ViewSyncError> {
    let mut skipped = Vec::new();
    for name in &change.machines_removed {
        view.remove_machine(name);
    }
    for machine in change.machines_upserted {
        if let Some(notes) = notes.as_deref_mut() {
            notes.machine_upserted(view, &machine);
        }
        match machine_from_wire(machine) {
            Ok(machine) => view.upsert_machine(machine),
            Err(error) => skipped.push(error),
        }
    }
    for name in &change.jobs_removed {
        remove_job_noting(view, name, notes.as_deref_mut());
    }
    for job in change.jobs_upserted {
        let name = job
            .spec
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        if let Err(error) = upsert_job_noting(view, job, notes.as_deref_mut()) {
            remove_job_noting(view, &name, notes.as_deref_mut());
            skipped.push(error);
        }
    }
    for changed in change.jobs_tasks_changed {
        let name = changed.job.clone();
        match upsert_tasks_noting(view, changed, notes.as_deref_mut()) {
            Ok(()) => {}
            Err(error @ ViewSyncError::UnknownJob { .. }) => skipped.push(error),
            Err(error) => {
                remove_job_noting(view, &name, notes.as_deref_mut());
                skipped.push(error);
            }
        }
    }
    view.set_index(index);
    skipped
}

/// Applies the changed tasks of a job the view holds (its spec unchanged), noting the
/// holds of those tasks in `notes`.
fn upsert_tasks_noting(
    view: &mut CellView,
    changed: v1::JobTasksChange,
    notes: Option<&mut RoomNotes>,
) -> Result<(), ViewSyncError> {
    let name = changed.job;
    let bad = |source| ViewSyncError::BadJob {
        job: name.clone(),
        source,
    };
    let Some(in_alloc) = view.job(&name).map(|j| j.alloc_set.is_some()) else {
        return Err(ViewSyncError::UnknownJob { job: name });
    };
    let active = job_active_from_wire(changed.state).map_err(bad)?;
    let mut tasks = Vec::with_capacity(changed.tasks.len());
    for task in changed.tasks {
        let state = convert::task_state_from_wire(task.state).map_err(bad)?;
        let reservation = task.reservation.map(Resources::from);
        let view_task = TaskView {
            state,
            machine: task.machine,
            incarnation: task.incarnation,
        };
        tasks.push((task.index, view_task, reservation));
    }
    let noted = match notes.filter(|n| !n.is_everywhere()) {
        None => None,
        Some(notes) if in_alloc => {
            notes.everywhere();
            None
        }
        Some(notes) => {
            let indices: Vec<u32> = tasks.iter().map(|(index, _, _)| *index).collect();
            let before = RoomNotes::holds(view, &name, Some(&indices));
            Some((notes, indices, before))
        }
    };
    view.upsert_tasks(&name, active, tasks);
    if let Some((notes, indices, before)) = noted {
        let after = RoomNotes::holds(view, &name, Some(&indices));
        notes.holds_changed(before, after);
    }
    Ok(())
}

fn remove_job_noting(view: &mut CellView, name: &str, notes: Option<&mut RoomNotes>) {
    let Some(notes) = notes.filter(|n| !n.is_everywhere()) else {
        view.remove_job(name);
        return;
    };
    if view.job(name).is_some_and(|j| j.alloc_set.is_some()) {
        notes.everywhere();
        view.remove_job(name);
        return;
    }
    let before = RoomNotes::holds(view, name, None);
    view.remove_job(name);
    notes.holds_changed(before, Default::default());
}

/// Replaces a job in the view with its wire form, placed tasks reserving what the master
/// computed for them (`Task.reservation`; their limits where it is unset).
pub fn upsert_job_from_wire(view: &mut CellView, job: v1::Job) -> Result<(), ViewSyncError> {
    upsert_job_noting(view, job, None)
}

/// `upsert_job_from_wire`, noting the holds of the tasks that changed in `notes`.
fn upsert_job_noting(
    view: &mut CellView,
    job: v1::Job,
    notes: Option<&mut RoomNotes>,
) -> Result<(), ViewSyncError> {
    let in_alloc = job
        .spec
        .as_ref()
        .is_some_and(|s| !s.alloc_set.is_empty() || s.is_alloc_set);
    let wire_reservations = reservations_from_wire(&job);
    let job = job_from_wire(job)?;
    // Every placed task's reservation: the master's, else its limits.
    let mut reservations: HashMap<&TaskId, Resources> = HashMap::new();
    for (_, task, reservation) in &wire_reservations {
        reservations.insert(task, *reservation);
    }
    let ids: Vec<(String, TaskId, Resources)> = job
        .tasks
        .iter()
        .filter(|(_, t)| !t.machine.is_empty() && t.state.is_placed())
        .map(|(index, t)| {
            let id = TaskId::new(job.name.clone(), *index);
            let reservation = reservations
                .get(&id)
                .copied()
                .unwrap_or_else(|| job.limits_of(*index));
            (t.machine.clone(), id, reservation)
        })
        .collect();
    drop(reservations);
    let name = job.name.clone();
    let noted = match notes.filter(|n| !n.is_everywhere()) {
        None => None,
        Some(notes) => {
            let old = view.job(&name);
            if in_alloc || old.is_some_and(|o| o.alloc_set.is_some()) {
                notes.everywhere();
                None
            } else {
                // Of a known job, the tasks that changed (all if its requirements did); a
                // new job's placed tasks only arrive (and may offset others that left).
                let indices = old.and_then(|old| {
                    old.same_shape(&job).then(|| {
                        let mut changed: Vec<u32> = old
                            .tasks
                            .iter()
                            .filter(|(i, t)| job.tasks.get(i) != Some(t))
                            .map(|(i, _)| *i)
                            .chain(
                                job.tasks
                                    .keys()
                                    .filter(|i| !old.tasks.contains_key(i))
                                    .copied(),
                            )
                            .collect();
                        changed.extend(
                            ids.iter()
                                .filter(|(machine, id, reservation)| {
                                    view.placed_task(machine, id)
                                        .is_some_and(|p| p.reservation != *reservation)
                                })
                                .map(|(_, id, _)| id.index),
                        );
                        changed
                    })
                });
                let before = RoomNotes::holds(view, &name, indices.as_deref());
                Some((notes, indices, before))
            }
        }
    };
    view.upsert_job(job);
    for (machine, task, reservation) in &ids {
        view.set_reservation(machine, task, *reservation);
    }
    if let Some((notes, indices, before)) = noted {
        let after = RoomNotes::holds(view, &name, indices.as_deref());
        notes.holds_changed(before, after);
    }
    Ok(())
}

/// The master's reservations for a job's placed tasks: (machine, task, reservation).
pub fn reservations_from_wire(job: &v1::Job) -> Vec<(String, TaskId, Resources)> {
    let Some(spec) = &job.spec else {
        return Vec::new();
    };
    job.tasks
        .iter()
        .filter(|t| !t.machine.is_empty())
        .filter_map(|t| {
            let reservation = Resources::from(t.reservation?);
            Some((
                t.machine.clone(),
                TaskId::new(spec.name.clone(), t.index),
                reservation,
            ))
        })
        .collect()
}

pub fn machine_from_wire(machine: v1::Machine) -> Result<MachineView, ViewSyncError> {
    let name = machine
        .info
        .as_ref()
        .map(|i| i.name.clone())
        .unwrap_or_default();
    let bad = |source| ViewSyncError::BadMachine {
        machine: name.clone(),
        source,
    };
    let info = machine.info.ok_or_else(|| {
        bad(ConvertError::Missing {
            field: "machine.info",
        })
    })?;
    let state = convert::machine_state_from_wire(machine.state).map_err(bad)?;
    let mut view = MachineView::new(info.into(), state, machine.version);
    view.reported_allocated = convert::resources_or_zero(machine.allocated);
    Ok(view)
}

pub fn job_from_wire(job: v1::Job) -> Result<JobView, ViewSyncError> {
    let name = job
        .spec
        .as_ref()
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let bad = |source| ViewSyncError::BadJob {
        job: name.clone(),
        source,
    };
    let spec = job
        .spec
        .ok_or_else(|| bad(ConvertError::Missing { field: "job.spec" }))?;
    let spec = borg_model::JobSpec::try_from(spec).map_err(bad)?;
    let active = job_active_from_wire(job.state).map_err(bad)?;
    let mut tasks = BTreeMap::new();
    for task in job.tasks {
        let state = convert::task_state_from_wire(task.state).map_err(bad)?;
        tasks.insert(
            task.index,
            TaskView {
                state,
                machine: task.machine,
                incarnation: task.incarnation,
            },
        );
    }
    Ok(JobView::from_spec(&spec, active, tasks))
}

/// Whether a job in wire state `state` is active (its pending tasks are to be placed).
fn job_active_from_wire(state: i32) -> Result<bool, ConvertError> {
    match v1::JobState::try_from(state) {
        // Unspecified: an older master that does not set it; treat as active.
        Ok(v1::JobState::Active) | Ok(v1::JobState::Unspecified) => Ok(true),
        Ok(v1::JobState::Killed) | Ok(v1::JobState::Done) => Ok(false),
        Err(_) => Err(ConvertError::UnknownEnum {
            field: "job.state",
            value: state,
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn wire_machine(name: &str, version: u64) -> v1::Machine {
        v1::Machine {
            info: Some(v1::MachineInfo {
                name: name.into(),
                address: "127.0.0.1:1".into(),
                capacity: Some(v1::Resources {
                    cpu_millis: 1000,
                    ram_bytes: 1 << 30,
                    disk_bytes: 0,
                    gpus: 0,
                }),
                attributes: Default::default(),
                port_capacity: None,
            }),
            state: v1::MachineState::Up as i32,
            version,
            ..Default::default()
        }
    }

    pub(crate) fn wire_job(name: &str, tasks: Vec<(v1::TaskState, &str)>) -> v1::Job {
        v1::Job {
            spec: Some(v1::JobSpec {
                name: name.into(),
                owner: "alice".into(),
                priority: 100,
                replicas: tasks.len() as u32,
                task: Some(v1::TaskTemplate {
                    command: "/bin/true".into(),
                    resources: Some(v1::Resources {
                        cpu_millis: 100,
                        ram_bytes: 1 << 20,
                        disk_bytes: 0,
                        gpus: 0,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            state: v1::JobState::Active as i32,
            tasks: tasks
                .into_iter()
                .enumerate()
                .map(|(i, (state, machine))| v1::Task {
                    job: name.into(),
                    index: i as u32,
                    state: state as i32,
                    machine: machine.into(),
                    incarnation: 1,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_snapshot_then_changes_build_the_view() {
        let mut sync = ViewSync::new();
        let change = v1::CellUpdate {
            index: 3,
            update: Some(v1::cell_update::Update::Change(v1::CellChange::default())),
        };
        assert_eq!(
            sync.apply(change.clone()),
            Err(ViewSyncError::ChangeBeforeSnapshot { index: 3 })
        );
        let snapshot = v1::CellUpdate {
            index: 5,
            update: Some(v1::cell_update::Update::Snapshot(v1::CellSnapshot {
                machines: vec![wire_machine("m1", 1)],
                jobs: vec![wire_job("a", vec![(v1::TaskState::Pending, "")])],
            })),
        };
        assert_eq!(sync.apply(snapshot), Ok(vec![]));
        assert_eq!(sync.view().index(), 5);
        assert_eq!(sync.view().pending_tasks().len(), 1);

        let placed = v1::CellUpdate {
            index: 6,
            update: Some(v1::cell_update::Update::Change(v1::CellChange {
                machines_upserted: vec![wire_machine("m1", 2)],
                jobs_upserted: vec![wire_job("a", vec![(v1::TaskState::Scheduled, "m1")])],
                ..Default::default()
            })),
        };
        assert_eq!(sync.apply(placed), Ok(vec![]));
        assert!(sync.view().pending_tasks().is_empty());
        assert_eq!(sync.view().machine("m1").unwrap().version, 2);
        assert_eq!(sync.view().placed_on("m1").count(), 1);

        let removed = v1::CellUpdate {
            index: 7,
            update: Some(v1::cell_update::Update::Change(v1::CellChange {
                jobs_removed: vec!["a".into()],
                machines_removed: vec!["m1".into()],
                ..Default::default()
            })),
        };
        assert_eq!(sync.apply(removed), Ok(vec![]));
        assert_eq!(sync.view().machine_count(), 0);
        assert_eq!(sync.view().placed_on("m1").count(), 0);
    }

    /// A batch task on a machine whose capacity prod limits fill but whose prod usage is
    /// low: it fits once the master's reservations for the prod task have decayed.
    #[test]
    fn a_batch_task_uses_the_room_that_decayed_reservations_leave() {
        let mut prod = wire_job("prod", vec![(v1::TaskState::Running, "m1")]);
        let spec = prod.spec.as_mut().unwrap();
        spec.priority = 200;
        spec.task.as_mut().unwrap().resources = Some(v1::Resources {
            cpu_millis: 1000,
            ram_bytes: 1 << 30,
            disk_bytes: 0,
            gpus: 0,
        });
        let mut machine = wire_machine("m1", 1);
        machine.allocated = spec.task.as_ref().unwrap().resources;
        let batch = wire_job("batch", vec![(v1::TaskState::Pending, "")]);
        let plan_with = |prod: v1::Job| {
            let mut sync = ViewSync::new();
            let snapshot = v1::CellUpdate {
                index: 1,
                update: Some(v1::cell_update::Update::Snapshot(v1::CellSnapshot {
                    machines: vec![machine.clone()],
                    jobs: vec![prod, batch.clone()],
                })),
            };
            assert_eq!(sync.apply(snapshot), Ok(vec![]));
            let pending = sync.view().pending_tasks();
            crate::schedule(sync.view(), &pending, &crate::PlacementConfig::new(), 7)
        };

        // No reservation on the wire (or one at the limits): the machine is full.
        let plan = plan_with(prod.clone());
        assert!(plan.placements.is_empty(), "{plan:?}");
        prod.tasks[0].reservation = prod.spec.as_ref().unwrap().task.as_ref().unwrap().resources;
        assert!(plan_with(prod.clone()).placements.is_empty());

        // Decayed to usage plus margin: the batch task (100m, 1Mi) fits beside it.
        prod.tasks[0].reservation = Some(v1::Resources {
            cpu_millis: 300,
            ram_bytes: 256 << 20,
            disk_bytes: 0,
            gpus: 0,
        });
        let plan = plan_with(prod.clone());
        assert_eq!(plan.placements.len(), 1, "{plan:?}");
        assert_eq!(plan.placements[0].machine, "m1");
        assert!(plan.placements[0].preempt.is_empty(), "nothing preempted");

        // A prod task of the same size still sees the machine full (limits).
        let mut prod2 = batch.clone();
        prod2.spec.as_mut().unwrap().name = "prod2".into();
        prod2.spec.as_mut().unwrap().priority = 200;
        prod2.tasks[0].job = "prod2".into();
        let mut sync = ViewSync::new();
        sync.apply(v1::CellUpdate {
            index: 1,
            update: Some(v1::cell_update::Update::Snapshot(v1::CellSnapshot {
                machines: vec![machine.clone()],
                jobs: vec![prod, prod2],
            })),
        })
        .unwrap();
        let pending = sync.view().pending_tasks();
        let plan = crate::schedule(sync.view(), &pending, &crate::PlacementConfig::new(), 7);
        assert!(plan.placements.is_empty(), "{plan:?}");
    }

    fn change(index: u64, machines: Vec<v1::Machine>, jobs: Vec<v1::Job>) -> v1::CellUpdate {
        v1::CellUpdate {
            index,
            update: Some(v1::cell_update::Update::Change(v1::CellChange {
                machines_upserted: machines,
                jobs_upserted: jobs,
                ..Default::default()
            })),
        }
    }

    fn on(machines: &[&str]) -> RoomFreed {
        RoomFreed::On(machines.iter().map(|m| (*m).to_owned()).collect())
    }

    #[test]
    fn changes_say_where_they_may_make_room() {
        let mut sync = ViewSync::new();
        sync.apply(v1::CellUpdate {
            index: 1,
            update: Some(v1::cell_update::Update::Snapshot(v1::CellSnapshot {
                machines: vec![wire_machine("m1", 1)],
                jobs: vec![wire_job("a", vec![(v1::TaskState::Pending, "")])],
            })),
        })
        .unwrap();
        assert_eq!(
            sync.take_room_freed(),
            RoomFreed::Everywhere,
            "a snapshot replaces everything"
        );
        assert_eq!(sync.take_room_freed(), RoomFreed::Nowhere);

        // A placement takes room.
        let placed = wire_job("a", vec![(v1::TaskState::Scheduled, "m1")]);
        sync.apply(change(2, vec![wire_machine("m1", 2)], vec![placed.clone()]))
            .unwrap();
        assert_eq!(sync.take_room_freed(), RoomFreed::Nowhere);
        // The same task running where it was: nothing.
        let mut running = placed.clone();
        running.tasks[0].state = v1::TaskState::Running as i32;
        sync.apply(change(3, vec![], vec![running.clone()]))
            .unwrap();
        assert_eq!(sync.take_room_freed(), RoomFreed::Nowhere);
        // Its reservation decays: room there.
        running.tasks[0].reservation = Some(v1::Resources {
            cpu_millis: 10,
            ram_bytes: 1 << 20,
            disk_bytes: 0,
            gpus: 0,
        });
        sync.apply(change(4, vec![], vec![running])).unwrap();
        assert_eq!(sync.take_room_freed(), on(&["m1"]));
        // It finishes and leaves the machine: room there.
        let done = wire_job("a", vec![(v1::TaskState::Succeeded, "")]);
        sync.apply(change(5, vec![], vec![done])).unwrap();
        assert_eq!(sync.take_room_freed(), on(&["m1"]));
        // A new machine: room on it.
        sync.apply(change(6, vec![wire_machine("m2", 1)], vec![]))
            .unwrap();
        assert_eq!(sync.take_room_freed(), on(&["m2"]));
        // A known machine with a new version only: nothing.
        sync.apply(change(7, vec![wire_machine("m2", 2)], vec![]))
            .unwrap();
        assert_eq!(sync.take_room_freed(), RoomFreed::Nowhere);
        // Changes accumulate until taken.
        sync.apply(change(8, vec![wire_machine("m3", 1)], vec![]))
            .unwrap();
        sync.apply(change(9, vec![wire_machine("m4", 1)], vec![]))
            .unwrap();
        assert_eq!(sync.take_room_freed(), on(&["m3", "m4"]));
    }

    /// A preemption commit: the preemptor (higher priority, as large) takes the victim's
    /// place, and the victim returns to pending. Nobody gained room; a smaller preemptor
    /// leaves room on its machine for tasks that may not preempt the victim.
    #[test]
    fn a_preemption_frees_room_only_where_the_preemptor_is_smaller() {
        let mut victim = wire_job("victim", vec![(v1::TaskState::Running, "m1")]);
        victim.spec.as_mut().unwrap().priority = 100;
        let synced = || {
            let mut sync = ViewSync::new();
            sync.apply(v1::CellUpdate {
                index: 1,
                update: Some(v1::cell_update::Update::Snapshot(v1::CellSnapshot {
                    machines: vec![wire_machine("m1", 1)],
                    jobs: vec![victim.clone()],
                })),
            })
            .unwrap();
            sync.take_room_freed();
            sync
        };
        let mut preempted = victim.clone();
        preempted.tasks[0].state = v1::TaskState::Pending as i32;
        preempted.tasks[0].machine = String::new();
        preempted.tasks[0].incarnation = 2;
        let preemptor = |cpu_millis: u64| {
            let mut job = wire_job("preemptor", vec![(v1::TaskState::Scheduled, "m1")]);
            let spec = job.spec.as_mut().unwrap();
            spec.priority = 200;
            let resources = spec.task.as_mut().unwrap().resources.as_mut().unwrap();
            resources.cpu_millis = cpu_millis;
            job
        };
        for (cpu_millis, room) in [(100, RoomFreed::Nowhere), (50, on(&["m1"]))] {
            let mut sync = synced();
            let jobs = vec![preempted.clone(), preemptor(cpu_millis)];
            sync.apply(change(2, vec![], jobs)).unwrap();
            assert_eq!(sync.take_room_freed(), room, "preemptor of {cpu_millis}m");
        }
    }

    /// The changed tasks of `job` (its indices `indices`) as the master sends them.
    fn tasks_change(job: &v1::Job, indices: &[u32]) -> v1::JobTasksChange {
        v1::JobTasksChange {
            job: job.spec.as_ref().unwrap().name.clone(),
            state: job.state,
            modify_index: job.modify_index,
            tasks: job
                .tasks
                .iter()
                .filter(|t| indices.contains(&t.index))
                .cloned()
                .collect(),
        }
    }

    fn tasks_update(index: u64, changed: Vec<v1::JobTasksChange>) -> v1::CellUpdate {
        v1::CellUpdate {
            index,
            update: Some(v1::cell_update::Update::Change(v1::CellChange {
                jobs_tasks_changed: changed,
                ..Default::default()
            })),
        }
    }

    /// What placement reads of a view.
    fn observed(view: &CellView) -> String {
        let machines: Vec<String> = view
            .machines()
            .map(|m| {
                let placed: Vec<_> = view.placed_on(&m.name).collect();
                format!(
                    "{} {:?} {:?} {:?} {placed:?}",
                    m.name,
                    view.allocated(m),
                    view.reserved(m),
                    view.ports_used(&m.name)
                )
            })
            .collect();
        let jobs: Vec<&JobView> = view.jobs().collect();
        let pending: Vec<&str> = view.jobs_with_pending().map(|j| j.name.as_str()).collect();
        format!(
            "{machines:?}\n{jobs:?}\n{pending:?}\n{:?}",
            view.pending_tasks()
        )
    }

    /// Each step of a job's life applied as whole jobs and as changed tasks only: the two
    /// views and the room they report freed agree at every step.
    #[test]
    fn changed_tasks_build_the_same_view_as_whole_jobs() {
        let snapshot = v1::CellUpdate {
            index: 1,
            update: Some(v1::cell_update::Update::Snapshot(v1::CellSnapshot {
                machines: vec![wire_machine("m1", 1), wire_machine("m2", 1)],
                jobs: vec![wire_job("a", vec![(v1::TaskState::Pending, ""); 3])],
            })),
        };
        let (mut whole, mut partial) = (ViewSync::new(), ViewSync::new());
        whole.apply(snapshot.clone()).unwrap();
        partial.apply(snapshot).unwrap();
        whole.take_room_freed();
        partial.take_room_freed();
        let mut job = wire_job("a", vec![(v1::TaskState::Pending, ""); 3]);
        let reservation = |cpu_millis| v1::Resources {
            cpu_millis,
            ram_bytes: 1 << 20,
            disk_bytes: 0,
            gpus: 0,
        };
        // (what, how the job changes, the tasks that change)
        type Step<'a> = (&'static str, Box<dyn Fn(&mut v1::Job) + 'a>, Vec<u32>);
        let steps: Vec<Step> = vec![
            (
                "place 0 and 1",
                Box::new(|j: &mut v1::Job| {
                    for (i, m) in [(0, "m1"), (1, "m2")] {
                        j.tasks[i].state = v1::TaskState::Scheduled as i32;
                        j.tasks[i].machine = m.into();
                        j.tasks[i].reservation = Some(reservation(100));
                    }
                }),
                vec![0, 1],
            ),
            (
                "0 runs",
                Box::new(|j: &mut v1::Job| {
                    j.tasks[0].state = v1::TaskState::Running as i32;
                }),
                vec![0],
            ),
            (
                "0's reservation decays",
                Box::new(|j: &mut v1::Job| {
                    j.tasks[0].reservation = Some(reservation(10));
                }),
                vec![0],
            ),
            (
                "1 is lost",
                Box::new(|j: &mut v1::Job| {
                    j.tasks[1].state = v1::TaskState::Pending as i32;
                    j.tasks[1].machine = String::new();
                    j.tasks[1].reservation = None;
                }),
                vec![1],
            ),
            (
                "0 succeeds",
                Box::new(|j: &mut v1::Job| {
                    j.tasks[0].state = v1::TaskState::Succeeded as i32;
                    j.tasks[0].reservation = None;
                }),
                vec![0],
            ),
            (
                "the job is done",
                Box::new(|j: &mut v1::Job| {
                    j.state = v1::JobState::Done as i32;
                    j.tasks[1].state = v1::TaskState::Succeeded as i32;
                    j.tasks[2].state = v1::TaskState::Failed as i32;
                }),
                vec![1, 2],
            ),
        ];
        for (i, (what, change_job, indices)) in steps.into_iter().enumerate() {
            change_job(&mut job);
            let index = 2 + i as u64;
            assert_eq!(
                whole.apply(change(index, vec![], vec![job.clone()])),
                Ok(vec![])
            );
            let update = tasks_update(index, vec![tasks_change(&job, &indices)]);
            assert_eq!(partial.apply(update), Ok(vec![]), "{what}");
            assert_eq!(observed(whole.view()), observed(partial.view()), "{what}");
            assert_eq!(whole.take_room_freed(), partial.take_room_freed(), "{what}");
            assert!(whole.view().job_generation("a") > 0);
        }
        assert!(
            partial.view().pending_tasks().is_empty(),
            "a done job places nothing"
        );

        // Tasks of a job the view does not hold are skipped and named.
        let unknown = tasks_change(&wire_job("b", vec![(v1::TaskState::Pending, "")]), &[0]);
        let skipped = partial.apply(tasks_update(9, vec![unknown])).unwrap();
        assert_eq!(skipped, vec![ViewSyncError::UnknownJob { job: "b".into() }]);
        // A malformed task drops its job from the view.
        let mut bad = tasks_change(&job, &[0]);
        bad.tasks[0].state = 42;
        let skipped = partial.apply(tasks_update(10, vec![bad])).unwrap();
        assert_eq!(skipped.len(), 1);
        assert!(partial.view().job("a").is_none());
    }

    #[test]
    fn malformed_items_are_skipped_and_named() {
        let mut bad_job = wire_job("bad", vec![(v1::TaskState::Pending, "")]);
        bad_job.tasks[0].state = 42;
        let mut bad_machine = wire_machine("m2", 1);
        bad_machine.state = 0;
        let mut sync = ViewSync::new();
        let skipped = sync
            .apply(v1::CellUpdate {
                index: 1,
                update: Some(v1::cell_update::Update::Snapshot(v1::CellSnapshot {
                    machines: vec![wire_machine("m1", 1), bad_machine],
                    jobs: vec![
                        wire_job("good", vec![(v1::TaskState::Pending, "")]),
                        bad_job,
                    ],
                })),
            })
            .unwrap();
        assert_eq!(skipped.len(), 2);
        assert!(skipped[0].to_string().contains("m2"), "{}", skipped[0]);
        assert!(skipped[1].to_string().contains("bad"), "{}", skipped[1]);
        assert_eq!(sync.view().machine_count(), 1);
        assert_eq!(sync.view().pending_tasks().len(), 1);
        assert!(sync
            .apply(v1::CellUpdate {
                index: 2,
                update: None
            })
            .is_err());
    }
}
