//! grpc-web for browsers: tonic-web turns grpc-web (binary or text) into
//! gRPC, and this service passes the call through to the fronted service it
//! names, if the method is one the gateway exposes (annotated); any other
//! method of a fronted service answers UNIMPLEMENTED.
//!
//! Two things are not passed through as they came:
//! - the headers: only the protocol's own and the allow-listed metadata
//!   (`metadata::grpc_request_headers`), so a client cannot steer the
//!   sidecar behind the gateway with `x-envoy-*`;
//! - the body: read whole, up to `--body-limit` (decoded bytes; grpc-web
//!   requests are one message, never client streams), before the service
//!   sees anything. A larger one, with or without a Content-Length, is
//!   RESOURCE_EXHAUSTED in grpc-web trailers, as REST's is a 413.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::{BodyExt, Full};
use ordermesh_runtime::client::PeerChannel;
use ordermesh_runtime::status::to_status;
use tonic::body::Body;
use tower::{Layer, Service, ServiceExt};

use crate::error::GatewayError;
use crate::metadata::grpc_request_headers;
use ordermesh_runtime::watches::CLIENT_HEADER;

#[derive(Clone, Debug)]
pub struct GrpcProxy {
    /// The service's channel; None for a method that is not exposed.
    channel: Option<PeerChannel>,
    limits: Arc<PassThrough>,
}

/// The client a grpc-web watch counts against, as the gateway names it to
/// the service (see `ordermesh_runtime::watches::CLIENT_HEADER`).
#[derive(Clone, Debug)]
pub struct WatchClient(pub http::HeaderValue);

/// What a passed-through call may carry.
#[derive(Debug)]
pub struct PassThrough {
    /// Largest request body, decoded, in bytes (`--body-limit`).
    pub body_limit: usize,
    /// The operator's `--forward-header` names.
    pub forward_headers: Vec<String>,
}

/// Serves one grpc-web request: to `channel`, or UNIMPLEMENTED without one.
pub async fn serve(
    channel: Option<PeerChannel>,
    limits: Arc<PassThrough>,
    request: http::Request<axum::body::Body>,
) -> axum::response::Response {
    // A declared length over the limit is refused before a byte is read
    // (base64 text is 4/3 of the bytes it carries).
    if let Some(declared) = declared_length(request.headers()) {
        let text = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc-web-text"));
        let carried = if text { declared / 4 * 3 } else { declared };
        if carried > limits.body_limit as u64 {
            let refusal = too_large(limits.body_limit);
            let service = tonic_web::GrpcWebLayer::new().layer(Refuse(refusal));
            return answer(service, request).await;
        }
    }
    let service = tonic_web::GrpcWebLayer::new().layer(GrpcProxy { channel, limits });
    answer(service, request).await
}

async fn answer<S>(service: S, request: http::Request<axum::body::Body>) -> axum::response::Response
where
    S: Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = std::convert::Infallible,
        >,
{
    match service.oneshot(request.map(Body::new)).await {
        Ok(response) => response.map(axum::body::Body::new),
        Err(never) => match never {},
    }
}

fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// How much of a refused body is read and discarded, at most.
const DRAIN_BYTES: usize = 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_millis(500);

async fn drain(body: &mut Body) {
    let discard = async {
        let mut read = 0;
        while read < DRAIN_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, |data| data.len()),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
}

fn too_large(limit: usize) -> tonic::Status {
    tracing::info!(limit, "a grpc-web body over the limit was refused");
    to_status(GatewayError::PayloadTooLarge { limit })
}

/// Answers every call with one status (tonic-web makes it grpc-web).
#[derive(Clone, Debug)]
struct Refuse(tonic::Status);

impl Service<http::Request<Body>> for Refuse {
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: http::Request<Body>) -> Self::Future {
        std::future::ready(Ok(self.0.clone().into_http()))
    }
}

impl Service<http::Request<Body>> for GrpcProxy {
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The channel is polled for readiness inside the call, where its
        // error can become a gRPC status instead of a dropped connection.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let Some(mut channel) = self.channel.clone() else {
            let path = request.uri().path().to_owned();
            return Box::pin(async move {
                Ok(
                    tonic::Status::unimplemented(format!("{path} is not exposed by the gateway"))
                        .into_http(),
                )
            });
        };
        let limits = self.limits.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            parts.headers = grpc_request_headers(&parts.headers, &limits.forward_headers);
            // A watch names its client for the service's budget; a
            // client's own `x-ordermesh-client` was dropped just above.
            if let Some(WatchClient(client)) = parts.extensions.get::<WatchClient>() {
                parts.headers.insert(CLIENT_HEADER, client.clone());
            }
            // Read whole before the service sees it: a body over the limit,
            // whatever its declared length, never leaves the gateway. The
            // buffered body also has its true length, which tonic-web 0.14
            // misreports for grpc-web-text.
            let mut body = body;
            let mut buffered = Vec::new();
            while let Some(frame) = body.frame().await {
                let data = match frame {
                    Ok(frame) => frame.into_data().unwrap_or_default(),
                    Err(error) => {
                        return Ok(tonic::Status::invalid_argument(format!(
                            "reading the request body: {error}"
                        ))
                        .into_http());
                    }
                };
                if buffered.len() + data.len() > limits.body_limit {
                    // HTTP/2 resets a stream whose request is still open
                    // when its answer ends, and a reset drops the answer's
                    // frames not yet written. So a little more of the rest
                    // is read and thrown away (bounded: never buffered,
                    // at most DRAIN_BYTES or DRAIN_TIME), so that a client
                    // just over the limit ends its request and reads the
                    // refusal; and what is left stays open until the
                    // refusal is sent.
                    drain(&mut body).await;
                    let refusal: http::Response<Body> = too_large(limits.body_limit).into_http();
                    return Ok(refusal.map(|answer| {
                        Body::new(answer.map_frame(move |frame| {
                            let _unread = &body;
                            frame
                        }))
                    }));
                }
                buffered.extend_from_slice(&data);
            }
            let body = axum::body::Bytes::from(buffered);
            let request = http::Request::from_parts(parts, Body::new(Full::new(body)));
            let result = async {
                futures::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
                channel.call(request).await
            }
            .await;
            Ok(result.unwrap_or_else(|error| {
                tonic::Status::unavailable(format!("the service is unavailable: {error}"))
                    .into_http()
            }))
        })
    }
}
