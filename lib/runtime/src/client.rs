//! Outgoing gRPC channels. They connect lazily and never retry or balance by
//! themselves: in the mesh that is the sidecar's job, and every call is
//! idempotent so its retries are safe.

use std::time::Duration;

use anyhow::Context;
use tonic::transport::{Channel, Endpoint};
use tower::Layer;

use crate::context::AppContext;
use crate::instrument::{InstrumentLayer, Instrumented};

/// Settings of channels to peer services, the same flags for every role.
#[derive(Clone, Debug, clap::Args)]
pub struct GrpcClientSettings {
    /// How long to wait for a TCP connection to a peer.
    #[arg(long, env = "ORDERMESH_CONNECT_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Timeout of a downstream call when the caller set no deadline.
    #[arg(long, env = "ORDERMESH_DEFAULT_CALL_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub default_call_timeout: Duration,
}

impl Default for GrpcClientSettings {
    fn default() -> Self {
        crate::settings::defaults()
    }
}

/// A lazily connecting channel to `url` (e.g. `http://127.0.0.1:50052`).
pub fn channel(url: &str, settings: &GrpcClientSettings) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("invalid peer URL {url:?}"))?
        .connect_timeout(settings.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_lazy())
}

/// A channel from `role` to a peer service: traced and measured per call.
pub type PeerChannel = Instrumented<Channel>;

/// A lazily connecting, instrumented channel from `role` to `url`.
pub fn peer_channel(
    role: &'static str,
    url: &str,
    settings: &GrpcClientSettings,
    context: &AppContext,
) -> anyhow::Result<PeerChannel> {
    Ok(InstrumentLayer::client(role, context).layer(channel(url, settings)?))
}
