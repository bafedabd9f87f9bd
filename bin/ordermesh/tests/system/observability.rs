//! One order followed through metrics (scraped by a real Prometheus),
//! traces (received by an OTLP endpoint in the test) and logs.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use ordermesh_testkit::{TestDatabase, tool};

use crate::harness::{
    Endpoints, System, TestApp, eventually, free_port, order_request, workspace_root,
};

/// GET with the real curl; the body, or None on any failure.
fn curl(url: &str, query: Option<&str>) -> Option<String> {
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

/// The single value of an instant PromQL query, if it has one.
fn promql(prometheus: &str, query: &str) -> Option<f64> {
    let body = curl(&format!("http://{prometheus}/api/v1/query"), Some(query))?;
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// A Prometheus server, stopped (and its data folder removed) when dropped.
struct Prometheus {
    child: std::process::Child,
    _data: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_orders_and_requests() {
    let Some(prometheus_bin) = tool("prometheus") else {
        return;
    };
    let system = TestApp::sqlite().await;
    let mut orders = system.order().await;
    for token in ["pm_card_visa", "pm_card_visa", "pm_card_chargeDeclined"] {
        orders
            .create_order(order_request("cust-prom", &[("sku-mug", 1)], token))
            .await
            .expect("create");
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ordermesh\n    static_configs:\n      - targets: ['{}']\n",
            system.admin()
        ),
    )
    .expect("write config");
    let listen = format!("127.0.0.1:{}", free_port());
    let child = Command::new(prometheus_bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={listen}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start prometheus");
    let _prometheus = Prometheus { child, _data: dir };

    let query = |q: &'static str, expected: f64| {
        let listen = listen.clone();
        async move {
            eventually(Duration::from_secs(60), q, || {
                let listen = listen.clone();
                async move { (promql(&listen, q) == Some(expected)).then_some(()) }
            })
            .await;
        }
    };
    query(r#"sum(orders_created_total{status="CONFIRMED"})"#, 2.0).await;
    query(r#"sum(orders_created_total{status="FAILED"})"#, 1.0).await;
    query(
        r#"sum(requests_total{service="order",method="/ordermesh.order.v1.OrderService/CreateOrder",code="OK"})"#,
        3.0,
    )
    .await;
    query(r#"sum(payments_processed_total{status="DECLINED"})"#, 1.0).await;
    query(r#"sum(client_requests_total{service="order",method="/ordermesh.payment.v1.PaymentService/ProcessPayment"})"#, 3.0).await;
    query(r#"current_stock{product_id="sku-mug"}"#, 198.0).await;
}

/// Every metric a shipped dashboard queries is one the system exports.
#[tokio::test(flavor = "multi_thread")]
async fn dashboards_query_only_exported_metrics() {
    let system = TestApp::sqlite().await;
    system
        .order()
        .await
        .create_order(order_request(
            "cust-dash",
            &[("sku-mug", 1)],
            "pm_card_visa",
        ))
        .await
        .expect("create");
    let exposition = curl(&format!("http://{}/metrics", system.admin()), None).expect("scrape");
    let exported: HashSet<&str> = exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .collect();
    for name in [
        "requests_total",
        "request_duration_seconds_bucket",
        "active_connections",
        "orders_created_total",
        "payments_processed_total",
        "inventory_reservations_total",
        "current_stock",
        "client_requests_total",
        "process_resident_memory_bytes",
        "saga_oldest_unsettled_age_seconds",
        "saga_lease_takeovers_total",
        "saga_stale_steps_refused_total",
        "sqlite_transactions_total",
        "sqlite_commits_total",
    ] {
        assert!(
            exported.contains(name),
            "{name} is not exported:\n{exposition}"
        );
    }

    let not_metrics: HashSet<&str> = [
        "sum",
        "by",
        "rate",
        "histogram_quantile",
        "min",
        "max",
        "label_values",
        "service",
        "code",
        "method",
        "status",
        "product_id",
        "le",
        "instance",
        "__all",
    ]
    .into();
    let dashboards = workspace_root().join("deploy/observability/grafana/dashboards");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dashboards).expect("dashboards folder") {
        let path = entry.expect("entry").path();
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read"))
                .expect("valid JSON");
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"].as_str().expect("expr");
                // Label values sit between quotes; metric names never do.
                let unquoted: String = expr.split('"').step_by(2).collect();
                let names = unquoted
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|word| word.contains('_') && !not_metrics.contains(word))
                    // Exported only where a relay runs (with NATS):
                    // events.rs checks those against such an App.
                    .filter(|word| !word.starts_with("outbox_"));
                for name in names {
                    assert!(
                        exported.contains(name),
                        "{}: {name} in {expr:?} is not exported",
                        path.display()
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 10, "only {checked} metric references found");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_order_is_one_trace_across_every_role() {
    let (collector, received) = crate::otlp::http_receiver().await;
    let endpoint = format!("http://{collector}");
    let system = System::start_with_env(
        Arc::new(TestDatabase::sqlite()),
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;

    // curl starts the trace and places the order through the gateway.
    if !crate::curl::available() {
        return;
    }
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("traceparent: 00-{trace_id}-{caller_span}-01");
    let body = r#"{"customerId":"cust-trace","items":[{"productId":"sku-kettle","quantity":1}],"paymentMethod":"pm_card_visa"}"#;
    let placed = crate::curl::curl(&[
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-H",
        &traceparent,
        "-H",
        "x-request-id: req-trace-1",
        "--data-binary",
        body,
        &crate::curl::url(system.gateway_addr(), "/v1/orders"),
    ])
    .expect(200);
    assert_eq!(placed["status"], "ORDER_STATUS_CONFIRMED", "{placed}");
    let order_id = placed["orderId"].as_str().unwrap().to_owned();

    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let wanted = [
        ("gateway", "POST /v1/orders"),
        ("gateway", "/ordermesh.order.v1.OrderService/CreateOrder"),
        ("order", "/ordermesh.order.v1.OrderService/CreateOrder"),
        (
            "order",
            "/ordermesh.inventory.v1.InventoryService/ReserveStock",
        ),
        (
            "inventory",
            "/ordermesh.inventory.v1.InventoryService/ReserveStock",
        ),
        (
            "payment",
            "/ordermesh.payment.v1.PaymentService/ProcessPayment",
        ),
        (
            "inventory",
            "/ordermesh.inventory.v1.InventoryService/CommitReservation",
        ),
    ];
    let spans = eventually(Duration::from_secs(30), "spans from every role", || {
        let received = received.clone();
        async move {
            let spans: Vec<_> = received
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, span)| hex(&span.trace_id) == trace_id)
                .cloned()
                .collect();
            let have: HashSet<(&str, &str)> = spans
                .iter()
                .map(|(s, span)| (s.as_str(), span.name.as_str()))
                .collect();
            wanted.iter().all(|w| have.contains(w)).then_some(spans)
        }
    })
    .await;

    // Parent links: the gateway's server span hangs off curl's; the order's
    // server span off the gateway's client span; each downstream server span
    // off the order's client span for that call.
    let by_id: HashMap<String, &(String, opentelemetry_proto::tonic::trace::v1::Span)> =
        spans.iter().map(|s| (hex(&s.1.span_id), s)).collect();
    let server = |service: &str, name: &str| {
        spans
            .iter()
            .find(|(s, span)| s == service && span.name == name && span.kind == 2)
            .unwrap_or_else(|| panic!("no server span {service} {name}"))
    };
    let edge = server("gateway", "POST /v1/orders");
    assert_eq!(hex(&edge.1.parent_span_id), caller_span);
    let create = server("order", "/ordermesh.order.v1.OrderService/CreateOrder");
    let create_parent = by_id
        .get(&hex(&create.1.parent_span_id))
        .expect("CreateOrder's parent was exported");
    assert_eq!(create_parent.0, "gateway");
    assert_eq!(create_parent.1.kind, 3, "the gateway's client span");
    assert_eq!(hex(&create_parent.1.parent_span_id), hex(&edge.1.span_id));
    for (service, name) in [
        (
            "inventory",
            "/ordermesh.inventory.v1.InventoryService/ReserveStock",
        ),
        (
            "payment",
            "/ordermesh.payment.v1.PaymentService/ProcessPayment",
        ),
        (
            "inventory",
            "/ordermesh.inventory.v1.InventoryService/CommitReservation",
        ),
    ] {
        let downstream = server(service, name);
        let parent = by_id
            .get(&hex(&downstream.1.parent_span_id))
            .unwrap_or_else(|| panic!("{name}'s parent was not exported"));
        assert_eq!(parent.0, "order", "{name} is called by the order service");
        assert_eq!(parent.1.kind, 3, "{name}'s parent is a client span");
        assert_eq!(parent.1.name, *name);
    }

    // The order's log lines carry the same trace id and request id.
    let logs = system.logs();
    let placed = logs
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["msg"] == "order placed" && line["order_id"] == order_id.as_str())
        .expect("an 'order placed' line");
    assert_eq!(placed["trace_id"], trace_id, "{placed}");
    assert_eq!(placed["request_id"], "req-trace-1", "{placed}");
    assert_eq!(placed["service"], "order", "{placed}");
    assert!(
        placed["ts"].as_str().is_some_and(|ts| ts.ends_with('Z')),
        "{placed}"
    );
    assert_eq!(placed["level"], "INFO");
}
