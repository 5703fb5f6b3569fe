//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`
//! (SPEC §6), the generated tonic server of `opentelemetry-proto`.
//!
//! | request | status |
//! |---|---|
//! | valid, optionally gzip | OK, an empty `ExportTraceServiceResponse` |
//! | not protobuf / truncated | `INVALID_ARGUMENT` |
//! | message over the limit, plain or inflating past it (gzip bomb: inflation stops at the limit) | `RESOURCE_EXHAUSTED` without `RetryInfo`: permanent by the OTLP spec |
//! | span buffer full | `RESOURCE_EXHAUSTED` with `RetryInfo` (in `grpc-status-details-bin` and `google.rpc.retryinfo-bin`): retryable by the OTLP spec |
//!
//! tonic answers a plain over-limit message with `OUT_OF_RANGE`, which OTLP
//! clients retry, and a message that is not protobuf with `INTERNAL`;
//! [`Guarded`] rewrites these two statuses (recognised by tonic's messages) to
//! `RESOURCE_EXHAUSTED` and `INVALID_ARGUMENT`; it also refuses a request
//! before decoding it when the span buffer has no room, and holds one of the
//! shared request permits while a request is read and decoded.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::codegen::{Service, http};
use tonic::metadata::MetadataValue;
use tonic::server::NamedService;
use tonic::{Code, Request, Response, Status};

use super::Ingest;
use super::decode::{ProtoAny, ProtoDuration, RetryInfo, RpcStatus};

const TRANSPORT: &str = "grpc";

struct Receiver {
    ingest: Arc<Ingest>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let t = self.ingest.telemetry();
        match self.ingest.export(request.into_inner()) {
            Ok(_) => {
                t.otlp_request(TRANSPORT, "accepted");
                Ok(Response::new(ExportTraceServiceResponse::default()))
            }
            Err(full) => {
                t.otlp_request(TRANSPORT, "refused");
                Err(refusal(
                    &format!("{full}: retry later"),
                    self.ingest.retry_after,
                ))
            }
        }
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
            if ingest.refuse_early(TRANSPORT, 0) {
                let st = refusal("span buffer full: retry later", ingest.retry_after);
                return Ok(st.into_http());
            }
            let _permit = ingest.permits.clone().acquire_owned().await;
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
fn remap_decode_errors(h: &mut http::HeaderMap) {
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

/// Serve until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ingest: Arc<Ingest>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let limit = ingest.max_body_bytes;
    let svc = TraceServiceServer::new(Receiver {
        ingest: ingest.clone(),
    })
    .accept_compressed(CompressionEncoding::Gzip)
    .send_compressed(CompressionEncoding::Gzip)
    .max_decoding_message_size(limit);
    tonic::transport::Server::builder()
        .add_service(Guarded { inner: svc, ingest })
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
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
