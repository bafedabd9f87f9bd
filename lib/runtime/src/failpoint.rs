//! A test-only fault: lose the response of a call after the service has done
//! its work, as a network cut after the commit would. The mesh tests use it
//! to show that a proxy's retry plus the service's idempotency charges a
//! customer once. Off unless set, per App, by `--failpoint-lose-responses`
//! (or `ORDERMESH_FAILPOINT_LOSE_RESPONSES`) to `GRPC_PATH=COUNT`, e.g.
//! `/ordermesh.payment.v1.PaymentService/ProcessPayment=1`.
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

/// Test-only faults an App may be started with; none by default.
#[derive(Clone, Debug, clap::Args)]
pub struct FailpointSettings {
    /// Test only: lose the response of GRPC_PATH after it was served, COUNT
    /// times (`GRPC_PATH=COUNT`).
    #[arg(long = "failpoint-lose-responses", env = "ORDERMESH_FAILPOINT_LOSE_RESPONSES", value_parser = parse_lose_responses, hide = true)]
    pub lose_responses: Option<(String, u32)>,
}

impl Default for FailpointSettings {
    fn default() -> Self {
        crate::settings::defaults()
    }
}

fn parse_lose_responses(value: &str) -> Result<(String, u32), String> {
    let (path, count) = value
        .rsplit_once('=')
        .ok_or_else(|| format!("{value:?} is not GRPC_PATH=COUNT"))?;
    let count = count
        .parse()
        .map_err(|_| format!("{count:?} is not a count"))?;
    Ok((path.to_owned(), count))
}

#[derive(Debug)]
struct Failpoint {
    path: String,
    remaining: AtomicU32,
}

impl Failpoint {
    /// Whether this call's response is to be lost (and counts it).
    fn take(&self, path: &str) -> bool {
        path == self.path
            && self
                .remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
    }
}

/// The failpoints of one App.
#[derive(Clone, Debug, Default)]
pub struct Failpoints {
    lose_responses: Option<Arc<Failpoint>>,
}

impl Failpoints {
    pub fn new(settings: &FailpointSettings) -> Self {
        let lose_responses = settings.lose_responses.as_ref().map(|(path, count)| {
            tracing::warn!(path, count, "failpoint armed: responses will be lost");
            Arc::new(Failpoint {
                path: path.clone(),
                remaining: AtomicU32::new(*count),
            })
        });
        Self { lose_responses }
    }

    /// The server layer that loses responses as armed (a pass-through when not).
    pub fn lose_responses_layer(&self) -> LoseResponsesLayer {
        LoseResponsesLayer {
            failpoint: self.lose_responses.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct LoseResponsesLayer {
    failpoint: Option<Arc<Failpoint>>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_path_and_count() {
        assert_eq!(
            parse_lose_responses("/a.B/C=2"),
            Ok(("/a.B/C".to_owned(), 2))
        );
        assert!(parse_lose_responses("/a.B/C").is_err());
        assert!(parse_lose_responses("/a.B/C=x").is_err());
    }

    #[test]
    fn loses_exactly_count_responses_of_its_path() {
        let failpoints = Failpoints::new(&FailpointSettings {
            lose_responses: Some(("/a.B/C".to_owned(), 2)),
        });
        let point = failpoints.lose_responses.expect("armed");
        assert!(!point.take("/a.B/D"));
        assert!(point.take("/a.B/C"));
        assert!(point.take("/a.B/C"));
        assert!(!point.take("/a.B/C"));
        assert!(Failpoints::default().lose_responses.is_none());
    }
}
