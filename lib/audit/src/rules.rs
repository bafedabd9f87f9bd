//! The invariants, as plain functions over a [`Snapshot`].

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::{Lines, Snapshot};

/// One broken invariant, naming what it is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// PENDING, or a compensation still outstanding.
    Unsettled {
        order_id: String,
        status: String,
        step: String,
    },
    /// A confirmed order without exactly its charge.
    ConfirmedWithoutCharge {
        order_id: String,
        payment: Option<String>,
    },
    ChargeAmountDiffers {
        order_id: String,
        order_total: i64,
        charged: i64,
    },
    ConfirmedWithoutCommit {
        order_id: String,
        reservation: Option<String>,
    },
    CommittedLinesDiffer {
        order_id: String,
    },
    /// A failed or cancelled order whose customer still pays.
    ChargeNotReturned {
        order_id: String,
        status: String,
        payment: String,
    },
    /// A failed or cancelled order still holding or selling stock.
    StockNotReturned {
        order_id: String,
        status: String,
        reservation: String,
    },
    /// Money or stock taken for an order the order service does not know.
    OrphanCharge {
        order_id: String,
    },
    OrphanReservation {
        reservation_id: String,
        status: String,
    },
    /// stock_total ≠ available + held + sold.
    StockMismatch {
        product_id: String,
        stock_total: i64,
        available: i64,
        held: i64,
        sold: i64,
    },
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub orders: BTreeMap<String, usize>,
    pub payments: BTreeMap<String, usize>,
    pub reservations: BTreeMap<String, usize>,
    /// Units sold (committed reservations) per product.
    pub sold: BTreeMap<String, i64>,
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

pub fn check(snapshot: &Snapshot) -> Report {
    let mut report = Report::default();
    let payments: HashMap<&str, _> = snapshot
        .payments
        .iter()
        .map(|p| (p.order_id.as_str(), p))
        .collect();
    let reservations: HashMap<&str, _> = snapshot
        .reservations
        .iter()
        .map(|r| (r.reservation_id.as_str(), r))
        .collect();
    let problems = &mut report.problems;

    for order in &snapshot.orders {
        *report.orders.entry(order.status.clone()).or_default() += 1;
        let id = order.order_id.clone();
        if order.status == "PENDING" || order.step != "done" {
            problems.push(Problem::Unsettled {
                order_id: id,
                status: order.status.clone(),
                step: order.step.clone(),
            });
            continue;
        }
        let payment = payments.get(order.order_id.as_str());
        let reservation = reservations.get(order.order_id.as_str());
        match order.status.as_str() {
            "CONFIRMED" => {
                match payment {
                    Some(p) if p.status == "SUCCEEDED" => {
                        if p.amount_minor_units != order.total_minor_units {
                            problems.push(Problem::ChargeAmountDiffers {
                                order_id: id.clone(),
                                order_total: order.total_minor_units,
                                charged: p.amount_minor_units,
                            });
                        }
                    }
                    other => problems.push(Problem::ConfirmedWithoutCharge {
                        order_id: id.clone(),
                        payment: other.map(|p| p.status.clone()),
                    }),
                }
                match reservation {
                    Some(r) if r.status == "COMMITTED" => {
                        if r.lines != order.lines {
                            problems.push(Problem::CommittedLinesDiffer { order_id: id });
                        }
                    }
                    other => problems.push(Problem::ConfirmedWithoutCommit {
                        order_id: id,
                        reservation: other.map(|r| r.status.clone()),
                    }),
                }
            }
            status => {
                if let Some(p) = payment.filter(|p| p.status == "SUCCEEDED") {
                    problems.push(Problem::ChargeNotReturned {
                        order_id: id.clone(),
                        status: status.to_owned(),
                        payment: p.status.clone(),
                    });
                }
                if let Some(r) = reservation.filter(|r| holds_stock(&r.status)) {
                    problems.push(Problem::StockNotReturned {
                        order_id: id,
                        status: status.to_owned(),
                        reservation: r.status.clone(),
                    });
                }
            }
        }
    }

    let known: std::collections::HashSet<&str> = snapshot
        .orders
        .iter()
        .map(|o| o.order_id.as_str())
        .collect();
    for payment in &snapshot.payments {
        *report.payments.entry(payment.status.clone()).or_default() += 1;
        if payment.status == "SUCCEEDED" && !known.contains(payment.order_id.as_str()) {
            problems.push(Problem::OrphanCharge {
                order_id: payment.order_id.clone(),
            });
        }
    }

    let mut held: HashMap<&str, i64> = HashMap::new();
    let mut sold: HashMap<&str, i64> = HashMap::new();
    for reservation in &snapshot.reservations {
        *report
            .reservations
            .entry(reservation.status.clone())
            .or_default() += 1;
        let bucket = match reservation.status.as_str() {
            "RESERVED" => &mut held,
            "COMMITTED" => &mut sold,
            _ => continue,
        };
        add(bucket, &reservation.lines);
        if !known.contains(reservation.reservation_id.as_str()) {
            problems.push(Problem::OrphanReservation {
                reservation_id: reservation.reservation_id.clone(),
                status: reservation.status.clone(),
            });
        }
    }
    for product in &snapshot.products {
        let id = product.product_id.as_str();
        let (held, sold) = (
            held.get(id).copied().unwrap_or(0),
            sold.get(id).copied().unwrap_or(0),
        );
        report.sold.insert(product.product_id.clone(), sold);
        if product.stock_total != product.available + held + sold {
            problems.push(Problem::StockMismatch {
                product_id: product.product_id.clone(),
                stock_total: product.stock_total,
                available: product.available,
                held,
                sold,
            });
        }
    }
    report
}

fn holds_stock(status: &str) -> bool {
    matches!(status, "RESERVED" | "COMMITTED")
}

fn add<'a>(totals: &mut HashMap<&'a str, i64>, lines: &'a Lines) {
    for (product, quantity) in lines {
        *totals.entry(product.as_str()).or_default() += quantity;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OrderRow, PaymentRow, ProductRow, ReservationRow};

    fn lines(quantity: i64) -> Lines {
        [("sku-mug".to_owned(), quantity)].into()
    }

    fn order(id: &str, status: &str) -> OrderRow {
        OrderRow {
            order_id: id.into(),
            status: status.into(),
            step: "done".into(),
            total_minor_units: 1200,
            lines: lines(1),
        }
    }

    fn payment(id: &str, status: &str) -> PaymentRow {
        PaymentRow {
            order_id: id.into(),
            status: status.into(),
            amount_minor_units: 1200,
        }
    }

    fn reservation(id: &str, status: &str) -> ReservationRow {
        ReservationRow {
            reservation_id: id.into(),
            status: status.into(),
            lines: lines(1),
        }
    }

    fn mug(available: i64, stock_total: i64) -> ProductRow {
        ProductRow {
            product_id: "sku-mug".into(),
            available,
            stock_total,
        }
    }

    /// A confirmed order, a declined one and a cancelled one, all consistent.
    fn consistent() -> Snapshot {
        Snapshot {
            orders: vec![
                order("a", "CONFIRMED"),
                order("b", "FAILED"),
                order("c", "CANCELLED"),
            ],
            payments: vec![
                payment("a", "SUCCEEDED"),
                payment("b", "DECLINED"),
                payment("c", "REFUNDED"),
            ],
            reservations: vec![
                reservation("a", "COMMITTED"),
                reservation("b", "RELEASED"),
                reservation("c", "RELEASED"),
            ],
            products: vec![mug(9, 10)],
        }
    }

    #[test]
    fn a_consistent_snapshot_is_clean() {
        let report = check(&consistent());
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!(report.sold["sku-mug"], 1);
        assert_eq!(report.orders["CONFIRMED"], 1);
    }

    #[test]
    fn each_broken_invariant_is_reported() {
        type Breakage = fn(&mut Snapshot);
        let cases: Vec<(Breakage, &str)> = vec![
            (|s| s.orders[0].status = "PENDING".into(), "unsettled"),
            (|s| s.orders[1].step = "compensate".into(), "unsettled"),
            (
                |s| s.payments[0].status = "DECLINED".into(),
                "confirmed_without_charge",
            ),
            (
                |s| {
                    s.payments.remove(0);
                },
                "confirmed_without_charge",
            ),
            (
                |s| s.payments[0].amount_minor_units = 1,
                "charge_amount_differs",
            ),
            (
                |s| s.reservations[0].status = "RESERVED".into(),
                "confirmed_without_commit",
            ),
            (
                |s| s.reservations[0].lines = lines(2),
                "committed_lines_differ",
            ),
            (
                |s| s.payments[1].status = "SUCCEEDED".into(),
                "charge_not_returned",
            ),
            (
                |s| s.payments[2].status = "SUCCEEDED".into(),
                "charge_not_returned",
            ),
            (
                |s| s.reservations[1].status = "RESERVED".into(),
                "stock_not_returned",
            ),
            (
                |s| s.payments.push(payment("ghost", "SUCCEEDED")),
                "orphan_charge",
            ),
            (
                |s| s.reservations.push(reservation("ghost", "RESERVED")),
                "orphan_reservation",
            ),
            (|s| s.products[0].available = 10, "stock_mismatch"),
        ];
        for (breakage, kind) in cases {
            let mut snapshot = consistent();
            breakage(&mut snapshot);
            let report = check(&snapshot);
            let kinds: Vec<String> = report
                .problems
                .iter()
                .map(|p| {
                    serde_json::to_value(p).unwrap()["kind"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect();
            assert!(
                kinds.iter().any(|k| k == kind),
                "expected {kind}, got {kinds:?}"
            );
        }
    }
}
