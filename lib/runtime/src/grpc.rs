//! Serving one role's gRPC services: the same health, reflection, HTTP/2 and
//! shutdown behaviour for every role, wired once here.

use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use futures::StreamExt;

use crate::connections::CountedStream;
use crate::context::AppContext;
use crate::instrument::InstrumentLayer;

/// Connection settings of a gRPC server, the same flags for every role.
#[derive(Clone, Debug, clap::Args)]
pub struct GrpcServerSettings {
    /// Interval of HTTP/2 keep-alive pings to idle clients.
    #[arg(long, env = "ORDERMESH_HTTP2_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub http2_keepalive_interval: Duration,
    /// How long to wait for a keep-alive ping's answer before closing.
    #[arg(long, env = "ORDERMESH_HTTP2_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub http2_keepalive_timeout: Duration,
    /// Concurrent HTTP/2 streams allowed on one connection.
    #[arg(long, env = "ORDERMESH_MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    pub max_concurrent_streams: u32,
    /// Calls served at once by this role; beyond it, calls are refused at
    /// once with RESOURCE_EXHAUSTED instead of queueing (load shedding).
    #[arg(long, env = "ORDERMESH_MAX_IN_FLIGHT", default_value_t = 512)]
    pub max_in_flight: usize,
    /// Close connections after this long, so clients rebalance across replicas.
    #[arg(long, env = "ORDERMESH_MAX_CONNECTION_AGE", value_parser = humantime::parse_duration)]
    pub max_connection_age: Option<Duration>,
    /// How long health reports NOT_SERVING before the listener closes, so
    /// load balancers stop sending new calls first.
    #[arg(long, env = "ORDERMESH_SHUTDOWN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub shutdown_delay: Duration,
    /// Longest wait for in-flight calls to finish once shutdown begins.
    #[arg(long, env = "ORDERMESH_SHUTDOWN_GRACE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

impl Default for GrpcServerSettings {
    fn default() -> Self {
        crate::settings::defaults()
    }
}

/// The gRPC services one role exposes, with the names health and
/// reflection report for them.
pub struct RoleServices {
    /// Short role name for logs: "order", "inventory", "payment".
    pub role: &'static str,
    pub routes: Routes,
    /// Fully qualified service names, e.g. "ordermesh.order.v1.OrderService".
    pub service_names: Vec<&'static str>,
    /// The role's background work (saga recovery, sweepers), run beside the
    /// server until the App shuts down.
    pub background: Vec<BackgroundTask>,
}

/// A role's background loop; it returns once the App's shutdown fires.
pub type BackgroundTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Largest request message a service decodes.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// A generated tonic server with what every role's services share: gzip
/// both ways, and the largest message a service decodes. (The generated
/// servers have these as inherent methods, with no trait to be generic over.)
#[macro_export]
macro_rules! grpc_service {
    ($server:expr) => {
        $server
            .accept_compressed(::tonic::codec::CompressionEncoding::Gzip)
            .send_compressed(::tonic::codec::CompressionEncoding::Gzip)
            .max_decoding_message_size($crate::grpc::MAX_MESSAGE_BYTES)
    };
}

impl RoleServices {
    /// One gRPC service of `role` (see [`grpc_service!`]).
    pub fn new<S>(role: &'static str, service: S) -> Self
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible>
            + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        Self {
            role,
            routes: Routes::new(service),
            service_names: vec![S::NAME],
            background: Vec::new(),
        }
    }

    /// Adds background work that runs while the role serves.
    pub fn with_background(mut self, task: BackgroundTask) -> Self {
        self.background.push(task);
        self
    }
}

/// Serves `services` plus the gRPC health service and server reflection (v1
/// and v1alpha) on `listener` until `shutdown` fires; then reports
/// NOT_SERVING, waits `shutdown_delay`, and drains in-flight calls for at most
/// `shutdown_grace`.
pub async fn serve(
    services: RoleServices,
    listener: TcpListener,
    settings: &GrpcServerSettings,
    context: &AppContext,
) -> anyhow::Result<()> {
    let shutdown = context.shutdown().clone();
    let RoleServices {
        role,
        routes,
        service_names,
        background: _,
    } = services;
    let addr = listener.local_addr().context("listener has no address")?;

    let (health, health_service) = tonic_health::server::health_reporter();
    for name in &service_names {
        health
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }

    let reflection_v1 = reflection_builder(&service_names)
        .build_v1()
        .context("building reflection v1")?;
    let reflection_v1alpha = reflection_builder(&service_names)
        .build_v1alpha()
        .context("building reflection v1alpha")?;

    let mut server = Server::builder()
        .layer(InstrumentLayer::server(role, context))
        .layer(context.failpoints().layer())
        // Over the limit, refuse at once: tonic turns the shed call into
        // RESOURCE_EXHAUSTED, which callers and the mesh may retry elsewhere.
        .layer(tower::load_shed::LoadShedLayer::new())
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            settings.max_in_flight,
        ))
        .http2_keepalive_interval(Some(settings.http2_keepalive_interval))
        .http2_keepalive_timeout(Some(settings.http2_keepalive_timeout))
        .max_concurrent_streams(Some(settings.max_concurrent_streams));
    if let Some(age) = settings.max_connection_age {
        server = server.max_connection_age(age);
    }
    let router = server
        .add_routes(routes)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    let drain_started = {
        let shutdown = shutdown.clone();
        let delay = settings.shutdown_delay;
        async move {
            shutdown.cancelled().await;
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            for name in &service_names {
                health
                    .set_service_status(*name, ServingStatus::NotServing)
                    .await;
            }
            tokio::time::sleep(delay).await;
            tracing::info!(role, "draining in-flight calls");
        }
    };

    tracing::info!(role, addr = %addr, "listening");
    let connections = context
        .metrics()
        .active_connections
        .with_label_values(&[role]);
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map(move |accepted| {
            accepted.map(|stream| CountedStream::new(stream, connections.clone()))
        });
    let serving = router.serve_with_incoming_shutdown(incoming, drain_started);
    tokio::pin!(serving);
    tokio::select! {
        result = &mut serving => result.with_context(|| format!("{role} gRPC server on {addr}"))?,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(settings.shutdown_delay + settings.shutdown_grace).await;
        } => {
            tracing::warn!(role, "in-flight calls outlived the shutdown grace period; closing them");
        }
    }
    tracing::info!(role, "stopped");
    Ok(())
}

fn reflection_builder(
    service_names: &[&'static str],
) -> tonic_reflection::server::Builder<'static> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ordermesh_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health");
    for name in service_names {
        builder = builder.with_service_name(*name);
    }
    builder
}
