//! Reads that run the same on both backends and skip sqlx's pool where they
//! can: the one place that chooses between the caller's thread (SQLite in a
//! file, see [`crate::sqlite_reads`]) and the pool.

use crate::sqlite_reads::query_each;
use crate::transaction::bind;
use crate::{Columns, Database};

/// A value bound to `$1`, `$2`, … of a portable statement.
#[derive(Clone, Copy, Debug)]
pub enum Param<'a> {
    Text(&'a str),
    /// Text or NULL.
    OptText(Option<&'a str>),
    Int(i64),
    Blob(&'a [u8]),
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Param::Text(text) => text.to_sql(),
            Param::OptText(text) => text.to_sql(),
            Param::Int(int) => int.to_sql(),
            Param::Blob(bytes) => bytes.to_sql(),
        }
    }
}

impl Database {
    /// Runs the read `sql` with `params`, folding each row into a fresh `A`
    /// with `push`. On SQLite in a file it runs on this thread when it can
    /// (a read of a few cached rows costs less than one hand-off to sqlx's
    /// connection thread); otherwise, or if that fails, through the pool,
    /// which then gives the authoritative answer.
    pub async fn query_rows<A: Default>(
        &self,
        sql: &str,
        params: &[Param<'_>],
        mut push: impl FnMut(&mut A, &dyn Columns) -> Result<(), sqlx::Error>,
    ) -> Result<A, sqlx::Error> {
        if let Some(reads) = &self.reads
            && let Some(rows) = reads.read(|connection| {
                let mut rows = A::default();
                query_each(connection, sql, params, |row| Ok(push(&mut rows, row)?))?;
                Ok(rows)
            })
        {
            return Ok(rows);
        }
        let mut rows = A::default();
        for row in &bind(sqlx::query(sql), params).fetch_all(&self.pool).await? {
            push(&mut rows, row)?;
        }
        Ok(rows)
    }

    /// Reads served on the caller's thread so far (always 0 on PostgreSQL):
    /// lets tests see that path run rather than its pool fallback.
    pub fn reads_on_caller_thread(&self) -> u64 {
        self.reads.as_ref().map_or(0, |reads| reads.served())
    }
}

/// Appends `rows` rows of `width` numbered parameters to a `VALUES` list,
/// `($1, $2), ($3, $4)`: one statement for many rows, where each statement
/// is a round trip (PostgreSQL).
pub fn push_value_rows(sql: &mut String, rows: usize, width: usize) {
    use std::fmt::Write as _;
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..width {
            if column > 0 {
                sql.push_str(", ");
            }
            // Writing to a String cannot fail.
            let _ = write!(sql, "${}", row * width + column + 1);
        }
        sql.push(')');
    }
}

#[cfg(test)]
mod tests {
    use super::push_value_rows;

    #[test]
    fn value_rows_are_numbered_on_from_one() {
        let mut sql = String::from("VALUES ");
        push_value_rows(&mut sql, 2, 3);
        assert_eq!(sql, "VALUES ($1, $2, $3), ($4, $5, $6)");
        let mut one = String::new();
        push_value_rows(&mut one, 1, 1);
        assert_eq!(one, "($1)");
    }
}
