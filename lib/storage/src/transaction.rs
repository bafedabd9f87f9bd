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
//!
//! `BEGIN IMMEDIATE` takes SQLite's write lock at once, so no statement
//! inside the transaction can meet another writer and wait in SQLite's busy
//! handler on an async worker thread.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::sqlite_reads::{bind_numbered, query_each};
use crate::{Columns, Param, SqliteSynchronous};

/// How long a writer waits for the write lock another connection holds.
const BUSY_WAIT: Duration = Duration::from_secs(10);

/// The one rusqlite connection of a SQLite file's writers; the async mutex
/// queues them in order, as the pool of one connection did.
#[derive(Clone, Debug)]
pub struct SqliteWriter {
    connection: Arc<Mutex<Connection>>,
}

impl SqliteWriter {
    pub fn open(path: &Path, synchronous: SqliteSynchronous) -> Result<Self, sqlx::Error> {
        let connection = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite_error)?;
        connection
            .execute_batch(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 0; \
                 PRAGMA synchronous = {}; PRAGMA foreign_keys = ON;",
                synchronous.pragma()
            ))
            .map_err(sqlite_error)?;
        // Every store's write statements stay prepared (about 30 in all).
        connection.set_prepared_statement_cache_capacity(64);
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    async fn begin(&self) -> Result<Held, sqlx::Error> {
        let held = Held(self.connection.clone().lock_owned().await);
        match held.0.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => Ok(held),
            Err(error) if error.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) => {
                // Another connection writes: wait for it off this thread.
                tokio::task::spawn_blocking(move || {
                    held.0.busy_timeout(BUSY_WAIT).map_err(sqlite_error)?;
                    let begun = held.0.execute_batch("BEGIN IMMEDIATE");
                    held.0.busy_timeout(Duration::ZERO).map_err(sqlite_error)?;
                    begun.map(|()| held).map_err(sqlite_error)
                })
                .await
                .map_err(|error| sqlx::Error::Io(std::io::Error::other(error)))?
            }
            Err(error) => Err(sqlite_error(error)),
        }
    }
}

/// The writers' connection, held: dropped inside a transaction (a failed
/// statement, a cancelled caller, a commit that failed) it rolls back, so
/// the next writer always starts clean.
struct Held(OwnedMutexGuard<Connection>);

impl Drop for Held {
    fn drop(&mut self) {
        if !self.0.is_autocommit()
            && let Err(error) = self.0.execute_batch("ROLLBACK")
        {
            tracing::warn!(%error, "rolling back an unfinished SQLite transaction failed");
        }
    }
}

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
                let mut statement = held.0.prepare_cached(sql).map_err(sqlite_error)?;
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
                query_each(&held.0, sql, params, |row| Ok(push(&mut rows, row)?))
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
            // The commit's fsync waits on the disk: not on an async worker.
            // A caller cancelled meanwhile does not stop it.
            Inner::Sqlite(held) => tokio::task::spawn_blocking(move || {
                held.0.execute_batch("COMMIT").map_err(sqlite_error)
            })
            .await
            .map_err(|error| sqlx::Error::Io(std::io::Error::other(error)))?,
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
        sqlx::Error::Io(std::io::Error::other(error))
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
    use sqlx::migrate::Migrator;

    use crate::{Database, DatabaseSettings, Param};

    async fn database(dir: &tempfile::TempDir) -> Database {
        let db = Database::open(
            &DatabaseSettings::sqlite(dir.path()),
            "tx",
            &Migrator::DEFAULT,
        )
        .await
        .expect("open");
        sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY, v BIGINT)")
            .execute(db.pool())
            .await
            .expect("schema");
        db
    }

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
