//! A watch on the Paxos loop's passes: a pass, or a gap between two ticks, longer than a
//! quarter of the election timeout is logged with the step that took longest and counted
//! (`slow_loop_passes_total{step}`). A loop that stalls for a whole election timeout sends
//! no heartbeats and costs the leader its place, so a stall must be visible before it does.

use prometheus::IntCounterVec;
use std::time::{Duration, Instant};

/// Most steps recorded in one pass (a pass has about ten).
const STEPS_MAX: usize = 16;

pub struct LoopWatch {
    slow_after: Duration,
    tick_interval: Duration,
    pass_started: Instant,
    step_started: Instant,
    steps: Vec<(&'static str, Duration)>,
    last_tick: Option<Instant>,
    slow_passes: IntCounterVec,
}

impl LoopWatch {
    /// Watches passes against `election_timeout / 4`.
    pub fn new(
        tick_interval: Duration,
        election_timeout: Duration,
        slow_passes: IntCounterVec,
    ) -> Self {
        let now = Instant::now();
        LoopWatch {
            slow_after: election_timeout / 4,
            tick_interval,
            pass_started: now,
            step_started: now,
            steps: Vec::with_capacity(STEPS_MAX),
            last_tick: None,
            slow_passes,
        }
    }

    /// A pass begins (its input has arrived: the wait for it is not counted).
    pub fn begin_pass(&mut self) {
        let now = Instant::now();
        self.pass_started = now;
        self.step_started = now;
        self.steps.clear();
    }

    /// The step `name` ended now (it began where the previous one ended).
    pub fn step(&mut self, name: &'static str) {
        let now = Instant::now();
        if self.steps.len() < STEPS_MAX {
            self.steps.push((name, now - self.step_started));
        }
        self.step_started = now;
    }

    /// A tick of the clock fired: a gap much longer than the interval means the loop (or the
    /// runtime it runs on) did not get to tick.
    pub fn ticked(&mut self) {
        let now = Instant::now();
        if let Some(last) = self.last_tick.replace(now) {
            let gap = now - last;
            if gap > self.tick_interval + self.slow_after {
                self.slow_passes.with_label_values(&["tick_gap"]).inc();
                tracing::warn!(
                    gap_ms = gap.as_millis() as u64,
                    tick_interval_ms = self.tick_interval.as_millis() as u64,
                    "the Paxos loop did not tick for a long time"
                );
            }
        }
    }

    /// The pass ended: a slow one is logged with its steps and counted by its slowest step.
    pub fn end_pass(&mut self) {
        let total = self.pass_started.elapsed();
        if total <= self.slow_after {
            return;
        }
        let slowest = self
            .steps
            .iter()
            .max_by_key(|(_, took)| *took)
            .map_or("unknown", |(name, _)| *name);
        self.slow_passes.with_label_values(&[slowest]).inc();
        let steps: Vec<String> = self
            .steps
            .iter()
            .filter(|(_, took)| *took >= Duration::from_millis(1))
            .map(|(name, took)| format!("{name} {} ms", took.as_millis()))
            .collect();
        tracing::warn!(
            pass_ms = total.as_millis() as u64,
            slowest,
            steps = %steps.join(", "),
            "a pass of the Paxos loop took longer than a quarter of the election timeout"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    #[test]
    fn a_slow_pass_is_counted_by_its_slowest_step() {
        let counter = IntCounterVec::new(Opts::new("slow", "slow"), &["step"]).unwrap();
        // Slow after 200 ms: far above what an untouched step takes on a loaded machine.
        let mut watch = LoopWatch::new(
            Duration::from_millis(1),
            Duration::from_millis(800),
            counter.clone(),
        );
        watch.begin_pass();
        watch.step("fast");
        watch.end_pass();
        assert_eq!(counter.with_label_values(&["fast"]).get(), 0);
        watch.begin_pass();
        watch.step("fast");
        std::thread::sleep(Duration::from_millis(250));
        watch.step("apply");
        watch.end_pass();
        assert_eq!(counter.with_label_values(&["apply"]).get(), 1);
        assert_eq!(counter.with_label_values(&["fast"]).get(), 0);
    }
}
