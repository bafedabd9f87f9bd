//! SQLite's writers, committed in groups.
//!
//! Every write transaction of a SQLite file runs on one connection, one
//! after another ([`SqliteWriter`]); under `synchronous = FULL` each COMMIT
//! is a write and an fsync of the WAL, and while one transaction waits on
//! its fsync every other writer waits for it. With writers queued, a
//! transaction that is done does not commit at once: it leaves the outer
//! transaction open, and those waiting run theirs inside it, each in a
//! savepoint of its own, until one COMMIT (one fsync) makes the whole group
//! durable. Nobody's commit returns before that COMMIT has: what a caller
//! is told is committed is on disk, as before. A writer that fails rolls
//! back its own savepoint and leaves the others' writes in the group; if
//! the group's transaction is lost as a whole (SQLite rolled it back, or the
//! COMMIT failed) every member is told so.
//!
//! Alone, a transaction commits as it always did (no savepoint, no wait):
//! the group only forms when someone is queued behind it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use crate::SqliteSynchronous;
use crate::transaction::{sqlite_error, sqlite_failure};

/// How long a writer waits for the write lock another connection holds.
const BUSY_WAIT: Duration = Duration::from_secs(10);

/// The one rusqlite connection of a SQLite file's writers; the async mutex
/// queues them in order (tokio's is fair), as the pool of one connection did.
#[derive(Clone, Debug)]
pub struct SqliteWriter {
    state: Arc<Mutex<WriterState>>,
    /// Writers waiting for the connection (the group's committer among
    /// them): whether a finished transaction has company to wait for.
    queued: Arc<AtomicUsize>,
    counts: Arc<Counts>,
}

/// What the writers did, for tests and operators.
#[derive(Debug, Default)]
struct Counts {
    transactions: AtomicU64,
    commits: AtomicU64,
}

#[derive(Debug)]
struct WriterState {
    connection: Connection,
    /// The group whose outer transaction is open while the connection is
    /// free: its first member finished and waits for the COMMIT.
    group: Option<Group>,
    next_group: u64,
}

#[derive(Debug)]
struct Group {
    id: u64,
    /// Set once, by whoever ends the outer transaction.
    outcome: watch::Sender<Option<Outcome>>,
}

type Outcome = Result<(), Arc<rusqlite::Error>>;

/// Which part of the outer transaction a writer owns.
#[derive(Clone, Copy, Debug)]
enum Role {
    /// It began the outer transaction: nobody else has written in it yet,
    /// so rolling back is rolling the whole of it back.
    First,
    /// It joined the open group in a savepoint.
    Joined,
}

const JOIN: &str = "SAVEPOINT member";
const LEAVE: &str = "RELEASE member";
const UNDO: &str = "ROLLBACK TO member; RELEASE member";

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
                 PRAGMA synchronous = {}; PRAGMA foreign_keys = ON; \
                 PRAGMA temp_store = MEMORY;",
                synchronous.pragma()
            ))
            .map_err(sqlite_error)?;
        // temp_store = MEMORY: a group's savepoints and the statements'
        // journals (what ROLLBACK TO needs) stay in memory instead of
        // temporary files created, written and unlinked per group: 20 % of
        // create-order's CPU per order at 16 clients (docs/performance.md).
        // They only matter while the transaction is open; the WAL is what
        // survives a crash.
        // Every store's write statements stay prepared (about 30 in all).
        connection.set_prepared_statement_cache_capacity(64);
        Ok(Self {
            state: Arc::new(Mutex::new(WriterState {
                connection,
                group: None,
                next_group: 1,
            })),
            queued: Arc::default(),
            counts: Arc::default(),
        })
    }

    /// Transactions committed, and the COMMITs (fsyncs) that made them
    /// durable: fewer commits than transactions when groups formed.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.counts.transactions.load(Ordering::Relaxed),
            self.counts.commits.load(Ordering::Relaxed),
        )
    }

    /// Writers waiting for the connection now.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    async fn lock(&self) -> OwnedMutexGuard<WriterState> {
        let _waiting = Queued::enter(&self.queued);
        self.state.clone().lock_owned().await
    }

    /// The connection, inside a transaction: a savepoint of an open group,
    /// or a new outer transaction.
    pub(crate) async fn begin(&self) -> Result<Held, sqlx::Error> {
        let mut state = self.lock().await;
        if state.group.is_some() {
            state.connection.execute_batch(JOIN).map_err(sqlite_error)?;
            return Ok(Held::new(state, self.clone(), Role::Joined));
        }
        // IMMEDIATE takes SQLite's write lock at once, so no statement inside
        // meets another writer and waits in SQLite's busy handler.
        match state.connection.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => {}
            Err(error) if error.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) => {
                // Another connection writes: wait for it off this thread.
                state = tokio::task::spawn_blocking(move || {
                    state.connection.busy_timeout(BUSY_WAIT)?;
                    let begun = state.connection.execute_batch("BEGIN IMMEDIATE");
                    state.connection.busy_timeout(Duration::ZERO)?;
                    begun.map(|()| state)
                })
                .await
                .map_err(|error| sqlx::Error::Io(std::io::Error::other(error)))?
                .map_err(sqlite_error)?;
            }
            Err(error) => return Err(sqlite_error(error)),
        }
        Ok(Held::new(state, self.clone(), Role::First))
    }

    /// Whoever holds the connection after the group's members ends the
    /// group: a blocking thread, since the COMMIT waits on the disk, and
    /// not the first member's task, whose caller may go away meanwhile.
    fn queue_committer(&self, group: u64) {
        let waiting = Queued::enter(&self.queued);
        let state = self.state.clone();
        let counts = self.counts.clone();
        tokio::task::spawn_blocking(move || {
            let mut state = state.blocking_lock_owned();
            drop(waiting);
            if state.group.as_ref().is_some_and(|open| open.id == group) {
                state.end_group(&counts);
            }
        });
    }
}

impl WriterState {
    /// COMMITs the outer transaction, or rolls it back if the COMMIT failed.
    fn commit(&mut self, counts: &Counts) -> Result<(), rusqlite::Error> {
        let committed = self.connection.execute_batch("COMMIT");
        if committed.is_ok() {
            counts.commits.fetch_add(1, Ordering::Relaxed);
        } else if !self.connection.is_autocommit() {
            self.roll_back_all();
        }
        committed
    }

    /// COMMITs the open group and tells its members.
    fn end_group(&mut self, counts: &Counts) {
        let committed = self.commit(counts);
        self.tell_group(committed.map_err(Arc::new));
    }

    /// The group's outer transaction is lost: every member fails.
    fn fail_group(&mut self, error: rusqlite::Error) {
        if !self.connection.is_autocommit() {
            self.roll_back_all();
        }
        self.tell_group(Err(Arc::new(error)));
    }

    fn tell_group(&mut self, outcome: Outcome) {
        if let Some(group) = self.group.take() {
            group.outcome.send_replace(Some(outcome));
        }
    }

    fn roll_back_all(&self) {
        if let Err(error) = self.connection.execute_batch("ROLLBACK") {
            tracing::warn!(%error, "rolling back an unfinished SQLite transaction failed");
        }
    }
}

/// A writer waiting for the connection, counted until it has it.
struct Queued(Arc<AtomicUsize>);

impl Queued {
    fn enter(queued: &Arc<AtomicUsize>) -> Self {
        queued.fetch_add(1, Ordering::SeqCst);
        Self(queued.clone())
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The writers' connection, held by one transaction. Dropped before its
/// commit (a failed statement, a cancelled caller) it rolls back what that
/// transaction wrote, and only that, so the next writer starts clean.
pub(crate) struct Held {
    state: Option<OwnedMutexGuard<WriterState>>,
    writer: SqliteWriter,
    role: Role,
}

impl Held {
    fn new(state: OwnedMutexGuard<WriterState>, writer: SqliteWriter, role: Role) -> Self {
        Self {
            state: Some(state),
            writer,
            role,
        }
    }

    /// The connection, while its transaction is still there: after SQLite
    /// rolled it back by itself (a full disk, an I/O error) a statement
    /// would run and commit on its own, outside any transaction.
    pub(crate) fn connection(&self) -> Result<&Connection, sqlx::Error> {
        let connection = &self
            .state
            .as_ref()
            .expect("held until commit or drop")
            .connection;
        if connection.is_autocommit() {
            return Err(sqlx::Error::Protocol(
                "SQLite: the transaction was rolled back".into(),
            ));
        }
        Ok(connection)
    }

    /// Durable when it returns Ok: committed alone, or with a group.
    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        let mut state = self.state.take().expect("held until commit or drop");
        let counts = self.writer.counts.clone();
        let outcome = match self.role {
            Role::First if self.writer.queued.load(Ordering::SeqCst) == 0 => {
                // Alone: the COMMIT's fsync waits on the disk, so not on an
                // async worker; a caller cancelled meanwhile does not stop it.
                return tokio::task::spawn_blocking(move || {
                    state.commit(&counts)?;
                    counts.transactions.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                })
                .await
                .map_err(|error| sqlx::Error::Io(std::io::Error::other(error)))?
                .map_err(sqlite_error);
            }
            Role::First => {
                let id = state.next_group;
                state.next_group += 1;
                let (outcome, waiting) = watch::channel(None);
                state.group = Some(Group { id, outcome });
                self.writer.queue_committer(id);
                waiting
            }
            Role::Joined => {
                if let Err(error) = state.connection.execute_batch(LEAVE) {
                    undo_member(&mut state);
                    return Err(sqlite_error(error));
                }
                match &state.group {
                    Some(open) => open.outcome.subscribe(),
                    // Not reached: only the connection's holder ends a
                    // group, and this member held it since it joined.
                    None => return Err(lost()),
                }
            }
        };
        drop(state);
        let committed = wait(outcome).await;
        if committed.is_ok() {
            counts.transactions.fetch_add(1, Ordering::Relaxed);
        }
        committed
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(mut state) = self.state.take() else {
            return;
        };
        match self.role {
            Role::First => {
                if !state.connection.is_autocommit() {
                    state.roll_back_all();
                }
            }
            Role::Joined => undo_member(&mut state),
        }
    }
}

/// Rolls back a joined member's savepoint; if that cannot be done (SQLite
/// already rolled the outer transaction back, or the rollback failed), the
/// group is lost.
fn undo_member(state: &mut WriterState) {
    if state.connection.is_autocommit() {
        state.fail_group(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
            Some("the group's transaction was rolled back by SQLite".into()),
        ));
        return;
    }
    if let Err(error) = state.connection.execute_batch(UNDO) {
        tracing::warn!(%error, "rolling back a grouped SQLite transaction failed");
        state.fail_group(error);
    }
}

async fn wait(mut outcome: watch::Receiver<Option<Outcome>>) -> Result<(), sqlx::Error> {
    match outcome.wait_for(Option::is_some).await {
        Ok(outcome) => match outcome.as_ref() {
            Some(Ok(())) => Ok(()),
            Some(Err(error)) => Err(sqlite_failure(error)),
            None => Err(lost()),
        },
        Err(_) => Err(lost()),
    }
}

/// A group ended without a COMMIT anyone saw: nothing of it is durable.
fn lost() -> sqlx::Error {
    sqlx::Error::Protocol("SQLite: the grouped transaction was rolled back".into())
}

#[cfg(test)]
mod tests;
