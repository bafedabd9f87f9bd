//! Every listener's connections, served one way: the gateway, each gRPC
//! service and the admin port all accept through [`serve`], so a slow, idle
//! or greedy client meets the same limits everywhere.
//!
//! hyper serves each connection (HTTP/1.1 or HTTP/2, told apart by the
//! preface); what hyper and h2 do not bound is bounded here: the
//! connections a listener keeps, how long a new connection may take to
//! send its first request (an HTTP/2 client that never sends one included),
//! how long a connection may sit with nothing in flight, the length of a
//! URL and the number of headers on HTTP/2. Each limit is a flag
//! ([`ConnectionSettings`]), is counted in `connections_closed_total` or
//! `requests_refused_total`, and is logged (at most once a second per
//! listener and limit, so a flood of bad clients is not a flood of lines).

mod connection;
mod events;
mod request;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::context::AppContext;
use connection::Limits;
pub use events::CloseReason;
use events::Events;

/// How every listener treats its connections. The defaults suit a service
/// behind a sidecar and an edge behind a load balancer alike.
#[derive(Clone, Debug, clap::Args)]
pub struct ConnectionSettings {
    /// Longest a client may take to send a request's headers, and a new
    /// connection its first request; then the connection is closed. On
    /// HTTP/1.1 it also bounds a kept-alive connection's wait for the next
    /// request, so load balancers in front should close idle connections
    /// sooner (the shipped Envoy configs do, at 15 s).
    #[arg(long, env = "ORDERMESH_HEADER_READ_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed
    /// (HTTP/2 gets a GOAWAY first). An open stream, a watch included, is
    /// in flight.
    #[arg(long, env = "ORDERMESH_IDLE_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// Open connections one listener keeps; a connection beyond it is
    /// closed as soon as it is accepted.
    #[arg(long, env = "ORDERMESH_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Largest request head: the HTTP/1.1 request line and headers, or the
    /// HTTP/2 header list. Larger is refused with 431.
    #[arg(long, env = "ORDERMESH_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,
    /// Most headers one request may carry; more is refused with 431.
    #[arg(long, env = "ORDERMESH_MAX_HEADERS", default_value_t = 100)]
    pub max_headers: usize,
    /// Longest request target (path and query); longer is refused with 414.
    #[arg(long, env = "ORDERMESH_MAX_URI_BYTES", default_value_t = 8 * 1024)]
    pub max_uri_bytes: usize,
    /// Interval of HTTP/2 keep-alive pings to idle clients.
    #[arg(long, env = "ORDERMESH_HTTP2_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub http2_keepalive_interval: Duration,
    /// How long to wait for a keep-alive ping's answer before closing.
    #[arg(long, env = "ORDERMESH_HTTP2_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub http2_keepalive_timeout: Duration,
    /// Concurrent HTTP/2 streams allowed on one connection.
    #[arg(long, env = "ORDERMESH_MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    pub max_concurrent_streams: u32,
    /// Close connections after this long (gracefully), so clients
    /// rebalance across replicas.
    #[arg(long, env = "ORDERMESH_MAX_CONNECTION_AGE", value_parser = humantime::parse_duration)]
    pub max_connection_age: Option<Duration>,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        crate::settings::defaults()
    }
}

/// What a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocols {
    /// HTTP/1.1 and HTTP/2, told apart by the preface (the gateway, admin).
    Http1AndHttp2,
    /// HTTP/2 only, as gRPC needs (an HTTP/1.1 client gets a connection
    /// error, not a call it cannot read).
    Http2Only,
}

/// A bound socket, with what it is called and speaks.
#[derive(Debug)]
pub struct Listener {
    /// Labels the listener's metrics and log lines ("order", "gateway",
    /// "admin", ...).
    pub name: &'static str,
    pub socket: TcpListener,
    pub protocols: Protocols,
}

/// Serves `service` on every connection `listener` accepts, until `drain`
/// resolves; then stops accepting, asks every connection to finish
/// (HTTP/2 GOAWAY; HTTP/1.1 closes after the request in progress), waits
/// for them at most `grace`, and closes what is left.
///
/// Handlers find the peer's address in the request's
/// extensions, as both tonic (`Request::remote_addr`) and axum
/// (`ConnectInfo<SocketAddr>`) read it.
pub async fn serve<S, B>(
    listener: Listener,
    service: S,
    settings: &ConnectionSettings,
    context: &AppContext,
    drain: impl Future<Output = ()>,
    grace: Duration,
) -> anyhow::Result<()>
where
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
    let Listener {
        name,
        socket: listener,
        protocols,
    } = listener;
    let addr = listener.local_addr().context("listener has no address")?;
    let events = Events::new(name, context.metrics());
    let limits = std::sync::Arc::new(Limits::new(settings, protocols));
    let open = context
        .metrics()
        .active_connections
        .with_label_values(&[name]);
    let tracker = TaskTracker::new();
    // Every connection's cue to finish: fired once the drain begins.
    let finish = CancellationToken::new();
    // And to stop at once, once the grace is over.
    let close = CancellationToken::new();
    tracing::info!(role = name, addr = %addr, "listening");
    tokio::pin!(drain);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut drain => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, most likely: pause rather
                    // than spin, and let open connections finish.
                    events.accept_failed(&error);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if usize::try_from(open.get()).unwrap_or(usize::MAX) >= settings.max_connections {
            events.closed(CloseReason::OverLimit, peer);
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let connection = connection::Connection {
            peer,
            local: addr,
            open: open.clone(),
            limits: limits.clone(),
            events: events.clone(),
            finish: finish.clone(),
            close: close.clone(),
        };
        tracker.spawn(connection.serve(stream, service.clone()));
    }
    drop(listener);
    finish.cancel();
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            role = name,
            open = tracker.len(),
            "in-flight requests outlived the shutdown grace period; closing them"
        );
        close.cancel();
        tracker.wait().await;
    }
    tracing::info!(role = name, "stopped");
    Ok(())
}
