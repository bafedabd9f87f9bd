//! Many simultaneous orders for a product with little stock: never
//! oversold, never negative, on SQLite and on PostgreSQL.

use std::sync::Arc;

use ordermesh_proto::inventory::v1::AdjustStockRequest;
use ordermesh_proto::order::v1::OrderStatus;
use ordermesh_testkit::TestDatabase;

use crate::harness::{Endpoints, Role, TestApp, available, order_request};

const BUYERS: usize = 40;

async fn set_stock(
    inventory: &mut ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient<
        tonic::transport::Channel,
    >,
    product_id: &str,
    units: i32,
) {
    let delta = units - available(inventory, product_id).await;
    if delta != 0 {
        inventory
            .adjust_stock(AdjustStockRequest {
                product_id: product_id.into(),
                delta,
            })
            .await
            .expect("set stock");
    }
    assert_eq!(available(inventory, product_id).await, units);
}

async fn last_units_go_to_exactly_that_many_buyers(database: TestDatabase) {
    let system = TestApp::spawn(Arc::new(database), |_| {}).await;
    let mut inventory = system.inventory().await;
    // Leave exactly 3 units of the scale.
    set_stock(&mut inventory, "sku-scale", 3).await;

    let orders = system.order().await;
    let buyers = (0..BUYERS).map(|i| {
        let mut orders = orders.clone();
        async move {
            orders
                .create_order(order_request(
                    &format!("buyer-{i}"),
                    &[("sku-scale", 1)],
                    "pm_card_visa",
                ))
                .await
                .expect("every order is answered")
                .into_inner()
        }
    });
    let results = futures::future::join_all(buyers).await;
    let confirmed = results
        .iter()
        .filter(|o| o.status() == OrderStatus::Confirmed)
        .count();
    let out_of_stock = results
        .iter()
        .filter(|o| o.status() == OrderStatus::Failed && o.failure_reason == "OUT_OF_STOCK")
        .count();
    assert_eq!(confirmed, 3, "{results:#?}");
    assert_eq!(out_of_stock, BUYERS - 3);
    assert_eq!(available(&mut inventory, "sku-scale").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn never_oversold_on_sqlite() {
    last_units_go_to_exactly_that_many_buyers(TestDatabase::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn never_oversold_on_postgres() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    last_units_go_to_exactly_that_many_buyers(database).await;
}

/// Two inventory replicas on one PostgreSQL database, reserving the last
/// units at once: the database, not process memory, keeps them honest.
#[tokio::test(flavor = "multi_thread")]
async fn two_inventory_replicas_share_stock_safely() {
    use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
    use ordermesh_proto::inventory::v1::{ReservationItem, ReserveStockRequest};

    use crate::harness::connect;

    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let database = Arc::new(database);
    let replica = || TestApp::spawn_roles(database.clone(), &[Role::Inventory], |_| {});
    let (first, second) = (replica().await, replica().await);
    let replicas = [
        InventoryServiceClient::new(connect(first.addr(Role::Inventory)).await),
        InventoryServiceClient::new(connect(second.addr(Role::Inventory)).await),
    ];
    let mut admin = replicas[0].clone();
    set_stock(&mut admin, "sku-scale", 5).await;

    let attempts = (0..BUYERS).map(|i| {
        let mut replica = replicas[i % 2].clone();
        async move {
            replica
                .reserve_stock(ReserveStockRequest {
                    reservation_id: format!("ord_replica_{i}"),
                    items: vec![ReservationItem {
                        product_id: "sku-scale".into(),
                        quantity: 1,
                        unit_price: None,
                    }],
                })
                .await
        }
    });
    let results = futures::future::join_all(attempts).await;
    let reserved = results.iter().filter(|r| r.is_ok()).count();
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(
            refused.code(),
            tonic::Code::FailedPrecondition,
            "{refused:?}"
        );
    }
    assert_eq!(reserved, 5);
    assert_eq!(available(&mut admin, "sku-scale").await, 0);
    let mut other = replicas[1].clone();
    assert_eq!(available(&mut other, "sku-scale").await, 0);
}
