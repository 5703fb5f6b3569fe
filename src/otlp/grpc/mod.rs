//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`
//! (SPEC §6), tonic's server with the protocol's types.
//!
//! | request | status |
//! |---|---|
//! | valid, optionally gzip | OK, an empty `ExportTraceServiceResponse` |
//! | not protobuf / truncated | `INVALID_ARGUMENT` |
//! | message over the limit, plain or inflating past it (gzip bomb: inflation stops at the limit) | `RESOURCE_EXHAUSTED` without `RetryInfo`: permanent by the OTLP spec |
//! | more than 8192 spans or the memory budget decoded | `RESOURCE_EXHAUSTED` without `RetryInfo` |
//! | memory budget held by other requests for over 1 s, or all of it held while the message arrives ([`guard`]) | `RESOURCE_EXHAUSTED` with `RetryInfo` |
//! | not done within 10 s (a stalled message) | `CANCELLED` (tonic's timeout) |
//! | some spans with invalid ids | OK with `partial_success` |
//! | span buffer full | `RESOURCE_EXHAUSTED` with `RetryInfo` (in `grpc-status-details-bin` and `google.rpc.retryinfo-bin`): retryable by the OTLP spec |
//!
//! tonic answers a plain over-limit message with `OUT_OF_RANGE`, which OTLP
//! clients retry, and a message that is not protobuf with `INTERNAL`; the
//! server-wide [`guard`] layer rewrites these two statuses (recognised by
//! tonic's messages) to `RESOURCE_EXHAUSTED` and `INVALID_ARGUMENT`, for
//! every service. [`Guarded`] refuses a trace request before decoding it
//! when the span buffer has no room.
//!
//! The message reaches [`Traces`] undecoded ([`codec::RawCodec`], [`export`]): its cost is
//! bounded and held in the memory budget before prost decodes it, and the
//! shared request permits are taken only then, once it was read. Limits:
//! [`MAX_CONNECTIONS`], 16 streams and 4 requests in flight a connection,
//! [`REQUEST_TIMEOUT`] a request.

pub mod codec;
mod conn;
pub mod export;
pub mod guard;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codegen::{Service, http};
use tonic::metadata::MetadataValue;
use tonic::server::NamedService;
use tonic::{Code, Status};

use super::decode::Encoding;
use super::decode::{ProtoAny, ProtoDuration, RetryInfo, RpcStatus};
use super::{Ingest, Refusal};
use crate::telemetry::{Outcome, Transport};

const TRANSPORT: Transport = Transport::Grpc;

/// The gRPC path of `TraceService/Export`.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// A whole request (its message read, decoded and taken) must finish
/// within this (the OTLP exporters' own deadline is 10 s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; further ones wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 256;
/// Streams one connection may have open, and requests it may have in
/// flight (the rest wait, unread).
const MAX_STREAMS: u32 = 16;
const MAX_IN_FLIGHT: usize = 4;
/// HTTP/2 flow-control window of a connection and of a stream: the data a
/// peer may send that nobody reads yet (streams waiting for a slot) stays
/// under this per connection (hyper's default is 1 MiB).
const WINDOW: u32 = 128 << 10;
/// On shutdown, in-flight requests get this long.
pub const DRAIN: Duration = Duration::from_secs(1);

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

/// Traces: `TraceService/Export`.
pub struct Traces;

impl export::Signal for Traces {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const PATH: &'static str = EXPORT_PATH;
    type Response = ExportTraceServiceResponse;
    type Taken = super::Accepted;

    async fn take(
        ingest: Arc<Ingest>,
        body: bytes::Bytes,
        held: super::Held,
        peer: Option<std::net::IpAddr>,
    ) -> Result<super::Accepted, Refusal> {
        ingest
            .take(body, None, Encoding::Protobuf, held, peer)
            .await
    }

    fn response(a: &super::Accepted) -> ExportTraceServiceResponse {
        super::http::response(a)
    }

    fn count(ingest: &Ingest, outcome: Result<(), &Refusal>) {
        match outcome {
            Ok(()) => ingest
                .telemetry()
                .otlp
                .request(TRANSPORT, Outcome::Accepted),
            Err(r) => ingest.count_refusal(TRANSPORT, r),
        }
    }
}

/// The gRPC status of a refusal (OTLP: `RESOURCE_EXHAUSTED` is retried
/// only with a `RetryInfo`).
pub(crate) fn status_of(r: &Refusal, retry_after: Duration) -> Status {
    let msg = r.to_string();
    match r {
        Refusal::Malformed(_) | Refusal::Unsupported(_) => Status::invalid_argument(msg),
        Refusal::TooLarge(_) => Status::resource_exhausted(msg),
        Refusal::Busy | Refusal::Full => refusal(&msg, retry_after),
        Refusal::ShuttingDown => Status::unavailable(msg),
    }
}

/// `RESOURCE_EXHAUSTED` carrying a `RetryInfo` of `delay`.
pub fn refusal(message: &str, delay: std::time::Duration) -> Status {
    let info = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: delay.as_secs() as i64,
            nanos: delay.subsec_nanos() as i32,
        }),
    }
    .encode_to_vec();
    let details = RpcStatus {
        code: Code::ResourceExhausted as i32,
        message: message.to_string(),
        details: vec![ProtoAny {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".to_string(),
            value: info.clone(),
        }],
    }
    .encode_to_vec();
    let mut st = Status::with_details(Code::ResourceExhausted, message, details.into());
    st.metadata_mut()
        .insert_bin("google.rpc.retryinfo-bin", MetadataValue::from_bytes(&info));
    st
}

/// The trace service, refusing a request before reading it when the span
/// buffer has no room.
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    ingest: Arc<Ingest>,
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for Guarded<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // the clone is ready too (generated services are always ready); keep
        // the one polled ready for this call
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let ingest = self.ingest.clone();
        Box::pin(async move {
            if ingest.refuse_early(0) {
                ingest.count_refusal(TRANSPORT, &Refusal::Full);
                let st = refusal("span buffer full: retry later", ingest.retry_after);
                return Ok(st.into_http());
            }
            inner.call(req).await
        })
    }
}

/// Serve until `shutdown` resolves (the caller bounds the drain).
pub async fn serve(
    listener: tokio::net::TcpListener,
    ingest: Arc<Ingest>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let traces = export::ExportService::<Traces>::new(ingest.clone());
    let metrics = export::ExportService::<super::metrics::grpc::Metrics>::new(ingest.clone());
    tonic::transport::Server::builder()
        .timeout(REQUEST_TIMEOUT)
        .max_concurrent_streams(MAX_STREAMS)
        .concurrency_limit_per_connection(MAX_IN_FLIGHT)
        // what h2 buffers for streams not yet read, per connection
        .initial_connection_window_size(WINDOW)
        .initial_stream_window_size(WINDOW)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(guard::GuardLayer::new(ingest.clone()))
        .add_service(metrics)
        .add_service(super::metrics::grpc::LogsGrpc)
        .add_service(Guarded {
            inner: traces,
            ingest,
        })
        .serve_with_incoming_shutdown(
            conn::capped(listener, MAX_CONNECTIONS),
            shutdown.cancelled_owned(),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_carries_retry_info() {
        let st = refusal("full", std::time::Duration::from_millis(1500));
        assert_eq!(st.code(), Code::ResourceExhausted);
        let details = RpcStatus::decode(st.details()).unwrap();
        assert_eq!(details.code, 8);
        assert_eq!(
            details.details[0].type_url,
            "type.googleapis.com/google.rpc.RetryInfo"
        );
        let info = RetryInfo::decode(&details.details[0].value[..]).unwrap();
        assert_eq!(
            info.retry_delay,
            Some(ProtoDuration {
                seconds: 1,
                nanos: 500_000_000
            })
        );
        let bin = st
            .metadata()
            .get_bin("google.rpc.retryinfo-bin")
            .unwrap()
            .to_bytes()
            .unwrap();
        assert_eq!(RetryInfo::decode(&bin[..]).unwrap(), info);
    }
}
