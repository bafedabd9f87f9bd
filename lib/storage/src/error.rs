//! A failed database call, as every service reports it: UNAVAILABLE when
//! the database cannot be reached (callers may retry), INTERNAL otherwise.
//! What failed and why is for the operator's log, not the caller.

use ordermesh_domain::{Describe, ErrorDescription, ErrorKind};

#[derive(Debug, thiserror::Error)]
#[error("the store failed while {context}")]
pub struct StoreError {
    /// What the service was doing, e.g. "storing a new order".
    pub context: &'static str,
    #[source]
    pub source: sqlx::Error,
}

/// Wraps a sqlx error with what the service was doing.
pub fn failed(context: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |source| StoreError { context, source }
}

impl StoreError {
    /// Whether the database could not be reached (rather than refusing).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self.source,
            sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Tls(_)
        ) || is_connection_failure(&self.source)
    }
}

impl Describe for StoreError {
    fn describe(&self) -> ErrorDescription {
        if self.is_unreachable() {
            ErrorDescription::new(
                ErrorKind::Unavailable,
                "the service's database is unavailable; retry later",
            )
        } else {
            ErrorDescription::new(ErrorKind::Internal, "internal error; it has been logged")
        }
    }
}

/// PostgreSQL reports a server going away as a database error with an
/// SQLSTATE of class 08 (connection exception) or 57P01..57P03 (shutdown).
fn is_connection_failure(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_database_is_unavailable() {
        let down = failed("reading")(sqlx::Error::PoolTimedOut);
        assert_eq!(down.describe().kind, ErrorKind::Unavailable);
        let broken = failed("reading")(sqlx::Error::RowNotFound);
        let described = broken.describe();
        assert_eq!(described.kind, ErrorKind::Internal);
        assert!(
            !described.message.contains("reading"),
            "no context to callers"
        );
    }
}
