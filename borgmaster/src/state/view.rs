//! Read views of the state in wire types, for the gRPC services. Views never change state.
//!
//! A job is shown `KILLED` once killed, `DONE` when active and every task below `replicas`
//! is terminal, else `ACTIVE`. Its task list holds every task it ever had, including indices
//! at or above `replicas` that a scale-down killed.

use super::events::Event;
use super::records::{JobRecord, JobStatus, MachineRecord, TaskRecord};
use super::{shard_of, CellState, ChangeSet};
use borg_model::{Resources, TaskId};
use borg_proto::convert::{app_class_to_wire, group_task_keys, job_type_to_wire};
use borg_proto::v1;
use std::collections::{BTreeMap, BTreeSet, HashMap};

impl CellState {
    pub fn job_view(&self, name: &str) -> Option<v1::Job> {
        self.jobs.get(name).map(job_to_wire)
    }

    /// The job without its tasks, and how many tasks it has in each state (in state order,
    /// states with none left out): a large job's progress without building every task.
    pub fn job_summary_view(&self, name: &str) -> Option<(v1::Job, Vec<v1::TaskStateCount>)> {
        let job = self.jobs.get(name)?;
        let mut counts: BTreeMap<i32, u32> = BTreeMap::new();
        for task in job.tasks.values() {
            *counts
                .entry(v1::TaskState::from(task.state) as i32)
                .or_default() += 1;
        }
        let counts = counts
            .into_iter()
            .map(|(state, count)| v1::TaskStateCount { state, count })
            .collect();
        Some((job_to_wire_without_tasks(job), counts))
    }

    /// Jobs in name order, of `owner` if given.
    pub fn jobs_view(&self, owner: Option<&str>) -> Vec<v1::Job> {
        self.jobs
            .values()
            .filter(|j| owner.is_none_or(|o| j.spec.owner == o))
            .map(job_to_wire)
            .collect()
    }

    /// Machines in name order.
    pub fn machines_view(&self) -> Vec<v1::Machine> {
        self.machines
            .values()
            .map(|m| self.machine_to_wire(m))
            .collect()
    }

    pub fn machine_view(&self, name: &str) -> Option<v1::Machine> {
        self.machines.get(name).map(|m| self.machine_to_wire(m))
    }

    pub fn snapshot_view(&self) -> v1::CellSnapshot {
        v1::CellSnapshot {
            machines: self.machines_view(),
            jobs: self.jobs_view(None),
        }
    }

    /// The touched jobs and machines as they are now; touched ones that no longer exist
    /// are listed as removed.
    pub fn change_view(&self, changes: &ChangeSet) -> v1::CellChange {
        let mut change = v1::CellChange::default();
        for name in &changes.machines {
            match self.machines.get(name) {
                Some(m) => change.machines_upserted.push(self.machine_to_wire(m)),
                None => change.machines_removed.push(name.clone()),
            }
        }
        for name in &changes.jobs {
            let Some(job) = self.jobs.get(name) else {
                change.jobs_removed.push(name.clone());
                continue;
            };
            // Jobs of and in alloc sets go whole: the scheduler re-reads their room.
            let in_alloc = job.spec.is_alloc_set || job.spec.alloc_set.is_some();
            match changes.tasks.get(name) {
                Some(indices) if !in_alloc => change
                    .jobs_tasks_changed
                    .push(job_tasks_to_wire(job, indices)),
                _ => change.jobs_upserted.push(job_to_wire(job)),
            }
        }
        change
    }

    /// Every machine of the shard (including `Down` ones, so that the link shard keeps
    /// polling them and notices when they answer again) with its desired set: tasks placed
    /// there (`Scheduled`/`Running`) of jobs that are not killed, in task order.
    pub fn assignment_view(
        &self,
        shard_index: u32,
        shard_count: u32,
    ) -> Vec<v1::MachineAssignment> {
        self.machines
            .values()
            .filter(|m| shard_of(&m.info.name, shard_count) == shard_index)
            .map(|m| self.machine_assignment(m))
            .collect()
    }

    /// Whether `known` (from `known_versions`) holds every machine of the shard at its
    /// current version and no other machine: the shard's assignment has not changed since it
    /// was read.
    pub fn assignment_is_known(
        &self,
        shard_index: u32,
        shard_count: u32,
        known: &HashMap<&str, u64>,
    ) -> bool {
        let mut in_shard = 0;
        for m in self
            .machines
            .values()
            .filter(|m| shard_of(&m.info.name, shard_count) == shard_index)
        {
            if known.get(m.info.name.as_str()) != Some(&m.version) {
                return false;
            }
            in_shard += 1;
        }
        in_shard == known.len()
    }

    /// `assignment_view` for a shard that already holds some machines' sets (`known`): such
    /// a machine is answered with `delta` set, `desired` holding only the tasks missing from
    /// the known set and `removed` the known ones no longer desired (both empty when the
    /// version is the known one), so an unchanged task is never built or encoded again. A
    /// task is known by (job, index, incarnation): its assignment does not change within an
    /// incarnation in any way a borglet acts on.
    pub fn assignment_delta_view(
        &self,
        shard_index: u32,
        shard_count: u32,
        known: &[v1::KnownAssignment],
    ) -> Vec<v1::MachineAssignment> {
        let known: HashMap<&str, &v1::KnownAssignment> =
            known.iter().map(|k| (k.machine.as_str(), k)).collect();
        self.machines
            .values()
            .filter(|m| shard_of(&m.info.name, shard_count) == shard_index)
            .map(|m| match known.get(m.info.name.as_str()) {
                None => self.machine_assignment(m),
                Some(k) if k.version == m.version => v1::MachineAssignment {
                    machine: m.info.name.clone(),
                    address: m.info.address.clone(),
                    version: m.version,
                    delta: true,
                    ..Default::default()
                },
                Some(k) => self.machine_assignment_delta(m, k),
            })
            .collect()
    }

    fn machine_assignment(&self, m: &MachineRecord) -> v1::MachineAssignment {
        v1::MachineAssignment {
            machine: m.info.name.clone(),
            address: m.info.address.clone(),
            desired: m
                .placed
                .iter()
                .filter_map(|id| self.assigned_task(id))
                .collect(),
            version: m.version,
            ..Default::default()
        }
    }

    fn machine_assignment_delta(
        &self,
        m: &MachineRecord,
        known: &v1::KnownAssignment,
    ) -> v1::MachineAssignment {
        // (job, index) -> (incarnation, still desired).
        let mut held: HashMap<(&str, u32), (u64, bool)> = HashMap::new();
        for keys in &known.tasks {
            for (index, incarnation) in keys.indices.iter().zip(&keys.incarnations) {
                held.insert((keys.job.as_str(), *index), (*incarnation, false));
            }
        }
        let mut desired = Vec::new();
        for id in &m.placed {
            let Some(incarnation) = self.desired_incarnation(id) else {
                continue;
            };
            match held.get_mut(&(id.job.as_str(), id.index)) {
                Some((held_incarnation, seen)) if *held_incarnation == incarnation => *seen = true,
                _ => desired.extend(self.assigned_task(id)),
            }
        }
        let mut removed: Vec<(&str, u32, u64)> = held
            .into_iter()
            .filter(|(_, (_, seen))| !seen)
            .map(|((job, index), (incarnation, _))| (job, index, incarnation))
            .collect();
        removed.sort_unstable();
        v1::MachineAssignment {
            machine: m.info.name.clone(),
            address: m.info.address.clone(),
            desired,
            version: m.version,
            delta: true,
            removed: group_task_keys(removed),
        }
    }

    /// Up to `limit` events with index >= `from_index` (of `job` if given), oldest first.
    pub fn events_view(&self, from_index: u64, job: Option<&str>, limit: usize) -> Vec<v1::Event> {
        self.events
            .since(from_index, job, limit)
            .into_iter()
            .map(event_to_wire)
            .collect()
    }

    /// The newest `limit` events of task `index` of `job`, oldest first.
    pub fn task_events_view(&self, job: &str, index: u32, limit: usize) -> Vec<v1::Event> {
        self.events
            .of_task(job, index, limit)
            .into_iter()
            .map(event_to_wire)
            .collect()
    }

    /// Index of the newest event (0 when there is none): where a stream of new events
    /// resumes.
    pub fn last_event_index(&self) -> u64 {
        self.events.last_index()
    }

    /// The job and task of `id` when it belongs in its machine's desired set.
    fn desired_task(&self, id: &TaskId) -> Option<(&JobRecord, &TaskRecord)> {
        let job = self.jobs.get(&id.job)?;
        // Allocs reserve resources and run nothing: no borglet hears of them.
        if job.status == JobStatus::Killed || job.spec.is_alloc_set {
            return None;
        }
        let task = job.tasks.get(&id.index)?;
        task.state.is_placed().then_some((job, task))
    }

    fn desired_incarnation(&self, id: &TaskId) -> Option<u64> {
        self.desired_task(id).map(|(_, task)| task.incarnation)
    }

    fn assigned_task(&self, id: &TaskId) -> Option<v1::AssignedTask> {
        let (job, task) = self.desired_task(id)?;
        let spec = &job.spec;
        Some(v1::AssignedTask {
            job: id.job.clone(),
            index: id.index,
            incarnation: task.incarnation,
            owner: spec.owner.clone(),
            priority: spec.priority,
            job_type: job_type_to_wire(spec.job_type) as i32,
            app_class: app_class_to_wire(spec.app_class) as i32,
            restart: Some(spec.restart.into()),
            template: Some(spec.task_template(id.index).clone().into()),
        })
    }

    fn machine_to_wire(&self, m: &MachineRecord) -> v1::Machine {
        v1::Machine {
            info: Some(m.info.clone().into()),
            state: v1::MachineState::from(m.state) as i32,
            version: m.version,
            allocated: Some(self.allocation(&m.info.name).into()),
            task_count: u32::try_from(m.placed.len()).unwrap_or(u32::MAX),
            last_report_ms: m.last_report_ms,
        }
    }
}

/// A shard's known assignment as machine → version, built once for the checks of
/// `CellState::assignment_is_known` (a waiting poll checks again after every applied batch).
pub fn known_versions(known: &[v1::KnownAssignment]) -> HashMap<&str, u64> {
    known
        .iter()
        .map(|k| (k.machine.as_str(), k.version))
        .collect()
}

fn job_to_wire(job: &JobRecord) -> v1::Job {
    v1::Job {
        tasks: job
            .tasks
            .iter()
            .map(|(index, t)| task_to_wire(&job.spec.name, *index, t))
            .collect(),
        ..job_to_wire_without_tasks(job)
    }
}

/// The job's tasks `indices` (those it has), with its state and modify index.
fn job_tasks_to_wire(job: &JobRecord, indices: &BTreeSet<u32>) -> v1::JobTasksChange {
    let name = &job.spec.name;
    v1::JobTasksChange {
        job: name.clone(),
        state: job_state_to_wire(job) as i32,
        modify_index: job.modify_index,
        tasks: indices
            .iter()
            .filter_map(|index| Some(task_to_wire(name, *index, job.tasks.get(index)?)))
            .collect(),
    }
}

fn job_state_to_wire(job: &JobRecord) -> v1::JobState {
    if job.status == JobStatus::Killed {
        v1::JobState::Killed
    } else if job.is_done() {
        v1::JobState::Done
    } else {
        v1::JobState::Active
    }
}

fn job_to_wire_without_tasks(job: &JobRecord) -> v1::Job {
    v1::Job {
        spec: Some(job.spec.clone().into()),
        state: job_state_to_wire(job) as i32,
        create_index: job.create_index,
        modify_index: job.modify_index,
        submitted_ms: job.submitted_ms,
        tasks: Vec::new(),
    }
}

fn task_to_wire(job: &str, index: u32, t: &TaskRecord) -> v1::Task {
    v1::Task {
        job: job.to_string(),
        index,
        state: v1::TaskState::from(t.state) as i32,
        machine: t.machine.clone(),
        incarnation: t.incarnation,
        restarts: t.restarts,
        exit_code: t.exit_code,
        state_since_ms: t.state_since_ms,
        message: t.message.clone(),
        pid: t.pid,
        usage: (t.usage != Resources::ZERO).then(|| t.usage.into()),
        reservation: t.state.is_placed().then(|| t.reservation.reserved.into()),
        ports: if t.state.is_placed() {
            t.ports
                .iter()
                .map(|(name, port)| (name.clone(), u32::from(*port)))
                .collect()
        } else {
            Default::default()
        },
    }
}

fn event_to_wire(e: &Event) -> v1::Event {
    v1::Event {
        index: e.index,
        time_ms: e.time_ms,
        kind: e.kind.clone(),
        job: e.job.clone(),
        task_index: e.task_index,
        machine: e.machine.clone(),
        message: e.message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{
        accepted, machine, placement, report, spec, submit, task_report, Cell,
    };
    use super::super::Command;
    use super::known_versions;
    use borg_model::TaskState;
    use borg_proto::v1;
    use std::collections::BTreeMap;

    /// The known set a shard holds after taking `assignment` in full.
    fn known_of(assignment: &v1::MachineAssignment) -> v1::KnownAssignment {
        let mut keys = v1::JobTaskKeys::default();
        for task in &assignment.desired {
            keys.job = task.job.clone();
            keys.indices.push(task.index);
            keys.incarnations.push(task.incarnation);
        }
        v1::KnownAssignment {
            machine: assignment.machine.clone(),
            version: assignment.version,
            tasks: vec![keys],
        }
    }

    fn keys(assignment: &v1::MachineAssignment) -> Vec<(String, u32, u64)> {
        assignment
            .desired
            .iter()
            .map(|t| (t.job.clone(), t.index, t.incarnation))
            .collect()
    }

    #[test]
    fn a_known_machine_gets_only_its_differences() {
        let mut cell = Cell::new();
        cell.apply(Command::RegisterMachine {
            info: machine("m1", 4000),
        });
        cell.apply(submit(spec("web", 3, 100, 500)));
        cell.apply(submit(spec("db", 1, 100, 500)));
        let placed = cell.plan((0..3).map(|i| placement("web", i, 0, "m1")).collect());
        assert_eq!(accepted(&placed), vec![true; 3]);

        let full = cell.state.assignment_delta_view(0, 1, &[]);
        assert_eq!(full.len(), 1);
        assert!(!full[0].delta);
        assert_eq!(keys(&full[0]).len(), 3);
        let known = known_of(&full[0]);

        let same = cell
            .state
            .assignment_delta_view(0, 1, std::slice::from_ref(&known));
        assert!(same[0].delta);
        assert!(same[0].desired.is_empty() && same[0].removed.is_empty());
        assert_eq!(same[0].address, full[0].address);

        cell.apply(Command::KillJob { name: "web".into() });
        assert_eq!(
            accepted(&cell.plan(vec![placement("db", 0, 0, "m1")])),
            [true]
        );
        let delta = cell
            .state
            .assignment_delta_view(0, 1, std::slice::from_ref(&known));
        assert!(delta[0].delta);
        assert!(delta[0].version > known.version);
        assert_eq!(keys(&delta[0]), vec![("db".to_owned(), 0, 1)]);
        let template = delta[0].desired[0].template.as_ref().expect("full task");
        assert_eq!(template.command, "/bin/sleep");
        assert_eq!(delta[0].removed.len(), 1);
        assert_eq!(delta[0].removed[0].job, "web");
        let mut removed: Vec<(u32, u64)> = delta[0].removed[0]
            .indices
            .iter()
            .copied()
            .zip(delta[0].removed[0].incarnations.iter().copied())
            .collect();
        removed.sort_unstable();
        assert_eq!(removed, vec![(0, 1), (1, 1), (2, 1)]);

        // A machine the shard does not list is answered in full.
        let other = v1::KnownAssignment {
            machine: "m2".into(),
            ..Default::default()
        };
        assert!(!cell.state.assignment_delta_view(0, 1, &[other])[0].delta);
    }

    #[test]
    fn an_assignment_is_known_until_a_machine_of_the_shard_changes() {
        let mut cell = Cell::new();
        cell.apply(Command::RegisterMachine {
            info: machine("m1", 4000),
        });
        cell.apply(submit(spec("web", 2, 100, 500)));
        let known = known_of(&cell.state.assignment_delta_view(0, 1, &[])[0]);
        assert!(cell.state.assignment_is_known(
            0,
            1,
            &known_versions(std::slice::from_ref(&known))
        ));
        assert!(!cell.state.assignment_is_known(0, 1, &known_versions(&[])));
        let stranger = v1::KnownAssignment {
            machine: "gone".into(),
            ..Default::default()
        };
        assert!(!cell
            .state
            .assignment_is_known(0, 1, &known_versions(&[known.clone(), stranger])));

        assert_eq!(
            accepted(&cell.plan(vec![placement("web", 0, 0, "m1")])),
            [true]
        );
        assert!(!cell.state.assignment_is_known(
            0,
            1,
            &known_versions(std::slice::from_ref(&known))
        ));
    }

    /// A watcher's jobs after applying `change` to `jobs` (as the scheduler does).
    fn follow(jobs: &mut BTreeMap<String, v1::Job>, change: v1::CellChange) {
        for name in change.jobs_removed {
            jobs.remove(&name);
        }
        for job in change.jobs_upserted {
            let name = job
                .spec
                .as_ref()
                .expect("whole job has a spec")
                .name
                .clone();
            jobs.insert(name, job);
        }
        for changed in change.jobs_tasks_changed {
            let job = jobs.get_mut(&changed.job).expect("partial job known");
            borg_proto::convert::apply_tasks_change(job, changed);
        }
    }

    #[test]
    fn a_change_carries_only_the_tasks_that_changed_unless_the_spec_did() {
        let mut cell = Cell::new();
        let mut jobs = BTreeMap::new();
        let mut step = |cell: &mut Cell, command: Command| -> v1::CellChange {
            let applied = cell.apply(command);
            let change = cell.state.change_view(&applied.changes);
            follow(&mut jobs, change.clone());
            let now: BTreeMap<String, v1::Job> = cell
                .state
                .jobs_view(None)
                .into_iter()
                .map(|j| (j.spec.as_ref().expect("spec").name.clone(), j))
                .collect();
            assert_eq!(jobs, now, "the watcher's jobs follow the state");
            change
        };
        step(
            &mut cell,
            Command::RegisterMachine {
                info: machine("m1", 4000),
            },
        );
        let created = step(&mut cell, submit(spec("web", 3, 100, 500)));
        assert_eq!(created.jobs_upserted.len(), 1, "a new job goes whole");

        let placed = step(
            &mut cell,
            Command::CommitPlan {
                placements: vec![placement("web", 1, 0, "m1")],
            },
        );
        assert!(placed.jobs_upserted.is_empty());
        assert_eq!(placed.jobs_tasks_changed.len(), 1);
        let tasks = &placed.jobs_tasks_changed[0];
        assert_eq!(tasks.job, "web");
        assert_eq!(tasks.state, v1::JobState::Active as i32);
        let indices: Vec<u32> = tasks.tasks.iter().map(|t| t.index).collect();
        assert_eq!(indices, vec![1]);
        assert_eq!(tasks.tasks[0].state, v1::TaskState::Scheduled as i32);

        let running = step(
            &mut cell,
            report("m1", vec![task_report("web", 1, 1, TaskState::Running)]),
        );
        assert_eq!(running.jobs_tasks_changed[0].tasks.len(), 1);
        assert_eq!(running.machines_upserted.len(), 1);

        // The spec changes: whole job.
        let mut bigger = spec("web", 4, 100, 500);
        bigger.task.args = vec!["2000".into()];
        let updated = step(&mut cell, submit(bigger));
        assert!(updated.jobs_tasks_changed.is_empty());
        assert_eq!(updated.jobs_upserted[0].tasks.len(), 4);

        // The last tasks finish: the job is DONE through its tasks alone.
        let mut small = spec("one", 1, 100, 500);
        small.task.args = vec!["1".into()];
        step(&mut cell, submit(small));
        step(
            &mut cell,
            Command::CommitPlan {
                placements: vec![placement("one", 0, 0, "m1")],
            },
        );
        let done = step(
            &mut cell,
            report("m1", vec![task_report("one", 0, 1, TaskState::Succeeded)]),
        );
        assert_eq!(done.jobs_tasks_changed.len(), 1);
        assert_eq!(done.jobs_tasks_changed[0].state, v1::JobState::Done as i32);

        // Killed: whole.
        let killed = step(&mut cell, Command::KillJob { name: "web".into() });
        assert!(killed.jobs_tasks_changed.is_empty());
        assert_eq!(killed.jobs_upserted.len(), 1);
    }

    #[test]
    fn a_job_summary_counts_its_tasks_by_state_without_listing_them() {
        let mut cell = Cell::new();
        cell.apply(Command::RegisterMachine {
            info: machine("m1", 4000),
        });
        cell.apply(submit(spec("web", 3, 100, 500)));
        assert_eq!(
            accepted(&cell.plan(vec![placement("web", 1, 0, "m1")])),
            [true]
        );
        let (job, counts) = cell.state.job_summary_view("web").expect("web exists");
        assert!(job.tasks.is_empty());
        assert_eq!(job.state, v1::JobState::Active as i32);
        let full = cell.state.job_view("web").expect("web exists");
        assert_eq!(
            v1::Job {
                tasks: Vec::new(),
                ..full
            },
            job
        );
        let counts: Vec<(v1::TaskState, u32)> =
            counts.iter().map(|c| (c.state(), c.count)).collect();
        assert_eq!(
            counts,
            vec![(v1::TaskState::Pending, 2), (v1::TaskState::Scheduled, 1)]
        );
        assert!(cell.state.job_summary_view("nope").is_none());
    }
}
