//! The edge gateway through the real `curl`: REST transcoding from the
//! `google.api.http` annotations, every error class, idempotent replay, SSE,
//! grpc-web (binary and text), the OpenAPI document and edge hygiene.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use ordermesh_testkit::{TestDatabase, tool};
use serde_json::{Value, json};

use crate::curl::{self, Response, curl, post_json, sample, url};
use crate::harness::{Endpoints, Role, RoleProcess, System, TestApp, sibling_binary};

const JSON: &str = "content-type: application/json";

fn get(addr: std::net::SocketAddr, path: &str) -> Response {
    curl(&[&url(addr, path)])
}

pub fn mug_order(customer: &str, quantity: i64, token: &str) -> Value {
    json!({"customerId": customer, "items": [{"productId": "sku-mug", "quantity": quantity}], "paymentMethod": token})
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_runs_end_to_end_through_rest() {
    if !curl::available() {
        return;
    }
    let system = TestApp::sqlite().await;
    let gw = system.gateway_addr();

    let products = get(gw, "/v1/products").expect(200);
    let mug = products["products"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["productId"] == "sku-mug")
        .cloned()
        .expect("sku-mug in the catalog");
    // Canonical proto3 JSON: lowerCamelCase names, int64 as a string.
    assert!(mug["price"]["minorUnits"].is_string(), "{mug}");
    let stock_before = mug["available"].as_i64().unwrap();
    assert_eq!(
        get(gw, "/v1/products/sku-mug").expect(200)["productId"],
        "sku-mug"
    );

    let created = post_json(
        gw,
        "/v1/orders",
        &mug_order("rest-alice", 2, "pm_card_visa"),
        &["x-request-id: rest-flow-1"],
    );
    assert_eq!(created.header("x-request-id"), Some("rest-flow-1"));
    let order = created.expect(200);
    assert_eq!(order["status"], "ORDER_STATUS_CONFIRMED", "{order}");
    assert_eq!(order["total"]["minorUnits"], "2400", "{order}");
    assert!(
        order["createTime"].as_str().unwrap().ends_with('Z'),
        "{order}"
    );
    let order_id = order["orderId"].as_str().unwrap().to_owned();

    let fetched = get(gw, &format!("/v1/orders/{order_id}")).expect(200);
    assert_eq!(fetched["status"], "ORDER_STATUS_CONFIRMED");
    assert_eq!(
        get(gw, "/v1/products/sku-mug").expect(200)["available"].as_i64(),
        Some(stock_before - 2)
    );

    // Query parameters bind by JSON name or by the proto field name.
    for query in [
        "customerId=rest-alice&pageSize=5",
        "customer_id=rest-alice&page_size=5",
    ] {
        let listed = get(gw, &format!("/v1/orders?{query}")).expect(200);
        let ids: Vec<&str> = listed["orders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["orderId"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [order_id.as_str()], "{listed}");
    }

    // The proto field names are accepted in the body too.
    let by_proto_names = post_json(
        gw,
        "/v1/orders",
        &json!({"customer_id": "rest-bob", "items": [{"product_id": "sku-mug", "quantity": 1}], "payment_method": "pm_card_chargeDeclined"}),
        &[],
    )
    .expect(200);
    assert_eq!(by_proto_names["status"], "ORDER_STATUS_FAILED");
    assert_eq!(
        by_proto_names["failureReason"], "CARD_DECLINED",
        "{by_proto_names}"
    );

    let cancelled = post_json(
        gw,
        &format!("/v1/orders/{order_id}:cancel"),
        &json!({}),
        &[],
    )
    .expect(200);
    assert_eq!(cancelled["status"], "ORDER_STATUS_CANCELLED", "{cancelled}");
    // Cancelling again is idempotent; cancelling a failed order is refused
    // (FAILED_PRECONDITION maps to 400).
    let again = post_json(
        gw,
        &format!("/v1/orders/{order_id}:cancel"),
        &json!({}),
        &[],
    )
    .expect(200);
    assert_eq!(again["status"], "ORDER_STATUS_CANCELLED");
    let failed_id = by_proto_names["orderId"].as_str().unwrap();
    let refused = post_json(
        gw,
        &format!("/v1/orders/{failed_id}:cancel"),
        &json!({}),
        &[],
    )
    .expect(400);
    assert_eq!(refused["code"], 9, "{refused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_key_header_replays_the_same_order() {
    if !curl::available() {
        return;
    }
    let system = TestApp::sqlite().await;
    let gw = system.gateway_addr();
    let request = mug_order("rest-idem", 1, "pm_card_visa");
    let first = post_json(gw, "/v1/orders", &request, &["Idempotency-Key: key-1"]).expect(200);
    let replay = post_json(gw, "/v1/orders", &request, &["Idempotency-Key: key-1"]).expect(200);
    assert_eq!(first["orderId"], replay["orderId"]);
    // grpc-gateway's way of passing metadata reaches the service as well.
    let via_metadata = post_json(
        gw,
        "/v1/orders",
        &request,
        &["Grpc-Metadata-Idempotency-Key: key-1"],
    )
    .expect(200);
    assert_eq!(first["orderId"], via_metadata["orderId"]);

    let reused = post_json(
        gw,
        "/v1/orders",
        &mug_order("rest-idem", 3, "pm_card_visa"),
        &["Idempotency-Key: key-1"],
    )
    .expect(409);
    assert_eq!(reused["code"], 6);
    assert_eq!(
        reused["details"][0]["reason"], "IDEMPOTENCY_KEY_REUSED",
        "{reused}"
    );
    assert_eq!(
        reused["details"][0]["@type"],
        "type.googleapis.com/google.rpc.ErrorInfo"
    );

    let listed = get(gw, "/v1/orders?customerId=rest-idem").expect(200);
    assert_eq!(listed["orders"].as_array().unwrap().len(), 1, "{listed}");
}

/// Each malformed request gets its 4xx and a message naming the problem,
/// and none of them reaches the order service.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_4xx_and_never_reach_the_service() {
    if !curl::available() {
        return;
    }
    let system = TestApp::sqlite().await;
    let gw = system.gateway_addr();
    let metrics = || get(system.admin(), "/metrics").text();
    let create_calls = |text: &str| {
        sample(
            text,
            "requests_total",
            &[
                ("service", "order"),
                ("method", "/ordermesh.order.v1.OrderService/CreateOrder"),
            ],
        )
    };
    let before = create_calls(&metrics());
    let orders = url(gw, "/v1/orders");
    let big = format!("{{\"customerId\":\"{}\"}}", "a".repeat(70 * 1024));

    let cases: Vec<(&str, Vec<&str>, u16, &str)> = vec![
        (
            "malformed JSON",
            vec!["-X", "POST", "-H", JSON, "-d", "{\"customerId\":", &orders],
            400,
            "invalid request body",
        ),
        (
            "unknown field",
            vec![
                "-X",
                "POST",
                "-H",
                JSON,
                "-d",
                "{\"customerId\":\"a\",\"bogus\":1}",
                &orders,
            ],
            400,
            "bogus",
        ),
        (
            "wrong type",
            vec![
                "-X",
                "POST",
                "-H",
                JSON,
                "-d",
                "{\"customerId\":5}",
                &orders,
            ],
            400,
            "expected a string",
        ),
        (
            "missing body",
            vec!["-X", "POST", "-H", JSON, &orders],
            400,
            "body is required",
        ),
        (
            "wrong content type",
            vec![
                "-X",
                "POST",
                "-H",
                "content-type: text/plain",
                "-d",
                "{}",
                &orders,
            ],
            415,
            "application/json",
        ),
        (
            "body over the limit",
            vec!["-X", "POST", "-H", JSON, "--data-binary", &big, &orders],
            413,
            "65536 bytes",
        ),
        (
            "wrong method",
            vec!["-X", "DELETE", &orders],
            405,
            "GET, POST",
        ),
    ];
    for (what, args, status, needle) in cases {
        let response = curl(&args);
        let body = response.expect(status);
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{what}: {body}");
        assert!(
            body["code"].is_number() && body["details"].is_array(),
            "{what}: {body}"
        );
    }
    let unknown_param = get(gw, "/v1/orders?customerId=a&colour=red").expect(400);
    assert!(
        unknown_param["message"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "{unknown_param}"
    );
    let unknown_path = get(gw, "/v1/nothing/here").expect(404);
    assert!(
        unknown_path["message"]
            .as_str()
            .unwrap()
            .contains("/v1/nothing/here")
    );
    let wrong_query_type = get(gw, "/v1/orders?customerId=a&pageSize=many").expect(400);
    assert!(
        wrong_query_type["message"]
            .as_str()
            .unwrap()
            .contains("pageSize"),
        "{wrong_query_type}"
    );

    assert_eq!(
        create_calls(&metrics()),
        before,
        "a malformed request reached the service"
    );

    // Errors from the service keep their status and google.rpc.Status shape.
    let not_found = get(gw, "/v1/orders/ord_missing").expect(404);
    assert_eq!(not_found["code"], 5);
    assert_eq!(
        not_found["details"][0]["reason"], "ORDER_NOT_FOUND",
        "{not_found}"
    );
    let invalid = post_json(gw, "/v1/orders", &mug_order("x", 0, "pm_card_visa"), &[]).expect(400);
    assert_eq!(invalid["code"], 3, "{invalid}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_fields_can_be_ignored_by_flag() {
    if !curl::available() {
        return;
    }
    let system = TestApp::spawn(Arc::new(TestDatabase::sqlite()), |settings| {
        settings.gateway.ignore_unknown_fields = true;
    })
    .await;
    let mut request = mug_order("lenient", 1, "pm_card_visa");
    request["couponCode"] = json!("SPRING");
    let order = post_json(system.gateway_addr(), "/v1/orders", &request, &[]).expect(200);
    assert_eq!(order["status"], "ORDER_STATUS_CONFIRMED");
}

/// `curl -N` on the watch route: each state as an SSE `data:` event, and the
/// stream ends when the order is terminal.
#[tokio::test(flavor = "multi_thread")]
async fn watch_streams_server_sent_events() {
    if !curl::available() {
        return;
    }
    let system = TestApp::sqlite().await;
    let gw = system.gateway_addr();
    let order = post_json(gw, "/v1/orders", &mug_order("sse", 1, "pm_card_visa"), &[]).expect(200);
    let order_id = order["orderId"].as_str().unwrap();

    let watched = curl(&["-N", &url(gw, &format!("/v1/orders/{order_id}:watch"))]);
    assert_eq!(watched.status, 200);
    assert!(
        watched
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse_data(&watched.text());
    assert_eq!(
        events.last().unwrap()["status"],
        "ORDER_STATUS_CONFIRMED",
        "{events:?}"
    );
    assert!(events.iter().all(|e| e["orderId"] == order_id));

    // A watch of an unknown order fails before any event: a plain 404.
    let missing = curl(&["-N", &url(gw, "/v1/orders/ord_missing:watch")]).expect(404);
    assert_eq!(missing["details"][0]["reason"], "ORDER_NOT_FOUND");
}

/// The gateway as its own process: `/readyz` follows the order service, and
/// a stream cut by the upstream ends with an `error` event, not a silent 200.
#[tokio::test(flavor = "multi_thread")]
async fn upstream_loss_ends_streams_with_an_error_event_and_unreadies() {
    if !curl::available() {
        return;
    }
    let database = TestDatabase::sqlite();
    let mut system = System::start(Arc::new(TestDatabase::sqlite()), &[]).await;
    let order_url = format!("http://{}", system.addr(Role::Order));
    let inventory_url = format!("http://{}", system.addr(Role::Inventory));
    let gateway = RoleProcess::start(
        &database,
        "gateway",
        &[
            "--gateway-order-url",
            &order_url,
            "--gateway-inventory-url",
            &inventory_url,
        ],
    )
    .await;
    let gw = gateway.addr();
    assert_eq!(get(gw, "/healthz").status, 200);
    assert_eq!(get(gw, "/readyz").status, 200);

    let curl_path = tool("curl").unwrap();
    let mut stream = Command::new(curl_path)
        .args([
            "-sS",
            "-N",
            "--max-time",
            "30",
            &url(gw, "/v1/products:watch"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run curl -N");
    let mut lines = BufReader::new(stream.stdout.take().unwrap()).lines();
    // The first event: the stream is live.
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("data: "), "{first}");

    system.kill().await;
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let _ = stream.wait();
    let error_at = rest
        .iter()
        .position(|line| line == "event: error")
        .unwrap_or_else(|| panic!("no error event in {rest:?}"));
    let data = rest[error_at + 1]
        .strip_prefix("data: ")
        .expect("error data");
    let error: Value = serde_json::from_str(data).unwrap();
    assert!(
        error["code"].as_i64().unwrap() > 0 && error["message"].is_string(),
        "{error}"
    );

    let not_ready = get(gw, "/readyz");
    assert_eq!(not_ready.status, 503, "{}", not_ready.text());
    assert_eq!(
        get(gw, "/healthz").status,
        200,
        "liveness does not follow upstreams"
    );
}

fn sse_data(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_lists_every_annotated_rpc() {
    if !curl::available() {
        return;
    }
    let system = TestApp::sqlite().await;
    let document = get(system.gateway_addr(), "/openapi.json").expect(200);
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));

    let pool = prost_reflect::DescriptorPool::decode(ordermesh_proto::FILE_DESCRIPTOR_SET).unwrap();
    let http = pool
        .get_extension_by_name("google.api.http")
        .expect("google.api.http");
    let mut annotated = Vec::new();
    for service in pool.services() {
        for method in service.methods() {
            if method.options().has_extension(&http) {
                annotated.push(format!("{}_{}", service.name(), method.name()));
            }
        }
    }
    assert!(annotated.len() >= 8, "{annotated:?}");
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (verb, operation) in item.as_object().unwrap() {
            let id = operation["operationId"].as_str().unwrap().to_owned();
            assert!(operation["responses"]["200"].is_object(), "{verb} {path}");
            operations.push(id);
        }
    }
    annotated.sort();
    operations.sort();
    assert_eq!(operations, annotated);
    // Every schema it points at exists.
    let text = document.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(
            document["components"]["schemas"][name].is_object(),
            "dangling $ref {name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_are_compressed_and_carry_request_ids() {
    if !curl::available() {
        return;
    }
    let system = TestApp::sqlite().await;
    for encoding in ["gzip", "br"] {
        let header = format!("accept-encoding: {encoding}");
        let response = curl(&["-H", &header, &url(system.gateway_addr(), "/openapi.json")]);
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-encoding"), Some(encoding));
    }
    let response = get(system.gateway_addr(), "/v1/products");
    assert!(
        !response
            .header("x-request-id")
            .unwrap_or_default()
            .is_empty()
    );
}

/// The README's curl block, each command as written (with the test's port
/// for 8080 and the created order for ORDER_ID).
#[tokio::test(flavor = "multi_thread")]
async fn readme_curl_examples_run_as_written() {
    if !curl::available() {
        return;
    }
    let readme = include_str!("../../../../README.md");
    let block = readme
        .split("<!-- readme-curl-examples -->\n```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the README's curl block");
    let commands: Vec<String> = block
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect();
    assert!(
        commands.iter().filter(|c| c.starts_with("curl ")).count() >= 8,
        "{commands:?}"
    );

    // The one-command system, as the README's reader runs it.
    let system = TestApp::spawn(Arc::new(TestDatabase::sqlite()), |settings| {
        settings.identity = ordermesh_identity::IdentitySettings::default();
    })
    .await;
    let curl_dir = tool("curl").unwrap().parent().unwrap().to_owned();
    let orderctl_dir = sibling_binary("orderctl").parent().unwrap().to_owned();
    let path = format!(
        "{}:{}:{}",
        curl_dir.display(),
        orderctl_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let config = tempfile::tempdir().unwrap();
    let gateway = system.gateway_addr().to_string();
    // Each line runs in a shell of its own; what a `NAME=$(…)` line sets is
    // handed to the lines after it.
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut order_id = None::<String>;
    for command in commands {
        let mut command = command.replace("127.0.0.1:8080", &gateway);
        if command.contains("ORDER_ID") {
            let id = order_id
                .as_deref()
                .expect("an order was created before ORDER_ID is used");
            command = command.replace("ORDER_ID", id);
        }
        let assignment = command
            .split_once("=$(")
            .filter(|(name, _)| name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .map(|(name, _)| name.to_owned());
        let script = match &assignment {
            Some(name) => format!("{command} && printf %s \"${name}\""),
            // Fail on an HTTP error, bounded in time, as the README line is.
            None if command.starts_with("curl ") => {
                format!("{command} --fail-with-body --max-time 30")
            }
            None => command.clone(),
        };
        let output = Command::new("sh")
            .args(["-c", &script])
            .env("PATH", &path)
            .env("ORDERCTL_CONFIG_DIR", config.path())
            .env("ORDERCTL_GATEWAY_URL", format!("http://{gateway}"))
            .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run sh");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "`{command}` failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        if let Some(name) = assignment {
            assert!(!stdout.is_empty(), "`{command}` set {name} to nothing");
            vars.push((name, stdout));
            continue;
        }
        if !command.starts_with("curl ") {
            continue;
        }
        let json = stdout
            .lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .next_back()
            .map_or_else(
                || serde_json::from_str::<Value>(&stdout),
                serde_json::from_str,
            )
            .unwrap_or_else(|e| panic!("`{command}` printed no JSON ({e}): {stdout}"));
        // The first response with an order id is the README's POST.
        if order_id.is_none() {
            order_id = json["orderId"].as_str().map(str::to_owned);
        }
    }
    assert!(order_id.is_some(), "the README placed no order");
}

/// A standard OpenAPI fuzzer (schemathesis) drives every operation the
/// document lists, one at a time and then statefully along its links, with
/// a bearer token: no 5xx, and every response matches the document.
#[tokio::test(flavor = "multi_thread")]
async fn an_openapi_fuzzer_finds_no_server_error() {
    let Some(schemathesis) = tool("schemathesis") else {
        return;
    };
    let system = TestApp::sqlite().await;
    let base = url(system.gateway_addr(), "");
    // It keeps its example database in the working directory.
    let scratch = tempfile::tempdir().unwrap();
    // With a customer's token, so the order API answers beyond 401, and
    // with the stateful phase, which follows the document's links (create,
    // then get, cancel or watch the order made).
    let authorization = format!(
        "Authorization: Bearer {}",
        ordermesh_testkit::tokens::customer("schemathesis")
    );
    let output = Command::new(schemathesis)
        .current_dir(scratch.path())
        .args(["run", &format!("{base}/openapi.json"), "--url", &base])
        .args(["--header", &authorization])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        // Bounded: a fixed number of cases per operation, deterministic.
        .args(["--max-examples", "30", "--generation-deterministic"])
        .args(["--request-timeout", "10"])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        // Streams never end while stock exists; SSE is tested above.
        .args(["--exclude-path-regex", ":watch$"])
        .env("NO_COLOR", "1")
        .output()
        .expect("run schemathesis");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("Tested: 6"), "{report}");
}
