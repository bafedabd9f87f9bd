//! A CreateOrder request, checked before anything is stored.

use std::collections::HashSet;

use ordermesh_domain::limits::{MAX_ITEMS, MAX_QUANTITY, check_id};
use ordermesh_domain::{PaymentMethod, PaymentMethodError};
use sha2::{Digest, Sha256};

/// A CreateOrder as the client sent it, before any check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrderForm {
    /// The customer the client named, if any (see `Caller`).
    pub customer_id: String,
    /// (product_id, quantity), in the order the client sent them.
    pub items: Vec<(String, i32)>,
    pub payment_method: String,
    pub idempotency_key: Option<String>,
}

/// A request that passed every check: what the saga will try to fulfil.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewOrder {
    pub customer_id: String,
    /// (product_id, quantity), in the order the client sent them.
    pub items: Vec<(String, i32)>,
    pub payment_method: PaymentMethod,
    pub idempotency_key: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("{0}")]
    Field(String),
    #[error("items must hold at least one line")]
    NoItems,
    #[error("an order may hold at most {MAX_ITEMS} lines, got {0}")]
    TooManyItems(usize),
    #[error("items[{index}].quantity must be between 1 and {MAX_QUANTITY}, got {quantity}")]
    BadQuantity { index: usize, quantity: i32 },
    #[error("product {0} appears on more than one line; send one line with the total quantity")]
    DuplicateProduct(String),
    #[error(transparent)]
    PaymentMethod(#[from] PaymentMethodError),
}

impl NewOrder {
    pub fn parse(
        customer_id: String,
        items: Vec<(String, i32)>,
        payment_method: &str,
        idempotency_key: Option<String>,
    ) -> Result<Self, RequestError> {
        check_id("customer_id", &customer_id).map_err(RequestError::Field)?;
        if items.is_empty() {
            return Err(RequestError::NoItems);
        }
        if items.len() > MAX_ITEMS {
            return Err(RequestError::TooManyItems(items.len()));
        }
        let mut seen = HashSet::with_capacity(items.len());
        for (index, (product_id, quantity)) in items.iter().enumerate() {
            check_id("product_id", product_id)
                .map_err(|e| RequestError::Field(format!("items[{index}]: {e}")))?;
            if !(1..=MAX_QUANTITY).contains(quantity) {
                return Err(RequestError::BadQuantity {
                    index,
                    quantity: *quantity,
                });
            }
            if !seen.insert(product_id.as_str()) {
                return Err(RequestError::DuplicateProduct(product_id.clone()));
            }
        }
        let payment_method = PaymentMethod::parse(payment_method)?;
        if let Some(key) = &idempotency_key {
            check_id("idempotency-key", key).map_err(RequestError::Field)?;
        }
        Ok(Self {
            customer_id,
            items,
            payment_method,
            idempotency_key,
        })
    }

    /// A digest of what was asked for, to tell a replay of the same request
    /// from a different request reusing its idempotency key. Line order does
    /// not matter; each product appears once.
    pub fn fingerprint(&self) -> String {
        let mut items: Vec<_> = self.items.iter().collect();
        items.sort();
        let mut hasher = Sha256::new();
        hasher.update(self.customer_id.as_bytes());
        for (product_id, quantity) in items {
            hasher.update([0]);
            hasher.update(product_id.as_bytes());
            hasher.update(quantity.to_be_bytes());
        }
        hasher.update([1]);
        hasher.update(self.payment_method.token().as_bytes());
        hex::encode(hasher.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(lines: &[(&str, i32)]) -> Vec<(String, i32)> {
        lines.iter().map(|(p, q)| ((*p).to_owned(), *q)).collect()
    }

    fn parse(lines: &[(&str, i32)]) -> Result<NewOrder, RequestError> {
        NewOrder::parse("cust-1".into(), items(lines), "pm_card_visa", None)
    }

    #[test]
    fn accepts_a_good_request() {
        let order = parse(&[("sku-a", 2), ("sku-b", 1)]).unwrap();
        assert_eq!(order.items.len(), 2);
    }

    #[test]
    fn refuses_bad_requests_with_a_reason() {
        assert_eq!(parse(&[]), Err(RequestError::NoItems));
        assert_eq!(
            parse(&[("sku-a", 0)]),
            Err(RequestError::BadQuantity {
                index: 0,
                quantity: 0
            })
        );
        assert_eq!(
            parse(&[("sku-a", MAX_QUANTITY + 1)]),
            Err(RequestError::BadQuantity {
                index: 0,
                quantity: MAX_QUANTITY + 1
            })
        );
        assert_eq!(
            parse(&[("sku-a", 1), ("sku-a", 2)]),
            Err(RequestError::DuplicateProduct("sku-a".into()))
        );
        let many: Vec<(String, i32)> = (0..=MAX_ITEMS).map(|i| (format!("sku-{i}"), 1)).collect();
        assert_eq!(
            NewOrder::parse("c".into(), many, "pm_card_visa", None),
            Err(RequestError::TooManyItems(MAX_ITEMS + 1))
        );
        assert!(matches!(
            NewOrder::parse(String::new(), items(&[("a", 1)]), "pm_card_visa", None),
            Err(RequestError::Field(m)) if m.contains("customer_id")
        ));
        assert!(matches!(
            NewOrder::parse("c".into(), items(&[("a", 1)]), "pm_bogus", None),
            Err(RequestError::PaymentMethod(_))
        ));
        assert!(matches!(
            NewOrder::parse("c".into(), items(&[("a", 1)]), "pm_card_visa", Some("bad key".into())),
            Err(RequestError::Field(m)) if m.contains("idempotency-key")
        ));
    }

    #[test]
    fn fingerprint_ignores_line_order_but_not_content() {
        let a = parse(&[("sku-a", 2), ("sku-b", 1)]).unwrap();
        let b = parse(&[("sku-b", 1), ("sku-a", 2)]).unwrap();
        let c = parse(&[("sku-a", 3), ("sku-b", 1)]).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        let other_card = NewOrder::parse(
            "cust-1".into(),
            items(&[("sku-a", 2), ("sku-b", 1)]),
            "pm_card_amex",
            None,
        )
        .unwrap();
        assert_ne!(a.fingerprint(), other_card.fingerprint());
        // Stored with every order: a change of encoding would turn a retry
        // of an order placed before it into a conflict.
        assert_eq!(
            a.fingerprint(),
            "638d88584b112e91741b02922f289c6c046cfff3b2c3f7f218cf01b55c618c84"
        );
    }
}
