//! Conversions between wire types (`v1::*`) and the domain model.
//!
//! Model → wire is infallible. Wire → model is `TryFrom`: a request from the network may
//! leave out required messages or carry enum values this version does not know.

use crate::v1;
use borg_model as m;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("field `{field}` is required")]
    Missing { field: &'static str },
    #[error("field `{field}` has unknown value {value}")]
    UnknownEnum { field: &'static str, value: i32 },
}

fn required<T>(value: Option<T>, field: &'static str) -> Result<T, ConvertError> {
    value.ok_or(ConvertError::Missing { field })
}

impl From<m::Resources> for v1::Resources {
    fn from(r: m::Resources) -> Self {
        v1::Resources {
            cpu_millis: r.cpu_millis,
            ram_bytes: r.ram_bytes,
            disk_bytes: r.disk_bytes,
            gpus: r.gpus,
        }
    }
}

impl From<v1::Resources> for m::Resources {
    fn from(r: v1::Resources) -> Self {
        m::Resources {
            cpu_millis: r.cpu_millis,
            ram_bytes: r.ram_bytes,
            disk_bytes: r.disk_bytes,
            gpus: r.gpus,
        }
    }
}

/// Resources of an optional wire field; absent means zero.
pub fn resources_or_zero(r: Option<v1::Resources>) -> m::Resources {
    r.map(m::Resources::from).unwrap_or_default()
}

impl From<m::ConstraintOp> for v1::ConstraintOp {
    fn from(op: m::ConstraintOp) -> Self {
        use m::ConstraintOp as O;
        match op {
            O::Eq => v1::ConstraintOp::Eq,
            O::Ne => v1::ConstraintOp::Ne,
            O::Regex => v1::ConstraintOp::Regex,
            O::In => v1::ConstraintOp::In,
            O::NotIn => v1::ConstraintOp::NotIn,
            O::VersionGe => v1::ConstraintOp::VersionGe,
            O::VersionLt => v1::ConstraintOp::VersionLt,
            O::Exists => v1::ConstraintOp::Exists,
        }
    }
}

pub fn constraint_op_from_wire(value: i32) -> Result<m::ConstraintOp, ConvertError> {
    {
        use m::ConstraintOp as O;
        Ok(match v1::ConstraintOp::try_from(value) {
            Ok(v1::ConstraintOp::Eq) => O::Eq,
            Ok(v1::ConstraintOp::Ne) => O::Ne,
            Ok(v1::ConstraintOp::Regex) => O::Regex,
            Ok(v1::ConstraintOp::In) => O::In,
            Ok(v1::ConstraintOp::NotIn) => O::NotIn,
            Ok(v1::ConstraintOp::VersionGe) => O::VersionGe,
            Ok(v1::ConstraintOp::VersionLt) => O::VersionLt,
            Ok(v1::ConstraintOp::Exists) => O::Exists,
            Ok(v1::ConstraintOp::Unspecified) | Err(_) => {
                return Err(ConvertError::UnknownEnum {
                    field: "constraint.op",
                    value,
                })
            }
        })
    }
}

impl From<m::Constraint> for v1::Constraint {
    fn from(c: m::Constraint) -> Self {
        v1::Constraint {
            attribute: c.attribute,
            op: v1::ConstraintOp::from(c.op) as i32,
            values: c.values,
            soft: c.soft,
        }
    }
}

impl TryFrom<v1::Constraint> for m::Constraint {
    type Error = ConvertError;
    fn try_from(c: v1::Constraint) -> Result<Self, ConvertError> {
        Ok(m::Constraint {
            op: constraint_op_from_wire(c.op)?,
            attribute: c.attribute,
            values: c.values,
            soft: c.soft,
        })
    }
}

pub fn job_type_to_wire(t: m::JobType) -> v1::JobType {
    match t {
        m::JobType::Service => v1::JobType::Service,
        m::JobType::Batch => v1::JobType::Batch,
    }
}

/// Unspecified means the default (service), so old clients keep working.
pub fn job_type_from_wire(value: i32) -> Result<m::JobType, ConvertError> {
    match v1::JobType::try_from(value) {
        Ok(v1::JobType::Unspecified) | Ok(v1::JobType::Service) => Ok(m::JobType::Service),
        Ok(v1::JobType::Batch) => Ok(m::JobType::Batch),
        Err(_) => Err(ConvertError::UnknownEnum {
            field: "job_type",
            value,
        }),
    }
}

pub fn app_class_to_wire(c: m::AppClass) -> v1::AppClass {
    match c {
        m::AppClass::LatencySensitive => v1::AppClass::LatencySensitive,
        m::AppClass::Batch => v1::AppClass::Batch,
    }
}

pub fn app_class_from_wire(value: i32) -> Result<m::AppClass, ConvertError> {
    match v1::AppClass::try_from(value) {
        Ok(v1::AppClass::Unspecified) | Ok(v1::AppClass::LatencySensitive) => {
            Ok(m::AppClass::LatencySensitive)
        }
        Ok(v1::AppClass::Batch) => Ok(m::AppClass::Batch),
        Err(_) => Err(ConvertError::UnknownEnum {
            field: "app_class",
            value,
        }),
    }
}

impl From<m::RestartPolicy> for v1::RestartPolicy {
    fn from(p: m::RestartPolicy) -> Self {
        v1::RestartPolicy {
            max_attempts: p.max_attempts,
            interval_s: p.interval_s,
            delay_ms: p.delay_ms,
        }
    }
}

impl From<v1::RestartPolicy> for m::RestartPolicy {
    fn from(p: v1::RestartPolicy) -> Self {
        m::RestartPolicy {
            max_attempts: p.max_attempts,
            interval_s: p.interval_s,
            delay_ms: p.delay_ms,
        }
    }
}

impl From<m::TaskTemplate> for v1::TaskTemplate {
    fn from(t: m::TaskTemplate) -> Self {
        v1::TaskTemplate {
            command: t.command,
            args: t.args,
            env: t.env.into_iter().collect(),
            resources: Some(t.resources.into()),
            ports: t.ports,
        }
    }
}

impl From<v1::TaskTemplate> for m::TaskTemplate {
    fn from(t: v1::TaskTemplate) -> Self {
        m::TaskTemplate {
            command: t.command,
            args: t.args,
            env: t.env.into_iter().collect(),
            resources: resources_or_zero(t.resources),
            ports: t.ports,
        }
    }
}

impl From<m::JobSpec> for v1::JobSpec {
    fn from(s: m::JobSpec) -> Self {
        v1::JobSpec {
            name: s.name,
            owner: s.owner,
            priority: s.priority,
            replicas: s.replicas,
            task: Some(s.task.into()),
            constraints: s.constraints.into_iter().map(Into::into).collect(),
            job_type: job_type_to_wire(s.job_type) as i32,
            app_class: app_class_to_wire(s.app_class) as i32,
            restart: Some(s.restart.into()),
            task_overrides: s
                .task_overrides
                .into_iter()
                .map(|(index, t)| (index, t.into()))
                .collect(),
            alloc_set: s.alloc_set.unwrap_or_default(),
            is_alloc_set: s.is_alloc_set,
        }
    }
}

impl TryFrom<v1::JobSpec> for m::JobSpec {
    type Error = ConvertError;
    fn try_from(s: v1::JobSpec) -> Result<Self, ConvertError> {
        Ok(m::JobSpec {
            name: s.name,
            owner: s.owner,
            priority: s.priority,
            replicas: s.replicas,
            task: required(s.task, "spec.task")?.into(),
            constraints: s
                .constraints
                .into_iter()
                .map(m::Constraint::try_from)
                .collect::<Result<_, _>>()?,
            job_type: job_type_from_wire(s.job_type)?,
            app_class: app_class_from_wire(s.app_class)?,
            restart: s.restart.map(Into::into).unwrap_or_default(),
            task_overrides: s
                .task_overrides
                .into_iter()
                .map(|(index, t)| (index, t.into()))
                .collect(),
            alloc_set: Some(s.alloc_set).filter(|set| !set.is_empty()),
            is_alloc_set: s.is_alloc_set,
        })
    }
}

impl From<m::MachineInfo> for v1::MachineInfo {
    fn from(i: m::MachineInfo) -> Self {
        v1::MachineInfo {
            name: i.name,
            address: i.address,
            capacity: Some(i.capacity.into()),
            attributes: i.attributes.into_iter().collect(),
            port_capacity: i.port_capacity,
        }
    }
}

impl From<v1::MachineInfo> for m::MachineInfo {
    fn from(i: v1::MachineInfo) -> Self {
        m::MachineInfo {
            name: i.name,
            address: i.address,
            capacity: resources_or_zero(i.capacity),
            attributes: i.attributes.into_iter().collect(),
            port_capacity: i.port_capacity,
        }
    }
}

impl From<m::TaskState> for v1::TaskState {
    fn from(s: m::TaskState) -> Self {
        use m::TaskState as S;
        match s {
            S::Pending => v1::TaskState::Pending,
            S::Scheduled => v1::TaskState::Scheduled,
            S::Running => v1::TaskState::Running,
            S::Succeeded => v1::TaskState::Succeeded,
            S::Failed => v1::TaskState::Failed,
            S::Killed => v1::TaskState::Killed,
            S::Lost => v1::TaskState::Lost,
        }
    }
}

pub fn task_state_from_wire(value: i32) -> Result<m::TaskState, ConvertError> {
    use m::TaskState as S;
    Ok(match v1::TaskState::try_from(value) {
        Ok(v1::TaskState::Pending) => S::Pending,
        Ok(v1::TaskState::Scheduled) => S::Scheduled,
        Ok(v1::TaskState::Running) => S::Running,
        Ok(v1::TaskState::Succeeded) => S::Succeeded,
        Ok(v1::TaskState::Failed) => S::Failed,
        Ok(v1::TaskState::Killed) => S::Killed,
        Ok(v1::TaskState::Lost) => S::Lost,
        Ok(v1::TaskState::Unspecified) | Err(_) => {
            return Err(ConvertError::UnknownEnum {
                field: "task.state",
                value,
            })
        }
    })
}

impl From<m::MachineState> for v1::MachineState {
    fn from(s: m::MachineState) -> Self {
        match s {
            m::MachineState::Up => v1::MachineState::Up,
            m::MachineState::Down => v1::MachineState::Down,
            m::MachineState::Draining => v1::MachineState::Draining,
        }
    }
}

pub fn machine_state_from_wire(value: i32) -> Result<m::MachineState, ConvertError> {
    match v1::MachineState::try_from(value) {
        Ok(v1::MachineState::Up) => Ok(m::MachineState::Up),
        Ok(v1::MachineState::Down) => Ok(m::MachineState::Down),
        Ok(v1::MachineState::Draining) => Ok(m::MachineState::Draining),
        Ok(v1::MachineState::Unspecified) | Err(_) => Err(ConvertError::UnknownEnum {
            field: "machine.state",
            value,
        }),
    }
}

/// Task keys (job, index, incarnation) grouped into one `JobTaskKeys` per run of equal jobs
/// (so one per job when `keys` come in job order).
pub fn group_task_keys<'a>(
    keys: impl IntoIterator<Item = (&'a str, u32, u64)>,
) -> Vec<v1::JobTaskKeys> {
    let mut grouped: Vec<v1::JobTaskKeys> = Vec::new();
    for (job, index, incarnation) in keys {
        match grouped.last_mut() {
            Some(last) if last.job == job => {
                last.indices.push(index);
                last.incarnations.push(incarnation);
            }
            _ => grouped.push(v1::JobTaskKeys {
                job: job.to_owned(),
                indices: vec![index],
                incarnations: vec![incarnation],
            }),
        }
    }
    grouped
}

/// Folds a cell watch's changed tasks into the whole job they belong to (for watchers that
/// keep whole jobs): the job's state and modify index, and each task replaced, or added in
/// index order.
pub fn apply_tasks_change(job: &mut v1::Job, change: v1::JobTasksChange) {
    job.state = change.state;
    job.modify_index = change.modify_index;
    for task in change.tasks {
        match job.tasks.binary_search_by_key(&task.index, |t| t.index) {
            Ok(at) => job.tasks[at] = task,
            Err(at) => job.tasks.insert(at, task),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn changed_tasks_fold_into_their_job_in_index_order() {
        let task = |index, state: v1::TaskState| v1::Task {
            index,
            state: state as i32,
            ..Default::default()
        };
        let mut job = v1::Job {
            state: v1::JobState::Active as i32,
            tasks: vec![
                task(0, v1::TaskState::Pending),
                task(2, v1::TaskState::Pending),
            ],
            ..Default::default()
        };
        apply_tasks_change(
            &mut job,
            v1::JobTasksChange {
                job: "web".into(),
                state: v1::JobState::Done as i32,
                modify_index: 7,
                tasks: vec![
                    task(1, v1::TaskState::Succeeded),
                    task(2, v1::TaskState::Failed),
                ],
            },
        );
        assert_eq!(job.state, v1::JobState::Done as i32);
        assert_eq!(job.modify_index, 7);
        assert_eq!(
            job.tasks,
            vec![
                task(0, v1::TaskState::Pending),
                task(1, v1::TaskState::Succeeded),
                task(2, v1::TaskState::Failed)
            ]
        );
    }

    #[test]
    fn a_job_spec_survives_the_wire() {
        let spec = m::JobSpec {
            name: "web".into(),
            owner: "alice".into(),
            priority: 200,
            replicas: 4,
            task: m::TaskTemplate {
                command: "/bin/server".into(),
                args: vec!["--port=%port%".into()],
                env: BTreeMap::from([("MODE".into(), "prod".into())]),
                resources: m::Resources::new(250, 128 << 20),
                ports: vec!["http".into()],
            },
            constraints: vec![m::Constraint {
                attribute: "rack".into(),
                op: m::ConstraintOp::In,
                values: vec!["r1".into(), "r2".into()],
                soft: true,
            }],
            job_type: m::JobType::Batch,
            app_class: m::AppClass::Batch,
            restart: m::RestartPolicy {
                max_attempts: 9,
                interval_s: 60,
                delay_ms: 10,
            },
            task_overrides: BTreeMap::from([(
                2,
                m::TaskTemplate {
                    command: "/bin/other".into(),
                    resources: m::Resources::new(500, 1 << 30),
                    ..Default::default()
                },
            )]),
            alloc_set: Some("shared".into()),
            is_alloc_set: false,
        };
        let wire = v1::JobSpec::from(spec.clone());
        assert_eq!(m::JobSpec::try_from(wire), Ok(spec));
    }

    #[test]
    fn bad_wire_input_is_an_error_not_a_panic() {
        let wire = v1::JobSpec {
            name: "x".into(),
            ..Default::default()
        };
        assert_eq!(
            m::JobSpec::try_from(wire),
            Err(ConvertError::Missing { field: "spec.task" })
        );
        assert!(constraint_op_from_wire(99).is_err());
        assert!(task_state_from_wire(0).is_err());
        assert!(job_type_from_wire(42).is_err());
    }
}
