//! The ceiling: a bare tonic server with one unary RPC that does no work,
//! on the same runtime and transport as the services but with none of their
//! layers (no metrics, tracing, deadlines, health or reflection).

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

pub mod proto {
    tonic::include_proto!("ordermesh.bench.v1");
}

use proto::EchoMessage;
use proto::echo_service_server::{EchoService, EchoServiceServer};

#[derive(Debug, Default)]
struct Echo;

#[tonic::async_trait]
impl EchoService for Echo {
    async fn echo(&self, request: Request<EchoMessage>) -> Result<Response<EchoMessage>, Status> {
        Ok(Response::new(request.into_inner()))
    }
}

/// Serves the echo RPC on `addr` until Ctrl-C or SIGTERM. Prints the same
/// `listening` JSON line as the ordermesh roles once it accepts connections.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    println!(
        "{}",
        serde_json::json!({"msg": "listening", "role": "echo", "addr": local.to_string()})
    );
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .add_service(EchoServiceServer::new(Echo))
        .serve_with_incoming_shutdown(incoming, shutdown())
        .await
        .context("serving the echo RPC")
}

async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
