//! A fault-injecting wrapper: a lossy, duplicating, truncating, reordering
//! network in front of any backend, driven by a seeded generator so a
//! failing test replays exactly.

use std::io;

use super::{DatagramBackend, Outgoing, Received};

/// Probabilities (0.0 ..= 1.0) of each fault per received datagram.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultRates {
    /// Datagram silently lost.
    pub drop: f64,
    /// Datagram delivered twice.
    pub duplicate: f64,
    /// Datagram cut at a random length (and marked truncated).
    pub truncate: f64,
    /// Datagram swapped with the next one in the burst.
    pub reorder: f64,
}

/// Counters of the faults injected so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Datagrams dropped.
    pub dropped: u64,
    /// Datagrams duplicated.
    pub duplicated: u64,
    /// Datagrams truncated.
    pub truncated: u64,
    /// Pairs swapped.
    pub reordered: u64,
}

/// A received datagram after fault injection: the original buffer, cut
/// short, or a copy (for duplicates).
#[derive(Debug)]
pub enum FaultyBuf<B> {
    /// The original, possibly cut to `len` bytes.
    Original {
        /// The backend's buffer.
        buf: B,
        /// Bytes of it that are delivered.
        len: usize,
    },
    /// A copy made for a duplicate.
    Copy(Vec<u8>),
}

impl<B: AsRef<[u8]>> AsRef<[u8]> for FaultyBuf<B> {
    fn as_ref(&self) -> &[u8] {
        match self {
            FaultyBuf::Original { buf, len } => {
                let b = buf.as_ref();
                &b[..(*len).min(b.len())]
            }
            FaultyBuf::Copy(v) => v,
        }
    }
}

/// Wraps a backend; see the module docs.
#[derive(Debug)]
pub struct Faulty<B> {
    inner: B,
    rates: FaultRates,
    rng: u64,
    counts: FaultCounts,
}

impl<B: DatagramBackend> Faulty<B> {
    /// Injects faults at `rates` into what `inner` receives; `seed` makes
    /// the sequence of faults reproducible.
    pub fn new(inner: B, rates: FaultRates, seed: u64) -> Faulty<B> {
        Faulty { inner, rates, rng: seed | 1, counts: FaultCounts::default() }
    }

    /// Faults injected so far.
    pub fn counts(&self) -> FaultCounts {
        self.counts
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// xorshift64*: small, fast, good enough to pick faults.
    fn next(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    fn mangle(&mut self, r: Received<B::Buf>, out: &mut Vec<Received<FaultyBuf<B::Buf>>>) {
        if self.chance(self.rates.drop) {
            self.counts.dropped += 1;
            return;
        }
        let full = r.buf.as_ref().len();
        let mut len = full;
        let mut truncated = r.truncated;
        if full > 0 && self.chance(self.rates.truncate) {
            len = (self.next() % full as u64) as usize;
            truncated = true;
            self.counts.truncated += 1;
        }
        if self.chance(self.rates.duplicate) {
            let copy = r.buf.as_ref()[..len].to_vec();
            out.push(Received { buf: FaultyBuf::Copy(copy), source: r.source, truncated });
            self.counts.duplicated += 1;
        }
        out.push(Received { buf: FaultyBuf::Original { buf: r.buf, len }, source: r.source, truncated });
    }
}

impl<B: DatagramBackend> DatagramBackend for Faulty<B> {
    type Buf = FaultyBuf<B::Buf>;

    async fn recv_burst(&mut self, out: &mut Vec<Received<Self::Buf>>, max: usize) -> io::Result<usize> {
        let start = out.len();
        // Everything may be dropped: keep receiving until something is left.
        while out.len() == start {
            let mut raw = Vec::with_capacity(max);
            self.inner.recv_burst(&mut raw, max).await?;
            for r in raw {
                self.mangle(r, out);
            }
        }
        for i in start..out.len().saturating_sub(1) {
            if self.chance(self.rates.reorder) {
                out.swap(i, i + 1);
                self.counts.reordered += 1;
            }
        }
        Ok(out.len() - start)
    }

    async fn send_burst(&mut self, burst: &mut Vec<Outgoing>) -> io::Result<usize> {
        self.inner.send_burst(burst).await
    }
}
