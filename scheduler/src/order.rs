//! The pending queue's order: priority high first; within a priority, round-robin across
//! owners so that one user's large job does not starve another's (Borg's, the default), or,
//! as an option for batches whose arrival order means nothing (a simulator's snapshot of a
//! cell), the largest task first.

use crate::view::PendingTask;
use borg_model::Resources;
use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};

/// How tasks of one priority are ordered (`PlacementConfig::queue_order`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QueueOrder {
    /// Borg's: owners take turns, each in (job, index) order. Fair to users.
    #[default]
    RoundRobin,
    /// Largest first (first-fit-decreasing style): small tasks placed last fill the holes
    /// the large ones leave. Ignores owners: for capacity questions, not a live cell.
    LargestFirst,
}

impl QueueOrder {
    pub fn name(self) -> &'static str {
        match self {
            QueueOrder::RoundRobin => "round-robin",
            QueueOrder::LargestFirst => "largest-first",
        }
    }
}

/// Indices into `pending` in the order tasks should be placed under `order`, on a cell of
/// `capacity` in all (the scale of each dimension for `LargestFirst`). Deterministic.
pub fn queue_order_by(
    pending: &[PendingTask],
    order: QueueOrder,
    capacity: &Resources,
) -> Vec<usize> {
    match order {
        QueueOrder::RoundRobin => queue_order(pending),
        QueueOrder::LargestFirst => largest_first(pending, capacity),
    }
}

/// Priority high first; within a priority, the largest task first, then by id. A task's
/// size is its largest share of the cell's capacity in any dimension (first-fit-decreasing
/// for vectors by the dominant share): on the Google 2011 production tasks this packed
/// tighter than CPU alone, the sum of the shares, or the shares weighted by demand.
fn largest_first(pending: &[PendingTask], capacity: &Resources) -> Vec<usize> {
    let sizes: Vec<f64> = pending
        .iter()
        .map(|t| dominant_share(&t.limits, capacity))
        .collect();
    let mut out: Vec<usize> = (0..pending.len()).collect();
    out.sort_by(|&a, &b| {
        Reverse(pending[a].priority)
            .cmp(&Reverse(pending[b].priority))
            .then_with(|| sizes[b].total_cmp(&sizes[a]))
            .then_with(|| pending[a].id.cmp(&pending[b].id))
    });
    out
}

/// The largest of `limits`' shares of `capacity` over the dimensions it has.
fn dominant_share(limits: &Resources, capacity: &Resources) -> f64 {
    let shares = [
        (limits.cpu_millis as f64, capacity.cpu_millis as f64),
        (limits.ram_bytes as f64, capacity.ram_bytes as f64),
        (limits.disk_bytes as f64, capacity.disk_bytes as f64),
        (f64::from(limits.gpus), f64::from(capacity.gpus)),
    ];
    shares
        .into_iter()
        .filter(|(_, c)| *c > 0.0)
        .map(|(amount, c)| amount / c)
        .fold(0.0, f64::max)
}

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

    fn sized(job: &str, priority: u32, cpu_millis: u64, ram_bytes: u64) -> PendingTask {
        PendingTask {
            limits: Resources::new(cpu_millis, ram_bytes),
            ..task(job, 0, job, priority)
        }
    }

    #[test]
    fn largest_first_orders_by_dominant_share_within_a_priority() {
        let cell = Resources::new(1000, 1000);
        let pending = vec![
            sized("small", 100, 10, 10),
            sized("ram-heavy", 100, 10, 500),
            sized("cpu-heavy", 100, 400, 10),
            sized("high", 200, 1, 1),
            sized("tie-b", 100, 50, 50),
            sized("tie-a", 100, 50, 50),
        ];
        let order: Vec<String> = queue_order_by(&pending, QueueOrder::LargestFirst, &cell)
            .into_iter()
            .map(|i| pending[i].id.job.to_string())
            .collect();
        assert_eq!(
            order,
            vec!["high", "ram-heavy", "cpu-heavy", "tie-a", "tie-b", "small"]
        );
        // The default is Borg's order, whatever the capacity.
        assert_eq!(
            queue_order_by(&pending, QueueOrder::default(), &cell),
            queue_order(&pending)
        );
    }

    #[test]
    fn the_order_does_not_depend_on_input_order() {
        let cell = Resources::new(1000, 1000);
        for order in [QueueOrder::RoundRobin, QueueOrder::LargestFirst] {
            let mut pending = vec![
                task("a", 1, "alice", 100),
                task("b", 0, "bob", 100),
                task("a", 0, "alice", 100),
            ];
            let ids = |pending: &[PendingTask]| -> Vec<TaskId> {
                queue_order_by(pending, order, &cell)
                    .into_iter()
                    .map(|i| pending[i].id.clone())
                    .collect()
            };
            let first = ids(&pending);
            pending.reverse();
            assert_eq!(first, ids(&pending), "{}", order.name());
        }
    }
}
