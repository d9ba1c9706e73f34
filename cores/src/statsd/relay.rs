//! Flush output as statsd lines for a next-tier aggregator (`--relay`).
//!
//! Each key goes to one relay, picked by rendezvous hashing (the relay
//! with the highest `hash(key, relay address)`), so every first-tier
//! aggregator sends a key to the same relay, and adding or removing a
//! relay moves only the keys that relay gains or loses.
//!
//! What a key becomes:
//! - counter: `name:sum|c`;
//! - gauge: `name:value|g` (a negative value is sent as `name:0|g` then
//!   `name:-v|g`, since a leading `-` alone means a delta);
//! - timer/histogram/distribution: one line per sketch bucket,
//!   `name:bucket value|ms|@1/weight`, so the next tier sees the same
//!   count and sum within 1 % (min and max become bucket values, within
//!   1 %);
//! - set: while exact, its member hashes in hex (distinct hashes stay
//!   distinct upstream, so unions across relays count right); once
//!   approximate, `count` synthetic members `~<key hash>-<i>` (the count
//!   is kept, unions with other sources over-count);
//!
//! with the tags as `|#t1,t2`. Keys with nothing to report this interval
//! (a counter at 0, an empty timer or set) are not sent. DogStatsD events
//! and service checks are passed through unchanged to the first relay.

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::parse::MetricType;
use super::table::{Flushed, KeyView};
use crate::hash::{hash64, hash64_with};

/// The relay for `key` among `relays` (rendezvous hashing); `None` if
/// there are none.
pub fn pick(key: KeyView<'_>, relays: &[SocketAddr]) -> Option<usize> {
    let h = hash64_with(hash64_with(hash64(key.name), key.tags), key.kind.code().as_bytes());
    (0..relays.len()).max_by_key(|&i| hash64_with(h, relays[i].to_string().as_bytes()))
}

/// Appends `key`'s statsd lines to `out`; returns how many.
pub fn write_key(out: &mut Vec<u8>, key: KeyView<'_>, value: Flushed<'_>) -> usize {
    let mut tags = String::new();
    for (i, t) in key.tag_iter().enumerate() {
        tags.push_str(if i == 0 { "|#" } else { "," });
        tags.push_str(&String::from_utf8_lossy(t));
    }
    let name = String::from_utf8_lossy(key.name);
    let mut s = String::new();
    let mut n = 0;
    let mut line = |s: &mut String, value: &dyn std::fmt::Display, code: &str, rate: Option<f64>| {
        let _ = write!(s, "{name}:{value}|{code}");
        if let Some(r) = rate.filter(|r| *r < 1.0) {
            let _ = write!(s, "|@{r}");
        }
        let _ = writeln!(s, "{tags}");
        n += 1;
    };
    match value {
        Flushed::Counter(sum) if sum != 0.0 => line(&mut s, &sum, "c", None),
        Flushed::Counter(_) => {}
        Flushed::Gauge(value) => {
            if value < 0.0 {
                line(&mut s, &0, "g", None);
            }
            line(&mut s, &value, "g", None);
        }
        Flushed::Sampled(sk) => {
            let code = match key.kind {
                MetricType::Histogram => "h",
                MetricType::Distribution => "d",
                _ => "ms",
            };
            // The samples as they came when the key kept them all (the next
            // tier then has them exactly), else the sketch's buckets.
            match sk.exact() {
                Some(kept) => kept.iter().for_each(|(v, w)| line(&mut s, v, code, Some(1.0 / w))),
                None => sk.buckets().for_each(|(v, w)| line(&mut s, &v, code, Some(1.0 / w))),
            }
        }
        Flushed::Set(set) => match set.hashes() {
            Some(hashes) => hashes.iter().for_each(|h| line(&mut s, &format_args!("{h:016x}"), "s", None)),
            None => {
                let kh = hash64(key.name);
                for i in 0..set.count() {
                    line(&mut s, &format_args!("~{kh:x}-{i}"), "s", None);
                }
            }
        },
    }
    out.extend_from_slice(s.as_bytes());
    n
}

/// Splits `lines` (whole `\n`-terminated lines) into datagram payloads of
/// at most `max` bytes, never cutting a line (a longer line is sent alone).
pub fn datagrams(lines: &[u8], max: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut end = 0;
    for (i, _) in lines.iter().enumerate().filter(|(_, b)| **b == b'\n') {
        if i + 1 - start > max && end > start {
            out.push(&lines[start..end]);
            start = end;
        }
        end = i + 1;
    }
    if end > start {
        out.push(&lines[start..end]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statsd::parse::{Line, Lines};
    use crate::statsd::table::{canonical_key, Flushed, Table};

    /// Aggregates `input`, relays it as statsd lines, aggregates those in a
    /// second tier, and returns the second tier's flush.
    fn two_tiers(input: &str) -> Vec<(String, f64, f64)> {
        let mut tier1 = Table::new(100, 0);
        let mut key = Vec::new();
        for l in Lines::new(input.as_bytes(), 1024) {
            let Ok(Line::Metric(m)) = l else { panic!() };
            canonical_key(&m, &mut key);
            tier1.apply(&key, &m).unwrap();
        }
        let mut out = Vec::new();
        for (k, agg) in tier1.drain() {
            write_key(&mut out, KeyView::parse(&k).unwrap(), agg.as_flushed());
        }
        let mut tier2 = Table::new(100, 0);
        for d in datagrams(&out, 64) {
            assert!(d.len() <= 64 || d.iter().filter(|b| **b == b'\n').count() == 1);
            for l in Lines::new(d, 1024) {
                let Ok(Line::Metric(m)) = l else { panic!("{l:?}") };
                canonical_key(&m, &mut key);
                tier2.apply(&key, &m).unwrap();
            }
        }
        let mut got = Vec::new();
        tier2.flush(|k, v| {
            let name = format!("{}{}", String::from_utf8_lossy(k.name), String::from_utf8_lossy(k.tags));
            got.push(match v {
                Flushed::Counter(c) | Flushed::Gauge(c) => (name, c, 0.0),
                Flushed::Sampled(s) => (name, s.count(), s.sum()),
                Flushed::Set(n) => (name, n.count() as f64, 0.0),
            });
        });
        got.sort_by(|a, b| a.partial_cmp(b).unwrap());
        got
    }

    #[test]
    fn the_next_tier_sees_the_same_aggregates() {
        let got = two_tiers("c:3|c|@0.5|#b,a\ng:-7|g\ng2:4|g\nt:10:20:20|ms|@0.25\ns:x:y:z|s\n");
        // Names are shown with their sorted tags appended.
        assert_eq!(got[0], ("ca|b".into(), 6.0, 0.0));
        assert_eq!(got[1], ("g".into(), -7.0, 0.0));
        assert_eq!(got[2], ("g2".into(), 4.0, 0.0));
        assert_eq!(got[3], ("s".into(), 3.0, 0.0));
        assert_eq!((got[4].0.as_str(), got[4].1), ("t", 12.0));
        assert!((got[4].2 - 200.0).abs() <= 2.0, "{:?}", got[4]);
    }

    #[test]
    fn rendezvous_is_stable_and_moves_few_keys() {
        let relays: Vec<SocketAddr> = (0..4).map(|i| format!("10.0.0.{i}:8125").parse().unwrap()).collect();
        assert_eq!(pick(KeyView { kind: MetricType::Counter, name: b"k", tags: b"" }, &[]), None);
        let mut moved = 0;
        let mut counts = [0; 4];
        for i in 0..4000 {
            let key = format!("key.{i}");
            let key = KeyView { kind: MetricType::Counter, name: key.as_bytes(), tags: b"" };
            let a = pick(key, &relays).unwrap();
            counts[a] += 1;
            let b = pick(key, &relays[..3]).unwrap();
            if a != b {
                moved += 1;
                assert_eq!(a, 3, "only keys of the removed relay move");
            }
        }
        assert_eq!(moved, counts[3]);
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    }

    #[test]
    fn datagrams_never_cut_lines() {
        let lines = b"aaaa\nbbbb\ncccccccccccc\nd\n";
        assert_eq!(datagrams(lines, 10), [&b"aaaa\nbbbb\n"[..], b"cccccccccccc\n", b"d\n"]);
        assert!(datagrams(b"", 10).is_empty());
    }
}
