//! OTLP/HTTP: `POST /v1/traces` (SPEC §6).
//!
//! | request | answer |
//! |---|---|
//! | valid protobuf or OTLP/JSON, optionally gzip or deflate | 200, an empty `ExportTraceServiceResponse` in the request's encoding |
//! | not protobuf / truncated / JSON that is not a trace export / bad gzip or deflate | 400, a `google.rpc.Status` in the request's encoding |
//! | body over the limit, before or after decompression | 413 |
//! | another content type or content encoding | 415 |
//! | another method | 405 (with `Allow: POST`) |
//! | span buffer full | 503 with `Retry-After` (seconds) |

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;

use super::Ingest;
use super::decode::{self, DecodeError, Encoding};

const TRANSPORT: &str = "http";

/// After a body went over the limit (or was refused unread), read and
/// discard at most this much more, for at most [`DRAIN_TIME`], before
/// answering: a client still writing its body then reads the answer rather
/// than a broken pipe. Nothing drained is kept.
const DRAIN_MAX: u64 = 64 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// gRPC code numbers used in `google.rpc.Status` bodies.
const INVALID_ARGUMENT: i32 = 3;
const RESOURCE_EXHAUSTED: i32 = 8;
const UNAVAILABLE: i32 = 14;

pub fn router(ingest: Arc<Ingest>) -> Router {
    Router::new()
        .route("/v1/traces", post(traces))
        .with_state(ingest)
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ingest: Arc<Ingest>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(ingest))
        .with_graceful_shutdown(shutdown)
        .await
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn status_reply(status: StatusCode, enc: Encoding, code: i32, msg: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, enc.content_type())],
        decode::status_body(enc, code, msg),
    )
        .into_response()
}

async fn traces(State(ingest): State<Arc<Ingest>>, headers: HeaderMap, body: Body) -> Response {
    let t = ingest.telemetry();
    let enc = match decode::encoding_of(header_str(&headers, header::CONTENT_TYPE)) {
        Ok(e) => e,
        Err(e) => {
            drain(body).await;
            t.otlp_request(TRANSPORT, "unsupported");
            return (StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("{e}\n")).into_response();
        }
    };
    let limit = ingest.max_body_bytes;
    let too_large = || {
        t.otlp_request(TRANSPORT, "too_large");
        let e = DecodeError::TooLarge { limit };
        status_reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            enc,
            INVALID_ARGUMENT,
            &e.to_string(),
        )
    };
    let declared = header_str(&headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        drain(body).await;
        return too_large();
    }
    if ingest.refuse_early(TRANSPORT, declared.unwrap_or(0)) {
        drain(body).await;
        return refused(&ingest, enc);
    }
    // at most `max_concurrent_requests` bodies in memory at once
    let Ok(_permit) = ingest.permits.acquire().await else {
        return status_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            enc,
            UNAVAILABLE,
            "shutting down",
        );
    };
    let raw = match read_body(body, limit, declared.unwrap_or(0) as usize).await {
        Ok(b) => b,
        Err(ReadError::TooLarge) => return too_large(),
        Err(ReadError::Io(e)) => {
            t.otlp_request(TRANSPORT, "malformed");
            let msg = format!("cannot read the request body: {e}");
            return status_reply(StatusCode::BAD_REQUEST, enc, INVALID_ARGUMENT, &msg);
        }
    };
    let decoded = decode::inflate(raw, header_str(&headers, header::CONTENT_ENCODING), limit)
        .and_then(|body| decode::decode(&body, enc));
    let req = match decoded {
        Ok(r) => r,
        Err(e) => {
            let (outcome, status) = match e.status() {
                413 => ("too_large", StatusCode::PAYLOAD_TOO_LARGE),
                415 => ("unsupported", StatusCode::UNSUPPORTED_MEDIA_TYPE),
                _ => ("malformed", StatusCode::BAD_REQUEST),
            };
            t.otlp_request(TRANSPORT, outcome);
            return status_reply(status, enc, INVALID_ARGUMENT, &e.to_string());
        }
    };
    match ingest.export(req) {
        Ok(_) => {
            t.otlp_request(TRANSPORT, "accepted");
            let body = match enc {
                Encoding::Protobuf => ExportTraceServiceResponse::default().encode_to_vec(),
                Encoding::Json => b"{}".to_vec(),
            };
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, enc.content_type())],
                body,
            )
                .into_response()
        }
        Err(_) => {
            t.otlp_request(TRANSPORT, "refused");
            refused(&ingest, enc)
        }
    }
}

/// 503 with `Retry-After` and a `RESOURCE_EXHAUSTED` status.
fn refused(ingest: &Ingest, enc: Encoding) -> Response {
    let mut r = status_reply(
        StatusCode::SERVICE_UNAVAILABLE,
        enc,
        RESOURCE_EXHAUSTED,
        "span buffer full: retry later",
    );
    let secs = ingest.retry_after.as_secs().max(1);
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

enum ReadError {
    TooLarge,
    Io(axum::Error),
}

/// The whole body (room for `expected` bytes, the declared length, made
/// once), or `TooLarge` as soon as it passes `limit` (the rest is then
/// drained, not kept).
async fn read_body(
    mut body: Body,
    limit: usize,
    expected: usize,
) -> Result<bytes::Bytes, ReadError> {
    let mut buf = bytes::BytesMut::with_capacity(expected.min(limit));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ReadError::Io)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                drop(buf);
                drain(body).await;
                return Err(ReadError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Read and discard what is left of a body, within bounds.
async fn drain(mut body: Body) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut seen = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                seen += data.len() as u64;
                if seen > DRAIN_MAX {
                    break;
                }
            }
        }
    })
    .await;
}
