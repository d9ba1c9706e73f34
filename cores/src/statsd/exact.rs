//! etsy statsd's timer figures, computed from an interval's samples
//! exactly as etsy's `process_metrics` does, while a key has few enough
//! samples to keep them all ([`Sketch`](super::sketch::Sketch) keeps up to
//! its bound). For samples sent without a rate these are etsy's figures
//! exactly; a sample sent `@rate` counts `1/rate` times in every figure
//! (etsy counts it so in `count` only), as in the sketch:
//!
//! - `sum`, `mean` (`sum / n`), `upper`, `lower`, `std` (population);
//! - `median`: the middle sample, or the mean of the two middle ones;
//! - per percentile `N`: with `k = round(N/100 × n)` (every sample when
//!   there is only one), `upper_N` the `k`-th smallest sample, `sum_N` the
//!   sum of the `k` smallest and `mean_N = sum_N / k`; no figures when
//!   `k` is 0.
//!
//! ```
//! use cores::statsd::exact::Samples;
//! let s = Samples::new((1..=100).map(f64::from).collect());
//! let t = s.threshold(90.0).unwrap();
//! assert_eq!((t.upper, t.sum, t.mean), (90.0, 4095.0, 45.5));
//! assert_eq!(s.median(), 50.5);
//! ```

use super::sketch::Threshold;

/// An interval's samples, sorted, each with its weight (`1/rate`: a
/// sample sent `@0.5` stands for two), with running sums.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    /// `(value, weight)`, ascending by value.
    sorted: Vec<(f64, f64)>,
    /// Running `(weight, weighted sum)` up to and including each sample.
    running: Vec<(f64, f64)>,
}

impl Samples {
    /// Unweighted samples (any order).
    pub fn new(values: Vec<f64>) -> Samples {
        Samples::weighted(values.into_iter().map(|v| (v, 1.0)).collect())
    }

    /// `(value, weight)` samples (any order; finite values, positive
    /// weights: the parser never yields others).
    pub fn weighted(mut samples: Vec<(f64, f64)>) -> Samples {
        samples.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (mut w, mut sum) = (0.0, 0.0);
        let running = samples
            .iter()
            .map(|(v, x)| {
                w += x;
                sum += v * x;
                (w, sum)
            })
            .collect();
        Samples { sorted: samples, running }
    }

    /// Total weight (the count).
    pub fn count(&self) -> f64 {
        self.running.last().map_or(0.0, |r| r.0)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// Their (weighted) sum.
    pub fn sum(&self) -> f64 {
        self.running.last().map_or(0.0, |r| r.1)
    }

    /// Their mean (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            self.sum() / self.count()
        }
    }

    /// The smallest and largest (0 when empty).
    pub fn lower_upper(&self) -> (f64, f64) {
        (self.sorted.first().map_or(0.0, |s| s.0), self.sorted.last().map_or(0.0, |s| s.0))
    }

    /// The sample of 0-based rank `r` (weights as repetitions).
    fn at_rank(&self, r: f64) -> f64 {
        let i = self.running.partition_point(|(w, _)| *w <= r).min(self.sorted.len() - 1);
        self.sorted[i].0
    }

    /// etsy's median: the middle sample, or the mean of the two middle ones.
    pub fn median(&self) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        let n = self.count();
        let mid = (n / 2.0).floor();
        if n % 2.0 == 1.0 {
            self.at_rank(mid)
        } else {
            (self.at_rank(mid - 1.0) + self.at_rank(mid)) / 2.0
        }
    }

    /// Population standard deviation.
    pub fn std(&self) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        let mean = self.mean();
        let squares: f64 = self.sorted.iter().map(|(v, w)| w * (v - mean) * (v - mean)).sum();
        (squares / self.count()).sqrt()
    }

    /// etsy's figures for percentile `pct` in (0, 100], if the threshold
    /// holds a sample: the `k = round(pct/100 × count)` smallest (every
    /// sample when there is only one).
    pub fn threshold(&self, pct: f64) -> Option<Threshold> {
        let n = self.count();
        if self.is_empty() || !(pct > 0.0 && pct <= 100.0) {
            return None;
        }
        let k = if self.sorted.len() == 1 { n } else { (pct / 100.0 * n).round().min(n) };
        if k <= 0.0 {
            return None;
        }
        // The samples wholly within the threshold, then part of the next.
        let i = self.running.partition_point(|(w, _)| *w < k);
        let (w_before, sum_before) = if i == 0 { (0.0, 0.0) } else { self.running[i - 1] };
        let (upper, _) = self.sorted[i.min(self.sorted.len() - 1)];
        let sum = sum_before + (k - w_before) * upper;
        Some(Threshold { upper, sum, mean: sum / k })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The figures etsy statsd flushes for the values 1..=100 (its
    /// process_metrics run by hand): test vectors.
    #[test]
    fn one_to_a_hundred_as_etsy_flushes_them() {
        let s = Samples::new((1..=100).rev().map(f64::from).collect());
        assert_eq!(s.count(), 100.0);
        assert_eq!((s.sum(), s.mean(), s.median(), s.lower_upper()), (5050.0, 50.5, 50.5, (1.0, 100.0)));
        assert!((s.std() - (9999.0f64 / 12.0).sqrt()).abs() < 1e-9);
        for (pct, upper, sum) in
            [(90.0, 90.0, 4095.0), (50.0, 50.0, 1275.0), (99.0, 99.0, 4950.0), (95.0, 95.0, 4560.0)]
        {
            let t = s.threshold(pct).expect("threshold");
            assert_eq!((t.upper, t.sum, t.mean), (upper, sum, sum / upper), "{pct}");
        }
        // round(99.9% of 100) = 100: every sample.
        assert_eq!(s.threshold(99.9).expect("t").upper, 100.0);
    }

    #[test]
    fn small_intervals() {
        let one = Samples::new(vec![7.0]);
        let t = one.threshold(10.0).expect("one sample: always");
        assert_eq!((t.upper, t.sum, t.mean, one.median()), (7.0, 7.0, 7.0, 7.0));
        let two = Samples::new(vec![4.0, 2.0]);
        assert_eq!(two.threshold(10.0), None, "round(0.2) = 0: etsy skips it");
        assert_eq!(two.threshold(50.0).expect("t").upper, 2.0);
        assert_eq!(two.median(), 3.0);
        assert!(Samples::new(Vec::new()).threshold(90.0).is_none());
    }

    /// A sample sent `@0.5` counts twice, in every figure (etsy weights
    /// only its count; here the figures stay consistent with it).
    #[test]
    fn weights_count_as_repetitions() {
        let w = Samples::weighted(vec![(10.0, 2.0), (30.0, 1.0), (20.0, 1.0)]);
        let r = Samples::new(vec![10.0, 10.0, 20.0, 30.0]);
        assert_eq!((w.count(), w.sum(), w.mean(), w.median()), (r.count(), r.sum(), r.mean(), r.median()));
        assert_eq!(w.median(), 15.0);
        for pct in [25.0, 50.0, 75.0, 90.0, 100.0] {
            assert_eq!(w.threshold(pct), r.threshold(pct), "{pct}");
        }
        assert!((w.std() - r.std()).abs() < 1e-12);
    }
}
