//! Read views of the state in wire types, for the gRPC services. Views never change state.
//!
//! A job is shown `KILLED` once killed, `DONE` when active and every task below `replicas`
//! is terminal, else `ACTIVE`. Its task list holds every task it ever had, including indices
//! at or above `replicas` that a scale-down killed.

use super::events::Event;
use super::records::{JobRecord, JobStatus, MachineRecord, TaskRecord};
use super::{shard_of, CellState, ChangeSet};
use borg_model::{Resources, TaskId};
use borg_proto::convert::{app_class_to_wire, job_type_to_wire};
use borg_proto::v1;

impl CellState {
    pub fn job_view(&self, name: &str) -> Option<v1::Job> {
        self.jobs.get(name).map(job_to_wire)
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
            match self.jobs.get(name) {
                Some(j) => change.jobs_upserted.push(job_to_wire(j)),
                None => change.jobs_removed.push(name.clone()),
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
            .map(|m| v1::MachineAssignment {
                machine: m.info.name.clone(),
                address: m.info.address.clone(),
                desired: m
                    .placed
                    .iter()
                    .filter_map(|id| self.assigned_task(id))
                    .collect(),
            })
            .collect()
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

    fn assigned_task(&self, id: &TaskId) -> Option<v1::AssignedTask> {
        let job = self.jobs.get(&id.job)?;
        // Allocs reserve resources and run nothing: no borglet hears of them.
        if job.status == JobStatus::Killed || job.spec.is_alloc_set {
            return None;
        }
        let task = job.tasks.get(&id.index)?;
        if !task.state.is_placed() {
            return None;
        }
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

fn job_to_wire(job: &JobRecord) -> v1::Job {
    let state = if job.status == JobStatus::Killed {
        v1::JobState::Killed
    } else if job.is_done() {
        v1::JobState::Done
    } else {
        v1::JobState::Active
    };
    v1::Job {
        spec: Some(job.spec.clone().into()),
        state: state as i32,
        create_index: job.create_index,
        modify_index: job.modify_index,
        submitted_ms: job.submitted_ms,
        tasks: job
            .tasks
            .iter()
            .map(|(index, t)| task_to_wire(&job.spec.name, *index, t))
            .collect(),
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
