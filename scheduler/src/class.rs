//! Equivalence classes: pending tasks with the same priority, limits, constraints and package
//! are interchangeable for feasibility and the class-level score terms, so their constraints
//! are compiled and their per-machine verdicts cached (`cache`) once per class rather than
//! once per task. With classes switched off every task is a class of its own.

use crate::constraint::CompiledConstraint;
use crate::view::PendingTask;
use borg_model::{Constraint, Priority, Resources, TaskId};
use std::collections::HashMap;
use std::sync::Arc;

/// Index of a class within one `schedule` call.
pub type ClassId = usize;

#[derive(Debug, Clone)]
pub struct TaskClass {
    pub priority: Priority,
    pub limits: Resources,
    /// Ports each task holds on its machine.
    pub ports: u32,
    pub hard: Vec<CompiledConstraint>,
    pub soft: Vec<CompiledConstraint>,
    pub package: Arc<str>,
    /// The class's key, naming its slot in a `ScoreCache`.
    pub key: ClassKey,
}

impl TaskClass {
    fn new(task: &PendingTask, package: Arc<str>, key: ClassKey) -> Self {
        let (soft, hard): (Vec<&Constraint>, Vec<&Constraint>) =
            task.constraints.iter().partition(|c| c.soft);
        TaskClass {
            priority: task.priority,
            limits: task.limits,
            ports: task.ports,
            hard: hard.into_iter().map(CompiledConstraint::new).collect(),
            soft: soft.into_iter().map(CompiledConstraint::new).collect(),
            package,
            key,
        }
    }
}

/// What makes tasks equivalent. `task` is set only when equivalence classes are off.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClassKey {
    pub priority: Priority,
    pub limits: Resources,
    pub ports: u32,
    pub constraints: Arc<[Constraint]>,
    pub package: Arc<str>,
    pub task: Option<TaskId>,
}

/// The classes of a batch of pending tasks.
#[derive(Debug)]
pub struct Classes {
    classes: Vec<TaskClass>,
    by_key: HashMap<ClassKey, ClassId>,
    /// False: every task is its own class (the speed-up switched off).
    share: bool,
}

impl Default for Classes {
    fn default() -> Self {
        Classes::new(true)
    }
}

impl Classes {
    pub fn new(share: bool) -> Self {
        Classes {
            classes: Vec::new(),
            by_key: HashMap::new(),
            share,
        }
    }

    /// The class of `task` (whose tasks run `package`), created on first sight.
    pub fn class_of(&mut self, task: &PendingTask, package: &Arc<str>) -> ClassId {
        let key = ClassKey {
            priority: task.priority,
            limits: task.limits,
            ports: task.ports,
            constraints: Arc::clone(&task.constraints),
            package: Arc::clone(package),
            task: (!self.share).then(|| task.id.clone()),
        };
        if let Some(&id) = self.by_key.get(&key) {
            return id;
        }
        let id = self.classes.len();
        self.classes
            .push(TaskClass::new(task, Arc::clone(package), key.clone()));
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
            ports: 0,
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
        let pkg: Arc<str> = Arc::from("/bin/app");
        let mut classes = Classes::default();
        let a = classes.class_of(&task("a", 10, vec![rack.clone()]), &pkg);
        let b = classes.class_of(&task("b", 10, vec![rack.clone()]), &pkg);
        let c = classes.class_of(&task("c", 20, vec![rack]), &pkg);
        let d = classes.class_of(&task("d", 10, vec![]), &pkg);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_eq!(classes.len(), 3);
        assert_eq!(classes.get(a).soft.len(), 1);
        assert!(classes.get(a).hard.is_empty());

        let mut unshared = Classes::new(false);
        let a = unshared.class_of(&task("a", 10, vec![]), &pkg);
        let b = unshared.class_of(&task("b", 10, vec![]), &pkg);
        assert_ne!(a, b, "with classes off every task is its own class");
    }
}
