//! Metrics, a trace span and a log span for every HTTP request the gateway
//! serves, under the service name "gateway" (the same metric names as the
//! gRPC services: `requests_total`, `request_duration_seconds`).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::KeyValue;
use opentelemetry::trace::{FutureExt, SpanKind, Status, TraceContextExt, Tracer};
use ordermesh_runtime::trace::{RequestId, extract};
use tracing::Instrument;

use crate::Gateway;
use crate::template::PathBindings;

/// The annotated route a request matched, found once here and used again
/// by the handler.
#[derive(Clone, Debug)]
pub struct MatchedRoute {
    pub index: usize,
    pub bindings: PathBindings,
}

/// Static paths keep their name as a label; annotated routes use their
/// template; anything else is "other", so clients cannot grow the label set.
fn route_label(gateway: &Gateway, request: &mut Request) -> String {
    let path = request.uri().path();
    if matches!(path, "/" | "/openapi.json" | "/healthz" | "/readyz") {
        return path.to_owned();
    }
    if path.starts_with("/ordermesh.") {
        return "grpc-web".to_owned();
    }
    match gateway.routes.find_index(request.method(), path) {
        Ok((index, bindings)) => {
            request
                .extensions_mut()
                .insert(MatchedRoute { index, bindings });
            gateway
                .routes
                .get(index)
                .map_or_else(|| "other".to_owned(), |route| route.label.clone())
        }
        Err(_) => "other".to_owned(),
    }
}

pub async fn observe(
    State(gateway): State<Arc<Gateway>>,
    mut request: Request,
    next: Next,
) -> Response {
    let label = route_label(&gateway, &mut request);
    let parent = extract(request.headers());
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let span = gateway
        .tracer
        .span_builder(label.clone())
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", request.method().to_string()),
            KeyValue::new("http.route", label.clone()),
        ])
        .start_with_context(&gateway.tracer, &parent);
    let cx = parent
        .with_span(span)
        .with_value(RequestId(request_id.clone()));
    let log_span = ordermesh_runtime::instrument::request_span("gateway", &label, &cx, &request_id);
    let started = Instant::now();
    let response = next
        .run(request)
        .with_context(cx.clone())
        .instrument(log_span)
        .await;
    let code = response.status();
    let metrics = &gateway.metrics;
    metrics
        .requests_total
        .with_label_values(&["gateway", &label, code.as_str()])
        .inc();
    metrics
        .request_duration_seconds
        .with_label_values(&["gateway", &label])
        .observe(started.elapsed().as_secs_f64());
    let span = cx.span();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(code.as_u16()),
    ));
    if code.is_server_error() {
        span.set_status(Status::error(code.to_string()));
    }
    span.end();
    response
}
