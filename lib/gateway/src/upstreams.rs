//! The services behind the gateway, by full gRPC service name: a registry
//! filled from configuration (`GatewaySettings::upstream_urls`), one
//! instrumented channel each, made here and nowhere else. REST calls,
//! grpc-web and the readiness check all go through these channels, so each
//! makes a client span and the client metrics.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use ordermesh_runtime::AppContext;
use ordermesh_runtime::client::{GrpcClientSettings, PeerChannel, peer_channel};
use prost_reflect::DynamicMessage;
use tonic::client::Grpc;
use tonic::metadata::MetadataMap;
use tonic::{Extensions, Request, Status, Streaming};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::codec::{DynamicCodec, RawAnswerCodec};
use crate::routes::Route;

/// One fronted service.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub service: String,
    channel: PeerChannel,
    /// Watches ride connections of their own, so however many are open
    /// they never take the HTTP/2 stream slots unary calls need; enough of
    /// them that the watch budget fits in their stream slots.
    streams: Vec<PeerChannel>,
    next_stream: Arc<AtomicUsize>,
}

/// Watches per upstream connection, under a service's default of 256
/// concurrent streams.
const WATCHES_PER_CONNECTION: usize = 200;

#[derive(Clone, Debug, Default)]
pub struct Upstreams {
    by_service: HashMap<String, Upstream>,
}

impl Upstreams {
    /// A lazily connecting, instrumented channel to each of `urls`.
    pub fn connect(
        urls: &[(String, String)],
        settings: &GrpcClientSettings,
        max_watches: usize,
        context: &AppContext,
    ) -> anyhow::Result<Self> {
        let stream_connections = max_watches.div_ceil(WATCHES_PER_CONNECTION).clamp(1, 16);
        let mut by_service = HashMap::new();
        for (service, url) in urls {
            let channel = peer_channel("gateway", url, settings, context)?;
            let streams = (0..stream_connections)
                .map(|_| peer_channel("gateway", url, settings, context))
                .collect::<anyhow::Result<_>>()?;
            by_service.insert(
                service.clone(),
                Upstream {
                    service: service.clone(),
                    channel,
                    streams,
                    next_stream: Arc::default(),
                },
            );
        }
        Ok(Self { by_service })
    }

    pub fn get(&self, service: &str) -> Option<&Upstream> {
        self.by_service.get(service)
    }

    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.by_service.keys().map(String::as_str)
    }

    fn of(&self, route: &Route) -> Result<&Upstream, Status> {
        self.get(&route.service)
            .ok_or_else(|| Status::internal(format!("no upstream for {}", route.service)))
    }

    /// A unary call; the answer is its message's bytes, as they came.
    pub async fn unary(
        &self,
        route: &Route,
        message: DynamicMessage,
        metadata: MetadataMap,
        timeout: Duration,
    ) -> Result<tonic::Response<Bytes>, Status> {
        let mut client = self.of(route)?.grpc().await?;
        let mut request = Request::from_parts(metadata, Extensions::default(), message);
        request.set_timeout(timeout);
        client.unary(request, path(route)?, RawAnswerCodec).await
    }

    pub async fn server_streaming(
        &self,
        route: &Route,
        message: DynamicMessage,
        metadata: MetadataMap,
    ) -> Result<Streaming<DynamicMessage>, Status> {
        let mut client = self.of(route)?.streams().await?;
        let mut request = Request::from_parts(metadata, Extensions::default(), message);
        // A stream lives as long as the client watches; no deadline here.
        request.metadata_mut().remove("grpc-timeout");
        Ok(client
            .server_streaming(request, path(route)?, DynamicCodec::new(route.rpc.output()))
            .await?
            .into_inner())
    }
}

impl Upstream {
    /// The instrumented channel, for calls passed through untouched (grpc-web).
    pub fn channel(&self) -> PeerChannel {
        self.channel.clone()
    }

    /// The channel watches ride, for grpc-web streams passed through.
    pub fn stream_channel(&self) -> PeerChannel {
        let next = self.next_stream.fetch_add(1, Ordering::Relaxed);
        self.streams[next % self.streams.len()].clone()
    }

    async fn grpc(&self) -> Result<Grpc<PeerChannel>, Status> {
        Self::ready(&self.service, &self.channel).await
    }

    async fn streams(&self) -> Result<Grpc<PeerChannel>, Status> {
        Self::ready(&self.service, &self.stream_channel()).await
    }

    async fn ready(service: &str, channel: &PeerChannel) -> Result<Grpc<PeerChannel>, Status> {
        let mut client = Grpc::new(channel.clone());
        client
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("{service} is unavailable: {e}")))?;
        Ok(client)
    }

    /// Whether the service answers its health check SERVING, within 1 s.
    pub async fn serving(&self) -> Result<(), String> {
        let mut health = HealthClient::new(self.channel.clone());
        let mut request = Request::new(HealthCheckRequest {
            service: self.service.clone(),
        });
        request.set_timeout(Duration::from_secs(1));
        match health.check(request).await {
            Ok(response) if response.get_ref().status() == ServingStatus::Serving => Ok(()),
            Ok(_) => Err(format!("{} is not serving", self.service)),
            Err(status) => Err(format!(
                "{} does not answer: {}",
                self.service,
                status.message()
            )),
        }
    }
}

fn path(route: &Route) -> Result<PathAndQuery, Status> {
    PathAndQuery::from_str(&route.grpc_path)
        .map_err(|e| Status::internal(format!("bad gRPC path: {e}")))
}
