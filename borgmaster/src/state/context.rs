//! What one `apply` call accumulates while it runs: the entry's index and time, the jobs and
//! machines it touched, and the events it produced (appended to the log at the end, so that
//! handlers need not borrow the event log alongside jobs and machines).

use super::events::NewEvent;
use super::outcome::ChangeSet;
use borg_model::TaskId;
use std::collections::BTreeSet;

pub(crate) struct Ctx {
    pub index: u64,
    pub time_ms: u64,
    pub changes: ChangeSet,
    /// Jobs in which a task became terminal: they may have finished.
    pub maybe_finished: BTreeSet<String>,
    pub events: Vec<NewEvent>,
}

impl Ctx {
    pub fn new(index: u64, time_ms: u64) -> Self {
        Ctx {
            index,
            time_ms,
            changes: ChangeSet::default(),
            maybe_finished: BTreeSet::new(),
            events: Vec::new(),
        }
    }

    pub fn event(&mut self, event: NewEvent) {
        self.events.push(event);
    }

    /// The whole job changed (created, spec or status changed, removed).
    pub fn touch_job(&mut self, name: &str) {
        self.changes.touch_job(name);
    }

    /// Only task `id` of its job changed.
    pub fn touch_task(&mut self, id: &TaskId) {
        self.changes.touch_task(&id.job, id.index);
    }

    pub fn touch_machine(&mut self, name: &str) {
        if !self.changes.machines.contains(name) {
            self.changes.machines.insert(name.to_string());
        }
    }
}
