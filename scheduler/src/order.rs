//! The pending queue's order: priority high first; within a priority, round-robin across
//! owners so that one user's large job does not starve another's.

use crate::view::PendingTask;
use std::collections::{BTreeMap, VecDeque};

/// Indices into `pending` in the order tasks should be placed. Within an owner, tasks keep
/// their (job, index) order; owners take turns in name order. Deterministic.
pub fn queue_order(pending: &[PendingTask]) -> Vec<usize> {
    // priority (descending) → owner → that owner's tasks.
    let mut by_priority: BTreeMap<std::cmp::Reverse<u32>, BTreeMap<&str, Vec<usize>>> =
        BTreeMap::new();
    for (i, task) in pending.iter().enumerate() {
        by_priority
            .entry(std::cmp::Reverse(task.priority))
            .or_default()
            .entry(task.owner.as_str())
            .or_default()
            .push(i);
    }
    let mut out = Vec::with_capacity(pending.len());
    for owners in by_priority.into_values() {
        let mut queues: Vec<VecDeque<usize>> = owners
            .into_values()
            .map(|mut tasks| {
                tasks.sort_by(|&a, &b| pending[a].id.cmp(&pending[b].id));
                VecDeque::from(tasks)
            })
            .collect();
        while !queues.is_empty() {
            for queue in &mut queues {
                if let Some(i) = queue.pop_front() {
                    out.push(i);
                }
            }
            queues.retain(|q| !q.is_empty());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use borg_model::{Resources, TaskId};
    use std::sync::Arc;

    fn task(job: &str, index: u32, owner: &str, priority: u32) -> PendingTask {
        PendingTask {
            id: TaskId::new(job, index),
            incarnation: 0,
            owner: owner.into(),
            priority,
            limits: Resources::new(1, 1),
            constraints: Arc::from(Vec::new()),
            ports: 0,
        }
    }

    #[test]
    fn priority_first_then_owners_take_turns() {
        let pending = vec![
            task("a", 0, "alice", 100),
            task("a", 1, "alice", 100),
            task("a", 2, "alice", 100),
            task("b", 0, "bob", 100),
            task("c", 0, "carol", 200),
            task("b", 1, "bob", 100),
            task("f", 0, "dave", 10),
        ];
        let order: Vec<String> = queue_order(&pending)
            .into_iter()
            .map(|i| pending[i].id.to_string())
            .collect();
        assert_eq!(order, vec!["c/0", "a/0", "b/0", "a/1", "b/1", "a/2", "f/0"]);
    }

    #[test]
    fn the_order_does_not_depend_on_input_order() {
        let mut pending = vec![
            task("a", 1, "alice", 100),
            task("b", 0, "bob", 100),
            task("a", 0, "alice", 100),
        ];
        let first: Vec<TaskId> = queue_order(&pending)
            .into_iter()
            .map(|i| pending[i].id.clone())
            .collect();
        pending.reverse();
        let second: Vec<TaskId> = queue_order(&pending)
            .into_iter()
            .map(|i| pending[i].id.clone())
            .collect();
        assert_eq!(first, second);
    }
}
