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
        constraints: Arc::from(Vec::new()),
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
