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
//! and decoded, so an overloaded agent spends its CPU on what it can take.
//!
//! Memory has a ceiling whatever the senders do: a body is at most
//! `max_body_bytes` (after decompression); before decoding, an
//! allocation-free scan ([`scan`]) bounds what decoding, converting and
//! encoding will allocate, and the request holds that plus its body in a
//! budget shared by both transports ([`MEMORY_BUDGET`]), with at most
//! [`MAX_SPANS_PER_REQUEST`] spans. Request permits
//! (`max_concurrent_requests`) are taken once a body is read, so a stalled
//! body holds none.

pub mod aggregate;
pub mod convert;
pub mod decode;
pub mod fast;
pub mod grpc;
pub mod http;
#[cfg(test)]
mod ingest_tests;
#[cfg(test)]
mod meter;
pub mod metrics;
pub mod pods;
pub mod scan;
pub mod wire;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tokio::sync::Semaphore;

pub use aggregate::{Aggregate, ServiceSummary, TraceMetrics};

use crate::config::Config;
use crate::enrich::Metadata;
use crate::sink::span_json::JsonSpans;
use crate::sink::wire::StoredSpan;
use crate::telemetry::{Outcome, Telemetry, Transport};

/// The span buffer is full: nothing of the request was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("span buffer full")]
pub struct SpanBufferFull;

/// Where accepted spans go (the delivery queue). All or nothing: either
/// every span is taken (and will be delivered or counted as dropped by
/// delivery's own rules), or none is and the error says so. Must not block.
pub trait SpanSink: Send + Sync + 'static {
    fn try_submit(&self, spans: Vec<StoredSpan>) -> Result<(), SpanBufferFull>;

    /// [`SpanSink::try_submit`] for spans already encoded as the API's JSON
    /// (the protobuf fast path, [`fast`]). A sink that stores encoded bytes
    /// (the delivery queue) takes them as they are; by default they are
    /// read back into [`StoredSpan`]s (test and bench sinks).
    fn try_submit_json(&self, spans: JsonSpans) -> Result<(), SpanBufferFull> {
        let read: Result<Vec<StoredSpan>, _> = spans.iter().map(serde_json::from_slice).collect();
        self.try_submit(read.map_err(|_| SpanBufferFull)?)
    }

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
    /// OTLP metric series held a service (`--otel-max-series-per-service`).
    pub max_series_per_service: usize,
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
            max_series_per_service: cfg.otel_max_series_per_service,
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
            max_series_per_service: metrics::DEFAULT_MAX_SERIES_PER_SERVICE,
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
    /// The per-interval OTLP metrics: add it to the cycle's collectors too.
    pub otel_metrics: metrics::OtelMetrics,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl OtlpHandles {
    /// Wait until both servers stopped (after the shutdown future
    /// resolved), at most `drain`: then they are dropped, whatever the
    /// peers do.
    pub async fn join(self, drain: Duration) {
        let aborts: Vec<_> = self.tasks.iter().map(|t| t.abort_handle()).collect();
        let all = futures::future::join_all(self.tasks);
        if tokio::time::timeout(drain, all).await.is_err() {
            tracing::info!("OTLP servers still draining after the drain time: closed");
            for a in aborts {
                a.abort();
            }
        }
    }
}

/// Spans one request may hold (the OpenTelemetry Collector's default batch
/// is 8192 spans, the SDKs' 512); more is a 413 / `RESOURCE_EXHAUSTED`.
pub const MAX_SPANS_PER_REQUEST: u64 = 8192;
/// Memory shared by the requests being read, decoded and converted at
/// once: their bodies plus [`scan::Shape::cost`]. A request that alone
/// needs more is refused as too large, one that must wait for others past
/// [`BUDGET_WAIT`] as overload (429 / `RESOURCE_EXHAUSTED` with a retry
/// delay).
pub const MEMORY_BUDGET: u64 = 24 << 20;
/// How long a request waits for the memory budget before it is refused.
pub const BUDGET_WAIT: Duration = Duration::from_secs(1);
/// Bodies larger than this (or compressed, or of more than
/// [`BLOCKING_SPANS`] spans) are decoded on a blocking thread, so the
/// runtime (and the health port) keeps answering. Smaller ones, the SDKs'
/// 512-span batches among them (about 1 ms of CPU), stay on the runtime
/// thread: handing each of them to a blocking thread and back twice was
/// the likely cause of issue 11's throughput loss (thread switches on a
/// busy core, buffers allocated on one thread freed on another); see
/// BENCHMARKS.md.
const BLOCKING_OVER: usize = 256 << 10;
/// Spans recorded in the aggregate per lock (a few microseconds).
const RECORD_RUN: usize = 64;
/// Requests of more spans than this are converted on a blocking thread.
const BLOCKING_SPANS: u64 = 2048;

/// Why a request was not taken; each transport maps it to its status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 400 / `INVALID_ARGUMENT`.
    #[error("{0}")]
    Malformed(String),
    /// 415 (an unknown content encoding).
    #[error("{0}")]
    Unsupported(String),
    /// 413 / `RESOURCE_EXHAUSTED` without a retry delay: it never fits.
    #[error("{0}")]
    TooLarge(String),
    /// 429 / `RESOURCE_EXHAUSTED` with a retry delay: other requests hold
    /// the memory budget.
    #[error("too many requests being decoded at once: retry later")]
    Busy,
    /// 503 / `RESOURCE_EXHAUSTED` with a retry delay: the span buffer is
    /// full.
    #[error("span buffer full: retry later")]
    Full,
    /// 503 / `UNAVAILABLE`.
    #[error("shutting down")]
    ShuttingDown,
}

impl Refusal {
    /// The outcome label of `cased_agent_otlp_requests_total`.
    pub fn outcome(&self) -> Outcome {
        match self {
            Refusal::Malformed(_) => Outcome::Malformed,
            Refusal::Unsupported(_) => Outcome::Unsupported,
            Refusal::TooLarge(_) => Outcome::TooLarge,
            Refusal::Busy | Refusal::Full | Refusal::ShuttingDown => Outcome::Refused,
        }
    }
}

/// A request taken: spans accepted, and those refused for invalid ids (an
/// OTLP `partial_success`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accepted {
    pub spans: usize,
    pub rejected: u64,
    pub message: String,
}

/// Bytes of the memory budget held by one request; given back on drop.
pub type Held = tokio::sync::OwnedSemaphorePermit;

/// What both transports share: budget, convert, submit, count.
pub struct Ingest {
    sink: Arc<dyn SpanSink>,
    aggregate: Arc<Mutex<Aggregate>>,
    telemetry: Arc<Telemetry>,
    cluster_id: String,
    /// Bounds the requests decoded at once (taken once the body is read).
    pub(crate) permits: Arc<Semaphore>,
    /// [`MEMORY_BUDGET`], one permit a byte.
    budget: Arc<Semaphore>,
    pub(crate) max_body_bytes: usize,
    pub(crate) retry_after: Duration,
    /// OTLP metric series ([`metrics`]).
    otel: metrics::Shared,
    /// This node's pods ([`pods`]); `None` in local mode, where nothing is
    /// looked up or counted.
    meta: Option<Arc<dyn Metadata>>,
}

impl Ingest {
    pub fn new(cfg: &OtlpConfig, sink: Arc<dyn SpanSink>, telemetry: Arc<Telemetry>) -> Self {
        Ingest {
            sink,
            aggregate: Arc::new(Mutex::new(Aggregate::new(cfg.max_services))),
            telemetry,
            cluster_id: cfg.cluster_id.clone(),
            permits: Arc::new(Semaphore::new(cfg.max_concurrent_requests.max(1))),
            budget: Arc::new(Semaphore::new(MEMORY_BUDGET as usize)),
            max_body_bytes: cfg.max_body_bytes,
            retry_after: cfg.retry_after,
            otel: Arc::new(Mutex::new(metrics::State::new(
                cfg.max_series_per_service,
                cfg.max_services,
            ))),
            meta: None,
        }
    }

    /// Enrich with this node's pods ([`pods`]); a source that knows no
    /// pods (local mode) is not kept, so enrichment costs nothing there.
    pub fn with_metadata(mut self, meta: Arc<dyn Metadata>) -> Self {
        self.meta = meta.knows_pods().then_some(meta);
        self
    }

    /// A resolver for one request from `peer`, when there are pods.
    pub(crate) fn resolver(&self, peer: Option<IpAddr>) -> Option<pods::Resolver<'_>> {
        self.meta.as_deref().map(|m| pods::Resolver::new(m, peer))
    }

    /// Count what a request's resolver found.
    pub(crate) fn count_enrichment(&self, r: Option<pods::Resolver<'_>>) {
        let Some(r) = r else { return };
        for (found, n) in pods::Found::ALL.iter().zip(r.counts) {
            if n > 0 {
                self.telemetry.otlp.enriched(found.telemetry(), n);
            }
        }
    }

    pub fn otel_metrics(&self) -> metrics::OtelMetrics {
        metrics::OtelMetrics::new(self.otel.clone(), self.telemetry.clone())
    }

    pub fn metrics(&self) -> TraceMetrics {
        TraceMetrics::new(self.aggregate.clone())
    }

    pub(crate) fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Nothing of the budget (a body's bytes are added as they arrive).
    pub(crate) fn hold_nothing(&self) -> Held {
        self.budget
            .clone()
            .try_acquire_many_owned(0)
            .expect("zero permits are always available")
    }

    /// Add `bytes` to what `held` holds, without waiting: `Busy` when the
    /// budget is taken by other requests.
    pub(crate) fn hold_more(&self, held: &mut Held, bytes: usize) -> Result<(), Refusal> {
        let n = u32::try_from(bytes).map_err(|_| Refusal::Busy)?;
        let more = self
            .budget
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| Refusal::Busy)?;
        held.merge(more);
        Ok(())
    }

    /// Refuse early (before reading or decoding) when the sink says a
    /// request of about `hint_bytes` cannot fit.
    pub(crate) fn refuse_early(&self, hint_bytes: u64) -> bool {
        !self.sink.has_room(hint_bytes)
    }

    /// Count a refusal (and say it once in a while).
    pub(crate) fn count_refusal(&self, transport: Transport, r: &Refusal) {
        match r {
            Refusal::Full => self.telemetry.otlp.span_buffer_full(transport),
            r => self.telemetry.otlp.request(transport, r.outcome()),
        }
    }

    /// Take one request whose body (`held` in the budget) is read: inflate
    /// it (`content_encoding`), bound what decoding it will cost, wait for
    /// that much of the budget, then decode, convert and submit every span
    /// or none, each resource enriched with its pod (`peer`: the sender's
    /// address). Large bodies are handled on a blocking thread.
    pub async fn take(
        self: &Arc<Self>,
        raw: bytes::Bytes,
        content_encoding: Option<String>,
        enc: decode::Encoding,
        mut held: Held,
        peer: Option<IpAddr>,
    ) -> Result<Accepted, Refusal> {
        let Ok(_permit) = self.permits.acquire().await else {
            return Err(Refusal::ShuttingDown);
        };
        let limit = self.max_body_bytes;
        let large = raw.len() > BLOCKING_OVER || content_encoding.is_some();
        let prepare = move || -> Result<(bytes::Bytes, scan::Shape), Refusal> {
            let body =
                decode::inflate(raw, content_encoding.as_deref(), limit).map_err(decode_refusal)?;
            let shape = match enc {
                decode::Encoding::Protobuf => scan::scan_protobuf(&body),
                decode::Encoding::Json => scan::scan_json(&body),
            }
            .map_err(|e| Refusal::Malformed(format!("invalid {enc:?} body: {e}")))?;
            Ok((body, shape))
        };
        let (body, shape) = blocking_if(large, prepare).await?;
        let cost = self.admit(&shape, body.len(), &mut held).await?;
        tracing::trace!(cost, spans = shape.spans, "OTLP request admitted");
        let me = self.clone();
        let large = large || body.len() > BLOCKING_OVER || shape.spans > BLOCKING_SPANS;
        blocking_if(large, move || {
            let r = me.export_body(&body, enc, peer, shape.spans);
            drop(held);
            r
        })
        .await
    }

    /// Check the request's counts against the limits and the span queue,
    /// then hold its cost in the budget (waiting at most [`BUDGET_WAIT`]).
    async fn admit(
        &self,
        shape: &scan::Shape,
        body_len: usize,
        held: &mut Held,
    ) -> Result<u64, Refusal> {
        if shape.spans > MAX_SPANS_PER_REQUEST {
            return Err(Refusal::TooLarge(format!(
                "{} spans in one request: the limit is {MAX_SPANS_PER_REQUEST}, send smaller batches",
                shape.spans
            )));
        }
        let cost = shape.cost(self.cluster_id.len());
        let total = cost.saturating_add(body_len as u64);
        if total > MEMORY_BUDGET {
            return Err(Refusal::TooLarge(format!(
                "the request would take {} MiB to decode: the limit is {} MiB, send smaller batches",
                total >> 20,
                MEMORY_BUDGET >> 20
            )));
        }
        // what the converted spans take in the queue at least
        let queued = shape.spans * 280 + shape.string_bytes;
        if shape.spans > 0 && self.refuse_early(queued) {
            return Err(Refusal::Full);
        }
        // the body is held already; hold the rest of the cost
        let need = total.saturating_sub(held.num_permits() as u64) as u32;
        let more = tokio::time::timeout(BUDGET_WAIT, self.budget.clone().acquire_many_owned(need))
            .await
            .map_err(|_| Refusal::Busy)?
            .map_err(|_| Refusal::ShuttingDown)?;
        held.merge(more);
        Ok(cost)
    }

    /// Decode, convert, submit and count one admitted body: protobuf by
    /// the fast path ([`fast`]) unless it leaves the body to prost.
    fn export_body(
        &self,
        body: &[u8],
        enc: decode::Encoding,
        peer: Option<IpAddr>,
        spans: u64,
    ) -> Result<Accepted, Refusal> {
        if enc == decode::Encoding::Protobuf {
            let mut resolver = self.resolver(peer);
            if let Ok(e) = fast::encode(body, &self.cluster_id, resolver.as_mut(), spans) {
                self.count_enrichment(resolver);
                return self.submit_json(e);
            }
            tracing::trace!("OTLP body left to prost");
        }
        let req = decode::decode(body, enc).map_err(decode_refusal)?;
        self.export_from(req, peer)
    }

    /// Take one decoded export request from an unknown peer.
    pub fn export(&self, req: ExportTraceServiceRequest) -> Result<Accepted, Refusal> {
        self.export_from(req, None)
    }

    /// Take one decoded export request from `peer`: every valid span or
    /// none (spans with invalid ids are left out and reported).
    pub fn export_from(
        &self,
        req: ExportTraceServiceRequest,
        peer: Option<IpAddr>,
    ) -> Result<Accepted, Refusal> {
        let mut resolver = self.resolver(peer);
        let c = convert::convert_with(req, &self.cluster_id, resolver.as_mut());
        self.count_enrichment(resolver);
        let counts = Counts {
            services: &c.services,
            pods: &c.pods,
            stats: &c.stats,
            rejected: c.rejected,
            reject_reason: &c.reject_reason,
        };
        let sink = &self.sink;
        self.submit(counts, c.spans.len(), || sink.try_submit(c.spans))
    }

    /// [`Ingest::export_from`] for a request the fast path encoded.
    fn submit_json(&self, e: fast::Encoded) -> Result<Accepted, Refusal> {
        let counts = Counts {
            services: &e.services,
            pods: &e.pods,
            stats: &e.stats,
            rejected: e.rejected,
            reject_reason: &e.reject_reason,
        };
        let sink = &self.sink;
        self.submit(counts, e.spans.len(), || sink.try_submit_json(e.spans))
    }

    /// Count the rejected spans, submit the `n` others (`submit`), and only
    /// once the sink took them count them in the aggregate.
    fn submit(
        &self,
        c: Counts<'_>,
        n: usize,
        submit: impl FnOnce() -> Result<(), SpanBufferFull>,
    ) -> Result<Accepted, Refusal> {
        let accepted = Accepted {
            spans: n,
            rejected: c.rejected,
            message: c.reject_reason.clone().unwrap_or_default(),
        };
        if c.rejected > 0 {
            self.telemetry.otlp.spans_refused.inc_by(c.rejected);
        }
        if n == 0 {
            return Ok(accepted);
        }
        if submit().is_err() {
            self.telemetry.otlp.spans_refused.inc_by(n as u64);
            return Err(Refusal::Full);
        }
        // a run of at most RECORD_RUN spans of one series per lock and
        // lookup: a large request never stalls the interval's drain
        for run in c
            .stats
            .chunk_by(|a, b| a.service == b.service)
            .flat_map(|r| r.chunks(RECORD_RUN))
        {
            let i = run[0].service as usize;
            if let Some(name) = c.services.get(i) {
                let pod = c.pods.get(i).and_then(Option::as_ref);
                self.aggregate
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record_spans(name, pod, run);
            }
        }
        self.telemetry.otlp.spans_received.inc_by(n as u64);
        Ok(accepted)
    }
}

/// What a converted or encoded request counts, whatever its spans' form.
struct Counts<'a> {
    services: &'a [String],
    pods: &'a [Option<Arc<crate::enrich::PodMeta>>],
    stats: &'a [convert::SpanStat],
    rejected: u64,
    reject_reason: &'a Option<String>,
}

fn decode_refusal(e: decode::DecodeError) -> Refusal {
    match e.status() {
        413 => Refusal::TooLarge(e.to_string()),
        415 => Refusal::Unsupported(e.to_string()),
        _ => Refusal::Malformed(e.to_string()),
    }
}

/// Run `f` on a blocking thread when `large`, else here.
async fn blocking_if<T: Send + 'static>(
    large: bool,
    f: impl FnOnce() -> Result<T, Refusal> + Send + 'static,
) -> Result<T, Refusal> {
    if !large {
        return f();
    }
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| Err(Refusal::ShuttingDown))
}

/// Bind both ports and serve until `shutdown` is cancelled, without pod
/// metadata.
pub async fn start(
    cfg: &OtlpConfig,
    sink: Arc<dyn SpanSink>,
    telemetry: Arc<Telemetry>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<OtlpHandles, StartError> {
    let meta: Arc<dyn Metadata> = Arc::new(crate::enrich::NoMetadata);
    start_with(cfg, sink, telemetry, meta, shutdown).await
}

/// Bind both ports and serve until `shutdown` is cancelled; spans and
/// metrics enriched from `meta` ([`pods`]).
pub async fn start_with(
    cfg: &OtlpConfig,
    sink: Arc<dyn SpanSink>,
    telemetry: Arc<Telemetry>,
    meta: Arc<dyn Metadata>,
    shutdown: tokio_util::sync::CancellationToken,
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
    let ingest = Arc::new(Ingest::new(cfg, sink, telemetry).with_metadata(meta));
    let metrics = ingest.metrics();
    let otel_metrics = ingest.otel_metrics();

    let http_task = {
        let ingest = ingest.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = http::serve(http_listener, ingest, stop).await {
                tracing::error!(error = %e, "OTLP/HTTP server failed");
            }
        })
    };
    let grpc_task = {
        let stop = shutdown;
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
        otel_metrics,
        tasks: vec![http_task, grpc_task],
    })
}

/// The delivery queue takes spans all or nothing (see
/// [`crate::delivery::Delivery::try_submit_spans`]).
impl SpanSink for crate::delivery::Delivery {
    fn try_submit(&self, spans: Vec<StoredSpan>) -> Result<(), SpanBufferFull> {
        self.try_submit_spans(spans).map_err(|_| SpanBufferFull)
    }

    fn try_submit_json(&self, spans: JsonSpans) -> Result<(), SpanBufferFull> {
        self.try_submit_span_json(&spans.slices())
            .map_err(|_| SpanBufferFull)
    }

    /// Encoded JSON is larger than the protobuf it came from, so a request
    /// whose body is larger than the room left cannot fit.
    fn has_room(&self, hint_bytes: u64) -> bool {
        self.span_room() >= hint_bytes.max(1)
    }
}
