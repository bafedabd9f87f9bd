//! `orderctl` against the live system: the commands the README shows.

use std::process::{Command, Output};

use crate::harness::{Endpoints, Role, TestApp, sibling_binary};

fn orderctl(system: &impl Endpoints, args: &[&str]) -> Output {
    Command::new(sibling_binary("orderctl"))
        .args([
            "--order-url",
            &format!("http://{}", system.addr(Role::Order)),
        ])
        .args([
            "--inventory-url",
            &format!("http://{}", system.addr(Role::Inventory)),
        ])
        .args(args)
        .output()
        .expect("run orderctl")
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "orderctl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn orderctl_browses_orders_and_cancels() {
    let system = TestApp::sqlite().await;
    let products = stdout_of(&orderctl(&system, &["products"]));
    assert!(
        products.lines().next().unwrap().starts_with("PRODUCT"),
        "{products}"
    );
    assert!(
        products.contains("sku-mug") && products.contains("12.00 USD"),
        "{products}"
    );

    let created = stdout_of(&orderctl(
        &system,
        &[
            "order",
            "create",
            "--customer",
            "cli",
            "--item",
            "sku-mug:2",
            "--payment",
            "pm_card_visa",
            "--idempotency-key",
            "k1",
        ],
    ));
    let first = created.lines().next().unwrap();
    let words: Vec<_> = first.split(' ').collect();
    assert_eq!(words[0], "order");
    assert_eq!(words[2], "CONFIRMED", "{created}");
    let order_id = words[1];

    let replay = stdout_of(&orderctl(
        &system,
        &[
            "order",
            "create",
            "--customer",
            "cli",
            "--item",
            "sku-mug:2",
            "--payment",
            "pm_card_visa",
            "--idempotency-key",
            "k1",
        ],
    ));
    assert!(
        replay.starts_with(&format!("order {order_id} CONFIRMED")),
        "{replay}"
    );

    let listed = stdout_of(&orderctl(
        &system,
        &["--json", "order", "list", "--customer", "cli"],
    ));
    let listed: Vec<serde_json::Value> = listed
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["orderId"], order_id);
    assert_eq!(listed[0]["total"]["minorUnits"], "2400");

    let cancelled = stdout_of(&orderctl(&system, &["order", "cancel", order_id]));
    assert!(
        cancelled.starts_with(&format!("order {order_id} CANCELLED")),
        "{cancelled}"
    );
    let watched = stdout_of(&orderctl(&system, &["order", "watch", order_id]));
    assert!(watched.contains("CANCELLED"), "{watched}");

    let declined = stdout_of(&orderctl(
        &system,
        &[
            "order",
            "create",
            "--customer",
            "cli",
            "--item",
            "sku-mug:1",
            "--payment",
            "pm_card_chargeDeclined",
        ],
    ));
    assert!(
        declined.contains("FAILED") && declined.contains("CARD_DECLINED"),
        "{declined}"
    );

    let refused = orderctl(
        &system,
        &[
            "order",
            "create",
            "--customer",
            "cli",
            "--item",
            "nope:1",
            "--payment",
            "pm_card_visa",
        ],
    );
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("NotFound") && stderr.contains("nope"),
        "{stderr}"
    );
}

/// `orderctl health`: the probe Docker Compose uses in a shell-less image.
#[tokio::test(flavor = "multi_thread")]
async fn orderctl_health_probes_grpc_and_http() {
    let mut system = TestApp::sqlite().await;
    let probes = [
        format!("http://{}", system.addr(Role::Order)),
        format!("http://{}", system.addr(Role::Inventory)),
        format!("http://{}", system.addr(Role::Payment)),
        format!("http://{}/readyz", system.gateway_addr()),
    ];
    for url in &probes {
        let out = stdout_of(&orderctl(&system, &["health", url]));
        assert!(out.contains("SERVING") || out.contains("200"), "{out}");
    }
    let named = orderctl(
        &system,
        &[
            "health",
            &probes[0],
            "--service",
            "ordermesh.order.v1.OrderService",
        ],
    );
    assert!(named.status.success());
    let unknown = orderctl(&system, &["health", &probes[0], "--service", "nope"]);
    assert!(
        !unknown.status.success(),
        "an unknown service is not healthy"
    );

    system.stop().await;
    for url in &probes {
        let down = orderctl(&system, &["health", url, "--timeout", "2s"]);
        assert!(!down.status.success(), "{url} is down but probed healthy");
    }
}
