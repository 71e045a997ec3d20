//! Score caching: a class's feasibility verdict and class-level score on a machine, kept
//! across tasks and across `schedule` calls until the machine (its view generation, or this
//! plan's changes to it) or the class changes. Bounded: cleared when full.

use crate::class::ClassKey;
use crate::feasibility::{Fit, Infeasible};
use crate::schedule::Summary;
use crate::scoring::{FitPolicy, Score};
use crate::work::MachineWork;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A cheap hasher for the maps probed for every machine examined (machine positions,
/// interned domains, short job names), where SipHash would dominate. Not DoS-resistant:
/// keys come from the cell's own state, and a collision costs time, never correctness.
#[derive(Debug, Default, Clone, Copy)]
pub struct PositionHasher(u64);

impl Hasher for PositionHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (u64::from(n) ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type ByPosition = HashMap<u32, CacheEntry, BuildHasherDefault<PositionHasher>>;

/// Default of `PlacementConfig::score_cache_entries_max`.
pub const SCORE_CACHE_ENTRIES_MAX: usize = 4_000_000;

/// A class's verdict on a machine: fits (with victims and class-level score), or why not.
pub type Verdict = Result<(Fit, Score), Infeasible>;

#[derive(Debug, Clone)]
struct CacheEntry {
    view_generation: u64,
    plan_changes: u32,
    /// The call that computed it; entries that saw a plan's own changes are valid only
    /// within that call.
    call: u64,
    verdict: Verdict,
}

/// Verdicts per (class, machine). Owned by the caller so that it survives calls.
#[derive(Debug)]
pub struct ScoreCache {
    /// Per class, verdicts by machine position in the view (valid while the machine set
    /// generation stays).
    slots: Vec<ByPosition>,
    machine_set: Option<u64>,
    by_key: HashMap<ClassKey, usize>,
    /// Per machine position: its summary (`schedule::Summary`) at a view generation, so a
    /// later call rejects a machine too full for a class without building its work.
    summaries: HashMap<u32, (u64, Summary), BuildHasherDefault<PositionHasher>>,
    entries: usize,
    entries_max: usize,
    call: u64,
    policy: Option<FitPolicy>,
    pub hits: u64,
    pub misses: u64,
}

impl ScoreCache {
    pub fn new(entries_max: usize) -> Self {
        ScoreCache {
            slots: Vec::new(),
            by_key: HashMap::new(),
            summaries: HashMap::default(),
            entries: 0,
            entries_max,
            call: 0,
            machine_set: None,
            policy: None,
            hits: 0,
            misses: 0,
        }
    }

    /// Starts a `schedule` call. Scores depend on the policy, and entries are keyed by
    /// machine position, so a new policy or machine set empties it.
    pub fn begin_call(&mut self, policy: FitPolicy, machine_set_generation: u64) {
        self.call += 1;
        if self.policy != Some(policy) || self.machine_set != Some(machine_set_generation) {
            self.clear();
            self.policy = Some(policy);
            self.machine_set = Some(machine_set_generation);
        }
    }

    pub fn clear(&mut self) {
        self.slots.clear();
        self.by_key.clear();
        self.summaries.clear();
        self.entries = 0;
    }

    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The slot of a class (created on first sight).
    pub fn slot(&mut self, key: &ClassKey) -> usize {
        if let Some(&slot) = self.by_key.get(key) {
            return slot;
        }
        let slot = self.slots.len();
        self.slots.push(ByPosition::default());
        self.by_key.insert(key.clone(), slot);
        slot
    }

    /// The cached verdict of the class in `slot` on the machine as `work` has it, if still
    /// valid.
    pub fn get(&mut self, slot: usize, machine: u32, work: &MachineWork<'_>) -> Option<&Verdict> {
        let call = self.call;
        let entry = self
            .slots
            .get(slot)
            .and_then(|m| m.get(&machine))
            .filter(|e| {
                e.view_generation == work.view_generation
                    && e.plan_changes == work.plan_changes
                    && (e.plan_changes == 0 || e.call == call)
            });
        match entry {
            Some(entry) => {
                self.hits += 1;
                Some(&entry.verdict)
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    /// The cached verdict of the class in `slot` on a machine this call has not changed,
    /// at view generation `view_generation` (no `MachineWork` needed to ask).
    pub fn get_unchanged(
        &mut self,
        slot: usize,
        machine: u32,
        view_generation: u64,
    ) -> Option<&Verdict> {
        let entry = self
            .slots
            .get(slot)
            .and_then(|m| m.get(&machine))
            .filter(|e| e.view_generation == view_generation && e.plan_changes == 0);
        match entry {
            Some(entry) => {
                self.hits += 1;
                Some(&entry.verdict)
            }
            None => None,
        }
    }

    /// The machine's summary at `view_generation`, if cached.
    pub(crate) fn summary(&self, machine: u32, view_generation: u64) -> Option<Summary> {
        self.summaries
            .get(&machine)
            .filter(|(generation, _)| *generation == view_generation)
            .map(|(_, summary)| *summary)
    }

    /// Caches the summary of a machine as the view has it (no plan changes).
    pub(crate) fn put_summary(&mut self, machine: u32, view_generation: u64, summary: Summary) {
        // Bounded by the machine count: one entry per position.
        self.summaries.insert(machine, (view_generation, summary));
    }

    pub fn put(&mut self, slot: usize, machine: u32, work: &MachineWork<'_>, verdict: Verdict) {
        if self.entries >= self.entries_max {
            // Keep the slots (classes keep their numbers within the call); drop verdicts.
            for map in &mut self.slots {
                map.clear();
            }
            self.entries = 0;
        }
        let Some(map) = self.slots.get_mut(slot) else {
            return;
        };
        let entry = CacheEntry {
            view_generation: work.view_generation,
            plan_changes: work.plan_changes,
            call: self.call,
            verdict,
        };
        if map.insert(machine, entry).is_none() {
            self.entries += 1;
        }
    }
}
