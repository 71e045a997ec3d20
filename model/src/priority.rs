//! Priorities and Borg's priority bands.

use serde::{Deserialize, Serialize};

/// A task's priority: higher is more important.
pub type Priority = u32;

/// The priority bands of ARCHITECTURE.md ("Priority bands").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Band {
    /// 0–99: best effort; admitted always, preempted first, no quota.
    Free,
    /// 100–199.
    Batch,
    /// 200–299.
    Production,
    /// 300 and up.
    Monitoring,
}

impl Band {
    pub fn of(priority: Priority) -> Band {
        match priority {
            0..=99 => Band::Free,
            100..=199 => Band::Batch,
            200..=299 => Band::Production,
            _ => Band::Monitoring,
        }
    }

    /// Production and monitoring tasks are "prod": checked against limits, never preempted
    /// by one another, never killed for reclamation.
    pub fn is_prod(self) -> bool {
        matches!(self, Band::Production | Band::Monitoring)
    }

    pub fn needs_quota(self) -> bool {
        self != Band::Free
    }

    /// Every band, lowest first.
    pub const ALL: [Band; 4] = [Band::Free, Band::Batch, Band::Production, Band::Monitoring];

    /// The band called `name` (as `Band::name` spells it).
    pub fn from_name(name: &str) -> Option<Band> {
        Band::ALL.into_iter().find(|b| b.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Band::Free => "free",
            Band::Batch => "batch",
            Band::Production => "production",
            Band::Monitoring => "monitoring",
        }
    }
}

/// Whether a task at `preemptor` priority may preempt a running task at `victim` priority.
///
/// Prod bands preempt only non-prod work; within the batch and free bands a strictly
/// higher priority preempts lower work. Production never preempts production, which is
/// what prevents cascades of equal-band preemptions.
pub fn may_preempt(preemptor: Priority, victim: Priority) -> bool {
    let (p, v) = (Band::of(preemptor), Band::of(victim));
    if v.is_prod() {
        return false;
    }
    if p.is_prod() {
        return true;
    }
    preemptor > victim && p >= v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_follow_the_architecture_table() {
        assert_eq!(Band::of(0), Band::Free);
        assert_eq!(Band::of(99), Band::Free);
        assert_eq!(Band::of(100), Band::Batch);
        assert_eq!(Band::of(250), Band::Production);
        assert_eq!(Band::of(360), Band::Monitoring);
        for band in Band::ALL {
            assert_eq!(Band::from_name(band.name()), Some(band));
        }
        assert_eq!(Band::from_name("prod"), None);
    }

    #[test]
    fn production_never_preempts_production() {
        assert!(!may_preempt(299, 200));
        assert!(!may_preempt(360, 250));
        assert!(may_preempt(200, 199));
        assert!(may_preempt(150, 120));
        assert!(!may_preempt(120, 120));
        assert!(!may_preempt(50, 100));
        assert!(may_preempt(50, 10));
    }
}
