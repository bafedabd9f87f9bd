//! Every way an order fails, and what the saga undoes.

use ordermesh_proto::inventory::v1::AdjustStockRequest;
use ordermesh_proto::order::v1::{CancelOrderRequest, OrderStatus};
use ordermesh_proto::payment::v1::{GetPaymentRequest, PaymentStatus};
use tonic::Code;

use crate::harness::{Endpoints, TestApp, available, eventually, order_request};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn out_of_stock_fails_and_reserves_nothing() {
    let system = TestApp::sqlite().await;
    let mut orders = system.order().await;
    let mut inventory = system.inventory().await;
    let scale = available(&mut inventory, "sku-scale").await;
    let mug = available(&mut inventory, "sku-mug").await;

    let order = orders
        .create_order(order_request(
            "cust-oos",
            &[("sku-mug", 1), ("sku-scale", scale + 1)],
            "pm_card_visa",
        ))
        .await
        .expect("create answers with the failed order")
        .into_inner();
    assert_eq!(order.status(), OrderStatus::Failed);
    assert_eq!(order.failure_reason, "OUT_OF_STOCK");
    assert_eq!(available(&mut inventory, "sku-scale").await, scale);
    assert_eq!(
        available(&mut inventory, "sku-mug").await,
        mug,
        "all or nothing"
    );
    let payment = system
        .payment()
        .await
        .get_payment(GetPaymentRequest {
            order_id: order.order_id,
        })
        .await;
    assert_eq!(payment.expect_err("never charged").code(), Code::NotFound);
}

async fn declined(token: &str, reason: &str) {
    let system = TestApp::sqlite().await;
    let mut orders = system.order().await;
    let mut inventory = system.inventory().await;
    let before = available(&mut inventory, "sku-grinder").await;

    let order = orders
        .create_order(order_request("cust-decline", &[("sku-grinder", 2)], token))
        .await
        .expect("create")
        .into_inner();
    assert_eq!(order.status(), OrderStatus::Failed);
    assert_eq!(order.failure_reason, reason);
    // The reservation is released by the time the saga settles.
    assert_eq!(available(&mut inventory, "sku-grinder").await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declined_card_releases_the_stock() {
    declined("pm_card_chargeDeclined", "CARD_DECLINED").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn insufficient_funds_releases_the_stock() {
    declined("pm_card_insufficientFunds", "INSUFFICIENT_FUNDS").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_processing_error_fails_the_order_and_releases_the_stock() {
    declined("pm_card_processingError", "PAYMENT_PROCESSING_ERROR").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_confirmed_order_refunds_and_restocks() {
    let system = TestApp::sqlite().await;
    let mut orders = system.order().await;
    let mut inventory = system.inventory().await;
    let mut payments = system.payment().await;
    let before = available(&mut inventory, "sku-kettle").await;

    let order = orders
        .create_order(order_request(
            "cust-cancel",
            &[("sku-kettle", 3)],
            "pm_card_visa",
        ))
        .await
        .expect("create")
        .into_inner();
    assert_eq!(order.status(), OrderStatus::Confirmed);
    assert_eq!(available(&mut inventory, "sku-kettle").await, before - 3);

    let cancelled = orders
        .cancel_order(CancelOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(cancelled.status(), OrderStatus::Cancelled);
    assert_eq!(available(&mut inventory, "sku-kettle").await, before);
    let payment = payments
        .get_payment(GetPaymentRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .expect("payment")
        .into_inner();
    assert_eq!(payment.status(), PaymentStatus::Refunded);

    // Cancelling again changes nothing.
    let again = orders
        .cancel_order(CancelOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .expect("cancel again")
        .into_inner();
    assert_eq!(again.status(), OrderStatus::Cancelled);
    assert_eq!(available(&mut inventory, "sku-kettle").await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_order_cannot_be_cancelled() {
    let system = TestApp::sqlite().await;
    let mut orders = system.order().await;
    let order = orders
        .create_order(order_request(
            "cust-x",
            &[("sku-mug", 1)],
            "pm_card_chargeDeclined",
        ))
        .await
        .expect("create")
        .into_inner();
    let refused = orders
        .cancel_order(CancelOrderRequest {
            order_id: order.order_id,
        })
        .await
        .expect_err("failed orders do not cancel");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("FAILED"),
        "{}",
        refused.message()
    );

    let unknown = orders
        .cancel_order(CancelOrderRequest {
            order_id: "ord_nope".into(),
        })
        .await
        .expect_err("unknown order");
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_reservation_returns_its_stock() {
    // Payment is slow to be reached here: we only check that an uncommitted
    // reservation made directly expires and its stock comes back.
    let system = TestApp::spawn(
        std::sync::Arc::new(ordermesh_testkit::TestDatabase::sqlite()),
        |settings| {
            settings.inventory.reservation_ttl = Duration::from_millis(300);
            settings.inventory.reservation_sweep_interval = Duration::from_millis(100);
        },
    )
    .await;
    let mut inventory = system.inventory().await;
    let before = available(&mut inventory, "sku-mug").await;
    inventory
        .reserve_stock(ordermesh_proto::inventory::v1::ReserveStockRequest {
            reservation_id: "res-expiring".into(),
            items: vec![ordermesh_proto::inventory::v1::ReservationItem {
                product_id: "sku-mug".into(),
                quantity: 4,
                unit_price: None,
            }],
        })
        .await
        .expect("reserve");
    assert_eq!(available(&mut inventory, "sku-mug").await, before - 4);
    eventually(
        Duration::from_secs(20),
        "stock returns after expiry",
        || {
            let mut inventory = inventory.clone();
            async move { (available(&mut inventory, "sku-mug").await == before).then_some(()) }
        },
    )
    .await;
    // Restocking is visible to orders right away.
    inventory
        .adjust_stock(AdjustStockRequest {
            product_id: "sku-mug".into(),
            delta: 5,
        })
        .await
        .expect("adjust");
    assert_eq!(available(&mut inventory, "sku-mug").await, before + 5);
}

/// A failpoint that fails the charge step (as the canary gates' bad
/// version does): the order fails as when payment is down, its stock comes
/// back, and the failpoint counts its hit.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_charge_step_fails_the_order_and_releases_the_stock() {
    let system = TestApp::spawn(
        std::sync::Arc::new(ordermesh_testkit::TestDatabase::sqlite()),
        |settings| {
            settings.failpoints.failpoints =
                vec![ordermesh_runtime::failpoint::parse_failpoint("saga.charge=fail(1)").unwrap()];
        },
    )
    .await;
    let mut inventory = system.inventory().await;
    let before = available(&mut inventory, "sku-kettle").await;
    let order = system
        .order()
        .await
        .create_order(order_request(
            "cust-fp",
            &[("sku-kettle", 1)],
            "pm_card_visa",
        ))
        .await
        .expect("taken")
        .into_inner();
    assert_eq!(order.failure_reason, "PAYMENT_UNAVAILABLE", "{order:?}");
    eventually(Duration::from_secs(10), "stock released", || {
        let mut inventory = inventory.clone();
        async move { (available(&mut inventory, "sku-kettle").await == before).then_some(()) }
    })
    .await;
    let hits = system
        .metrics()
        .failpoint_hits_total
        .with_label_values(&["saga.charge"])
        .get();
    assert!(hits >= 1, "the failpoint never acted");
}
