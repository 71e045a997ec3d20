//! What happens after a task's process ends: the restart policy (pure).
//!
//! Service tasks are restarted after any exit, batch tasks only after a failure. A task may be
//! restarted `max_attempts` times within `interval_s` (0: over its whole life); one more
//! failure marks it FAILED. The delay before a restart doubles with each recent restart
//! (crash-loop back-off), up to [`RESTART_DELAY_MAX_MS`] (or the policy's own delay if larger).

use borg_model::{JobType, RestartPolicy};
use std::collections::VecDeque;

/// Longest back-off between restarts, unless the policy's base delay is longer.
pub const RESTART_DELAY_MAX_MS: u64 = 60_000;
/// Most restart times remembered per task; also caps the attempts a policy can allow.
pub const RESTART_HISTORY_MAX: usize = 1_000;
/// Doublings of the delay stop here (2^16 times the base is far past any cap).
const BACKOFF_DOUBLINGS_MAX: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterExit {
    Restart {
        delay_ms: u64,
    },
    Succeeded,
    /// The restart policy is exhausted.
    Failed,
}

/// Restart history of one task incarnation.
#[derive(Debug, Clone, Default)]
pub struct RestartTracker {
    recent_ms: VecDeque<u64>,
    total: u32,
}

impl RestartTracker {
    /// Continues counting from `total` restarts (a task adopted after a borglet restart; the
    /// times of those restarts are not known).
    pub fn resumed(total: u32) -> RestartTracker {
        RestartTracker {
            recent_ms: VecDeque::new(),
            total,
        }
    }

    /// Restarts so far (reported as `restarts`).
    pub fn total(&self) -> u32 {
        self.total
    }

    /// Decides what follows an exit at `now_ms`; a restart is counted at once.
    pub fn after_exit(
        &mut self,
        job_type: JobType,
        policy: &RestartPolicy,
        success: bool,
        now_ms: u64,
    ) -> AfterExit {
        if success && job_type == JobType::Batch {
            return AfterExit::Succeeded;
        }
        if policy.interval_s > 0 {
            let window_start = now_ms.saturating_sub(policy.interval_s.saturating_mul(1000));
            while self.recent_ms.front().is_some_and(|&t| t < window_start) {
                self.recent_ms.pop_front();
            }
        }
        let allowed = usize::try_from(policy.max_attempts)
            .unwrap_or(usize::MAX)
            .min(RESTART_HISTORY_MAX);
        let recent = self.recent_ms.len();
        if recent >= allowed {
            return AfterExit::Failed;
        }
        let factor = 1u64 << recent.min(BACKOFF_DOUBLINGS_MAX);
        let delay_ms = policy
            .delay_ms
            .saturating_mul(factor)
            .min(RESTART_DELAY_MAX_MS.max(policy.delay_ms));
        self.recent_ms.push_back(now_ms);
        self.total = self.total.saturating_add(1);
        AfterExit::Restart { delay_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_attempts: u32, interval_s: u64, delay_ms: u64) -> RestartPolicy {
        RestartPolicy {
            max_attempts,
            interval_s,
            delay_ms,
        }
    }

    #[test]
    fn batch_success_is_final_and_failures_back_off_until_exhausted() {
        let p = policy(3, 60, 100);
        let mut t = RestartTracker::default();
        assert_eq!(
            t.after_exit(JobType::Batch, &p, true, 0),
            AfterExit::Succeeded
        );
        assert_eq!(
            t.after_exit(JobType::Batch, &p, false, 0),
            AfterExit::Restart { delay_ms: 100 }
        );
        assert_eq!(
            t.after_exit(JobType::Batch, &p, false, 1),
            AfterExit::Restart { delay_ms: 200 }
        );
        assert_eq!(
            t.after_exit(JobType::Batch, &p, false, 2),
            AfterExit::Restart { delay_ms: 400 }
        );
        assert_eq!(
            t.after_exit(JobType::Batch, &p, false, 3),
            AfterExit::Failed
        );
        assert_eq!(t.total(), 3);
    }

    #[test]
    fn services_restart_even_after_success_and_old_restarts_expire() {
        let p = policy(1, 10, 5);
        let mut t = RestartTracker::default();
        assert_eq!(
            t.after_exit(JobType::Service, &p, true, 0),
            AfterExit::Restart { delay_ms: 5 }
        );
        assert_eq!(
            t.after_exit(JobType::Service, &p, true, 5_000),
            AfterExit::Failed
        );
        let mut t = RestartTracker::default();
        t.after_exit(JobType::Service, &p, false, 0);
        assert_eq!(
            t.after_exit(JobType::Service, &p, false, 10_001),
            AfterExit::Restart { delay_ms: 5 }
        );
        assert_eq!(t.total(), 2);
    }

    #[test]
    fn zero_attempts_fail_at_once_and_delays_are_capped() {
        let mut t = RestartTracker::default();
        assert_eq!(
            t.after_exit(JobType::Service, &policy(0, 60, 5), false, 0),
            AfterExit::Failed
        );
        let p = policy(u32::MAX, 0, 10_000);
        let mut t = RestartTracker::default();
        let mut last = 0;
        for now in 0..40 {
            match t.after_exit(JobType::Service, &p, false, now) {
                AfterExit::Restart { delay_ms } => last = delay_ms,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(last, RESTART_DELAY_MAX_MS);
        let long = policy(5, 0, 120_000);
        assert_eq!(
            RestartTracker::default().after_exit(JobType::Service, &long, false, 0),
            AfterExit::Restart { delay_ms: 120_000 }
        );
    }

    #[test]
    fn the_history_is_bounded_whatever_the_policy_allows() {
        let p = policy(u32::MAX, 0, 0);
        let mut t = RestartTracker::default();
        let mut restarts = 0;
        while let AfterExit::Restart { .. } = t.after_exit(JobType::Service, &p, false, 0) {
            restarts += 1;
            assert!(restarts <= RESTART_HISTORY_MAX);
        }
        assert_eq!(restarts, RESTART_HISTORY_MAX);
    }
}
