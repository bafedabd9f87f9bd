//! The server layer that applies failpoints named by gRPC paths: a delay or
//! a failure before the handler runs, a lost response after it ran.

use std::pin::Pin;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::{Failpoints, Hit};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

#[derive(Clone, Debug)]
pub struct FailpointLayer {
    failpoints: Failpoints,
}

impl FailpointLayer {
    pub(super) fn new(failpoints: Failpoints) -> Self {
        Self { failpoints }
    }
}

impl<S> Layer<S> for FailpointLayer {
    type Service = FailpointService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FailpointService {
            inner,
            failpoints: self.failpoints.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct FailpointService<S> {
    inner: S,
    failpoints: Failpoints,
}

impl<S> Service<http::Request<tonic::body::Body>> for FailpointService<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if self.failpoints.is_empty() {
            let response = self.inner.call(request);
            return Box::pin(async move { response.await.map_err(Into::into) });
        }
        // The clone is ready only after its own poll_ready; keep the ready one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let failpoints = self.failpoints.clone();
        let path = request.uri().path().to_owned();
        Box::pin(async move {
            if let Hit::Fail(code) = failpoints.before(&path).await {
                let status =
                    tonic::Status::new(code, format!("failpoint {path}: injected failure"));
                return Ok(status.into_http());
            }
            let response = inner.call(request).await.map_err(Into::into)?;
            if failpoints.lose_now(&path) {
                return Err("failpoint: response lost".into());
            }
            Ok(response)
        })
    }
}
