//! How loaded the machine is: free memory and CPU busyness, behind a trait so a test can
//! induce pressure deterministically while the kills it causes stay real.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

/// A source of machine load readings.
pub trait MachinePressure: Send + Sync + Debug {
    /// Memory the machine can still hand out without swapping; `None` when unknown.
    fn free_memory_bytes(&self) -> Option<u64>;
    /// Share of all CPU time spent busy since the previous reading, in permille; `None` when
    /// unknown (and on the first reading).
    fn cpu_busy_permille(&self) -> Option<u32>;
}

/// Readings from `/proc/meminfo` (`MemAvailable`) and `/proc/stat`.
#[derive(Debug, Default)]
pub struct ProcfsPressure {
    /// (busy, total) jiffies of the previous CPU reading.
    previous_cpu: Mutex<Option<(u64, u64)>>,
}

impl ProcfsPressure {
    pub fn new() -> ProcfsPressure {
        ProcfsPressure::default()
    }
}

impl MachinePressure for ProcfsPressure {
    fn free_memory_bytes(&self) -> Option<u64> {
        use procfs::Current;
        procfs::Meminfo::current().ok()?.mem_available
    }

    fn cpu_busy_permille(&self) -> Option<u32> {
        use procfs::CurrentSI;
        let total = procfs::KernelStats::current().ok()?.total;
        let idle = total.idle + total.iowait.unwrap_or(0);
        let all = total.user
            + total.nice
            + total.system
            + idle
            + total.irq.unwrap_or(0)
            + total.softirq.unwrap_or(0)
            + total.steal.unwrap_or(0);
        let busy = all - idle;
        let mut previous = self.previous_cpu.lock().unwrap_or_else(|p| p.into_inner());
        let reading = previous.and_then(|(busy_before, all_before)| {
            let elapsed = all.checked_sub(all_before).filter(|&e| e > 0)?;
            let used = busy.saturating_sub(busy_before);
            u32::try_from(used.saturating_mul(1000) / elapsed).ok()
        });
        *previous = Some((busy, all));
        reading
    }
}

/// TEST DOUBLE: reports the load a test sets, never the machine's. `pulse` makes the next
/// `n` memory readings report `low_free_memory_bytes`, so each enforcement round that sees
/// pressure is one the test asked for.
#[derive(Debug)]
pub struct TestPressure {
    free_memory_bytes: AtomicU64,
    low_free_memory_bytes: AtomicU64,
    pulses_left: AtomicU32,
    cpu_busy_permille: AtomicU32,
    memory_reads: AtomicU64,
}

impl TestPressure {
    /// Plenty of free memory and an idle CPU.
    pub fn new() -> TestPressure {
        TestPressure {
            free_memory_bytes: AtomicU64::new(u64::MAX),
            low_free_memory_bytes: AtomicU64::new(0),
            pulses_left: AtomicU32::new(0),
            cpu_busy_permille: AtomicU32::new(0),
            memory_reads: AtomicU64::new(0),
        }
    }

    pub fn set_free_memory_bytes(&self, bytes: u64) {
        self.free_memory_bytes.store(bytes, Ordering::SeqCst);
    }

    /// The next `readings` memory readings report `free_bytes`, later ones the set value.
    pub fn pulse(&self, free_bytes: u64, readings: u32) {
        self.low_free_memory_bytes
            .store(free_bytes, Ordering::SeqCst);
        self.pulses_left.store(readings, Ordering::SeqCst);
    }

    pub fn set_cpu_busy_permille(&self, permille: u32) {
        self.cpu_busy_permille.store(permille, Ordering::SeqCst);
    }

    /// Memory readings taken so far.
    pub fn memory_reads(&self) -> u64 {
        self.memory_reads.load(Ordering::SeqCst)
    }
}

impl Default for TestPressure {
    fn default() -> Self {
        TestPressure::new()
    }
}

impl MachinePressure for TestPressure {
    fn free_memory_bytes(&self) -> Option<u64> {
        self.memory_reads.fetch_add(1, Ordering::SeqCst);
        let pulsed = self
            .pulses_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        Some(if pulsed {
            self.low_free_memory_bytes.load(Ordering::SeqCst)
        } else {
            self.free_memory_bytes.load(Ordering::SeqCst)
        })
    }

    fn cpu_busy_permille(&self) -> Option<u32> {
        Some(self.cpu_busy_permille.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procfs_reports_the_machine() {
        let procfs = ProcfsPressure::new();
        assert!(procfs.free_memory_bytes().is_some_and(|b| b > 0));
        assert_eq!(
            procfs.cpu_busy_permille(),
            None,
            "the first reading has no interval"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        let busy = procfs.cpu_busy_permille();
        assert!(busy.is_none_or(|p| p <= 1000), "{busy:?}");
    }

    #[test]
    fn a_pulse_lasts_the_asked_readings() {
        let double = TestPressure::new();
        double.set_free_memory_bytes(1 << 30);
        double.pulse(5, 2);
        let readings: Vec<_> = (0..3).map(|_| double.free_memory_bytes()).collect();
        assert_eq!(readings, [Some(5), Some(5), Some(1 << 30)]);
        assert_eq!(double.memory_reads(), 3);
    }
}
