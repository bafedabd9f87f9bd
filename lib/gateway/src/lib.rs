//! The edge gateway: `curl` JSON and browser grpc-web into gRPC calls to the
//! order service (and the inventory's product reads).
//!
//! REST routes come from the `google.api.http` annotations (see [`routes`]);
//! server streams are Server-Sent Events; `/openapi.json` is generated from
//! the same descriptors; `/` serves a small page that uses the REST API.

pub mod codec;
pub mod error;
mod grpc_web;
mod handler;
mod observe;
pub mod openapi;
mod page;
pub mod routes;
pub mod template;
pub mod transcode;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use opentelemetry_sdk::trace::Tracer;
use ordermesh_runtime::AppContext;
use ordermesh_runtime::client::{GrpcClientSettings, channel};
use ordermesh_runtime::metrics::Metrics;
use ordermesh_runtime::shutdown::Shutdown;
use prost_reflect::DescriptorPool;
use tokio::net::TcpListener;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::Layer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;

use crate::routes::RouteTable;
use crate::upstream::Upstreams;

/// The gateway's flags. Its peer URLs are named apart from the order
/// service's own `--inventory-url`, since `all` takes both sets of flags.
#[derive(Clone, Debug, clap::Args)]
pub struct GatewaySettings {
    /// Where the gateway listens for HTTP (REST, grpc-web, the web page).
    #[arg(
        id = "gateway_addr",
        long = "gateway-addr",
        env = "ORDERMESH_GATEWAY_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: std::net::SocketAddr,
    /// The order service the gateway forwards to.
    #[arg(
        long,
        env = "ORDERMESH_GATEWAY_ORDER_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub gateway_order_url: String,
    /// The inventory service, for the product reads.
    #[arg(
        long,
        env = "ORDERMESH_GATEWAY_INVENTORY_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub gateway_inventory_url: String,
    /// Longest a REST call may take (a shorter `Grpc-Timeout` header wins).
    #[arg(long, env = "ORDERMESH_GATEWAY_REQUEST_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Largest request body, in bytes; larger ones get 413.
    #[arg(long, env = "ORDERMESH_GATEWAY_BODY_LIMIT", default_value_t = 64 * 1024)]
    pub body_limit: usize,
    /// Requests handled at once; beyond it the gateway answers 503 with
    /// Retry-After at once instead of queueing (load shedding).
    #[arg(long, env = "ORDERMESH_GATEWAY_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub gateway_max_in_flight: usize,
    /// Ignore unknown JSON fields instead of refusing them.
    #[arg(long, env = "ORDERMESH_GATEWAY_IGNORE_UNKNOWN_FIELDS")]
    pub ignore_unknown_fields: bool,
    /// Other request headers passed on as gRPC metadata (lower case).
    #[arg(
        long = "forward-header",
        env = "ORDERMESH_GATEWAY_FORWARD_HEADERS",
        value_delimiter = ','
    )]
    pub forward_headers: Vec<String>,
    /// Origins allowed by CORS (grpc-web and fetch from other sites); none
    /// given allows any origin, fine on a laptop, not on the internet.
    #[arg(
        long = "cors-allowed-origin",
        env = "ORDERMESH_GATEWAY_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_allowed_origins: Vec<String>,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        ordermesh_runtime::settings::defaults()
    }
}

/// What every request handler shares.
pub struct Gateway {
    settings: GatewaySettings,
    routes: RouteTable,
    upstreams: Upstreams,
    order_channel: tonic::transport::Channel,
    openapi: serde_json::Value,
    tracer: Tracer,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
}

impl Gateway {
    pub fn new(
        settings: GatewaySettings,
        client: &GrpcClientSettings,
        context: &AppContext,
    ) -> anyhow::Result<Self> {
        let routes = RouteTable::from_pool(descriptors())?;
        let openapi = openapi::document(&routes);
        Ok(Self {
            upstreams: Upstreams::connect(
                &settings.gateway_order_url,
                &settings.gateway_inventory_url,
                client,
                context,
            )?,
            order_channel: channel(&settings.gateway_order_url, client)?,
            settings,
            routes,
            openapi,
            tracer: context.tracer("gateway"),
            metrics: context.metrics().clone(),
            shutdown: context.shutdown().clone(),
        })
    }
}

/// The descriptor set of every ordermesh proto and its imports, decoded
/// once: routes, transcoding and error details all read it.
pub fn descriptors() -> &'static DescriptorPool {
    static POOL: std::sync::OnceLock<DescriptorPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(ordermesh_proto::FILE_DESCRIPTOR_SET)
            .unwrap_or_else(|e| unreachable!("the built-in descriptor set decodes: {e}"))
    })
}

/// Every route of the gateway, with its edge layers.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let cors = {
        let layer = CorsLayer::new()
            .allow_methods(Any)
            .allow_headers(Any)
            .expose_headers([
                HeaderName::from_static("grpc-status"),
                HeaderName::from_static("grpc-message"),
                HeaderName::from_static("grpc-status-details-bin"),
                HeaderName::from_static("x-request-id"),
            ]);
        if gateway.settings.cors_allowed_origins.is_empty() {
            layer.allow_origin(Any)
        } else {
            let origins = gateway
                .settings
                .cors_allowed_origins
                .iter()
                .filter_map(|origin| origin.parse().ok())
                .collect::<Vec<_>>();
            layer.allow_origin(AllowOrigin::list(origins))
        }
    };
    let grpc_web = tonic_web::GrpcWebLayer::new()
        .layer(grpc_web::GrpcProxy::new(gateway.order_channel.clone()));
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .route("/", get(page::index))
        .route("/openapi.json", get(openapi_document))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route_service("/ordermesh.order.v1.OrderService/{method}", grpc_web)
        .fallback(handler::transcode)
        // Innermost, so the metrics and logs below see the 503s it sends.
        // Streams hold a slot only until their headers are sent.
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(overloaded))
                .load_shed()
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                    gateway.settings.gateway_max_in_flight,
                )),
        )
        .layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            observe::observe,
        ))
        .layer(CompressionLayer::new())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            gateway.settings.request_timeout + Duration::from_secs(1),
        ))
        .layer(cors)
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(gateway)
}

/// The answer to a request shed at capacity: retry soon, elsewhere or here.
async fn overloaded(_: tower::BoxError) -> axum::response::Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(http::header::RETRY_AFTER, "1")],
        Json(serde_json::json!({
            "code": 14,
            "message": "the gateway is at capacity; retry in a second",
            "details": [],
        })),
    )
        .into_response()
}

async fn openapi_document(State(gateway): State<Arc<Gateway>>) -> Json<serde_json::Value> {
    Json(gateway.openapi.clone())
}

/// Ready only while the order service answers its health check.
async fn ready(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    let mut health = HealthClient::new(gateway.order_channel.clone());
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: "ordermesh.order.v1.OrderService".into(),
    });
    request.set_timeout(Duration::from_secs(1));
    match health.check(request).await {
        Ok(response) if response.get_ref().status() == ServingStatus::Serving => {
            (StatusCode::OK, "ready\n").into_response()
        }
        Ok(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the order service is not serving\n",
        )
            .into_response(),
        Err(status) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the order service does not answer: {}\n", status.message()),
        )
            .into_response(),
    }
}

/// The gateway's router, ready to serve.
pub fn build(
    settings: &GatewaySettings,
    client: &GrpcClientSettings,
    context: &AppContext,
) -> anyhow::Result<Router> {
    Ok(router(Arc::new(Gateway::new(
        settings.clone(),
        client,
        context,
    )?)))
}

/// Serves `router` on `listener` until shutdown; then stops accepting,
/// drains, and returns.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(role = "gateway", addr = %addr, "listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .with_context(|| format!("gateway on {addr}"))?;
    tracing::info!(role = "gateway", "stopped");
    Ok(())
}
