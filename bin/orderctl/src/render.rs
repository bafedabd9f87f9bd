//! How results look: aligned text for people, proto3 JSON for scripts.

use ordermesh_domain::{Currency, Money};
use ordermesh_proto::common::v1::Money as ProtoMoney;
use ordermesh_proto::inventory::v1::Product;
use ordermesh_proto::order::v1::Order;
use serde_json::{Value, json};

/// "24.99 USD", or the raw fields when the currency is not a valid code.
pub fn money(money: Option<&ProtoMoney>) -> String {
    let Some(money) = money else {
        return "-".into();
    };
    match Currency::parse(&money.currency_code) {
        Ok(currency) => Money::new(currency, money.minor_units).to_string(),
        Err(_) => format!("{} {}", money.minor_units, money.currency_code),
    }
}

/// The status without its enum prefix, e.g. CONFIRMED.
pub fn status(order: &Order) -> &'static str {
    order
        .status()
        .as_str_name()
        .trim_start_matches("ORDER_STATUS_")
}

fn rfc3339(timestamp: Option<&prost_types::Timestamp>) -> Option<String> {
    let timestamp = timestamp?;
    let time = std::time::UNIX_EPOCH.checked_add(std::time::Duration::new(
        u64::try_from(timestamp.seconds).ok()?,
        u32::try_from(timestamp.nanos).ok()?,
    ))?;
    Some(humantime::format_rfc3339_millis(time).to_string())
}

pub fn order_text(order: &Order) -> String {
    let mut lines = vec![format!("order {} {}", order.order_id, status(order))];
    if !order.failure_reason.is_empty() {
        lines.push(format!("  reason    {}", order.failure_reason));
    }
    lines.push(format!("  customer  {}", order.customer_id));
    lines.push(format!("  total     {}", money(order.total.as_ref())));
    for item in &order.items {
        lines.push(format!(
            "  item      {} x{} @ {}",
            item.product_id,
            item.quantity,
            money(item.unit_price.as_ref())
        ));
    }
    if let Some(created) = rfc3339(order.create_time.as_ref()) {
        lines.push(format!("  created   {created}"));
    }
    lines.join("\n")
}

pub fn products_text(products: &[Product]) -> String {
    let width = products
        .iter()
        .map(|p| p.product_id.len())
        .chain([7])
        .max()
        .unwrap_or(7);
    let name_width = products
        .iter()
        .map(|p| p.name.len())
        .chain([4])
        .max()
        .unwrap_or(4);
    let mut lines = vec![format!(
        "{:width$}  {:name_width$}  {:>12}  {:>9}",
        "PRODUCT", "NAME", "PRICE", "AVAILABLE"
    )];
    for product in products {
        lines.push(format!(
            "{:width$}  {:name_width$}  {:>12}  {:>9}",
            product.product_id,
            product.name,
            money(product.price.as_ref()),
            product.available
        ));
    }
    lines.join("\n")
}

fn money_json(money: Option<&ProtoMoney>) -> Value {
    match money {
        // int64 is a string in the proto3 JSON mapping.
        Some(money) => json!({
            "currencyCode": money.currency_code,
            "minorUnits": money.minor_units.to_string(),
        }),
        None => Value::Null,
    }
}

pub fn order_json(order: &Order) -> Value {
    json!({
        "orderId": order.order_id,
        "customerId": order.customer_id,
        "items": order.items.iter().map(|item| json!({
            "productId": item.product_id,
            "quantity": item.quantity,
            "unitPrice": money_json(item.unit_price.as_ref()),
        })).collect::<Vec<_>>(),
        "total": money_json(order.total.as_ref()),
        "status": order.status().as_str_name(),
        "failureReason": order.failure_reason,
        "createTime": rfc3339(order.create_time.as_ref()),
        "updateTime": rfc3339(order.update_time.as_ref()),
    })
}

pub fn product_json(product: &Product) -> Value {
    json!({
        "productId": product.product_id,
        "name": product.name,
        "price": money_json(product.price.as_ref()),
        "available": product.available,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordermesh_proto::order::v1::{OrderItem, OrderStatus};

    fn usd(minor_units: i64) -> Option<ProtoMoney> {
        Some(ProtoMoney {
            currency_code: "USD".into(),
            minor_units,
        })
    }

    fn order() -> Order {
        Order {
            order_id: "ord_1".into(),
            customer_id: "alice".into(),
            items: vec![OrderItem {
                product_id: "sku-mug".into(),
                quantity: 2,
                unit_price: usd(1200),
            }],
            total: usd(2400),
            status: OrderStatus::Failed.into(),
            failure_reason: "OUT_OF_STOCK".into(),
            create_time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            update_time: None,
        }
    }

    #[test]
    fn text_starts_with_id_and_status() {
        let text = order_text(&order());
        assert!(text.starts_with("order ord_1 FAILED\n"), "{text}");
        assert!(text.contains("reason    OUT_OF_STOCK"));
        assert!(text.contains("24.00 USD"));
        assert!(text.contains("2023-11-14T22:13:20.000Z"), "{text}");
    }

    #[test]
    fn money_falls_back_to_raw_fields() {
        assert_eq!(money(usd(1999).as_ref()), "19.99 USD");
        let odd = ProtoMoney {
            currency_code: "usd".into(),
            minor_units: 5,
        };
        assert_eq!(money(Some(&odd)), "5 usd");
        assert_eq!(money(None), "-");
    }

    #[test]
    fn json_follows_the_proto3_mapping() {
        let value = order_json(&order());
        assert_eq!(value["orderId"], "ord_1");
        assert_eq!(value["status"], "ORDER_STATUS_FAILED");
        assert_eq!(value["total"]["minorUnits"], "2400");
        assert_eq!(value["items"][0]["productId"], "sku-mug");
    }

    #[test]
    fn products_align() {
        let table = products_text(&[Product {
            product_id: "sku-mug".into(),
            name: "Ceramic mug".into(),
            price: usd(1200),
            available: 7,
        }]);
        let lines: Vec<_> = table.lines().collect();
        assert!(lines[0].starts_with("PRODUCT"));
        assert!(lines[1].contains("12.00 USD") && lines[1].trim_end().ends_with('7'));
    }
}
