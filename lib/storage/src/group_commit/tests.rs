//! Groups formed on purpose: a first writer holds the connection while the
//! others queue behind it, so which writers share a COMMIT is not left to
//! the scheduler.

use std::time::Duration;

use crate::test_support::scratch_database as database;
use crate::{Database, Param, Tx};

async fn keys(db: &Database) -> Vec<String> {
    sqlx::query_scalar("SELECT k FROM t ORDER BY k")
        .fetch_all(db.pool())
        .await
        .expect("keys")
}

async fn insert(tx: &mut Tx, key: &str) -> Result<u64, sqlx::Error> {
    tx.execute("INSERT INTO t (k) VALUES ($1)", &[Param::Text(key)])
        .await
}

/// A writer that inserts `key` and commits, started now: it queues for the
/// connection.
fn writer(db: &Database, key: &'static str) -> tokio::task::JoinHandle<Result<(), sqlx::Error>> {
    let db = db.clone();
    tokio::spawn(async move {
        let mut tx = db.transaction().await?;
        insert(&mut tx, key).await?;
        tx.commit().await
    })
}

/// Waits (bounded) until `count` writers wait for the connection.
async fn until_queued(db: &Database, count: usize) {
    let writer = db.writer.as_ref().expect("SQLite in a file");
    for _ in 0..1000 {
        if writer.queued() == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} writers queued, not {count}", writer.queued());
}

fn counts(db: &Database) -> (u64, u64) {
    db.writer.as_ref().expect("SQLite in a file").counts()
}

/// A scratch database whose connection a first writer holds, "first"
/// inserted: whoever starts writing now queues behind it.
async fn held_by_a_first_writer(dir: &tempfile::TempDir) -> (Database, Tx) {
    let db = database(dir).await;
    let mut first = db.transaction().await.expect("begin");
    insert(&mut first, "first").await.expect("insert");
    (db, first)
}

#[tokio::test]
async fn writers_queued_behind_one_share_its_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, first) = held_by_a_first_writer(&dir).await;
    let others = ["a", "b", "c", "d"].map(|key| writer(&db, key));
    until_queued(&db, others.len()).await;

    first.commit().await.expect("the group's commit");
    for other in others {
        other
            .await
            .expect("join")
            .expect("committed with the group");
    }
    assert_eq!(keys(&db).await, ["a", "b", "c", "d", "first"]);
    assert_eq!(counts(&db), (5, 1), "five transactions, one COMMIT");

    // Alone, a writer commits at once, as before.
    writer(&db, "e").await.expect("join").expect("commit");
    assert_eq!(counts(&db), (6, 2));
}

#[tokio::test]
async fn a_member_that_fails_rolls_back_only_its_own_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, first) = held_by_a_first_writer(&dir).await;
    let a = writer(&db, "a");
    until_queued(&db, 1).await;
    // Writes a row, then meets a constraint: its caller gives up.
    let failing = {
        let db = db.clone();
        tokio::spawn(async move {
            let mut tx = db.transaction().await?;
            insert(&mut tx, "b").await?;
            insert(&mut tx, "first").await?;
            tx.commit().await
        })
    };
    until_queued(&db, 2).await;
    let c = writer(&db, "c");
    until_queued(&db, 3).await;

    first.commit().await.expect("commit");
    a.await.expect("join").expect("a committed");
    c.await.expect("join").expect("c committed");
    let failed = failing.await.expect("join");
    assert!(failed.is_err(), "the duplicate key fails its own writer");
    assert_eq!(
        keys(&db).await,
        ["a", "c", "first"],
        "b went with its writer"
    );
    assert_eq!(counts(&db), (3, 1));
}

#[tokio::test]
async fn a_group_lost_as_a_whole_fails_every_member() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, first) = held_by_a_first_writer(&dir).await;
    // Ends the outer transaction under the group, as SQLite does by itself
    // on a full disk or an I/O error.
    let breaking = {
        let db = db.clone();
        tokio::spawn(async move {
            let mut tx = db.transaction().await?;
            tx.execute("ROLLBACK", &[]).await?;
            insert(&mut tx, "after").await
        })
    };
    until_queued(&db, 1).await;

    let lost = first.commit().await;
    assert!(lost.is_err(), "told the truth: not committed, got {lost:?}");
    let after = breaking.await.expect("join");
    assert!(after.is_err(), "no statement runs outside the transaction");
    assert!(keys(&db).await.is_empty(), "nothing of the group is stored");
    writer(&db, "next")
        .await
        .expect("join")
        .expect("the connection is usable again");
    assert_eq!(keys(&db).await, ["next"]);
}

#[tokio::test]
async fn a_member_whose_caller_went_away_is_committed_with_the_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, first) = held_by_a_first_writer(&dir).await;
    let other = writer(&db, "other");
    until_queued(&db, 1).await;

    // Polled once: it hands its COMMIT to the group and waits; then its
    // caller is gone.
    let commit = first.commit();
    tokio::select! {
        biased;
        _ = commit => panic!("the first writer waits for the group"),
        () = std::future::ready(()) => {}
    }
    // Bounded: a group nobody commits would leave `other` waiting forever.
    tokio::time::timeout(Duration::from_secs(30), other)
        .await
        .expect("the group is committed without the first writer's caller")
        .expect("join")
        .expect("committed");
    assert_eq!(keys(&db).await, ["first", "other"]);
}

#[tokio::test]
async fn savepoints_are_journalled_in_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(&dir).await;
    let mut tx = db.transaction().await.expect("begin");
    let temp_store = tx
        .query_optional("PRAGMA temp_store", &[], |row| row.int("temp_store"))
        .await
        .expect("pragma");
    assert_eq!(temp_store, Some(2), "MEMORY, not temporary files");
}
