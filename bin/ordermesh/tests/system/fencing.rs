//! Fencing numbers on saga steps (issue 18 item 2): inventory and payment
//! refuse a step older than one they have seen for the order, accept a
//! step without a number only for orders that never sent one, and count
//! their refusals; leases go by the database's clock, so a replica whose
//! clock runs a minute ahead takes nothing from the other.

use std::sync::Arc;
use std::time::Duration;

use ordermesh_domain::reasons;
use ordermesh_proto::inventory::v1::{
    ReleaseReservationRequest, ReservationItem, ReservationStatus, ReserveStockRequest,
};
use ordermesh_proto::payment::v1::{PaymentStatus, ProcessPaymentRequest, RefundPaymentRequest};
use ordermesh_runtime::status::describe_status;
use ordermesh_testkit::TestDatabase;
use ordermesh_testkit::process::Logs;

use crate::faults::{audit, order_count};
use crate::harness::{Endpoints, TestApp};
use crate::load::Load;
use crate::takeover::{metric, start_all};

const FENCE: &str = "x-ordermesh-fence";

fn fenced<T>(message: T, fence: Option<i64>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(fence) = fence {
        request
            .metadata_mut()
            .insert(FENCE, fence.to_string().parse().expect("ASCII"));
    }
    request
}

fn assert_stale(result: Result<impl std::fmt::Debug, tonic::Status>, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), tonic::Code::Aborted, "{what}: {status:?}");
    assert_eq!(
        describe_status(&status).reason.as_deref(),
        Some(reasons::STALE_SAGA_STEP),
        "{what}"
    );
}

fn stale_refusals(app: &TestApp, service: &str) -> u64 {
    app.metrics()
        .saga_stale_steps_refused_total
        .with_label_values(&[service])
        .get()
}

#[tokio::test(flavor = "multi_thread")]
async fn inventory_and_payment_refuse_steps_older_than_one_seen() {
    let app = TestApp::spawn(Arc::new(TestDatabase::sqlite()), |_| {}).await;
    let mut inventory = app.inventory().await;
    let reserve = |id: &str| ReserveStockRequest {
        reservation_id: id.to_owned(),
        items: vec![ReservationItem {
            product_id: "sku-mug".into(),
            quantity: 1,
            unit_price: None,
        }],
    };
    let release = |id: &str| ReleaseReservationRequest {
        reservation_id: id.to_owned(),
    };

    inventory
        .reserve_stock(fenced(reserve("fenced-1"), Some(5)))
        .await
        .expect("the first holder's reserve");
    assert_stale(
        inventory
            .release_reservation(fenced(release("fenced-1"), Some(4)))
            .await,
        "an older holder's release",
    );
    assert_stale(
        inventory
            .release_reservation(fenced(release("fenced-1"), None))
            .await,
        "an unnumbered release of an order that sent a number",
    );
    let released = inventory
        .release_reservation(fenced(release("fenced-1"), Some(6)))
        .await
        .expect("a newer holder's release")
        .into_inner();
    assert_eq!(released.status(), ReservationStatus::Released);
    assert_stale(
        inventory
            .reserve_stock(fenced(reserve("fenced-1"), Some(5)))
            .await,
        "the old holder's retried reserve",
    );
    // An order that never sent a number: steps without one still work (a
    // rolling upgrade from a release without fencing).
    inventory
        .reserve_stock(fenced(reserve("unfenced-1"), None))
        .await
        .expect("unnumbered reserve");
    inventory
        .release_reservation(fenced(release("unfenced-1"), None))
        .await
        .expect("unnumbered release");
    let bad = inventory
        .release_reservation(fenced(release("unfenced-1"), Some(-1)))
        .await
        .expect_err("a negative fence");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert_eq!(stale_refusals(&app, "inventory"), 3);

    let mut payment = app.payment().await;
    let charge = |id: &str| ProcessPaymentRequest {
        order_id: id.to_owned(),
        amount: Some(ordermesh_proto::common::v1::Money {
            currency_code: "USD".into(),
            minor_units: 900,
        }),
        payment_method: "pm_card_visa".into(),
    };
    let refund = |id: &str| RefundPaymentRequest {
        order_id: id.to_owned(),
    };
    payment
        .process_payment(fenced(charge("fenced-2"), Some(2)))
        .await
        .expect("charged");
    assert_stale(
        payment
            .refund_payment(fenced(refund("fenced-2"), Some(1)))
            .await,
        "an older holder's refund",
    );
    let refunded = payment
        .refund_payment(fenced(refund("fenced-2"), Some(3)))
        .await
        .expect("refunded")
        .into_inner();
    assert_eq!(refunded.status(), PaymentStatus::Refunded);
    assert_stale(
        payment
            .process_payment(fenced(charge("fenced-2"), Some(2)))
            .await,
        "the old holder's retried charge",
    );
    assert_stale(
        payment
            .refund_payment(fenced(refund("fenced-2"), None))
            .await,
        "an unnumbered refund of an order that sent a number",
    );
    assert_eq!(stale_refusals(&app, "payment"), 3);
}

/// Two order replicas on one PostgreSQL, one with its clock a minute ahead,
/// both taking orders, each step slowed so leases are held while the
/// other scans. Judged by the fast replica's own clock, every lease of the
/// other would have run out; judged by the database's, none does.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_a_minute_ahead_takes_no_lease_from_the_other() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let logs = Logs::default();
    let slow_steps = ["--failpoint", "saga.charge=delay(40ms)"];
    let honest = start_all(&database, &slow_steps, logs.clone()).await;
    let ahead = [&slow_steps[..], &["--test-clock-offset-ms", "60000"]].concat();
    let skewed = start_all(&database, &ahead, logs.clone()).await;

    let on_honest = Load::start(honest.addr("order"), 4, "skew-honest");
    let on_skewed = Load::start(skewed.addr("order"), 4, "skew-ahead");
    on_honest.wait_taken(30, Duration::from_secs(90)).await;
    on_skewed.wait_taken(30, Duration::from_secs(90)).await;
    let (honest_report, skewed_report) = (on_honest.finish().await, on_skewed.finish().await);
    honest_report.assert_every_key_taken();
    skewed_report.assert_every_key_taken();
    let report = crate::faults::settled(&database).await;

    let mut takeovers = 0.0;
    let mut refusals = 0.0;
    for process in [&honest, &skewed] {
        takeovers += metric(process.addr("admin"), "saga_lease_takeovers_total").await;
        refusals += metric(process.addr("admin"), "saga_stale_steps_refused_total").await;
    }
    println!(
        "clock skew of 60s between two replicas: {} + {} orders taken, {} in the audit, {takeovers} lease take-overs, {refusals} stale steps refused",
        honest_report.taken.len(),
        skewed_report.taken.len(),
        order_count(&report)
    );
    assert_eq!(takeovers, 0.0, "no lease was taken from a live holder");
    assert_eq!(refusals, 0.0, "no order was driven by two holders at once");
    audit(&database);
}
