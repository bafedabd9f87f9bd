//! The local sidecar mesh of `envoy/mesh/` with the real Envoy: load
//! spread over replicas and a replica killed mid-load, a lost response
//! retried and charged once, a lost keyless CreateOrder not retried,
//! identities and methods refused by the sidecars.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::curl::{self, Response, curl, post_json, sample, url};
use ordermesh_testkit::tool;

use crate::envoy::envoy;
use crate::harness::{ORDERMESH, eventually, free_port, free_ports, workspace_root};

/// The local mesh of `envoy/mesh/mesh.sh`, on ports of its own; stopped
/// (with `mesh.sh stop`) on drop.
struct Mesh {
    dir: tempfile::TempDir,
    /// A database of its own on PostgreSQL when there is one (the replicas
    /// share it, as in production), else SQLite files under `dir`.
    _database: Option<ordermesh_testkit::TestDatabase>,
    ports: HashMap<&'static str, u16>,
    env: Vec<(String, String)>,
}

const MESH_PORTS: &[&str] = &[
    "ORDER_APP_PORT",
    "INVENTORY1_APP_PORT",
    "INVENTORY2_APP_PORT",
    "PAYMENT_APP_PORT",
    "GATEWAY_APP_PORT",
    "ORDER_INBOUND_PORT",
    "INVENTORY1_INBOUND_PORT",
    "INVENTORY2_INBOUND_PORT",
    "PAYMENT_INBOUND_PORT",
    "GATEWAY_TO_ORDER_PORT",
    "GATEWAY_TO_INVENTORY_PORT",
    "ORDER_TO_INVENTORY_PORT",
    "ORDER_TO_PAYMENT_PORT",
    "EDGE_PORT",
    "EDGE_HTTP_PORT",
    "EDGE_ADMIN_PORT",
];

impl Mesh {
    async fn start(extra_env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports: HashMap<&'static str, u16> =
            MESH_PORTS.iter().map(|name| (*name, free_port())).collect();
        // Runs of five: sidecar admins and service metrics.
        let sidecar_admin = free_ports(5);
        let metrics = free_ports(5);
        let mut env: Vec<(String, String)> = ports
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_string()))
            .collect();
        env.extend([
            (
                "SIDECAR_ADMIN_PORT_BASE".to_owned(),
                sidecar_admin.to_string(),
            ),
            ("METRICS_PORT_BASE".to_owned(), metrics.to_string()),
            ("MESH_DIR".to_owned(), dir.path().display().to_string()),
            (
                "BIN_DIR".to_owned(),
                Path::new(ORDERMESH).parent().unwrap().display().to_string(),
            ),
            ("ENVOY".to_owned(), envoy().unwrap().display().to_string()),
        ]);
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let database = if std::env::var_os("DATABASE_URL").is_some() {
            ordermesh_testkit::TestDatabase::postgres().await
        } else {
            None
        };
        if let Some(url) = database
            .as_ref()
            .and_then(|db| db.settings().database_url.clone())
        {
            env.push(("DATABASE_URL".to_owned(), url));
        }
        let mut mesh = Self {
            dir,
            _database: database,
            ports,
            env,
        };
        mesh.ports.insert("SIDECAR_ADMIN_PORT_BASE", sidecar_admin);
        mesh.ports.insert("METRICS_PORT_BASE", metrics);
        let started = mesh.script("start");
        assert!(
            started.status.success(),
            "{}",
            String::from_utf8_lossy(&started.stderr)
        );
        // Ready: the gateway sees the order service, and the order sidecar
        // sees every inventory and payment replica healthy.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !mesh.ready() {
            if tokio::time::Instant::now() > deadline {
                let status = mesh.script("status");
                panic!(
                    "the mesh is not ready after 60s:\n{}\norder sidecar clusters:\n{}\ngateway log:\n{}",
                    String::from_utf8_lossy(&status.stdout),
                    mesh.sidecar_clusters("order"),
                    mesh.log("gateway"),
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The edge speaks HTTPS with a certificate of the mesh's CA.
        curl::use_tls(mesh.edge(), &mesh.dir.path().join("certs/ca.crt"));
        // Every role shares the mesh's data directory, so one development
        // issuer's key, whose tokens the edge and the services check.
        let keys = mesh.dir.path().join("db");
        for port in ["EDGE_PORT", "GATEWAY_APP_PORT"] {
            let addr = SocketAddr::from(([127, 0, 0, 1], mesh.port(port)));
            curl::use_dev_issuer(addr, &keys);
        }
        mesh
    }

    fn ready(&self) -> bool {
        curl::probe(&format!(
            "http://127.0.0.1:{}/readyz",
            self.port("GATEWAY_APP_PORT")
        )) && self
            .sidecar_clusters("order")
            .lines()
            .filter(|l| l.starts_with("inventory::") || l.starts_with("payment::"))
            .filter(|l| l.ends_with("::health_flags::healthy"))
            .count()
            == 3
    }

    fn script(&self, command: &str) -> std::process::Output {
        Command::new(workspace_root().join("envoy/mesh/mesh.sh"))
            .arg(command)
            .env_remove("DATABASE_URL")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run mesh.sh")
    }

    fn port(&self, name: &str) -> u16 {
        self.ports[name]
    }

    fn edge(&self) -> std::net::SocketAddr {
        format!("127.0.0.1:{}", self.port("EDGE_PORT"))
            .parse()
            .unwrap()
    }

    /// Admin port of a sidecar: gateway, order, inventory-1, inventory-2, payment.
    fn sidecar_admin(&self, sidecar: &str) -> String {
        let offset = ["gateway", "order", "inventory-1", "inventory-2", "payment"]
            .iter()
            .position(|s| *s == sidecar)
            .unwrap();
        format!(
            "127.0.0.1:{}",
            self.port("SIDECAR_ADMIN_PORT_BASE") + offset as u16
        )
    }

    fn sidecar_clusters(&self, sidecar: &str) -> String {
        curl::get_text(&format!("http://{}/clusters", self.sidecar_admin(sidecar)))
    }

    fn sidecar_stats(&self, sidecar: &str) -> String {
        curl::get_text(&format!("http://{}/stats", self.sidecar_admin(sidecar)))
    }

    /// Prometheus text of a service: inventory-1, inventory-2, payment, order, gateway.
    fn service_metrics(&self, service: &str) -> String {
        let offset = ["inventory-1", "inventory-2", "payment", "order", "gateway"]
            .iter()
            .position(|s| *s == service)
            .unwrap();
        curl::get_text(&format!(
            "http://127.0.0.1:{}/metrics",
            self.port("METRICS_PORT_BASE") + offset as u16
        ))
    }

    fn pid(&self, name: &str) -> u32 {
        std::fs::read_to_string(self.dir.path().join(format!("run/{name}.pid")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("logs/{name}.log")))
            .unwrap_or_default()
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = self.script("stop");
        curl::forget_tls(self.edge());
    }
}

fn place_order(edge: std::net::SocketAddr, customer: &str, key: &str) -> Response {
    place_order_keyed(edge, customer, Some(key))
}

fn place_order_keyed(edge: std::net::SocketAddr, customer: &str, key: Option<&str>) -> Response {
    let body = json!({"customerId": customer, "items": [{"productId": "sku-filter", "quantity": 1}], "paymentMethod": "pm_card_visa"});
    let header = key.map(|key| format!("idempotency-key: {key}"));
    post_json(
        edge,
        "/v1/orders",
        &body,
        &Vec::from_iter(header.as_deref()),
    )
}

fn requests_to(metrics: &str, method: &str) -> f64 {
    sample(
        metrics,
        "requests_total",
        &[("method", method), ("code", "OK")],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mesh_spreads_load_and_loses_no_order_when_a_replica_dies() {
    if envoy().is_none() || !curl::available() {
        return;
    }
    let mesh = Mesh::start(&[]).await;
    let edge = mesh.edge();
    let stock_before = curl(&[&url(edge, "/v1/products/sku-filter")]).expect(200)["available"]
        .as_i64()
        .unwrap();

    // Least-request over two replicas: both take reservations. Bounded: a
    // replica briefly marked unhealthy on a loaded machine gets none for a
    // while, so keep ordering (up to 40) until both have served some.
    let reserve = "/ordermesh.inventory.v1.InventoryService/ReserveStock";
    let mut spread = 0;
    loop {
        let order = place_order(edge, "mesh-spread", &format!("spread-{spread}")).expect(200);
        assert_eq!(order["status"], "ORDER_STATUS_CONFIRMED", "{order}");
        spread += 1;
        let served: Vec<f64> = ["inventory-1", "inventory-2"]
            .iter()
            .map(|replica| requests_to(&mesh.service_metrics(replica), reserve))
            .collect();
        if served.iter().all(|n| *n >= 1.0) {
            break;
        }
        assert!(
            spread < 40,
            "one replica served every reservation: {served:?}"
        );
    }
    // Kill one replica (SIGKILL, mid-load) while four clients place orders.
    let clients: Vec<_> = (0..4)
        .map(|client| {
            std::thread::spawn(move || {
                (0..10)
                    .map(|i| {
                        let key = format!("load-{client}-{i}");
                        // A client retries with the same key, as it should.
                        let mut response = place_order(edge, "mesh-load", &key);
                        for _ in 0..3 {
                            if response.status == 200 {
                                break;
                            }
                            response = place_order(edge, "mesh-load", &key);
                        }
                        response
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let victim = mesh.pid("inventory-2");
    assert!(
        Command::new("kill")
            .args(["-KILL", &victim.to_string()])
            .status()
            .unwrap()
            .success()
    );

    let mut confirmed = 0;
    for client in clients {
        for response in client.join().unwrap() {
            let order = response.expect(200);
            assert_eq!(order["status"], "ORDER_STATUS_CONFIRMED", "{order}");
            confirmed += 1;
        }
    }
    assert_eq!(confirmed, 40);
    // Exactly the units sold are gone: nothing reserved twice, none lost.
    let stock_after = curl(&[&url(edge, "/v1/products/sku-filter")]).expect(200)["available"]
        .as_i64()
        .unwrap();
    assert_eq!(stock_before - stock_after, spread + 40);

    // The dead replica is out of rotation in the order sidecar.
    let dead = format!("127.0.0.1:{}", mesh.port("INVENTORY2_INBOUND_PORT"));
    let flags = eventually(Duration::from_secs(10), "the dead replica ejected", || {
        let clusters = mesh.sidecar_clusters("order");
        let flags = clusters
            .lines()
            .find(|l| l.starts_with(&format!("inventory::{dead}::health_flags::")))
            .map(str::to_owned);
        async move { flags.filter(|f| !f.ends_with("::healthy")) }
    })
    .await;
    assert!(flags.contains("failed"), "{flags}");
    let stats = mesh.sidecar_stats("order");
    eprintln!(
        "order sidecar: retries {} ejections {} flags {flags}",
        stat(&stats, "cluster.inventory.upstream_rq_retry"),
        stat(
            &stats,
            "cluster.inventory.outlier_detection.ejections_enforced_total"
        ),
    );
}

fn stat(stats: &str, name: &str) -> u64 {
    stats
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_payment_response_is_retried_and_charged_once() {
    if envoy().is_none() || !curl::available() {
        return;
    }
    let mesh = Mesh::start(&[(
        "ORDERMESH_FAILPOINT_LOSE_RESPONSES",
        "/ordermesh.payment.v1.PaymentService/ProcessPayment=1",
    )])
    .await;
    let order = place_order(mesh.edge(), "mesh-lost", "lost-1").expect(200);
    assert_eq!(order["status"], "ORDER_STATUS_CONFIRMED", "{order}");

    // The payment service served the charge twice, the first answer lost...
    let payment_log = mesh.log("payment");
    assert!(
        payment_log.contains("failpoint hit") && payment_log.contains("lose response"),
        "the failpoint lost no response"
    );
    let stats = mesh.sidecar_stats("order");
    assert!(
        stat(&stats, "cluster.payment.upstream_rq_retry") >= 1,
        "Envoy did not retry"
    );
    // ...and charged the customer once.
    let metrics = mesh.service_metrics("payment");
    assert_eq!(
        sample(&metrics, "payments_processed_total", &[]),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        requests_to(
            &metrics,
            "/ordermesh.payment.v1.PaymentService/ProcessPayment"
        ),
        1.0,
        "one answer reached the order service; the lost one is not OK"
    );
}

/// A CreateOrder whose response is lost after the order was placed: without
/// an idempotency key no proxy may send it again (a second order, a second
/// charge); with one, the gateway's sidecar retries it and the key returns
/// the order already placed.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_create_is_retried_only_with_an_idempotency_key() {
    if envoy().is_none() || !curl::available() {
        return;
    }
    let mesh = Mesh::start(&[(
        "ORDERMESH_FAILPOINTS",
        "/ordermesh.order.v1.OrderService/CreateOrder=lose(2)",
    )])
    .await;
    let orders_and_charges = || {
        let orders = sample(&mesh.service_metrics("order"), "orders_created_total", &[]);
        let charges = sample(
            &mesh.service_metrics("payment"),
            "payments_processed_total",
            &[],
        );
        (orders, charges)
    };
    let retries = || {
        stat(
            &mesh.sidecar_stats("gateway"),
            "cluster.order.upstream_rq_retry",
        )
    };

    // Keyless: the caller sees the loss, and the order stands alone.
    let lost = place_order_keyed(mesh.edge(), "mesh-keyless", None);
    assert!(lost.status >= 500, "{} {}", lost.status, lost.text());
    assert!(
        mesh.log("order").contains("lose response"),
        "the failpoint lost no response"
    );
    assert_eq!(orders_and_charges(), (1.0, 1.0), "one order, one charge");
    // The service saw the create once. (The sidecar's retry counter is
    // not the measure: it also counts the gateway's health checks, which
    // may be retried on a busy machine.)
    let creates = || {
        sample(
            &mesh.service_metrics("order"),
            "requests_total",
            &[("method", "/ordermesh.order.v1.OrderService/CreateOrder")],
        )
    };
    assert_eq!(creates(), 1.0, "a keyless CreateOrder was retried");

    // Keyed: the second lost response is retried, and the key answers it.
    let order = place_order_keyed(mesh.edge(), "mesh-keyed", Some("lost-create-1")).expect(200);
    assert_eq!(order["status"], "ORDER_STATUS_CONFIRMED", "{order}");
    assert!(retries() >= 1, "the keyed CreateOrder was not retried");
    assert!(
        creates() >= 3.0,
        "the keyed CreateOrder reached the service once"
    );
    assert_eq!(
        orders_and_charges(),
        (2.0, 2.0),
        "the retry placed a second order"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sidecars_refuse_unknown_and_wrong_identities() {
    let Some(grpcurl) = tool("grpcurl") else {
        return;
    };
    if envoy().is_none() || !curl::available() {
        return;
    }
    let mesh = Mesh::start(&[]).await;
    let certs = mesh.dir.path().join("certs");
    let payment = format!("127.0.0.1:{}", mesh.port("PAYMENT_INBOUND_PORT"));
    let call = |identity: Option<&str>, method: &str| {
        let mut command = Command::new(&grpcurl);
        command.current_dir(&certs).args([
            "-cacert",
            "ca.crt",
            "-servername",
            "localhost",
            "-max-time",
            "5",
        ]);
        if let Some(identity) = identity {
            command.args([
                "-cert",
                &format!("{identity}.crt"),
                "-key",
                &format!("{identity}.key"),
            ]);
        }
        let proto_root = workspace_root().join("proto");
        command
            .args(["-import-path", proto_root.to_str().unwrap()])
            .args(["-proto", "ordermesh/payment/v1/payment.proto"])
            .args(["-d", r#"{"orderId":"ord_probe"}"#, &payment])
            .arg(format!("ordermesh.payment.v1.PaymentService/{method}"));
        let output = command.output().expect("run grpcurl");
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    // The order service's identity may refund (a refund before any charge
    // leaves a tombstone and answers)...
    let refund = call(Some("order"), "RefundPayment");
    assert!(!refund.contains("PermissionDenied"), "{refund}");
    // ...but not call a method the saga does not need.
    let read = call(Some("order"), "GetPayment");
    assert!(read.contains("PermissionDenied"), "{read}");
    // The gateway's may not call payment at all: RBAC refuses it.
    let wrong = call(Some("gateway"), "RefundPayment");
    assert!(wrong.contains("PermissionDenied"), "{wrong}");
    // No certificate: no connection at all.
    let anonymous = call(None, "GetPayment");
    assert!(
        !anonymous.contains("NotFound")
            && !anonymous.contains("PermissionDenied")
            && !anonymous.contains("Code: OK"),
        "{anonymous}"
    );

    let stats = mesh.sidecar_stats("payment");
    assert!(stat(&stats, "http.inbound.rbac.denied") >= 1, "{stats}");
    assert!(
        stats
            .lines()
            .any(|l| l.contains("ssl.fail_verify_no_cert") && !l.ends_with(": 0")),
        "no handshake refusal counted"
    );
}
