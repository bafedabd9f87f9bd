//! The gateway's router driven in-process with tower's `oneshot`, no socket
//! on its side: the error table, the routing rules and its own answers
//! (shed, timeout, unready). Its upstreams are addresses nothing answers
//! at, so what needs a service answers UNAVAILABLE. The real-curl tests in
//! `bin/ordermesh/tests/system` are the outside view.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use ordermesh_gateway::{GatewaySettings, Identity};
use ordermesh_identity::IdentitySettings;
use ordermesh_runtime::AppContext;
use ordermesh_runtime::client::GrpcClientSettings;
use tower::ServiceExt;

const NOWHERE: &str = "http://127.0.0.1:1";

fn settings() -> GatewaySettings {
    GatewaySettings {
        gateway_order_url: NOWHERE.into(),
        gateway_inventory_url: NOWHERE.into(),
        gateway_payment_url: NOWHERE.into(),
        ..GatewaySettings::default()
    }
}

/// The development issuer, in a directory of the test's own.
fn identity() -> (Identity, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (verifier, dev_issuer) =
        ordermesh_identity::from_settings(&IdentitySettings::default(), dir.path()).unwrap();
    (
        Identity {
            verifier,
            dev_issuer,
        },
        dir,
    )
}

fn router(settings: &GatewaySettings, context: &AppContext) -> axum::Router {
    router_with(settings, context, identity().0)
}

fn router_with(
    settings: &GatewaySettings,
    context: &AppContext,
    identity: Identity,
) -> axum::Router {
    let client = GrpcClientSettings {
        connect_timeout: Duration::from_millis(200),
        ..GrpcClientSettings::default()
    };
    let watches = ordermesh_runtime::watches::WatchSettings::default();
    ordermesh_gateway::build(settings, &client, &watches, identity, context)
        .expect("the gateway builds")
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

async fn send(router: axum::Router, request: Request<Body>) -> Answer {
    let response = router.oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

fn request(
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(content_type) = content_type {
        builder = builder.header("content-type", content_type);
    }
    builder.body(body.into()).unwrap()
}

#[tokio::test]
async fn every_refusal_is_its_status_with_the_json_body() {
    let context = AppContext::for_tests();
    let (identity, _dir) = identity();
    let token = identity
        .dev_issuer
        .as_ref()
        .unwrap()
        .issue("c", None, Duration::from_secs(600))
        .unwrap();
    let router = router_with(&settings(), &context, identity);
    let json = Some("application/json");
    let order = r#"{"customerId":"c","items":[{"productId":"sku-mug","quantity":1}],"paymentMethod":"pm_card_visa"}"#;
    let signed = |mut request: Request<Body>| {
        let value = format!("Bearer {token}").parse().unwrap();
        request.headers_mut().insert("authorization", value);
        request
    };
    let cases: Vec<(Request<Body>, u16, i64)> = vec![
        (request(Method::GET, "/nope", None, Body::empty()), 404, 5),
        (
            request(Method::DELETE, "/v1/orders", None, Body::empty()),
            405,
            12,
        ),
        (
            request(Method::POST, "/healthz", None, Body::empty()),
            405,
            12,
        ),
        (
            signed(request(Method::POST, "/v1/orders", Some("text/xml"), order)),
            415,
            3,
        ),
        (
            signed(request(
                Method::POST,
                "/v1/orders",
                json,
                "{\"customerId\":",
            )),
            400,
            3,
        ),
        (
            signed(request(
                Method::POST,
                "/v1/orders",
                json,
                r#"{"colour":"red"}"#,
            )),
            400,
            3,
        ),
        (
            signed(request(
                Method::GET,
                "/v1/orders?colour=red",
                None,
                Body::empty(),
            )),
            400,
            3,
        ),
        (
            signed(request(
                Method::POST,
                "/v1/orders",
                json,
                vec![b' '; 65 * 1024],
            )),
            413,
            8,
        ),
        // No token for the order API: refused before anything else; valid,
        // but nothing answers at the order service.
        (request(Method::POST, "/v1/orders", json, order), 401, 16),
        (
            request(Method::GET, "/v1/orders/ord_1", None, Body::empty()),
            401,
            16,
        ),
        (
            signed(request(Method::POST, "/v1/orders", json, order)),
            503,
            14,
        ),
        (
            request(Method::GET, "/v1/products/sku-mug", None, Body::empty()),
            503,
            14,
        ),
    ];
    for (request, status, code) in cases {
        let what = format!("{} {}", request.method(), request.uri());
        let answer = send(router.clone(), request).await;
        assert_eq!(
            answer.status.as_u16(),
            status,
            "{what}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        let body = answer.json();
        assert_eq!(body["code"], code, "{what}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
        assert!(body["details"].is_array(), "{what}: {body}");
        if status == 405 {
            assert!(answer.headers.contains_key("allow"), "{what}");
        }
        if status == 401 {
            let challenge = answer.headers["www-authenticate"].to_str().unwrap();
            assert!(
                challenge.starts_with("Bearer realm="),
                "{what}: {challenge}"
            );
        }
    }
}

#[tokio::test]
async fn pages_answer_and_readiness_follows_the_upstreams() {
    let context = AppContext::for_tests();
    let router = router(&settings(), &context);
    let healthz = send(
        router.clone(),
        request(Method::GET, "/healthz", None, Body::empty()),
    )
    .await;
    assert_eq!(healthz.status, StatusCode::OK);
    let openapi = send(
        router.clone(),
        request(Method::GET, "/openapi.json", None, Body::empty()),
    )
    .await;
    assert!(openapi.json()["paths"]["/v1/orders"].is_object());
    let page = send(
        router.clone(),
        request(Method::GET, "/", None, Body::empty()),
    )
    .await;
    assert!(String::from_utf8_lossy(&page.body).contains("<html"));
    let ready = send(router, request(Method::GET, "/readyz", None, Body::empty())).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    let text = String::from_utf8_lossy(&ready.body);
    assert!(
        text.contains("OrderService") && text.contains("InventoryService"),
        "{text}"
    );
}

#[tokio::test]
async fn grpc_web_reaches_only_annotated_methods_and_made_up_ones_share_a_label() {
    let context = AppContext::for_tests();
    let router = router(&settings(), &context);
    let grpc_web = |path: &str| {
        Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .body(Body::from(vec![0, 0, 0, 0, 0]))
            .unwrap()
    };
    // Not annotated: refused by the gateway itself, in grpc-web's own form.
    let hidden = send(
        router.clone(),
        grpc_web("/ordermesh.inventory.v1.InventoryService/AdjustStock"),
    )
    .await;
    assert_eq!(hidden.status, StatusCode::OK);
    assert_eq!(hidden.headers["grpc-status"], "12", "UNIMPLEMENTED");
    // Annotated: passed on (and nothing answers there).
    let passed = send(
        router.clone(),
        grpc_web("/ordermesh.order.v1.OrderService/GetOrder"),
    )
    .await;
    assert_eq!(passed.headers["grpc-status"], "14", "UNAVAILABLE");
    // Made-up methods: one label between them, whatever their names.
    for n in 0..20 {
        let _ = send(
            router.clone(),
            grpc_web(&format!("/ordermesh.order.v1.OrderService/X{n}")),
        )
        .await;
    }
    let metrics = context.metrics().render();
    assert!(!metrics.contains("X1"), "a made-up method became a label");
    let other = context
        .metrics()
        .requests_total
        .with_label_values(&["gateway", "other", "200"])
        .get();
    assert_eq!(other, 21, "the hidden method and the 20 made-up ones");
}

#[tokio::test]
async fn shed_and_timed_out_requests_get_the_json_body() {
    // No room at all: every request is shed at once.
    let context = AppContext::for_tests();
    let full = GatewaySettings {
        gateway_max_in_flight: 0,
        ..settings()
    };
    let shed = send(
        router(&full, &context),
        request(Method::GET, "/v1/products", None, Body::empty()),
    )
    .await;
    assert_eq!(shed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.headers["retry-after"], "1");
    assert_eq!(shed.json()["code"], 14);

    // A body that never finishes outlives the request timeout (+1 s).
    let hurried = GatewaySettings {
        request_timeout: Duration::ZERO,
        ..settings()
    };
    let never = Body::from_stream(futures::stream::pending::<
        Result<bytes::Bytes, std::io::Error>,
    >());
    let late = send(
        router(&hurried, &context),
        request(
            Method::POST,
            "/v1/dev/token",
            Some("application/json"),
            never,
        ),
    )
    .await;
    assert_eq!(late.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(late.json()["code"], 4);
}

#[tokio::test]
async fn the_development_issuer_hands_out_tokens_its_keys_verify() {
    let context = AppContext::for_tests();
    let router = router(&settings(), &context);
    let jwks = send(
        router.clone(),
        request(Method::GET, "/.well-known/jwks.json", None, Body::empty()),
    )
    .await;
    assert_eq!(jwks.json()["keys"][0]["kty"], "OKP");
    let issued = send(
        router.clone(),
        request(
            Method::POST,
            "/v1/dev/token",
            Some("application/json"),
            r#"{"customerId":"alice"}"#,
        ),
    )
    .await;
    assert_eq!(issued.status, StatusCode::OK);
    let issued = issued.json();
    assert_eq!(issued["tokenType"], "Bearer");
    assert_eq!(issued["expiresIn"], 3600);
    assert!(issued["accessToken"].as_str().unwrap().split('.').count() == 3);
    let bad = send(
        router.clone(),
        request(
            Method::POST,
            "/v1/dev/token",
            Some("application/json"),
            r#"{"customer":"alice"}"#,
        ),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    // With an issuer configured, neither page exists.
    let dir = tempfile::tempdir().unwrap();
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, r#"{"keys":[]}"#).unwrap();
    let configured = IdentitySettings {
        jwt_issuer: Some("https://idp.example".into()),
        jwks_file: Some(jwks_file),
        ..IdentitySettings::default()
    };
    let (verifier, dev_issuer) =
        ordermesh_identity::from_settings(&configured, dir.path()).unwrap();
    assert!(dev_issuer.is_none());
    let router = router_with(
        &settings(),
        &context,
        Identity {
            verifier,
            dev_issuer,
        },
    );
    for (method, path) in [
        (Method::GET, "/.well-known/jwks.json"),
        (Method::POST, "/v1/dev/token"),
    ] {
        let answer = send(
            router.clone(),
            request(method, path, Some("application/json"), "{}"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn grpc_web_bodies_over_the_limit_are_refused_however_they_arrive() {
    let context = AppContext::for_tests();
    let settings = GatewaySettings {
        body_limit: 1024,
        ..settings()
    };
    let router = router(&settings, &context);
    let path = "/ordermesh.inventory.v1.InventoryService/GetProduct";
    let grpc_web = |body: Body, length: Option<usize>| {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("content-type", "application/grpc-web+proto");
        if let Some(length) = length {
            builder = builder.header("content-length", length);
        }
        builder.body(body).unwrap()
    };
    let grpc_status = |answer: &Answer| {
        answer
            .headers
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let framed = |len: usize| {
        let mut bytes = vec![0, 0, 0, 0, 0];
        bytes[1..5].copy_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
        bytes.extend(std::iter::repeat_n(0x0a, len));
        bytes
    };
    // Declared over the limit: refused before a byte is read.
    let declared = framed(4096);
    let length = declared.len();
    let answer = send(router.clone(), grpc_web(Body::from(declared), Some(length))).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        grpc_status(&answer).as_deref(),
        Some("8"),
        "RESOURCE_EXHAUSTED"
    );
    // Streamed with no length, in small chunks: cut off at the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        framed(4096).chunks(100).map(|c| Ok(c.to_vec())).collect();
    let streamed = Body::from_stream(futures::stream::iter(chunks));
    let answer = send(router.clone(), grpc_web(streamed, None)).await;
    assert_eq!(
        grpc_status(&answer).as_deref(),
        Some("8"),
        "RESOURCE_EXHAUSTED"
    );
    // Within the limit: passed on (and nothing answers there).
    let answer = send(router.clone(), grpc_web(Body::from(framed(100)), None)).await;
    assert_eq!(grpc_status(&answer).as_deref(), Some("14"), "UNAVAILABLE");
}

#[tokio::test]
async fn cors_is_closed_by_default_and_every_answer_is_nosniff() {
    let context = AppContext::for_tests();
    let router = router(&settings(), &context);
    let mut page = request(Method::GET, "/openapi.json", None, Body::empty());
    page.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    let answer = send(router.clone(), page).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.headers.get("access-control-allow-origin").is_none());
    assert_eq!(answer.headers["x-content-type-options"], "nosniff");
    let form = request(
        Method::POST,
        "/v1/dev/token",
        Some("application/x-www-form-urlencoded"),
        r#"{"customerId":"alice"}"#,
    );
    let answer = send(router, form).await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(answer.json()["code"], 3);
    assert_eq!(answer.headers["x-content-type-options"], "nosniff");
}
