//! Database connections for the services.
//!
//! Each service owns its tables and never reads another's. On SQLite each
//! service has its own file under `--data-dir`; on PostgreSQL the services may
//! share one database, their tables kept apart by prefix and their migrations
//! by version range (inventory 1xxx, order 2xxx, payment 3xxx).
//!
//! Queries go through sqlx's `Any` driver, so one set of portable SQL
//! (`$1` parameters, BIGINT and TEXT columns, times as Unix milliseconds)
//! runs on both backends. On SQLite the hottest reads may also run on the
//! caller's thread ([`Database::query_rows`], see [`sqlite_reads`]), and
//! write transactions do ([`Database::transaction`], see [`transaction`]).

pub mod columns;
mod error;
pub mod fence;
mod group_commit;
pub mod outbox;
mod query;
mod sqlite_reads;
#[cfg(test)]
mod test_support;
mod transaction;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, Connection, Executor};

pub use crate::columns::Columns;
pub use crate::error::{StoreError, failed};
use crate::group_commit::SqliteWriter;
pub use crate::query::{Param, push_value_rows};
use crate::sqlite_reads::SqliteReads;
pub use crate::transaction::Tx;

/// Where a service keeps its data; the same flags for every role.
#[derive(Clone, Debug, clap::Args)]
pub struct DatabaseSettings {
    /// Directory of the embedded SQLite databases (one file per service).
    #[arg(long, env = "ORDERMESH_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// A postgres:// URL to use PostgreSQL instead of SQLite; over TLS with
    /// the server's certificate checked, add
    /// `?sslmode=verify-full&sslrootcert=CA.pem`.
    ///
    /// `--help` never shows the variable's value, and logs show the URL
    /// without its passwords (`redact_url`).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Most pooled connections one service holds [default: 16 on
    /// PostgreSQL, 1 on SQLite].
    ///
    /// SQLite lets one connection write at a time, and a writer that finds
    /// the lock taken sleeps in SQLite's busy handler (1, 2, 5, 10… ms): with
    /// many connections that sleeping was the whole tail of create-order.
    /// With one, the writes outside transactions queue in the pool in
    /// order; write transactions queue on a connection of their own
    /// (`Database::transaction`) and the hot reads do not need the pool
    /// (`Database::query_rows`).
    #[arg(long, env = "ORDERMESH_DB_MAX_CONNECTIONS")]
    pub db_max_connections: Option<u32>,
    /// SQLite's `synchronous`: `full` syncs every commit to disk before it
    /// is acknowledged (what survives a power loss: docs/reliability.md);
    /// `normal` is faster but may lose the last commits of a file on a
    /// power loss, breaking the saga's promises across the three files.
    #[arg(long, env = "ORDERMESH_SQLITE_SYNCHRONOUS", default_value = "full")]
    pub sqlite_synchronous: SqliteSynchronous,
}

/// SQLite's durability setting (see `--sqlite-synchronous`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SqliteSynchronous {
    #[default]
    Full,
    Normal,
}

impl SqliteSynchronous {
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            SqliteSynchronous::Full => "FULL",
            SqliteSynchronous::Normal => "NORMAL",
        }
    }
}

impl DatabaseSettings {
    /// Embedded SQLite under `data_dir`.
    pub fn sqlite(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            database_url: None,
            db_max_connections: None,
            sqlite_synchronous: SqliteSynchronous::Full,
        }
    }

    /// PostgreSQL at `url`.
    pub fn postgres(url: impl Into<String>) -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            database_url: Some(url.into()),
            db_max_connections: None,
            sqlite_synchronous: SqliteSynchronous::Full,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connection pool to one service's database.
#[derive(Clone, Debug)]
pub struct Database {
    pool: AnyPool,
    backend: Backend,
    /// SQLite in a file we know: reads that may skip the pool.
    reads: Option<Arc<SqliteReads>>,
    /// SQLite in a file we know: the writers' own connection ([`Tx`]).
    writer: Option<SqliteWriter>,
}

impl Database {
    /// Connects `service`'s database and runs its migrations.
    pub async fn open(
        settings: &DatabaseSettings,
        service: &str,
        migrator: &Migrator,
    ) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let database = match &settings.database_url {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Self::connect_postgres(url, settings.db_max_connections.unwrap_or(16)).await?
            }
            Some(url) if url.starts_with("sqlite:") => {
                Self::connect_sqlite(
                    url,
                    settings.db_max_connections.unwrap_or(1),
                    settings.sqlite_synchronous,
                )
                .await?
            }
            Some(other) => anyhow::bail!(
                "unsupported database URL {:?}: use postgres://… or leave it unset for SQLite",
                redact_url(other)
            ),
            None => {
                std::fs::create_dir_all(&settings.data_dir).with_context(|| {
                    format!("creating data directory {}", settings.data_dir.display())
                })?;
                let path = settings.data_dir.join(format!("{service}.db"));
                let url = format!("sqlite://{}?mode=rwc", path.display());
                Self::connect_sqlite(
                    &url,
                    settings.db_max_connections.unwrap_or(1),
                    settings.sqlite_synchronous,
                )
                .await?
            }
        };
        database.migrate(migrator, service).await?;
        Ok(database)
    }

    async fn connect_sqlite(
        url: &str,
        max_connections: u32,
        synchronous: SqliteSynchronous,
    ) -> anyhow::Result<Self> {
        let options = AnyConnectOptions::from_str(url)
            .with_context(|| format!("invalid SQLite URL {url:?}"))?;
        let file = sqlite_file(url)?;
        let pool = pool_options(max_connections)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    // WAL lets readers run beside the one writer; the busy
                    // timeout makes writers queue instead of failing.
                    // synchronous = FULL syncs the WAL at every commit: in
                    // WAL mode NORMAL may lose the last commits on a power
                    // loss, and the saga's promises span three files (a
                    // charge kept while the order that made it is lost).
                    let pragmas = format!(
                        "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; \
                         PRAGMA synchronous = {}; PRAGMA foreign_keys = ON;",
                        synchronous.pragma()
                    );
                    conn.execute(pragmas.as_str()).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .with_context(|| format!("opening SQLite database {url}"))?;
        let writer = match &file {
            Some(file) => Some(
                SqliteWriter::open(file, synchronous)
                    .with_context(|| format!("opening SQLite database {url} for writing"))?,
            ),
            None => None,
        };
        Ok(Self {
            pool,
            backend: Backend::Sqlite,
            reads: file.map(|file| Arc::new(SqliteReads::new(file))),
            writer,
        })
    }

    async fn connect_postgres(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        let pool = pool_options(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            // A connection that sat idle may have died with the server (a
            // restart, a failover) while nothing used it: ping it before
            // handing it out, so that after a restart a caller gets a live
            // connection instead of each dead one's error in turn. Found by
            // the chaos run (docs/reliability.md): a compensation retried
            // with backoff spent its tries on one dead pooled connection
            // after another, and its order was still unsettled a minute
            // after PostgreSQL was back. Connections passed from one query
            // to the next under load are not pinged.
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for < PING_IDLE_AFTER {
                        return Ok(true);
                    }
                    conn.ping().await.map(|()| true)
                })
            })
            .connect(url)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {}", redact_url(url)))?;
        Ok(Self {
            pool,
            backend: Backend::Postgres,
            reads: None,
            writer: None,
        })
    }

    async fn migrate(&self, migrator: &Migrator, service: &str) -> anyhow::Result<()> {
        // Services sharing one PostgreSQL database share sqlx's migrations
        // table; each ignores the others' versions.
        let migrator = Migrator {
            migrations: migrator.migrations.clone(),
            ignore_missing: true,
            locking: migrator.locking,
            no_tx: migrator.no_tx,
        };
        // Roles starting side by side may race to create the migrations table.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match migrator.run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(error) if attempt < 3 => {
                    tracing::warn!(service, %error, "migration attempt failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(error) => {
                    return Err(error).with_context(|| format!("migrating the {service} database"));
                }
            }
        }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A transaction on a pooled connection, begun on a task of its own:
    /// unlike `pool().begin()`, a caller cancelled meanwhile (a client's
    /// deadline, a reset stream) cannot leave the connection inside a
    /// transaction. sqlx 0.8.6's PostgreSQL `begin` counts the transaction
    /// only once BEGIN's answer is read, so a future dropped while BEGIN is
    /// in flight returns the connection to the pool with the server's
    /// transaction open and nothing to end it (transact-rs/sqlx#4393): the
    /// next borrower's statements, autocommit ones included, run inside it.
    /// The chaos run's logs showed it ("there is already a transaction in
    /// progress", docs/reliability.md). Here the task always finishes the
    /// BEGIN, and a transaction nobody awaits any more is dropped, which
    /// rolls it back.
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        let pool = self.pool.clone();
        tokio::spawn(async move { pool.begin().await })
            .await
            .map_err(|error| sqlx::Error::Io(std::io::Error::other(error)))?
    }

    /// A write transaction ([`Tx`]): on SQLite in a file on the writers'
    /// own connection, on the caller's thread; otherwise [`Database::begin`]'s.
    pub async fn transaction(&self) -> Result<Tx, sqlx::Error> {
        match &self.writer {
            Some(writer) => Tx::sqlite(writer).await,
            None => Ok(Tx::pool(self.begin().await?)),
        }
    }

    /// On SQLite in a file, a reader of the write transactions committed and
    /// the COMMITs (each an fsync under `synchronous = FULL`) that made them
    /// durable, for as long as the metrics live (`StoreCommits::watch`).
    pub fn sqlite_commit_counter(&self) -> impl Fn() -> Option<(u64, u64)> + Send + Sync + 'static {
        let writer = self.writer.clone();
        move || writer.as_ref().map(SqliteWriter::counts)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// An SQL expression for the database's own clock in Unix milliseconds
    /// (PostgreSQL's `now()`, SQLite's `julianday('now')`), for decisions
    /// every replica must agree on whatever its own clock says (saga leases).
    pub fn now_sql(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)",
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
        }
    }

    /// The database's clock, Unix milliseconds.
    pub async fn now_ms(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(&format!("SELECT {}", self.now_sql()))
            .fetch_one(&self.pool)
            .await
    }

    /// The same database with every read through the pool (for tests that
    /// compare both ways of reading).
    pub fn pool_only(&self) -> Self {
        Self {
            reads: None,
            ..self.clone()
        }
    }
}

/// The file of a SQLite URL, which can also be read on the caller's thread;
/// None for an in-memory database (sqlx names those `file:sqlx-in-memory-…`),
/// which only the pool's connections see.
fn sqlite_file(url: &str) -> anyhow::Result<Option<PathBuf>> {
    let options = SqliteConnectOptions::from_str(url)
        .with_context(|| format!("invalid SQLite URL {url:?}"))?;
    let file = options.get_filename();
    let in_memory = url.contains("mode=memory")
        || file.as_os_str() == ":memory:"
        || file.to_string_lossy().starts_with("file:");
    Ok((!in_memory).then(|| file.to_path_buf()))
}

/// How long a PostgreSQL connection may sit idle before it is pinged on
/// its way out of the pool.
const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// Pool settings shared by both backends.
fn pool_options(max_connections: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max_connections)
        // sqlx pings a connection when it goes back to the pool; a second
        // ping before each use would be one more round trip (to PostgreSQL,
        // or to the SQLite connection's thread) on every query's path. A
        // connection that died while idle fails its next query, whose caller
        // sees UNAVAILABLE, and is then dropped by that ping on release;
        // on PostgreSQL one idle for a second is pinged first
        // (`connect_postgres`).
        .test_before_acquire(false)
}

/// The URL without its passwords, fit for logs and error messages: the
/// userinfo's (`user:***@`) and any query parameter naming one
/// (`?password=***`, `&sslpassword=***`, as libpq and sqlx accept them).
pub fn redact_url(url: &str) -> String {
    // The query starts after the userinfo, whose password may hold a `?`.
    let host_start = url.rfind('@').map_or(0, |at| at + 1);
    let (base, query) = match url[host_start..].find('?') {
        Some(mark) => (
            &url[..host_start + mark],
            Some(&url[host_start + mark + 1..]),
        ),
        None => (url, None),
    };
    let mut redacted = redact_userinfo(base);
    if let Some(query) = query {
        redacted.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.to_ascii_lowercase().ends_with("password") => {
                    format!("{key}=***")
                }
                _ => pair.to_owned(),
            })
            .collect();
        redacted.push_str(&pairs.join("&"));
    }
    redacted
}

fn redact_userinfo(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Milliseconds since the Unix epoch, how every table stores time.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sqlite_files_are_read_on_the_callers_thread() {
        let file = |url: &str| sqlite_file(url).expect("valid URL");
        assert_eq!(
            file("sqlite:///tmp/x/order.db?mode=rwc"),
            Some(PathBuf::from("/tmp/x/order.db"))
        );
        assert_eq!(file("sqlite::memory:"), None);
        assert_eq!(file("sqlite:///tmp/x/order.db?mode=memory"), None);
    }

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgres://user:secret@db:5432/orders"),
            "postgres://user:***@db:5432/orders"
        );
        assert_eq!(
            redact_url("postgres://user@db/orders"),
            "postgres://user@db/orders"
        );
        assert_eq!(redact_url("postgres://db/orders"), "postgres://db/orders");
        // A password with an `@` or a `?` in it is still cut at the host.
        assert_eq!(
            redact_url("postgres://user:s@c?ret@db/orders"),
            "postgres://user:***@db/orders"
        );
    }

    #[test]
    fn redacts_passwords_in_the_query() {
        assert_eq!(
            redact_url("postgres://user@db/orders?password=secret"),
            "postgres://user@db/orders?password=***"
        );
        assert_eq!(
            redact_url(
                "postgres://u:secret@db/o?sslmode=verify-full&Password=secret&sslpassword=secret&application_name=om"
            ),
            "postgres://u:***@db/o?sslmode=verify-full&Password=***&sslpassword=***&application_name=om"
        );
        assert_eq!(
            redact_url("postgres://db/o?sslmode=require"),
            "postgres://db/o?sslmode=require"
        );
    }

    #[tokio::test]
    async fn opens_sqlite_in_wal_mode_and_migrates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let migrator = Migrator::DEFAULT;
        let db = Database::open(&DatabaseSettings::sqlite(dir.path()), "unit", &migrator)
            .await
            .expect("open");
        assert_eq!(db.backend(), Backend::Sqlite);
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(db.pool())
            .await
            .expect("pragma");
        assert_eq!(mode, "wal");
        // 2 is FULL: every commit is on disk before it is acknowledged.
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(db.pool())
            .await
            .expect("pragma");
        assert_eq!(synchronous, 2, "synchronous = FULL by default");
        let normal = Database::open(
            &DatabaseSettings {
                sqlite_synchronous: SqliteSynchronous::Normal,
                ..DatabaseSettings::sqlite(dir.path())
            },
            "unit-normal",
            &migrator,
        )
        .await
        .expect("open");
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(normal.pool())
            .await
            .expect("pragma");
        assert_eq!(synchronous, 1, "NORMAL when asked for");
        assert!(dir.path().join("unit.db").exists());
        let clock = db.now_ms().await.expect("the database's clock");
        assert!(
            (clock - now_millis()).abs() < 5_000,
            "SQLite's clock in Unix ms: {clock}"
        );
    }
}
