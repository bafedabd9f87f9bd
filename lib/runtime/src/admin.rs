//! The admin HTTP port: Prometheus metrics at `/metrics`, kept off the
//! service port so it can stay on loopback or inside the pod.

use anyhow::Context;
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::metrics;
use crate::shutdown::Shutdown;

async fn render_metrics() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics().render(),
    )
}

pub fn router() -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
}

/// Serves the admin routes on `listener` until shutdown.
pub async fn serve(listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(role = "admin", addr = %addr, "listening");
    axum::serve(listener, router())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .with_context(|| format!("admin server on {addr}"))
}
