//! Memory per key of the aggregation table: inserts 1M distinct counter
//! keys (names like `app.web-07.requests.endpoint_123456`, no tags), then
//! prints the process's resident-set growth per key and the table's own
//! estimate. `cargo run --release -p appliance --example aggregate_memory [KEYS]`.

use cores::statsd::parse::{parse_line, Line};
use cores::statsd::table::{canonical_key, Table};

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let keys: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let before = rss_bytes();
    let mut table = Table::new(usize::MAX, 30);
    let (mut line, mut key) = (String::new(), Vec::new());
    for i in 0..keys {
        line.clear();
        use std::fmt::Write as _;
        let _ = write!(line, "app.web-{:02}.requests.endpoint_{i}:1|c", i % 16);
        let Ok(Line::Metric(m)) = parse_line(line.as_bytes(), 1024) else { unreachable!("well-formed") };
        canonical_key(&m, &mut key);
        if table.apply(&key, &m).is_err() {
            unreachable!("no key limit");
        }
    }
    let after = rss_bytes();
    println!("keys: {}", table.len());
    println!("process RSS: {:.1} MB", after as f64 / 1e6);
    println!("RSS growth per key: {:.0} bytes", (after - before) as f64 / keys as f64);
    println!(
        "table estimate per key (no allocator overhead): {:.0} bytes",
        table.approx_bytes() as f64 / keys as f64
    );
}
