//! Exponential backoff with full jitter, validated once.
//!
//! The delay before retry `n` (0-based) is uniform in
//! `[0, min(cap, base · 2ⁿ)]`, computed in nanoseconds with saturating
//! arithmetic: no overflow for any `n`, no division or modulo by a
//! sub-millisecond value (a zero-width range just yields zero).

use std::time::Duration;

use rand::Rng;

/// Why a backoff policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid backoff: {0}")]
pub struct InvalidBackoff(pub &'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    retry_after_cap: Duration,
}

impl Default for Backoff {
    /// 500 ms base, 30 s cap, `Retry-After` honoured up to 60 s.
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            retry_after_cap: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// `base` > 0, `cap` ≥ `base`, `retry_after_cap` > 0; all under a day.
    pub fn try_new(
        base: Duration,
        cap: Duration,
        retry_after_cap: Duration,
    ) -> Result<Backoff, InvalidBackoff> {
        let day = Duration::from_secs(86_400);
        if base.is_zero() {
            return Err(InvalidBackoff("base must be positive"));
        }
        if cap < base {
            return Err(InvalidBackoff("cap must be at least base"));
        }
        if retry_after_cap.is_zero() {
            return Err(InvalidBackoff("retry_after_cap must be positive"));
        }
        if cap > day || retry_after_cap > day {
            return Err(InvalidBackoff("caps must be under a day"));
        }
        Ok(Backoff {
            base,
            cap,
            retry_after_cap,
        })
    }

    pub fn base(&self) -> Duration {
        self.base
    }
    pub fn cap(&self) -> Duration {
        self.cap
    }
    pub fn retry_after_cap(&self) -> Duration {
        self.retry_after_cap
    }

    /// Upper bound of the delay before retry `n`: `min(cap, base · 2ⁿ)`.
    pub fn ceiling(&self, n: u32) -> Duration {
        let base = self.base.as_nanos() as u64; // < a day: fits
        let cap = self.cap.as_nanos() as u64;
        let grown = base.saturating_mul(1u64 << n.min(63));
        Duration::from_nanos(grown.min(cap))
    }

    /// The jittered delay before retry `n`.
    pub fn delay<R: Rng + ?Sized>(&self, n: u32, rng: &mut R) -> Duration {
        let hi = self.ceiling(n).as_nanos() as u64;
        Duration::from_nanos(rng.random_range(0..=hi))
    }

    /// The delay to wait when the server said `Retry-After: d`.
    pub fn honour_retry_after(&self, d: Duration) -> Duration {
        d.min(self.retry_after_cap)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn refuses_bad_policies() {
        let s = Duration::from_secs;
        assert!(Backoff::try_new(Duration::ZERO, s(1), s(1)).is_err());
        assert!(Backoff::try_new(s(2), s(1), s(1)).is_err());
        assert!(Backoff::try_new(s(1), s(2), Duration::ZERO).is_err());
        assert!(Backoff::try_new(s(1), s(100_000), s(1)).is_err());
        assert!(Backoff::try_new(Duration::from_nanos(1), Duration::from_nanos(1), s(1)).is_ok());
    }

    #[test]
    fn defaults_grow_then_cap() {
        let b = Backoff::default();
        assert_eq!(b.ceiling(0), Duration::from_millis(500));
        assert_eq!(b.ceiling(1), Duration::from_secs(1));
        assert_eq!(b.ceiling(5), Duration::from_secs(16));
        assert_eq!(b.ceiling(6), Duration::from_secs(30));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(30));
        assert_eq!(
            b.honour_retry_after(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        assert_eq!(
            b.honour_retry_after(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
    }

    /// Property: for random valid policies (nanoseconds to hours) and any
    /// retry number, the delay never panics, stays in [0, ceiling], the
    /// ceiling is monotone in n, ≤ cap, and = base·2ⁿ while that is below cap.
    #[test]
    fn property_delay_bounds() {
        let mut rng = StdRng::seed_from_u64(0x5eed);
        for _ in 0..20_000 {
            let base_ns = match rng.random_range(0..3) {
                0 => rng.random_range(1..1_000u64),
                1 => rng.random_range(1..1_000_000_000u64),
                _ => rng.random_range(1..3_600_000_000_000u64),
            };
            let cap_ns = rng.random_range(base_ns..=86_400_000_000_000u64);
            let b = Backoff::try_new(
                Duration::from_nanos(base_ns),
                Duration::from_nanos(cap_ns),
                Duration::from_secs(1),
            )
            .unwrap();
            let n = match rng.random_range(0..2) {
                0 => rng.random_range(0..80u32),
                _ => rng.random(),
            };
            let c = b.ceiling(n);
            assert!(c <= b.cap());
            assert!(c >= b.base());
            assert!(b.ceiling(n.saturating_add(1)) >= c);
            if n < 63 {
                let exact = (base_ns as u128) << n;
                assert_eq!(
                    c.as_nanos(),
                    exact.min(cap_ns as u128),
                    "{base_ns} {cap_ns} {n}"
                );
            }
            let d = b.delay(n, &mut rng);
            assert!(d <= c, "{d:?} > {c:?}");
        }
    }

    /// The jitter is spread: over many draws the mean is about half the
    /// ceiling and both ends of the range are reached.
    #[test]
    fn jitter_is_spread() {
        let mut rng = StdRng::seed_from_u64(7);
        let b = Backoff::default();
        let n = 10_000;
        let draws: Vec<f64> = (0..n).map(|_| b.delay(2, &mut rng).as_secs_f64()).collect();
        let mean = draws.iter().sum::<f64>() / n as f64;
        assert!((mean - 1.0).abs() < 0.05, "mean {mean}");
        assert!(draws.iter().any(|&d| d < 0.1));
        assert!(draws.iter().any(|&d| d > 1.9));
    }
}
