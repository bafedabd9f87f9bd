//! Bad input gets a precise status and a message a person can act on, and
//! changes nothing.

use ordermesh_proto::order::v1::{CreateOrderRequest, ListOrdersRequest};
use tonic::Code;

use crate::harness::{Endpoints, TestApp, authorize, available, order_message, order_request};

#[tokio::test(flavor = "multi_thread")]
async fn bad_orders_are_refused_without_a_trace() {
    let system = TestApp::sqlite().await;
    let mut orders = system.order().await;
    let mut inventory = system.inventory().await;
    let mug = available(&mut inventory, "sku-mug").await;

    let long_id = "x".repeat(500);
    let many: Vec<(String, i32)> = (0..101).map(|i| (format!("sku-{i}"), 1)).collect();
    let many: Vec<(&str, i32)> = many.iter().map(|(p, q)| (p.as_str(), *q)).collect();
    // (A missing customer id is fine: the order is the token's customer's;
    // see identity.rs.)
    let cases: Vec<(&str, tonic::Request<CreateOrderRequest>, Code, &str)> = vec![
        (
            "no items",
            order_request("cust-v", &[], "pm_card_visa"),
            Code::InvalidArgument,
            "items",
        ),
        (
            "zero quantity",
            order_request("cust-v", &[("sku-mug", 0)], "pm_card_visa"),
            Code::InvalidArgument,
            "quantity",
        ),
        (
            "negative quantity",
            order_request("cust-v", &[("sku-mug", -3)], "pm_card_visa"),
            Code::InvalidArgument,
            "quantity",
        ),
        (
            "unknown product",
            order_request("cust-v", &[("sku-nope", 1)], "pm_card_visa"),
            Code::NotFound,
            "sku-nope",
        ),
        (
            "duplicate lines",
            order_request("cust-v", &[("sku-mug", 1), ("sku-mug", 2)], "pm_card_visa"),
            Code::InvalidArgument,
            "more than one line",
        ),
        (
            "unknown token",
            order_request("cust-v", &[("sku-mug", 1)], "pm_card_bogus"),
            Code::InvalidArgument,
            "payment_method",
        ),
        (
            "missing token",
            order_request("cust-v", &[("sku-mug", 1)], ""),
            Code::InvalidArgument,
            "payment_method",
        ),
        (
            "oversized id",
            order_request(&long_id, &[("sku-mug", 1)], "pm_card_visa"),
            Code::InvalidArgument,
            "customer_id",
        ),
        (
            "too many lines",
            order_request("cust-v", &many, "pm_card_visa"),
            Code::InvalidArgument,
            "at most",
        ),
    ];
    for (case, request, code, hint) in cases {
        let status = orders.create_order(request).await.expect_err(case);
        assert_eq!(status.code(), code, "{case}: {status:?}");
        assert!(
            status.message().contains(hint),
            "{case}: message {:?} should mention {hint:?}",
            status.message()
        );
    }

    // An oversized message is refused by the transport limit.
    let mut huge = tonic::Request::new(order_message(
        &"c".repeat(5 * 1024 * 1024),
        &[("sku-mug", 1)],
        "pm_card_visa",
    ));
    authorize(&mut huge, &ordermesh_testkit::tokens::customer("cust-v"));
    let status = orders.create_order(huge).await.expect_err("oversized");
    assert!(
        matches!(
            status.code(),
            Code::OutOfRange | Code::ResourceExhausted | Code::InvalidArgument
        ),
        "{status:?}"
    );

    let listed = orders
        .list_orders(ListOrdersRequest {
            customer_id: "cust-v".into(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .expect("list")
        .into_inner();
    assert!(listed.orders.is_empty(), "no order was stored: {listed:?}");
    assert_eq!(available(&mut inventory, "sku-mug").await, mug);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_list_and_get_requests_are_refused() {
    let system = TestApp::sqlite().await;
    let mut orders = system.order().await;
    let bad_token = orders
        .list_orders(ListOrdersRequest {
            customer_id: "c".into(),
            page_size: 10,
            page_token: "garbage".into(),
        })
        .await
        .expect_err("bad token");
    assert_eq!(bad_token.code(), Code::InvalidArgument);
    let negative = orders
        .list_orders(ListOrdersRequest {
            customer_id: "c".into(),
            page_size: -1,
            page_token: String::new(),
        })
        .await
        .expect_err("negative page size");
    assert_eq!(negative.code(), Code::InvalidArgument);
    let bad_customer = orders
        .list_orders(ListOrdersRequest {
            customer_id: "not a customer".into(),
            ..ListOrdersRequest::default()
        })
        .await
        .expect_err("a malformed customer id");
    assert_eq!(bad_customer.code(), Code::InvalidArgument);
    let missing = orders
        .get_order(ordermesh_proto::order::v1::GetOrderRequest {
            order_id: "ord_nope".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(missing.code(), Code::NotFound);
    assert!(missing.message().contains("ord_nope"));
}
