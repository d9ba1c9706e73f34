//! The statsd / DogStatsD line parser on arbitrary datagrams: it must never
//! panic, an accepted metric must satisfy the parser's promises (non-empty
//! name, rate in (0, 1], every value readable), and splitting a datagram
//! into its lines must give the same results line by line.
#![no_main]

use cores::statsd::parse::{parse_line, Line, Lines};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let max = 512;
    let mut lines = 0usize;
    for r in Lines::new(data, max) {
        lines += 1;
        if let Ok(Line::Metric(m)) = r {
            assert!(!m.name.is_empty());
            assert!(m.rate > 0.0 && m.rate <= 1.0);
            assert_eq!(m.values().count(), m.raw_values.split(|&b| b == b':').count());
        }
    }
    let direct = data
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
        .map(|l| parse_line(l, max))
        .count();
    assert_eq!(lines, direct);
});
