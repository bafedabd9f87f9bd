//! The orders a workload places: generated from the request's sequence
//! number, so every run sends the same mix, and judged by how they end.

use ordermesh_proto::order::v1::{CreateOrderRequest, OrderItem, OrderStatus};

use crate::stats::Outcome;

/// The catalog the inventory seeds (`lib/inventory/src/catalog.rs`).
pub const PRODUCTS: &[&str] = &[
    "sku-espresso",
    "sku-filter",
    "sku-grinder",
    "sku-kettle",
    "sku-mug",
    "sku-scale",
];

/// A deterministic pseudo-random number for request `seq` (splitmix64's
/// finaliser): a pure function of `seq`, where an RNG would carry state
/// between the concurrent callers.
pub fn mix(seq: u64, salt: u64) -> u64 {
    let mut z = seq
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(salt.wrapping_mul(0xbf58_476d_1ce4_e5b9));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One generated order: who, what, and how they pay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderSpec {
    pub customer: String,
    pub items: Vec<(&'static str, i32)>,
    pub payment: &'static str,
}

/// Request `seq`'s order: one to three distinct products of the whole
/// catalog, one to three of each; 90 % good cards, the rest declined
/// (card_declined, insufficient_funds) or a processor error, so the saga's
/// compensation path runs too.
pub fn order_spec(seq: u64) -> OrderSpec {
    let lines = 1 + (mix(seq, 1) % 3) as usize;
    let first = (mix(seq, 2) % PRODUCTS.len() as u64) as usize;
    let items = (0..lines)
        .map(|i| {
            let product = PRODUCTS[(first + i) % PRODUCTS.len()];
            let quantity = 1 + (mix(seq, 3 + i as u64) % 3) as i32;
            (product, quantity)
        })
        .collect();
    let payment = match mix(seq, 7) % 100 {
        0..30 => "pm_card_visa",
        30..60 => "pm_card_mastercard",
        60..90 => "pm_card_amex",
        90..94 => "pm_card_chargeDeclined",
        94..97 => "pm_card_insufficientFunds",
        _ => "pm_card_processingError",
    };
    OrderSpec {
        // The bench's token is this customer's: the orders are its own.
        customer: crate::identity::CUSTOMER.to_owned(),
        items,
        payment,
    }
}

impl OrderSpec {
    /// The REST body of `POST /v1/orders`.
    pub fn json(&self) -> String {
        let items: Vec<serde_json::Value> = self
            .items
            .iter()
            .map(|(product, quantity)| {
                serde_json::json!({"productId": product, "quantity": quantity})
            })
            .collect();
        serde_json::json!({
            "customerId": self.customer,
            "items": items,
            "paymentMethod": self.payment,
        })
        .to_string()
    }

    pub fn grpc(&self) -> CreateOrderRequest {
        CreateOrderRequest {
            customer_id: self.customer.clone(),
            items: self
                .items
                .iter()
                .map(|(product, quantity)| OrderItem {
                    product_id: (*product).to_owned(),
                    quantity: *quantity,
                    unit_price: None,
                })
                .collect(),
            payment_method: self.payment.to_owned(),
        }
    }
}

/// A placed order that did not end as the workload expects: still PENDING
/// (the saga did not finish within the call), or FAILED for a reason other
/// than the card tokens' declines (e.g. OUT_OF_STOCK).
pub fn check_created(status: OrderStatus, failure_reason: &str) -> Outcome {
    match status {
        OrderStatus::Confirmed => Ok(()),
        OrderStatus::Failed
            if matches!(
                failure_reason,
                "CARD_DECLINED" | "INSUFFICIENT_FUNDS" | "PAYMENT_PROCESSING_ERROR"
            ) =>
        {
            Ok(())
        }
        OrderStatus::Failed => Err(format!("order FAILED {failure_reason}")),
        other => Err(format!("order {}", other.as_str_name())),
    }
}

/// The order request `seq` reads, among those placed before the run.
pub fn pick_order(order_ids: &[String], seq: u64) -> String {
    if order_ids.is_empty() {
        return "ord_missing".to_owned();
    }
    order_ids[(mix(seq, 11) % order_ids.len() as u64) as usize].clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_deterministic_and_mixed() {
        assert_eq!(order_spec(42), order_spec(42));
        let specs: Vec<OrderSpec> = (0..1000).map(order_spec).collect();
        let good = specs
            .iter()
            .filter(|s| s.payment.starts_with("pm_card_") && !s.payment.contains("Declined"))
            .filter(|s| !s.payment.contains("insufficient") && !s.payment.contains("Error"))
            .count();
        assert!((850..=950).contains(&good), "{good} good cards in 1000");
        for product in PRODUCTS {
            assert!(
                specs
                    .iter()
                    .any(|s| s.items.iter().any(|(p, _)| p == product)),
                "{product} never ordered"
            );
        }
        for spec in &specs {
            assert!((1..=3).contains(&spec.items.len()));
            let mut ids: Vec<_> = spec.items.iter().map(|(p, _)| *p).collect();
            ids.dedup();
            assert_eq!(ids.len(), spec.items.len(), "duplicate lines: {spec:?}");
        }
    }

    #[test]
    fn order_json_is_what_the_gateway_takes() {
        let spec = OrderSpec {
            customer: "bench-1".into(),
            items: vec![("sku-mug", 2)],
            payment: "pm_card_visa",
        };
        let value: serde_json::Value = serde_json::from_str(&spec.json()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"customerId": "bench-1", "items": [{"productId": "sku-mug", "quantity": 2}], "paymentMethod": "pm_card_visa"})
        );
    }
}
