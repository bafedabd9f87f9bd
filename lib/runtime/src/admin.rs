//! The admin HTTP port: Prometheus metrics at `/metrics`, kept off the
//! service port so it can stay on loopback or inside the pod.

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::context::AppContext;
use crate::listener::{self, ConnectionSettings, Protocols};
use crate::metrics::Metrics;

async fn render_metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
}

/// `/metrics` of one App's registry, and `/healthz`.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(metrics)
}

/// Serves the admin routes on `listener` until the App shuts down, with
/// every listener's connection limits.
pub async fn serve(
    listener: TcpListener,
    connections: ConnectionSettings,
    context: AppContext,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let shutdown = context.shutdown().clone();
    listener::serve(
        listener::Listener {
            name: "admin",
            socket: listener,
            protocols: Protocols::Http1AndHttp2,
        },
        router(context.metrics().clone()),
        &connections,
        &context,
        async move { shutdown.cancelled().await },
        // A scrape takes milliseconds; nothing here is worth a wait.
        std::time::Duration::from_secs(1),
    )
    .await
    .with_context(|| format!("admin server on {addr}"))
}
