//! Each request of a connection: refused here when its target or its
//! header count is over the limit, told where it came from, and counted in
//! flight until its response body ends, so the connection's watchdog knows
//! when it is idle (a watch stays in flight as long as it streams).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::FutureExt;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::connection::Limits;
use super::events::{Events, RefuseReason};

/// A connection's requests in flight, and since when it has had none.
#[derive(Clone, Debug)]
pub struct Activity(Arc<ActivityState>);

#[derive(Debug)]
struct ActivityState {
    in_flight: AtomicUsize,
    served: AtomicBool,
    idle_since: Mutex<Option<Instant>>,
    changed: Notify,
}

impl Activity {
    pub fn new() -> Self {
        Self(Arc::new(ActivityState {
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            idle_since: Mutex::new(Some(Instant::now())),
            changed: Notify::new(),
        }))
    }

    /// Whether any request has arrived whole.
    pub fn served(&self) -> bool {
        self.0.served.load(Ordering::Acquire)
    }

    /// Since when nothing has been in flight; `None` while something is.
    pub fn idle_since(&self) -> Option<Instant> {
        *self
            .0
            .idle_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Resolves once a request starts or the last one in flight ends.
    pub async fn changed(&self) {
        self.0.changed.notified().await;
    }

    fn start(&self) -> InFlight {
        self.0.served.store(true, Ordering::Release);
        if self.0.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            self.set_idle_since(None);
        }
        InFlight(self.clone())
    }

    fn set_idle_since(&self, since: Option<Instant>) {
        *self
            .0
            .idle_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = since;
        self.0.changed.notify_one();
    }
}

/// One request in flight, until dropped with its response body.
#[derive(Debug)]
struct InFlight(Activity);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.set_idle_since(Some(Instant::now()));
        }
    }
}

/// A listener's service, as one connection runs it.
#[derive(Clone)]
pub struct PerConnection<S> {
    inner: S,
    peer: SocketAddr,
    local: SocketAddr,
    limits: Arc<Limits>,
    events: Events,
    activity: Activity,
}

impl<S> PerConnection<S> {
    pub fn new(
        inner: S,
        peer: SocketAddr,
        local: SocketAddr,
        limits: Arc<Limits>,
        events: Events,
        activity: Activity,
    ) -> Self {
        Self {
            inner,
            peer,
            local,
            limits,
            events,
            activity,
        }
    }

    fn refuse(&self, reason: RefuseReason, grpc: bool) -> Option<http::Response<Full<Bytes>>> {
        self.events.refused(reason, self.peer);
        if grpc {
            // A gRPC client reads a status, not an HTTP error page: a
            // trailers-only answer, as gRPC servers give for oversized
            // metadata.
            let message = match reason {
                RefuseReason::UriTooLong => "request path too long",
                RefuseReason::TooManyHeaders => "too many metadata entries",
            };
            return http::Response::builder()
                .header(http::header::CONTENT_TYPE, "application/grpc")
                .header(
                    "grpc-status",
                    (tonic::Code::ResourceExhausted as i32).to_string(),
                )
                .header("grpc-message", message.replace(' ', "%20"))
                .body(Full::new(Bytes::new()))
                .ok();
        }
        let (status, message) = match reason {
            RefuseReason::UriTooLong => {
                (http::StatusCode::URI_TOO_LONG, "request target too long\n")
            }
            RefuseReason::TooManyHeaders => (
                http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many request headers\n",
            ),
        };
        http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header(http::header::CONNECTION, "close")
            .body(Full::new(Bytes::from_static(message.as_bytes())))
            .ok()
    }
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<Incoming>> for PerConnection<S>
where
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>> + Send + 'static,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
    type Response = http::Response<GuardedBody<B>>;
    type Error = tower::BoxError;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<Incoming>) -> Self::Future {
        let guard = self.activity.start();
        let target = request
            .uri()
            .path_and_query()
            .map_or(0, |p| p.as_str().len());
        let refusal = if target > self.limits.max_uri_bytes {
            Some(RefuseReason::UriTooLong)
        } else if request.headers().len() > self.limits.max_headers {
            // hyper counts HTTP/1.1 headers itself; HTTP/2's are counted here.
            Some(RefuseReason::TooManyHeaders)
        } else {
            None
        };
        let grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.starts_with("application/grpc") && !v.starts_with("application/grpc-web")
            });
        if let Some(response) = refusal.and_then(|reason| self.refuse(reason, grpc)) {
            let response = response.map(|body| GuardedBody::new(Either::Right(body), guard));
            return Box::pin(async move { Ok(response) });
        }
        let extensions = request.extensions_mut();
        extensions.insert(tonic::transport::server::TcpConnectInfo {
            local_addr: Some(self.local),
            remote_addr: Some(self.peer),
        });
        extensions.insert(axum::extract::ConnectInfo(self.peer));
        Box::pin(self.inner.call(request).map(move |result| match result {
            Ok(response) => Ok(response.map(|body| GuardedBody::new(Either::Left(body), guard))),
            Err(error) => Err(error.into()),
        }))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until it ends.
    pub struct GuardedBody<B> {
        #[pin]
        inner: Either<B, Full<Bytes>>,
        guard: Option<InFlight>,
    }
}

impl<B> GuardedBody<B> {
    fn new(inner: Either<B, Full<Bytes>>, guard: InFlight) -> Self {
        Self {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B> http_body::Body for GuardedBody<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<tower::BoxError>,
{
    type Data = Bytes;
    type Error = tower::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
