//! Mapping a task's resource limits onto cgroup settings (pure).

use borg_model::Resources;

/// Smallest and largest `cpu.shares` the kernel accepts (v1).
pub const CPU_SHARES_MIN: u64 = 2;
pub const CPU_SHARES_MAX: u64 = 262_144;
/// Range of `cpu.weight` (v2).
pub const CPU_WEIGHT_MIN: u64 = 1;
pub const CPU_WEIGHT_MAX: u64 = 10_000;

/// Settings of one task cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Hard memory limit; `None` leaves it unlimited.
    pub memory_bytes: Option<u64>,
    /// v1 `cpu.shares` (v2 converts it with [`cpu_weight`]).
    pub cpu_shares: u64,
    /// Most processes and threads; `None` leaves it unlimited.
    pub pids_max: Option<u64>,
}

impl CgroupLimits {
    pub fn for_task(limits: &Resources, pids_max: u64) -> CgroupLimits {
        CgroupLimits {
            memory_bytes: (limits.ram_bytes > 0).then_some(limits.ram_bytes),
            cpu_shares: cpu_shares(limits.cpu_millis),
            pids_max: (pids_max > 0).then_some(pids_max),
        }
    }
}

/// One core (1000 millicores) is 1024 shares, the kernel's default weight of a group.
pub fn cpu_shares(cpu_millis: u64) -> u64 {
    (cpu_millis.saturating_mul(1024) / 1000).clamp(CPU_SHARES_MIN, CPU_SHARES_MAX)
}

/// v2 weight for v1 shares: the linear map of [2, 262144] onto [1, 10000] that runc and the
/// kubelet use, so a task gets the same relative weight on either version.
pub fn cpu_weight(shares: u64) -> u64 {
    let shares = shares.clamp(CPU_SHARES_MIN, CPU_SHARES_MAX);
    CPU_WEIGHT_MIN
        + ((shares - CPU_SHARES_MIN) * (CPU_WEIGHT_MAX - CPU_WEIGHT_MIN))
            / (CPU_SHARES_MAX - CPU_SHARES_MIN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_core_is_the_default_weight() {
        assert_eq!(cpu_shares(1000), 1024);
        assert_eq!(cpu_shares(100), 102);
        assert_eq!(cpu_shares(0), CPU_SHARES_MIN);
        assert_eq!(cpu_shares(u64::MAX), CPU_SHARES_MAX);
        assert_eq!(cpu_weight(CPU_SHARES_MIN), CPU_WEIGHT_MIN);
        assert_eq!(cpu_weight(CPU_SHARES_MAX), CPU_WEIGHT_MAX);
        assert_eq!(cpu_weight(1024), 39);
    }

    #[test]
    fn zero_limits_mean_unlimited() {
        let limits = CgroupLimits::for_task(&Resources::new(250, 0), 0);
        assert_eq!(limits.memory_bytes, None);
        assert_eq!(limits.pids_max, None);
        assert_eq!(limits.cpu_shares, 256);
        let limits = CgroupLimits::for_task(&Resources::new(250, 64 << 20), 100);
        assert_eq!(limits.memory_bytes, Some(64 << 20));
        assert_eq!(limits.pids_max, Some(100));
    }

    proptest! {
        #[test]
        fn shares_and_weights_stay_in_range_and_keep_order(a in any::<u64>(), b in any::<u64>()) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let (s_lo, s_hi) = (cpu_shares(lo), cpu_shares(hi));
            prop_assert!((CPU_SHARES_MIN..=CPU_SHARES_MAX).contains(&s_lo));
            prop_assert!(s_lo <= s_hi);
            let (w_lo, w_hi) = (cpu_weight(s_lo), cpu_weight(s_hi));
            prop_assert!((CPU_WEIGHT_MIN..=CPU_WEIGHT_MAX).contains(&w_lo));
            prop_assert!(w_lo <= w_hi);
        }

        #[test]
        fn shares_are_proportional_to_millicores(millis in 2u64..256_000) {
            let shares = cpu_shares(millis);
            let exact = millis * 1024 / 1000;
            prop_assert_eq!(shares, exact.max(CPU_SHARES_MIN));
        }
    }
}
