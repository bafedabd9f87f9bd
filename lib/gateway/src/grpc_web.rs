//! grpc-web for browsers: tonic-web turns grpc-web (binary or text) into
//! gRPC, and this service passes the call through untouched to the fronted
//! service it names, if the method is one the gateway exposes (annotated);
//! any other method of a fronted service answers UNIMPLEMENTED.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use ordermesh_runtime::client::PeerChannel;
use tonic::body::Body;
use tower::{Layer, Service, ServiceExt};

#[derive(Clone, Debug)]
pub struct GrpcProxy {
    /// The service's channel; None for a method that is not exposed.
    channel: Option<PeerChannel>,
}

/// Serves one grpc-web request: to `channel`, or UNIMPLEMENTED without one.
pub async fn serve(
    channel: Option<PeerChannel>,
    request: http::Request<axum::body::Body>,
) -> axum::response::Response {
    let service = tonic_web::GrpcWebLayer::new().layer(GrpcProxy { channel });
    let request = request.map(Body::new);
    match service.oneshot(request).await {
        Ok(response) => response.map(axum::body::Body::new),
        Err(never) => match never {},
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
        // tonic-web 0.14 decodes grpc-web-text but reports the base64 body's
        // size as the decoded body's, so hyper would send a Content-Length
        // the data overruns and the server would reset the stream. A body of
        // unknown length goes out as plain HTTP/2 data frames instead.
        let request = request.map(|body| {
            let stream = axum::body::Body::new(body).into_data_stream();
            Body::new(axum::body::Body::from_stream(stream))
        });
        let Some(mut channel) = self.channel.clone() else {
            let path = request.uri().path().to_owned();
            return Box::pin(async move {
                Ok(
                    tonic::Status::unimplemented(format!("{path} is not exposed by the gateway"))
                        .into_http(),
                )
            });
        };
        Box::pin(async move {
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
