//! The one handler behind every annotated route: build the request message
//! for the route the routing layer matched, call the service, answer JSON
//! (or Server-Sent Events for a server stream).

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::Request;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http::header::CONTENT_TYPE;

use ordermesh_runtime::watches::CLIENT_HEADER;

use crate::Gateway;
use crate::error::GatewayError;
use crate::metadata::{headers_from, metadata_from, timeout_from};
use crate::routes::{NoRoute, Route};
use crate::template::PathBindings;
use crate::transcode::{dynamic_answer_json, needs_json, request_message, require_json, to_json};

/// A unary answer's JSON: written from its bytes where the route's writer
/// covers them, else through a `DynamicMessage`, exactly as before.
fn answer_json(route: &Route, answer: &[u8]) -> Result<String, GatewayError> {
    match route.response.write(answer) {
        Ok(json) => Ok(json),
        Err(_) => dynamic_answer_json(route.rpc.output(), answer),
    }
}

pub async fn transcode(
    gateway: &Gateway,
    route: &Route,
    bindings: PathBindings,
    request: Request,
    subject: Option<String>,
) -> Response {
    match handle(gateway, route, bindings, request, subject).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// The final event of a watch the gateway ended: watch again to go on.
fn watch_over(why: String) -> Event {
    let status = tonic::Status::deadline_exceeded(format!("{why}; watch again to go on"));
    let error = GatewayError::Upstream(status);
    Event::default()
        .event("error")
        .data(error.body().to_string())
}

/// The answer to a request no route matched.
pub fn unrouted(no_route: &NoRoute, request: &Request) -> Response {
    let (method, path) = (request.method(), request.uri().path());
    match no_route {
        NoRoute::NotFound => GatewayError::NotFound(format!("{method} {path}")),
        NoRoute::MethodNotAllowed(allowed) => GatewayError::MethodNotAllowed {
            method: method.to_string(),
            allowed: allowed
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        },
    }
    .into_response()
}

async fn handle(
    gateway: &Gateway,
    route: &Route,
    bindings: PathBindings,
    request: Request,
    subject: Option<String>,
) -> Result<Response, GatewayError> {
    // A watch takes its place in the budget before anything is read.
    let permit = if route.server_streaming() {
        let client = crate::watch_client(subject.as_deref(), &request);
        let permit = gateway
            .watches
            .open(client.clone())
            .map_err(GatewayError::TooManyWatches)?;
        Some((permit, client))
    } else {
        None
    };
    let (parts, body) = request.into_parts();
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    // Before a byte of the body is read.
    if needs_json(route, &parts.method) {
        require_json(content_type)?;
    }
    let limit = gateway.settings.body_limit;
    let body = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| GatewayError::PayloadTooLarge { limit })?;
    let message = request_message(
        route,
        bindings,
        parts.uri.query(),
        &body,
        content_type,
        gateway.settings.ignore_unknown_fields,
    )?;
    let mut metadata = metadata_from(&parts.headers, &gateway.settings.forward_headers);

    if let Some((permit, client)) = permit {
        let mut message = message;
        let last_event_id = parts
            .headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok());
        crate::cursor::resume(&mut message, last_event_id);
        // The service budgets watches by this client, not by the gateway.
        if let Ok(value) = client.parse() {
            metadata.insert(CLIENT_HEADER, value);
        }
        let stream = gateway
            .upstreams
            .server_streaming(route, message, metadata)
            .await
            .map_err(GatewayError::Upstream)?;
        let shutdown = gateway.shutdown.clone();
        let (idle, lifetime) = (
            gateway.settings.watch_idle_timeout,
            gateway.settings.watch_max_lifetime,
        );
        let events = async_stream::stream! {
            let _permit = permit;
            let mut stream = stream;
            let ends = tokio::time::sleep(lifetime);
            tokio::pin!(ends);
            loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = &mut ends => {
                        yield Ok(watch_over(format!("the watch reached the gateway's longest life ({})", humantime::format_duration(lifetime))));
                        return;
                    }
                    next = tokio::time::timeout(idle, stream.next()) => match next {
                        Ok(next) => next,
                        Err(_) => {
                            yield Ok(watch_over(format!("nothing changed for {}", humantime::format_duration(idle))));
                            return;
                        }
                    },
                };
                match next {
                    None => return,
                    Some(Ok(message)) => match to_json(&message) {
                        Ok(json) => {
                            let event = Event::default().data(json);
                            yield Ok::<_, Infallible>(match crate::cursor::event_id(&message) {
                                Some(id) => event.id(id),
                                None => event,
                            })
                        }
                        Err(error) => {
                            yield Ok(Event::default().event("error").data(error.body().to_string()));
                            return;
                        }
                    },
                    // An error mid-stream is a final `error` event, never a
                    // silently closed 200.
                    Some(Err(status)) => {
                        let error = GatewayError::Upstream(status);
                        yield Ok(Event::default().event("error").data(error.body().to_string()));
                        return;
                    }
                }
            }
        };
        return Ok(Sse::new(events)
            .keep_alive(KeepAlive::default())
            .into_response());
    }

    let timeout = timeout_from(&parts.headers, gateway.settings.request_timeout);
    let response = gateway
        .upstreams
        .unary(route, message, metadata, timeout)
        .await
        .map_err(GatewayError::Upstream)?;
    let (metadata, answer, _) = response.into_parts();
    let json = answer_json(route, &answer)?;
    let mut response = Response::new(Body::from(json));
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response.headers_mut().extend(headers_from(&metadata));
    Ok(response)
}
