//! What the running pods are asked besides their probes: Prometheus's
//! scrape, an order through the gateway, the events on NATS.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use ordermesh_testkit::hosts::Host;
use ordermesh_testkit::tokens;
use serde_json::json;

use super::env::Envs;
use super::kubelet::{self, Pod};
use super::rendered::{Deployment, Rendered};
use super::world::READY_LIMIT;
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

/// A token of the issuer the manifests trust: its iss, audience and
/// customer claim as the gateway's env has them; `scope` when given.
fn token(envs: &Envs, customer: &str, scope: Option<&str>) -> String {
    let env = &envs["gateway"].0;
    let setting = |name: &str| env.get(name).map(|(v, _)| v.clone());
    let mut claims = tokens::claims(customer);
    claims["iss"] = json!(setting("ORDERMESH_JWT_ISSUER").expect("the issuer"));
    if let Some(audience) = setting("ORDERMESH_JWT_AUDIENCE") {
        claims["aud"] = json!(audience);
    }
    if let Some(claim) = setting("ORDERMESH_CUSTOMER_CLAIM") {
        claims[claim] = json!(customer);
    }
    if let Some(scope) = scope {
        claims["scope"] = json!(scope);
    }
    tokens::sign(tokens::Key::Rsa, &claims)
}

/// Through the gateway pod, at the gateway Service's port, as the ingress
/// calls it: the catalog (the gateway's inventory URL), an order with a
/// customer's token (its order URL, then the saga over the order service's
/// peers), the order's and the stock's events watched as an operator (its
/// upstreams for EventService and StockEventService). Returns the order's
/// id.
pub async fn through_the_gateway(
    overlay: &str,
    rendered: &Rendered,
    pod_hosts: &BTreeMap<String, Host>,
    envs: &Envs,
) -> String {
    let service = rendered
        .services
        .iter()
        .find(|s| s.name == "gateway")
        .expect("the gateway Service");
    let gateway = pod_hosts["gateway"].socket(service.ports[0].0);
    tokio::task::block_in_place(|| {
        let mug = curl::curl(&[&curl::url(gateway, "/v1/products/sku-mug")]).expect(200);
        assert_eq!(mug["productId"], "sku-mug", "{overlay}: {mug}");

        let body = json!({"items": [{"productId": "sku-mug", "quantity": 1}], "paymentMethod": "pm_card_visa"});
        let authorization = format!(
            "authorization: Bearer {}",
            token(envs, "manifests-alice", None)
        );
        let headers = [authorization.as_str(), "idempotency-key: manifests-1"];
        let order = curl::post_json(gateway, "/v1/orders", &body, &headers).expect(200);
        assert_eq!(
            order["status"], "ORDER_STATUS_CONFIRMED",
            "{overlay}: {order}"
        );
        let id = order["orderId"].as_str().expect("an order id").to_owned();

        let operator = token(envs, "manifests-ops", Some("orders:read orders:admin"));
        let event = first_event(gateway, "/v1/events:watch", &operator);
        assert!(
            event.contains(&id),
            "{overlay}: the first event is not the order's: {event}"
        );
        // The stock watch is inventory's, through the gateway's other upstream.
        let stock = first_event(gateway, "/v1/events/stock:watch", &operator);
        assert!(
            stock.contains("sku-mug"),
            "{overlay}: the first stock event is not the mug's: {stock}"
        );
        println!(
            "{overlay}: through the gateway: sku-mug {} available; order {id} {}; first order event {}; first stock event {}",
            mug["available"],
            order["status"],
            &event[..event.len().min(100)],
            &stock[..stock.len().min(100)]
        );
        id
    })
}

/// The first `data:` line of the SSE watch at `path` (from the stream's
/// start), read as it arrives; curl gives up after 20 s.
fn first_event(gateway: SocketAddr, path: &str, token: &str) -> String {
    use std::io::BufRead;
    let curl = ordermesh_testkit::tool("curl").expect("checked by the caller");
    let mut child = std::process::Command::new(curl)
        .args(["-isN", "--max-time", "20", "-H"])
        .arg(format!("authorization: Bearer {token}"))
        .arg(curl::url(gateway, path))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run curl");
    let stdout = child.stdout.take().expect("curl's stdout");
    let mut seen = Vec::new();
    let event = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .inspect(|line| seen.push(line.clone()))
        .find(|line| line.starts_with("data:"));
    let _ = child.kill();
    let _ = child.wait();
    event.unwrap_or_else(|| {
        panic!(
            "no event from {path} within 20 s; it answered:\n{}",
            seen.join("\n")
        )
    })
}

/// The order and inventory services' relays published the order's events
/// and the stock's to the NATS the overlay names, each on a stream with the
/// replicas its ConfigMap asks for.
pub async fn check_events(nats: SocketAddr, replicas: usize, overlay: &str) {
    let client = async_nats::connect(format!("nats://{nats}"))
        .await
        .expect("connect to the test's NATS");
    let js = async_nats::jetstream::new(client);
    let deadline = tokio::time::Instant::now() + READY_LIMIT;
    for name in ["ORDERMESH_ORDERS", "ORDERMESH_STOCK"] {
        loop {
            if let Ok(mut stream) = js.get_stream(name).await
                && let Ok(info) = stream.info().await
                && info.state.messages > 0
            {
                assert_eq!(info.config.num_replicas, replicas, "{overlay}: {info:?}");
                println!(
                    "{overlay}: NATS stream {name}: {} events, {replicas} replicas",
                    info.state.messages
                );
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{overlay}: no event reached NATS's {name} within {READY_LIMIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
