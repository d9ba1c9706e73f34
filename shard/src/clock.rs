//! A cheap clock for the hot path.
//!
//! The stall detector times every task poll. `Instant::now()` costs tens of
//! nanoseconds per read in a VM; `CLOCK_MONOTONIC_COARSE` is a plain load
//! of the kernel's last tick (vDSO, no syscall) at the price of a
//! resolution of one scheduler tick (1-4 ms), which is fine for reporting
//! polls that take longer than several milliseconds.
#![allow(unsafe_code)]

/// Monotonic nanoseconds at scheduler-tick resolution.
pub(crate) fn coarse_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, exclusively borrowed timespec for the kernel (vDSO) to fill; CLOCK_MONOTONIC_COARSE exists on every Linux since 2.6.32.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn coarse_clock_moves_forward() {
        let a = super::coarse_ns();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = super::coarse_ns();
        assert!(b > a && b - a >= 10_000_000, "{a} -> {b}");
    }
}
