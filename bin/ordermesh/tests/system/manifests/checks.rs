//! What the running pods are asked besides their probes: Prometheus's
//! scrape, an order through the gateway, the events on NATS.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use ordermesh_testkit::hosts::Host;
use ordermesh_testkit::tokens;
use serde_json::json;

use super::kubelet::{self, Pod};
use super::rendered::{Deployment, Rendered};
use super::world::{Envs, READY_LIMIT};
use crate::curl;

/// Prometheus's view of a pod its annotations enrol: the annotated port
/// and path answer 200 with metrics in the text format.
pub async fn scrape(overlay: &str, pod: &Pod, deployment: &Deployment) {
    let annotations = &deployment.pod_annotations;
    if annotations.get("prometheus.io/scrape").map(String::as_str) != Some("true") {
        return;
    }
    let port: u16 = annotations
        .get("prometheus.io/port")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{overlay}: {}: prometheus.io/port", deployment.name));
    let path = annotations
        .get("prometheus.io/path")
        .map_or("/metrics", String::as_str);
    let target = pod.host.socket(port);
    let (code, body) = kubelet::http_get(target, path, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{overlay}: {}: scraping: {e}", pod.name));
    assert!(
        code == 200 && body.contains("# TYPE "),
        "{overlay}: {}: GET {path} on {target} (its prometheus.io annotations): {code}\n{}",
        pod.name,
        &body[..body.len().min(300)]
    );
}

/// An order through the gateway pod, at the gateway Service's port, with a
/// token of the issuer the manifests trust (its iss, audience and customer
/// claim as the gateway's env has them). Returns its id.
pub async fn place_order(
    overlay: &str,
    rendered: &Rendered,
    pod_hosts: &BTreeMap<String, Host>,
    envs: &Envs,
) -> String {
    let env = &envs["gateway"].0;
    let setting = |name: &str| env.get(name).map(|(v, _)| v.clone());
    let mut claims = tokens::claims("manifests-alice");
    claims["iss"] = json!(setting("ORDERMESH_JWT_ISSUER").expect("the issuer"));
    if let Some(audience) = setting("ORDERMESH_JWT_AUDIENCE") {
        claims["aud"] = json!(audience);
    }
    if let Some(claim) = setting("ORDERMESH_CUSTOMER_CLAIM") {
        claims[claim] = json!("manifests-alice");
    }
    let token = tokens::sign(tokens::Key::Rsa, &claims);
    let service = rendered
        .services
        .iter()
        .find(|s| s.name == "gateway")
        .expect("the gateway Service");
    let gateway = pod_hosts["gateway"].socket(service.ports[0].0);
    let body = json!({"items": [{"productId": "sku-mug", "quantity": 1}], "paymentMethod": "pm_card_visa"});
    let authorization = format!("authorization: Bearer {token}");
    let headers = [authorization.as_str(), "idempotency-key: manifests-1"];
    let created =
        tokio::task::block_in_place(|| curl::post_json(gateway, "/v1/orders", &body, &headers));
    let order = created.expect(200);
    assert_eq!(
        order["status"], "ORDER_STATUS_CONFIRMED",
        "{overlay}: {order}"
    );
    order["orderId"].as_str().expect("an order id").to_owned()
}

/// The order service's relay published the order's events to the NATS the
/// overlay names, on a stream with the replicas its ConfigMap asks for.
pub async fn check_events(nats: SocketAddr, replicas: usize, overlay: &str) {
    let client = async_nats::connect(format!("nats://{nats}"))
        .await
        .expect("connect to the test's NATS");
    let js = async_nats::jetstream::new(client);
    let deadline = tokio::time::Instant::now() + READY_LIMIT;
    loop {
        if let Ok(mut stream) = js.get_stream("ORDERMESH_ORDERS").await
            && let Ok(info) = stream.info().await
            && info.state.messages > 0
        {
            assert_eq!(info.config.num_replicas, replicas, "{overlay}: {info:?}");
            println!(
                "{overlay}: NATS stream ORDERMESH_ORDERS: {} events, {replicas} replicas",
                info.state.messages
            );
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{overlay}: no event reached NATS's ORDERMESH_ORDERS within {READY_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
