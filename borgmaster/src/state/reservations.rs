//! Reservations: what the master expects a placed task to use (Borg, section 5.5), so that
//! the scheduler can give non-prod tasks the resources prod tasks reserve but do not use.
//!
//! - A task's reservation starts at its limit when it is placed.
//! - For `RESERVATION_GRACE_S` after it starts running (start-up transients) it stays there.
//! - After that, each usage report moves it toward the target `usage + margin` (the margin is
//!   `RESERVATION_MARGIN_PERCENT` of usage, at least `RESERVATION_MARGIN_FLOOR_PERCENT` of the
//!   limit), by `RESERVATION_DECAY_PERCENT` of the distance per whole
//!   `RESERVATION_DECAY_STEP_S` of master time since it last decayed: decay is slow and does
//!   not depend on how often the borglet reports.
//! - When usage rises above what is reserved it rises at once to the target.
//! - It is never below the target and never above the limit.
//!
//! Only CPU and RAM are reclaimed; disk and GPUs stay reserved at their limits. Times come
//! from the log entry (`Ctx::time_ms`), and the arithmetic is integer: every replica computes
//! the same reservations.

use borg_model::Resources;
use serde::{Deserialize, Serialize};

/// How long a running task keeps its reservation at its limit.
pub const RESERVATION_GRACE_S: u64 = 300;
/// Safety margin above usage, in percent of usage.
pub const RESERVATION_MARGIN_PERCENT: u64 = 20;
/// The margin is at least this share of the limit, in percent (so a task idle at the moment
/// still keeps some room to wake up in).
pub const RESERVATION_MARGIN_FLOOR_PERCENT: u64 = 5;
/// Decay runs in steps of this much master time.
pub const RESERVATION_DECAY_STEP_S: u64 = 10;
/// Share of the distance to the target removed per decay step, in percent.
pub const RESERVATION_DECAY_PERCENT: u64 = 10;
/// Most decay steps applied at once (a task reported after a long silence): after 64 steps
/// of 10% less than 0.2% of the distance is left, so more would change nothing visible.
pub const RESERVATION_DECAY_STEPS_MAX: u64 = 64;

const MS_PER_S: u64 = 1_000;

/// A placed task's reservation and how far its decay has been applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Reservation {
    pub reserved: Resources,
    /// Master time up to which decay steps have been applied (0: none yet).
    pub decayed_to_ms: u64,
}

impl Reservation {
    /// A newly placed task reserves its limit.
    pub fn at_limit(limit: Resources) -> Self {
        Reservation {
            reserved: limit,
            decayed_to_ms: 0,
        }
    }

    /// The reservation after a report of `usage` at `now_ms` about a task with `limit` that
    /// has been running since `running_since_ms`.
    pub fn after_report(
        self,
        limit: &Resources,
        usage: &Resources,
        running_since_ms: u64,
        now_ms: u64,
    ) -> Reservation {
        let grace_end_ms = running_since_ms.saturating_add(RESERVATION_GRACE_S * MS_PER_S);
        let decay_from_ms = self.decayed_to_ms.max(grace_end_ms);
        let step_ms = RESERVATION_DECAY_STEP_S * MS_PER_S;
        let steps = if now_ms > decay_from_ms {
            (now_ms - decay_from_ms) / step_ms
        } else {
            0
        };
        let decayed_to_ms = if steps > 0 {
            decay_from_ms + steps * step_ms
        } else {
            self.decayed_to_ms
        };
        let steps = steps.min(RESERVATION_DECAY_STEPS_MAX);
        let dimension = |reserved: u64, usage: u64, limit: u64| {
            next_reserved(reserved.min(limit), usage, limit, steps)
        };
        Reservation {
            reserved: Resources {
                cpu_millis: dimension(self.reserved.cpu_millis, usage.cpu_millis, limit.cpu_millis),
                ram_bytes: dimension(self.reserved.ram_bytes, usage.ram_bytes, limit.ram_bytes),
                disk_bytes: limit.disk_bytes,
                gpus: limit.gpus,
            },
            decayed_to_ms,
        }
    }
}

/// What a task using `usage` should at least reserve of one dimension: usage plus the
/// margin, capped at the limit.
pub(crate) fn target(usage: u64, limit: u64) -> u64 {
    let margin = percent(usage, RESERVATION_MARGIN_PERCENT)
        .max(percent(limit, RESERVATION_MARGIN_FLOOR_PERCENT));
    usage.saturating_add(margin).min(limit)
}

/// One dimension after `steps` decay steps (or a rise to the target).
fn next_reserved(reserved: u64, usage: u64, limit: u64, steps: u64) -> u64 {
    let target = target(usage, limit);
    if target >= reserved {
        return target;
    }
    let mut reserved = reserved;
    for _ in 0..steps {
        let distance = reserved - target;
        // Round the step up so that the reservation reaches the target rather than
        // approaching it forever one unit away.
        reserved -= distance
            .saturating_mul(RESERVATION_DECAY_PERCENT)
            .div_ceil(100)
            .min(distance);
        if reserved == target {
            break;
        }
    }
    reserved
}

fn percent(value: u64, percent: u64) -> u64 {
    // u128: a RAM figure in bytes times 100 could overflow u64 only for absurd values, but
    // the input comes from the network.
    u64::try_from(u128::from(value) * u128::from(percent) / 100).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const START_MS: u64 = 1_000_000;
    const GRACE_END_MS: u64 = START_MS + RESERVATION_GRACE_S * MS_PER_S;

    fn limit() -> Resources {
        Resources {
            cpu_millis: 2_000,
            ram_bytes: 4 * GIB,
            disk_bytes: GIB,
            gpus: 1,
        }
    }

    fn usage(cpu_millis: u64, ram_bytes: u64) -> Resources {
        Resources::new(cpu_millis, ram_bytes)
    }

    /// Reports `usage` every `every_s` from `from_ms` to `to_ms`.
    fn reported(
        mut r: Reservation,
        usage: Resources,
        from_ms: u64,
        to_ms: u64,
        every_s: u64,
    ) -> Reservation {
        let mut now = from_ms;
        while now < to_ms {
            r = r.after_report(&limit(), &usage, START_MS, now);
            now += every_s * MS_PER_S;
        }
        r.after_report(&limit(), &usage, START_MS, to_ms)
    }

    #[test]
    fn a_placed_task_reserves_its_limit() {
        assert_eq!(Reservation::at_limit(limit()).reserved, limit());
    }

    #[test]
    fn nothing_decays_before_the_grace_period_ends() {
        let low = usage(100, GIB / 8);
        let r = reported(
            Reservation::at_limit(limit()),
            low,
            START_MS,
            GRACE_END_MS - 1,
            1,
        );
        assert_eq!(r.reserved, limit());
    }

    #[test]
    fn after_the_grace_period_it_decays_toward_usage_plus_margin_and_not_below() {
        let low = usage(100, GIB / 8);
        let early = reported(
            Reservation::at_limit(limit()),
            low,
            START_MS,
            GRACE_END_MS + 30 * MS_PER_S,
            1,
        );
        assert!(early.reserved.cpu_millis < limit().cpu_millis);
        assert!(
            early.reserved.cpu_millis > 1_000,
            "decay is gradual: {:?}",
            early.reserved
        );
        let late = reported(
            early,
            low,
            GRACE_END_MS + 31 * MS_PER_S,
            GRACE_END_MS + 3_600 * MS_PER_S,
            7,
        );
        // cpu: 100m + max(20m, 5% of 2000m = 100m); ram: 128Mi + max(25.6Mi, 204.8Mi).
        assert_eq!(late.reserved.cpu_millis, 200);
        assert_eq!(late.reserved.ram_bytes, GIB / 8 + 4 * GIB / 20);
        assert_eq!(late.reserved.disk_bytes, GIB, "disk is not reclaimed");
        assert_eq!(late.reserved.gpus, 1, "gpus are not reclaimed");
    }

    #[test]
    fn decay_depends_on_time_not_on_how_often_reports_come() {
        let low = usage(100, GIB / 8);
        let end = GRACE_END_MS + 120 * MS_PER_S;
        let often = reported(Reservation::at_limit(limit()), low, START_MS, end, 1);
        let rarely = reported(Reservation::at_limit(limit()), low, START_MS, end, 40);
        let once = Reservation::at_limit(limit()).after_report(&limit(), &low, START_MS, end);
        assert_eq!(often.reserved, once.reserved);
        assert_eq!(rarely.reserved, once.reserved);
    }

    #[test]
    fn a_usage_rise_raises_it_at_once_but_never_above_the_limit() {
        let low = usage(100, GIB / 8);
        let decayed = reported(
            Reservation::at_limit(limit()),
            low,
            START_MS,
            GRACE_END_MS + 3_600 * MS_PER_S,
            10,
        );
        let now = GRACE_END_MS + 3_601 * MS_PER_S;
        let risen = decayed.after_report(&limit(), &usage(1_000, GIB / 8), START_MS, now);
        assert_eq!(risen.reserved.cpu_millis, 1_200, "1000m + 20%");
        let over = risen.after_report(&limit(), &usage(5_000, 16 * GIB), START_MS, now + 1);
        assert_eq!(over.reserved, limit(), "capped at the limit");
    }

    #[test]
    fn target_is_usage_plus_margin_capped_at_the_limit() {
        assert_eq!(target(1_000, 2_000), 1_200, "20% of usage");
        assert_eq!(target(1_000, 10_000), 1_500, "5% of the limit is more");
        assert_eq!(target(0, 10_000), 500);
        assert_eq!(target(9_000, 10_000), 10_000);
        assert_eq!(target(u64::MAX, u64::MAX), u64::MAX);
    }
}
