//! grpc-web for browsers: tonic-web turns grpc-web (binary or text) into
//! gRPC, and this service passes the call through to the order service
//! untouched, whatever its method.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::transport::Channel;
use tower::Service;

#[derive(Clone, Debug)]
pub struct GrpcProxy {
    channel: Channel,
}

impl GrpcProxy {
    pub fn new(channel: Channel) -> Self {
        Self { channel }
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
        let mut channel = self.channel.clone();
        Box::pin(async move {
            let result = async {
                futures::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
                channel.call(request).await
            }
            .await;
            Ok(result.unwrap_or_else(|error| {
                tonic::Status::unavailable(format!("the order service is unavailable: {error}"))
                    .into_http()
            }))
        })
    }
}
