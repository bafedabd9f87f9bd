//! Health, graceful shutdown, restarts and crashes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ordermesh_proto::order::v1::{GetOrderRequest, ListOrdersRequest, OrderStatus};
use ordermesh_proto::payment::v1::{GetPaymentRequest, PaymentStatus};
use ordermesh_testkit::TestDatabase;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::curl::{self, curl, url};
use crate::harness::{
    Endpoints, Role, RoleProcess, System, TestApp, available, connect, eventually, order_request,
    wait_terminal,
};

#[tokio::test(flavor = "multi_thread")]
async fn every_role_reports_health_per_service() {
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
        let mut health = HealthClient::new(connect(addr).await);
        for name in [service, ""] {
            let status = health
                .check(HealthCheckRequest {
                    service: name.into(),
                })
                .await
                .expect("check")
                .into_inner()
                .status();
            assert_eq!(status, ServingStatus::Serving, "{service} {name:?}");
        }
        let unknown = health
            .check(HealthCheckRequest {
                service: "no.such.Service".into(),
            })
            .await
            .expect_err("unknown service");
        assert_eq!(unknown.code(), tonic::Code::NotFound);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_reports_not_serving_drains_and_exits_zero() {
    let mut system = System::start(
        Arc::new(TestDatabase::sqlite()),
        &["--shutdown-delay", "1s"],
    )
    .await;
    let mut health = HealthClient::new(connect(system.addr(Role::Order)).await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "ordermesh.order.v1.OrderService".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.next().await.expect("first").expect("ok").status();
    assert_eq!(first, ServingStatus::Serving);

    let stopping = tokio::spawn(async move { system.terminate().await });
    let next = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a status change before the listener closes")
        .expect("an item")
        .expect("ok")
        .status();
    assert_eq!(next, ServingStatus::NotServing);
    let exit = stopping.await.expect("join");
    assert!(exit.success(), "graceful exit: {exit:?}");
}

/// The gateway as its own process: after SIGTERM it answers `/readyz` 503
/// and keeps serving requests for its `--shutdown-delay`, so a load
/// balancer takes it out before it stops accepting; then it exits cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_unreadies_and_keeps_serving_for_its_shutdown_delay() {
    if !curl::available() {
        return;
    }
    let system = System::start(Arc::new(TestDatabase::sqlite()), &[]).await;
    let (order_url, inventory_url) = (
        format!("http://{}", system.addr(Role::Order)),
        format!("http://{}", system.addr(Role::Inventory)),
    );
    let database = TestDatabase::sqlite();
    let mut gateway = RoleProcess::start(
        &database,
        "gateway",
        &[
            "--gateway-order-url",
            &order_url,
            "--gateway-inventory-url",
            &inventory_url,
            "--shutdown-delay",
            "5s",
        ],
    )
    .await;
    let gw = gateway.addr();
    assert_eq!(curl(&[&url(gw, "/readyz")]).status, 200);
    gateway.signal("TERM");
    let readyz = eventually(
        Duration::from_secs(4),
        "/readyz 503 after SIGTERM",
        || async {
            let answer = curl(&[&url(gw, "/readyz")]);
            (answer.status == 503).then_some(answer)
        },
    )
    .await;
    assert_eq!(readyz.text().trim(), "shutting down");
    // Still serving meanwhile.
    let products = curl(&[&url(gw, "/v1/products")]);
    assert_eq!(products.status, 200, "{}", products.text());
    let exit = gateway.terminate(Duration::from_secs(30)).await;
    assert!(exit.success(), "graceful exit: {exit:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn data_survives_a_restart() {
    let mut system = TestApp::sqlite().await;
    let mut orders = system.order().await;
    let order = orders
        .create_order(order_request(
            "cust-restart",
            &[("sku-grinder", 2)],
            "pm_card_visa",
        ))
        .await
        .expect("create")
        .into_inner();
    let stock = available(&mut system.inventory().await, "sku-grinder").await;
    // A graceful stop and a start on the same data.
    system.restart().await;
    let again = system
        .order()
        .await
        .get_order(GetOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .expect("the order is still there")
        .into_inner();
    assert_eq!(again, order);
    // The catalog is not seeded twice: the stock is what it was.
    assert_eq!(
        available(&mut system.inventory().await, "sku-grinder").await,
        stock
    );
}

/// Orders placed while the process is killed with SIGKILL at an arbitrary
/// moment: after a restart every order reaches a terminal state, and stock
/// and payments agree with the outcomes.
async fn crash_mid_saga(database: TestDatabase) {
    let mut system = System::start(Arc::new(database), &["--saga-lease", "1s"]).await;
    let mut inventory = system.inventory().await;
    let initial: HashMap<&str, i32> = HashMap::from([
        ("sku-mug", available(&mut inventory, "sku-mug").await),
        ("sku-filter", available(&mut inventory, "sku-filter").await),
    ]);

    let orders = system.order().await;
    let tokens = [
        "pm_card_visa",
        "pm_card_visa",
        "pm_card_chargeDeclined",
        "pm_card_visa",
    ];
    let (first_answer_tx, first_answer) = tokio::sync::oneshot::channel::<()>();
    let first_answer_tx = Arc::new(std::sync::Mutex::new(Some(first_answer_tx)));
    let placing: Vec<_> = (0..30)
        .map(|i| {
            let mut orders = orders.clone();
            let tx = first_answer_tx.clone();
            tokio::spawn(async move {
                let result = orders
                    .create_order(order_request(
                        "cust-crash",
                        &[("sku-mug", 1 + (i % 3)), ("sku-filter", 1)],
                        tokens[i as usize % tokens.len()],
                    ))
                    .await;
                if let Some(tx) = tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                result
            })
        })
        .collect();
    let _ = tokio::time::timeout(Duration::from_secs(30), first_answer).await;
    system.kill().await;
    for placing in placing {
        let _ = placing.await;
    }

    system.restart().await;
    let mut orders = system.order().await;
    let mut payments = system.payment().await;
    let inventory = system.inventory().await;
    let stored = orders
        .list_orders(ListOrdersRequest {
            customer_id: "cust-crash".into(),
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .expect("list")
        .into_inner()
        .orders;
    assert!(
        !stored.is_empty(),
        "some orders were stored before the crash"
    );

    let mut sold: HashMap<String, i32> = HashMap::new();
    for order in &stored {
        let order = wait_terminal(&mut orders, &order.order_id, Duration::from_secs(60)).await;
        let payment = payments
            .get_payment(GetPaymentRequest {
                order_id: order.order_id.clone(),
            })
            .await
            .map(|p| p.into_inner().status());
        match order.status() {
            OrderStatus::Confirmed => {
                assert_eq!(payment.ok(), Some(PaymentStatus::Succeeded), "{order:?}");
                for item in &order.items {
                    *sold.entry(item.product_id.clone()).or_default() += item.quantity;
                }
            }
            OrderStatus::Failed => {
                let charged = payment.as_ref().ok() == Some(&PaymentStatus::Succeeded);
                // A charge of a failed order must be refunded by compensation.
                if charged {
                    eventually(Duration::from_secs(30), "refund of a failed order", || {
                        let mut payments = payments.clone();
                        let order_id = order.order_id.clone();
                        async move {
                            let status = payments
                                .get_payment(GetPaymentRequest { order_id })
                                .await
                                .ok()?
                                .into_inner()
                                .status();
                            (status != PaymentStatus::Succeeded).then_some(())
                        }
                    })
                    .await;
                }
            }
            other => panic!("unexpected status {other:?}"),
        }
    }
    // Every reservation of a dead or failed order is released: the only
    // stock gone is what confirmed orders bought.
    for (product, start) in initial {
        let expected = start - sold.get(product).copied().unwrap_or(0);
        eventually(Duration::from_secs(30), "stock settles", || {
            let mut inventory = inventory.clone();
            async move { (available(&mut inventory, product).await == expected).then_some(()) }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_mid_saga_leaves_everything_consistent_on_sqlite() {
    crash_mid_saga(TestDatabase::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_mid_saga_leaves_everything_consistent_on_postgres() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    crash_mid_saga(database).await;
}
