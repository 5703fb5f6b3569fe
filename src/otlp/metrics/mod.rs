//! The OTLP metrics receiver: `POST /v1/metrics` ([`http`]) and gRPC
//! `MetricsService/Export` ([`grpc`]) on the trace receiver's ports, with
//! its limits: the body limit, the allocation-free cost bound before
//! decoding ([`scan`]) held in the shared memory budget, at most
//! [`MAX_POINTS_PER_REQUEST`] data points, the shared request permits.
//!
//! Data points are checked and flattened ([`convert`]), then added to the
//! series state ([`state`]) that [`OtelMetrics`] drains every interval into
//! Cased metrics: the cycle after a point arrives carries it. A request is
//! never refused for lack of room: series over the caps are counted, not
//! kept.
//!
//! Logs are not accepted (the Cased API takes none): [`LOGS_ANSWER`] says
//! so on `/v1/logs` (404) and gRPC `LogsService` (`UNIMPLEMENTED`).

pub mod convert;
pub mod grpc;
pub mod http;
pub mod quantile;
pub mod scan;
pub mod state;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;

use super::decode::{self, Encoding};
use super::{BUDGET_WAIT, Held, Ingest, MEMORY_BUDGET, Refusal, blocking_if, decode_refusal};
use crate::collect::{CollectError, Collector};
use crate::model::Sample;
use crate::telemetry::{Outcome, Telemetry, Transport};

pub use state::{DEFAULT_MAX_SERIES_PER_SERVICE, State};

/// Data points one request may hold (an SDK exports every series of its
/// process in one request; the Collector batches 8,192 items); more is a
/// 413 / `RESOURCE_EXHAUSTED`.
pub const MAX_POINTS_PER_REQUEST: u64 = 65_536;
/// Bodies over this, or requests of more points, are handled on a blocking
/// thread.
const BLOCKING_OVER: usize = 64 << 10;

/// What `/v1/logs` and `LogsService/Export` answer.
pub const LOGS_ANSWER: &str = "this agent does not accept OTLP logs (the Cased API takes none): it accepts traces (POST /v1/traces, TraceService/Export) and metrics (POST /v1/metrics, MetricsService/Export); send logs elsewhere or disable the SDK's log exporter";

/// A metrics request taken: data points accepted, and those left out (an
/// OTLP `partial_success`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Taken {
    pub points: u64,
    pub rejected: u64,
    pub message: String,
}

impl Taken {
    pub fn response(&self) -> ExportMetricsServiceResponse {
        ExportMetricsServiceResponse {
            partial_success: (self.rejected > 0).then(|| ExportMetricsPartialSuccess {
                rejected_data_points: self.rejected as i64,
                error_message: self.message.clone(),
            }),
        }
    }
}

/// Why a (decompressed) body is not a metrics export: a 400.
#[derive(Debug, thiserror::Error)]
pub enum MetricsDecodeError {
    #[error("invalid protobuf ExportMetricsServiceRequest: {0}")]
    Protobuf(#[source] prost::DecodeError),
    #[error("invalid OTLP/JSON ExportMetricsServiceRequest: {0}")]
    Json(#[source] serde_json::Error),
    #[error("not an OTLP metrics export: a JSON object without resourceMetrics (keys: {0})")]
    NotMetricsExport(String),
}

/// Decode a (decompressed) metrics body. A JSON object with keys but no
/// `resourceMetrics` is not a metrics export (400), as for traces.
pub fn decode(
    body: &[u8],
    enc: Encoding,
) -> Result<ExportMetricsServiceRequest, MetricsDecodeError> {
    match enc {
        Encoding::Protobuf => {
            ExportMetricsServiceRequest::decode(body).map_err(MetricsDecodeError::Protobuf)
        }
        Encoding::Json => {
            let req: ExportMetricsServiceRequest =
                serde_json::from_slice(body).map_err(MetricsDecodeError::Json)?;
            if req.resource_metrics.is_empty() {
                // only now, so the common case parses once
                let obj: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(body).map_err(MetricsDecodeError::Json)?;
                if !obj.is_empty() && !obj.contains_key("resourceMetrics") {
                    let keys: Vec<&str> = obj.keys().map(String::as_str).take(5).collect();
                    return Err(MetricsDecodeError::NotMetricsExport(keys.join(", ")));
                }
            }
            Ok(req)
        }
    }
}

impl Ingest {
    /// Take one metrics request whose body (`held` in the budget) is read:
    /// inflate, bound its cost, hold that in the budget, decode, convert,
    /// add to the series state.
    pub async fn take_metrics(
        self: &Arc<Self>,
        raw: bytes::Bytes,
        content_encoding: Option<String>,
        enc: Encoding,
        mut held: Held,
        peer: Option<std::net::IpAddr>,
    ) -> Result<Taken, Refusal> {
        let Ok(_permit) = self.permits.acquire().await else {
            return Err(Refusal::ShuttingDown);
        };
        let limit = self.max_body_bytes;
        let large = raw.len() > BLOCKING_OVER || content_encoding.is_some();
        let prepare = move || -> Result<(bytes::Bytes, scan::Shape), Refusal> {
            let body =
                decode::inflate(raw, content_encoding.as_deref(), limit).map_err(decode_refusal)?;
            let shape = match enc {
                Encoding::Protobuf => scan::scan_protobuf(&body),
                Encoding::Json => scan::scan_json(&body),
            }
            .map_err(|e| Refusal::Malformed(format!("invalid {enc:?} metrics body: {e}")))?;
            Ok((body, shape))
        };
        let (body, shape) = blocking_if(large, prepare).await?;
        self.admit_metrics(&shape, body.len(), &mut held).await?;
        let me = self.clone();
        let large = large || body.len() > BLOCKING_OVER || shape.points > 1024;
        blocking_if(large, move || {
            let req = decode(&body, enc).map_err(|e| Refusal::Malformed(e.to_string()))?;
            drop(body);
            let r = me.export_metrics_from(req, peer);
            drop(held);
            Ok(r)
        })
        .await
    }

    /// The point count against its limit, the cost held in the budget
    /// (waiting at most [`BUDGET_WAIT`]).
    async fn admit_metrics(
        &self,
        shape: &scan::Shape,
        body_len: usize,
        held: &mut Held,
    ) -> Result<(), Refusal> {
        if shape.points > MAX_POINTS_PER_REQUEST {
            return Err(Refusal::TooLarge(format!(
                "{} data points in one request: the limit is {MAX_POINTS_PER_REQUEST}, send smaller batches",
                shape.points
            )));
        }
        let total = shape.cost().saturating_add(body_len as u64);
        if total > MEMORY_BUDGET {
            return Err(Refusal::TooLarge(format!(
                "the request would take {} MiB to decode: the limit is {} MiB, send smaller batches",
                total >> 20,
                MEMORY_BUDGET >> 20
            )));
        }
        let need = total.saturating_sub(held.num_permits() as u64) as u32;
        let more = tokio::time::timeout(BUDGET_WAIT, self.budget.clone().acquire_many_owned(need))
            .await
            .map_err(|_| Refusal::Busy)?
            .map_err(|_| Refusal::ShuttingDown)?;
        held.merge(more);
        Ok(())
    }

    /// Convert a decoded request from an unknown peer and add it to the
    /// series state.
    pub fn export_metrics(&self, req: ExportMetricsServiceRequest) -> Taken {
        self.export_metrics_from(req, None)
    }

    /// Convert a decoded request from `peer` (its resources enriched with
    /// their pods) and add it to the series state.
    pub fn export_metrics_from(
        &self,
        req: ExportMetricsServiceRequest,
        peer: Option<std::net::IpAddr>,
    ) -> Taken {
        let mut resolver = self.resolver(peer);
        let c = convert::convert_with(req, resolver.as_mut());
        self.count_enrichment(resolver);
        let taken = Taken {
            points: c.points.len() as u64,
            rejected: c.rejected,
            message: c.reason.clone().unwrap_or_default(),
        };
        let applied = self.otel.lock().unwrap_or_else(|e| e.into_inner()).apply(c);
        self.telemetry.otlp.points(
            applied.points - applied.overflow,
            applied.overflow,
            taken.rejected,
        );
        taken
    }

    /// Count a metrics request's outcome.
    pub(crate) fn count_metrics(&self, transport: Transport, outcome: Outcome) {
        self.telemetry.otlp.metrics_request(transport, outcome);
    }
}

/// The series state, shared by the receiver and the collector.
pub type Shared = Arc<Mutex<State>>;

/// The OTLP metrics of each interval, as a [`Collector`].
#[derive(Clone)]
pub struct OtelMetrics {
    state: Shared,
    telemetry: Arc<Telemetry>,
}

impl OtelMetrics {
    pub fn new(state: Shared, telemetry: Arc<Telemetry>) -> Self {
        OtelMetrics { state, telemetry }
    }
}

impl Collector for OtelMetrics {
    fn name(&self) -> &'static str {
        "otlp_metrics"
    }

    fn collect(&mut self, _now: Instant, out: &mut Vec<Sample>) -> Result<(), CollectError> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let freed = st.drain(out);
        self.telemetry
            .otlp
            .series_after_interval(st.series() as i64, freed);
        Ok(())
    }
}
