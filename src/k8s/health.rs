//! Watch state for `/metrics`, seen from the HTTP client: a layer under
//! the kube client notes whether the last list or watch request of each
//! watched collection was answered with a 2xx. (kube's watcher yields
//! nothing when a watch merely reconnects, so the stream alone cannot tell
//! that a watch is healthy again.) A stream that breaks later is reported
//! by the task that reads it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};

use crate::telemetry::{Telemetry, Watch};

/// The watched collection a request path belongs to.
pub fn watch_of(path: &str) -> Option<Watch> {
    if path == "/api/v1/pods" {
        Some(Watch::Pods)
    } else if path == "/apis/events.k8s.io/v1/events" {
        Some(Watch::Events)
    } else {
        None
    }
}

#[derive(Clone)]
pub struct WatchHealthLayer {
    telemetry: Arc<Telemetry>,
}

impl WatchHealthLayer {
    pub fn new(telemetry: Arc<Telemetry>) -> Self {
        WatchHealthLayer { telemetry }
    }
}

impl<S> Layer<S> for WatchHealthLayer {
    type Service = WatchHealth<S>;

    fn layer(&self, inner: S) -> WatchHealth<S> {
        WatchHealth {
            inner,
            telemetry: self.telemetry.clone(),
        }
    }
}

pub struct WatchHealth<S> {
    inner: S,
    telemetry: Arc<Telemetry>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqB, ResB> Service<Request<ReqB>> for WatchHealth<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let watch = watch_of(req.uri().path());
        let fut = self.inner.call(req);
        let telemetry = self.telemetry.clone();
        Box::pin(async move {
            let r = fut.await;
            if let Some(w) = watch {
                let ok = matches!(&r, Ok(resp) if resp.status().is_success());
                telemetry.k8s.watch_state(w, ok);
            }
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(watch_of("/api/v1/pods"), Some(Watch::Pods));
        assert_eq!(
            watch_of("/apis/events.k8s.io/v1/events"),
            Some(Watch::Events)
        );
        assert_eq!(watch_of("/api/v1/namespaces/a/pods/b"), None);
        assert_eq!(
            watch_of("/apis/coordination.k8s.io/v1/namespaces/a/leases/b"),
            None
        );
    }
}
