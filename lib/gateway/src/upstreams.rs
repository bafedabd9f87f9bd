//! The services behind the gateway, by full gRPC service name: a registry
//! filled from configuration (`GatewaySettings::upstream_urls`), one
//! instrumented channel each, made here and nowhere else. REST calls,
//! grpc-web and the readiness check all go through these channels, so each
//! makes a client span and the client metrics.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

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

use crate::codec::DynamicCodec;
use crate::routes::Route;

/// One fronted service.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub service: String,
    channel: PeerChannel,
}

#[derive(Clone, Debug, Default)]
pub struct Upstreams {
    by_service: HashMap<String, Upstream>,
}

impl Upstreams {
    /// A lazily connecting, instrumented channel to each of `urls`.
    pub fn connect(
        urls: &[(String, String)],
        settings: &GrpcClientSettings,
        context: &AppContext,
    ) -> anyhow::Result<Self> {
        let mut by_service = HashMap::new();
        for (service, url) in urls {
            let channel = peer_channel("gateway", url, settings, context)?;
            by_service.insert(
                service.clone(),
                Upstream {
                    service: service.clone(),
                    channel,
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

    pub async fn unary(
        &self,
        route: &Route,
        message: DynamicMessage,
        metadata: MetadataMap,
        timeout: Duration,
    ) -> Result<tonic::Response<DynamicMessage>, Status> {
        let mut client = self.of(route)?.grpc().await?;
        let mut request = Request::from_parts(metadata, Extensions::default(), message);
        request.set_timeout(timeout);
        client
            .unary(request, path(route)?, DynamicCodec::new(route.rpc.output()))
            .await
    }

    pub async fn server_streaming(
        &self,
        route: &Route,
        message: DynamicMessage,
        metadata: MetadataMap,
    ) -> Result<Streaming<DynamicMessage>, Status> {
        let mut client = self.of(route)?.grpc().await?;
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

    async fn grpc(&self) -> Result<Grpc<PeerChannel>, Status> {
        let mut client = Grpc::new(self.channel.clone());
        client
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("{} is unavailable: {e}", self.service)))?;
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
