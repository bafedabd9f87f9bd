//! A customer is who their token says, and sees and touches only their own
//! orders: every path in (REST through the gateway with the real curl, gRPC
//! straight to the order service, grpc-web) refuses a missing or bad token
//! and answers another customer's order as one that does not exist.

use std::sync::Arc;
use std::time::Duration;

use ordermesh_identity::IdentitySettings;
use ordermesh_proto::order::v1::{
    CancelOrderRequest, GetOrderRequest, ListOrdersRequest, WatchOrderRequest,
};
use ordermesh_testkit::TestDatabase;
use ordermesh_testkit::tokens::{self, Key};
use serde_json::json;
use tonic::{Code, Request};

use crate::curl::{self, Response, curl, curl_with_input, url};
use crate::grpc_web::frame;
use crate::harness::{Endpoints, OrderClient, TestApp, authorize, eventually, order_message};

fn with_token(token: Option<&str>) -> String {
    // `Authorization:` with nothing after it sends no header at all.
    token.map_or_else(
        || "Authorization:".to_owned(),
        |t| format!("Authorization: Bearer {t}"),
    )
}

/// A REST call with exactly this authorization (none for `None`).
fn rest(
    system: &TestApp,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> Response {
    let auth = with_token(token);
    let target = url(system.gateway_addr(), path);
    let mut args = vec!["-X", method, "-H", &auth];
    if let Some(body) = body {
        args.extend([
            "-H",
            "content-type: application/json",
            "--data-binary",
            body,
        ]);
    }
    args.push(&target);
    if path.ends_with(":watch") {
        args.push("-N");
    }
    curl(&args)
}

async fn place(orders: &mut OrderClient, customer: &str) -> String {
    let mut request = Request::new(order_message("", &[("sku-mug", 1)], "pm_card_visa"));
    authorize(&mut request, &tokens::customer(customer));
    let order = orders
        .create_order(request)
        .await
        .expect("placed")
        .into_inner();
    assert_eq!(
        order.customer_id, customer,
        "the order is the token's customer's"
    );
    order.order_id
}

/// A request with `token`, or with none at all (`None`): an empty header,
/// which the harness's client leaves alone and the service reads as none.
fn as_caller<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    match token {
        Some(token) => authorize(&mut request, token),
        None => {
            request
                .metadata_mut()
                .insert("authorization", "".parse().expect("empty"));
        }
    }
    request
}

/// Every order RPC with `token` (none for `None`): the codes they answered.
async fn every_rpc(
    orders: &mut OrderClient,
    token: Option<&str>,
    order_id: &str,
) -> Vec<(&'static str, Code)> {
    fn code<T>(result: Result<T, tonic::Status>) -> Code {
        result.err().map_or(Code::Ok, |status| status.code())
    }
    let id = || order_id.to_owned();
    let create = as_caller(order_message("", &[("sku-mug", 1)], "pm_card_visa"), token);
    vec![
        ("CreateOrder", code(orders.create_order(create).await)),
        (
            "GetOrder",
            code(
                orders
                    .get_order(as_caller(GetOrderRequest { order_id: id() }, token))
                    .await,
            ),
        ),
        (
            "ListOrders",
            code(
                orders
                    .list_orders(as_caller(ListOrdersRequest::default(), token))
                    .await,
            ),
        ),
        (
            "WatchOrder",
            code(
                orders
                    .watch_order(as_caller(WatchOrderRequest { order_id: id() }, token))
                    .await,
            ),
        ),
        (
            "CancelOrder",
            code(
                orders
                    .cancel_order(as_caller(CancelOrderRequest { order_id: id() }, token))
                    .await,
            ),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn no_token_no_entry_on_any_path() {
    if !curl::available() {
        return;
    }
    let system = TestApp::sqlite().await;
    let order_id = place(&mut system.order().await, "alice").await;
    let order_path = format!("/v1/orders/{order_id}");
    let body = r#"{"items":[{"productId":"sku-mug","quantity":1}],"paymentMethod":"pm_card_visa"}"#;
    // REST: 401 with the challenge and the JSON body.
    for (method, path, body) in [
        ("POST", "/v1/orders".to_owned(), Some(body)),
        ("GET", "/v1/orders?customerId=alice".to_owned(), None),
        ("GET", order_path.clone(), None),
        ("GET", format!("{order_path}:watch"), None),
        ("POST", format!("{order_path}:cancel"), Some("{}")),
    ] {
        let answer = rest(&system, method, &path, body, None);
        assert_eq!(answer.status, 401, "{method} {path}: {}", answer.text());
        assert!(
            answer
                .header("www-authenticate")
                .unwrap_or_default()
                .starts_with("Bearer realm=\"ordermesh\""),
            "{method} {path}"
        );
        assert_eq!(answer.json()["code"], 16, "{method} {path}");
    }
    // The catalog, the page and the document stay public.
    for path in [
        "/v1/products",
        "/v1/products/sku-mug",
        "/",
        "/openapi.json",
        "/healthz",
    ] {
        assert_eq!(rest(&system, "GET", path, None, None).status, 200, "{path}");
    }
    // gRPC straight to the order service: UNAUTHENTICATED, for every RPC.
    let answered = every_rpc(&mut system.order().await, None, &order_id).await;
    assert!(
        answered
            .iter()
            .all(|(_, code)| *code == Code::Unauthenticated),
        "{answered:?}"
    );
    // grpc-web: the service refuses it in grpc-web's own form.
    let get = GetOrderRequest {
        order_id: order_id.clone(),
    };
    let target = url(
        system.gateway_addr(),
        "/ordermesh.order.v1.OrderService/GetOrder",
    );
    let response = curl_with_input(
        &[
            "-X",
            "POST",
            "-H",
            "content-type: application/grpc-web+proto",
            "-H",
            "x-grpc-web: 1",
            "-H",
            "Authorization:",
            "--data-binary",
            "@-",
            &target,
        ],
        Some(&frame(0, &prost::Message::encode_to_vec(&get))),
    );
    let status = response
        .header("grpc-status")
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(&response.body).into_owned());
    assert!(status.contains("16"), "grpc-web without a token: {status}");
    // The order was not touched by any of it.
    let order = system
        .order()
        .await
        .get_order(GetOrderRequest { order_id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(order.status, 2, "still CONFIRMED");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_token_is_refused() {
    if !curl::available() {
        return;
    }
    let system = TestApp::sqlite().await;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let with = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut claims = tokens::claims("alice");
        change(&mut claims);
        tokens::sign(Key::Rsa, &claims)
    };
    let bad = [
        ("forged signature", tokens::forged("alice")),
        ("alg none", tokens::unsigned(&tokens::claims("alice"))),
        (
            "HS256 with the public key",
            tokens::hmac_with_public_key(&tokens::claims("alice")),
        ),
        ("expired", with(&|c| c["exp"] = json!(now() - 3600))),
        ("not yet valid", with(&|c| c["nbf"] = json!(now() + 3600))),
        (
            "another issuer",
            with(&|c| c["iss"] = json!("https://evil.example")),
        ),
        (
            "another audience",
            with(&|c| c["aud"] = json!("someone-else")),
        ),
        (
            "an unknown key",
            tokens::sign(Key::Ec, &tokens::claims("alice")),
        ),
        ("not a JWT", "not-a-token".to_owned()),
    ];
    let mut orders = system.order().await;
    for (what, token) in &bad {
        let answer = rest(&system, "GET", "/v1/orders", None, Some(token));
        assert_eq!(answer.status, 401, "{what}: {}", answer.text());
        let challenge = answer.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{what}: {challenge}"
        );
        let refused = orders
            .list_orders(as_caller(ListOrdersRequest::default(), Some(token)))
            .await
            .expect_err(what);
        assert_eq!(refused.code(), Code::Unauthenticated, "{what}: {refused:?}");
        eprintln!("refused {what}: {}", refused.message());
    }
    // And the good one works, on both paths.
    let good = tokens::customer("alice");
    assert_eq!(
        rest(&system, "GET", "/v1/orders", None, Some(&good)).status,
        200
    );
    assert!(
        orders
            .list_orders(as_caller(ListOrdersRequest::default(), Some(&good)))
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn customers_see_and_touch_only_their_own_orders() {
    if !curl::available() {
        return;
    }
    let system = TestApp::sqlite().await;
    let (alice, bob, admin) = (
        tokens::customer("alice"),
        tokens::customer("bob"),
        tokens::admin("ops-1"),
    );
    let mut orders = system.order().await;
    let order_id = place(&mut orders, "alice").await;
    let bobs_order = place(&mut orders, "bob").await;
    let path = format!("/v1/orders/{order_id}");

    // Bob: alice's order is as good as missing; her list is not his to see.
    for (method, path, body) in [
        ("GET", path.clone(), None),
        ("GET", format!("{path}:watch"), None),
        ("POST", format!("{path}:cancel"), Some("{}")),
    ] {
        let answer = rest(&system, method, &path, body, Some(&bob));
        assert_eq!(answer.status, 404, "bob {method} {path}: {}", answer.text());
        assert_eq!(answer.json()["details"][0]["reason"], "ORDER_NOT_FOUND");
    }
    let missing = rest(
        &system,
        "GET",
        "/v1/orders/ord_does_not_exist",
        None,
        Some(&bob),
    );
    assert_eq!(
        missing.status, 404,
        "the same answer as for an order that does not exist"
    );
    assert_eq!(
        rest(
            &system,
            "GET",
            "/v1/orders?customerId=alice",
            None,
            Some(&bob)
        )
        .status,
        403
    );
    let codes = every_rpc(&mut orders, Some(&bob), &order_id).await;
    for (rpc, code) in &codes {
        let expected = match *rpc {
            "CreateOrder" | "ListOrders" => Code::Ok,
            _ => Code::NotFound,
        };
        assert_eq!(*code, expected, "bob {rpc} on alice's order: {codes:?}");
    }
    // Placing an order for someone else is refused; naming oneself is fine.
    let for_alice = r#"{"customerId":"alice","items":[{"productId":"sku-mug","quantity":1}],"paymentMethod":"pm_card_visa"}"#;
    assert_eq!(
        rest(&system, "POST", "/v1/orders", Some(for_alice), Some(&bob)).status,
        403
    );
    assert_eq!(
        rest(&system, "POST", "/v1/orders", Some(for_alice), Some(&alice)).status,
        200
    );

    // Bob's own list holds only his orders.
    let listed = rest(&system, "GET", "/v1/orders", None, Some(&bob)).expect(200);
    let owners: Vec<&str> = listed["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["customerId"].as_str().unwrap())
        .collect();
    assert!(
        !owners.is_empty() && owners.iter().all(|c| *c == "bob"),
        "{owners:?}"
    );

    // Alice reads, watches and cancels her own.
    assert_eq!(
        rest(&system, "GET", &path, None, Some(&alice)).expect(200)["orderId"],
        order_id
    );
    let watched = rest(&system, "GET", &format!("{path}:watch"), None, Some(&alice));
    assert!(watched.text().contains(&order_id), "{}", watched.text());

    // An operator reads anyone's, lists one customer's or everyone's.
    assert_eq!(
        rest(
            &system,
            "GET",
            &format!("/v1/orders/{bobs_order}"),
            None,
            Some(&admin)
        )
        .status,
        200
    );
    let alices = rest(
        &system,
        "GET",
        "/v1/orders?customerId=alice",
        None,
        Some(&admin),
    )
    .expect(200);
    assert!(
        alices["orders"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["customerId"] == "alice")
    );
    let everyone = rest(&system, "GET", "/v1/orders?pageSize=50", None, Some(&admin)).expect(200);
    let customers: std::collections::HashSet<&str> = everyone["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["customerId"].as_str().unwrap())
        .collect();
    assert!(
        customers.contains("alice") && customers.contains("bob"),
        "{customers:?}"
    );
    // RFC 3339 as protobuf's JSON writes it: no fraction on a whole second
    // ("…:00Z" sorts after "…:00.043Z" as text), so pad it to compare.
    let times: Vec<String> = everyone["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let time = o["createTime"].as_str().unwrap().trim_end_matches('Z');
            let (whole, fraction) = time.split_once('.').unwrap_or((time, ""));
            format!("{whole}.{fraction:0<9}")
        })
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    let cancelled = rest(
        &system,
        "POST",
        &format!("{path}:cancel"),
        Some("{}"),
        Some(&admin),
    )
    .expect(200);
    assert_eq!(cancelled["status"], "ORDER_STATUS_CANCELLED");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_idempotency_key_from_two_customers_makes_two_orders() {
    let system = TestApp::sqlite().await;
    let mut orders = system.order().await;
    let mut ids = Vec::new();
    for customer in ["alice", "bob"] {
        let mut request = Request::new(order_message("", &[("sku-mug", 1)], "pm_card_visa"));
        authorize(&mut request, &tokens::customer(customer));
        request
            .metadata_mut()
            .insert("idempotency-key", "shared-key-1".parse().unwrap());
        ids.push(
            orders
                .create_order(request)
                .await
                .expect("placed")
                .into_inner()
                .order_id,
        );
    }
    assert_ne!(
        ids[0], ids[1],
        "keys are scoped by the authenticated customer"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_key_is_taken_after_a_refresh_and_a_removed_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, tokens::jwks(&[Key::Rsa]).to_string()).unwrap();
    let file = jwks.clone();
    let system = TestApp::spawn(Arc::new(TestDatabase::sqlite()), move |settings| {
        settings.identity = IdentitySettings {
            jwks_file: Some(file),
            jwt_issuer: Some(tokens::ISSUER.into()),
            dev_issuer: false,
            ..IdentitySettings::default()
        };
    })
    .await;
    let mut orders = system.order().await;
    let list = |token: String| as_caller(ListOrdersRequest::default(), Some(&token));
    let old = tokens::customer("alice");
    let new = tokens::sign(Key::Ec, &tokens::claims("alice"));
    assert!(orders.list_orders(list(old.clone())).await.is_ok());
    assert_eq!(
        orders
            .list_orders(list(new.clone()))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    // The issuer adds its new key: taken once the set is read again (at most
    // every few seconds on an unknown key).
    std::fs::write(&jwks, tokens::jwks(&[Key::Rsa, Key::Ec]).to_string()).unwrap();
    eventually(Duration::from_secs(20), "the new key taken", || {
        let (mut orders, new) = (orders.clone(), new.clone());
        async move { orders.list_orders(list(new)).await.ok().map(|_| ()) }
    })
    .await;

    // Then it drops the old one: refused after the next read (an unknown
    // key's token makes one happen).
    std::fs::write(&jwks, tokens::jwks(&[Key::Ec]).to_string()).unwrap();
    let unknown = tokens::sign_raw(
        jsonwebtoken::Algorithm::ES256,
        &jsonwebtoken::EncodingKey::from_ec_pem(include_bytes!(
            "../../../../lib/identity/testdata/ec-a.pem"
        ))
        .unwrap(),
        &json!({"alg": "ES256", "typ": "JWT", "kid": "never-seen"}),
        &tokens::claims("alice"),
    );
    eventually(Duration::from_secs(20), "the old key dropped", || {
        let (mut orders, old, unknown) = (orders.clone(), old.clone(), unknown.clone());
        async move {
            let _ = orders.list_orders(list(unknown)).await;
            orders.list_orders(list(old)).await.is_err().then_some(())
        }
    })
    .await;
    assert!(
        orders.list_orders(list(new)).await.is_ok(),
        "the new key still works"
    );
}
