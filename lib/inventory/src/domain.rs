//! The inventory's rules in plain Rust: what a valid reservation is, and
//! what a repeated call means.

use std::collections::HashSet;

use ordermesh_domain::Money;
use ordermesh_domain::limits::{MAX_ITEMS, MAX_QUANTITY, check_id};
use ordermesh_domain::{Describe, ErrorDescription, ErrorKind, reasons};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Product {
    pub product_id: String,
    pub name: String,
    pub price: Money,
    pub available: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReservationStatus {
    Reserved,
    Committed,
    Released,
    Expired,
}

impl ReservationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Reserved => "RESERVED",
            ReservationStatus::Committed => "COMMITTED",
            ReservationStatus::Released => "RELEASED",
            ReservationStatus::Expired => "EXPIRED",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            ReservationStatus::Reserved,
            ReservationStatus::Committed,
            ReservationStatus::Released,
            ReservationStatus::Expired,
        ]
        .into_iter()
        .find(|status| status.as_str() == value)
    }

    /// Whether the reservation still holds stock (reserved or sold).
    pub fn holds_stock(self) -> bool {
        matches!(
            self,
            ReservationStatus::Reserved | ReservationStatus::Committed
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservedItem {
    pub product_id: String,
    pub quantity: i32,
    pub unit_price: Money,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub reservation_id: String,
    pub status: ReservationStatus,
    pub items: Vec<ReservedItem>,
    pub expires_at_ms: i64,
}

/// A reserve request that passed every check; items sorted by product id,
/// the order in which rows are locked, so concurrent reservations never
/// deadlock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReserveRequest {
    pub reservation_id: String,
    pub items: Vec<(String, i32)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InventoryError {
    #[error("{0}")]
    Invalid(String),
    #[error("product {0} not found")]
    ProductNotFound(String),
    #[error("out of stock: {product_id} (requested {requested}, available {available})")]
    OutOfStock {
        product_id: String,
        requested: i32,
        available: i64,
    },
    #[error("reservation {0} already exists with different items")]
    ReservationConflict(String),
    #[error("reservation {reservation_id} was {status}; reserve again under a new id")]
    ReservationReleased {
        reservation_id: String,
        status: &'static str,
    },
    #[error("reservation {0} not found")]
    ReservationNotFound(String),
    #[error("cannot remove {removing} units of {product_id}: only {available} available")]
    StockNegative {
        product_id: String,
        available: i64,
        removing: i64,
    },
    #[error(
        "a newer saga step of {reservation_id} was seen (this one's fencing number: {sent:?}); its sender lost the order's lease"
    )]
    StaleStep {
        reservation_id: String,
        sent: Option<i64>,
    },
    #[error(
        "stock of {product_id} would reach {total} units counting those reserved and sold \
         (now {counted}, adding {adding}); at most {limit} are kept",
        total = counted.saturating_add(*adding)
    )]
    StockOverflow {
        product_id: String,
        counted: i64,
        adding: i64,
        limit: i64,
    },
}

impl Describe for InventoryError {
    fn describe(&self) -> ErrorDescription {
        let described = |kind| ErrorDescription::new(kind, self.to_string());
        match self {
            InventoryError::Invalid(_) => described(ErrorKind::InvalidArgument),
            InventoryError::ProductNotFound(product_id) => described(ErrorKind::NotFound)
                .with_reason(reasons::PRODUCT_NOT_FOUND)
                .with("product_id", product_id),
            InventoryError::OutOfStock {
                product_id,
                requested,
                available,
            } => described(ErrorKind::FailedPrecondition)
                .with_reason(reasons::OUT_OF_STOCK)
                .with("product_id", product_id)
                .with("requested", requested.to_string())
                .with("available", available.to_string()),
            InventoryError::ReservationConflict(reservation_id) => {
                described(ErrorKind::AlreadyExists)
                    .with_reason(reasons::RESERVATION_CONFLICT)
                    .with("reservation_id", reservation_id)
            }
            InventoryError::ReservationReleased { reservation_id, .. } => {
                described(ErrorKind::FailedPrecondition)
                    .with_reason(reasons::RESERVATION_RELEASED)
                    .with("reservation_id", reservation_id)
            }
            InventoryError::ReservationNotFound(reservation_id) => described(ErrorKind::NotFound)
                .with_reason(reasons::RESERVATION_NOT_FOUND)
                .with("reservation_id", reservation_id),
            InventoryError::StockNegative { product_id, .. } => {
                described(ErrorKind::FailedPrecondition)
                    .with_reason(reasons::STOCK_NEGATIVE)
                    .with("product_id", product_id)
            }
            InventoryError::StaleStep { reservation_id, .. } => described(ErrorKind::Aborted)
                .with_reason(reasons::STALE_SAGA_STEP)
                .with("reservation_id", reservation_id),
            InventoryError::StockOverflow { product_id, .. } => described(ErrorKind::OutOfRange)
                .with_reason(reasons::STOCK_OVERFLOW)
                .with("product_id", product_id),
        }
    }
}

impl ReserveRequest {
    pub fn parse(
        reservation_id: String,
        items: Vec<(String, i32)>,
    ) -> Result<Self, InventoryError> {
        check_id("reservation_id", &reservation_id).map_err(InventoryError::Invalid)?;
        if items.is_empty() {
            return Err(InventoryError::Invalid(
                "items must hold at least one line".into(),
            ));
        }
        if items.len() > MAX_ITEMS {
            return Err(InventoryError::Invalid(format!(
                "a reservation may hold at most {MAX_ITEMS} lines, got {}",
                items.len()
            )));
        }
        let mut seen = HashSet::new();
        for (index, (product_id, quantity)) in items.iter().enumerate() {
            check_id("product_id", product_id)
                .map_err(|e| InventoryError::Invalid(format!("items[{index}]: {e}")))?;
            if !(1..=MAX_QUANTITY).contains(quantity) {
                return Err(InventoryError::Invalid(format!(
                    "items[{index}].quantity must be between 1 and {MAX_QUANTITY}, got {quantity}"
                )));
            }
            if !seen.insert(product_id.clone()) {
                return Err(InventoryError::Invalid(format!(
                    "product {product_id} appears on more than one line"
                )));
            }
        }
        let mut items = items;
        items.sort();
        Ok(Self {
            reservation_id,
            items,
        })
    }
}

/// What a reserve call for an id that already exists returns: the stored
/// reservation when it is a true replay, an error otherwise.
pub fn replay(
    existing: Reservation,
    request: &ReserveRequest,
) -> Result<Reservation, InventoryError> {
    let mut stored: Vec<(&str, i32)> = existing
        .items
        .iter()
        .map(|item| (item.product_id.as_str(), item.quantity))
        .collect();
    stored.sort();
    let requested: Vec<(&str, i32)> = request
        .items
        .iter()
        .map(|(p, q)| (p.as_str(), *q))
        .collect();
    if stored == requested && existing.status.holds_stock() {
        return Ok(existing);
    }
    if existing.items.is_empty() || !existing.status.holds_stock() {
        // A tombstone, or a reservation already given back.
        return Err(InventoryError::ReservationReleased {
            reservation_id: existing.reservation_id,
            status: existing.status.as_str(),
        });
    }
    Err(InventoryError::ReservationConflict(existing.reservation_id))
}

/// Checks an AdjustStock request.
pub fn check_adjustment(product_id: &str, delta: i32) -> Result<(), InventoryError> {
    check_id("product_id", product_id).map_err(InventoryError::Invalid)?;
    if delta == 0 {
        return Err(InventoryError::Invalid("delta must not be zero".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordermesh_domain::Currency;

    fn items(lines: &[(&str, i32)]) -> Vec<(String, i32)> {
        lines.iter().map(|(p, q)| ((*p).to_owned(), *q)).collect()
    }

    #[test]
    fn requests_are_checked_and_sorted() {
        let request = ReserveRequest::parse("ord_1".into(), items(&[("b", 1), ("a", 2)])).unwrap();
        assert_eq!(request.items, items(&[("a", 2), ("b", 1)]));
        for (bad, hint) in [
            (
                ReserveRequest::parse("".into(), items(&[("a", 1)])),
                "reservation_id",
            ),
            (ReserveRequest::parse("r".into(), vec![]), "at least one"),
            (
                ReserveRequest::parse("r".into(), items(&[("a", 0)])),
                "quantity",
            ),
            (
                ReserveRequest::parse("r".into(), items(&[("a", 1), ("a", 1)])),
                "more than one",
            ),
            (
                ReserveRequest::parse("r".into(), items(&[("a b", 1)])),
                "product_id",
            ),
        ] {
            match bad {
                Err(InventoryError::Invalid(message)) => {
                    assert!(message.contains(hint), "{message}")
                }
                other => panic!("expected Invalid mentioning {hint}, got {other:?}"),
            }
        }
    }

    fn reservation(status: ReservationStatus, lines: &[(&str, i32)]) -> Reservation {
        Reservation {
            reservation_id: "ord_1".into(),
            status,
            items: lines
                .iter()
                .map(|(p, q)| ReservedItem {
                    product_id: (*p).into(),
                    quantity: *q,
                    unit_price: Money::new(Currency::USD, 100),
                })
                .collect(),
            expires_at_ms: 0,
        }
    }

    #[test]
    fn replays_match_items_in_any_order() {
        let request = ReserveRequest::parse("ord_1".into(), items(&[("b", 1), ("a", 2)])).unwrap();
        let stored = reservation(ReservationStatus::Committed, &[("b", 1), ("a", 2)]);
        assert_eq!(replay(stored.clone(), &request), Ok(stored));
        assert_eq!(
            replay(
                reservation(ReservationStatus::Reserved, &[("a", 3)]),
                &request
            ),
            Err(InventoryError::ReservationConflict("ord_1".into()))
        );
        assert!(matches!(
            replay(reservation(ReservationStatus::Released, &[]), &request),
            Err(InventoryError::ReservationReleased {
                status: "RELEASED",
                ..
            })
        ));
        // A replay of a reservation already given back holds nothing: refused.
        for status in [ReservationStatus::Released, ReservationStatus::Expired] {
            assert!(matches!(
                replay(reservation(status, &[("b", 1), ("a", 2)]), &request),
                Err(InventoryError::ReservationReleased { .. })
            ));
        }
    }

    #[test]
    fn adjustments_must_change_something() {
        assert!(check_adjustment("sku", 5).is_ok());
        assert!(check_adjustment("sku", 0).is_err());
        assert!(check_adjustment("", 1).is_err());
    }
}
