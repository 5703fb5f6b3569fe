//! The health port: `/healthz`, `/readyz` and `/metrics` (SPEC §6).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

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

/// Limits of one listener (README, "Limits").
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; further ones wait in the kernel's
    /// backlog until one closes.
    pub max_connections: usize,
    /// A request's headers (and an idle connection's next request) must
    /// arrive within this, or the connection is closed.
    pub header_read_timeout: Duration,
    /// On shutdown, in-flight requests get this long, then connections are
    /// dropped whatever the peers do.
    pub drain: Duration,
}

/// The health port's limits: the kubelet and a scraper need few
/// connections.
pub const HEALTH_LIMITS: Limits = Limits {
    max_connections: 64,
    header_read_timeout: Duration::from_secs(5),
    drain: Duration::from_secs(1),
};

/// hyper's read buffer per connection (its floor is 8 KiB): bounds what a
/// half-sent header can make the agent hold.
const MAX_BUF: usize = 64 << 10;

/// Serve until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_router(listener, router(health, telemetry), HEALTH_LIMITS, shutdown).await
}

/// Serve `app` over HTTP/1.1 with `limits` until `shutdown` is cancelled
/// (open connections are told at the same moment), then drain for at most
/// `limits.drain`.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            s = slots.clone().acquire_owned() => s,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                conns.spawn(serve_conn(
                    stream,
                    peer,
                    app.clone(),
                    limits,
                    slot,
                    shutdown.clone(),
                ));
            }
            Err(e) => {
                // out of fds and the like: wait rather than spin
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let drained = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.drain, drained).await.is_err() {
        tracing::info!(
            connections = conns.len(),
            "closing connections still open after the drain time"
        );
        conns.abort_all();
    }
    Ok(())
}

async fn serve_conn(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    app: Router,
    limits: Limits,
    _slot: tokio::sync::OwnedSemaphorePermit,
    stop: CancellationToken,
) {
    let io = hyper_util::rt::TokioIo::new(stream);
    // handlers see the connection's peer as axum's `ConnectInfo` (what
    // `into_make_service_with_connect_info` would insert)
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        tower::Service::call(&mut app.clone(), req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_BUF);
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
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
