//! A bounded pool of emptied task groups kept for reuse (v1 only).
//!
//! Creating a memory cgroup and removing it (which leaves the kernel offlining work to do) costs
//! far more than renaming one: v1 renames a group within its parent, so a finished task's group,
//! once reset, becomes `spare-N` and the next task's group is a spare renamed to its name. v2
//! cannot rename groups, so it creates and removes them as before. The pool only keeps slot
//! numbers; the groups are the directories named after them.

use std::sync::Mutex;

/// Most spare groups kept (per borglet; `BorgletConfig::cgroup_spares_max` may lower it). The
/// slots are named `spare-0` .. `spare-{max - 1}`, so leftovers of a crash are found by name.
pub const CGROUP_SPARES_MAX: usize = 64;
/// A finished task's group charged more than this (dirty page cache whose writeback
/// `memory.force_empty` would wait for) is removed, not kept.
pub const SPARE_MEMORY_BEFORE_RESET_MAX_BYTES: u64 = 4 << 20;
/// A finished task's group charged more than this is emptied (`memory.force_empty`), and
/// removed if it still is after that. Below it: the kernel's per-CPU precharge (64 pages,
/// which the next task's charges use up) and kernel memory of objects that outlive the task
/// (dentries and inodes of files it left in its sandbox), the amount by which
/// `memory.usage_in_bytes` is inexact anyway (the kernel's cgroup-v1 memory docs: "a fuzz
/// value for efficient access").
pub const SPARE_MEMORY_RESIDUE_MAX_BYTES: u64 = 256 << 10;

const SPARE_PREFIX: &str = "spare-";

/// Name of the spare group of `slot` (no task's group: those are `job.index.incarnation`).
pub fn spare_name(slot: usize) -> String {
    format!("{SPARE_PREFIX}{slot}")
}

/// Which slots hold a clean spare and which are free.
#[derive(Debug)]
pub(crate) struct SparePool {
    slots: Mutex<Slots>,
}

#[derive(Debug)]
struct Slots {
    /// Slots whose group is a clean spare, ready to be renamed to a task's name.
    ready: Vec<usize>,
    /// Slots without a group.
    free: Vec<usize>,
}

impl SparePool {
    pub(crate) fn new(max: usize) -> SparePool {
        SparePool {
            slots: Mutex::new(Slots {
                ready: Vec::with_capacity(max),
                free: (0..max).rev().collect(),
            }),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A ready spare, now the caller's: it gives the slot back with [`Self::put_free`].
    pub(crate) fn take_ready(&self) -> Option<usize> {
        self.slots().ready.pop()
    }

    /// A free slot to keep a group under, now the caller's.
    pub(crate) fn take_free(&self) -> Option<usize> {
        self.slots().free.pop()
    }

    pub(crate) fn put_ready(&self, slot: usize) {
        self.slots().ready.push(slot);
    }

    pub(crate) fn put_free(&self, slot: usize) {
        self.slots().free.push(slot);
    }

    /// Every ready spare (to remove them): their slots are free again.
    pub(crate) fn drain_ready(&self) -> Vec<usize> {
        let mut slots = self.slots();
        let ready = std::mem::take(&mut slots.ready);
        slots.free.extend(&ready);
        ready
    }

    #[cfg(test)]
    fn ready_len(&self) -> usize {
        self.slots().ready.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_move_between_free_and_ready_within_the_bound() {
        let pool = SparePool::new(2);
        assert_eq!(pool.take_ready(), None);
        let (a, b) = (pool.take_free().unwrap(), pool.take_free().unwrap());
        assert_ne!(a, b);
        assert_eq!(pool.take_free(), None, "bounded");
        pool.put_ready(a);
        pool.put_ready(b);
        assert_eq!(pool.ready_len(), 2);
        let taken = pool.take_ready().unwrap();
        pool.put_free(taken);
        assert_eq!(pool.drain_ready().len(), 1);
        assert_eq!(pool.ready_len(), 0);
        assert!(pool.take_free().is_some() && pool.take_free().is_some());
        assert_ne!(spare_name(1), spare_name(2));
        assert!(crate::cgroups::validate_relative(&spare_name(3)).is_ok());
    }
}
