//! The one reconnect policy of the Kubernetes watches (pods, events, the
//! Lease): 250 ms doubling to 15 s, with up to 25% jitter so a fleet of
//! agents does not reconnect in step, back to the start after the server
//! sent something. kube-runtime's watchers go through [`backed_off`]; the
//! events watcher calls [`WatchBackoff::wait`].

use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::watcher::{self, Event};

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

impl WatchBackoff {
    /// Back to the first delay (the server answered).
    pub fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

/// A kube-runtime watcher stream that waits the next delay after each
/// error before it asks again, and starts over only on what the server
/// sent. Not kube's `StreamBackoff`: that resets on every `Ok` item, and
/// the watcher yields `Ok(Event::Init)` before every list attempt, so
/// against an API server failing every list its backoff never grew past
/// the first 250 ms (four lists a second from every node, forever).
pub fn backed_off<K, S>(stream: S) -> impl Stream<Item = S::Item> + Send
where
    K: Send,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send,
{
    let start = (Box::pin(stream), WatchBackoff::new(), None::<Duration>);
    futures::stream::unfold(start, |(mut stream, mut backoff, wait)| async move {
        if let Some(d) = wait {
            tokio::time::sleep(d).await;
        }
        let item = stream.next().await?;
        let wait = match &item {
            Err(_) => backoff.next(),
            Ok(Event::Init) => None,
            Ok(_) => {
                backoff.reset();
                None
            }
        };
        Some((item, (stream, backoff, wait)))
    })
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
