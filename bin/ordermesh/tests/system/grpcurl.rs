//! The real `grpcurl` lists, describes and calls every service through
//! server reflection, with no proto files.

use std::net::SocketAddr;
use std::process::Command;

use futures::StreamExt;
use ordermesh_testkit::tool;

use crate::harness::{Role, TestApp, connect};

fn grpcurl(args: &[&str]) -> String {
    let grpcurl = tool("grpcurl").expect("checked by the caller");
    let output = Command::new(grpcurl)
        .args(args)
        .output()
        .expect("run grpcurl");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "grpcurl {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `grpcurl -plaintext [-d DATA] ADDR TARGET...`
fn plaintext(addr: SocketAddr, data: Option<&str>, target: &[&str]) -> String {
    let addr = addr.to_string();
    let mut args = vec!["-plaintext"];
    if let Some(data) = data {
        args.extend(["-d", data]);
    }
    args.push(&addr);
    args.extend_from_slice(target);
    grpcurl(&args)
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcurl_lists_describes_and_calls_each_service() {
    if tool("grpcurl").is_none() {
        return;
    }
    let system = TestApp::sqlite().await;
    for (addr, service) in [
        (system.addr(Role::Order), "ordermesh.order.v1.OrderService"),
        (
            system.addr(Role::Inventory),
            "ordermesh.inventory.v1.InventoryService",
        ),
        (
            system.addr(Role::Payment),
            "ordermesh.payment.v1.PaymentService",
        ),
    ] {
        let listed = plaintext(addr, None, &["list"]);
        assert!(listed.lines().any(|l| l == service), "{listed}");
        assert!(
            listed.lines().any(|l| l == "grpc.health.v1.Health"),
            "{listed}"
        );
        let described = plaintext(addr, None, &["describe", service]);
        assert!(described.contains("is a service"), "{described}");
    }
    let described = plaintext(
        system.addr(Role::Order),
        None,
        &["describe", "ordermesh.order.v1.CreateOrderRequest"],
    );
    assert!(described.contains("payment_method"), "{described}");

    let products = plaintext(
        system.addr(Role::Inventory),
        Some(r#"{"pageSize": 2}"#),
        &["ordermesh.inventory.v1.InventoryService/ListProducts"],
    );
    let products: serde_json::Value = serde_json::from_str(&products).expect("json");
    assert_eq!(
        products["products"].as_array().map(Vec::len),
        Some(2),
        "{products}"
    );

    // The order service asks every caller for a token, grpcurl included.
    let body = r#"{"customerId":"cust-grpcurl","items":[{"productId":"sku-mug","quantity":1}],"paymentMethod":"pm_card_visa"}"#;
    let order_addr = system.addr(Role::Order).to_string();
    let create = "ordermesh.order.v1.OrderService/CreateOrder";
    let anonymous = Command::new(tool("grpcurl").unwrap())
        .args(["-plaintext", "-d", body, &order_addr, create])
        .output()
        .expect("run grpcurl");
    assert!(
        !anonymous.status.success(),
        "an anonymous CreateOrder was taken"
    );
    assert!(
        String::from_utf8_lossy(&anonymous.stderr).contains("Unauthenticated"),
        "{}",
        String::from_utf8_lossy(&anonymous.stderr)
    );
    let header = format!(
        "authorization: Bearer {}",
        ordermesh_testkit::tokens::customer("cust-grpcurl")
    );
    let order = grpcurl(&["-plaintext", "-H", &header, "-d", body, &order_addr, create]);
    let order: serde_json::Value = serde_json::from_str(&order).expect("json");
    assert_eq!(order["status"], "ORDER_STATUS_CONFIRMED", "{order}");
    let order_id = order["orderId"].as_str().expect("id");

    let payment = plaintext(
        system.addr(Role::Payment),
        Some(&format!(r#"{{"orderId":"{order_id}"}}"#)),
        &["ordermesh.payment.v1.PaymentService/GetPayment"],
    );
    let payment: serde_json::Value = serde_json::from_str(&payment).expect("json");
    assert_eq!(payment["status"], "PAYMENT_STATUS_SUCCEEDED", "{payment}");

    let health = plaintext(
        system.addr(Role::Order),
        None,
        &["grpc.health.v1.Health/Check"],
    );
    assert!(health.contains("SERVING"), "{health}");
}

/// grpcurl 1.8 speaks reflection v1alpha; newer clients speak v1. Both work.
#[tokio::test(flavor = "multi_thread")]
async fn reflection_v1_lists_the_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let system = TestApp::sqlite().await;
    let mut client = ServerReflectionClient::new(connect(system.addr(Role::Payment)).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection v1")
        .into_inner();
    let response = responses.next().await.expect("one answer").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected answer {response:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"ordermesh.payment.v1.PaymentService".to_owned()),
        "{names:?}"
    );
    assert!(
        !names.contains(&"ordermesh.order.v1.OrderService".to_owned()),
        "each role lists only its own services: {names:?}"
    );
}
