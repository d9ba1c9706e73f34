//! CPU time a thread has used, read from `/proc` (no system call beyond
//! the read), for per-shard load figures.

/// Clock ticks per second in `/proc/*/stat` (`USER_HZ`, 100 on Linux
/// whatever the kernel's own tick rate).
const USER_HZ: f64 = 100.0;

/// User plus system CPU time the calling thread has used, in seconds
/// (10 ms resolution); `None` where `/proc` cannot tell.
pub fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    parse_stat(&stat)
}

/// utime + stime of a `stat` line, in seconds. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last
/// `)`: state is the first there, utime the 12th, stime the 13th.
fn parse_stat(stat: &str) -> Option<f64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime_after_the_command_name() {
        let line = "4242 (shard 0) (x)) R 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 100 0 0";
        assert_eq!(parse_stat(line), Some(3.0));
        assert_eq!(parse_stat("garbage"), None);
        let own = thread_cpu_seconds().expect("this thread's CPU time");
        assert!(own >= 0.0);
    }
}
