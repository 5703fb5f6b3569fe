//! What every gRPC export shares, as one layer around the server's routes:
//! the request body held in the memory budget frame by frame as it
//! arrives ([`Metered`]), and tonic's decode statuses rewritten to the ones
//! OTLP wants ([`remap_decode_errors`]). A service added to the server is
//! covered without doing anything.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Buf;
use http_body_util::BodyExt;
use tonic::body::Body;
use tonic::codegen::{Service, http};

use super::{TRANSPORT, status_of};
use crate::otlp::{Held, Ingest, Refusal};

/// Which export a request is, by its path: where its refusals are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CountAs {
    Traces,
    Metrics,
    Other,
}

impl CountAs {
    fn of(path: &str) -> CountAs {
        if path.starts_with("/opentelemetry.proto.collector.trace.") {
            CountAs::Traces
        } else if path.starts_with("/opentelemetry.proto.collector.metrics.") {
            CountAs::Metrics
        } else {
            CountAs::Other
        }
    }

    fn count(self, ingest: &Ingest, r: &Refusal) {
        match self {
            CountAs::Traces => ingest.count_refusal(TRANSPORT, r),
            CountAs::Metrics => ingest.count_metrics(TRANSPORT, r.outcome()),
            CountAs::Other => {}
        }
    }
}

/// The layer for `tonic::transport::Server::layer`.
#[derive(Clone)]
pub struct GuardLayer {
    ingest: Arc<Ingest>,
}

impl GuardLayer {
    pub fn new(ingest: Arc<Ingest>) -> Self {
        GuardLayer { ingest }
    }
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            ingest: self.ingest.clone(),
        }
    }
}

/// The routes with every request's body metered and every answer's
/// status rewritten.
#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    ingest: Arc<Ingest>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

impl<S> Service<http::Request<Body>> for Guard<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        // keep the service polled ready for this call, leave its clone
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let count_as = CountAs::of(req.uri().path());
        let slot = HeldSlot::new(self.ingest.hold_nothing());
        let ingest = self.ingest.clone();
        let mut req = req.map(|b| {
            Body::new(Metered {
                inner: b,
                ingest,
                slot: slot.clone(),
                count_as,
            })
        });
        req.extensions_mut().insert(slot);
        Box::pin(async move {
            let resp = inner.call(req).await?;
            Ok(remapped(resp))
        })
    }
}

/// The memory budget a request's message holds while tonic reads it; the
/// export service takes it over with the whole message ([`HeldSlot::take_from`]).
#[derive(Clone)]
pub struct HeldSlot(Arc<std::sync::Mutex<Option<Held>>>);

impl HeldSlot {
    fn new(held: Held) -> Self {
        HeldSlot(Arc::new(std::sync::Mutex::new(Some(held))))
    }

    /// What the request's message holds (nothing when it was not metered).
    pub fn take_from<T>(req: &tonic::Request<T>, ingest: &Ingest) -> Held {
        req.extensions()
            .get::<HeldSlot>()
            .and_then(|s| s.0.lock().unwrap_or_else(|e| e.into_inner()).take())
            .unwrap_or_else(|| ingest.hold_nothing())
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
struct Metered {
    inner: Body,
    ingest: Arc<Ingest>,
    slot: HeldSlot,
    count_as: CountAs,
}

impl http_body::Body for Metered {
    type Data = bytes::Bytes;
    type Error = tonic::codegen::StdError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let frame = match std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            Some(Ok(f)) => f,
            Some(Err(e)) => return Poll::Ready(Some(Err(Box::new(e)))),
            None => return Poll::Ready(None),
        };
        let len = frame.data_ref().map_or(0, |d| d.remaining());
        if let Err(r) = self.slot.charge(&self.ingest, len) {
            self.count_as.count(&self.ingest, &r);
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

/// The answer with its status rewritten: in the headers (trailers-only)
/// or in the trailers.
fn remapped(resp: http::Response<Body>) -> http::Response<Body> {
    let (mut parts, body) = resp.into_parts();
    remap_decode_errors(&mut parts.headers);
    let body = body.map_frame(|mut f| {
        if let Some(t) = f.trailers_mut() {
            remap_decode_errors(t);
        }
        f
    });
    http::Response::from_parts(parts, Body::new(body))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_path() {
        let cases = [
            (
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                CountAs::Traces,
            ),
            (
                "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
                CountAs::Metrics,
            ),
            (
                "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                CountAs::Other,
            ),
            ("/", CountAs::Other),
        ];
        for (path, want) in cases {
            assert_eq!(CountAs::of(path), want, "{path}");
        }
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
