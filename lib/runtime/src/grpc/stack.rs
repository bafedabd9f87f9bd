//! The layers every served gRPC call passes, outermost first:
//! instrumentation (spans, metrics, logs), then either the load budget
//! (shed at once over `--max-in-flight`; watches also held to theirs) or,
//! for health checks and reflection, no budget at all, so an overloaded pod
//! still answers its probes; then failpoints, the caller's deadline, and
//! the service.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::FutureExt;
use hyper::body::Incoming;
use tonic::service::Routes;
use tower::util::BoxCloneService;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

use crate::context::AppContext;
use crate::deadline::Deadline;
use crate::instrument::InstrumentLayer;
use crate::methods::KnownMethods;
use crate::watches::{HeldBody, WatchBudget, served_client_key};

pub type GrpcRequest = http::Request<tonic::body::Body>;
pub type GrpcResponse = http::Response<tonic::body::Body>;
type Inner = BoxCloneService<GrpcRequest, GrpcResponse, BoxError>;

/// Paths answered outside the load budget: probes and tooling.
fn unbudgeted(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// `routes` (the role's services, health and reflection) behind every
/// served call's layers, ready for [`crate::listener::serve`].
pub fn stack(
    role: &'static str,
    routes: Routes,
    settings: &super::GrpcServerSettings,
    context: &AppContext,
) -> impl Service<
    http::Request<Incoming>,
    Response = GrpcResponse,
    Error = BoxError,
    Future = impl Send + 'static,
> + Clone
+ Send
+ 'static {
    let max_in_flight = settings.max_in_flight;
    let watches = WatchLimit {
        budget: WatchBudget::new(&settings.watches, role, context.metrics()),
        methods: context.methods().clone(),
    };
    let budgeted = ServiceBuilder::new()
        // Over the limit, refuse at once with RESOURCE_EXHAUSTED, which
        // callers and the mesh may retry elsewhere, rather than queue.
        .map_result(move |result: Result<GrpcResponse, BoxError>| match result {
            Err(error) if error.is::<tower::load_shed::error::Overloaded>() => {
                Ok(tonic::Status::resource_exhausted(format!(
                    "{role} is at its limit of {max_in_flight} calls in flight; retry shortly"
                ))
                .into_http())
            }
            other => other,
        })
        .load_shed()
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            max_in_flight,
        ))
        // Inside the budget: a slowed call holds its slot, as a slow
        // handler would.
        .layer(context.failpoints().layer())
        .layer_fn(WithDeadline)
        .layer_fn(|inner| watches.clone().around(inner))
        .service(routes.clone());
    let free = ServiceBuilder::new()
        .layer(context.failpoints().layer())
        .layer_fn(WithDeadline)
        .service(routes);
    let split = Split {
        budgeted: BoxCloneService::new(budgeted),
        free: BoxCloneService::new(free),
    };
    ServiceBuilder::new()
        .map_request(|request: http::Request<Incoming>| request.map(tonic::body::Body::new))
        .layer(InstrumentLayer::server(role, context))
        .service(split)
}

/// Sends probes and reflection around the budget, everything else through it.
#[derive(Clone)]
struct Split {
    budgeted: Inner,
    free: Inner,
}

impl Service<GrpcRequest> for Split {
    type Response = GrpcResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<GrpcResponse, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each side is made ready per call (below): readiness of one must
        // not wait on the other.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: GrpcRequest) -> Self::Future {
        let side = if unbudgeted(request.uri().path()) {
            self.free.clone()
        } else {
            self.budgeted.clone()
        };
        Box::pin(side.oneshot(request))
    }
}

/// Answers DEADLINE_EXCEEDED once the caller's `grpc-timeout` has passed,
/// dropping the call. (tonic's own layer answers CANCELLED, which callers
/// and the mesh read as the caller giving up, not as a deadline.)
#[derive(Clone, Debug)]
struct WithDeadline<S>(S);

impl<S> Service<GrpcRequest> for WithDeadline<S>
where
    S: Service<GrpcRequest, Response = GrpcResponse>,
    S::Future: Send + 'static,
{
    type Response = GrpcResponse;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<GrpcResponse, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: GrpcRequest) -> Self::Future {
        let deadline = Deadline::from_headers(request.headers());
        let call = self.0.call(request);
        match deadline {
            None => Box::pin(call),
            Some(deadline) => Box::pin(tokio::time::timeout(deadline.remaining(), call).map(
                |result| {
                    result.unwrap_or_else(|_| {
                        Ok(tonic::Status::deadline_exceeded(
                            "the caller's deadline passed before the call finished",
                        )
                        .into_http())
                    })
                },
            )),
        }
    }
}

/// Holds each watch (a known server-streaming method) to the role's
/// budget: refused with RESOURCE_EXHAUSTED over it, and its place held
/// until the response stream ends.
#[derive(Clone)]
struct WatchLimit {
    budget: WatchBudget,
    methods: KnownMethods,
}

impl WatchLimit {
    fn around<S>(self, inner: S) -> Watched<S> {
        Watched { limit: self, inner }
    }
}

#[derive(Clone)]
struct Watched<S> {
    limit: WatchLimit,
    inner: S,
}

impl<S> Service<GrpcRequest> for Watched<S>
where
    S: Service<GrpcRequest, Response = GrpcResponse>,
    S::Future: Send + 'static,
{
    type Response = GrpcResponse;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<GrpcResponse, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: GrpcRequest) -> Self::Future {
        if !self.limit.methods.is_server_streaming(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        let peer = request
            .extensions()
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|info| info.remote_addr);
        let client = served_client_key(request.headers(), peer);
        match self.limit.budget.open(client) {
            Err(refused) => {
                let response = refused.into_status().into_http();
                Box::pin(async move { Ok(response) })
            }
            Ok(permit) => Box::pin(self.inner.call(request).map(move |result| {
                result.map(|response| {
                    response.map(|body| tonic::body::Body::new(HeldBody::new(body, permit)))
                })
            })),
        }
    }
}
