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
use tonic::codegen::{Service, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use crate::otlp::Ingest;
use crate::otlp::decode::Encoding;
use crate::otlp::grpc::guard::HeldSlot;
use crate::otlp::grpc::{codec, status_of};

const TRANSPORT: &str = "grpc";
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

#[derive(Clone)]
struct Export {
    ingest: Arc<Ingest>,
}

impl tonic::server::UnaryService<bytes::Bytes> for Export {
    type Response = ExportMetricsServiceResponse;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Self::Response>, Status>> + Send>>;

    fn call(&mut self, request: Request<bytes::Bytes>) -> Self::Future {
        let ingest = self.ingest.clone();
        Box::pin(async move {
            // the message's bytes were held as they arrived (guard)
            let held = HeldSlot::take_from(&request, &ingest);
            let body = request.into_inner();
            let taken = ingest
                .take_metrics(body, None, Encoding::Protobuf, held)
                .await;
            match taken {
                Ok(t) => {
                    ingest.count_metrics(TRANSPORT, "accepted");
                    Ok(Response::new(t.response()))
                }
                Err(r) => {
                    ingest.count_metrics(TRANSPORT, r.outcome());
                    Err(status_of(&r, ingest.retry_after))
                }
            }
        })
    }
}

/// The metrics service: routes `Export`, answers `UNIMPLEMENTED` otherwise.
#[derive(Clone)]
pub struct MetricsGrpc {
    ingest: Arc<Ingest>,
}

impl MetricsGrpc {
    pub fn new(ingest: Arc<Ingest>) -> Self {
        MetricsGrpc { ingest }
    }
}

impl NamedService for MetricsGrpc {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

impl<B> Service<http::Request<B>> for MetricsGrpc
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let ingest = self.ingest.clone();
        if req.uri().path() != EXPORT_PATH {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        Box::pin(async move {
            let mut grpc = codec::server::<ExportMetricsServiceResponse>(ingest.max_body_bytes);
            Ok(grpc.unary(Export { ingest }, req).await)
        })
    }
}

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
