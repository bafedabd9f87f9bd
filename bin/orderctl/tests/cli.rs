//! The `orderctl` binary's own behaviour without a server: help and usage
//! errors. (Against a live system it is tested in bin/ordermesh's system
//! tests.)

use std::process::Command;

const ORDERCTL: &str = env!("CARGO_BIN_EXE_orderctl");

#[test]
fn help_lists_the_commands() {
    let output = Command::new(ORDERCTL).arg("--help").output().expect("run");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["products", "product", "order"] {
        assert!(help.contains(command), "{help}");
    }
}

#[test]
fn a_malformed_item_is_a_usage_error_naming_the_flag() {
    let output = Command::new(ORDERCTL)
        .args([
            "order",
            "create",
            "--customer",
            "c",
            "--item",
            "sku-mug",
            "--payment",
            "pm_card_visa",
        ])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SKU:QUANTITY"), "{stderr}");
}

#[test]
fn an_unreachable_server_is_explained() {
    let output = Command::new(ORDERCTL)
        .args([
            "--order-url",
            "http://127.0.0.1:1",
            "--timeout",
            "2s",
            "--token",
            "some.jwt.token",
            "order",
            "get",
            "ord_x",
        ])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach the order service"),
        "{stderr}"
    );
}

#[test]
fn order_commands_need_a_sign_in_first() {
    let config = tempfile::tempdir().unwrap();
    let output = Command::new(ORDERCTL)
        .env("ORDERCTL_CONFIG_DIR", config.path())
        .env_remove("ORDERCTL_TOKEN")
        .args(["--order-url", "http://127.0.0.1:1", "order", "get", "ord_x"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("orderctl login"), "{stderr}");
}
