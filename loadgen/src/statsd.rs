//! `loadgen statsd`: metric lines of every type (`c`, `g`, `ms`, `h`,
//! `d`, `s`), optionally DogStatsD-tagged, `--per-packet` lines per
//! datagram, from `--sockets` source ports spread over the shards.
//!
//! Lines are generated deterministically ([`LineGen`], sans-IO) and each
//! sender remembers the total of every counter it sent successfully, so
//! the run knows the exact total an aggregator should flush per key
//! (`lg.c.<k>`); `--verify-graphite` compares that with what arrives.

use std::collections::HashMap;
use std::io::Write as _;
use std::rc::Rc;
use std::sync::Arc;

use netstack::udp::UdpSocket;

use super::args::{duration_flag, StatsdArgs};
use super::graphite::Sink;
use super::report::{Summary, Tally};
use super::{drive, share, summary, Pacer, Window};

/// The metric types loadgen sends are the aggregator's own.
pub use cores::statsd::parse::MetricType as Type;

/// Parses `c,g,ms,h,d,s` (any subset, in any order).
pub fn parse_types(list: &str) -> anyhow::Result<Vec<Type>> {
    let types = list
        .split(',')
        .map(|t| {
            Type::ALL.into_iter().find(|x| x.code() == t.trim()).ok_or_else(|| {
                anyhow::anyhow!("--types {list:?}: unknown type {t:?} (expected some of c,g,ms,h,d,s)")
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if types.is_empty() {
        anyhow::bail!("--types {list:?}: name at least one type");
    }
    Ok(types)
}

/// The graphite-side name of counter key `k` (what `lg.c.<k>` flushes as).
pub fn counter_key(k: u32) -> String {
    format!("lg.c.{k}")
}

/// Deterministic metric lines for one sender.
#[derive(Debug, Clone)]
pub struct LineGen {
    types: Vec<Type>,
    keys: u32,
    tags: bool,
    stream: u64,
    seq: u64,
}

impl LineGen {
    /// Lines of `types` over `keys` keys per type; `stream` (the sender)
    /// shifts which keys come first.
    pub fn new(types: Vec<Type>, keys: u32, tags: bool, stream: u64) -> LineGen {
        LineGen { types, keys: keys.max(1), tags, stream, seq: 0 }
    }

    /// Appends the next line (without newline) to `out`; for a counter,
    /// returns its key index and value.
    pub fn next_line(&mut self, out: &mut Vec<u8>) -> Option<(u32, u64)> {
        let seq = self.seq;
        self.seq += 1;
        let n = self.types.len() as u64;
        let t = self.types[(seq % n) as usize];
        let round = seq / n;
        let key = ((round + self.stream * 7919) % u64::from(self.keys)) as u32;
        let value = match t {
            Type::Counter => 1 + round % 5,
            Type::Gauge => round % 100,
            Type::Set => round % 50,
            Type::Timer | Type::Histogram | Type::Distribution => round % 1000,
        };
        // Writing to a Vec cannot fail.
        let _ = write!(out, "lg.{}.{key}:{value}|{}", t.code(), t.code());
        if self.tags {
            let _ = write!(out, "|#sender:{},parity:{}", self.stream % 16, key % 2);
        }
        (t == Type::Counter).then_some((key, value))
    }
}

#[derive(Debug)]
struct StatsdConfig {
    target: std::net::SocketAddr,
    sockets: usize,
    types: Vec<Type>,
    keys: u32,
    tags: bool,
    per_packet: u32,
    /// Datagrams per second per socket.
    packet_rate: Option<f64>,
    total: Option<u64>,
}

/// `loadgen statsd`.
pub fn run(a: &StatsdArgs) -> anyhow::Result<Summary> {
    if a.sockets == 0 || a.per_packet == 0 || a.keys == 0 {
        anyhow::bail!("--sockets, --per-packet and --keys must be at least 1");
    }
    if let Some(r) = a.rate.filter(|r| !(r.is_finite() && *r > 0.0)) {
        anyhow::bail!("--rate {r}: must be a positive number of lines per second");
    }
    let cfg = Arc::new(StatsdConfig {
        target: a.common.target,
        sockets: a.sockets,
        types: parse_types(&a.types)?,
        keys: a.keys,
        tags: a.tags,
        per_packet: a.per_packet,
        packet_rate: a.rate.map(|r| r / a.per_packet as f64 / a.sockets as f64),
        total: a.lines,
    });
    let mut sink = match a.verify_graphite {
        Some(addr) => {
            let sink = Sink::start(addr, &a.prefix)
                .map_err(|e| anyhow::anyhow!("--verify-graphite {addr}: cannot listen: {e}"))?;
            eprintln!("graphite sink listening on {}", sink.addr);
            Some(sink)
        }
        None => None,
    };
    let settle = duration_flag("settle", &a.settle)?;
    let verify_limit = duration_flag("verify-timeout", &a.verify_timeout)?;
    let limit = a.common.limit(a.lines.is_some())?;
    let out = drive(&a.common.runtime, "lines", limit, a.sockets, move |tally, c, w| {
        sender(tally, cfg.clone(), c, w)
    })?;
    let mut s = summary("statsd", "lines", a.common.target, a.sockets, out);
    let expected: HashMap<String, u64> = s
        .result
        .counters
        .iter()
        .enumerate()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| (counter_key(k as u32), *v))
        .collect();
    s.extra.push(("counter_keys_sent", expected.len().into()));
    s.extra.push(("counter_total_sent", expected.values().sum::<u64>().into()));
    if let Some(sink) = sink.as_mut() {
        eprintln!(
            "load done; reading flushes on {} (settle {settle:?}, at most {verify_limit:?})",
            sink.addr
        );
        let verdict = sink.verify(&expected, settle, verify_limit);
        eprintln!(
            "verify: {} of {} counter keys exact (exact-count fraction {:.4}); counter total received {:.4} of sent",
            verdict.exact,
            verdict.keys,
            verdict.exact_fraction(),
            verdict.received_total / (verdict.sent_total.max(1) as f64)
        );
        let mut v = verdict.to_json();
        v["graphite_lines"] = sink.totals().lines.into();
        s.extra.push(("exact_count_fraction", verdict.exact_fraction().into()));
        s.extra.push(("verify", v));
    }
    Ok(s)
}

async fn sender(tally: Rc<Tally>, cfg: Arc<StatsdConfig>, c: usize, w: Window) {
    let socket = match UdpSocket::connected(cfg.target) {
        Ok(s) => s,
        Err(e) => return tally.error(format!("udp socket to {}: {e}", cfg.target)),
    };
    let quota = cfg.total.map(|t| share(t, cfg.sockets, c));
    let mut gen = LineGen::new(cfg.types.clone(), cfg.keys, cfg.tags, c as u64);
    let mut pacer = Pacer::new(cfg.packet_rate, w.start);
    let mut counters = vec![0u64; cfg.keys as usize];
    let mut pending = Vec::with_capacity(cfg.per_packet as usize);
    let mut buf = Vec::with_capacity(cfg.per_packet as usize * 48);
    let mut done = 0u64;
    loop {
        let lines = match quota {
            Some(q) if done >= q => break,
            Some(q) => (q - done).min(u64::from(cfg.per_packet)),
            None => u64::from(cfg.per_packet),
        };
        let due = pacer.due().await;
        if due >= w.deadline || w.over() {
            break;
        }
        buf.clear();
        pending.clear();
        for i in 0..lines {
            if i > 0 {
                buf.push(b'\n');
            }
            pending.extend(gen.next_line(&mut buf));
        }
        done += lines;
        let (r, b) = socket.send_to(buf, cfg.target).await;
        buf = b;
        match r {
            Ok(n) => {
                tally.bytes_out.set(tally.bytes_out.get() + n as u64);
                tally.datagrams.set(tally.datagrams.get() + 1);
                tally.ok_unmeasured(lines);
                for &(k, v) in &pending {
                    counters[k as usize] += v;
                }
            }
            Err(e) => tally.error(format!("send to {}: {e}", cfg.target)),
        }
    }
    let mut all = tally.counters.borrow_mut();
    if all.len() < counters.len() {
        all.resize(counters.len(), 0);
    }
    for (a, b) in all.iter_mut().zip(&counters) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_appears_and_counters_are_reported() {
        let types = parse_types("c,g,ms,h,d,s").unwrap();
        let mut g = LineGen::new(types, 10, false, 0);
        let mut seen = Vec::new();
        let mut counter_sum = 0;
        for _ in 0..12 {
            let mut line = Vec::new();
            if let Some((_, v)) = g.next_line(&mut line) {
                counter_sum += v;
            }
            seen.push(String::from_utf8(line).unwrap());
        }
        for code in ["|c", "|g", "|ms", "|h", "|d", "|s"] {
            assert!(seen.iter().any(|l| l.ends_with(code)), "{code} missing in {seen:?}");
        }
        // Two counter lines (rounds 0 and 1): values 1 and 2.
        assert_eq!(counter_sum, 3);
        assert_eq!(seen[0], "lg.c.0:1|c");
    }

    #[test]
    fn tags_are_dogstatsd_suffixes() {
        let mut g = LineGen::new(vec![Type::Counter], 3, true, 5);
        let mut line = Vec::new();
        g.next_line(&mut line);
        let line = String::from_utf8(line).unwrap();
        assert!(line.starts_with("lg.c.") && line.contains("|c|#sender:5,parity:"), "{line}");
    }

    #[test]
    fn unknown_types_are_refused_with_the_flag() {
        let e = parse_types("c,x").unwrap_err().to_string();
        assert!(e.contains("--types") && e.contains("\"x\""), "{e}");
    }
}
