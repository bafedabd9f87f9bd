//! `orderctl` against the live system: the commands the README shows.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use ordermesh_identity::IdentitySettings;
use ordermesh_testkit::TestDatabase;

use crate::harness::{Endpoints, Role, TestApp, sibling_binary};

/// `orderctl` with its config (the kept token) in `config`.
fn orderctl_in(system: &impl Endpoints, config: &Path, args: &[&str]) -> Output {
    Command::new(sibling_binary("orderctl"))
        .env("ORDERCTL_CONFIG_DIR", config)
        .env_remove("ORDERCTL_TOKEN")
        .args([
            "--gateway-url",
            &format!("http://{}", system.gateway_addr()),
        ])
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

/// `orderctl` as the README's reader runs it: signed in as customer `cli`
/// through the development issuer (one config dir per test process).
fn orderctl(system: &impl Endpoints, args: &[&str]) -> Output {
    orderctl_in(system, &config_dir(), args)
}

fn config_dir() -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap().keep())
        .clone()
}

/// The system with the development issuer in effect, as one command runs it.
async fn with_dev_issuer() -> TestApp {
    TestApp::spawn(Arc::new(TestDatabase::sqlite()), |settings| {
        settings.identity = IdentitySettings::default();
    })
    .await
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
    let system = with_dev_issuer().await;
    // Signed out, the order commands say how to sign in.
    let config = tempfile::tempdir().unwrap();
    let signed_out = orderctl_in(&system, config.path(), &["order", "list"]);
    assert!(!signed_out.status.success());
    assert!(String::from_utf8_lossy(&signed_out.stderr).contains("orderctl login"));
    let login = stdout_of(&orderctl_in(&system, config.path(), &["login", "cli"]));
    assert!(login.starts_with("signed in"), "{login}");
    let token = stdout_of(&orderctl_in(&system, config.path(), &["token"]));
    assert_eq!(token.trim().split('.').count(), 3, "a JWT: {token}");
    let config = config.path();
    let orderctl = |system: &TestApp, args: &[&str]| orderctl_in(system, config, args);
    let products = stdout_of(&orderctl(&system, &["products"]));
    assert!(
        products.lines().next().unwrap().starts_with("PRODUCT"),
        "{products}"
    );
    assert!(
        products.contains("sku-mug") && products.contains("12.00 USD"),
        "{products}"
    );

    // A reader that leaves early (`orderctl products | head -1`) is no error.
    let mut early_exit = Command::new(sibling_binary("orderctl"))
        .args([
            "--inventory-url",
            &format!("http://{}", system.addr(Role::Inventory)),
            "products",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run orderctl");
    drop(early_exit.stdout.take());
    let early_exit = early_exit.wait_with_output().unwrap();
    assert!(
        early_exit.status.success(),
        "a closed stdout: {:?} {}",
        early_exit.status,
        String::from_utf8_lossy(&early_exit.stderr)
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
