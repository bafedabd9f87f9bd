//! A caller cancelled while its transaction's BEGIN is in flight leaves no
//! transaction open on the pooled connection (`Database::begin`; sqlx
//! 0.8.6's `Pool::begin` does, on PostgreSQL: transact-rs/sqlx#4393).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use ordermesh_storage::{Database, DatabaseSettings};
use sqlx::migrate::Migrator;

/// How many cancelled BEGINs the test tries; each is a chance to leak.
const TRIES: usize = 200;

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_begin_leaves_no_transaction_open_on_postgres() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        assert!(
            std::env::var("ORDERMESH_REQUIRE_ALL").as_deref() != Ok("1"),
            "PostgreSQL is required (ORDERMESH_REQUIRE_ALL=1) but DATABASE_URL is unset"
        );
        eprintln!("skipping: PostgreSQL (set DATABASE_URL) is not available");
        return;
    };
    let mut settings = DatabaseSettings::postgres(url);
    // One connection, so every statement below runs on the one whose
    // BEGIN was cancelled.
    settings.db_max_connections = Some(1);
    let db = Database::open(&settings, "storage-test", &Migrator::DEFAULT)
        .await
        .expect("connect");
    // A second pool, to see what the first one committed.
    let mut probe_settings = settings.clone();
    probe_settings.db_max_connections = Some(1);
    let probe = Database::open(&probe_settings, "storage-test", &Migrator::DEFAULT)
        .await
        .expect("connect");
    let table = format!("storage_cancelled_begin_{}", std::process::id());
    sqlx::query(&format!("CREATE TABLE {table} (n BIGINT)"))
        .execute(probe.pool())
        .await
        .expect("create the table");
    let mut leaked = 0;
    for n in 0..TRIES {
        // Dropped at its first wait: BEGIN sent, its answer not read.
        let cancelled = tokio::time::timeout(Duration::ZERO, db.begin()).await;
        drop(cancelled);
        // An autocommit insert on the same connection: committed at once,
        // unless it ran inside a transaction left open.
        sqlx::query(&format!("INSERT INTO {table} VALUES ({n})"))
            .execute(db.pool())
            .await
            .expect("insert");
        let seen: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE n = {n}"))
            .fetch_one(probe.pool())
            .await
            .expect("count");
        if seen == 0 {
            leaked += 1;
            sqlx::query("ROLLBACK").execute(db.pool()).await.ok();
        }
    }
    sqlx::query(&format!("DROP TABLE {table}"))
        .execute(probe.pool())
        .await
        .expect("drop the table");
    println!(
        "{leaked} of {TRIES} cancelled BEGINs left their connection inside a transaction (an autocommit insert after it not committed)"
    );
    assert_eq!(leaked, 0);
}
