//! The edge gateway: `curl` JSON and browser grpc-web into gRPC calls to the
//! services it fronts, driven only by descriptors.
//!
//! Which services it fronts and where they are is configuration (an
//! upstream registry, see [`settings`]); what it exposes of them is their
//! `google.api.http` annotations (see [`routes`]), from the built-in
//! descriptor set plus any `--descriptor-set` file. Server streams are
//! Server-Sent Events; `/openapi.json` is generated from the same
//! descriptors; `/` serves a small page that uses the REST API. Fronting a
//! new annotated service takes configuration, not code here.

mod auth;
mod codec;
mod cursor;
mod error;
pub mod fuzzing;
mod grpc_web;
mod handler;
mod metadata;
mod observe;
mod openapi;
mod page;
mod response_json;
mod routes;
mod routing;
mod settings;
mod template;
mod transcode;
mod upstreams;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use ordermesh_runtime::AppContext;
use ordermesh_runtime::client::GrpcClientSettings;
use ordermesh_runtime::instrument::Instruments;
use ordermesh_runtime::listener::{self, ConnectionSettings, Protocols};
use ordermesh_runtime::methods::KnownMethods;
use ordermesh_runtime::shutdown::Shutdown;
use ordermesh_runtime::watches::{
    HeldBody, WatchBudget, WatchSettings, bearer_subject, client_key,
};
use prost_reflect::DescriptorPool;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

pub use crate::auth::Identity;
pub use crate::error::GatewayError;
use crate::routes::RouteTable;
use crate::routing::{Matched, Page};
pub use crate::settings::GatewaySettings;
use crate::upstreams::Upstreams;

/// What every request handler shares.
pub struct Gateway {
    settings: GatewaySettings,
    routes: RouteTable,
    upstreams: Upstreams,
    openapi: serde_json::Value,
    identity: Identity,
    pass_through: Arc<grpc_web::PassThrough>,
    instruments: Instruments,
    shutdown: Shutdown,
    /// Open watches, per client and in all.
    watches: WatchBudget,
    methods: KnownMethods,
}

impl Gateway {
    pub fn new(
        settings: GatewaySettings,
        client: &GrpcClientSettings,
        watches: &WatchSettings,
        identity: Identity,
        context: &AppContext,
    ) -> anyhow::Result<Self> {
        let pool = pool(&settings)?;
        // Its channels name what these descriptors name, and nothing else.
        context.methods().learn(&pool);
        let upstreams = Upstreams::connect(
            &settings.upstream_urls(),
            client,
            watches.max_watches,
            context,
        )?;
        let routes = RouteTable::from_pool(&pool, |service| upstreams.get(service).is_some())?;
        for route in routes.routes().iter().filter(|r| !r.response.covers_root()) {
            tracing::debug!(route = %route.label, answer = route.rpc.output().full_name(), "answers of this route are transcoded through a dynamic message");
        }
        for service in upstreams.services() {
            if pool.get_service_by_name(service).is_none() {
                tracing::warn!(
                    service,
                    "an upstream's service is in no descriptor set; nothing of it is routed"
                );
            }
        }
        let openapi = openapi::document(&routes, &settings.token_services);
        let pass_through = Arc::new(grpc_web::PassThrough {
            body_limit: settings.body_limit,
            forward_headers: settings.forward_headers.clone(),
        });
        Ok(Self {
            pass_through,
            settings,
            routes,
            upstreams,
            openapi,
            identity,
            instruments: Instruments::new("gateway", context),
            shutdown: context.shutdown().clone(),
            watches: WatchBudget::new(watches, "gateway", context.metrics()),
            methods: context.methods().clone(),
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

/// The built-in descriptors and those of `--descriptor-set` files.
fn pool(settings: &GatewaySettings) -> anyhow::Result<DescriptorPool> {
    let mut pool = descriptors().clone();
    for path in &settings.descriptor_sets {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading the descriptor set {}", path.display()))?;
        pool.decode_file_descriptor_set(bytes.as_slice())
            .with_context(|| format!("decoding the descriptor set {}", path.display()))?;
    }
    Ok(pool)
}

/// Every route of the gateway, with its edge layers. The routing layer is
/// outermost but for CORS and request ids: it matches once, and everything
/// inside (metrics, shedding, the handlers) reads its match.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let timeout = gateway.settings.request_timeout + Duration::from_secs(1);
    Router::new()
        .fallback(dispatch)
        // Innermost, so the metrics and logs below see the 503s and 504s
        // they send. Streams hold a slot only until their headers are sent.
        .layer(
            ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(
                    move |error: tower::BoxError| async move {
                        if error.is::<tower::timeout::error::Elapsed>() {
                            GatewayError::Timeout(humantime::format_duration(timeout).to_string())
                        } else {
                            GatewayError::Overloaded
                        }
                    },
                ))
                .timeout(timeout)
                .load_shed()
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                    gateway.settings.gateway_max_in_flight,
                )),
        )
        // Probes answer however busy the gateway is: outside the budget
        // above, inside the metrics below.
        .layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            probes_first,
        ))
        .layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            observe::observe,
        ))
        .layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            routing::route,
        ))
        .layer(CompressionLayer::new())
        .layer(cors(&gateway.settings))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(gateway)
}

/// CORS: closed unless `--cors-allowed-origin` names the sites that may
/// call the gateway from a browser. The page is served by the gateway
/// itself (same origin) and needs none; with no origin listed, a foreign
/// page gets no grant, so its scripts cannot read an answer or send a
/// request a browser would preflight.
fn cors(settings: &GatewaySettings) -> CorsLayer {
    let origins = settings
        .cors_allowed_origins
        .iter()
        .filter_map(|origin| match origin.parse() {
            Ok(origin) => Some(origin),
            Err(_) => {
                tracing::warn!(origin, "not a valid CORS origin; ignored");
                None
            }
        })
        .collect::<Vec<_>>();
    CorsLayer::new()
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
            HeaderName::from_static("x-request-id"),
        ])
        .allow_origin(AllowOrigin::list(origins))
}

/// `/healthz` and `/readyz` answered before the load budget.
async fn probes_first(
    State(gateway): State<Arc<Gateway>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let probe = matches!(
        request.extensions().get::<Matched>(),
        Some(Matched::Page {
            page: Page::Healthz | Page::Readyz,
            ..
        })
    );
    if probe {
        dispatch(State(gateway), request).await
    } else {
        next.run(request).await
    }
}

/// Sends each request where the routing layer matched it.
async fn dispatch(State(gateway): State<Arc<Gateway>>, mut request: Request) -> Response {
    let Some(matched) = request.extensions_mut().remove::<Matched>() else {
        return GatewayError::Internal("a request reached the handlers unrouted".into())
            .into_response();
    };
    match matched {
        Matched::Page { page, .. } => match page {
            Page::Index => page::index().await.into_response(),
            Page::OpenApi => Json(gateway.openapi.clone()).into_response(),
            Page::Healthz => "ok\n".into_response(),
            Page::Readyz => ready(&gateway).await,
            Page::Jwks => gateway.identity.jwks(),
            Page::DevToken => dev_token(&gateway, request).await,
        },
        Matched::Rest { index, bindings } => {
            let Some(route) = gateway.routes.get(index) else {
                return GatewayError::Internal("a matched route vanished".into()).into_response();
            };
            // Refused here, early and with a challenge; the service checks
            // the forwarded token again and decides what it may see.
            let subject = if gateway.settings.token_services.contains(&route.service) {
                match gateway.identity.check(request.headers()).await {
                    Ok(subject) => Some(subject),
                    Err(refused) => return refused.into_response(),
                }
            } else {
                None
            };
            handler::transcode(&gateway, route, bindings, request, subject).await
        }
        Matched::GrpcWeb { service, exposed } => {
            let upstream = exposed.then(|| gateway.upstreams.get(&service)).flatten();
            let limits = gateway.pass_through.clone();
            if !gateway.methods.is_server_streaming(request.uri().path()) {
                return grpc_web::serve(upstream.map(|u| u.channel()), limits, request).await;
            }
            // A watch: its own connection upstream, and the budget. The
            // token is not checked here (the service checks it); its
            // subject only picks whose budget the watch counts against.
            let client = watch_client(bearer_subject(request.headers()).as_deref(), &request);
            let permit = match gateway.watches.open(client.clone()) {
                Ok(permit) => permit,
                Err(refused) => return GatewayError::TooManyWatches(refused).into_response(),
            };
            let mut request = request;
            if let Ok(value) = client.parse() {
                request
                    .extensions_mut()
                    .insert(grpc_web::WatchClient(value));
            }
            grpc_web::serve(upstream.map(|u| u.stream_channel()), limits, request)
                .await
                .map(|body| axum::body::Body::new(HeldBody::new(body, permit)))
                .into_response()
        }
        Matched::Unrouted(no_route) => handler::unrouted(&no_route, &request),
    }
}

/// Whose budget a watch counts against: the token's subject, else the
/// client's address.
pub(crate) fn watch_client(subject: Option<&str>, request: &Request) -> String {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0);
    client_key(subject, peer)
}

async fn dev_token(gateway: &Gateway, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let limit = gateway.settings.body_limit;
    let Ok(body) = axum::body::to_bytes(body, limit).await else {
        return GatewayError::PayloadTooLarge { limit }.into_response();
    };
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    gateway.identity.dev_token(content_type, &body)
}

/// Ready only while every service that has routes answers its health check.
async fn ready(gateway: &Gateway) -> Response {
    // Shutting down: out of the load balancer first, then drained.
    if gateway.shutdown.is_triggered() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let checks = gateway.routes.services().into_iter().filter_map(|service| {
        let upstream = gateway.upstreams.get(service)?;
        Some(async move { upstream.serving().await })
    });
    let problems: Vec<String> = futures::future::join_all(checks)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", problems.join("\n")),
        )
            .into_response()
    }
}

/// The gateway's router, ready to serve.
pub fn build(
    settings: &GatewaySettings,
    client: &GrpcClientSettings,
    watches: &WatchSettings,
    identity: Identity,
    context: &AppContext,
) -> anyhow::Result<Router> {
    let gateway = Gateway::new(settings.clone(), client, watches, identity, context)?;
    Ok(router(Arc::new(gateway)))
}

/// Serves `router` on `listener` until shutdown, with every listener's
/// connection limits; then answers `/readyz` 503 and keeps serving for
/// `delay` (load balancers and Envoy take the gateway out meanwhile),
/// stops accepting, drains for at most `grace`, and returns.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    connections: &ConnectionSettings,
    context: &AppContext,
    delay: Duration,
    grace: Duration,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let shutdown = context.shutdown().clone();
    listener::serve(
        listener::Listener {
            name: "gateway",
            socket: listener,
            protocols: Protocols::Http1AndHttp2,
        },
        router,
        connections,
        context,
        async move {
            shutdown.cancelled().await;
            tokio::time::sleep(delay).await;
            tracing::info!(role = "gateway", "draining in-flight requests");
        },
        grace,
    )
    .await
    .with_context(|| format!("gateway on {addr}"))
}
