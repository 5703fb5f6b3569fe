//! The health port: `/healthz`, `/readyz` and `/metrics` (SPEC §6).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::telemetry::Telemetry;

/// What the probes look at: when a cycle last completed.
#[derive(Debug)]
pub struct Health {
    start: Instant,
    interval: Duration,
    /// Milliseconds since `start` of the last completed cycle (start counts
    /// as one, so a fresh agent is live while its first cycle runs).
    last_cycle_ms: AtomicU64,
    ready: AtomicBool,
}

impl Health {
    pub fn new(interval: Duration) -> Self {
        Health {
            start: Instant::now(),
            interval,
            last_cycle_ms: AtomicU64::new(0),
            ready: AtomicBool::new(false),
        }
    }

    /// Record a completed cycle.
    pub fn cycle_done(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_cycle_ms.store(ms, Ordering::Relaxed);
        self.ready.store(true, Ordering::Relaxed);
    }

    /// A cycle completed within the last three intervals.
    pub fn is_live(&self) -> bool {
        let now = self.start.elapsed().as_millis() as u64;
        let last = self.last_cycle_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) <= 3 * self.interval.as_millis() as u64
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    telemetry: Arc<Telemetry>,
}

pub fn router(health: Arc<Health>, telemetry: Arc<Telemetry>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AppState { health, telemetry })
}

async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    if s.health.is_live() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no collection cycle completed in the last three intervals\n",
        )
    }
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if s.health.is_ready() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "first collection cycle not completed yet\n",
        )
    }
}

/// OpenMetrics or the classic text, as `Accept` asks ([`crate::exposition`]).
async fn metrics(State(s): State<AppState>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = crate::exposition::negotiate(accept);
    (
        [
            (header::CONTENT_TYPE, format.content_type()),
            (header::VARY, "Accept"),
        ],
        crate::exposition::render(s.telemetry.encode(), format),
    )
}

/// Bind the health port (all interfaces: the kubelet probes the pod IP).
pub async fn bind(port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    tokio::net::TcpListener::bind(addr).await
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    telemetry: Arc<Telemetry>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(health, telemetry))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_window() {
        let h = Health::new(Duration::from_millis(10));
        assert!(h.is_live());
        assert!(!h.is_ready());
        std::thread::sleep(Duration::from_millis(40));
        assert!(!h.is_live());
        h.cycle_done();
        assert!(h.is_live());
        assert!(h.is_ready());
    }
}
