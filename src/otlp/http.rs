//! OTLP/HTTP: `POST /v1/traces` (SPEC §6).
//!
//! | request | answer |
//! |---|---|
//! | valid protobuf or OTLP/JSON, optionally gzip or deflate | 200, an empty `ExportTraceServiceResponse` in the request's encoding |
//! | not protobuf / truncated / JSON that is not a trace export / bad gzip or deflate | 400, a `google.rpc.Status` in the request's encoding |
//! | body over the limit, before or after decompression | 413 |
//! | another content type or content encoding | 415 |
//! | another method | 405 (with `Allow: POST`) |
//! | more than 8192 spans, or more than the memory budget decoded | 413 |
//! | body not received within 10 s | 408, connection closed |
//! | memory budget held by other requests for over 1 s | 429 with `Retry-After` |
//! | span buffer full | 503 with `Retry-After` (seconds) |
//! | some spans with invalid trace or span ids | 200 with `partial_success` (`rejected_spans`, `error_message`) |

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;

use super::decode::{self, DecodeError, Encoding};
use super::{Accepted, Held, Ingest, Refusal};
use crate::telemetry::{Outcome, Transport};

const TRANSPORT: Transport = Transport::Http;

/// After a body went over the limit (or was refused unread), read and
/// discard at most this much more, for at most [`DRAIN_TIME`], before
/// answering: a client still writing its body then reads the answer rather
/// than a broken pipe. Nothing drained is kept.
const DRAIN_MAX: u64 = 64 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);
/// A request body must arrive within this (the SDKs' export timeout is
/// 10 s too): a stalled body is answered 408 and its connection closed.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// gRPC code numbers used in `google.rpc.Status` bodies.
pub(super) const INVALID_ARGUMENT: i32 = 3;
pub(super) const RESOURCE_EXHAUSTED: i32 = 8;
pub(super) const UNAVAILABLE: i32 = 14;

/// The OTLP/HTTP port's limits: pods on the node hold one or a few
/// keep-alive connections each.
pub const LIMITS: crate::server::Limits = crate::server::Limits {
    max_connections: 256,
    header_read_timeout: std::time::Duration::from_secs(10),
    drain: std::time::Duration::from_secs(1),
};

pub fn router(ingest: Arc<Ingest>) -> Router {
    Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/metrics", post(super::metrics::http::metrics))
        .route("/v1/logs", axum::routing::any(super::metrics::http::logs))
        .with_state(ingest)
}

/// Serve until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ingest: Arc<Ingest>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    crate::server::serve_router(listener, router(ingest), LIMITS, shutdown).await
}

pub(super) fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

pub(super) fn status_reply(status: StatusCode, enc: Encoding, code: i32, msg: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, enc.content_type())],
        decode::status_body(enc, code, msg),
    )
        .into_response()
}

async fn traces(
    State(ingest): State<Arc<Ingest>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let t = ingest.telemetry();
    let enc = match decode::encoding_of(header_str(&headers, header::CONTENT_TYPE)) {
        Ok(e) => e,
        Err(e) => {
            drain(body).await;
            t.otlp.request(TRANSPORT, Outcome::Unsupported);
            return (StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("{e}\n")).into_response();
        }
    };
    let limit = ingest.max_body_bytes;
    let declared = header_str(&headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        drain(body).await;
        let e = DecodeError::TooLarge { limit };
        return refusal(&ingest, enc, Refusal::TooLarge(e.to_string()));
    }
    if ingest.refuse_early(declared.unwrap_or(0)) {
        drain(body).await;
        return refusal(&ingest, enc, Refusal::Full);
    }
    // no request permit while the body arrives: a stalled body holds only
    // the bytes it sent, and only for BODY_READ_TIMEOUT
    let mut held = ingest.hold_nothing();
    let read = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        read_body(body, &ingest, &mut held, declared.unwrap_or(0) as usize),
    )
    .await;
    let raw = match read {
        Ok(Ok(b)) => b,
        Ok(Err(r)) => return refusal(&ingest, enc, r),
        Err(_) => {
            t.otlp.request(TRANSPORT, Outcome::Timeout);
            let msg = format!(
                "request body not received within {}s",
                BODY_READ_TIMEOUT.as_secs()
            );
            let mut r = status_reply(StatusCode::REQUEST_TIMEOUT, enc, UNAVAILABLE, &msg);
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
    };
    let encoding = header_str(&headers, header::CONTENT_ENCODING).map(str::to_string);
    match ingest.take(raw, encoding, enc, held, Some(peer.ip())).await {
        Ok(a) => {
            t.otlp.request(TRANSPORT, Outcome::Accepted);
            let resp = response(&a);
            let body = match enc {
                Encoding::Protobuf => resp.encode_to_vec(),
                Encoding::Json if resp.partial_success.is_none() => b"{}".to_vec(),
                Encoding::Json => serde_json::to_vec(&resp).unwrap_or_else(|_| b"{}".to_vec()),
            };
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, enc.content_type())],
                body,
            )
                .into_response()
        }
        Err(r) => refusal(&ingest, enc, r),
    }
}

/// The export response: empty, or a `partial_success` naming the spans
/// refused for invalid ids.
pub(crate) fn response(a: &Accepted) -> ExportTraceServiceResponse {
    ExportTraceServiceResponse {
        partial_success: (a.rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: a.rejected as i64,
            error_message: a.message.clone(),
        }),
    }
}

/// The answer to a refusal, counted: 400, 413, 429 or 503 (the last two
/// with `Retry-After`), with a `google.rpc.Status` in the request's
/// encoding.
fn refusal(ingest: &Ingest, enc: Encoding, r: Refusal) -> Response {
    ingest.count_refusal(TRANSPORT, &r);
    let msg = r.to_string();
    let (status, code, retry) = match &r {
        Refusal::Malformed(_) => (StatusCode::BAD_REQUEST, INVALID_ARGUMENT, false),
        Refusal::Unsupported(_) => {
            return (StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("{msg}\n")).into_response();
        }
        Refusal::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, INVALID_ARGUMENT, false),
        Refusal::Busy => (StatusCode::TOO_MANY_REQUESTS, RESOURCE_EXHAUSTED, true),
        Refusal::Full => (StatusCode::SERVICE_UNAVAILABLE, RESOURCE_EXHAUSTED, true),
        Refusal::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE, false),
    };
    let mut resp = status_reply(status, enc, code, &msg);
    if retry {
        let secs = ingest.retry_after.as_secs().max(1);
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp
}

/// Room made for a body before more of it arrived.
const FIRST_HOLD: usize = 256 << 10;

/// The whole body (room for up to [`FIRST_HOLD`] of the declared length
/// made at once), its capacity added to `held` as they arrive: `TooLarge` as soon as
/// it passes the limit, `Busy` when the memory budget is taken (the rest
/// is then drained, not kept).
pub(super) async fn read_body(
    mut body: Body,
    ingest: &Ingest,
    held: &mut Held,
    expected: usize,
) -> Result<bytes::Bytes, Refusal> {
    let limit = ingest.max_body_bytes;
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| Refusal::Malformed(format!("cannot read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            drop(buf);
            drain(body).await;
            return Err(Refusal::TooLarge(
                DecodeError::TooLarge { limit }.to_string(),
            ));
        }
        let need = buf.len() + data.len();
        if buf.capacity() < need {
            // what arrived says how much to hold, not what was declared: a
            // stalled body holds only what it sent
            let cap = need
                .max(2 * buf.capacity())
                .max(expected.min(FIRST_HOLD))
                .min(limit);
            ingest.hold_more(held, cap.saturating_sub(held.num_permits()))?;
            buf.reserve(cap - buf.len());
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// Read and discard what is left of a body, within bounds.
pub(super) async fn drain(mut body: Body) {
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
