//! The same idempotency key with the same request returns the same order;
//! with a different request it is refused.

use ordermesh_proto::order::v1::{CreateOrderRequest, ListOrdersRequest, Order};
use ordermesh_testkit::tokens;
use tonic::{Code, Request, Status};

use crate::harness::{Endpoints, OrderClient, TestApp, authorize, available, order_message};

/// Places `request` as its customer, with an idempotency key.
async fn create_with_key(
    orders: &mut OrderClient,
    request: CreateOrderRequest,
    key: &str,
) -> Result<Order, Status> {
    let token = tokens::customer(&request.customer_id);
    let mut request = Request::new(request);
    authorize(&mut request, &token);
    request
        .metadata_mut()
        .insert("idempotency-key", key.parse().expect("ascii"));
    orders
        .create_order(request)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_returns_the_same_order_and_charges_once() {
    let system = TestApp::sqlite().await;
    let mut orders = system.order().await;
    let mut inventory = system.inventory().await;
    let before = available(&mut inventory, "sku-espresso").await;
    let request = order_message("cust-idem", &[("sku-espresso", 2)], "pm_card_visa");

    let first = create_with_key(&mut orders, request.clone(), "key-1")
        .await
        .expect("first");
    let second = create_with_key(&mut orders, request.clone(), "key-1")
        .await
        .expect("replay");
    assert_eq!(first.order_id, second.order_id);
    assert_eq!(first, second);
    assert_eq!(available(&mut inventory, "sku-espresso").await, before - 2);

    let different = order_message("cust-idem", &[("sku-espresso", 3)], "pm_card_visa");
    let refused = create_with_key(&mut orders, different, "key-1")
        .await
        .expect_err("same key, different request");
    assert_eq!(refused.code(), Code::AlreadyExists);
    assert!(
        refused.message().contains(&first.order_id),
        "{}",
        refused.message()
    );
    assert_eq!(available(&mut inventory, "sku-espresso").await, before - 2);

    // Without a key, the same request is a new order.
    let mut unkeyed = Request::new(request);
    authorize(&mut unkeyed, &tokens::customer("cust-idem"));
    let third = orders
        .create_order(unkeyed)
        .await
        .expect("no key")
        .into_inner();
    assert_ne!(third.order_id, first.order_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_retries_with_one_key_make_one_order() {
    let system = TestApp::sqlite().await;
    let orders = system.order().await;
    let request = order_message("cust-race", &[("sku-mug", 1)], "pm_card_visa");
    let attempts = (0..10).map(|_| {
        let mut orders = orders.clone();
        let request = request.clone();
        async move { create_with_key(&mut orders, request, "race-key").await }
    });
    let results = futures::future::join_all(attempts).await;
    let ids: std::collections::HashSet<_> = results
        .into_iter()
        .map(|r| r.expect("every attempt answers").order_id)
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let listed = system
        .order()
        .await
        .list_orders(ListOrdersRequest {
            customer_id: "cust-race".into(),
            page_size: 50,
            page_token: String::new(),
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.orders.len(), 1);
}
