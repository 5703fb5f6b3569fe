//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`
//! (SPEC §6), tonic's server with the protocol's types.
//!
//! | request | status |
//! |---|---|
//! | valid, optionally gzip | OK, an empty `ExportTraceServiceResponse` |
//! | not protobuf / truncated | `INVALID_ARGUMENT` |
//! | message over the limit, plain or inflating past it (gzip bomb: inflation stops at the limit) | `RESOURCE_EXHAUSTED` without `RetryInfo`: permanent by the OTLP spec |
//! | more than 8192 spans or the memory budget decoded | `RESOURCE_EXHAUSTED` without `RetryInfo` |
//! | memory budget held by other requests for over 1 s, or all of it held while the message arrives ([`Metered`]) | `RESOURCE_EXHAUSTED` with `RetryInfo` |
//! | not done within 10 s (a stalled message) | `CANCELLED` (tonic's timeout) |
//! | some spans with invalid ids | OK with `partial_success` |
//! | span buffer full | `RESOURCE_EXHAUSTED` with `RetryInfo` (in `grpc-status-details-bin` and `google.rpc.retryinfo-bin`): retryable by the OTLP spec |
//!
//! tonic answers a plain over-limit message with `OUT_OF_RANGE`, which OTLP
//! clients retry, and a message that is not protobuf with `INTERNAL`;
//! [`Guarded`] rewrites these two statuses (recognised by tonic's messages) to
//! `RESOURCE_EXHAUSTED` and `INVALID_ARGUMENT`; it also refuses a request
//! before decoding it when the span buffer has no room.
//!
//! The message reaches [`Export`] undecoded ([`RawCodec`]): its cost is
//! bounded and held in the memory budget before prost decodes it, and the
//! shared request permits are taken only then, once it was read. Limits:
//! [`MAX_CONNECTIONS`], 16 streams and 4 requests in flight a connection,
//! [`REQUEST_TIMEOUT`] a request.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::{CompressionEncoding, EnabledCompressionEncodings};
use tonic::codegen::{Service, http};
use tonic::metadata::MetadataValue;
use tonic::server::NamedService;
use tonic::{Code, Request, Response, Status};

use super::decode::Encoding;
use super::decode::{ProtoAny, ProtoDuration, RetryInfo, RpcStatus};
use super::{Ingest, Refusal};

const TRANSPORT: &str = "grpc";

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

/// Hands tonic's message over undecoded, so that its cost is bounded
/// ([`super::scan`]) before prost builds anything; encodes the response.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

struct RawDecoder;
struct ResponseEncoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = ExportTraceServiceResponse;
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
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(
        &mut self,
        item: ExportTraceServiceResponse,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode the response: {e}")))
    }
}

/// `TraceService/Export` over [`RawCodec`].
#[derive(Clone)]
struct Export {
    ingest: Arc<Ingest>,
}

impl tonic::server::UnaryService<bytes::Bytes> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Self::Response>, Status>> + Send>>;

    fn call(&mut self, request: Request<bytes::Bytes>) -> Self::Future {
        let ingest = self.ingest.clone();
        Box::pin(async move {
            // the message's bytes were held as they arrived (Metered)
            let held = request
                .extensions()
                .get::<HeldSlot>()
                .and_then(HeldSlot::take)
                .unwrap_or_else(|| ingest.hold_nothing());
            // the sender's address, for its pod (tonic's TcpConnectInfo)
            let peer = request.remote_addr().map(|a| a.ip());
            let body = request.into_inner();
            let taken = ingest
                .take(body, None, Encoding::Protobuf, held, peer)
                .await;
            match taken {
                Ok(a) => {
                    ingest.telemetry().otlp_request(TRANSPORT, "accepted");
                    Ok(Response::new(super::http::response(&a)))
                }
                Err(r) => {
                    ingest.count_refusal(TRANSPORT, &r);
                    Err(status_of(&r, ingest.retry_after))
                }
            }
        })
    }
}

/// The gRPC status of a refusal (OTLP: `RESOURCE_EXHAUSTED` is retried
/// only with a `RetryInfo`).
fn status_of(r: &Refusal, retry_after: Duration) -> Status {
    let msg = r.to_string();
    match r {
        Refusal::Malformed(_) | Refusal::Unsupported(_) => Status::invalid_argument(msg),
        Refusal::TooLarge(_) => Status::resource_exhausted(msg),
        Refusal::Busy | Refusal::Full => refusal(&msg, retry_after),
        Refusal::ShuttingDown => Status::unavailable(msg),
    }
}

/// The trace service: routes `Export`, answers `UNIMPLEMENTED` otherwise.
#[derive(Clone)]
pub struct TraceGrpc {
    ingest: Arc<Ingest>,
}

impl NamedService for TraceGrpc {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl<B> Service<http::Request<B>> for TraceGrpc
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let ingest = self.ingest.clone();
        if req.uri().path() != EXPORT_PATH {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        Box::pin(async move {
            let slot = HeldSlot::new(ingest.hold_nothing());
            let mut req = req.map(|b| Metered {
                inner: Box::pin(b),
                ingest: ingest.clone(),
                slot: slot.clone(),
            });
            req.extensions_mut().insert(slot);
            let mut gzip = EnabledCompressionEncodings::default();
            gzip.enable(CompressionEncoding::Gzip);
            let limit = ingest.max_body_bytes;
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .apply_compression_config(gzip, gzip)
                .apply_max_message_size_config(Some(limit), None);
            Ok(grpc.unary(Export { ingest }, req).await)
        })
    }
}

/// The memory budget a request's message holds while tonic reads it; the
/// handler takes it over with the whole message.
#[derive(Clone)]
struct HeldSlot(Arc<std::sync::Mutex<Option<super::Held>>>);

impl HeldSlot {
    fn new(held: super::Held) -> Self {
        HeldSlot(Arc::new(std::sync::Mutex::new(Some(held))))
    }

    fn take(&self) -> Option<super::Held> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Hold `bytes` more, without waiting.
    fn charge(&self, ingest: &Ingest, bytes: usize) -> Result<(), Refusal> {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_mut() {
            Some(held) => ingest.hold_more(held, bytes),
            None => Ok(()),
        }
    }
}

/// The request body, each DATA frame held in the memory budget as it
/// arrives (as the HTTP path does): tonic buffers a whole message before
/// decoding, so without this a few half-sent 10 MiB messages would sit
/// outside the budget.
struct Metered<B> {
    inner: Pin<Box<B>>,
    ingest: Arc<Ingest>,
    slot: HeldSlot,
}

impl<B> http_body::Body for Metered<B>
where
    B: http_body::Body,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Data = B::Data;
    type Error = tonic::codegen::StdError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, Self::Error>>> {
        use bytes::Buf;
        let frame = match std::task::ready!(self.inner.as_mut().poll_frame(cx)) {
            Some(Ok(f)) => f,
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            None => return Poll::Ready(None),
        };
        let len = frame.data_ref().map_or(0, |d| d.remaining());
        if let Err(r) = self.slot.charge(&self.ingest, len) {
            self.ingest.count_refusal(TRANSPORT, &r);
            let st = status_of(&r, self.ingest.retry_after);
            return Poll::Ready(Some(Err(Box::new(st))));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
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

/// The tonic service with the shared request permits and the over-limit
/// status rewrite.
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
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

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
            let resp = inner.call(req).await?;
            // the status is in the headers (trailers-only) or the trailers
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

/// tonic's "decoded message length too large" is `OUT_OF_RANGE` (11):
/// gRPC's convention and the OTLP spec want `RESOURCE_EXHAUSTED` (8). Its
/// protobuf decode error is `INTERNAL` (13): the request was malformed, so
/// `INVALID_ARGUMENT` (3).
pub(super) fn remap_decode_errors(h: &mut http::HeaderMap) {
    let status = h.get("grpc-status").and_then(|v| v.to_str().ok());
    let message = h
        .get("grpc-message")
        .map(|v| percent_decode(v.as_bytes()))
        .unwrap_or_default();
    let new = match status {
        Some("11") if message.starts_with("Error, decoded message length too large") => "8",
        Some("13") if message.starts_with("failed to decode Protobuf message") => "3",
        _ => return,
    };
    h.insert("grpc-status", http::HeaderValue::from_static(new));
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2).
fn percent_decode(v: &[u8]) -> String {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        let hex = v
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (v[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Serve until `shutdown` resolves (the caller bounds the drain).
pub async fn serve(
    listener: tokio::net::TcpListener,
    ingest: Arc<Ingest>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let svc = TraceGrpc {
        ingest: ingest.clone(),
    };
    tonic::transport::Server::builder()
        .timeout(REQUEST_TIMEOUT)
        .max_concurrent_streams(MAX_STREAMS)
        .concurrency_limit_per_connection(MAX_IN_FLIGHT)
        // what h2 buffers for streams not yet read, per connection
        .initial_connection_window_size(WINDOW)
        .initial_stream_window_size(WINDOW)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(super::metrics::grpc::MetricsGrpc::new(ingest.clone()))
        .add_service(super::metrics::grpc::LogsGrpc)
        .add_service(Guarded { inner: svc, ingest })
        .serve_with_incoming_shutdown(
            capped(listener, MAX_CONNECTIONS),
            shutdown.cancelled_owned(),
        )
        .await
}

/// Accepted connections, at most `max` open at once: the next is accepted
/// only when one closed.
fn capped(
    listener: tokio::net::TcpListener,
    max: usize,
) -> impl futures::Stream<Item = std::io::Result<Capped>> {
    let slots = Arc::new(tokio::sync::Semaphore::new(max.max(1)));
    futures::stream::unfold((listener, slots), |(listener, slots)| async move {
        let slot = slots.clone().acquire_owned().await.ok()?;
        let r = listener.accept().await.map(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            Capped {
                stream,
                _slot: slot,
            }
        });
        Some((r, (listener, slots)))
    })
}

/// A connection holding its slot until dropped.
struct Capped {
    stream: tokio::net::TcpStream,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl tonic::transport::server::Connected for Capped {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl tokio::io::AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
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

    #[test]
    fn only_tonic_decode_errors_are_rewritten() {
        let cases = [
            (
                "11",
                "Error,%20decoded%20message%20length%20too%20large:%20found%2011000000%20bytes",
                "8",
            ),
            ("11", "something else", "11"),
            (
                "13",
                "failed to decode Protobuf message: buffer underflow",
                "3",
            ),
            ("13", "h2 protocol error", "13"),
            ("8", "span buffer full", "8"),
        ];
        for (status, message, want) in cases {
            let mut h = http::HeaderMap::new();
            h.insert("grpc-status", http::HeaderValue::from_static(status));
            h.insert("grpc-message", http::HeaderValue::from_static(message));
            remap_decode_errors(&mut h);
            assert_eq!(h["grpc-status"], want, "{status} {message}");
        }
    }
}
