//! What a real process writes: one JSON object per line, the order named,
//! never a whole payment token.

use std::sync::Arc;

use ordermesh_testkit::TestDatabase;

use crate::harness::{Endpoints, System, order_request};

#[tokio::test(flavor = "multi_thread")]
async fn logs_are_json_lines_that_name_the_order_but_not_the_token() {
    let system = System::start(Arc::new(TestDatabase::sqlite()), &[]).await;
    let order = system
        .order()
        .await
        .create_order(order_request(
            "cust-logs",
            &[("sku-mug", 1)],
            "pm_card_visa",
        ))
        .await
        .expect("create")
        .into_inner();

    // An operator's look at the order is logged with the operator's subject.
    system
        .order()
        .await
        .get_order(ordermesh_proto::order::v1::GetOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .expect("an operator reads any order");

    let logs = system.logs();
    let admin = logs
        .iter()
        .find(|l| l.contains("admin action") && l.contains(&order.order_id))
        .expect("the operator's read is logged");
    assert!(admin.contains("\"admin\":\"test-operator\""), "{admin}");
    for line in &logs {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("not a JSON line ({error}): {line}"));
        assert!(
            value["ts"].is_string() && value["level"].is_string(),
            "{line}"
        );
    }
    let placed = logs
        .iter()
        .find(|l| l.contains(&order.order_id) && l.contains("order placed"))
        .expect("the order is logged");
    let placed: serde_json::Value = serde_json::from_str(placed).unwrap();
    assert_eq!(placed["service"], "order", "{placed}");
    assert_eq!(
        placed["trace_id"].as_str().map(str::len),
        Some(32),
        "{placed}"
    );
    assert!(
        !logs.iter().any(|l| l.contains("pm_card_visa")),
        "a payment token was logged in full"
    );
}
