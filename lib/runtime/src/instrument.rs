//! The one tower layer every role's gRPC server gets, and the one every
//! outgoing channel gets: a span per call (extracting or injecting the trace
//! context), the request metrics, and a tracing span that puts `service`,
//! `trace_id`, `span_id` and `request_id` on every log line of the call.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use futures::FutureExt;
use opentelemetry::trace::{FutureExt as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::Tracer;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::context::AppContext;
use crate::metrics::Metrics;
use crate::trace::{RequestId, extract, inject};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A bounded label for a request path: gRPC methods of known packages keep
/// their name; anything else (a scanner's random paths) is "other", so a
/// client cannot grow the metric's label set.
fn method_label(path: &str) -> &str {
    if path.starts_with("/ordermesh.") || path.starts_with("/grpc.") {
        path
    } else {
        "other"
    }
}

/// The gRPC status name of a response: the `grpc-status` header of a
/// trailers-only answer (how tonic returns a handler's error), else OK.
fn grpc_code<B>(response: &http::Response<B>) -> tonic::Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from)
}

fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn rpc_attributes(path: &str) -> Vec<KeyValue> {
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    vec![
        KeyValue::new("rpc.system", "grpc"),
        KeyValue::new("rpc.service", service.to_owned()),
        KeyValue::new("rpc.method", method.to_owned()),
    ]
}

fn finish(cx: &Context, code: tonic::Code) {
    let span = cx.span();
    span.set_attribute(KeyValue::new("rpc.grpc.status_code", code as i64));
    if code != tonic::Code::Ok {
        span.set_status(Status::error(code_name(code)));
    }
    span.end();
}

/// Instruments a role's gRPC server.
#[derive(Clone)]
pub struct ServerLayer {
    role: &'static str,
    tracer: Tracer,
    metrics: Arc<Metrics>,
}

impl ServerLayer {
    pub fn new(role: &'static str, context: &AppContext) -> Self {
        Self {
            role,
            tracer: context.tracer(role),
            metrics: context.metrics().clone(),
        }
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = Server<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Server {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Server<S> {
    inner: S,
    layer: ServerLayer,
}

impl<S, B, R> Service<http::Request<B>> for Server<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The clone is ready only after its own poll_ready; keep the ready one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let role = self.layer.role;
        let path = request.uri().path().to_owned();
        let parent = extract(request.headers());
        let request_id = parent.get::<RequestId>().map_or_else(
            || format!("om-{}", uuid::Uuid::now_v7().simple()),
            |id| id.0.clone(),
        );
        let span = self
            .layer
            .tracer
            .span_builder(path.clone())
            .with_kind(SpanKind::Server)
            .with_attributes(rpc_attributes(&path))
            .start_with_context(&self.layer.tracer, &parent);
        let cx = parent
            .with_span(span)
            .with_value(RequestId(request_id.clone()));
        let log_span = request_span(role, &path, &cx, &request_id);
        let metrics = self.layer.metrics.clone();
        let started = Instant::now();
        let call = inner
            .call(request)
            .with_context(cx.clone())
            .instrument(log_span);
        Box::pin(call.map(move |result| {
            let code = match &result {
                Ok(response) => grpc_code(response),
                Err(_) => tonic::Code::Unknown,
            };
            let method = method_label(&path);
            metrics
                .requests_total
                .with_label_values(&[role, method, code_name(code)])
                .inc();
            metrics
                .request_duration_seconds
                .with_label_values(&[role, method])
                .observe(started.elapsed().as_secs_f64());
            finish(&cx, code);
            result
        }))
    }
}

/// Instruments a role's calls to its peers.
#[derive(Clone)]
pub struct ClientLayer {
    role: &'static str,
    tracer: Tracer,
    metrics: Arc<Metrics>,
}

impl ClientLayer {
    pub fn new(role: &'static str, context: &AppContext) -> Self {
        Self {
            role,
            tracer: context.tracer(role),
            metrics: context.metrics().clone(),
        }
    }
}

impl<S> Layer<S> for ClientLayer {
    type Service = Client<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Client {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Client<S> {
    inner: S,
    layer: ClientLayer,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Client<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("role", &self.layer.role)
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S, B, R> Service<http::Request<B>> for Client<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let role = self.layer.role;
        let path = request.uri().path().to_owned();
        let parent = Context::current();
        let span = self
            .layer
            .tracer
            .span_builder(path.clone())
            .with_kind(SpanKind::Client)
            .with_attributes(rpc_attributes(&path))
            .start_with_context(&self.layer.tracer, &parent);
        let cx = parent.with_span(span);
        inject(&cx, request.headers_mut());
        let metrics = self.layer.metrics.clone();
        let started = Instant::now();
        Box::pin(inner.call(request).map(move |result| {
            let code = match &result {
                Ok(response) => grpc_code(response),
                Err(_) => tonic::Code::Unavailable,
            };
            let method = method_label(&path);
            metrics
                .client_requests_total
                .with_label_values(&[role, method, code_name(code)])
                .inc();
            metrics
                .client_request_duration_seconds
                .with_label_values(&[role, method])
                .observe(started.elapsed().as_secs_f64());
            finish(&cx, code);
            result
        }))
    }
}

/// The log span of one served request: every log line inside it carries
/// the service, method, trace and span ids of `cx`, and the request id. The
/// gRPC servers and the gateway's HTTP layer both open it here.
pub fn request_span(service: &str, method: &str, cx: &Context, request_id: &str) -> tracing::Span {
    let span_context = cx.span().span_context().clone();
    tracing::info_span!(
        "request",
        service = service,
        method = %method,
        trace_id = %span_context.trace_id(),
        span_id = %span_context.span_id(),
        request_id = %request_id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_paths_share_one_label() {
        assert_eq!(
            method_label("/ordermesh.order.v1.OrderService/GetOrder"),
            "/ordermesh.order.v1.OrderService/GetOrder"
        );
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "/grpc.health.v1.Health/Check"
        );
        assert_eq!(method_label("/wp-admin/x"), "other");
    }

    #[test]
    fn codes_read_from_trailers_only_answers() {
        let ok = http::Response::new(());
        assert_eq!(grpc_code(&ok), tonic::Code::Ok);
        let mut failed = http::Response::new(());
        failed
            .headers_mut()
            .insert("grpc-status", "5".parse().unwrap());
        assert_eq!(grpc_code(&failed), tonic::Code::NotFound);
        assert_eq!(code_name(tonic::Code::NotFound), "NOT_FOUND");
    }
}
