//! One OTLP export service per signal, the same for every signal but for
//! what taking a message means ([`Signal`]): it routes its one `Export`
//! path to the signal over the raw codec and answers `UNIMPLEMENTED`
//! otherwise. The message's bytes were held in the budget as they arrived
//! ([`super::guard`]); the service hands them over with the sender's
//! address.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::{Service, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use super::guard::HeldSlot;
use super::{BoxFuture, codec, status_of};
use crate::otlp::{Held, Ingest, Refusal};

/// An OTLP export signal (traces, metrics) over gRPC.
pub trait Signal: Send + Sync + 'static {
    /// The gRPC service name.
    const NAME: &'static str;
    /// Its `Export` method's path.
    const PATH: &'static str;
    type Response: prost::Message + Default + Send + 'static;
    /// What taking a message gives (the response is made of it).
    type Taken: Send;

    /// Take one whole message (`held` in the budget) from `peer`.
    fn take(
        ingest: Arc<Ingest>,
        body: bytes::Bytes,
        held: Held,
        peer: Option<IpAddr>,
    ) -> impl Future<Output = Result<Self::Taken, Refusal>> + Send;

    fn response(taken: &Self::Taken) -> Self::Response;

    /// Count a request's outcome under this signal's families.
    fn count(ingest: &Ingest, outcome: Result<(), &Refusal>);
}

/// The service of signal `S`.
pub struct ExportService<S> {
    ingest: Arc<Ingest>,
    signal: PhantomData<fn() -> S>,
}

impl<S> ExportService<S> {
    pub fn new(ingest: Arc<Ingest>) -> Self {
        ExportService {
            ingest,
            signal: PhantomData,
        }
    }
}

impl<S> Clone for ExportService<S> {
    fn clone(&self) -> Self {
        ExportService::new(self.ingest.clone())
    }
}

impl<S: Signal> NamedService for ExportService<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for ExportService<S>
where
    S: Signal,
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
        if req.uri().path() != S::PATH {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let ingest = self.ingest.clone();
        Box::pin(async move {
            let mut grpc = codec::server::<S::Response>(ingest.max_body_bytes);
            let unary = Unary::<S> {
                ingest,
                signal: PhantomData,
            };
            Ok(grpc.unary(unary, req).await)
        })
    }
}

/// `Export` of signal `S`, the message undecoded.
struct Unary<S> {
    ingest: Arc<Ingest>,
    signal: PhantomData<fn() -> S>,
}

impl<S: Signal> tonic::server::UnaryService<bytes::Bytes> for Unary<S> {
    type Response = S::Response;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Response<Self::Response>, Status>> + Send>>;

    fn call(&mut self, request: Request<bytes::Bytes>) -> Self::Future {
        let ingest = self.ingest.clone();
        let held = HeldSlot::take_from(&request, &ingest);
        // the sender's address (tonic's TcpConnectInfo), for its pod
        let peer = request.remote_addr().map(|a| a.ip());
        let body = request.into_inner();
        Box::pin(async move {
            let taken = S::take(ingest.clone(), body, held, peer).await;
            S::count(&ingest, taken.as_ref().map(|_| ()));
            match taken {
                Ok(t) => Ok(Response::new(S::response(&t))),
                Err(r) => Err(status_of(&r, ingest.retry_after)),
            }
        })
    }
}
