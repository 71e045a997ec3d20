//! Keyed polls: a borglet that already holds most of its desired set is sent the set as
//! keys, and full assignments only for the tasks it was not sent before.
//!
//! A borglet says it takes keyed polls (`PollResponse.keyed_polls`); until it has answered
//! one poll saying so (and again after any failed poll) it is polled in full. The tasks of
//! the last answered poll are what it holds ([`SentTasks`]). A keyed poll whose keys the
//! borglet cannot place is answered with them in `unknown`, and is followed at once by a
//! full poll, so a report is always an answer to the whole set.

use crate::assignments::task_keys;
use borg_proto::v1::{AssignedTask, MachineAssignment, PollRequest};
use std::collections::HashMap;

/// The tasks (job → index → incarnation) a borglet was sent in its last answered poll.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentTasks {
    version: u64,
    by_job: HashMap<String, HashMap<u32, u64>>,
}

impl SentTasks {
    /// The tasks of `assignment` (at its version).
    pub fn of(assignment: &MachineAssignment) -> SentTasks {
        let mut by_job: HashMap<String, HashMap<u32, u64>> = HashMap::new();
        for task in &assignment.desired {
            match by_job.get_mut(task.job.as_str()) {
                Some(tasks) => {
                    tasks.insert(task.index, task.incarnation);
                }
                None => {
                    by_job.insert(
                        task.job.clone(),
                        HashMap::from([(task.index, task.incarnation)]),
                    );
                }
            }
        }
        SentTasks {
            version: assignment.version,
            by_job,
        }
    }

    /// Whether these are the tasks of `assignment` already (same version).
    pub fn is_of(&self, assignment: &MachineAssignment) -> bool {
        self.version == assignment.version && assignment.version != 0
    }

    fn holds(&self, task: &AssignedTask) -> bool {
        self.by_job
            .get(task.job.as_str())
            .and_then(|tasks| tasks.get(&task.index))
            == Some(&task.incarnation)
    }
}

/// A poll of `assignment`'s machine: keyed against `sent` when given, else in full.
pub fn poll_request(
    assignment: &MachineAssignment,
    sent: Option<&SentTasks>,
    master_index: u64,
) -> PollRequest {
    let Some(sent) = sent else {
        return full_poll_request(assignment, master_index);
    };
    // The set it was sent already (same version): no task needs a lookup.
    let all_held = sent.is_of(assignment);
    PollRequest {
        machine: assignment.machine.clone(),
        desired: assignment
            .desired
            .iter()
            .filter(|task| !all_held && !sent.holds(task))
            .cloned()
            .collect(),
        master_index,
        keyed: true,
        desired_keys: task_keys(assignment),
        ..PollRequest::default()
    }
}

/// A poll with the whole desired set.
pub fn full_poll_request(assignment: &MachineAssignment, master_index: u64) -> PollRequest {
    PollRequest {
        machine: assignment.machine.clone(),
        desired: assignment.desired.clone(),
        master_index,
        ..PollRequest::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assignments::tests::task;

    fn assignment(version: u64, desired: Vec<AssignedTask>) -> MachineAssignment {
        MachineAssignment {
            machine: "m1".into(),
            desired,
            version,
            ..MachineAssignment::default()
        }
    }

    #[test]
    fn a_keyed_poll_carries_every_key_and_only_the_unsent_tasks() {
        let before = assignment(3, vec![task("a", 0, 1), task("a", 1, 1)]);
        let sent = SentTasks::of(&before);
        assert!(sent.is_of(&before));
        let now = assignment(4, vec![task("a", 1, 1), task("a", 2, 1), task("b", 0, 7)]);
        assert!(!sent.is_of(&now));

        let full = poll_request(&now, None, 9);
        assert!(!full.keyed);
        assert_eq!(full.desired.len(), 3);
        assert_eq!(full.master_index, 9);

        let keyed = poll_request(&now, Some(&sent), 9);
        assert!(keyed.keyed);
        let unsent: Vec<(String, u32)> = keyed
            .desired
            .iter()
            .map(|t| (t.job.clone(), t.index))
            .collect();
        assert_eq!(unsent, vec![("a".into(), 2), ("b".into(), 0)]);
        assert_eq!(keyed.desired_keys.len(), 2);
        assert_eq!(keyed.desired_keys[0].indices, vec![1, 2]);
        assert_eq!(keyed.desired_keys[1].incarnations, vec![7]);

        // Another incarnation of a sent index is a new task.
        let restarted = assignment(5, vec![task("a", 0, 2)]);
        assert_eq!(poll_request(&restarted, Some(&sent), 9).desired.len(), 1);
    }
}
