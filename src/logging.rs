//! Log set-up, and a limiter so a failure repeated every cycle for every
//! container logs once a minute, not thousands of times.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::LogFormat;

/// Install the global subscriber: stderr, text or JSON, `RUST_LOG` honoured.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // kube's client logs an ERROR per failed request (several a second
        // while the API server is away); the watchers' own warnings are
        // rate-limited and say the same
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,kube_client::client::builder=off")
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Lets one message per key through per period; counts what it held back.
#[derive(Debug)]
pub struct RateLimiter {
    period: Duration,
    seen: Mutex<HashMap<String, (Instant, u64)>>,
}

impl RateLimiter {
    pub fn new(period: Duration) -> Self {
        RateLimiter {
            period,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(suppressed)` when a line for `key` may be logged now, with the
    /// number of lines held back since the last one.
    pub fn check(&self, key: &str) -> Option<u64> {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        // bound the map: keys are per failure kind, but be safe
        if seen.len() > 4096 {
            seen.clear();
        }
        match seen.get_mut(key) {
            Some((last, held)) if now.duration_since(*last) < self.period => {
                *held += 1;
                None
            }
            Some((last, held)) => {
                let n = *held;
                *last = now;
                *held = 0;
                Some(n)
            }
            None => {
                seen.insert(key.to_string(), (now, 0));
                Some(0)
            }
        }
    }
}

/// The process-wide limiter for warnings (one line per key per minute).
pub fn limiter() -> &'static RateLimiter {
    static LIMITER: std::sync::OnceLock<RateLimiter> = std::sync::OnceLock::new();
    LIMITER.get_or_init(|| RateLimiter::new(Duration::from_secs(60)))
}

/// `warn!` at most once a minute per key.
#[macro_export]
macro_rules! warn_limited {
    ($key:expr, $($arg:tt)+) => {
        if let Some(held) = $crate::logging::limiter().check(::std::convert::AsRef::<str>::as_ref(&$key)) {
            if held > 0 {
                tracing::warn!(suppressed = held, $($arg)+);
            } else {
                tracing::warn!($($arg)+);
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key() {
        let l = RateLimiter::new(Duration::from_secs(3600));
        assert_eq!(l.check("a"), Some(0));
        assert_eq!(l.check("a"), None);
        assert_eq!(l.check("a"), None);
        assert_eq!(l.check("b"), Some(0));
    }
}
