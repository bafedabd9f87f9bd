//! Hot reads on SQLite without leaving the calling thread.
//!
//! sqlx runs every SQLite connection on a thread of its own and passes each
//! statement and row over channels, so a read costs several thread wake-ups
//! (most of GetOrder's CPU in the profiles of docs/performance.md). A read
//! of a few rows from SQLite's page cache takes microseconds, less than one
//! wake-up, so the hottest reads run here, on the caller's thread, through
//! rusqlite (the same SQLite library that sqlx links).
//!
//! Only reads, on connections set `query_only`; write transactions have
//! their own connection (`crate::transaction`).
//! WAL lets these readers run beside its writer. A read that cannot run
//! here (the file cannot be opened, SQLite is busy, any error) answers
//! `None` and [`crate::Database::query_rows`] takes the pool, which then
//! gives the authoritative answer.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use rusqlite::{Connection, OpenFlags};

use crate::Param;

/// What a read on the caller's thread may fail with: it then falls back.
pub type ReadError = Box<dyn Error + Send + Sync>;

/// Idle read-only connections to one SQLite file.
///
/// A free list, not a pool crate: a read never awaits, so each thread uses
/// at most one connection at a time and the list holds about one per
/// thread (a connection is opened when none is idle); a pool's waiting,
/// timeouts and health checks would never run.
#[derive(Debug)]
pub struct SqliteReads {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    served: AtomicU64,
}

/// Idle connections kept; beyond it a connection closes after its read.
const MAX_IDLE: usize = 8;

impl SqliteReads {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            idle: Mutex::new(Vec::new()),
            served: AtomicU64::new(0),
        }
    }

    /// Runs `read` on an idle connection now. `None` when it failed or could
    /// not run here: the caller then reads through the pool.
    pub fn read<T>(&self, read: impl FnOnce(&Connection) -> Result<T, ReadError>) -> Option<T> {
        let connection = match self.take() {
            Ok(connection) => connection,
            Err(error) => {
                tracing::debug!(%error, path = %self.path.display(), "no SQLite reader; using the pool");
                return None;
            }
        };
        let result = read(&connection);
        self.give_back(connection);
        match result {
            Ok(value) => {
                self.served.fetch_add(1, Ordering::Relaxed);
                Some(value)
            }
            Err(error) => {
                tracing::debug!(%error, "SQLite read on the caller's thread failed; using the pool");
                None
            }
        }
    }

    /// Reads that ran here.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    fn take(&self) -> Result<Connection, ReadError> {
        if let Some(connection) = self.lock().pop() {
            return Ok(connection);
        }
        open_reader(&self.path)
    }

    fn give_back(&self, connection: Connection) {
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE {
            idle.push(connection);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn open_reader(path: &Path) -> Result<Connection, ReadError> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // Never write, never wait: a busy database means "use the pool".
    connection.execute_batch("PRAGMA query_only = ON; PRAGMA busy_timeout = 0;")?;
    Ok(connection)
}

/// Runs the cached statement `sql` with `params` bound to `$1`, `$2`, … by
/// name (SQLite numbers named parameters in order of first appearance, so
/// binding by position would go wrong for `… $3 … $2`), calling `row` for
/// each result row.
pub fn query_each(
    connection: &Connection,
    sql: &str,
    params: &[Param<'_>],
    mut row: impl FnMut(&NamedRow<'_, '_>) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    let mut statement = connection.prepare_cached(sql)?;
    bind_numbered(&mut statement, params)?;
    let names: Vec<String> = statement
        .column_names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let mut rows = statement.raw_query();
    while let Some(next) = rows.next()? {
        row(&NamedRow {
            row: next,
            names: &names,
        })?;
    }
    Ok(())
}

/// Binds `params` to `$1`, `$2`, … by name: SQLite numbers named
/// parameters in order of first appearance, so binding by position would
/// go wrong for `… $3 … $2`. Each of the statement's parameters is read by
/// its index and bound to the param its number names: looking each name
/// up instead (`parameter_index`) allocates it and searches every name,
/// 4 % of a saga's instructions with the outbox's multi-row inserts
/// (callgrind). A parameter that is not `$n` of a given param is refused,
/// never left NULL.
pub fn bind_numbered(
    statement: &mut rusqlite::Statement<'_>,
    params: &[Param<'_>],
) -> rusqlite::Result<()> {
    for index in 1..=statement.parameter_count() {
        let name = statement.parameter_name(index).unwrap_or("?");
        let value = name
            .strip_prefix('$')
            .and_then(|number| number.parse::<usize>().ok())
            .and_then(|number| params.get(number.checked_sub(1)?));
        match value {
            Some(value) => statement.raw_bind_parameter(index, value)?,
            None => return Err(rusqlite::Error::InvalidParameterName(name.to_owned())),
        }
    }
    Ok(())
}

/// A result row whose columns are found by name cheaply.
///
/// rusqlite finds a column by name by asking SQLite for every column's name
/// and comparing it without case, for each value read: that was a fifth of
/// all instructions of a GetOrder (callgrind). Here the names are read once
/// per statement and compared exactly.
pub struct NamedRow<'r, 's> {
    row: &'r rusqlite::Row<'s>,
    names: &'r [String],
}

impl NamedRow<'_, '_> {
    pub fn get<T: rusqlite::types::FromSql>(&self, column: &str) -> Result<T, sqlx::Error> {
        let index = self
            .names
            .iter()
            .position(|name| name == column)
            .ok_or_else(|| sqlx::Error::ColumnNotFound(column.to_owned()))?;
        self.row
            .get(index)
            .map_err(|e| crate::columns::decode_error(column, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("reads.db");
        let writer = Connection::open(&path).expect("open");
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; CREATE TABLE t (k TEXT, v BIGINT); \
                 INSERT INTO t VALUES ('a', 1), ('b', 2), ('c', 3);",
            )
            .expect("schema");
        (dir, path)
    }

    #[test]
    fn binds_numbered_parameters_by_name_whatever_their_order() {
        let (_dir, path) = database();
        let reads = SqliteReads::new(&path);
        let found = reads.read(|connection| {
            let mut keys = Vec::new();
            query_each(
                connection,
                "SELECT k FROM t WHERE k > $1 AND v <= $3 ORDER BY k LIMIT $2",
                &[Param::Text("a"), Param::Int(1), Param::Int(3)],
                |row| {
                    keys.push(row.get::<String>("k")?);
                    Ok(())
                },
            )?;
            Ok(keys)
        });
        assert_eq!(found, Some(vec!["b".to_owned()]));
    }

    #[test]
    fn a_parameter_without_its_param_is_refused() {
        let (_dir, path) = database();
        let reads = SqliteReads::new(&path);
        let run = |sql: &'static str, params: Vec<Param<'static>>| {
            reads.read(move |connection| {
                query_each(connection, sql, &params, |_| Ok(()))?;
                Ok(())
            })
        };
        let accepted = [
            ("SELECT k FROM t WHERE k = $1", 1),
            // Params the statement does not name are not an error.
            ("SELECT k FROM t WHERE k = $2", 2),
        ];
        for (sql, params) in accepted {
            assert_eq!(run(sql, vec![Param::Int(1); params]), Some(()), "{sql}");
        }
        let refused = [
            "SELECT k FROM t WHERE k = $2",
            "SELECT k FROM t WHERE k = $0",
            "SELECT k FROM t WHERE k = ?",
            "SELECT k FROM t WHERE k = :k",
        ];
        for sql in refused {
            assert_eq!(run(sql, vec![Param::Int(1)]), None, "{sql}");
        }
    }

    #[test]
    fn refuses_writes_and_reports_failures_as_none() {
        let (_dir, path) = database();
        let reads = SqliteReads::new(&path);
        let wrote = reads.read(|connection| Ok(connection.execute("DELETE FROM t", [])?));
        assert_eq!(wrote, None, "query_only connections cannot write");
        let count = reads.read(|connection| {
            Ok(connection.query_row("SELECT COUNT(*) FROM t", [], |row| row.get::<_, i64>(0))?)
        });
        assert_eq!(count, Some(3));
        assert!(
            SqliteReads::new(path.with_file_name("missing/x.db"))
                .read(|_| Ok(()))
                .is_none()
        );
    }

    #[test]
    fn keeps_its_connections_for_the_next_read() {
        let (_dir, path) = database();
        let reads = SqliteReads::new(&path);
        for _ in 0..3 {
            assert!(reads.read(|_| Ok(())).is_some());
        }
        assert_eq!(reads.lock().len(), 1);
    }
}
