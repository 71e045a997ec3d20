//! The window of recent request ids: a repeated id is answered with its first outcome.

use super::outcome::Outcome;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Request ids remembered; the oldest is forgotten first. Clients retry within seconds, so
/// a window of this many mutations is far longer than any retry.
pub const REQUEST_IDS_RETAINED_MAX: usize = 100_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct RequestWindow {
    /// Ids oldest first, for eviction.
    order: VecDeque<String>,
    /// Request id → (log index it was first applied at, its outcome).
    outcomes: BTreeMap<String, (u64, Outcome)>,
}

impl RequestWindow {
    /// The index a request id was first applied at, and its outcome.
    pub fn get(&self, request_id: &str) -> Option<&(u64, Outcome)> {
        self.outcomes.get(request_id)
    }

    /// Remembers the outcome of a request id applied for the first time ("" is not
    /// remembered: it means the proposer wants no dedup).
    pub fn remember(&mut self, request_id: &str, index: u64, outcome: &Outcome) {
        if request_id.is_empty() || self.outcomes.contains_key(request_id) {
            return;
        }
        self.outcomes
            .insert(request_id.to_string(), (index, outcome.clone()));
        self.order.push_back(request_id.to_string());
        while self.order.len() > REQUEST_IDS_RETAINED_MAX {
            if let Some(old) = self.order.pop_front() {
                self.outcomes.remove(&old);
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_ids_are_forgotten_first() {
        let mut w = RequestWindow::default();
        for i in 0..(REQUEST_IDS_RETAINED_MAX + 2) {
            w.remember(&format!("r{i}"), i as u64 + 1, &Outcome::ReportsApplied);
        }
        assert_eq!(w.len(), REQUEST_IDS_RETAINED_MAX);
        assert!(w.get("r0").is_none());
        assert!(w.get("r1").is_none());
        assert_eq!(w.get("r2"), Some(&(3, Outcome::ReportsApplied)));
        w.remember("", 9, &Outcome::Noop);
        assert!(w.get("").is_none());
    }
}
