//! The store's tests, on SQLite and (when a URL is set) PostgreSQL.

use ordermesh_testkit::TestDatabase;

use super::*;

async fn seeded_store() -> (TestDatabase, InventoryStore) {
    let database = TestDatabase::sqlite();
    let store = crate::open_store(database.settings()).await.expect("open");
    assert!(store.seed_if_empty(1).await.expect("seed"));
    (database, store)
}

/// Issue 18 item 7: an adjust up to `i32::MAX` while units were held,
/// then their release, pushed `available` past what the API carries and
/// broke every read of the product. The adjust is refused instead.
#[tokio::test]
async fn stock_stays_within_i32_after_adjust_and_release() {
    let (_database, store) = seeded_store().await;
    let product = store.products(None, 1, &[]).await.expect("list")[0].clone();
    let id = product.product_id.clone();
    let request = ReserveRequest::parse("ord_held".into(), vec![(id.clone(), 5)]).expect("ok");
    store
        .reserve(&request, 10, Duration::from_secs(60), None)
        .await
        .expect("reserved");
    let available = product.available - 5;
    // What the old rule allowed: available up to i32::MAX, 5 units held.
    let refused = store
        .adjust(&id, i32::MAX - available, 11)
        .await
        .expect_err("past the limit counting the held units");
    match refused {
        StoreFailure::Rule(InventoryError::StockOverflow { counted, limit, .. }) => {
            assert_eq!(counted, i64::from(product.available));
            assert_eq!(limit, i64::from(i32::MAX));
        }
        other => panic!("expected StockOverflow, got {other:?}"),
    }
    let refused = InventoryError::StockOverflow {
        product_id: id.clone(),
        counted: 7,
        adding: i64::from(i32::MAX),
        limit: i64::from(i32::MAX),
    };
    assert!(refused.to_string().contains("2147483647"), "{refused}");
    // Up to the limit is fine, and the release lands exactly on it.
    store
        .adjust(&id, i32::MAX - product.available, 12)
        .await
        .expect("up to the limit");
    store.release("ord_held", 13, None).await.expect("released");
    let after = store.product(&id).await.expect("the product still reads");
    assert_eq!(after.expect("exists").available, i32::MAX);
    assert!(
        store.products(None, 100, &[]).await.is_ok(),
        "the catalog reads"
    );
    // Lowering is always allowed.
    store.adjust(&id, -10, 14).await.expect("lowered");
}

#[tokio::test]
async fn catalog_reads_on_the_callers_thread_match_the_pool() {
    let database = TestDatabase::sqlite();
    let store = crate::open_store(database.settings()).await.expect("open");
    assert!(store.seed_if_empty(1).await.expect("seed"));
    let pooled = InventoryStore::new(store.database().pool_only());

    let served = || store.database().reads_on_caller_thread();
    let before = served();
    let whole = store.products(None, 100, &[]).await.expect("products");
    assert_eq!(served(), before + 1, "SQLite reads on the caller's thread");
    assert!(whole.len() > 2, "the seeded catalog");
    assert_eq!(
        whole,
        pooled.products(None, 100, &[]).await.expect("pooled")
    );

    // `$3…` come before `$2` in the statement: bound by name, not position.
    let only = vec![whole[2].product_id.clone(), whole[0].product_id.clone()];
    let after = whole[0].product_id.as_str();
    let before = served();
    let some = store
        .products(Some(after), 10, &only)
        .await
        .expect("products");
    assert_eq!(served(), before + 1, "caller's thread");
    assert_eq!(
        some,
        vec![whole[2].clone()],
        "after the first, only the ones asked for"
    );
    assert_eq!(
        some,
        pooled
            .products(Some(after), 10, &only)
            .await
            .expect("pooled")
    );
    assert_eq!(
        store.product(&whole[1].product_id).await.expect("product"),
        pooled.product(&whole[1].product_id).await.expect("pooled")
    );
    assert_eq!(store.product("sku_missing").await.expect("product"), None);
}
