//! Metrics, a trace span and a log span for every HTTP request the gateway
//! serves, under the service name "gateway", with the runtime's one
//! instrumentation (`Instruments`): the same metric names as the gRPC
//! services, labelled by the route the routing layer matched.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::KeyValue;
use opentelemetry::trace::FutureExt;
use ordermesh_runtime::trace::{RequestId, extract};
use tracing::Instrument;

use crate::Gateway;
use crate::routing::Matched;

pub async fn observe(
    State(gateway): State<Arc<Gateway>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let label = request
        .extensions()
        .get::<Matched>()
        .map_or("other", |matched| matched.label(&gateway.routes, path))
        .to_owned();
    let parent = extract(request.headers());
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let method = request.method();
    let attributes = || {
        vec![
            KeyValue::new("http.request.method", method.to_string()),
            KeyValue::new("http.route", label.clone()),
        ]
    };
    let observation = gateway
        .instruments
        .serve(&label, &parent, attributes)
        .with_value(RequestId(request_id.clone()));
    let log_span = observation.log_span(&request_id);
    let response = next
        .run(request)
        .with_context(observation.context().clone())
        .instrument(log_span)
        .await;
    let code = response.status();
    observation.finish(
        code.as_str(),
        code.is_server_error(),
        KeyValue::new("http.response.status_code", i64::from(code.as_u16())),
    );
    response
}
