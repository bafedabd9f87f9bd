//! PostgreSQL over TLS: sqlx is built with rustls, so a URL asking for
//! `sslmode=verify-full` with `sslrootcert` checks the server's certificate
//! against that CA and the host name, and a server signed by another CA is
//! refused. The server is the test's own, started with a certificate the
//! test makes (openssl), taking TCP clients over TLS only.

use std::process::Command;
use std::sync::Arc;

use ordermesh_testkit::postgres::{PrivatePostgres, ServerTls};
use ordermesh_testkit::tls::TestCa;
use ordermesh_testkit::{TestDatabase, tool};
use sqlx::Connection;

use crate::harness::{Endpoints, ORDERMESH, System, order_request};

/// A server certificate for 127.0.0.1 signed by `ca`.
fn server_tls(ca: &TestCa) -> ServerTls {
    let (cert, key) = ca.server_cert("postgres", "IP:127.0.0.1");
    ServerTls {
        cert_chain: std::fs::read(cert).unwrap(),
        key: std::fs::read(key).unwrap(),
    }
}

/// `ordermesh audit` on `url`: it opens (and migrates) every service's
/// tables and reads them.
fn audit(url: &str) -> (bool, String) {
    let output = Command::new(ORDERMESH)
        .arg("audit")
        .env("DATABASE_URL", url)
        .output()
        .expect("run ordermesh audit");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_full_trusts_the_servers_ca_and_no_other() {
    if tool("openssl").is_none() {
        return;
    }
    let (ca, other_ca) = (TestCa::new("ca"), TestCa::new("other-ca"));
    let tls = server_tls(&ca);
    let Some(postgres) = PrivatePostgres::start_with_tls(&tls) else {
        return;
    };
    let base = format!("postgres://postgres@127.0.0.1:{}/postgres", postgres.port());
    let ca = ca.cert();
    let verified = format!("{base}?sslmode=verify-full&sslrootcert={}", ca.display());

    // The connection really is TLS: the server says so.
    let mut connection = sqlx::PgConnection::connect(&verified)
        .await
        .expect("verify-full with the server's CA");
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert!(ssl, "the connection is not TLS");
    connection.close().await.ok();

    let (ok, output) = audit(&verified);
    assert!(ok, "verify-full with the server's CA: {output}");

    // The whole system on it: an order placed and settled.
    let system = System::start_with_env(
        Arc::new(TestDatabase::sqlite()),
        &[],
        &[("DATABASE_URL", &verified)],
    )
    .await;
    let order = system
        .order()
        .await
        .create_order(order_request("cust-tls", &[("sku-mug", 1)], "pm_card_visa"))
        .await
        .expect("an order over TLS")
        .into_inner();
    assert_eq!(
        order.status().as_str_name(),
        "ORDER_STATUS_CONFIRMED",
        "{order:?}"
    );

    // Another CA: the server's certificate is refused.
    let other = format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        other_ca.cert().display()
    );
    let (ok, output) = audit(&other);
    assert!(
        !ok,
        "verify-full accepted a server the CA did not sign: {output}"
    );
    assert!(
        output.to_lowercase().contains("certificate") || output.contains("UnknownIssuer"),
        "the error does not say why: {output}"
    );

    // Without TLS the server takes no client (hostssl only).
    let (ok, output) = audit(&format!("{base}?sslmode=disable"));
    assert!(!ok, "a plaintext connection was accepted: {output}");
}
