//! A saga resumed from a forward step it never stored (issue 24): a drive
//! keeps `reserve → charge → commit` in memory while its lease is young, so
//! a crash after the charge leaves the order stored at `reserve`. The
//! resumed drive repeats the steps; when the reservation it finds holds
//! nothing any more, the order fails and the charge the first drive made
//! is refunded. Real processes: kill -9 is the point.

use std::time::Duration;

use ordermesh_proto::order::v1::{GetOrderRequest, OrderStatus};
use ordermesh_testkit::TestDatabase;
use ordermesh_testkit::process::Logs;

use crate::faults::audit;
use crate::takeover::{orders_of, place_held, start_all, time_to_settle};

/// Orders held after their charge when the process is killed.
const HELD: usize = 4;

#[tokio::test(flavor = "multi_thread")]
async fn a_charge_made_before_a_crash_is_refunded_when_the_resumed_order_fails() {
    let database = TestDatabase::sqlite();
    let logs = Logs::default();
    let name = ["--replica-name", "order-0"];
    // Reservations run out a second after they are made, and are swept
    // five times a second.
    let expiring = [
        "--reservation-ttl",
        "1s",
        "--reservation-sweep-interval",
        "200ms",
    ];
    let held = [
        &name[..],
        &expiring,
        &["--failpoint", "saga.commit=delay(60s)"],
    ]
    .concat();
    let mut first = start_all(&database, &held, logs.clone()).await;
    let ids = place_held(&orders_of(&first).await, "cust-resume", HELD).await;
    first.kill().await;

    // The next incarnation repeats `reserve` only after the sweeper has
    // expired every reservation, so each one it finds holds nothing.
    let late_reserve = [
        &name[..],
        &expiring,
        &["--failpoint", "saga.reserve=delay(1500ms)"],
    ]
    .concat();
    let restarted = start_all(&database, &late_reserve, logs.clone()).await;
    let mut orders = orders_of(&restarted).await;
    let took = time_to_settle(&mut orders, &ids, Duration::from_secs(20)).await;
    for id in &ids {
        let order = orders
            .get_order(GetOrderRequest {
                order_id: id.clone(),
            })
            .await
            .expect("get")
            .into_inner();
        assert_eq!(order.status(), OrderStatus::Failed, "{order:?}");
    }
    let charged_first = logs
        .lock()
        .unwrap()
        .iter()
        .filter(|line| line.contains("\"saga.commit\"") && line.contains("failpoint hit"))
        .count();
    assert_eq!(
        charged_first, HELD,
        "each order was charged before the crash"
    );
    println!(
        "kill -9 after {HELD} charges, reservations expired: every order FAILED {took:?} after the restart"
    );
    // Every charge without a confirmed order refunded, the stock back.
    let report = audit(&database);
    println!("audit: {report}");
}
