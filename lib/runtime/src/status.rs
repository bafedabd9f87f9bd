//! Building and reading gRPC statuses the same way in every service: a
//! message a person can act on, plus a machine-readable `google.rpc.ErrorInfo`
//! reason that callers (the order saga, the gateway) branch on.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The ErrorInfo domain of every ordermesh error.
pub const ERROR_DOMAIN: &str = "ordermesh.dev";

/// A status with `message` for people and `reason` (SCREAMING_SNAKE_CASE)
/// for programs, with optional key/value metadata.
pub fn with_reason(
    code: Code,
    reason: &str,
    message: impl Into<String>,
    metadata: impl IntoIterator<Item = (String, String)>,
) -> Status {
    let details = ErrorDetails::with_error_info(
        reason,
        ERROR_DOMAIN,
        metadata
            .into_iter()
            .collect::<std::collections::HashMap<_, _>>(),
    );
    Status::with_error_details(code, message, details)
}

/// The ErrorInfo reason of `status`, if it carries one.
pub fn reason(status: &Status) -> Option<String> {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .filter(|reason| !reason.is_empty())
}

/// A status for a failed database call: UNAVAILABLE when the database cannot
/// be reached (callers may retry), INTERNAL otherwise. The cause goes to the
/// log with `context`, never to the caller.
pub fn database_error(context: &str, error: &sqlx::Error) -> Status {
    let unreachable = matches!(
        error,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_)
    ) || is_connection_failure(error);
    if unreachable {
        tracing::warn!(%error, context, "database unavailable");
        Status::unavailable("the service's database is unavailable; retry later")
    } else {
        tracing::error!(%error, context, "database error");
        Status::internal("internal error; it has been logged")
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
    fn reason_round_trips() {
        let status = with_reason(
            Code::FailedPrecondition,
            "OUT_OF_STOCK",
            "not enough stock",
            [("product_id".to_owned(), "sku-1".to_owned())],
        );
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "not enough stock");
        assert_eq!(reason(&status).as_deref(), Some("OUT_OF_STOCK"));
        assert_eq!(reason(&Status::internal("x")), None);
    }

    #[test]
    fn unreachable_database_is_unavailable() {
        assert_eq!(
            database_error("t", &sqlx::Error::PoolTimedOut).code(),
            Code::Unavailable
        );
        assert_eq!(
            database_error("t", &sqlx::Error::RowNotFound).code(),
            Code::Internal
        );
    }
}
