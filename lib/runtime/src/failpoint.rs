//! A test-only fault: lose the response of a call after the service has done
//! its work, as a network cut after the commit would. The mesh tests use it
//! to show that a proxy's retry plus the service's idempotency charges a
//! customer once. Off unless `ORDERMESH_FAILPOINT_LOSE_RESPONSES` is set, to
//! `GRPC_PATH=COUNT`, e.g. `/ordermesh.payment.v1.PaymentService/ProcessPayment=1`.
//!
//! The lost response becomes a server error, which tonic hands to hyper, and
//! hyper resets the HTTP/2 stream before any header is sent: to the caller
//! it looks exactly like a connection lost mid-call.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

use tower::{Layer, Service};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

const VARIABLE: &str = "ORDERMESH_FAILPOINT_LOSE_RESPONSES";

#[derive(Debug)]
struct Failpoint {
    path: String,
    remaining: AtomicU32,
}

impl Failpoint {
    fn from_env() -> Option<Arc<Self>> {
        let value = std::env::var(VARIABLE).ok()?;
        let Some((path, count)) = value.rsplit_once('=') else {
            tracing::warn!(value, "{VARIABLE} must be GRPC_PATH=COUNT; ignored");
            return None;
        };
        let Ok(count) = count.parse() else {
            tracing::warn!(value, "{VARIABLE} must be GRPC_PATH=COUNT; ignored");
            return None;
        };
        tracing::warn!(path, count, "failpoint armed: responses will be lost");
        Some(Arc::new(Self {
            path: path.to_owned(),
            remaining: AtomicU32::new(count),
        }))
    }

    /// Whether this call's response is to be lost (and counts it).
    fn take(&self, path: &str) -> bool {
        path == self.path
            && self
                .remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
    }
}

#[derive(Clone, Debug)]
pub struct LoseResponsesLayer {
    failpoint: Option<Arc<Failpoint>>,
}

impl LoseResponsesLayer {
    /// Armed by the environment variable; a pass-through otherwise.
    pub fn from_env() -> Self {
        Self {
            failpoint: Failpoint::from_env(),
        }
    }
}

impl<S> Layer<S> for LoseResponsesLayer {
    type Service = LoseResponses<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoseResponses {
            inner,
            failpoint: self.failpoint.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct LoseResponses<S> {
    inner: S,
    failpoint: Option<Arc<Failpoint>>,
}

impl<S, B> Service<http::Request<B>> for LoseResponses<S>
where
    S: Service<http::Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let lose = self
            .failpoint
            .as_ref()
            .is_some_and(|failpoint| failpoint.take(request.uri().path()));
        let path = lose.then(|| request.uri().path().to_owned());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await.map_err(Into::into)?;
            if let Some(path) = path {
                tracing::warn!(
                    path,
                    "failpoint: losing a response after the call was served"
                );
                return Err("failpoint: response lost".into());
            }
            Ok(response)
        })
    }
}
