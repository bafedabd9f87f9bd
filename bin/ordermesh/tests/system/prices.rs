//! Prices the order service remembers (`--price-cache-ttl`): many orders,
//! one ListProducts call; an unknown product still refused, by the
//! inventory's answer, before anything is stored.

use std::time::Duration;

use ordermesh_proto::order::v1::{ListOrdersRequest, OrderStatus};
use ordermesh_testkit::TestDatabase;
use std::sync::Arc;

use crate::harness::{Endpoints, TestApp, order_request};

const LIST_PRODUCTS: &str = "/ordermesh.inventory.v1.InventoryService/ListProducts";

/// ListProducts calls the order role made, answered OK.
fn list_products_calls(app: &TestApp) -> u64 {
    app.metrics()
        .client_requests_total
        .with_label_values(&["order", LIST_PRODUCTS, "OK"])
        .get()
}

async fn app_remembering_for(ttl: Duration) -> TestApp {
    TestApp::spawn(Arc::new(TestDatabase::sqlite()), |settings| {
        settings.order.price_cache_ttl = ttl;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn remembered_prices_save_a_call_per_order_and_unknown_products_are_still_refused() {
    // An hour: no order of this test outlives it, so the count is exact.
    let app = app_remembering_for(Duration::from_secs(3600)).await;
    let mut orders = app.order().await;
    for _ in 0..5 {
        let order = orders
            .create_order(order_request(
                "cust-prices",
                &[("sku-mug", 1)],
                "pm_card_visa",
            ))
            .await
            .expect("create")
            .into_inner();
        assert_eq!(order.status(), OrderStatus::Confirmed, "{order:?}");
        assert_eq!(order.total.map(|m| m.minor_units), Some(1200));
    }
    assert_eq!(list_products_calls(&app), 1, "five orders, one quote");

    // A product never quoted: the inventory is asked, and the order refused.
    let refused = orders
        .create_order(order_request(
            "cust-prices",
            &[("sku-mug", 1), ("sku-no-such-thing", 1)],
            "pm_card_visa",
        ))
        .await
        .expect_err("an unknown product");
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    assert!(
        refused.message().contains("sku-no-such-thing"),
        "{refused:?}"
    );
    assert_eq!(
        list_products_calls(&app),
        2,
        "the unknown product was asked about"
    );
    // ...and asked about again: an unknown product is never remembered.
    let again = orders
        .create_order(order_request(
            "cust-prices",
            &[("sku-no-such-thing", 1)],
            "pm_card_visa",
        ))
        .await
        .expect_err("still unknown");
    assert_eq!(again.code(), tonic::Code::NotFound);
    assert_eq!(list_products_calls(&app), 3);

    let mut list = tonic::Request::new(ListOrdersRequest {
        customer_id: "cust-prices".into(),
        ..Default::default()
    });
    crate::harness::authorize(
        &mut list,
        &ordermesh_testkit::tokens::customer("cust-prices"),
    );
    let stored = orders.list_orders(list).await.expect("list").into_inner();
    assert_eq!(
        stored.orders.len(),
        5,
        "the refused orders were never stored"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn zero_asks_the_inventory_for_every_order() {
    let app = app_remembering_for(Duration::ZERO).await;
    let mut orders = app.order().await;
    for _ in 0..3 {
        orders
            .create_order(order_request(
                "cust-no-cache",
                &[("sku-mug", 1)],
                "pm_card_visa",
            ))
            .await
            .expect("create");
    }
    assert_eq!(list_products_calls(&app), 3);
}
