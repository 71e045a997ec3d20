//! Workload readers: real cluster traces turned into the cell's domain model.
//!
//! Every reader yields a [`Workload`]: the machines of a cell and the tasks to place on
//! them. Malformed or truncated input is an error naming the file, the line and the field.

pub mod alibaba2023;
pub mod error;
pub mod google2011;
pub mod lines;

pub use error::TraceError;

use borg_model::{AppClass, Constraint, MachineInfo, Priority, Resources, TaskId, TaskState};

/// A cell's machines and the tasks that should run on them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Workload {
    pub machines: Vec<MachineInfo>,
    pub tasks: Vec<TraceTask>,
}

/// One task of a trace, as the simulator's scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceTask {
    pub id: TaskId,
    pub owner: String,
    /// Priority on this project's scale (see each reader for its mapping).
    pub priority: Priority,
    /// The trace's own priority, before mapping.
    pub trace_priority: u32,
    /// The trace's scheduling class (Google: 0 most batch-like … 3 most latency-sensitive).
    pub scheduling_class: u8,
    pub app_class: AppClass,
    /// What the task asked for (its limits).
    pub request: Resources,
    /// Tasks of this job must run on different machines.
    pub different_machines: bool,
    /// Hard constraints on machine attributes.
    pub constraints: Vec<Constraint>,
    /// `Pending`, or `Running` on `machine` in the trace.
    pub state: TaskState,
    pub machine: Option<String>,
}
