//! OTLP/HTTP `POST /v1/metrics`, and the answer to `/v1/logs`.
//!
//! The same answers as `/v1/traces` (see [`crate::otlp::http`]): 400
//! malformed, 413 over the body limit, over [`super::MAX_POINTS_PER_REQUEST`]
//! data points or the memory budget once decoded, 415 another content type
//! or encoding, 408 a body not received within 10 s, 429 with
//! `Retry-After` when the budget is held by other requests; 200 with
//! `partial_success` (`rejectedDataPoints`) for data points left out. There
//! is no 503: a metrics request never waits for the span buffer.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost::Message;

use crate::otlp::decode::{self, DecodeError, Encoding};
use crate::otlp::http::{
    BODY_READ_TIMEOUT, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE, drain, header_str,
    read_body, status_reply,
};
use crate::otlp::{Ingest, Refusal};
use crate::telemetry::{Outcome, Transport};

const TRANSPORT: Transport = Transport::Http;

/// `/v1/logs`, any method: 404 naming what the agent accepts.
pub async fn logs(State(ingest): State<Arc<Ingest>>, body: Body) -> Response {
    drain(body).await;
    ingest.count_metrics(TRANSPORT, Outcome::LogsNotAccepted);
    (StatusCode::NOT_FOUND, format!("{}\n", super::LOGS_ANSWER)).into_response()
}

pub async fn metrics(
    State(ingest): State<Arc<Ingest>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let enc = match decode::encoding_of(header_str(&headers, header::CONTENT_TYPE)) {
        Ok(e) => e,
        Err(e) => {
            drain(body).await;
            ingest.count_metrics(TRANSPORT, Outcome::Unsupported);
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
    // as for traces: no request permit while the body arrives
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
            ingest.count_metrics(TRANSPORT, Outcome::Timeout);
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
    match ingest
        .take_metrics(raw, encoding, enc, held, Some(peer.ip()))
        .await
    {
        Ok(t) => {
            ingest.count_metrics(TRANSPORT, Outcome::Accepted);
            let resp = t.response();
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

/// The answer to a refusal, counted: 400, 413, 415, 429 (with
/// `Retry-After`) or 503 (shutting down).
fn refusal(ingest: &Ingest, enc: Encoding, r: Refusal) -> Response {
    ingest.count_metrics(TRANSPORT, r.outcome());
    let msg = r.to_string();
    let (status, code, retry) = match &r {
        Refusal::Malformed(_) => (StatusCode::BAD_REQUEST, INVALID_ARGUMENT, false),
        Refusal::Unsupported(_) => {
            return (StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("{msg}\n")).into_response();
        }
        Refusal::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, INVALID_ARGUMENT, false),
        Refusal::Busy | Refusal::Full => (StatusCode::TOO_MANY_REQUESTS, RESOURCE_EXHAUSTED, true),
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
