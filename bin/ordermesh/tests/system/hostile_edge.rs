//! Hostile clients at the edge (issue 17, items 4–7): each attack as a
//! bounded test against the real system on loopback, printing the figure it
//! saw. A grpc-web body over the limit, cross-site form posts, a foreign
//! origin, a framed or injected page, client headers that would steer the
//! sidecars, and one noisy client at the Envoy edge.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request};
use http_body::Frame;
use http_body_util::StreamBody;
use ordermesh_proto::order::v1::{CreateOrderRequest, OrderItem};
use ordermesh_testkit::TestDatabase;
use ordermesh_testkit::tool;
use prost::Message;
use serde_json::json;

use crate::curl::{self, Response, curl, get_text, post_json, sample, url};
use crate::grpc_web::{frame, unframe};
use crate::harness::{Endpoints, Role, TestApp};

const CREATE_ORDER: &str = "/ordermesh.order.v1.OrderService/CreateOrder";
const ECHO: &str = "ordermesh.bench.v1.EchoService";

/// The order service's `requests_total` for one method, every code, from
/// the App's `/metrics`.
fn order_requests(system: &TestApp, method: &str) -> f64 {
    let metrics = get_text(&url(system.admin_addr(), "/metrics"));
    // + 0.0: an empty sum is -0.0, which would print as "-0".
    sample(
        &metrics,
        "requests_total",
        &[("service", "order"), ("method", method)],
    ) + 0.0
}

/// `curl ARGS` with `input` on stdin, without asserting that curl succeeded
/// (a server may close the connection of a body it refuses).
fn curl_lenient(args: &[&str], input: &[u8]) -> Result<Response, String> {
    use std::io::Write;
    let token = format!(
        "Authorization: Bearer {}",
        ordermesh_testkit::tokens::customer("hostile")
    );
    let mut child = Command::new(tool("curl").expect("checked by the caller"))
        .args([
            "-sS",
            "-i",
            "--max-time",
            "30",
            "-H",
            "Expect:",
            "-H",
            &token,
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run curl");
    let mut stdin = child.stdin.take().expect("stdin");
    // The server may stop reading; a broken pipe is its answer, not ours.
    let _ = stdin.write_all(input);
    drop(stdin);
    let output = child.wait_with_output().expect("wait for curl");
    let raw = output.stdout;
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status line: {head}"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    })
}

/// The grpc-status of a grpc-web answer: in its headers (trailers-only) or
/// in its trailer frame.
fn grpc_status(response: &Response) -> String {
    if let Some(status) = response.header("grpc-status") {
        return status.to_owned();
    }
    let (_, trailers) = unframe(&response.body);
    trailers
        .lines()
        .find_map(|line| line.trim().strip_prefix("grpc-status:"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_web_body_over_the_limit_never_reaches_the_order_service() {
    if !curl::available() {
        return;
    }
    let system = TestApp::sqlite().await;
    let gw = system.gateway_addr();
    let target = url(gw, CREATE_ORDER);
    let huge = CreateOrderRequest {
        customer_id: "hostile".into(),
        items: vec![OrderItem {
            product_id: "sku-mug".into(),
            quantity: 1,
            ..Default::default()
        }],
        payment_method: "x".repeat(3 << 20),
    }
    .encode_to_vec();
    let body = frame(0, &huge);
    let grpc_web = [
        "-H",
        "content-type: application/grpc-web+proto",
        "-H",
        "x-grpc-web: 1",
    ];
    let before = order_requests(&system, CREATE_ORDER);

    // 1. Declared (Content-Length), HTTP/1.1 as browsers send it;
    // 2. streamed with no length (chunked), HTTP/1.1;
    // 3. streamed with no length, HTTP/2 data frames: 80 KiB, over the
    //    limit but within one flow-control window, so that curl has sent
    //    it all when the answer comes (a 3 MiB one is refused as well, but
    //    curl reports the stream's reset instead of the answer).
    let just_over = frame(0, &vec![0x0a; 80 << 10]);
    let cases: [(&str, Vec<&str>, &[u8]); 3] = [
        (
            "3 MiB, content-length, HTTP/1.1",
            vec!["--http1.1", "--data-binary", "@-"],
            &body,
        ),
        (
            "3 MiB, chunked, HTTP/1.1",
            vec![
                "--http1.1",
                "-H",
                "transfer-encoding: chunked",
                "--data-binary",
                "@-",
            ],
            &body,
        ),
        (
            "80 KiB, no length, HTTP/2",
            vec!["--http2-prior-knowledge", "-T", "-"],
            &just_over,
        ),
    ];
    for (name, transfer, body) in cases {
        let mut args = vec!["-X", "POST"];
        args.extend(grpc_web);
        args.extend(transfer);
        args.push(&target);
        let started = Instant::now();
        let response = curl_lenient(&args, body).unwrap_or_else(|e| panic!("{name}: {e}"));
        let elapsed = started.elapsed();
        assert_eq!(response.status, 200, "{name}: {response:?}");
        assert_eq!(
            grpc_status(&response),
            "8",
            "{name}: RESOURCE_EXHAUSTED expected"
        );
        println!(
            "grpc-web CreateOrder of {name}: HTTP {} grpc-status {} in {elapsed:?}",
            response.status,
            grpc_status(&response)
        );
    }
    let after = order_requests(&system, CREATE_ORDER);
    println!("order service CreateOrder requests_total: {before:.0} before, {after:.0} after");
    assert_eq!(before, after, "a refused body reached the order service");

    // A body under the limit still goes through, and is counted.
    let small = CreateOrderRequest {
        customer_id: "hostile".into(),
        items: vec![OrderItem {
            product_id: "sku-mug".into(),
            quantity: 1,
            ..Default::default()
        }],
        payment_method: "pm_card_visa".into(),
    }
    .encode_to_vec();
    let mut args = vec!["-X", "POST", "--http1.1"];
    args.extend(grpc_web);
    args.extend(["--data-binary", "@-", &target]);
    let placed = curl_lenient(&args, &frame(0, &small)).expect("an answer");
    assert_eq!(grpc_status(&placed), "0", "{placed:?}");
    assert_eq!(order_requests(&system, CREATE_ORDER), after + 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn cross_site_form_and_text_posts_are_refused_before_any_service() {
    if !curl::available() {
        return;
    }
    let system = TestApp::sqlite().await;
    let gw = system.gateway_addr();
    let order = r#"{"customerId":"alice","items":[{"productId":"sku-mug","quantity":1}],"paymentMethod":"pm_card_visa"}"#;
    let before = order_requests(&system, CREATE_ORDER);
    let cancel_method = "/ordermesh.order.v1.OrderService/CancelOrder";
    let cancels_before = order_requests(&system, cancel_method);
    // What an HTML form or a no-preflight fetch can send cross-site.
    for content_type in [
        "application/x-www-form-urlencoded",
        "text/plain",
        "text/plain; charset=utf-8",
        "multipart/form-data; boundary=xyz",
    ] {
        let header = format!("content-type: {content_type}");
        for path in ["/v1/orders", "/v1/orders/ord_x:cancel"] {
            let refused = curl(&["-X", "POST", "-H", &header, "-d", order, &url(gw, path)]);
            let body = refused.expect(415);
            assert_eq!(body["code"], 3, "{content_type} {path}: {body}");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("application/json"),
                "{body}"
            );
        }
    }
    // No content type at all (what `curl -d` would have been, had it not
    // declared form encoding) is refused too.
    let untyped = curl(&[
        "-X",
        "POST",
        "-H",
        "content-type:",
        "-d",
        order,
        &url(gw, "/v1/orders"),
    ]);
    assert_eq!(untyped.status, 415, "{}", untyped.text());
    assert_eq!(order_requests(&system, CREATE_ORDER), before);
    assert_eq!(order_requests(&system, cancel_method), cancels_before);
    println!(
        "form, multipart, text/plain and untyped posts: 415; order service CreateOrder calls {before:.0} before and after"
    );

    // JSON, with a charset, goes through; a body-less GET needs no type.
    let placed = curl(&[
        "-X",
        "POST",
        "-H",
        "content-type: application/json; charset=utf-8",
        "-d",
        order,
        &url(gw, "/v1/orders"),
    ]);
    placed.expect(200);
    curl(&[&url(gw, "/v1/products")]).expect(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_grants_only_the_origins_configured() {
    if !curl::available() {
        return;
    }
    let preflight = |gw: SocketAddr, origin: &str| {
        curl(&[
            "-X",
            "OPTIONS",
            "-H",
            &format!("origin: {origin}"),
            "-H",
            "access-control-request-method: POST",
            "-H",
            "access-control-request-headers: content-type,authorization",
            &url(gw, "/v1/orders"),
        ])
    };
    let simple = |gw: SocketAddr, origin: &str| {
        curl(&["-H", &format!("origin: {origin}"), &url(gw, "/v1/products")])
    };

    // Closed by default: no grant for a foreign page, preflight or not.
    let closed = TestApp::sqlite().await;
    let gw = closed.gateway_addr();
    for response in [
        preflight(gw, "https://evil.example"),
        simple(gw, "https://evil.example"),
    ] {
        assert_eq!(
            response.header("access-control-allow-origin"),
            None,
            "{response:?}"
        );
    }

    // Opened for the origins named, and only those.
    let open = TestApp::spawn(Arc::new(TestDatabase::sqlite()), |settings| {
        settings.gateway.cors_allowed_origins = vec![
            "https://shop.example".into(),
            "https://admin.shop.example".into(),
        ];
    })
    .await;
    let gw = open.gateway_addr();
    for origin in ["https://shop.example", "https://admin.shop.example"] {
        for response in [preflight(gw, origin), simple(gw, origin)] {
            assert_eq!(
                response.header("access-control-allow-origin"),
                Some(origin),
                "{response:?}"
            );
        }
    }
    let foreign = preflight(gw, "https://evil.example");
    assert_eq!(
        foreign.header("access-control-allow-origin"),
        None,
        "{foreign:?}"
    );
    println!("CORS: foreign origin no grant (closed and configured); configured origins granted");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_and_every_answer_carry_browser_protections() {
    if !curl::available() {
        return;
    }
    let system = TestApp::sqlite().await;
    let gw = system.gateway_addr();
    let page = curl(&[&url(gw, "/")]);
    assert_eq!(page.status, 200);
    let policy = page
        .header("content-security-policy")
        .expect("a CSP")
        .to_owned();
    for part in [
        "default-src 'none'",
        "script-src 'sha256-",
        "style-src 'sha256-",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(part), "{part}: {policy}");
    }
    assert!(
        !policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"),
        "{policy}"
    );
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    println!("page CSP: {policy}");

    // nosniff on every answer: pages, JSON, errors, grpc-web.
    let answers = [
        page,
        curl(&[&url(gw, "/v1/products")]),
        curl(&[&url(gw, "/openapi.json")]),
        curl(&[&url(gw, "/no/such/page")]),
        curl(&[
            "-X",
            "POST",
            "-H",
            "content-type: text/plain",
            "-d",
            "x",
            &url(gw, "/v1/orders"),
        ]),
        crate::grpc_web::call(
            gw,
            "/ordermesh.inventory.v1.InventoryService/ListProducts",
            "application/grpc-web+proto",
            &frame(0, &[]),
        ),
    ];
    for answer in &answers {
        assert_eq!(
            answer.header("x-content-type-options"),
            Some("nosniff"),
            "{} {:?}",
            answer.status,
            answer.headers
        );
    }
}

/// A gRPC server that records the headers of every request and answers each
/// with one empty message and OK: what a service behind the gateway (or
/// behind Envoy) receives.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(String, HeaderMap)>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start() -> Self {
        let seen: Arc<Mutex<Vec<(String, HeaderMap)>>> = Arc::default();
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |request: Request<Body>| {
            let record = record.clone();
            async move {
                let path = request.uri().path().to_owned();
                record
                    .lock()
                    .unwrap()
                    .push((path, request.headers().clone()));
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", "0".parse().unwrap());
                // As a gRPC server does: no length, the status in trailers.
                let frames = [
                    Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(&[0; 5]))),
                    Ok(Frame::trailers(trailers)),
                ];
                let body = StreamBody::new(futures::stream::iter(frames));
                axum::response::Response::builder()
                    .header("content-type", "application/grpc")
                    .body(Body::new(body))
                    .unwrap()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            seen,
            _server: server,
        }
    }

    /// The names of the headers of every request to `path` so far.
    fn names(&self, path: &str) -> Vec<Vec<String>> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(seen, _)| seen == path)
            .map(|(_, headers)| headers.keys().map(|k| k.as_str().to_owned()).collect())
            .collect()
    }
}

/// Headers a client could use to steer a sidecar, or that are not its to set.
const HOSTILE: &[&str] = &[
    "x-envoy-max-retries: 10",
    "Grpc-Metadata-x-envoy-max-retries: 10",
    "x-envoy-retry-on: 5xx",
    "Grpc-Metadata-X-Envoy-Upstream-Rq-Timeout-Ms: 1",
    "grpc-metadata-grpc-status: 0",
    "x-envoy-hostile-probe: 1",
    "cookie: session=secret",
    "x-forwarded-for: 10.0.0.1",
    "proxy-authorization: Basic eA==",
    "keep-alive: timeout=5",
];

#[tokio::test(flavor = "multi_thread")]
async fn client_headers_reach_a_service_only_by_allow_list() {
    if !curl::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let descriptors = crate::fronting::echo_descriptor_set(dir.path());
    let recorder = Recorder::start().await;
    let echo_url = format!("http://{}", recorder.addr);
    let app = TestApp::spawn_roles(
        Arc::new(TestDatabase::sqlite()),
        &[Role::Gateway],
        |settings| {
            settings.gateway.upstreams = vec![(ECHO.to_owned(), echo_url.clone())];
            settings.gateway.descriptor_sets = vec![descriptors.clone()];
            settings.gateway.forward_headers = vec!["x-tenant".into()];
        },
    )
    .await;
    let gw = app.addr(Role::Gateway);
    let mut headers: Vec<&str> = HOSTILE.to_vec();
    headers.extend([
        "idempotency-key: k-rest",
        "x-request-id: r-1",
        "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "x-tenant: acme",
    ]);

    // REST.
    post_json(gw, "/v1/echo", &json!({"payload": "aGk="}), &headers).expect(200);
    // grpc-web, the same headers.
    let target = url(gw, &format!("/{ECHO}/Echo"));
    let mut args = vec![
        "-X",
        "POST",
        "-H",
        "content-type: application/grpc-web+proto",
        "-H",
        "x-grpc-web: 1",
        "-H",
        "Grpc-Metadata-Idempotency-Key: k-web",
    ];
    for header in HOSTILE {
        args.extend(["-H", header]);
    }
    args.extend(["-H", "x-tenant: acme", "--data-binary", "@-", &target]);
    let response = curl_lenient(&args, &frame(0, &[])).expect("an answer");
    assert_eq!(grpc_status(&response), "0", "{response:?}");

    let seen = recorder.names(&format!("/{ECHO}/Echo"));
    assert_eq!(seen.len(), 2, "one REST and one grpc-web call: {seen:?}");
    for names in &seen {
        println!("the service received: {names:?}");
        for name in names {
            assert!(
                !name.starts_with("x-envoy-")
                    && !matches!(
                        name.as_str(),
                        "cookie"
                            | "x-forwarded-for"
                            | "proxy-authorization"
                            | "keep-alive"
                            | "x-grpc-web"
                            | "grpc-status"
                    ),
                "{name} reached the service: {names:?}"
            );
        }
        assert!(names.iter().any(|n| n == "idempotency-key"), "{names:?}");
        assert!(
            names.iter().any(|n| n == "x-tenant"),
            "the operator's header: {names:?}"
        );
    }
    assert!(seen[0].iter().any(|n| n == "x-request-id"), "{:?}", seen[0]);
    assert!(seen[0].iter().any(|n| n == "traceparent"), "{:?}", seen[0]);
}

#[path = "hostile_envoy.rs"]
mod envoy;
