//! Equivalence classes: pending tasks with the same priority, limits and constraints are
//! interchangeable for feasibility, so their constraints are compiled (and, in later
//! versions, their per-machine verdicts cached) once per class rather than once per task.

use crate::constraint::CompiledConstraint;
use crate::view::PendingTask;
use borg_model::{Constraint, Priority, Resources};
use std::collections::HashMap;
use std::sync::Arc;

/// Index of a class within one `schedule` call.
pub type ClassId = usize;

#[derive(Debug, Clone)]
pub struct TaskClass {
    pub priority: Priority,
    pub limits: Resources,
    pub hard: Vec<CompiledConstraint>,
    pub soft: Vec<CompiledConstraint>,
}

impl TaskClass {
    fn new(task: &PendingTask) -> Self {
        let (soft, hard): (Vec<&Constraint>, Vec<&Constraint>) =
            task.constraints.iter().partition(|c| c.soft);
        TaskClass {
            priority: task.priority,
            limits: task.limits,
            hard: hard.into_iter().map(CompiledConstraint::new).collect(),
            soft: soft.into_iter().map(CompiledConstraint::new).collect(),
        }
    }
}

type ClassKey = (Priority, Resources, Arc<[Constraint]>);

/// The classes of a batch of pending tasks.
#[derive(Debug, Default)]
pub struct Classes {
    classes: Vec<TaskClass>,
    by_key: HashMap<ClassKey, ClassId>,
}

impl Classes {
    /// The class of `task`, created on first sight.
    pub fn class_of(&mut self, task: &PendingTask) -> ClassId {
        let key = (task.priority, task.limits, Arc::clone(&task.constraints));
        if let Some(&id) = self.by_key.get(&key) {
            return id;
        }
        let id = self.classes.len();
        self.classes.push(TaskClass::new(task));
        self.by_key.insert(key, id);
        id
    }

    pub fn get(&self, id: ClassId) -> &TaskClass {
        &self.classes[id]
    }

    pub fn len(&self) -> usize {
        self.classes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use borg_model::{ConstraintOp, TaskId};

    fn task(job: &str, cpu: u64, constraints: Vec<Constraint>) -> PendingTask {
        PendingTask {
            id: TaskId::new(job, 0),
            incarnation: 0,
            owner: "o".into(),
            priority: 100,
            limits: Resources::new(cpu, 1),
            constraints: Arc::from(constraints),
        }
    }

    #[test]
    fn equal_requirements_share_a_class() {
        let rack = Constraint {
            attribute: "rack".into(),
            op: ConstraintOp::Eq,
            values: vec!["r1".into()],
            soft: true,
        };
        let mut classes = Classes::default();
        let a = classes.class_of(&task("a", 10, vec![rack.clone()]));
        let b = classes.class_of(&task("b", 10, vec![rack.clone()]));
        let c = classes.class_of(&task("c", 20, vec![rack]));
        let d = classes.class_of(&task("d", 10, vec![]));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_eq!(classes.len(), 3);
        assert_eq!(classes.get(a).soft.len(), 1);
        assert!(classes.get(a).hard.is_empty());
    }
}
