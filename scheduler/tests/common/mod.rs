//! Builders of views and pending tasks shared by the placement tests.
#![allow(dead_code)]

use borg_model::{
    Constraint, ConstraintOp, MachineInfo, MachineState, Resources, TaskId, TaskState,
};
use scheduler::{CellView, JobView, MachineView, PendingTask, Plan, TaskView};
use std::collections::BTreeMap;
use std::sync::Arc;

pub fn machine(name: &str, cpu: u64, ram: u64, attrs: &[(&str, &str)]) -> MachineView {
    MachineView::new(
        MachineInfo {
            name: name.into(),
            address: String::new(),
            capacity: Resources::new(cpu, ram),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            port_capacity: None,
        },
        MachineState::Up,
        7,
    )
}

/// A job whose tasks all run on the given machines (one task per entry).
pub fn running_job(name: &str, priority: u32, limits: Resources, machines: &[&str]) -> JobView {
    JobView {
        name: name.into(),
        owner: format!("owner-{name}"),
        priority,
        limits,
        limits_by_task: Default::default(),
        ports_by_task: Default::default(),
        alloc_set: None,
        constraints: Arc::from(Vec::new()),
        ports: 0,
        package: Arc::from("/bin/app"),
        active: true,
        tasks: machines
            .iter()
            .enumerate()
            .map(|(i, m)| {
                (
                    i as u32,
                    TaskView {
                        state: TaskState::Running,
                        machine: m.to_string(),
                        incarnation: 3,
                    },
                )
            })
            .collect::<BTreeMap<_, _>>(),
    }
}

pub fn pending(
    job: &str,
    index: u32,
    owner: &str,
    priority: u32,
    limits: Resources,
    constraints: Vec<Constraint>,
) -> PendingTask {
    PendingTask {
        id: TaskId::new(job, index),
        incarnation: 1,
        owner: owner.into(),
        priority,
        limits,
        constraints: Arc::from(constraints),
        ports: 0,
    }
}

pub fn constraint(attribute: &str, op: ConstraintOp, values: &[&str], soft: bool) -> Constraint {
    Constraint {
        attribute: attribute.into(),
        op,
        values: values.iter().map(|v| v.to_string()).collect(),
        soft,
    }
}

/// Machine each task was placed on.
pub fn placed_on(plan: &Plan) -> BTreeMap<String, String> {
    plan.placements
        .iter()
        .map(|p| (p.task.to_string(), p.machine.clone()))
        .collect()
}

pub fn view_of(machines: Vec<MachineView>, jobs: Vec<JobView>) -> CellView {
    let mut view = CellView::new();
    for m in machines {
        view.upsert_machine(m);
    }
    for j in jobs {
        view.upsert_job(j);
    }
    view
}

/// A machine as the master streams it: up, `cpu_millis` and 1 GiB, reporting
/// `port_capacity` ports (`None`: a borglet that does not report its port range).
pub fn wire_machine(
    name: &str,
    cpu_millis: u64,
    port_capacity: Option<u32>,
) -> borg_proto::v1::Machine {
    use borg_proto::v1;
    v1::Machine {
        info: Some(v1::MachineInfo {
            name: name.into(),
            address: "127.0.0.1:1".into(),
            capacity: Some(v1::Resources {
                cpu_millis,
                ram_bytes: 1 << 30,
                ..Default::default()
            }),
            attributes: Default::default(),
            port_capacity,
        }),
        state: v1::MachineState::Up as i32,
        version: 1,
        allocated: Some(v1::Resources::default()),
        ..Default::default()
    }
}

/// An active job as the master streams it: `replicas` pending tasks of `cpu_millis` and
/// 1 MiB, each naming `ports`.
pub fn wire_job(name: &str, replicas: u32, cpu_millis: u64, ports: &[&str]) -> borg_proto::v1::Job {
    use borg_proto::v1;
    v1::Job {
        spec: Some(v1::JobSpec {
            name: name.into(),
            owner: "alice".into(),
            priority: 100,
            replicas,
            task: Some(v1::TaskTemplate {
                command: "/bin/true".into(),
                resources: Some(v1::Resources {
                    cpu_millis,
                    ram_bytes: 1 << 20,
                    ..Default::default()
                }),
                ports: ports.iter().map(|p| p.to_string()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        state: v1::JobState::Active as i32,
        tasks: (0..replicas)
            .map(|index| v1::Task {
                job: name.into(),
                index,
                state: v1::TaskState::Pending as i32,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}
