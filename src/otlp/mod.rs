//! The OTLP trace receiver (SPEC §4, §6): OTLP/HTTP on `--otel-port`
//! ([`http`]), OTLP/gRPC on `--otel-grpc-port` ([`grpc`]), both feeding one
//! [`Ingest`]: convert the spans ([`convert`]), hand them to the span sink
//! (the delivery queue), and only once the sink took them, count them in the
//! per-service aggregate ([`aggregate`]) that [`TraceMetrics`] drains every
//! interval.
//!
//! Back-pressure: when the sink's span buffer is full it refuses the whole
//! request ([`SpanBufferFull`]) and the sender is told to retry (HTTP 503 with
//! `Retry-After`, gRPC `RESOURCE_EXHAUSTED` with `RetryInfo`). A span is
//! never accepted and then dropped here. When the sink already says it has
//! no room ([`SpanSink::has_room`]) a request is refused before it is read
//! and decoded, so an overloaded agent spends its CPU on what it can take. Request bodies are bounded
//! (`max_body_bytes` after decompression) and so is the number decoded at
//! once (`max_concurrent_requests`, shared by both transports), so memory
//! has a ceiling whatever the senders do.

pub mod aggregate;
pub mod convert;
pub mod decode;
pub mod grpc;
pub mod http;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tokio::sync::Semaphore;

pub use aggregate::{Aggregate, ServiceSummary, TraceMetrics};

use crate::config::Config;
use crate::sink::wire::StoredSpan;
use crate::telemetry::Telemetry;

/// The span buffer is full: nothing of the request was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("span buffer full")]
pub struct SpanBufferFull;

/// Where accepted spans go (the delivery queue). All or nothing: either
/// every span is taken (and will be delivered or counted as dropped by
/// delivery's own rules), or none is and the error says so. Must not block.
pub trait SpanSink: Send + Sync + 'static {
    fn try_submit(&self, spans: Vec<StoredSpan>) -> Result<(), SpanBufferFull>;

    /// Whether a request of about `hint_bytes` (its body as received) may
    /// fit: `false` lets the receiver refuse before decoding anything, which
    /// keeps an overloaded agent's CPU for the requests it can take. Only a
    /// hint: `try_submit` decides.
    fn has_room(&self, _hint_bytes: u64) -> bool {
        true
    }
}

/// Receiver settings.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// OTLP/HTTP listen address (`0.0.0.0:--otel-port`).
    pub http_addr: SocketAddr,
    /// OTLP/gRPC listen address (`0.0.0.0:--otel-grpc-port`).
    pub grpc_addr: SocketAddr,
    /// Limit on one request after decompression (SPEC §6: 10 MiB).
    pub max_body_bytes: usize,
    /// Distinct services per interval before the overflow bucket.
    pub max_services: usize,
    /// Requests read and decoded at once, both transports together;
    /// further requests wait.
    pub max_concurrent_requests: usize,
    /// What a refusal tells the sender to wait.
    pub retry_after: Duration,
    /// Stamped on every span.
    pub cluster_id: String,
}

impl OtlpConfig {
    /// The receiver as the command line configures it.
    pub fn from_config(cfg: &Config) -> Self {
        OtlpConfig {
            http_addr: SocketAddr::from(([0, 0, 0, 0], cfg.otel_port)),
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], cfg.otel_grpc_port)),
            cluster_id: cfg.cluster_id.clone(),
            ..OtlpConfig::local(0, 0, &cfg.cluster_id)
        }
    }

    /// Defaults on 127.0.0.1 (port 0 picks a free port): for tests and
    /// benchmarks.
    pub fn local(http_port: u16, grpc_port: u16, cluster_id: &str) -> Self {
        OtlpConfig {
            http_addr: SocketAddr::from(([127, 0, 0, 1], http_port)),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], grpc_port)),
            max_body_bytes: decode::DEFAULT_MAX_BODY,
            max_services: aggregate::DEFAULT_MAX_SERVICES,
            max_concurrent_requests: 4,
            retry_after: Duration::from_secs(1),
            cluster_id: cluster_id.to_string(),
        }
    }
}

/// Why the receiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen for OTLP/HTTP on {addr} (--otel-port): {source}")]
    BindHttp {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen for OTLP/gRPC on {addr} (--otel-grpc-port): {source}")]
    BindGrpc {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running receiver.
pub struct OtlpHandles {
    /// Where OTLP/HTTP listens (the real port when 0 was asked for).
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// The per-interval trace metrics: add it to the cycle's collectors.
    pub metrics: TraceMetrics,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl OtlpHandles {
    /// Wait until both servers stopped (after the shutdown future resolved
    /// and in-flight requests finished).
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// What both transports share: convert, submit, count.
pub struct Ingest {
    sink: Arc<dyn SpanSink>,
    aggregate: Arc<Mutex<Aggregate>>,
    telemetry: Arc<Telemetry>,
    cluster_id: String,
    /// Bounds the requests decoded at once.
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) max_body_bytes: usize,
    pub(crate) retry_after: Duration,
}

impl Ingest {
    pub fn new(cfg: &OtlpConfig, sink: Arc<dyn SpanSink>, telemetry: Arc<Telemetry>) -> Self {
        Ingest {
            sink,
            aggregate: Arc::new(Mutex::new(Aggregate::new(cfg.max_services))),
            telemetry,
            cluster_id: cfg.cluster_id.clone(),
            permits: Arc::new(Semaphore::new(cfg.max_concurrent_requests.max(1))),
            max_body_bytes: cfg.max_body_bytes,
            retry_after: cfg.retry_after,
        }
    }

    pub fn metrics(&self) -> TraceMetrics {
        TraceMetrics::new(self.aggregate.clone())
    }

    pub(crate) fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Refuse early (before reading or decoding) when the sink says a
    /// request of about `hint_bytes` cannot fit. Counts the refusal.
    pub(crate) fn refuse_early(&self, transport: &str, hint_bytes: u64) -> bool {
        if self.sink.has_room(hint_bytes) {
            return false;
        }
        self.telemetry.otlp_request(transport, "refused");
        crate::warn_limited!(
            "otlp:full",
            "span buffer full: refusing spans, the sender will retry"
        );
        true
    }

    /// Take one export request: every span or none. Returns the number of
    /// spans accepted.
    pub fn export(&self, req: ExportTraceServiceRequest) -> Result<usize, SpanBufferFull> {
        let c = convert::convert(req, &self.cluster_id);
        let n = c.spans.len();
        if n == 0 {
            return Ok(0);
        }
        if let Err(e) = self.sink.try_submit(c.spans) {
            self.telemetry.spans_refused.inc_by(n as u64);
            crate::warn_limited!(
                "otlp:full",
                spans = n,
                "span buffer full: refusing spans, the sender will retry"
            );
            return Err(e);
        }
        self.aggregate
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(&c.services, &c.stats);
        self.telemetry.spans_received.inc_by(n as u64);
        Ok(n)
    }
}

/// Bind both ports and serve until `shutdown` resolves.
pub async fn start(
    cfg: &OtlpConfig,
    sink: Arc<dyn SpanSink>,
    telemetry: Arc<Telemetry>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<OtlpHandles, StartError> {
    let http_listener = tokio::net::TcpListener::bind(cfg.http_addr)
        .await
        .map_err(|source| StartError::BindHttp {
            addr: cfg.http_addr,
            source,
        })?;
    let grpc_listener = tokio::net::TcpListener::bind(cfg.grpc_addr)
        .await
        .map_err(|source| StartError::BindGrpc {
            addr: cfg.grpc_addr,
            source,
        })?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|source| StartError::BindHttp {
            addr: cfg.http_addr,
            source,
        })?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(|source| StartError::BindGrpc {
            addr: cfg.grpc_addr,
            source,
        })?;
    let ingest = Arc::new(Ingest::new(cfg, sink, telemetry));
    let metrics = ingest.metrics();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopper = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let http_task = {
        let ingest = ingest.clone();
        let stop = stopped(stop_rx.clone());
        tokio::spawn(async move {
            if let Err(e) = http::serve(http_listener, ingest, stop).await {
                tracing::error!(error = %e, "OTLP/HTTP server failed");
            }
        })
    };
    let grpc_task = {
        let stop = stopped(stop_rx);
        tokio::spawn(async move {
            if let Err(e) = grpc::serve(grpc_listener, ingest, stop).await {
                tracing::error!(error = %e, "OTLP/gRPC server failed");
            }
        })
    };
    tracing::info!(http = %http_addr, grpc = %grpc_addr, "OTLP receiver listening");
    Ok(OtlpHandles {
        http_addr,
        grpc_addr,
        metrics,
        tasks: vec![http_task, grpc_task, stopper],
    })
}

/// The delivery queue takes spans all or nothing (see
/// [`crate::delivery::Delivery::try_submit_spans`]).
impl SpanSink for crate::delivery::Delivery {
    fn try_submit(&self, spans: Vec<StoredSpan>) -> Result<(), SpanBufferFull> {
        self.try_submit_spans(spans).map_err(|_| SpanBufferFull)
    }

    /// Encoded JSON is larger than the protobuf it came from, so a request
    /// whose body is larger than the room left cannot fit.
    fn has_room(&self, hint_bytes: u64) -> bool {
        self.span_room() >= hint_bytes.max(1)
    }
}
