//! OTLP/gRPC `opentelemetry.proto.collector.metrics.v1.MetricsService/Export`
//! on the trace receiver's gRPC server (its connection cap, stream limits
//! and 10 s request timeout), and `LogsService`, answered `UNIMPLEMENTED`.
//!
//! As for traces, the message reaches [`Export`] undecoded ([`RawCodec`]):
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

use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use prost::Message;
use tonic::codec::{CompressionEncoding, EnabledCompressionEncodings};
use tonic::codegen::{Service, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use crate::otlp::decode::Encoding;
use crate::otlp::grpc::{refusal, remap_decode_errors};
use crate::otlp::{Ingest, Refusal};

const TRANSPORT: &str = "grpc";
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// The message undecoded; the response encoded.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;
struct RawDecoder;
struct ResponseEncoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = ExportMetricsServiceResponse;
    type Decode = bytes::Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> ResponseEncoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = bytes::Bytes;
    type Error = Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<bytes::Bytes>, Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl tonic::codec::Encoder for ResponseEncoder {
    type Item = ExportMetricsServiceResponse;
    type Error = Status;

    fn encode(
        &mut self,
        item: ExportMetricsServiceResponse,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode the response: {e}")))
    }
}

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
            let peer = request.remote_addr().map(|a| a.ip());
            let body = request.into_inner();
            let mut held = ingest.hold_nothing();
            let taken = match ingest.hold_more(&mut held, body.len()) {
                Ok(()) => {
                    ingest
                        .take_metrics(body, None, Encoding::Protobuf, held, peer)
                        .await
                }
                Err(r) => Err(r),
            };
            match taken {
                Ok(t) => {
                    ingest.count_metrics(TRANSPORT, "accepted");
                    Ok(Response::new(t.response()))
                }
                Err(r) => {
                    ingest.count_metrics(TRANSPORT, r.outcome());
                    let msg = r.to_string();
                    Err(match r {
                        Refusal::Malformed(_) | Refusal::Unsupported(_) => {
                            Status::invalid_argument(msg)
                        }
                        Refusal::TooLarge(_) => Status::resource_exhausted(msg),
                        Refusal::Busy | Refusal::Full => refusal(&msg, ingest.retry_after),
                        Refusal::ShuttingDown => Status::unavailable(msg),
                    })
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
            let mut gzip = EnabledCompressionEncodings::default();
            gzip.enable(CompressionEncoding::Gzip);
            let limit = ingest.max_body_bytes;
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .apply_compression_config(gzip, gzip)
                .apply_max_message_size_config(Some(limit), None);
            let resp = grpc.unary(Export { ingest }, req).await;
            // tonic's own over-limit and decode statuses, as for traces
            let (mut parts, body) = resp.into_parts();
            remap_decode_errors(&mut parts.headers);
            let body = body.map_frame(|mut f| {
                if let Some(t) = f.trailers_mut() {
                    remap_decode_errors(t);
                }
                f
            });
            Ok(http::Response::from_parts(
                parts,
                tonic::body::Body::new(body),
            ))
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
