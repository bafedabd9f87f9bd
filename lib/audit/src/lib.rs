//! The invariant audit: after any fault, every order must be settled and the
//! three services must agree about it. [`load`] reads a [`Snapshot`] of the
//! order, payment and inventory data (read-only SQL, each service's own
//! database); [`check`] is the rules, plain Rust over that snapshot.
//!
//! Run it as `ordermesh audit` (same database flags as the services).

mod load;
mod rules;

pub use load::load;
pub use rules::{Problem, Report, check};

/// The report as `ordermesh audit` prints it: JSON, or a line per figure
/// and per problem.
pub fn render(report: &Report, json: bool) -> anyhow::Result<String> {
    if json {
        return Ok(serde_json::to_string_pretty(report)?);
    }
    let mut text = format!(
        "orders: {:?}\npayments: {:?}\nreservations: {:?}\nsold: {:?}\n",
        report.orders, report.payments, report.reservations, report.sold
    );
    for problem in &report.problems {
        text.push_str(&format!("PROBLEM {}\n", serde_json::to_string(problem)?));
    }
    if report.is_clean() {
        text.push_str("audit: clean\n");
    }
    Ok(text)
}

use std::collections::BTreeMap;

/// product id → quantity.
pub type Lines = BTreeMap<String, i64>;

#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub orders: Vec<OrderRow>,
    pub payments: Vec<PaymentRow>,
    pub reservations: Vec<ReservationRow>,
    pub products: Vec<ProductRow>,
}

#[derive(Clone, Debug)]
pub struct OrderRow {
    pub order_id: String,
    /// PENDING, CONFIRMED, FAILED, CANCELLED.
    pub status: String,
    /// reserve, charge, commit, compensate, done.
    pub step: String,
    pub total_minor_units: i64,
    pub lines: Lines,
}

#[derive(Clone, Debug)]
pub struct PaymentRow {
    pub order_id: String,
    /// SUCCEEDED, DECLINED, REFUNDED, VOIDED.
    pub status: String,
    pub amount_minor_units: i64,
}

#[derive(Clone, Debug)]
pub struct ReservationRow {
    /// The order id.
    pub reservation_id: String,
    /// RESERVED, COMMITTED, RELEASED, EXPIRED.
    pub status: String,
    pub lines: Lines,
}

#[derive(Clone, Debug)]
pub struct ProductRow {
    pub product_id: String,
    pub available: i64,
    /// Seeded stock plus every adjustment.
    pub stock_total: i64,
}
