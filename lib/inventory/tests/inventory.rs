//! The inventory over real gRPC on loopback, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ordermesh_app::Role;
use ordermesh_inventory::{InventorySettings, stock_report};
use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh_proto::inventory::v1::{
    AdjustStockRequest, CommitReservationRequest, GetProductRequest, ListProductsRequest,
    ReleaseReservationRequest, ReservationItem, ReservationStatus, ReserveStockRequest,
    WatchStockRequest,
};
use ordermesh_runtime::status::reason;
use ordermesh_testkit::{TestApp, TestDatabase};
use tonic::Code;
use tonic::transport::Channel;

struct Running {
    client: InventoryServiceClient<Channel>,
    app: TestApp,
}

/// The inventory role alone, in-process on loopback.
async fn start(database: TestDatabase, settings: InventorySettings) -> Running {
    let app = TestApp::spawn_roles(Arc::new(database), &[Role::Inventory], |app| {
        app.inventory = InventorySettings {
            listen: app.inventory.listen,
            ..settings
        };
    })
    .await;
    let channel = Channel::from_shared(app.url(Role::Inventory))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Running {
        client: InventoryServiceClient::new(channel),
        app,
    }
}

fn reserve(id: &str, lines: &[(&str, i32)]) -> ReserveStockRequest {
    ReserveStockRequest {
        reservation_id: id.into(),
        items: lines
            .iter()
            .map(|(product_id, quantity)| ReservationItem {
                product_id: (*product_id).into(),
                quantity: *quantity,
                unit_price: None,
            })
            .collect(),
    }
}

async fn available(client: &mut InventoryServiceClient<Channel>, product_id: &str) -> i32 {
    client
        .get_product(GetProductRequest {
            product_id: product_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .available
}

/// Checks that every unit is somewhere: available + reserved + sold = total.
async fn units_add_up(database: &TestDatabase) {
    for line in stock_report(database.settings()).await.unwrap() {
        assert!(line.available >= 0, "{line:?}");
        assert_eq!(
            line.available + line.reserved + line.sold,
            line.stock_total,
            "{line:?}"
        );
    }
}

async fn reservation_lifecycle(database: TestDatabase) {
    let running = start(database, InventorySettings::default()).await;
    let mut client = running.client.clone();
    let mug = available(&mut client, "sku-mug").await;
    let kettle = available(&mut client, "sku-kettle").await;

    // Reserve, replay, conflict.
    let reserved = client
        .reserve_stock(reserve("ord_1", &[("sku-mug", 2), ("sku-kettle", 1)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reserved.status(), ReservationStatus::Reserved);
    assert_eq!(
        reserved.items[0].unit_price.as_ref().unwrap().minor_units,
        5900
    );
    assert!(reserved.expire_time.is_some());
    let replay = client
        .reserve_stock(reserve("ord_1", &[("sku-kettle", 1), ("sku-mug", 2)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replay.status(), ReservationStatus::Reserved);
    assert_eq!(
        available(&mut client, "sku-mug").await,
        mug - 2,
        "a replay takes nothing"
    );
    let conflict = client
        .reserve_stock(reserve("ord_1", &[("sku-mug", 5)]))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists);

    // Commit twice, then a release restocks (a cancelled order).
    for _ in 0..2 {
        let committed = client
            .commit_reservation(CommitReservationRequest {
                reservation_id: "ord_1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(committed.status(), ReservationStatus::Committed);
    }
    units_add_up(running.app.database()).await;
    for _ in 0..2 {
        let released = client
            .release_reservation(ReleaseReservationRequest {
                reservation_id: "ord_1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(released.status(), ReservationStatus::Released);
    }
    assert_eq!(available(&mut client, "sku-mug").await, mug);
    assert_eq!(available(&mut client, "sku-kettle").await, kettle);

    // All or nothing: the second line is short, the first is untouched.
    let short = client
        .reserve_stock(reserve("ord_2", &[("sku-mug", 1), ("sku-scale", 1000)]))
        .await
        .unwrap_err();
    assert_eq!(short.code(), Code::FailedPrecondition);
    assert_eq!(reason(&short).as_deref(), Some("OUT_OF_STOCK"));
    assert!(short.message().contains("sku-scale"), "{}", short.message());
    assert_eq!(available(&mut client, "sku-mug").await, mug);
    let unknown = client
        .reserve_stock(reserve("ord_3", &[("sku-nope", 1)]))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    // A release before the reserve leaves a tombstone: the late reserve is refused.
    let tombstone = client
        .release_reservation(ReleaseReservationRequest {
            reservation_id: "ord_4".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tombstone.status(), ReservationStatus::Released);
    let late = client
        .reserve_stock(reserve("ord_4", &[("sku-mug", 1)]))
        .await
        .unwrap_err();
    assert_eq!(reason(&late).as_deref(), Some("RESERVATION_RELEASED"));
    let commit_released = client
        .commit_reservation(CommitReservationRequest {
            reservation_id: "ord_4".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(commit_released.code(), Code::FailedPrecondition);
    let commit_unknown = client
        .commit_reservation(CommitReservationRequest {
            reservation_id: "ord_unknown".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(commit_unknown.code(), Code::NotFound);

    // Stock adjustments never go below zero.
    let scale = available(&mut client, "sku-scale").await;
    let refused = client
        .adjust_stock(AdjustStockRequest {
            product_id: "sku-scale".into(),
            delta: -(scale + 1),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&refused).as_deref(), Some("STOCK_NEGATIVE"));
    let restocked = client
        .adjust_stock(AdjustStockRequest {
            product_id: "sku-scale".into(),
            delta: 7,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(restocked.available, scale + 7);
    units_add_up(running.app.database()).await;
}

#[tokio::test]
async fn reservation_lifecycle_on_sqlite() {
    reservation_lifecycle(TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn reservation_lifecycle_on_postgres() {
    if let Some(database) = TestDatabase::postgres().await {
        reservation_lifecycle(database).await;
    }
}

async fn last_units(database: TestDatabase) {
    let running = start(database, InventorySettings::default()).await;
    let mut client = running.client.clone();
    let scale = available(&mut client, "sku-scale").await;
    client
        .adjust_stock(AdjustStockRequest {
            product_id: "sku-scale".into(),
            delta: 5 - scale,
        })
        .await
        .unwrap();
    let racers = (0..40).map(|i| {
        let mut client = client.clone();
        async move {
            client
                .reserve_stock(reserve(&format!("ord_race_{i}"), &[("sku-scale", 1)]))
                .await
        }
    });
    let results = futures::future::join_all(racers).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    for lost in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(reason(lost).as_deref(), Some("OUT_OF_STOCK"), "{lost:?}");
    }
    assert_eq!(won, 5);
    assert_eq!(available(&mut client, "sku-scale").await, 0);
    units_add_up(running.app.database()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_units_go_once_on_sqlite() {
    last_units(TestDatabase::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_units_go_once_on_postgres() {
    if let Some(database) = TestDatabase::postgres().await {
        last_units(database).await;
    }
}

#[tokio::test]
async fn uncommitted_reservations_expire_and_cannot_be_committed() {
    let settings = InventorySettings {
        reservation_ttl: Duration::from_millis(1),
        reservation_sweep_interval: Duration::from_secs(3600),
        ..InventorySettings::default()
    };
    let running = start(TestDatabase::sqlite(), settings).await;
    let mut client = running.client.clone();
    let mug = available(&mut client, "sku-mug").await;
    client
        .reserve_stock(reserve("ord_e", &[("sku-mug", 3)]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Past its time but not swept: committing expires it instead.
    let refused = client
        .commit_reservation(CommitReservationRequest {
            reservation_id: "ord_e".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&refused).as_deref(), Some("RESERVATION_RELEASED"));
    assert!(
        refused.message().contains("EXPIRED"),
        "{}",
        refused.message()
    );
    assert_eq!(available(&mut client, "sku-mug").await, mug);
    units_add_up(running.app.database()).await;
}

#[tokio::test]
async fn the_sweeper_returns_expired_stock() {
    let settings = InventorySettings {
        reservation_ttl: Duration::from_millis(1),
        reservation_sweep_interval: Duration::from_millis(20),
        ..InventorySettings::default()
    };
    let running = start(TestDatabase::sqlite(), settings).await;
    let mut client = running.client.clone();
    let mug = available(&mut client, "sku-mug").await;
    client
        .reserve_stock(reserve("ord_s", &[("sku-mug", 4)]))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while available(&mut client, "sku-mug").await != mug {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stock never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn lists_page_and_watch_streams_changes() {
    let running = start(TestDatabase::sqlite(), InventorySettings::default()).await;
    let mut client = running.client.clone();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_products(ListProductsRequest {
                page_size: 4,
                page_token: token.clone(),
                product_ids: vec![],
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.products.into_iter().map(|p| p.product_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 6);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    let bad = client
        .list_products(ListProductsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    let mut watch = client
        .watch_stock(WatchStockRequest {
            product_ids: vec!["sku-mug".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.product_id, "sku-mug");
    client
        .adjust_stock(AdjustStockRequest {
            product_id: "sku-mug".into(),
            delta: 3,
        })
        .await
        .unwrap();
    let change = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a change arrives")
        .unwrap()
        .unwrap();
    assert_eq!(change.available, first.available + 3);
}
