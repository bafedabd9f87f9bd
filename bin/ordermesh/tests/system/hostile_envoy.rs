//! The same attacks at the real Envoy edge (`envoy/edge.yaml`): clients'
//! `x-envoy-*` headers never leave it, and one noisy client is limited
//! while another still gets through.

use super::Recorder;
use crate::curl::{self, Response, curl, url};
use crate::envoy::{envoy, start_edge, with_dev_issuer};
use crate::harness::Endpoints;

#[tokio::test(flavor = "multi_thread")]
async fn the_edge_removes_clients_x_envoy_headers() {
    let Some(envoy) = envoy() else {
        return;
    };
    if !curl::available() {
        return;
    }
    // What Envoy forwards is recorded by a server in the gateway's place.
    let recorder = Recorder::start().await;
    let edge_proxy = start_edge(&envoy, recorder.addr.port(), &[]).await;
    let edge = edge_proxy.addr;
    let answer = curl(&[
        "-H",
        "x-envoy-max-retries: 7",
        "-H",
        "x-envoy-retry-on: 5xx",
        "-H",
        "x-envoy-upstream-rq-timeout-ms: 1",
        "-H",
        "x-envoy-hostile-probe: 1",
        "-H",
        "idempotency-key: k-edge",
        &url(edge, "/v1/products"),
    ]);
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen: Vec<_> = recorder
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(path, _)| path == "/v1/products")
        .map(|(_, headers)| headers.clone())
        .collect();
    assert_eq!(seen.len(), 1, "one attempt, no client-asked retries");
    let headers = &seen[0];
    let envoy_headers: Vec<String> = headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-envoy-"))
        .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap_or("?")))
        .collect();
    println!("x-envoy-* headers the gateway received through the edge: {envoy_headers:?}");
    for name in [
        "x-envoy-max-retries",
        "x-envoy-retry-on",
        "x-envoy-upstream-rq-timeout-ms",
        "x-envoy-hostile-probe",
    ] {
        assert!(headers.get(name).is_none(), "{name} passed the edge");
    }
    // The route's own timeout (per try), not the client's 1 ms.
    if let Some(expected) = headers.get("x-envoy-expected-rq-timeout-ms") {
        assert_ne!(expected, "1", "the client set the edge's timeout");
    }
    assert_eq!(
        headers["idempotency-key"], "k-edge",
        "ordinary headers pass"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_noisy_client_is_limited_while_another_gets_through() {
    let Some(envoy) = envoy() else {
        return;
    };
    if !curl::available() {
        return;
    }
    let system = with_dev_issuer().await;
    // The shipped per-client bucket, shrunk so a handful of calls exceed it.
    let edge_proxy = start_edge(
        &envoy,
        system.gateway_addr().port(),
        &[(
            "token_bucket: { max_tokens: 100, tokens_per_fill: 50, fill_interval: 1s }",
            "token_bucket: { max_tokens: 5, tokens_per_fill: 1, fill_interval: 3600s }",
        )],
    )
    .await;
    let target = url(edge_proxy.addr, "/v1/products");
    let from = |source: &str, count: usize| -> Vec<Response> {
        (0..count)
            .map(|_| curl(&["--interface", source, &target]))
            .collect()
    };
    let noisy = from("127.0.0.2", 15);
    let quiet = from("127.0.0.3", 5);
    let ok = |responses: &[Response]| responses.iter().filter(|r| r.status == 200).count();
    let limited = |responses: &[Response]| responses.iter().filter(|r| r.status == 429).count();
    println!(
        "noisy client 127.0.0.2: {} OK, {} limited of {}; quiet client 127.0.0.3: {} OK, {} limited of {}",
        ok(&noisy),
        limited(&noisy),
        noisy.len(),
        ok(&quiet),
        limited(&quiet),
        quiet.len()
    );
    assert_eq!(ok(&noisy), 5, "the noisy client's bucket");
    assert_eq!(limited(&noisy), 10);
    assert_eq!(
        ok(&quiet),
        5,
        "the quiet client is not limited by the noisy one"
    );
    let refused = noisy.iter().find(|r| r.status == 429).unwrap();
    assert_eq!(refused.json()["code"], 8, "{}", refused.text());
    assert_eq!(refused.header("retry-after"), Some("1"));
}
