//! Percentiles of a stream of non-negative values (durations), from a
//! mergeable sketch with a fixed relative error and bounded memory.
//!
//! [`Sketch`] wraps a DDSketch (`sketches-ddsketch`): values fall into
//! logarithmic buckets `γ^k` with `γ = (1+α)/(1−α)`, so any quantile it
//! returns is within [`RELATIVE_ERROR`] (α = 1%) of the true value of that
//! rank. The number of buckets is capped at [`MAX_BINS`] (when a stream spans
//! more than that, the lowest buckets are collapsed, which only costs accuracy
//! at the very bottom): with α = 1% that covers 1 ns to over a year in ms, so
//! the cap is never reached by durations, and a sketch holds at most
//! `MAX_BINS × 8` bytes (16 KiB) of buckets whatever it is fed.
//!
//! Rank convention: `quantile(q)` estimates the value of rank
//! `⌊q·(n−1)⌋` (0-based) of the sorted values; `q = 0` and `q = 1` are the
//! exact minimum and maximum. Results are clamped to `[min, max]`.

use sketches_ddsketch::{Config, DDSketch};

/// Relative error of every quantile: `|estimate − true| ≤ α·true`.
pub const RELATIVE_ERROR: f64 = 0.01;
/// Cap on the number of buckets (memory bound).
pub const MAX_BINS: u32 = 2048;
/// Values at or below this count as zero (1 ns when values are in ms).
pub const MIN_VALUE: f64 = 1e-6;

/// A percentile sketch. Cheap to create empty (no buckets until the first
/// value).
#[derive(Clone)]
pub struct Sketch {
    inner: DDSketch,
}

impl std::fmt::Debug for Sketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sketch")
            .field("count", &self.count())
            .finish()
    }
}

impl Default for Sketch {
    fn default() -> Self {
        Self::new()
    }
}

impl Sketch {
    pub fn new() -> Self {
        Sketch {
            inner: DDSketch::new(Config::new(RELATIVE_ERROR, MAX_BINS, MIN_VALUE)),
        }
    }

    /// Record one value. Negative values count as zero; NaN is ignored.
    pub fn add(&mut self, v: f64) {
        if v.is_nan() {
            return;
        }
        self.inner.add(v.max(0.0));
    }

    /// Fold `other` into `self` (both made by [`Sketch::new`], so they always
    /// share a configuration).
    pub fn merge(&mut self, other: &Sketch) {
        // same Config on both sides: merge cannot fail
        let _ = self.inner.merge(&other.inner);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.inner.count() as u64
    }

    /// Buckets in use (each 8 bytes); never more than [`MAX_BINS`] (+ one
    /// growth chunk of 128).
    pub fn buckets(&self) -> usize {
        self.inner.length()
    }

    /// The `q`-quantile (`0 ≤ q ≤ 1`), `None` when empty or `q` is out of
    /// range.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let v = self.inner.quantile(q).ok().flatten()?;
        let (lo, hi) = (self.inner.min()?, self.inner.max()?);
        Some(v.clamp(lo, hi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact value of the rank the sketch estimates.
    fn exact(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() as f64 - 1.0)) as usize]
    }

    fn check(values: &[f64]) {
        let mut s = Sketch::new();
        for &v in values {
            s.add(v);
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(s.count(), values.len() as u64);
        for q in [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let want = exact(&sorted, q);
            let got = s.quantile(q).unwrap();
            assert!(
                (got - want).abs() <= RELATIVE_ERROR * want + 1e-12,
                "q={q}: got {got}, true {want}"
            );
        }
    }

    /// Deterministic pseudo-random numbers in [0, 1) (xorshift).
    fn uniform(n: usize, mut seed: u64) -> Vec<f64> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 11) as f64 / (1u64 << 53) as f64
            })
            .collect()
    }

    #[test]
    fn error_bound_uniform() {
        let v: Vec<f64> = uniform(20_000, 7).iter().map(|u| 1.0 + u * 999.0).collect();
        check(&v);
    }

    #[test]
    fn error_bound_heavy_tail_over_twelve_decades() {
        // log-uniform from 1 ns to 1000 s (in ms): the shape of latencies
        let v: Vec<f64> = uniform(50_000, 11)
            .iter()
            .map(|u| 10f64.powf(-6.0 + 12.0 * u))
            .collect();
        check(&v);
    }

    #[test]
    fn error_bound_small_sets_and_duplicates() {
        check(&[5.0]);
        check(&[3.0, 1.0]);
        check(&[0.25, 0.25, 0.25, 100.0]);
        check(&(1..=100).map(|i| i as f64).collect::<Vec<_>>());
        check(&[0.0, 0.0, 2.0, 4.0]);
    }

    #[test]
    fn merge_equals_one_sketch_of_everything() {
        let v = uniform(10_000, 3);
        let (a, b) = v.split_at(3_000);
        let mut sa = Sketch::new();
        let mut sb = Sketch::new();
        let mut all = Sketch::new();
        a.iter().for_each(|&x| sa.add(x * 50.0));
        b.iter().for_each(|&x| sb.add(x * 50.0));
        v.iter().for_each(|&x| all.add(x * 50.0));
        sa.merge(&sb);
        assert_eq!(sa.count(), 10_000);
        for q in [0.5, 0.95, 0.99] {
            assert_eq!(sa.quantile(q), all.quantile(q));
        }
    }

    #[test]
    fn memory_is_bounded_whatever_the_spread() {
        let mut s = Sketch::new();
        // 1e-5 .. 1e300: far more decades than MAX_BINS buckets cover
        for i in 0..60_000 {
            s.add(10f64.powf(-5.0 + (i % 6000) as f64 * 0.05));
        }
        assert!(s.buckets() <= MAX_BINS as usize + 128, "{}", s.buckets());
        assert!(s.buckets() >= MAX_BINS as usize - 128, "{}", s.buckets());
        // the top of the distribution stays accurate after collapsing
        let top = s.quantile(0.999).unwrap();
        let want = 10f64.powf(-5.0 + 5993.0 * 0.05);
        assert!(top >= want * 0.9 && top <= want * 1.2, "{top} vs {want}");
    }

    #[test]
    fn empty_negative_and_nan() {
        let mut s = Sketch::new();
        assert_eq!(s.quantile(0.5), None);
        s.add(f64::NAN);
        assert_eq!(s.count(), 0);
        s.add(-3.0);
        assert_eq!(s.quantile(0.5), Some(0.0));
        assert_eq!(s.quantile(1.5), None);
    }
}
