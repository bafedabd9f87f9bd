//! Serving one role's gRPC services: the same health, reflection, HTTP/2 and
//! shutdown behaviour for every role, wired once here.

use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
mod stack;

use tonic::service::Routes;
use tonic_health::ServingStatus;

use crate::context::AppContext;
use crate::listener::{self, ConnectionSettings};
use crate::watches::WatchSettings;

/// How a gRPC server serves, the same flags for every role.
#[derive(Clone, Debug, clap::Args)]
pub struct GrpcServerSettings {
    /// Calls served at once by this role; beyond it, calls are refused at
    /// once with RESOURCE_EXHAUSTED instead of queueing (load shedding).
    /// Health checks and reflection are outside it.
    #[arg(long, env = "ORDERMESH_MAX_IN_FLIGHT", default_value_t = 512)]
    pub max_in_flight: usize,
    /// How long health reports NOT_SERVING before the listener closes, so
    /// load balancers stop sending new calls first.
    #[arg(long, env = "ORDERMESH_SHUTDOWN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub shutdown_delay: Duration,
    /// Longest wait for in-flight calls to finish once shutdown begins.
    #[arg(long, env = "ORDERMESH_SHUTDOWN_GRACE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Every listener's connection limits (the gateway's and the admin
    /// port's too).
    #[command(flatten)]
    pub connections: ConnectionSettings,
    /// Open watches allowed, per client and in all (the gateway's too).
    #[command(flatten)]
    pub watches: WatchSettings,
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

    /// Another gRPC service of the same role, on the same listener.
    pub fn with_service<S>(mut self, service: S) -> Self
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
        self.routes = self.routes.add_service(service);
        self.service_names.push(S::NAME);
        self
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

    let routes = routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let service = stack::stack(role, routes, settings, context);

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

    listener::serve(
        listener::Listener {
            name: role,
            socket: listener,
            protocols: listener::Protocols::Http2Only,
        },
        service,
        &settings.connections,
        context,
        drain_started,
        settings.shutdown_grace,
    )
    .await
    .with_context(|| format!("{role} gRPC server on {addr}"))
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
