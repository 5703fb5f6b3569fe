//! The one reconnect policy of the Kubernetes watches (pods, events, the
//! Lease): 250 ms doubling to 15 s, with up to 25% jitter so a fleet of
//! agents does not reconnect in step, back to the start after any success.
//! kube-runtime's watchers take it as a [`Backoff`]; the events watcher
//! calls [`WatchBackoff::wait`].

use std::time::Duration;

use kube::runtime::utils::Backoff;

#[derive(Debug, Clone)]
pub struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    pub const MIN: Duration = Duration::from_millis(250);
    pub const MAX: Duration = Duration::from_secs(15);

    pub fn new() -> Self {
        WatchBackoff { next: Self::MIN }
    }

    /// Sleep the next delay (after a failure).
    pub async fn wait(&mut self) {
        let d = Iterator::next(self).unwrap_or(Self::MAX);
        tokio::time::sleep(d).await;
    }
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (d * 2).min(Self::MAX);
        Some(d.mul_f64(1.0 - 0.25 * rand::random::<f64>()))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_a_cap_with_jitter_and_resets() {
        let mut b = WatchBackoff::new();
        let d: Vec<Duration> = b.by_ref().take(9).collect();
        assert!(d[0] <= Duration::from_millis(250) && d[0] >= Duration::from_millis(187));
        assert!(d[1] <= Duration::from_millis(500) && d[1] >= Duration::from_millis(375));
        assert!(d[8] <= Duration::from_secs(15) && d[8] >= Duration::from_millis(11250));
        b.reset();
        assert!(b.next().unwrap() <= Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_sleeps_the_next_delay() {
        let mut b = WatchBackoff::new();
        let t0 = tokio::time::Instant::now();
        b.wait().await; // ≤ 250 ms
        b.wait().await; // ≤ 500 ms
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(562) && took <= Duration::from_millis(750),
            "{took:?}"
        );
    }
}
