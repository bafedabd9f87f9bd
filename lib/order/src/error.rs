//! Everything that can go wrong for a caller of the order service, each
//! describing itself (kind, reason, facts) for the one status mapping.

use ordermesh_domain::{Describe, ErrorDescription, ErrorKind, MoneyError, reasons};
use ordermesh_identity::AuthError;
use ordermesh_storage::StoreError;

use crate::domain::saga::CancelError;
use crate::domain::{Forbidden, RequestError};

/// Everything a caller can get wrong, or that can go wrong for them.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error(transparent)]
    InvalidRequest(#[from] RequestError),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("unknown product(s): {}", .0.join(", "))]
    UnknownProducts(Vec<String>),
    #[error("cannot price the order: {0}")]
    Pricing(#[from] MoneyError),
    #[error("order {0} not found")]
    NotFound(String),
    #[error(
        "idempotency key already used for a different request (order {order_id}); \
         use a new key for a new order"
    )]
    IdempotencyKeyReused { order_id: String },
    #[error("order {order_id} cannot be cancelled: {reason}")]
    NotCancellable {
        order_id: String,
        reason: CancelError,
    },
    /// Pricing failed: what the inventory said.
    #[error("the inventory service could not price the order; nothing was ordered")]
    Inventory(ErrorDescription),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No valid token: who is calling is not known.
    #[error("{}", .0.description())]
    Unauthenticated(#[from] AuthError),
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
}

impl Describe for OrderError {
    fn describe(&self) -> ErrorDescription {
        let described = |kind| ErrorDescription::new(kind, self.to_string());
        match self {
            OrderError::InvalidRequest(_)
            | OrderError::InvalidArgument(_)
            | OrderError::Pricing(_) => described(ErrorKind::InvalidArgument),
            OrderError::UnknownProducts(ids) => described(ErrorKind::NotFound)
                .with_reason(reasons::PRODUCT_NOT_FOUND)
                .with("product_ids", ids.join(",")),
            OrderError::NotFound(order_id) => described(ErrorKind::NotFound)
                .with_reason(reasons::ORDER_NOT_FOUND)
                .with("order_id", order_id),
            OrderError::IdempotencyKeyReused { order_id } => described(ErrorKind::AlreadyExists)
                .with_reason(reasons::IDEMPOTENCY_KEY_REUSED)
                .with("order_id", order_id),
            OrderError::NotCancellable { order_id, .. } => described(ErrorKind::FailedPrecondition)
                .with_reason(reasons::ORDER_NOT_CANCELLABLE)
                .with("order_id", order_id),
            // The caller's own deadline or cancel passes through as it is;
            // anything else the inventory said is an outage of pricing.
            OrderError::Inventory(upstream) => match upstream.kind {
                ErrorKind::DeadlineExceeded => ErrorDescription::new(
                    ErrorKind::DeadlineExceeded,
                    "the deadline passed while pricing the order; nothing was ordered",
                ),
                ErrorKind::Cancelled => ErrorDescription::new(
                    ErrorKind::Cancelled,
                    "the request was cancelled; nothing was ordered",
                ),
                _ => described(ErrorKind::Unavailable),
            },
            OrderError::Store(error) => error.describe(),
            // The issuer's keys could not be had: our fault, try again.
            OrderError::Unauthenticated(refused) if refused.is_unavailable() => {
                described(ErrorKind::Unavailable)
            }
            OrderError::Unauthenticated(_) => described(ErrorKind::Unauthenticated),
            OrderError::Forbidden(_) => described(ErrorKind::PermissionDenied),
        }
    }
}

pub(crate) fn store_error(context: &'static str) -> impl Fn(sqlx::Error) -> OrderError {
    move |source| StoreError { context, source }.into()
}
