//! What `schedule` produces: placements to commit, and why the rest stay pending.

use borg_model::{Constraint, Priority, TaskId};
use std::collections::BTreeMap;
use std::fmt;

/// A running task to evict so that a placement fits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Victim {
    pub task: TaskId,
    pub incarnation: u64,
    pub priority: Priority,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub task: TaskId,
    /// Incarnation the task had while pending (the master checks it).
    pub incarnation: u64,
    pub machine: String,
    /// Machine version the view held when the machine was chosen.
    pub machine_version: u64,
    pub preempt: Vec<Victim>,
}

impl Placement {
    /// The reason to record on a victim that goes back to pending (the master records it
    /// when it commits the placement).
    pub fn preemption_reason(&self, victim: &Victim) -> String {
        format!(
            "preempted on {} (priority {}) to make room for {}",
            self.machine, victim.priority, self.task
        )
    }
}

/// How many examined machines failed one hard constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConstraintFailure {
    pub constraint: Constraint,
    pub machines: usize,
}

/// Why a task fits nowhere: per-cause counts of the machines examined. The seed of
/// "why pending".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnplacedReason {
    pub machines_total: usize,
    pub machines_examined: usize,
    /// Machines that are down or draining.
    pub machines_not_up: usize,
    /// Per hard constraint that failed somewhere (a machine may fail several).
    pub constraint_failures: Vec<ConstraintFailure>,
    /// Machines that passed the constraints but lacked this dimension ("cpu", "ram", "disk",
    /// "gpu") even counting preemptible tasks as free.
    pub resource_shortfalls: BTreeMap<&'static str, usize>,
    /// For a task of a job in an alloc set: why its alloc cannot take it (no machine is
    /// examined).
    pub alloc: Option<String>,
}

impl fmt::Display for UnplacedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(alloc) = &self.alloc {
            return f.write_str(alloc);
        }
        if self.machines_total == 0 {
            return f.write_str("no machines in the cell");
        }
        write!(
            f,
            "no machine fits ({} of {} machines examined",
            self.machines_examined, self.machines_total
        )?;
        if self.machines_not_up > 0 {
            write!(f, "; {} not up", self.machines_not_up)?;
        }
        for failure in &self.constraint_failures {
            write!(
                f,
                "; {} failed constraint {}",
                failure.machines,
                crate::constraint::describe(&failure.constraint)
            )?;
        }
        for (dimension, machines) in &self.resource_shortfalls {
            write!(f, "; {machines} short of {dimension}")?;
        }
        f.write_str(")")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub placements: Vec<Placement>,
    pub unplaced: Vec<(TaskId, UnplacedReason)>,
    /// Pending tasks not considered this round because of `PlacementConfig::tasks_max`.
    pub deferred: usize,
    /// Machines examined over all tasks (the work relaxed randomization bounds).
    pub machines_examined: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use borg_model::ConstraintOp;

    #[test]
    fn the_reason_names_each_cause() {
        let reason = UnplacedReason {
            machines_total: 5,
            machines_examined: 5,
            machines_not_up: 1,
            constraint_failures: vec![ConstraintFailure {
                constraint: Constraint {
                    attribute: "rack".into(),
                    op: ConstraintOp::Eq,
                    values: vec!["r9".into()],
                    soft: false,
                },
                machines: 2,
            }],
            resource_shortfalls: BTreeMap::from([("ram", 2)]),
            alloc: None,
        };
        assert_eq!(
            reason.to_string(),
            "no machine fits (5 of 5 machines examined; 1 not up; 2 failed constraint rack == r9; 2 short of ram)"
        );
        assert_eq!(
            UnplacedReason::default().to_string(),
            "no machines in the cell"
        );
    }
}
