//! The happy path: place, read, list and watch an order.

use futures::StreamExt;
use ordermesh_proto::order::v1::{
    GetOrderRequest, ListOrdersRequest, OrderStatus, WatchOrderRequest,
};
use ordermesh_proto::payment::v1::{GetPaymentRequest, PaymentStatus};

use crate::harness::{Endpoints, TestApp, available, order_request};

#[tokio::test(flavor = "multi_thread")]
async fn an_order_is_confirmed_charged_and_takes_its_stock() {
    let system = TestApp::sqlite().await;
    let mut orders = system.order().await;
    let mut inventory = system.inventory().await;
    let before = available(&mut inventory, "sku-mug").await;

    let order = orders
        .create_order(order_request(
            "cust-happy",
            &[("sku-mug", 2), ("sku-filter", 1)],
            "pm_card_visa",
        ))
        .await
        .expect("create")
        .into_inner();

    assert_eq!(order.status(), OrderStatus::Confirmed, "{order:?}");
    assert!(order.order_id.starts_with("ord_"));
    assert!(order.failure_reason.is_empty());
    let total = order.total.clone().expect("total");
    assert_eq!(total.currency_code, "USD");
    assert_eq!(total.minor_units, 2 * 1200 + 699);
    assert_eq!(order.items.len(), 2);
    assert_eq!(
        order.items[0].unit_price.as_ref().map(|m| m.minor_units),
        Some(1200)
    );
    assert!(order.create_time.is_some() && order.update_time.is_some());
    assert_eq!(available(&mut inventory, "sku-mug").await, before - 2);

    let payment = system
        .payment()
        .await
        .get_payment(GetPaymentRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .expect("payment")
        .into_inner();
    assert_eq!(payment.status(), PaymentStatus::Succeeded);
    assert_eq!(
        payment.amount.map(|m| m.minor_units),
        Some(total.minor_units)
    );

    let fetched = orders
        .get_order(GetOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(fetched, order);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_orders_pages_newest_first() {
    let system = TestApp::sqlite().await;
    let mut orders = system.order().await;
    let mut placed = Vec::new();
    for _ in 0..5 {
        let order = orders
            .create_order(order_request(
                "cust-list",
                &[("sku-filter", 1)],
                "pm_card_visa",
            ))
            .await
            .expect("create")
            .into_inner();
        placed.push(order.order_id);
    }
    orders
        .create_order(order_request(
            "someone-else",
            &[("sku-filter", 1)],
            "pm_card_visa",
        ))
        .await
        .expect("create");

    let mut seen = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = orders
            .list_orders(ListOrdersRequest {
                customer_id: "cust-list".into(),
                page_size: 2,
                page_token: page_token.clone(),
            })
            .await
            .expect("list")
            .into_inner();
        pages += 1;
        assert!(page.orders.len() <= 2);
        seen.extend(page.orders.into_iter().map(|o| o.order_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    placed.reverse();
    assert_eq!(
        seen, placed,
        "newest first, each once, only this customer's"
    );
    assert_eq!(pages, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_streams_until_terminal() {
    let system = TestApp::sqlite().await;
    let mut orders = system.order().await;
    let order = orders
        .create_order(order_request(
            "cust-watch",
            &[("sku-kettle", 1)],
            "pm_card_visa",
        ))
        .await
        .expect("create")
        .into_inner();
    let updates: Vec<_> = orders
        .watch_order(WatchOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .expect("watch")
        .into_inner()
        .collect()
        .await;
    // The order is already terminal: one message, then the stream ends cleanly.
    assert_eq!(updates.len(), 1, "{updates:?}");
    let last = updates[0].as_ref().expect("no error");
    assert_eq!(last.status(), OrderStatus::Confirmed);

    let missing = orders
        .watch_order(WatchOrderRequest {
            order_id: "ord_missing".into(),
        })
        .await
        .expect_err("unknown order");
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip_is_accepted_and_sent() {
    use tonic::codec::CompressionEncoding;
    let system = TestApp::sqlite().await;
    let mut orders = system
        .order()
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let order = orders
        .create_order(order_request(
            "cust-gzip",
            &[("sku-filter", 3)],
            "pm_card_visa",
        ))
        .await
        .expect("a gzip request is accepted");
    assert_eq!(
        order
            .metadata()
            .get("grpc-encoding")
            .map(|v| v.to_str().unwrap()),
        Some("gzip"),
        "the answer is compressed too"
    );
    assert_eq!(order.into_inner().status(), OrderStatus::Confirmed);
}
