//! Compensation raced against the step it undoes, over gRPC, as a mesh
//! retry of a timed-out call does (issue 18 item 1): a reserve against its
//! release, a commit against its release, a charge against its refund or
//! void. Whatever order the pairs land in, nothing stays held and every
//! acknowledged compensation says so in its answer.

use std::sync::Arc;
use std::time::Duration;

use ordermesh_domain::reasons;
use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh_proto::inventory::v1::{
    AdjustStockRequest, CommitReservationRequest, ReleaseReservationRequest, ReservationItem,
    ReservationStatus, ReserveStockRequest,
};
use ordermesh_proto::payment::v1::payment_service_client::PaymentServiceClient;
use ordermesh_proto::payment::v1::{
    GetPaymentRequest, PaymentStatus, ProcessPaymentRequest, RefundPaymentRequest,
};
use ordermesh_runtime::status::describe_status;
use ordermesh_testkit::TestDatabase;
use tonic::transport::Channel;

use crate::harness::{Endpoints, Role, TestApp, available, connect};

const PAIRS: usize = 300;
const PRODUCT: &str = "sku-mug";
/// Every race below finishes in a few seconds; this bounds a hang.
const LIMIT: Duration = Duration::from_secs(120);

/// An App whose servers take all the race's calls at once (no shedding).
async fn spawn(database: TestDatabase) -> TestApp {
    TestApp::spawn(Arc::new(database), |settings| {
        settings.server.max_in_flight = 4 * PAIRS;
    })
    .await
}

/// A few connections, so the calls are not queued behind one connection's
/// stream limit.
async fn channels(app: &TestApp, role: Role) -> Vec<Channel> {
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(connect(app.addr(role)).await);
    }
    channels
}

/// The call, retried while it answers UNAVAILABLE (600 calls at once may
/// wait longer than the pool's 5 s for a connection on a busy machine), as
/// the mesh retries it. Whatever the retries, the properties must hold.
async fn retried<T, F, Fut>(mut call: F) -> Result<tonic::Response<T>, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut tries = 1;
    loop {
        match call().await {
            Err(status) if status.code() == tonic::Code::Unavailable && tries < 5 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answer => return answer,
        }
    }
}

fn reason(status: &tonic::Status) -> Option<String> {
    describe_status(status).reason
}

fn reserve_request(id: &str) -> ReserveStockRequest {
    ReserveStockRequest {
        reservation_id: id.to_owned(),
        items: vec![ReservationItem {
            product_id: PRODUCT.to_owned(),
            quantity: 1,
            unit_price: None,
        }],
    }
}

async fn stock_for_the_race(inventory: &mut InventoryServiceClient<Channel>) -> i32 {
    inventory
        .adjust_stock(AdjustStockRequest {
            product_id: PRODUCT.into(),
            delta: i32::try_from(2 * PAIRS).expect("small"),
        })
        .await
        .expect("stock for the race");
    available(inventory, PRODUCT).await
}

/// What one reserve/release pair answered.
#[derive(Default, Debug)]
struct Tally {
    reserved: usize,
    reserve_refused: usize,
    released: usize,
    released_tombstone: usize,
}

async fn reserve_release_pairs(database: TestDatabase) {
    let app = spawn(database).await;
    let mut inventory = app.inventory().await;
    let before = stock_for_the_race(&mut inventory).await;
    let channels = channels(&app, Role::Inventory).await;

    let pairs = (0..PAIRS).map(|i| {
        let client = InventoryServiceClient::new(channels[i % channels.len()].clone());
        async move {
            let id = format!("race-{i}");
            let reserve = {
                let client = client.clone();
                let request = reserve_request(&id);
                retried(move || {
                    let mut client = client.clone();
                    let request = request.clone();
                    async move { client.reserve_stock(request).await }
                })
            };
            let release = {
                let client = client.clone();
                let request = ReleaseReservationRequest {
                    reservation_id: id.clone(),
                };
                retried(move || {
                    let mut client = client.clone();
                    let request = request.clone();
                    async move { client.release_reservation(request).await }
                })
            };
            // Half the pairs send the release first, as a retry racing
            // ahead of the call it retries.
            let (reserve, release) = if i % 2 == 0 {
                tokio::join!(reserve, release)
            } else {
                let (release, reserve) = tokio::join!(release, reserve);
                (reserve, release)
            };
            (id, reserve, release)
        }
    });
    let results = tokio::time::timeout(LIMIT, futures::future::join_all(pairs))
        .await
        .expect("the race ends in time");

    let mut tally = Tally::default();
    for (id, reserve, release) in results {
        let release = release.unwrap_or_else(|e| panic!("{id}: release answered {e:?}"));
        let release = release.into_inner();
        assert_eq!(
            release.status(),
            ReservationStatus::Released,
            "{id}: an OK release reports RELEASED: {release:?}"
        );
        tally.released += 1;
        if release.items.is_empty() {
            tally.released_tombstone += 1;
        }
        match reserve {
            Ok(reservation) => {
                assert_eq!(reservation.get_ref().status(), ReservationStatus::Reserved);
                tally.reserved += 1;
            }
            Err(status) => {
                assert_eq!(
                    reason(&status).as_deref(),
                    Some(reasons::RESERVATION_RELEASED),
                    "{id}: a reserve after its release is refused as released: {status:?}"
                );
                tally.reserve_refused += 1;
            }
        }
    }
    println!("reserve/release race: {tally:?}");
    assert_eq!(
        available(&mut inventory, PRODUCT).await,
        before,
        "nothing stays held: {tally:?}"
    );
    assert_eq!(tally.reserved + tally.reserve_refused, PAIRS);
}

#[tokio::test(flavor = "multi_thread")]
async fn reserve_against_release_holds_nothing_on_sqlite() {
    reserve_release_pairs(TestDatabase::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reserve_against_release_holds_nothing_on_postgres() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    reserve_release_pairs(database).await;
}

async fn commit_release_pairs(database: TestDatabase) {
    let app = spawn(database).await;
    let mut inventory = app.inventory().await;
    let before = stock_for_the_race(&mut inventory).await;
    let channels = channels(&app, Role::Inventory).await;
    for i in 0..PAIRS {
        inventory
            .reserve_stock(reserve_request(&format!("commit-{i}")))
            .await
            .expect("reserved");
    }
    assert_eq!(
        available(&mut inventory, PRODUCT).await,
        before - i32::try_from(PAIRS).expect("small")
    );

    let pairs = (0..PAIRS).map(|i| {
        let client = InventoryServiceClient::new(channels[i % channels.len()].clone());
        async move {
            let id = format!("commit-{i}");
            let commit = retried(|| {
                let mut client = client.clone();
                let request = CommitReservationRequest {
                    reservation_id: id.clone(),
                };
                async move { client.commit_reservation(request).await }
            });
            let release = retried(|| {
                let mut client = client.clone();
                let request = ReleaseReservationRequest {
                    reservation_id: id.clone(),
                };
                async move { client.release_reservation(request).await }
            });
            let (commit, release) = tokio::join!(commit, release);
            (id, commit, release)
        }
    });
    let results = tokio::time::timeout(LIMIT, futures::future::join_all(pairs))
        .await
        .expect("the race ends in time");
    let (mut committed, mut commit_refused) = (0, 0);
    for (id, commit, release) in results {
        let release = release
            .unwrap_or_else(|e| panic!("{id}: release answered {e:?}"))
            .into_inner();
        assert_eq!(
            release.status(),
            ReservationStatus::Released,
            "{id}: {release:?}"
        );
        match commit {
            Ok(reservation) => {
                assert_eq!(
                    reservation.get_ref().status(),
                    ReservationStatus::Committed,
                    "{id}: an OK commit reports COMMITTED"
                );
                committed += 1;
            }
            Err(status) => {
                assert_eq!(
                    reason(&status).as_deref(),
                    Some(reasons::RESERVATION_RELEASED),
                    "{id}: {status:?}"
                );
                commit_refused += 1;
            }
        }
    }
    println!(
        "commit/release race: committed then released {committed}, commit refused {commit_refused}"
    );
    assert_eq!(
        available(&mut inventory, PRODUCT).await,
        before,
        "every unit back"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn commit_against_release_holds_nothing_on_sqlite() {
    commit_release_pairs(TestDatabase::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn commit_against_release_holds_nothing_on_postgres() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    commit_release_pairs(database).await;
}

async fn charge_refund_pairs(database: TestDatabase) {
    let app = spawn(database).await;
    let channels = channels(&app, Role::Payment).await;
    let pairs = (0..PAIRS).map(|i| {
        let client = PaymentServiceClient::new(channels[i % channels.len()].clone());
        async move {
            let id = format!("pay-race-{i}");
            let charge = retried(|| {
                let mut client = client.clone();
                let request = ProcessPaymentRequest {
                    order_id: id.clone(),
                    amount: Some(ordermesh_proto::common::v1::Money {
                        currency_code: "USD".into(),
                        minor_units: 1250,
                    }),
                    payment_method: "pm_card_visa".into(),
                };
                async move { client.process_payment(request).await }
            });
            let refund = retried(|| {
                let mut client = client.clone();
                let request = RefundPaymentRequest {
                    order_id: id.clone(),
                };
                async move { client.refund_payment(request).await }
            });
            let (charge, refund) = if i % 2 == 0 {
                tokio::join!(charge, refund)
            } else {
                let (refund, charge) = tokio::join!(refund, charge);
                (charge, refund)
            };
            (id, charge, refund)
        }
    });
    let results = tokio::time::timeout(LIMIT, futures::future::join_all(pairs))
        .await
        .expect("the race ends in time");
    let mut payment = app.payment().await;
    let (mut refunded, mut voided) = (0, 0);
    for (id, charge, refund) in results {
        let refund = refund
            .unwrap_or_else(|e| panic!("{id}: refund answered {e:?}"))
            .into_inner();
        match refund.status() {
            PaymentStatus::Refunded => {
                refunded += 1;
                let charge = charge.unwrap_or_else(|e| panic!("{id}: refunded, yet {e:?}"));
                assert_eq!(charge.get_ref().status(), PaymentStatus::Succeeded);
            }
            PaymentStatus::Voided => {
                voided += 1;
                let refused = charge.expect_err("a charge after its void is refused");
                assert_eq!(
                    reason(&refused).as_deref(),
                    Some(reasons::PAYMENT_VOIDED),
                    "{id}: {refused:?}"
                );
            }
            other => panic!("{id}: an OK refund reports {other:?}"),
        }
        let stored = payment
            .get_payment(GetPaymentRequest {
                order_id: id.clone(),
            })
            .await
            .expect("one row per order")
            .into_inner();
        assert_eq!(
            stored.status(),
            refund.status(),
            "{id}: the row is the refund's answer"
        );
    }
    println!("charge/refund race: refunded {refunded}, voided before the charge {voided}");
    assert_eq!(refunded + voided, PAIRS);
}

#[tokio::test(flavor = "multi_thread")]
async fn charge_against_refund_or_void_keeps_no_charge_on_sqlite() {
    charge_refund_pairs(TestDatabase::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn charge_against_refund_or_void_keeps_no_charge_on_postgres() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    charge_refund_pairs(database).await;
}
