//! Write transactions that run the same on both backends ([`Tx`]).
//!
//! On PostgreSQL a transaction is sqlx's, on a pooled connection. On SQLite
//! in a file it runs on one rusqlite connection that the database keeps for
//! its writers, on the caller's thread: sqlx's SQLite driver runs each
//! connection on a thread of its own and passes every statement and every
//! row over channels, so a transaction of seven statements cost about
//! fifteen thread round trips (99 voluntary context switches per order in
//! docs/performance.md). Here a statement of a few rows runs in place, and
//! only the two calls that may wait on the disk or on another writer leave
//! the thread: `COMMIT` (its fsync under `synchronous = FULL`) and a
//! `BEGIN IMMEDIATE` that finds the write lock taken (by the pool's
//! connection: migrations and the writes that still go through sqlx).
//! Writers queued behind one another share one COMMIT (`group_commit`).

use rusqlite::ErrorCode;

use crate::group_commit::{Held, SqliteWriter};
use crate::sqlite_reads::{bind_numbered, query_each};
use crate::{Columns, Param};

/// A write transaction: statements with `$1`, `$2`, … parameters, then
/// [`Tx::commit`]. Dropped without a commit, it rolls back.
pub struct Tx {
    inner: Inner,
}

enum Inner {
    Pool(sqlx::Transaction<'static, sqlx::Any>),
    Sqlite(Held),
}

impl Tx {
    pub(crate) fn pool(tx: sqlx::Transaction<'static, sqlx::Any>) -> Self {
        Self {
            inner: Inner::Pool(tx),
        }
    }

    pub(crate) async fn sqlite(writer: &SqliteWriter) -> Result<Self, sqlx::Error> {
        Ok(Self {
            inner: Inner::Sqlite(writer.begin().await?),
        })
    }

    /// Runs the statement `sql`; how many rows it changed.
    pub async fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, sqlx::Error> {
        match &mut self.inner {
            Inner::Pool(tx) => Ok(bind(sqlx::query(sql), params)
                .execute(&mut **tx)
                .await?
                .rows_affected()),
            Inner::Sqlite(held) => {
                let mut statement = held
                    .connection()?
                    .prepare_cached(sql)
                    .map_err(sqlite_error)?;
                bind_numbered(&mut statement, params).map_err(sqlite_error)?;
                statement
                    .raw_execute()
                    .map(|changed| changed as u64)
                    .map_err(sqlite_error)
            }
        }
    }

    /// Runs `sql` (a read, or a write with RETURNING), folding each row into
    /// a fresh `A` with `push`.
    pub async fn query_rows<A: Default>(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        mut push: impl FnMut(&mut A, &dyn Columns) -> Result<(), sqlx::Error>,
    ) -> Result<A, sqlx::Error> {
        let mut rows = A::default();
        match &mut self.inner {
            Inner::Pool(tx) => {
                for row in &bind(sqlx::query(sql), params).fetch_all(&mut **tx).await? {
                    push(&mut rows, row)?;
                }
            }
            Inner::Sqlite(held) => {
                query_each(held.connection()?, sql, params, |row| {
                    Ok(push(&mut rows, row)?)
                })
                .map_err(boxed_error)?;
            }
        }
        Ok(rows)
    }

    /// The first row of `sql` decoded by `decode`, if there is one.
    pub async fn query_optional<T>(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        mut decode: impl FnMut(&dyn Columns) -> Result<T, sqlx::Error>,
    ) -> Result<Option<T>, sqlx::Error> {
        self.query_rows(sql, params, |first: &mut Option<T>, row| {
            if first.is_none() {
                *first = Some(decode(row)?);
            }
            Ok(())
        })
        .await
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self.inner {
            Inner::Pool(tx) => tx.commit().await,
            // Alone or with a group of writers (group_commit).
            Inner::Sqlite(held) => held.commit().await,
        }
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self.inner {
            Inner::Pool(tx) => tx.rollback().await,
            // Held's drop rolls back.
            Inner::Sqlite(_) => Ok(()),
        }
    }
}

pub(crate) fn bind<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    params: &[Param<'q>],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for param in params {
        query = match *param {
            Param::Text(text) => query.bind(text),
            Param::OptText(text) => query.bind(text),
            Param::Int(int) => query.bind(int),
            Param::Blob(bytes) => query.bind(bytes),
        };
    }
    query
}

/// SQLite's failure as the stores report it: I/O, a full disk or a lock
/// that stayed taken count as the database being unreachable (callers may
/// retry, see `StoreError::is_unreachable`); anything else as internal.
pub(crate) fn sqlite_error(error: rusqlite::Error) -> sqlx::Error {
    sqlite_failure(&error)
}

/// [`sqlite_error`] of an error shared by several callers (a group's).
pub(crate) fn sqlite_failure(error: &rusqlite::Error) -> sqlx::Error {
    let unreachable = matches!(
        error.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::ReadOnly
        )
    );
    if unreachable {
        sqlx::Error::Io(std::io::Error::other(error.to_string()))
    } else {
        sqlx::Error::Protocol(format!("SQLite: {error}"))
    }
}

fn boxed_error(error: crate::sqlite_reads::ReadError) -> sqlx::Error {
    match error.downcast::<sqlx::Error>() {
        Ok(error) => *error,
        Err(error) => match error.downcast::<rusqlite::Error>() {
            Ok(error) => sqlite_error(*error),
            Err(error) => sqlx::Error::Protocol(format!("SQLite: {error}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::scratch_database as database;
    use crate::{Database, Param};

    async fn count(db: &Database) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(db.pool())
            .await
            .expect("count")
    }

    #[tokio::test]
    async fn commits_on_the_writers_connection_and_rolls_back_when_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = database(&dir).await;
        let mut tx = db.transaction().await.expect("begin");
        let changed = tx
            .execute(
                "INSERT INTO t (k, v) VALUES ($2, $1)",
                &[Param::Int(7), Param::Text("a")],
            )
            .await
            .expect("insert");
        assert_eq!(changed, 1);
        let seen = tx
            .query_optional("SELECT v FROM t WHERE k = $1", &[Param::Text("a")], |row| {
                row.int("v")
            })
            .await
            .expect("read in the transaction");
        assert_eq!(seen, Some(7), "named parameters bound by number");
        tx.commit().await.expect("commit");
        assert_eq!(count(&db).await, 1, "the pool sees the commit");

        let mut dropped = db.transaction().await.expect("begin");
        dropped
            .execute("INSERT INTO t (k, v) VALUES ($1, 1)", &[Param::Text("b")])
            .await
            .expect("insert");
        drop(dropped);
        assert_eq!(count(&db).await, 1, "dropped: rolled back");

        let mut failing = db.transaction().await.expect("the writer is free again");
        let duplicate = failing
            .execute("INSERT INTO t (k, v) VALUES ($1, 1)", &[Param::Text("a")])
            .await;
        assert!(duplicate.is_err(), "a constraint is an error, not a panic");
        drop(failing);
        db.transaction()
            .await
            .expect("begin after a failed statement")
            .commit()
            .await
            .expect("commit");
    }

    #[tokio::test]
    async fn waits_off_thread_for_a_lock_another_connection_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = database(&dir).await;
        // The pool's connection takes the write lock and holds it a while.
        let mut other = db.pool().begin().await.expect("begin on the pool");
        sqlx::query("INSERT INTO t (k, v) VALUES ('pool', 1)")
            .execute(&mut *other)
            .await
            .expect("insert");
        let writer = {
            let db = db.clone();
            tokio::spawn(async move {
                let mut tx = db.transaction().await?;
                tx.execute("INSERT INTO t (k, v) VALUES ('tx', 2)", &[])
                    .await?;
                tx.commit().await
            })
        };
        // Whatever the writer does meanwhile, this task still runs: the
        // wait is not on the async worker.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!writer.is_finished(), "the writer waits for the lock");
        other.commit().await.expect("commit on the pool");
        writer
            .await
            .expect("join")
            .expect("the writer got the lock");
        assert_eq!(count(&db).await, 2);
    }
}
