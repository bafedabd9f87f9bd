//! A secret given to the binary never comes out of it: not in `--help`
//! (clap would print every variable's value), not in the start-up logs, not
//! in the error a bad database URL ends in. The database password is planted
//! twice, in the URL's userinfo and as `?password=`, as libpq and sqlx both
//! accept it; the trace and JWKS URLs carry credentials too.

use std::process::Command;
use std::sync::Arc;

use ordermesh_testkit::TestDatabase;
use ordermesh_testkit::postgres::PrivatePostgres;

use crate::harness::{Endpoints, ORDERMESH, System, order_request};

const SECRET: &str = "planted-s3cret-in-userinfo";
const QUERY_SECRET: &str = "planted-s3cret-in-query";

fn planted_env() -> Vec<(&'static str, String)> {
    vec![
        (
            "DATABASE_URL",
            format!("postgres://ordermesh:{SECRET}@127.0.0.1:1/orders?password={QUERY_SECRET}"),
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://collector:{SECRET}@127.0.0.1:1"),
        ),
        (
            "ORDERMESH_JWKS_URL",
            format!("https://issuer:{SECRET}@auth.example.com/keys"),
        ),
    ]
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [SECRET, QUERY_SECRET] {
        assert!(!text.contains(secret), "{what} shows a secret:\n{text}");
    }
}

#[test]
fn help_names_the_variables_but_never_their_values() {
    for command in [
        "",
        "all",
        "order",
        "inventory",
        "payment",
        "gateway",
        "audit",
    ] {
        let output = Command::new(ORDERMESH)
            .args(command.split_whitespace())
            .arg("--help")
            .envs(planted_env())
            .output()
            .expect("run ordermesh --help");
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "ordermesh {command} --help:\n{text}"
        );
        assert_no_secret(&format!("ordermesh {command} --help"), &text);
        // The variable is still named, so an operator knows what to set.
        assert!(
            text.contains("[env: DATABASE_URL]"),
            "ordermesh {command} --help:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn start_up_logs_name_the_database_without_its_password() {
    let Some(postgres) = PrivatePostgres::start() else {
        return;
    };
    // Trust authentication: the server asks for no password, so any works.
    let url = format!(
        "postgres://postgres:{SECRET}@127.0.0.1:{}/postgres?password={QUERY_SECRET}&application_name=secrets",
        postgres.port()
    );
    let system = System::start_with_env(
        Arc::new(TestDatabase::sqlite()),
        &[],
        &[("DATABASE_URL", &url), ("RUST_LOG", "debug")],
    )
    .await;
    system
        .order()
        .await
        .create_order(order_request(
            "cust-secrets",
            &[("sku-mug", 1)],
            "pm_card_visa",
        ))
        .await
        .expect("an order on the planted URL's database");
    let logs = system.logs();
    assert!(logs.iter().any(|l| l.contains("listening")), "{logs:?}");
    assert_no_secret("the start-up logs", &logs.join("\n"));
}

#[test]
fn errors_name_the_database_without_its_password() {
    let cases = [
        // Nothing listens on port 1: the connection fails.
        format!("postgres://ordermesh:{SECRET}@127.0.0.1:1/orders?password={QUERY_SECRET}"),
        // A scheme the binary does not take.
        format!("mysql://ordermesh:{SECRET}@127.0.0.1:1/orders?password={QUERY_SECRET}"),
    ];
    for url in cases {
        let data = tempfile::tempdir().expect("tempdir");
        let output = Command::new(ORDERMESH)
            .args(["inventory", "--inventory-addr", "127.0.0.1:0"])
            .args(["--admin-addr", "127.0.0.1:0", "--log-format", "json"])
            .env("DATABASE_URL", &url)
            .env("ORDERMESH_DATA_DIR", data.path())
            .env("RUST_LOG", "debug")
            .output()
            .expect("run ordermesh inventory");
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{url}: started:\n{text}");
        // The error says which database, redacted.
        assert!(
            text.contains("ordermesh:***@127.0.0.1:1/orders?password=***"),
            "{url}: the error does not name the database:\n{text}"
        );
        assert_no_secret(&format!("the error for {url}"), &text);
    }
}
