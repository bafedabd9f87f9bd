//! The one handler behind every annotated route: find the route, build the
//! request message, call the service, answer JSON (or Server-Sent Events for
//! a server stream).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http::header::CONTENT_TYPE;

use crate::Gateway;
use crate::error::GatewayError;
use crate::observe::MatchedRoute;
use crate::routes::NoRoute;
use crate::transcode::{request_message, to_json};
use crate::upstream::{headers_from, metadata_from, timeout_from};

pub async fn transcode(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    match handle(&gateway, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn handle(gateway: &Gateway, request: Request) -> Result<Response, GatewayError> {
    let (mut parts, body) = request.into_parts();
    // Usually matched already by the observing layer.
    let matched = parts
        .extensions
        .remove::<MatchedRoute>()
        .and_then(|matched| Some((gateway.routes.get(matched.index)?, matched.bindings)));
    let (route, bindings) = match matched {
        Some(found) => Ok(found),
        None => gateway.routes.find(&parts.method, parts.uri.path()),
    }
    .map_err(|no_route| match no_route {
        NoRoute::NotFound => {
            GatewayError::NotFound(format!("{} {}", parts.method, parts.uri.path()))
        }
        NoRoute::MethodNotAllowed(allowed) => GatewayError::MethodNotAllowed {
            method: parts.method.to_string(),
            allowed: allowed
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        },
    })?;
    let limit = gateway.settings.body_limit;
    let body = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| GatewayError::PayloadTooLarge { limit })?;
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let message = request_message(
        route,
        bindings,
        parts.uri.query(),
        &body,
        content_type,
        gateway.settings.ignore_unknown_fields,
    )?;
    let metadata = metadata_from(&parts.headers, &gateway.settings.forward_headers);

    if route.server_streaming() {
        let stream = gateway
            .upstreams
            .server_streaming(route, message, metadata)
            .await
            .map_err(GatewayError::Upstream)?;
        let shutdown = gateway.shutdown.clone();
        let events = async_stream::stream! {
            let mut stream = stream;
            loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => return,
                    next = stream.next() => next,
                };
                match next {
                    None => return,
                    Some(Ok(message)) => match to_json(&message) {
                        Ok(json) => yield Ok::<_, Infallible>(Event::default().data(json)),
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
    let (metadata, message, _) = response.into_parts();
    let json = to_json(&message)?;
    let mut response = Response::new(Body::from(json));
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response.headers_mut().extend(headers_from(&metadata));
    Ok(response)
}
