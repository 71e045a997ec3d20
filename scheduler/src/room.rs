//! Where a cell change may have made room for a task that fit nowhere before, so that the
//! backlog (`backlog`) retries its tasks against those machines only. A task's room on a
//! machine is its capacity minus what the tasks it may not preempt hold; those are the tasks
//! at or above a priority threshold (`borg_model::priority::may_preempt`: prod preempts
//! only non-prod, non-prod only strictly lower). So room appeared on a machine for some
//! task exactly when, for some threshold, the tasks at or above it hold less than before in
//! some dimension. A preemption (a higher-priority task takes at least the victim's place)
//! or a task moving from pending to placed frees nothing; a task leaving, shrinking, or
//! replaced by a smaller one of higher priority does.

use crate::view::{CellView, PlacedTask};
use borg_model::{MachineState, Priority, Resources, TaskId, MACHINE_PORT_CAPACITY_DEFAULT};
use borg_proto::convert;
use borg_proto::v1;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Where room may have appeared since the last look.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RoomFreed {
    #[default]
    Nowhere,
    /// On these machines only.
    On(BTreeSet<String>),
    /// Anywhere: a snapshot, a change to alloc sets (their tenants hold an alloc's room,
    /// not a machine's), or an item without the fields the judgement needs.
    Everywhere,
}

impl RoomFreed {
    pub fn is_nowhere(&self) -> bool {
        *self == RoomFreed::Nowhere
    }

    /// Both this and `other`.
    pub fn merge(&mut self, other: RoomFreed) {
        match other {
            RoomFreed::Nowhere => {}
            RoomFreed::Everywhere => *self = RoomFreed::Everywhere,
            RoomFreed::On(machines) => {
                for machine in machines {
                    self.add(machine);
                }
            }
        }
    }

    fn add(&mut self, machine: String) {
        match self {
            RoomFreed::Nowhere => *self = RoomFreed::On(BTreeSet::from([machine])),
            RoomFreed::On(machines) => {
                machines.insert(machine);
            }
            RoomFreed::Everywhere => {}
        }
    }
}

/// A placed task's hold on its machine, as the view accounts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    incarnation: u64,
    priority: Priority,
    limits: Resources,
    reservation: Resources,
    ports: u32,
}

impl Hold {
    fn of(task: &PlacedTask) -> Self {
        Hold {
            incarnation: task.incarnation,
            priority: task.priority,
            limits: task.limits,
            reservation: task.reservation,
            ports: task.ports,
        }
    }
}

/// (machine, task) → hold.
pub type Holds = HashMap<(String, TaskId), Hold>;

/// Notes, while a change is applied, where it may have made room: machines that changed
/// in a way that may free room, and the holds of tasks before and after.
#[derive(Debug, Default)]
pub struct RoomNotes {
    room: RoomFreed,
    /// Per machine: (priority, hold, whether it left) for every hold that changed.
    deltas: BTreeMap<String, Vec<(Priority, Hold, bool)>>,
}

impl RoomNotes {
    pub fn new() -> Self {
        RoomNotes::default()
    }

    /// Room may have appeared anywhere.
    pub fn everywhere(&mut self) {
        self.room = RoomFreed::Everywhere;
    }

    pub fn is_everywhere(&self) -> bool {
        self.room == RoomFreed::Everywhere
    }

    /// `machine` is about to replace its picture in `view`.
    pub fn machine_upserted(&mut self, view: &CellView, machine: &v1::Machine) {
        match &machine.info {
            None => self.everywhere(),
            Some(info) if machine_may_free(view, machine, info) => self.room.add(info.name.clone()),
            Some(_) => {}
        }
    }

    /// The holds of job `name`'s tasks `indices` (every task when None) in `view`.
    pub fn holds(view: &CellView, name: &str, indices: Option<&[u32]>) -> Holds {
        let mut holds = Holds::new();
        let Some(job) = view.job(name) else {
            return holds;
        };
        let mut add = |index: u32| {
            let Some(task) = job.tasks.get(&index) else {
                return;
            };
            if task.machine.is_empty() || !task.state.is_placed() {
                return;
            }
            let id = TaskId::new(name.to_owned(), index);
            if let Some(placed) = view.placed_task(&task.machine, &id) {
                holds.insert((task.machine.clone(), id), Hold::of(placed));
            }
        };
        match indices {
            Some(indices) => indices.iter().for_each(|&i| add(i)),
            None => job.tasks.keys().for_each(|&i| add(i)),
        }
        holds
    }

    /// Tasks that held `before` hold `after` now.
    pub fn holds_changed(&mut self, mut before: Holds, after: Holds) {
        for (key, hold) in after {
            if before.get(&key) == Some(&hold) {
                before.remove(&key);
                continue;
            }
            self.deltas
                .entry(key.0)
                .or_default()
                .push((hold.priority, hold, false));
        }
        for ((machine, _), hold) in before {
            self.deltas
                .entry(machine)
                .or_default()
                .push((hold.priority, hold, true));
        }
    }

    /// Where room may have appeared.
    pub fn finish(self) -> RoomFreed {
        let mut room = self.room;
        if room == RoomFreed::Everywhere {
            return room;
        }
        for (machine, changes) in self.deltas {
            if frees_room(changes) {
                room.add(machine);
            }
        }
        room
    }
}

/// Whether, for some priority threshold, the tasks at or above it hold less after
/// `changes` (holds that `left`, or arrived) in some dimension.
fn frees_room(mut changes: Vec<(Priority, Hold, bool)>) -> bool {
    changes.sort_by_key(|c| std::cmp::Reverse(c.0));
    let (mut arrived, mut left) = (Totals::default(), Totals::default());
    for (i, (priority, hold, gone)) in changes.iter().enumerate() {
        if *gone {
            left.add(hold);
        } else {
            arrived.add(hold);
        }
        let threshold_ends = changes.get(i + 1).is_none_or(|next| next.0 != *priority);
        if threshold_ends && !left.covered_by(&arrived) {
            return true;
        }
    }
    false
}

#[derive(Debug, Default)]
struct Totals {
    limits: Resources,
    reservation: Resources,
    ports: u64,
}

impl Totals {
    fn add(&mut self, hold: &Hold) {
        self.limits += hold.limits;
        self.reservation += hold.reservation;
        self.ports += u64::from(hold.ports);
    }

    fn covered_by(&self, other: &Totals) -> bool {
        self.limits.fits_in(&other.limits)
            && self.reservation.fits_in(&other.reservation)
            && self.ports <= other.ports
    }
}

/// A machine appears, comes up, grows, gets more ports, changes its attributes, or the
/// master reports less allocated on it.
fn machine_may_free(view: &CellView, machine: &v1::Machine, info: &v1::MachineInfo) -> bool {
    let Some(old) = view.machine(&info.name) else {
        return true;
    };
    let up = v1::MachineState::try_from(machine.state) == Ok(v1::MachineState::Up);
    let capacity = convert::resources_or_zero(info.capacity);
    let allocated = convert::resources_or_zero(machine.allocated);
    (up && old.state != MachineState::Up)
        || !capacity.fits_in(&old.capacity)
        || !old.reported_allocated.fits_in(&allocated)
        || info.port_capacity.unwrap_or(MACHINE_PORT_CAPACITY_DEFAULT) > old.port_capacity
        || info.attributes.len() != old.attributes.len()
        || info
            .attributes
            .iter()
            .any(|(k, v)| old.attributes.get(k) != Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(priority: Priority, cpu: u64) -> Hold {
        let limits = Resources::new(cpu, 1 << 20);
        Hold {
            incarnation: 1,
            priority,
            limits,
            reservation: limits,
            ports: 0,
        }
    }

    #[test]
    fn room_appears_when_tasks_at_or_above_some_priority_hold_less() {
        // A task leaves: room.
        assert!(frees_room(vec![(100, hold(100, 10), true)]));
        // A task arrives: none.
        assert!(!frees_room(vec![(100, hold(100, 10), false)]));
        // Preempted by a larger task of higher priority: none (for every threshold the
        // tasks at or above it hold at least as much).
        assert!(!frees_room(vec![
            (100, hold(100, 10), true),
            (200, hold(200, 10), false),
        ]));
        // By a smaller one: room for tasks that may not preempt the victim.
        assert!(frees_room(vec![
            (100, hold(100, 10), true),
            (200, hold(200, 5), false),
        ]));
        // Replaced by a larger one of lower priority: tasks between the two priorities
        // (which may preempt the newcomer but not the one that left) gained room.
        assert!(frees_room(vec![
            (200, hold(200, 10), true),
            (100, hold(100, 20), false),
        ]));
    }

    #[test]
    fn merging_keeps_the_widest() {
        let mut room = RoomFreed::Nowhere;
        room.merge(RoomFreed::On(BTreeSet::from(["m1".to_owned()])));
        room.merge(RoomFreed::On(BTreeSet::from(["m2".to_owned()])));
        assert_eq!(
            room,
            RoomFreed::On(BTreeSet::from(["m1".to_owned(), "m2".to_owned()]))
        );
        room.merge(RoomFreed::Everywhere);
        room.merge(RoomFreed::On(BTreeSet::from(["m3".to_owned()])));
        assert_eq!(room, RoomFreed::Everywhere);
    }
}
