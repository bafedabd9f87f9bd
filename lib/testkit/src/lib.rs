//! Test support shared by every crate's tests.
//!
//! `cargo test` alone must pass on a machine with nothing but Rust, so tests
//! that need PostgreSQL or an external tool skip when it is absent, unless
//! `ORDERMESH_REQUIRE_ALL=1` (set by `make test`), which turns a missing part
//! into a failure instead.

#![allow(clippy::unwrap_used)]

#[cfg(feature = "app")]
pub mod app;
pub mod hosts;
pub mod nats;
pub mod postgres;
pub mod process;
pub mod tls;
#[cfg(feature = "app")]
pub mod tokens;

#[cfg(feature = "app")]
pub use app::TestApp;

use std::path::PathBuf;

use ordermesh_storage::DatabaseSettings;
use sqlx::Connection;

/// Whether a missing database or tool must fail the test instead of skipping.
pub fn everything_required() -> bool {
    std::env::var("ORDERMESH_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// Skips (returns None, with a note on stderr) or fails, as
/// [`everything_required`] says, when a test's prerequisite is missing.
pub fn missing<T>(what: &str) -> Option<T> {
    assert!(
        !everything_required(),
        "{what} is required (ORDERMESH_REQUIRE_ALL=1) but missing"
    );
    eprintln!("skipping: {what} is not available");
    None
}

/// The path of an external tool: `$ORDERMESH_TOOLS_DIR/NAME`, else NAME on
/// PATH. Skips or fails as [`missing`] says when it is nowhere.
pub fn tool(name: &str) -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("ORDERMESH_TOOLS_DIR") {
        let candidate = PathBuf::from(dir).join(name);
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .or_else(|| missing(&format!("the `{name}` tool")))
}

/// A database that exists for one test: a temporary SQLite directory, or a
/// fresh PostgreSQL database that is dropped when this value is.
pub struct TestDatabase {
    settings: DatabaseSettings,
    _sqlite_dir: Option<tempfile::TempDir>,
    postgres: Option<PostgresDatabase>,
}

struct PostgresDatabase {
    admin_url: String,
    name: String,
}

impl TestDatabase {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            settings: DatabaseSettings::sqlite(dir.path()),
            _sqlite_dir: Some(dir),
            postgres: None,
        }
    }

    /// A fresh database on the server at `DATABASE_URL`; None (skip) when it
    /// is unset, unless everything is required.
    pub async fn postgres() -> Option<Self> {
        let Ok(admin_url) = std::env::var("DATABASE_URL") else {
            return missing("PostgreSQL (set DATABASE_URL)");
        };
        Some(Self::postgres_on(&admin_url).await)
    }

    /// A fresh database on the server at `admin_url`, dropped with this value.
    pub async fn postgres_on(admin_url: &str) -> Self {
        let admin_url = admin_url.to_owned();
        let name = format!("ordermesh_test_{}", uuid::Uuid::now_v7().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("connecting to DATABASE_URL: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.ok();
        Self {
            settings: DatabaseSettings::postgres(with_database(&admin_url, &name)),
            _sqlite_dir: None,
            postgres: Some(PostgresDatabase { admin_url, name }),
        }
    }

    pub fn settings(&self) -> &DatabaseSettings {
        &self.settings
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    /// The SQLite data directory, or None on PostgreSQL.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self._sqlite_dir.as_ref().map(|dir| dir.path())
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop cannot await, and may run inside a runtime: use a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::query(&statement).execute(&mut admin).await?;
                admin.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "x"),
            "postgres://h:5432/x"
        );
    }

    #[tokio::test]
    async fn postgres_database_is_created_and_dropped() {
        let Some(db) = TestDatabase::postgres().await else {
            return;
        };
        let url = db.settings().database_url.clone().unwrap();
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(one, 1);
        conn.close().await.unwrap();
        drop(db);
        assert!(sqlx::PgConnection::connect(&url).await.is_err());
    }
}
