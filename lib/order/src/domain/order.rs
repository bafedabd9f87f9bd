//! An order as the service sees it.

use std::fmt;
use std::str::FromStr;

use ordermesh_domain::Money;

/// What a customer sees of an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Failed,
    Cancelled,
}

impl OrderStatus {
    pub fn is_terminal(self) -> bool {
        !matches!(self, OrderStatus::Pending)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::Failed => "FAILED",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }
}

/// Where the saga stands. `Compensate` undoes whatever the flags on the
/// saga state say is left to undo; it may run after the customer-visible
/// status is already terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Reserve,
    Charge,
    Commit,
    Compensate,
    Done,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Reserve => "reserve",
            Step::Charge => "charge",
            Step::Commit => "commit",
            Step::Compensate => "compensate",
            Step::Done => "done",
        }
    }

    /// Whether the saga may still send the charge from here (so the order
    /// must keep the payment token).
    pub fn may_charge(self) -> bool {
        matches!(self, Step::Reserve | Step::Charge)
    }
}

/// Why an order failed, as the stable code clients see in `failure_reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    OutOfStock,
    ProductUnavailable,
    CardDeclined,
    InsufficientFunds,
    PaymentDeclined,
    PaymentProcessingError,
    PaymentUnavailable,
    PaymentRejected,
    InventoryUnavailable,
    InventoryRejected,
    ReservationExpired,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::OutOfStock => "OUT_OF_STOCK",
            FailureReason::ProductUnavailable => "PRODUCT_UNAVAILABLE",
            FailureReason::CardDeclined => "CARD_DECLINED",
            FailureReason::InsufficientFunds => "INSUFFICIENT_FUNDS",
            FailureReason::PaymentDeclined => "PAYMENT_DECLINED",
            FailureReason::PaymentProcessingError => "PAYMENT_PROCESSING_ERROR",
            FailureReason::PaymentUnavailable => "PAYMENT_UNAVAILABLE",
            FailureReason::PaymentRejected => "PAYMENT_REJECTED",
            FailureReason::InventoryUnavailable => "INVENTORY_UNAVAILABLE",
            FailureReason::InventoryRejected => "INVENTORY_REJECTED",
            FailureReason::ReservationExpired => "RESERVATION_EXPIRED",
        }
    }

    /// The reason for a payment processor's decline code.
    pub fn from_decline(decline_reason: &str) -> Self {
        match decline_reason {
            "card_declined" => FailureReason::CardDeclined,
            "insufficient_funds" => FailureReason::InsufficientFunds,
            _ => FailureReason::PaymentDeclined,
        }
    }
}

const ALL_REASONS: [FailureReason; 11] = [
    FailureReason::OutOfStock,
    FailureReason::ProductUnavailable,
    FailureReason::CardDeclined,
    FailureReason::InsufficientFunds,
    FailureReason::PaymentDeclined,
    FailureReason::PaymentProcessingError,
    FailureReason::PaymentUnavailable,
    FailureReason::PaymentRejected,
    FailureReason::InventoryUnavailable,
    FailureReason::InventoryRejected,
    FailureReason::ReservationExpired,
];

/// A stored value the code does not know: a newer version wrote it, or the
/// row was edited by hand.
#[derive(Debug, thiserror::Error)]
#[error("unknown {kind} {value:?} in the order store")]
pub struct UnknownValue {
    kind: &'static str,
    value: String,
}

impl FromStr for OrderStatus {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            OrderStatus::Pending,
            OrderStatus::Confirmed,
            OrderStatus::Failed,
            OrderStatus::Cancelled,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
        .ok_or_else(|| UnknownValue {
            kind: "status",
            value: s.to_owned(),
        })
    }
}

impl FromStr for Step {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Step::Reserve,
            Step::Charge,
            Step::Commit,
            Step::Compensate,
            Step::Done,
        ]
        .into_iter()
        .find(|step| step.as_str() == s)
        .ok_or_else(|| UnknownValue {
            kind: "step",
            value: s.to_owned(),
        })
    }
}

impl FromStr for FailureReason {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_REASONS
            .into_iter()
            .find(|reason| reason.as_str() == s)
            .ok_or_else(|| UnknownValue {
                kind: "failure reason",
                value: s.to_owned(),
            })
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of an order, priced when the order was placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderLine {
    pub product_id: String,
    pub quantity: i32,
    pub unit_price: Money,
}

/// An order with everything a client may see of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderView {
    pub order_id: String,
    pub customer_id: String,
    pub lines: Vec<OrderLine>,
    pub total: Money,
    pub status: OrderStatus,
    pub failure_reason: Option<FailureReason>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// Grows by one with every stored change; watchers use it to skip repeats.
    pub version: i64,
}

/// Where an order came from, for `orders_created_total{origin}`: two values,
/// so the label stays bounded. Synthetic orders are the rollout's own (the
/// smoke test's and the load test's customers, whose ids begin with
/// [`SYNTHETIC_CUSTOMER_PREFIX`]); the canary's business gate counts only
/// the others (k8s/components/flagger/metric-templates.yaml).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Customer,
    Synthetic,
}

/// Customer ids of synthetic traffic begin so.
pub const SYNTHETIC_CUSTOMER_PREFIX: &str = "synthetic-";

impl Origin {
    pub fn of(customer_id: &str) -> Self {
        if customer_id.starts_with(SYNTHETIC_CUSTOMER_PREFIX) {
            Origin::Synthetic
        } else {
            Origin::Customer
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Customer => "customer",
            Origin::Synthetic => "synthetic",
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn synthetic_customers_are_told_apart() {
        assert_eq!(Origin::of("synthetic-load-7"), Origin::Synthetic);
        assert_eq!(Origin::of("synthetic-smoke"), Origin::Synthetic);
        assert_eq!(Origin::of("alice"), Origin::Customer);
        assert_eq!(Origin::of("a-synthetic-x"), Origin::Customer);
        assert_eq!(Origin::Synthetic.as_str(), "synthetic");
    }

    use super::*;

    #[test]
    fn names_round_trip() {
        for reason in ALL_REASONS {
            assert_eq!(reason.as_str().parse::<FailureReason>().unwrap(), reason);
        }
        for step in [
            Step::Reserve,
            Step::Charge,
            Step::Commit,
            Step::Compensate,
            Step::Done,
        ] {
            assert_eq!(step.as_str().parse::<Step>().unwrap(), step);
        }
        assert!("BOGUS".parse::<OrderStatus>().is_err());
    }

    #[test]
    fn decline_codes_map_to_reasons() {
        assert_eq!(
            FailureReason::from_decline("insufficient_funds"),
            FailureReason::InsufficientFunds
        );
        assert_eq!(
            FailureReason::from_decline("card_declined"),
            FailureReason::CardDeclined
        );
        assert_eq!(
            FailureReason::from_decline("do_not_honor"),
            FailureReason::PaymentDeclined
        );
    }
}
