//! The checker: the history against the final state, once every fault is
//! undone and every order settled. Plain functions over plain data, so the
//! rules are tested on histories made by hand.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::history::{Kind, Op, Type};

/// An order as the order service's table holds it at the end.
#[derive(Clone, Debug)]
pub struct StoredOrder {
    pub order_id: String,
    pub customer: String,
    pub key: Option<String>,
    /// PENDING, CONFIRMED, FAILED, CANCELLED.
    pub status: String,
}

/// A payment as the payment service's table holds it at the end.
#[derive(Clone, Debug)]
pub struct StoredPayment {
    pub order_id: String,
    /// SUCCEEDED, DECLINED, REFUNDED, VOIDED.
    pub status: String,
}

/// Everything the checker compares the history with.
#[derive(Clone, Debug, Default)]
pub struct Final {
    pub orders: Vec<StoredOrder>,
    pub payments: Vec<StoredPayment>,
    /// Whether `ordermesh audit` is clean, and its problems if not.
    pub audit_clean: bool,
    pub audit_problems: Vec<String>,
    /// Available stock per product before the run and after it.
    pub stock_before: BTreeMap<String, i64>,
    pub stock_after: BTreeMap<String, i64>,
    /// Units sold per product (committed reservations), from the audit.
    pub sold: BTreeMap<String, i64>,
}

/// Whether an order seen as `from` may later be seen as `to`.
fn may_follow(from: &str, to: &str) -> bool {
    from == to
        || matches!(
            (from, to),
            ("PENDING", "CONFIRMED" | "FAILED" | "CANCELLED") | ("CONFIRMED", "CANCELLED")
        )
}

/// Every anomaly: a broken promise, described. Empty when all held.
pub fn anomalies(ops: &[Op], end: &Final) -> Vec<String> {
    let mut found = Vec::new();
    let stored: HashMap<&str, &StoredOrder> = end
        .orders
        .iter()
        .map(|o| (o.order_id.as_str(), o))
        .collect();

    // Every acknowledged order exists exactly once: one stored order per
    // (customer, key), the one every ok of that key named.
    let mut per_key: HashMap<(&str, &str), Vec<&str>> = HashMap::new();
    for order in &end.orders {
        if let Some(key) = &order.key {
            per_key
                .entry((order.customer.as_str(), key.as_str()))
                .or_default()
                .push(order.order_id.as_str());
        }
    }
    let mut invoked: HashSet<(&str, &str)> = HashSet::new();
    let mut acknowledged: HashMap<(&str, &str), &str> = HashMap::new();
    for op in ops.iter().filter(|op| op.kind == Kind::Create) {
        let key = (op.customer.as_str(), op.key.as_str());
        invoked.insert(key);
        if op.kind_type != Type::Ok {
            continue;
        }
        let id = op.order_id.as_deref().unwrap_or_default();
        match acknowledged.insert(key, id) {
            Some(earlier) if earlier != id => found.push(format!(
                "key {key:?} acknowledged as two orders: {earlier} and {id}"
            )),
            _ => {}
        }
    }
    for (key, id) in &acknowledged {
        match per_key.get(key).map(Vec::as_slice) {
            Some([only]) if only == id => {}
            Some([only]) => found.push(format!(
                "key {key:?} acknowledged as {id} but stored as {only}"
            )),
            Some(many) if many.len() > 1 => {
                found.push(format!("key {key:?} stored {} times: {many:?}", many.len()));
            }
            _ => found.push(format!("acknowledged order {id} (key {key:?}) was lost")),
        }
    }
    // ...and nothing exists that no client asked for.
    for order in &end.orders {
        let asked = order
            .key
            .as_deref()
            .is_some_and(|key| invoked.contains(&(order.customer.as_str(), key)));
        if !asked {
            found.push(format!(
                "order {} exists but no client placed it",
                order.order_id
            ));
        }
    }

    // Each order's statuses, as its client saw them, follow the saga's
    // order, and its final state agrees with the last one seen: a CONFIRMED
    // never comes back FAILED, CANCELLED only after a cancel was asked for.
    let mut seen: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut cancel_asked: HashSet<&str> = HashSet::new();
    for op in ops {
        let Some(id) = op.order_id.as_deref() else {
            continue;
        };
        if op.kind == Kind::Cancel && op.kind_type == Type::Invoke {
            cancel_asked.insert(id);
        }
        if op.kind_type == Type::Ok
            && let Some(status) = op.status.as_deref()
        {
            seen.entry(id).or_default().push(status);
        }
    }
    for (id, statuses) in &seen {
        for pair in statuses.windows(2) {
            if !may_follow(pair[0], pair[1]) {
                found.push(format!("order {id} seen {} and then {}", pair[0], pair[1]));
            }
        }
        let last = statuses.last().copied().unwrap_or("PENDING");
        match stored.get(id) {
            Some(order) if !may_follow(last, &order.status) => found.push(format!(
                "order {id} last seen {last} but ended {}",
                order.status
            )),
            Some(_) | None => {}
        }
    }
    for order in &end.orders {
        if order.status == "PENDING" {
            found.push(format!("order {} never settled", order.order_id));
        }
        if order.status == "CANCELLED" && !cancel_asked.contains(order.order_id.as_str()) {
            found.push(format!(
                "order {} CANCELLED though no cancel was asked for",
                order.order_id
            ));
        }
    }

    // No payment without its order, one payment per order, and the money
    // where the order's status says.
    let mut payments: HashMap<&str, Vec<&str>> = HashMap::new();
    for payment in &end.payments {
        payments
            .entry(payment.order_id.as_str())
            .or_default()
            .push(payment.status.as_str());
        if !stored.contains_key(payment.order_id.as_str()) {
            found.push(format!(
                "a {} payment for order {} that does not exist",
                payment.status, payment.order_id
            ));
        }
    }
    for order in &end.orders {
        let of_order = payments
            .get(order.order_id.as_str())
            .cloned()
            .unwrap_or_default();
        if of_order.len() > 1 {
            found.push(format!(
                "order {} paid {} times",
                order.order_id,
                of_order.len()
            ));
        }
        let charged = of_order.iter().filter(|s| **s == "SUCCEEDED").count();
        let expected = usize::from(order.status == "CONFIRMED");
        if charged != expected {
            found.push(format!(
                "{} order {} has {charged} standing charges: {of_order:?}",
                order.status, order.order_id
            ));
        }
    }

    // The audit, and stock plus units sold is the stock at the start.
    if !end.audit_clean {
        found.push(format!(
            "the audit found problems: {:?}",
            end.audit_problems
        ));
    }
    for (product, before) in &end.stock_before {
        let after = end.stock_after.get(product).copied().unwrap_or(0);
        let sold = end.sold.get(product).copied().unwrap_or(0);
        if after + sold != *before {
            found.push(format!(
                "{product}: {after} in stock + {sold} sold != {before} at the start"
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: Kind, kind_type: Type, key: &str, id: Option<&str>, status: Option<&str>) -> Op {
        Op {
            at_ms: 0,
            client: 0,
            kind,
            kind_type,
            customer: "c".to_owned(),
            key: key.to_owned(),
            order_id: id.map(str::to_owned),
            status: status.map(str::to_owned),
            error: None,
        }
    }

    fn stored(id: &str, key: &str, status: &str) -> StoredOrder {
        StoredOrder {
            order_id: id.to_owned(),
            customer: "c".to_owned(),
            key: Some(key.to_owned()),
            status: status.to_owned(),
        }
    }

    fn paid(id: &str, status: &str) -> StoredPayment {
        StoredPayment {
            order_id: id.to_owned(),
            status: status.to_owned(),
        }
    }

    /// k1 placed (a timeout, then acknowledged PENDING, read CONFIRMED),
    /// k2 placed and cancelled.
    fn good() -> (Vec<Op>, Final) {
        let ops = vec![
            op(Kind::Create, Type::Invoke, "k1", None, None),
            op(Kind::Create, Type::Info, "k1", None, None),
            op(Kind::Create, Type::Invoke, "k1", None, None),
            op(Kind::Create, Type::Ok, "k1", Some("o1"), Some("PENDING")),
            op(Kind::Read, Type::Invoke, "o1", Some("o1"), None),
            op(Kind::Read, Type::Ok, "o1", Some("o1"), Some("CONFIRMED")),
            op(Kind::Create, Type::Invoke, "k2", None, None),
            op(Kind::Create, Type::Ok, "k2", Some("o2"), Some("CONFIRMED")),
            op(Kind::Cancel, Type::Invoke, "o2", Some("o2"), None),
            op(Kind::Cancel, Type::Info, "o2", Some("o2"), None),
        ];
        let end = Final {
            orders: vec![
                stored("o1", "k1", "CONFIRMED"),
                stored("o2", "k2", "CANCELLED"),
            ],
            payments: vec![paid("o1", "SUCCEEDED"), paid("o2", "REFUNDED")],
            audit_clean: true,
            stock_before: BTreeMap::from([("p".to_owned(), 10)]),
            stock_after: BTreeMap::from([("p".to_owned(), 9)]),
            sold: BTreeMap::from([("p".to_owned(), 1)]),
            ..Final::default()
        };
        (ops, end)
    }

    #[test]
    fn a_history_that_keeps_every_promise_has_no_anomaly() {
        let (ops, end) = good();
        assert_eq!(anomalies(&ops, &end), Vec::<String>::new());
    }

    #[test]
    fn a_confirmed_order_that_ends_failed_is_an_anomaly() {
        let (ops, mut end) = good();
        end.orders[0].status = "FAILED".to_owned();
        end.payments[0].status = "REFUNDED".to_owned();
        let found = anomalies(&ops, &end);
        assert_eq!(found, ["order o1 last seen CONFIRMED but ended FAILED"]);
    }

    #[test]
    fn an_order_stored_twice_for_one_key_or_lost_is_an_anomaly() {
        let (ops, mut end) = good();
        end.orders.push(stored("o3", "k1", "FAILED"));
        assert!(
            anomalies(&ops, &end)
                .iter()
                .any(|a| a.contains("stored 2 times"))
        );
        end.orders.retain(|o| o.key.as_deref() != Some("k1"));
        end.payments.retain(|p| p.order_id != "o1");
        assert!(anomalies(&ops, &end).iter().any(|a| a.contains("was lost")));
    }

    #[test]
    fn money_without_its_order_or_twice_or_not_refunded_is_an_anomaly() {
        let (ops, mut end) = good();
        end.payments.push(paid("o9", "SUCCEEDED"));
        end.payments[1].status = "SUCCEEDED".to_owned();
        let found = anomalies(&ops, &end);
        assert!(
            found
                .iter()
                .any(|a| a.contains("order o9 that does not exist"))
        );
        assert!(
            found
                .iter()
                .any(|a| a.contains("CANCELLED order o2 has 1 standing"))
        );
    }

    #[test]
    fn a_cancel_nobody_asked_for_and_lost_stock_are_anomalies() {
        let (mut ops, mut end) = good();
        ops.retain(|op| op.kind != Kind::Cancel);
        end.stock_after.insert("p".to_owned(), 8);
        let found = anomalies(&ops, &end);
        assert!(found.iter().any(|a| a.contains("no cancel was asked for")));
        assert!(
            found
                .iter()
                .any(|a| a.contains("8 in stock + 1 sold != 10"))
        );
    }

    #[test]
    fn a_status_going_backwards_is_an_anomaly() {
        let (mut ops, end) = good();
        ops.push(op(Kind::Read, Type::Ok, "o2", Some("o2"), Some("PENDING")));
        let found = anomalies(&ops, &end);
        assert!(
            found
                .iter()
                .any(|a| a.contains("seen CONFIRMED and then PENDING"))
        );
    }
}
