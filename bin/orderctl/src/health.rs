//! `orderctl health URL`: the probe for places with no probe of their own
//! (Docker Compose health checks in a shell-less image, scripts). A gRPC
//! URL gets the standard `grpc.health.v1` Check; a URL with a path gets an
//! HTTP GET that must answer 2xx (the gateway's `/readyz`).

use anyhow::{Context, bail};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ordermesh_runtime::client::{GrpcClientSettings, channel};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub async fn check(url: &str, service: &str, timeout: std::time::Duration) -> anyhow::Result<()> {
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("{url:?} is not a URL"))?;
    let has_path = uri.path_and_query().is_some_and(|p| p.as_str() != "/");
    let probe = async {
        if has_path {
            http_ready(uri).await
        } else {
            grpc_serving(url, service).await
        }
    };
    tokio::time::timeout(timeout, probe)
        .await
        .with_context(|| format!("{url} did not answer within {timeout:?}"))?
}

async fn grpc_serving(url: &str, service: &str) -> anyhow::Result<()> {
    let mut health = HealthClient::new(channel(url, &GrpcClientSettings::default())?);
    let response = health
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .with_context(|| format!("health check of {url}"))?;
    match response.into_inner().status() {
        ServingStatus::Serving => {
            say!("{url}: SERVING");
            Ok(())
        }
        other => bail!("{url}: {}", other.as_str_name()),
    }
}

async fn http_ready(uri: http::Uri) -> anyhow::Result<()> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let response = client
        .get(uri.clone())
        .await
        .with_context(|| format!("GET {uri}"))?;
    let status = response.status();
    if !status.is_success() {
        bail!("{uri}: HTTP {status}");
    }
    say!("{uri}: {status}");
    Ok(())
}
