//! What the benchmarks of every crate share: medians, rate formatting,
//! pinning a thread, a thread's CPU time, and the quick mode `cargo test`
//! runs them in.
//!
//! [`netns`]: network namespaces joined by veth pairs, for tests and
//! benchmarks that need real interfaces (XDP, queues) without touching the
//! machine's network.
#![allow(unsafe_code)]

pub mod netns;

use std::io;
use std::time::Duration;

/// Whether this is a smoke run: `cargo bench` passes `--bench`, `cargo test
/// --all-targets` does not, and then a benchmark uses tiny counts and one
/// round (it still checks its results).
pub fn quick() -> bool {
    static QUICK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *QUICK.get_or_init(|| !std::env::args().any(|a| a == "--bench"))
}

/// Prints `msg` and exits non-zero (a benchmark that miscounts fails).
pub fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1);
}

/// The median of `f` over `runs` (NaN when empty).
pub fn median<T>(runs: &[T], f: impl Fn(&T) -> f64) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `x` per second as `1.23 M/s` or `456.7 k/s`.
pub fn fmt_rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M/s", x / 1e6)
    } else {
        format!("{:.1} k/s", x / 1e3)
    }
}

/// A count as `1.23 M`, `45.6 k` or as is.
pub fn fmt_count(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.2} M", n as f64 / 1e6)
    } else if n >= 10_000 {
        format!("{:.1} k", n as f64 / 1e3)
    } else {
        n.to_string()
    }
}

/// Pins the calling thread to `cpu`.
pub fn try_pin_to(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET only sets a bit inside `set` (it ignores cpus beyond the set's size).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// [`try_pin_to`], warning instead of failing.
pub fn pin_to(cpu: usize) {
    if let Err(e) = try_pin_to(cpu) {
        eprintln!("warning: could not pin to cpu {cpu}: {e}");
    }
}

/// CPU time the calling thread has used.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes a timespec into `ts`, which is live.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
