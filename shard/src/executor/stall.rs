//! The stall detector: a task that holds the core longer than a threshold
//! in one poll delays every other task and all I/O of its shard. Each poll
//! is timed; offenders are counted and logged, at most once per interval
//! per shard so a pathological task cannot flood the log.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Times task polls and reports the slow ones.
#[derive(Debug)]
pub(crate) struct StallDetector {
    threshold: Duration,
    log_every: Duration,
    shard: usize,
    count: Cell<u64>,
    suppressed: Cell<u64>,
    last_log: Cell<Option<Instant>>,
}

impl StallDetector {
    pub(crate) fn new(shard: usize, threshold: Duration) -> Self {
        StallDetector {
            threshold,
            log_every: Duration::from_secs(1),
            shard,
            count: Cell::new(0),
            suppressed: Cell::new(0),
            last_log: Cell::new(None),
        }
    }

    /// Stalls seen so far.
    pub(crate) fn count(&self) -> u64 {
        self.count.get()
    }

    /// Call after a poll that held the core for `held_ns` nanoseconds.
    pub(crate) fn check(&self, held_ns: u64, task: u64, name: &'static str) {
        if held_ns < self.threshold.as_nanos() as u64 {
            return;
        }
        let held = Duration::from_nanos(held_ns);
        let now = Instant::now();
        self.count.set(self.count.get() + 1);
        let due = self.last_log.get().is_none_or(|t| now.saturating_duration_since(t) >= self.log_every);
        if !due {
            self.suppressed.set(self.suppressed.get() + 1);
            return;
        }
        let suppressed = self.suppressed.replace(0);
        self.last_log.set(Some(now));
        tracing::warn!(
            shard = self.shard,
            task,
            name,
            held_us = held.as_micros() as u64,
            threshold_us = self.threshold.as_micros() as u64,
            suppressed,
            "task stalled the shard"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_slow_polls_and_rate_limits_logs() {
        let d = StallDetector::new(0, Duration::from_millis(1));
        d.check(5_000_000, 1, "slow");
        d.check(5_000_000, 1, "slow");
        d.check(10_000, 2, "fast");
        assert_eq!(d.count(), 2);
        assert_eq!(d.suppressed.get(), 1);
    }
}
