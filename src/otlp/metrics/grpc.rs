//! OTLP/gRPC `opentelemetry.proto.collector.metrics.v1.MetricsService/Export`
//! on the trace receiver's gRPC server (its connection cap, stream limits
//! and 10 s request timeout), and `LogsService`, answered `UNIMPLEMENTED`.
//!
//! As for traces, the message reaches [`Export`] undecoded
//! ([`crate::otlp::grpc::codec::RawCodec`]) and held in the memory budget
//! as it arrives ([`crate::otlp::grpc::guard`]):
//! its cost is bounded and held in the memory budget before prost decodes
//! it. Statuses: `OK` (with `partial_success` for points left out);
//! `INVALID_ARGUMENT` not protobuf; `RESOURCE_EXHAUSTED` without
//! `RetryInfo` over the size, point or budget limits (permanent);
//! `RESOURCE_EXHAUSTED` with `RetryInfo` when the budget is held by others.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use tonic::Status;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;

use crate::otlp::decode::Encoding;
use crate::otlp::grpc::export::Signal;

use crate::otlp::{Held, Ingest, Refusal};
use crate::telemetry::{Outcome, Transport};

const TRANSPORT: Transport = Transport::Grpc;
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// Metrics: `MetricsService/Export`.
pub struct Metrics;

impl Signal for Metrics {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const PATH: &'static str = EXPORT_PATH;
    type Response = ExportMetricsServiceResponse;
    type Taken = super::Taken;

    async fn take(
        ingest: Arc<Ingest>,
        body: bytes::Bytes,
        held: Held,
        peer: Option<std::net::IpAddr>,
    ) -> Result<super::Taken, Refusal> {
        ingest
            .take_metrics(body, None, Encoding::Protobuf, held, peer)
            .await
    }

    fn response(t: &super::Taken) -> ExportMetricsServiceResponse {
        t.response()
    }

    fn count(ingest: &Ingest, outcome: Result<(), &Refusal>) {
        let outcome = outcome.map_or_else(Refusal::outcome, |()| Outcome::Accepted);
        ingest.count_metrics(TRANSPORT, outcome);
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

/// `LogsService`: every call is `UNIMPLEMENTED` with [`super::LOGS_ANSWER`].
#[derive(Clone, Copy)]
pub struct LogsGrpc;

impl NamedService for LogsGrpc {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
}

impl<B: Send + 'static> Service<http::Request<B>> for LogsGrpc {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: http::Request<B>) -> Self::Future {
        Box::pin(async { Ok(Status::unimplemented(super::LOGS_ANSWER).into_http()) })
    }
}
