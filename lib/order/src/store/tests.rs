//! The store's tests, on SQLite and (when a URL is set) PostgreSQL.

use ordermesh_domain::PaymentMethod;
use ordermesh_testkit::TestDatabase;

use super::*;

async fn store_with_orders(database: &TestDatabase) -> OrderStore {
    let db = Database::open(
        database.settings(),
        "order",
        &sqlx::migrate!("./migrations"),
    )
    .await
    .expect("open");
    let store = OrderStore::new(db);
    let usd = Currency::USD;
    for (n, lines) in [(1, 2), (2, 1), (3, 3)] {
        let request = NewOrder {
            customer_id: "cust_reads".to_owned(),
            items: Vec::new(),
            payment_method: PaymentMethod::parse("pm_card_visa").expect("known token"),
            idempotency_key: Some(format!("key-{n}")),
        };
        let lines: Vec<OrderLine> = (0..lines)
            .map(|line| OrderLine {
                product_id: format!("sku-{line}"),
                quantity: line + 1,
                unit_price: Money::new(usd, 100 * i64::from(line + 1)),
            })
            .collect();
        store
            .insert(
                &format!("ord_{n}"),
                &request,
                &lines,
                Money::new(usd, 1000),
                n,
                None,
            )
            .await
            .expect("insert");
    }
    store
}

/// `store.get`, checking that it ran on the caller's thread (not on its
/// pool fallback).
async fn get_on_callers_thread(store: &OrderStore, order_id: &str) -> Option<StoredOrder> {
    let before = store.database().reads_on_caller_thread();
    let found = store.get(order_id).await.expect("read");
    assert_eq!(
        store.database().reads_on_caller_thread(),
        before + 1,
        "SQLite reads on the caller's thread"
    );
    found
}

#[tokio::test]
async fn reads_on_the_callers_thread_match_the_pool() {
    let database = TestDatabase::sqlite();
    let store = store_with_orders(&database).await;
    let pooled = OrderStore::new(store.database().pool_only());
    for order_id in ["ord_1", "ord_2", "ord_3", "ord_missing"] {
        let now = get_on_callers_thread(&store, order_id).await;
        let through_pool = pooled.get(order_id).await.expect("pooled read");
        assert_eq!(
            format!("{now:?}"),
            format!("{through_pool:?}"),
            "{order_id}"
        );
    }
    let order = get_on_callers_thread(&store, "ord_3").await.expect("ord_3");
    assert_eq!(order.view.lines.len(), 3, "every line, in order");
    assert_eq!(order.view.lines[2].product_id, "sku-2");

    let cursor = Cursor {
        created_at_ms: 3,
        order_id: "ord_3".to_owned(),
    };
    for after in [None, Some(&cursor)] {
        let before = store.database().reads_on_caller_thread();
        let now = store
            .list_by_customer("cust_reads", 2, after)
            .await
            .expect("list");
        assert_eq!(store.database().reads_on_caller_thread(), before + 1);
        let through_pool = pooled
            .list_by_customer("cust_reads", 2, after)
            .await
            .expect("pooled list");
        assert_eq!(format!("{now:?}"), format!("{through_pool:?}"));
    }
    let first_page = store
        .list_by_customer("cust_reads", 2, None)
        .await
        .expect("list");
    let ids: Vec<&str> = first_page.iter().map(|o| o.order_id.as_str()).collect();
    assert_eq!(ids, ["ord_3", "ord_2"], "newest first, page size 2");
    assert_eq!(first_page[0].lines.len(), 3);
}

/// Issue 18 item 7: the token stays while the charge may still be sent
/// and is masked in the row once the charge is decided.
#[tokio::test]
async fn payment_token_is_kept_only_until_the_charge_is_decided() {
    let database = TestDatabase::sqlite();
    let store = store_with_orders(&database).await;
    let stored_token = |order: Option<StoredOrder>| order.expect("exists").payment_method;
    let leases = Leases {
        holder: "holder-1".to_owned(),
        lease: Duration::from_secs(15),
        holder_timeout: Duration::from_secs(2),
    };
    store.heartbeat(&leases.holder, 1).await.expect("heartbeat");
    let claimed = store
        .claim("ord_1", "driver", &leases)
        .await
        .expect("claim")
        .expect("claimed");
    let (order, lease) = (claimed.order, claimed.lease);
    assert_eq!(lease.fence, 1, "the first holder");
    assert!(!claimed.taken_over);
    assert!(
        store
            .claim("ord_1", "other", &leases)
            .await
            .expect("claim")
            .is_none(),
        "held by a live holder"
    );
    assert_eq!(order.payment_method, "pm_card_visa");
    let charging = SagaState {
        step: Step::Charge,
        compensate_stock: true,
        ..order.saga
    };
    let order = store
        .advance(&order, &lease, &charging, None, 11, Duration::from_secs(15))
        .await
        .expect("advance")
        .expect("held");
    assert_eq!(
        stored_token(store.get("ord_1").await.expect("get")),
        "pm_card_visa",
        "kept while the charge may be (re)sent"
    );
    let committing = SagaState {
        step: Step::Commit,
        ..charging
    };
    let order = store
        .advance(
            &order,
            &lease,
            &committing,
            None,
            12,
            Duration::from_secs(15),
        )
        .await
        .expect("advance")
        .expect("held");
    assert_eq!(order.payment_method, "pm_card_…");
    assert_eq!(
        stored_token(store.get("ord_1").await.expect("get")),
        "pm_card_…",
        "masked once the charge is decided"
    );
    // A failure before any charge masks it too.
    let claimed = store
        .claim("ord_2", "driver", &leases)
        .await
        .expect("claim")
        .expect("claimed");
    let (other, other_lease) = (claimed.order, claimed.lease);
    let failed = SagaState {
        status: OrderStatus::Failed,
        step: Step::Done,
        failure_reason: Some(FailureReason::OutOfStock),
        ..other.saga
    };
    store
        .advance(
            &other,
            &other_lease,
            &failed,
            None,
            14,
            Duration::from_secs(15),
        )
        .await
        .expect("advance")
        .expect("held");
    assert_eq!(
        stored_token(store.get("ord_2").await.expect("get")),
        "pm_card_…"
    );
}

/// Issue 18 items 2 and 3: a holder that stopped heartbeating loses its
/// leases at once, the taker gets a larger fencing number, and the old
/// holder can no longer store a step.
async fn silent_holders_lose_their_leases_to_a_larger_fence(store: &OrderStore) {
    let first = Leases {
        holder: "holder-a".to_owned(),
        lease: Duration::from_secs(15),
        holder_timeout: Duration::from_secs(60),
    };
    store.heartbeat(&first.holder, 1).await.expect("heartbeat");
    let held = store
        .claim("ord_3", "driver-a", &first)
        .await
        .expect("claim")
        .expect("claimed");
    // A second holder that thinks a minute of silence is fine: not free.
    let patient = Leases {
        holder: "holder-b".to_owned(),
        ..first.clone()
    };
    assert!(
        store
            .claim("ord_3", "driver-b", &patient)
            .await
            .expect("claim")
            .is_none()
    );
    let due = store.due(&patient, 10).await.expect("due");
    assert!(
        !due.contains(&"ord_3".to_owned()),
        "not due while held: {due:?}"
    );
    // One for which holder-a's last heartbeat is too old: free at once.
    let strict = Leases {
        holder: "holder-b".to_owned(),
        holder_timeout: Duration::ZERO,
        ..first.clone()
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let due = store.due(&strict, 10).await.expect("due");
    assert!(
        due.contains(&"ord_3".to_owned()),
        "due once its holder is silent: {due:?}"
    );
    let taken = store
        .claim("ord_3", "driver-b", &strict)
        .await
        .expect("claim")
        .expect("taken over");
    assert!(taken.taken_over, "taken, not handed over");
    assert!(
        taken.lease.fence > held.lease.fence,
        "a larger fencing number"
    );
    let step = SagaState {
        step: Step::Charge,
        ..held.order.saga
    };
    let stale = store
        .advance(&held.order, &held.lease, &step, None, 20, first.lease)
        .await
        .expect("advance");
    assert!(stale.is_none(), "the old holder cannot store a step");
    // A hand-over: released, then claimed again without a take-over.
    store.release("ord_3", "driver-b").await.expect("release");
    let handed = store
        .claim("ord_3", "driver-a2", &first)
        .await
        .expect("claim")
        .expect("free after the release");
    assert!(!handed.taken_over);
    assert_eq!(handed.lease.fence, taken.lease.fence + 1);
    assert!(store.oldest_unsettled_age_ms().await.expect("age") > 0);
    store.retire(&first.holder).await.expect("retire");
}

#[tokio::test]
async fn silent_holders_lose_their_leases_on_sqlite() {
    let database = TestDatabase::sqlite();
    silent_holders_lose_their_leases_to_a_larger_fence(&store_with_orders(&database).await).await;
}

#[tokio::test]
async fn silent_holders_lose_their_leases_on_postgres() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    silent_holders_lose_their_leases_to_a_larger_fence(&store_with_orders(&database).await).await;
}

#[tokio::test]
async fn postgres_reads_go_through_the_pool() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let store = store_with_orders(&database).await;
    let order = store.get("ord_3").await.expect("get").expect("ord_3");
    assert_eq!(
        store.database().reads_on_caller_thread(),
        0,
        "no caller-thread reads on PostgreSQL"
    );
    assert_eq!(order.view.lines.len(), 3);
    let page = store
        .list_by_customer("cust_reads", 10, None)
        .await
        .expect("list");
    assert_eq!(page.len(), 3);
}

/// A new order stored with its first driver's lease: no other driver can
/// claim it while the lease lasts, and the first step goes under fence 1.
async fn a_new_order_is_stored_with_its_first_lease(store: &OrderStore) {
    let usd = Currency::USD;
    let leases = Leases {
        holder: "holder-new".to_owned(),
        lease: Duration::from_secs(15),
        holder_timeout: Duration::from_secs(30),
    };
    store.heartbeat(&leases.holder, 1).await.expect("heartbeat");
    let request = NewOrder {
        customer_id: "cust_new".to_owned(),
        items: Vec::new(),
        payment_method: PaymentMethod::parse("pm_card_visa").expect("known token"),
        idempotency_key: Some("key-new".to_owned()),
    };
    let driver = FirstDriver {
        owner: "first",
        leases: &leases,
    };
    let inserted = store
        .insert(
            "ord_new",
            &request,
            &[],
            Money::new(usd, 100),
            5,
            Some(driver),
        )
        .await
        .expect("insert");
    let Inserted::New { order, lease } = inserted else {
        panic!("a new order");
    };
    let lease = lease.expect("a lease for the first driver");
    assert_eq!(lease.fence, 1);
    assert!(
        store
            .claim("ord_new", "second", &leases)
            .await
            .expect("claim")
            .is_none(),
        "the first driver holds the lease"
    );
    let reserved = SagaState {
        step: Step::Charge,
        compensate_stock: true,
        ..order.saga
    };
    let advanced = store
        .advance(&order, &lease, &reserved, None, 6, leases.lease)
        .await
        .expect("advance");
    assert!(
        advanced.is_some(),
        "the first driver's lease works for its steps"
    );
    // The same key again: the order that holds it.
    let again = store
        .insert(
            "ord_other",
            &request,
            &[],
            Money::new(usd, 100),
            7,
            Some(driver),
        )
        .await
        .expect("insert");
    assert!(
        matches!(again, Inserted::KeyTaken { ref order_id, .. } if order_id == "ord_new"),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_new_order_is_stored_with_its_first_lease_on_sqlite() {
    let database = TestDatabase::sqlite();
    a_new_order_is_stored_with_its_first_lease(&store_with_orders(&database).await).await;
}

#[tokio::test]
async fn a_new_order_is_stored_with_its_first_lease_on_postgres() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    a_new_order_is_stored_with_its_first_lease(&store_with_orders(&database).await).await;
}
