//! A row's columns by name, the same for sqlx's rows and rusqlite's, so each
//! store decodes its rows once whichever way they were read.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::sqlite_reads::NamedRow;

pub trait Columns {
    fn text(&self, column: &str) -> Result<String, sqlx::Error>;
    fn text_or_null(&self, column: &str) -> Result<Option<String>, sqlx::Error>;
    fn int(&self, column: &str) -> Result<i64, sqlx::Error>;
}

impl Columns for AnyRow {
    fn text(&self, column: &str) -> Result<String, sqlx::Error> {
        self.try_get(column)
    }

    fn text_or_null(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
        self.try_get(column)
    }

    fn int(&self, column: &str) -> Result<i64, sqlx::Error> {
        self.try_get(column)
    }
}

impl Columns for NamedRow<'_, '_> {
    fn text(&self, column: &str) -> Result<String, sqlx::Error> {
        self.get(column)
    }

    fn text_or_null(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
        self.get(column)
    }

    fn int(&self, column: &str) -> Result<i64, sqlx::Error> {
        self.get(column)
    }
}

/// A column that does not hold what its decoder expects.
pub fn decode_error(
    column: &str,
    error: impl std::error::Error + Send + Sync + 'static,
) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: Box::new(error),
    }
}
