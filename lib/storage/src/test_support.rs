//! What the crate's tests of writers share.

use sqlx::migrate::Migrator;

use crate::{Database, DatabaseSettings};

/// A SQLite file in `dir` with one table, `t (k TEXT PRIMARY KEY, v BIGINT)`.
pub(crate) async fn scratch_database(dir: &tempfile::TempDir) -> Database {
    let db = Database::open(
        &DatabaseSettings::sqlite(dir.path()),
        "scratch",
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
