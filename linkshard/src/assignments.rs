//! The shard's copy of its machines' desired sets, kept up to date from the master's answers.
//!
//! The shard tells the master what it holds ([`HeldAssignments::known`]: per machine the
//! version and the task keys), and the master answers each known machine with its
//! differences only (`MachineAssignment.delta`): while a machine runs a thousand tasks, a
//! round no longer makes the master build and encode a thousand tasks when a few changed.
//! A master that does not know the field answers in full, which simply replaces the copy.

use borg_proto::convert::group_task_keys;
use borg_proto::v1::{JobTaskKeys, KnownAssignment, MachineAssignment};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Desired sets by machine, each in (job, index) order as the master lists them (shared
/// with the round's polls, which may need the whole set again).
#[derive(Debug, Default)]
pub struct HeldAssignments {
    machines: BTreeMap<String, Arc<MachineAssignment>>,
}

impl HeldAssignments {
    /// What the shard holds, for `GetAssignmentRequest.known`.
    pub fn known(&self) -> Vec<KnownAssignment> {
        self.machines
            .values()
            .map(|assignment| KnownAssignment {
                machine: assignment.machine.clone(),
                version: assignment.version,
                tasks: task_keys(assignment),
            })
            .collect()
    }

    /// Brings the copy to the master's answer: machines it does not list are dropped, full
    /// answers replace, deltas patch (the first of duplicate names wins).
    pub fn apply(&mut self, answer: Vec<MachineAssignment>) {
        let mut next = BTreeMap::new();
        for assignment in answer {
            if next.contains_key(&assignment.machine) {
                continue;
            }
            let held = self.machines.remove(&assignment.machine);
            let merged = match held {
                Some(held) if assignment.delta => patch(Arc::unwrap_or_clone(held), assignment),
                // A delta for a machine not held (not asked for): keep what it holds under
                // version 0, so the next answer compares the keys and fills in the rest.
                None if assignment.delta => MachineAssignment {
                    version: 0,
                    delta: false,
                    ..assignment
                },
                _ => assignment,
            };
            next.insert(merged.machine.clone(), Arc::new(merged));
        }
        self.machines = next;
    }

    /// Each machine's name and version: equal before and after an answer when the answer
    /// changed nothing.
    pub fn versions(&self) -> Vec<(&str, u64)> {
        self.machines
            .values()
            .map(|a| (a.machine.as_str(), a.version))
            .collect()
    }

    /// Each machine with its whole desired set (`delta` always false here).
    pub fn machines(&self) -> &BTreeMap<String, Arc<MachineAssignment>> {
        &self.machines
    }
}

/// `held` with the delta's removals and additions; address and version from the delta.
fn patch(mut held: MachineAssignment, delta: MachineAssignment) -> MachineAssignment {
    held.address = delta.address;
    held.version = delta.version;
    if delta.removed.is_empty() && delta.desired.is_empty() {
        return held;
    }
    let removed: HashSet<(&str, u32, u64)> = delta
        .removed
        .iter()
        .flat_map(|keys| {
            keys.indices
                .iter()
                .zip(&keys.incarnations)
                .map(|(index, incarnation)| (keys.job.as_str(), *index, *incarnation))
        })
        .collect();
    held.desired
        .retain(|t| !removed.contains(&(t.job.as_str(), t.index, t.incarnation)));
    held.desired.extend(delta.desired);
    held.desired
        .sort_by(|a, b| (a.job.as_str(), a.index).cmp(&(b.job.as_str(), b.index)));
    held
}

/// The assignment's tasks grouped by job (one group per job: the set is in job order).
pub(crate) fn task_keys(assignment: &MachineAssignment) -> Vec<JobTaskKeys> {
    group_task_keys(
        assignment
            .desired
            .iter()
            .map(|t| (t.job.as_str(), t.index, t.incarnation)),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use borg_proto::v1::AssignedTask;

    pub(crate) fn task(job: &str, index: u32, incarnation: u64) -> AssignedTask {
        AssignedTask {
            job: job.into(),
            index,
            incarnation,
            ..AssignedTask::default()
        }
    }

    fn keys(held: &HeldAssignments, machine: &str) -> Vec<(String, u32, u64)> {
        held.machines()[machine]
            .desired
            .iter()
            .map(|t| (t.job.clone(), t.index, t.incarnation))
            .collect()
    }

    fn full(machine: &str, version: u64, desired: Vec<AssignedTask>) -> MachineAssignment {
        MachineAssignment {
            machine: machine.into(),
            address: format!("{machine}:1"),
            desired,
            version,
            ..MachineAssignment::default()
        }
    }

    #[test]
    fn deltas_patch_the_held_set_and_full_answers_replace_it() {
        let mut held = HeldAssignments::default();
        held.apply(vec![
            full(
                "m1",
                3,
                vec![task("a", 0, 1), task("a", 1, 1), task("b", 0, 2)],
            ),
            full("m2", 1, vec![]),
        ]);
        let known = held.known();
        assert_eq!(known.len(), 2);
        assert_eq!((known[0].machine.as_str(), known[0].version), ("m1", 3));
        assert_eq!(known[0].tasks.len(), 2);
        assert_eq!(known[0].tasks[0].indices, vec![0, 1]);
        assert_eq!(known[0].tasks[1].incarnations, vec![2]);

        let delta = MachineAssignment {
            desired: vec![task("a", 1, 2), task("a", 2, 1)],
            delta: true,
            removed: vec![JobTaskKeys {
                job: "a".into(),
                indices: vec![1, 0],
                incarnations: vec![1, 1],
            }],
            ..full("m1", 5, vec![])
        };
        // m2 is no longer in the shard.
        held.apply(vec![delta]);
        assert_eq!(
            keys(&held, "m1"),
            vec![("a".into(), 1, 2), ("a".into(), 2, 1), ("b".into(), 0, 2)]
        );
        assert_eq!(held.machines()["m1"].version, 5);
        assert!(!held.machines().contains_key("m2"));

        let unchanged = MachineAssignment {
            delta: true,
            ..full("m1", 5, vec![])
        };
        held.apply(vec![unchanged]);
        assert_eq!(keys(&held, "m1").len(), 3);

        held.apply(vec![full("m1", 6, vec![task("c", 0, 1)])]);
        assert_eq!(keys(&held, "m1"), vec![("c".into(), 0, 1)]);
    }
}
