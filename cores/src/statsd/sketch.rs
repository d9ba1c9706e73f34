//! A mergeable quantile sketch in the DDSketch family, for timers,
//! histograms and distributions.
//!
//! A positive sample `x` goes to bucket `ceil(log_γ x)` with
//! `γ = (1 + α) / (1 − α)` and `α = 1 %` ([`RELATIVE_ACCURACY`]); the bucket
//! reports `2γ^i / (γ + 1)`, which is within `α` of every value the bucket
//! holds. So every quantile is within 1 % (relative) of the exact sample at
//! that rank, for any input distribution, and two sketches merge by adding
//! bucket weights (a merged sketch is the sketch of the union). Negative
//! samples use a mirrored store; magnitudes below [`MIN_INDEXABLE`] count
//! as zero. Count, sum, min, max, mean and standard deviation are exact
//! (up to f64 rounding), not estimated.
//!
//! Memory: a dense `f64` per bucket between the smallest and largest index
//! seen; 1 ms to 100 s spans ~580 buckets. A store never exceeds
//! [`MAX_BUCKETS`]: beyond that the lowest buckets fold together, which
//! only loosens the bound for the very lowest quantiles (~1e17 of dynamic
//! range fit before that happens).
//!
//! Exact samples: a sketch made [`Sketch::with_exact`] also keeps the
//! samples as they came up to its bound, and while it holds them all the
//! figures are computed from them as etsy statsd computes them
//! ([`super::exact`]); past the bound it drops them and the sketch answers.
//!
//! Sample weights: a sample sent with `@rate` counts `1/rate` times in
//! every statistic (etsy statsd weights only `count`; here `sum` and
//! `mean` are weighted too, so `mean = sum / count` holds).
//!
//! ```
//! use cores::statsd::sketch::Sketch;
//! let mut s = Sketch::new();
//! for v in 1..=1000 { s.add(f64::from(v), 1.0); }
//! let p99 = s.quantile(0.99).unwrap();
//! assert!((p99 - 990.0).abs() <= 0.01 * 990.0);
//! assert_eq!(s.max(), Some(1000.0));
//! ```

/// The relative accuracy of every quantile.
pub const RELATIVE_ACCURACY: f64 = 0.01;
/// At most this many buckets per sign.
pub const MAX_BUCKETS: usize = 2048;
/// Magnitudes below this are counted in the zero bucket.
pub const MIN_INDEXABLE: f64 = 1e-9;

const GAMMA: f64 = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);

/// Bucket index of a magnitude `x >= MIN_INDEXABLE`.
fn index_of(x: f64) -> i32 {
    // |ln x| <= ~710 and ln γ ~ 0.02, so this fits an i32 with room.
    (x.ln() / GAMMA.ln()).ceil() as i32
}

/// The value a bucket reports: within α of all it holds.
fn bucket_value(i: i32) -> f64 {
    2.0 * GAMMA.powi(i) / (GAMMA + 1.0)
}

/// Dense bucket weights over `offset .. offset + counts.len()`.
#[derive(Debug, Clone, Default, PartialEq)]
struct Store {
    counts: Vec<f64>,
    offset: i32,
}

impl Store {
    fn add(&mut self, i: i32, w: f64) {
        if self.counts.is_empty() {
            self.offset = i;
            self.counts.push(w);
            return;
        }
        let end = self.offset + self.counts.len() as i32;
        if i < self.offset || i >= end {
            self.resize(self.offset.min(i), (end - 1).max(i));
        }
        let i = i.max(self.offset);
        self.counts[(i - self.offset) as usize] += w;
    }

    /// Grows to cover `lo..=hi`, folding the lowest buckets when the range
    /// is wider than `MAX_BUCKETS`.
    fn resize(&mut self, lo: i32, hi: i32) {
        let lo = lo.max(hi - MAX_BUCKETS as i32 + 1);
        let mut counts = vec![0.0; (hi - lo + 1) as usize];
        for (k, &c) in self.counts.iter().enumerate() {
            let i = (self.offset + k as i32).max(lo);
            counts[(i - lo) as usize] += c;
        }
        self.counts = counts;
        self.offset = lo;
    }

    fn iter(&self) -> impl DoubleEndedIterator<Item = (i32, f64)> + '_ {
        self.counts.iter().enumerate().filter(|(_, c)| **c > 0.0).map(|(k, c)| (self.offset + k as i32, *c))
    }

    fn heap_bytes(&self) -> usize {
        self.counts.capacity() * std::mem::size_of::<f64>()
    }
}

/// A quantile sketch with exact count, sum, min, max and variance.
#[derive(Debug, Clone, PartialEq)]
pub struct Sketch {
    pos: Store,
    neg: Store,
    zero: f64,
    count: f64,
    sum: f64,
    min: f64,
    max: f64,
    mean: f64,
    m2: f64,
    /// The samples as they came, `(value, weight)`, while there are at
    /// most `exact_cap` (see [`super::exact`]); dropped for good once over.
    exact: Vec<(f64, f64)>,
    exact_cap: u32,
    exact_over: bool,
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch::new()
    }
}

/// What etsy statsd reports for one percentile threshold `N`: over the
/// lowest `round(N/100 × count)` samples, the largest (`upper_N`), their
/// sum (`sum_N`) and mean (`mean_N`). From the sketch each is within
/// [`RELATIVE_ACCURACY`] when all samples have the same sign (each sample
/// is replaced by its bucket's value, off by at most α of itself).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    /// The largest sample within the threshold.
    pub upper: f64,
    /// The sum of the samples within the threshold.
    pub sum: f64,
    /// Their mean.
    pub mean: f64,
}

impl Sketch {
    /// An empty sketch.
    pub fn new() -> Sketch {
        Sketch {
            pos: Store::default(),
            neg: Store::default(),
            zero: 0.0,
            count: 0.0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            mean: 0.0,
            m2: 0.0,
            exact: Vec::new(),
            exact_cap: 0,
            exact_over: false,
        }
    }

    /// An empty sketch that also keeps up to `cap` samples as they came,
    /// so that while a key has no more than that its figures are etsy's,
    /// exactly ([`Sketch::exact`]). 0: none kept.
    pub fn with_exact(cap: u32) -> Sketch {
        Sketch { exact_cap: cap, ..Sketch::new() }
    }

    /// An empty sketch with this one's exact-samples bound (a new interval).
    pub fn emptied(&self) -> Sketch {
        Sketch::with_exact(self.exact_cap)
    }

    /// The samples as they came, `(value, weight)`, when every one of them
    /// was kept (none over the bound, none merged from a sketch that did
    /// not keep its own); `None` otherwise or when empty.
    pub fn exact(&self) -> Option<&[(f64, f64)]> {
        (self.exact_cap > 0 && !self.exact_over && self.count > 0.0).then_some(self.exact.as_slice())
    }

    /// Samples held as they came.
    pub fn exact_len(&self) -> usize {
        self.exact.len()
    }

    /// Stops keeping samples as they came (over the bound, or a table's
    /// budget for them is spent): the sketch alone answers from now on.
    pub fn give_up_exact(&mut self) {
        if self.exact_cap > 0 && !self.exact_over {
            self.exact_over = true;
            self.exact = Vec::new();
        }
    }

    /// Adds sample `x` with weight `w` (1/sample rate). Non-finite samples
    /// and non-positive weights are ignored (the parser never yields them).
    pub fn add(&mut self, x: f64, w: f64) {
        if !(x.is_finite() && w > 0.0 && w.is_finite()) {
            return;
        }
        if self.exact_cap > 0 && !self.exact_over {
            if self.exact.len() < self.exact_cap as usize {
                self.exact.push((x, w));
            } else {
                self.give_up_exact();
            }
        }
        if x >= MIN_INDEXABLE {
            self.pos.add(index_of(x), w);
        } else if x <= -MIN_INDEXABLE {
            self.neg.add(index_of(-x), w);
        } else {
            self.zero += w;
        }
        self.count += w;
        self.sum += w * x;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        // Weighted Welford update.
        let delta = x - self.mean;
        self.mean += w * delta / self.count;
        self.m2 += w * delta * (x - self.mean);
    }

    /// Adds `other` into this sketch: afterwards it is the sketch of both
    /// sample sets.
    pub fn merge(&mut self, other: &Sketch) {
        if other.count == 0.0 {
            return;
        }
        match other.exact() {
            Some(more)
                if self.exact_cap > 0
                    && !self.exact_over
                    && self.exact.len() + more.len() <= self.exact_cap as usize =>
            {
                self.exact.extend_from_slice(more);
            }
            _ => self.give_up_exact(),
        }
        for (i, c) in other.pos.iter() {
            self.pos.add(i, c);
        }
        for (i, c) in other.neg.iter() {
            self.neg.add(i, c);
        }
        self.zero += other.zero;
        let n = self.count + other.count;
        let delta = other.mean - self.mean;
        self.m2 += other.m2 + delta * delta * self.count * other.count / n;
        self.mean += delta * other.count / n;
        self.count = n;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Total weight (samples scaled by 1/rate).
    pub fn count(&self) -> f64 {
        self.count
    }

    /// Weighted sum of the samples.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Smallest sample, if any.
    pub fn min(&self) -> Option<f64> {
        (self.count > 0.0).then_some(self.min)
    }

    /// Largest sample, if any.
    pub fn max(&self) -> Option<f64> {
        (self.count > 0.0).then_some(self.max)
    }

    /// Weighted mean, if any samples.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then_some(self.sum / self.count)
    }

    /// Weighted population standard deviation, if any samples.
    pub fn std(&self) -> Option<f64> {
        (self.count > 0.0).then(|| (self.m2 / self.count).max(0.0).sqrt())
    }

    /// Buckets in ascending value order: `(representative value, weight)`.
    pub fn buckets(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        let neg = self.neg.iter().rev().map(|(i, c)| (-bucket_value(i), c));
        let zero = (self.zero > 0.0).then_some((0.0, self.zero));
        let pos = self.pos.iter().map(|(i, c)| (bucket_value(i), c));
        neg.chain(zero).chain(pos)
    }

    /// The value at quantile `q` in [0, 1]: within [`RELATIVE_ACCURACY`] of
    /// the exact sample of rank `floor(q × (count − 1))` (0-based, with
    /// weights as repeated samples); clamped to [min, max].
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = (q * (self.count - 1.0)).floor();
        let mut seen = 0.0;
        let mut last = self.max;
        for (v, c) in self.buckets() {
            seen += c;
            last = v;
            if seen > rank {
                break;
            }
        }
        Some(last.clamp(self.min, self.max))
    }

    /// etsy statsd's per-percentile figures for `pct` in (0, 100]; `None`
    /// when the sketch is empty or the threshold holds no sample.
    pub fn threshold(&self, pct: f64) -> Option<Threshold> {
        if self.count <= 0.0 || !(pct > 0.0 && pct <= 100.0) {
            return None;
        }
        let k = (pct / 100.0 * self.count).round();
        if k <= 0.0 {
            return None;
        }
        if k >= self.count {
            return Some(Threshold { upper: self.max, sum: self.sum, mean: self.sum / self.count });
        }
        let (mut seen, mut sum, mut upper) = (0.0, 0.0, self.min);
        for (v, c) in self.buckets() {
            let take = c.min(k - seen);
            seen += take;
            sum += take * v;
            upper = v;
            if seen >= k {
                break;
            }
        }
        let upper = upper.clamp(self.min, self.max);
        Some(Threshold { upper, sum, mean: sum / k })
    }

    /// Heap bytes held by the bucket stores and the samples kept.
    pub fn heap_bytes(&self) -> usize {
        self.pos.heap_bytes()
            + self.neg.heap_bytes()
            + self.exact.capacity() * std::mem::size_of::<(f64, f64)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(got: f64, want: f64) -> bool {
        (got - want).abs() <= RELATIVE_ACCURACY * want.abs() + 1e-9
    }

    fn exact_rank(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    #[test]
    fn exact_summaries() {
        let mut s = Sketch::new();
        for v in [3.0, 1.0, 4.0, 1.0, 5.0] {
            s.add(v, 1.0);
        }
        assert_eq!((s.count(), s.sum(), s.min(), s.max()), (5.0, 14.0, Some(1.0), Some(5.0)));
        assert_eq!(s.mean(), Some(2.8));
        // Population std of 3,1,4,1,5: sqrt(2.56).
        assert!((s.std().unwrap() - 1.6).abs() < 1e-12);
        assert_eq!(Sketch::new().quantile(0.5), None);
        assert_eq!(Sketch::new().mean(), None);
    }

    #[test]
    fn weights_count_as_repeated_samples() {
        let mut a = Sketch::new();
        a.add(10.0, 4.0);
        a.add(20.0, 1.0);
        let mut b = Sketch::new();
        for _ in 0..4 {
            b.add(10.0, 1.0);
        }
        b.add(20.0, 1.0);
        assert_eq!(a.count(), b.count());
        assert_eq!(a.sum(), b.sum());
        assert_eq!(a.quantile(0.5), b.quantile(0.5));
        assert!((a.std().unwrap() - b.std().unwrap()).abs() < 1e-9);
    }

    #[test]
    fn thresholds_follow_etsy() {
        // 1..=10: 90th percentile keeps the lowest 9 samples.
        let mut s = Sketch::new();
        for v in 1..=10 {
            s.add(f64::from(v), 1.0);
        }
        let t = s.threshold(90.0).unwrap();
        assert!(close(t.upper, 9.0), "{t:?}");
        assert!(close(t.sum, 45.0), "{t:?}");
        assert!(close(t.mean, 5.0), "{t:?}");
        let all = s.threshold(100.0).unwrap();
        assert_eq!((all.upper, all.sum, all.mean), (10.0, 55.0, 5.5));
        // round(1% of 10) = 0 samples: nothing to report.
        assert_eq!(s.threshold(1.0), None);
    }

    #[test]
    fn negatives_and_zero() {
        let mut s = Sketch::new();
        for v in [-100.0, -1.0, 0.0, 0.0, 1.0, 100.0] {
            s.add(v, 1.0);
        }
        assert!(close(s.quantile(0.0).unwrap(), -100.0));
        assert!(close(s.quantile(0.2).unwrap(), -1.0));
        assert_eq!(s.quantile(0.5), Some(0.0));
        assert!(close(s.quantile(1.0).unwrap(), 100.0));
    }

    #[test]
    fn a_huge_range_stays_bounded() {
        let mut s = Sketch::new();
        for e in -300..300 {
            s.add(10f64.powi(e), 1.0);
        }
        assert!(s.pos.counts.len() <= MAX_BUCKETS);
        assert_eq!(s.count(), 600.0);
        assert!(close(s.quantile(1.0).unwrap(), 1e299));
    }

    proptest! {
        #[test]
        fn quantiles_within_the_bound(
            mut xs in proptest::collection::vec(prop_oneof![1e-3f64..1e6, -1e6f64..-1e-3], 1..400),
            q in 0.0f64..=1.0,
        ) {
            let mut s = Sketch::new();
            for &x in &xs {
                s.add(x, 1.0);
            }
            xs.sort_by(f64::total_cmp);
            let want = exact_rank(&xs, q);
            let got = s.quantile(q).unwrap();
            prop_assert!(close(got, want), "q={} got={} want={}", q, got, want);
            prop_assert_eq!(s.min(), Some(xs[0]));
            prop_assert_eq!(s.max(), Some(xs[xs.len() - 1]));
        }

        #[test]
        fn thresholds_within_the_bound(
            mut xs in proptest::collection::vec(1e-3f64..1e6, 1..300),
            pct in 1.0f64..=100.0,
        ) {
            let mut s = Sketch::new();
            for &x in &xs {
                s.add(x, 1.0);
            }
            xs.sort_by(f64::total_cmp);
            let k = (pct / 100.0 * xs.len() as f64).round() as usize;
            match s.threshold(pct) {
                None => prop_assert_eq!(k, 0),
                Some(t) => {
                    let sum: f64 = xs[..k].iter().sum();
                    prop_assert!(close(t.upper, xs[k - 1]), "{:?} vs {}", t, xs[k - 1]);
                    prop_assert!(close(t.sum, sum), "{:?} vs {}", t, sum);
                    prop_assert!(close(t.mean, sum / k as f64));
                }
            }
        }

        #[test]
        fn merge_equals_union(
            a in proptest::collection::vec(-1e4f64..1e4, 0..200),
            b in proptest::collection::vec(-1e4f64..1e4, 0..200),
        ) {
            let (mut sa, mut sb, mut all) = (Sketch::new(), Sketch::new(), Sketch::new());
            for &x in &a { sa.add(x, 1.0); all.add(x, 1.0); }
            for &x in &b { sb.add(x, 1.0); all.add(x, 1.0); }
            sa.merge(&sb);
            prop_assert_eq!(sa.count(), all.count());
            prop_assert_eq!(sa.min(), all.min());
            prop_assert_eq!(sa.max(), all.max());
            prop_assert!((sa.sum() - all.sum()).abs() <= 1e-6 * (1.0 + all.sum().abs()));
            for q in [0.0, 0.25, 0.5, 0.9, 0.99, 1.0] {
                prop_assert_eq!(sa.quantile(q), all.quantile(q));
            }
            if let (Some(x), Some(y)) = (sa.std(), all.std()) {
                prop_assert!((x - y).abs() <= 1e-6 * (1.0 + y));
            }
        }
    }
}
