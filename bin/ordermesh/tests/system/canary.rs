//! The canary's gates, proven: two versions of the order service side by
//! side on one database, behind Envoy splitting calls between them as
//! Flagger's route does at its last step (50/50), a real Prometheus scraping
//! both with the labels the `kubernetes-pods` job gives pods that Flagger
//! runs (`order-primary-<hash>-<id>` and `order-<hash>-<id>`), and each
//! gate of `k8s/components/flagger/canaries.yaml` evaluated as Flagger
//! evaluates it: the MetricTemplate's query with its variables filled in,
//! against that Prometheus, checked against the Canary's thresholdRange.
//!
//! A good canary must pass every gate; each bad one (made with failpoints)
//! must fail the gate meant for it. Each analysis gets a canary pod of its
//! own (a new ReplicaSet, as a new release has) and a fresh Prometheus, so
//! no figures carry over from the one before.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ordermesh_proto::inventory::v1::AdjustStockRequest;
use ordermesh_proto::order::v1::GetOrderRequest;
use ordermesh_runtime::failpoint::parse_failpoint;
use ordermesh_testkit::{TestDatabase, tokens, tool};
use serde_norway::Value;

use crate::envoy::{envoy, wait_for_http};
use crate::harness::{
    Endpoints, Role, TestApp, authorize, connect, eventually, free_port, order_client,
    order_message, workspace_root,
};

const NAMESPACE: &str = "ordermesh";
const PRIMARY_POD: &str = "order-primary-5b4d9c7f8-q8w2e";
/// The templates' selectors of the canary's pods and of the primary's, as
/// rendered for the target `order`.
const CANARY_PODS: &str = r#"pod=~"order-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)""#;
const PRIMARY_PODS: &str = r#"pod=~"order-primary-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)""#;
/// How long each analysis drives traffic (Prometheus scrapes every second).
const TRAFFIC: Duration = Duration::from_secs(10);

/// A child process killed on drop, with the folder it uses.
struct Process {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(program: &std::path::Path, args: &[String], dir: tempfile::TempDir) -> Process {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
    Process { child, _dir: dir }
}

/// Envoy with one HTTP/2 listener sending `weight`% of calls to the canary.
fn start_envoy(
    envoy: &std::path::Path,
    listen: u16,
    admin: u16,
    primary: SocketAddr,
    canary: SocketAddr,
    weight: u32,
) -> Process {
    let cluster = |name: &str, addr: SocketAddr| {
        format!(
            r#"
    - name: {name}
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: {{ http2_protocol_options: {{}} }}
      load_assignment:
        cluster_name: {name}
        endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }} }}] }}]"#,
            port = addr.port()
        )
    };
    let config = format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
    - name: order
      address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: order
                codec_type: HTTP2
                route_config:
                  virtual_hosts:
                    - name: order
                      domains: ["*"]
                      routes:
                        - match: {{ prefix: "/" }}
                          route:
                            timeout: 15s
                            weighted_clusters:
                              clusters:
                                - {{ name: order-primary, weight: {primary_weight} }}
                                - {{ name: order-canary, weight: {weight} }}
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:{primary}{canary}
"#,
        primary_weight = 100 - weight,
        primary = cluster("order-primary", primary),
        canary = cluster("order-canary", canary),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, config).unwrap();
    let args = [
        "-c",
        path.to_str().unwrap(),
        "--disable-hot-restart",
        "--log-level",
        "warn",
    ];
    spawn(envoy, &args.map(str::to_owned), dir)
}

/// Prometheus scraping both workloads every second, labelled as the
/// `kubernetes-pods` job labels pods: `namespace`, `pod` and the pod's labels.
fn start_prometheus(
    prometheus: &std::path::Path,
    listen: u16,
    targets: &[(SocketAddr, &str, &str)],
) -> Process {
    let mut config = String::from(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: kubernetes-pods\n    static_configs:\n",
    );
    for (addr, pod, app) in targets {
        config.push_str(&format!(
            "      - targets: ['{addr}']\n        labels: {{namespace: {NAMESPACE}, pod: {pod}, app: {app}, app.kubernetes.io/name: order}}\n"
        ));
    }
    // `app.kubernetes.io/name` as the job writes it (dots become underscores).
    let config = config.replace("app.kubernetes.io/name", "app_kubernetes_io_name");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prometheus.yml");
    std::fs::write(&path, config).unwrap();
    let args = [
        format!("--config.file={}", path.display()),
        format!("--storage.tsdb.path={}", dir.path().join("data").display()),
        format!("--web.listen-address=127.0.0.1:{listen}"),
    ];
    spawn(prometheus, &args, dir)
}

fn http_get(url: &str, query: Option<&str>) -> Option<String> {
    let mut command = Command::new("curl");
    command.args(["-sf", "--max-time", "5"]);
    if let Some(query) = query {
        command.args(["--get", "--data-urlencode", &format!("query={query}")]);
    }
    let output = command.arg(url).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The value of an instant query that returns one sample, as Flagger's
/// Prometheus provider reads it; None for no sample (Flagger: "no values
/// found", a failed check).
fn promql(prometheus: u16, query: &str) -> Option<f64> {
    let body = http_get(
        &format!("http://127.0.0.1:{prometheus}/api/v1/query"),
        Some(query),
    )?;
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    assert_eq!(json["status"], "success", "{query}: {json}");
    json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// A query template with Flagger's variables filled in, as its renderer
/// fills them (`{{ name }}`, `{{ namespace }}`, `{{ target }}`, `{{ service }}`,
/// `{{ ingress }}`, `{{ interval }}`, `{{ variables.KEY }}`); any other
/// placeholder is an error there, and here.
fn render(
    template: &str,
    model: &HashMap<&str, String>,
    variables: &HashMap<String, String>,
) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").expect("a closed placeholder") + start;
        let word = rest[start + 2..end].trim();
        let value = match word.strip_prefix("variables.") {
            Some(key) => variables.get(key).cloned(),
            None => model.get(word).cloned(),
        };
        out.push_str(
            &value.unwrap_or_else(|| panic!("{{{{ {word} }}}} is not a variable Flagger fills")),
        );
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

/// One gate of the Canary: its template's query and its bounds.
struct Gate {
    name: String,
    query: String,
    interval: String,
    min: Option<f64>,
    max: Option<f64>,
    variables: HashMap<String, String>,
}

fn documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(workspace_root().join(path)).unwrap();
    text.split("\n---\n")
        .map(|doc| serde_norway::from_str::<Value>(doc).unwrap_or_else(|e| panic!("{path}: {e}")))
        .filter(|doc| doc.is_mapping())
        .collect()
}

/// The gates of the Canary `name`, from the shipped manifests.
fn gates(name: &str) -> Vec<Gate> {
    let templates: HashMap<String, String> =
        documents("k8s/components/flagger/metric-templates.yaml")
            .iter()
            .filter(|d| d["kind"].as_str() == Some("MetricTemplate"))
            .map(|d| {
                let name = d["metadata"]["name"].as_str().unwrap().to_owned();
                assert_eq!(
                    d["spec"]["provider"]["type"].as_str(),
                    Some("prometheus"),
                    "{name}"
                );
                (name, d["spec"]["query"].as_str().unwrap().to_owned())
            })
            .collect();
    let canary = documents("k8s/components/flagger/canaries.yaml")
        .into_iter()
        .find(|d| {
            d["kind"].as_str() == Some("Canary") && d["metadata"]["name"].as_str() == Some(name)
        })
        .unwrap_or_else(|| panic!("no Canary {name}"));
    let metrics = canary["spec"]["analysis"]["metrics"]
        .as_sequence()
        .expect("metrics");
    metrics
        .iter()
        .map(|m| {
            let template = m["templateRef"]["name"].as_str().expect("a templateRef");
            let bound = |key: &str| {
                m["thresholdRange"][key]
                    .as_f64()
                    .or_else(|| m["thresholdRange"][key].as_i64().map(|v| v as f64))
            };
            let variables = m["templateVariables"]
                .as_mapping()
                .map(|vars| {
                    vars.iter()
                        .map(|(k, v)| {
                            (
                                k.as_str().unwrap().to_owned(),
                                v.as_str().unwrap().to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            Gate {
                name: m["name"].as_str().unwrap().to_owned(),
                query: templates
                    .get(template)
                    .unwrap_or_else(|| panic!("no MetricTemplate {template}"))
                    .clone(),
                interval: m["interval"].as_str().unwrap_or("1m").to_owned(),
                min: bound("min"),
                max: bound("max"),
                variables,
            }
        })
        .collect()
}

/// Outcomes of the calls the clients made, by gRPC code.
#[derive(Default)]
struct Tally(std::sync::Mutex<HashMap<String, u64>>);

impl Tally {
    fn add(&self, code: tonic::Code) {
        *self
            .0
            .lock()
            .unwrap()
            .entry(format!("{code:?}"))
            .or_default() += 1;
    }
    fn summary(&self) -> String {
        let mut all: Vec<_> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        all.sort();
        all.join(", ")
    }
}

/// Customers' traffic through Envoy for `TRAFFIC`: mostly orders that go
/// through, and what a real shop also sees: declined cards (an OK answer,
/// a FAILED order, the customer's reason), orders that do not exist
/// (NOT_FOUND) and invalid requests (INVALID_ARGUMENT), none of them the
/// version's fault; and the load test's synthetic customers.
async fn drive(envoy: SocketAddr, tokens: Arc<HashMap<String, String>>) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + TRAFFIC;
    let mut workers = Vec::new();
    for worker in 0..4 {
        let (tally, sent, tokens) = (tally.clone(), sent.clone(), tokens.clone());
        let channel = connect(envoy).await;
        workers.push(tokio::spawn(async move {
            let mut client = order_client(channel);
            let customer = format!("cust-canary-{worker}");
            while Instant::now() < deadline {
                let n = sent.fetch_add(1, Ordering::Relaxed);
                let code = match n % 20 {
                    0 => {
                        let mut request = tonic::Request::new(GetOrderRequest {
                            order_id: format!("ord_missing_{n}"),
                        });
                        authorize(&mut request, &tokens[&customer]);
                        client
                            .get_order(request)
                            .await
                            .err()
                            .map_or(tonic::Code::Ok, |s| s.code())
                    }
                    who => {
                        let (customer, items, card) = match who {
                            1 => (customer.as_str(), vec![("sku-mug", 0)], "pm_card_visa"),
                            2 => (
                                customer.as_str(),
                                vec![("sku-mug", 1)],
                                "pm_card_chargeDeclined",
                            ),
                            3 => ("synthetic-load-1", vec![("sku-mug", 1)], "pm_card_visa"),
                            _ => (customer.as_str(), vec![("sku-mug", 1)], "pm_card_visa"),
                        };
                        let mut request =
                            tonic::Request::new(order_message(customer, &items, card));
                        authorize(&mut request, &tokens[customer]);
                        client
                            .create_order(request)
                            .await
                            .err()
                            .map_or(tonic::Code::Ok, |s| s.code())
                    }
                };
                tally.add(code);
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    tally
}

fn envoy_counter(admin: u16, name: &str) -> u64 {
    let stats = http_get(
        &format!("http://127.0.0.1:{admin}/stats?filter={name}"),
        None,
    )
    .unwrap_or_default();
    stats
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gates_pass_a_good_canary_and_fail_each_bad_one() {
    let started = Instant::now();
    let (Some(envoy_bin), Some(prometheus_bin)) = (envoy(), tool("prometheus")) else {
        return;
    };
    // Two versions on one database, as in production: PostgreSQL (SQLite
    // files are not for two services at once).
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let database = Arc::new(database);
    let gates = gates("order");
    assert_eq!(
        gates.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
        ["success-rate", "latency-p99", "orders-failed-excess"],
        "the gates this test knows how to break"
    );

    let peers =
        TestApp::spawn_roles(database.clone(), &[Role::Inventory, Role::Payment], |_| {}).await;
    let mut inventory = peers.inventory().await;
    inventory
        .adjust_stock(AdjustStockRequest {
            product_id: "sku-mug".into(),
            delta: 1_000_000,
        })
        .await
        .expect("stock for every order");
    let order_app = |failpoints: &[&str]| {
        let failpoints: Vec<_> = failpoints
            .iter()
            .map(|f| parse_failpoint(f).unwrap())
            .collect();
        let (inventory, payment) = (peers.url(Role::Inventory), peers.url(Role::Payment));
        TestApp::spawn_roles(database.clone(), &[Role::Order], move |settings| {
            settings.order.inventory_url = inventory;
            settings.order.payment_url = payment;
            settings.failpoints.failpoints = failpoints;
        })
    };
    let primary = order_app(&[]).await;
    let customers = ["synthetic-load-1".to_owned()]
        .into_iter()
        .chain((0..4).map(|w| format!("cust-canary-{w}")));
    let tokens = Arc::new(
        customers
            .map(|c| (c.clone(), tokens::customer(&c)))
            .collect::<HashMap<_, _>>(),
    );

    // (analysis, the canary's failpoints, the gate it must fail)
    let analyses: [(&str, &[&str], Option<&str>); 4] = [
        ("good", &[], None),
        (
            "charges failing",
            &["saga.charge=fail(0.3)"],
            Some("orders-failed-excess"),
        ),
        (
            "slow charges",
            &["saga.charge=delay(700ms)"],
            Some("latency-p99"),
        ),
        (
            "internal errors",
            &["/ordermesh.order.v1.OrderService/CreateOrder=fail(0.1,internal)"],
            Some("success-rate"),
        ),
    ];
    let mut failures = Vec::new();
    let mut runs = 0;
    for (index, (analysis, failpoints, meant)) in analyses.into_iter().enumerate() {
        for attempt in 0..2 {
            runs += 1;
            let canary = order_app(failpoints).await;
            let canary_pod = format!("order-6c9f7d8b{index}-x2x7z{attempt}");
            let (listen, admin, prom) = (free_port(), free_port(), free_port());
            let _envoy = start_envoy(
                &envoy_bin,
                listen,
                admin,
                primary.addr(Role::Order),
                canary.addr(Role::Order),
                50,
            );
            let _prometheus = start_prometheus(
                &prometheus_bin,
                prom,
                &[
                    (primary.admin_addr(), PRIMARY_POD, "order-primary"),
                    (canary.admin_addr(), &canary_pod, "order"),
                ],
            );
            wait_for_http(&format!("127.0.0.1:{admin}")).await;
            eventually(
                Duration::from_secs(30),
                "Prometheus scrapes both",
                || async move { (promql(prom, "count(up == 1)") == Some(2.0)).then_some(()) },
            )
            .await;

            let tally = drive(SocketAddr::from(([127, 0, 0, 1], listen)), tokens.clone()).await;
            // The last scrape after the traffic.
            tokio::time::sleep(Duration::from_millis(2500)).await;
            let (to_primary, to_canary) = (
                envoy_counter(admin, "cluster.order-primary.upstream_rq_total"),
                envoy_counter(admin, "cluster.order-canary.upstream_rq_total"),
            );
            println!(
                "canary analysis '{analysis}' ({failpoints:?}): calls {}; Envoy sent {to_primary} to the primary, {to_canary} to the canary",
                tally.summary()
            );
            assert!(
                to_primary > 20 && to_canary > 20,
                "the weighted route split the calls"
            );

            let model: HashMap<&str, String> = [
                ("name", "order".to_owned()),
                ("namespace", NAMESPACE.to_owned()),
                ("target", "order".to_owned()),
                ("service", "order".to_owned()),
                ("ingress", String::new()),
            ]
            .into();
            let within = |value: Option<f64>, gate: &Gate| {
                value.is_some_and(|v| {
                    !v.is_nan()
                        && gate.min.is_none_or(|m| v >= m)
                        && gate.max.is_none_or(|m| v <= m)
                })
            };
            // (gate, what went wrong, whether the primary fails that gate too)
            let mut wrong: Vec<(String, String, bool)> = Vec::new();
            for gate in &gates {
                let mut model = model.clone();
                model.insert("interval", gate.interval.clone());
                let query = render(&gate.query, &model, &gate.variables);
                let value = promql(prom, &query);
                let passed = within(value, gate);
                // The same query on the primary's pods: what the same code
                // shows on this machine right now, for comparison.
                assert!(
                    query.contains(CANARY_PODS),
                    "{}: selects the canary's pods so: {query}",
                    gate.name
                );
                let on_primary = query.replace(CANARY_PODS, PRIMARY_PODS);
                let primary_value = promql(prom, &on_primary);
                let range = format!(
                    "{}..{}",
                    gate.min.map_or(String::new(), |v| v.to_string()),
                    gate.max.map_or(String::new(), |v| v.to_string())
                );
                println!(
                    "  {:<22} {:>10} (pass in {range}): {}   primary {}",
                    gate.name,
                    value.map_or("no value".to_owned(), |v| format!("{v:.4}")),
                    if passed { "pass" } else { "FAIL" },
                    primary_value.map_or("no value".to_owned(), |v| format!("{v:.4}")),
                );
                let should_fail = meant == Some(gate.name.as_str());
                if !should_fail && !passed && meant.is_none() {
                    wrong.push((
                        gate.name.clone(),
                        format!("the good canary failed {}: {value:?}\n{query}", gate.name),
                        !within(primary_value, gate),
                    ));
                }
                if should_fail && passed {
                    wrong.push((
                        gate.name.clone(),
                        format!(
                            "'{analysis}' passed {}, the gate meant to stop it: {value:?}\n{query}",
                            gate.name
                        ),
                        false,
                    ));
                }
            }
            // The load test's customers are counted, and apart from customers'.
            let synthetic = promql(prom, r#"sum(orders_created_total{origin="synthetic"})"#);
            println!("  synthetic orders, left out of the business gate: {synthetic:?}");
            assert!(
                synthetic.is_some_and(|n| n > 0.0),
                "synthetic orders are labelled"
            );
            drop(canary);
            // A good canary failing a gate its primary fails as well says the
            // machine is busy (other tests), not that the gate is wrong: once
            // more. Anything else stands.
            if attempt == 0
                && !wrong.is_empty()
                && wrong.iter().all(|(_, _, primary_too)| *primary_too)
            {
                println!(
                    "  inconclusive: the primary fails {:?} too; again",
                    wrong.iter().map(|w| &w.0).collect::<Vec<_>>()
                );
                continue;
            }
            failures.extend(wrong.into_iter().map(|(_, why, _)| why));
            break;
        }
    }
    println!(
        "canary gates: {} analyses ({runs} runs) in {:.1?}",
        analyses.len(),
        started.elapsed()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
