//! Fronting a service the gateway has never heard of takes configuration
//! only: the bench's echo service, annotated, from a descriptor file
//! (`--descriptor-set`) and its address (`--upstream`), served over REST,
//! in the OpenAPI document, measured under its route, and open to grpc-web.

use std::sync::Arc;

use ordermesh_testkit::TestDatabase;
use ordermesh_testkit::process::{ChildProcess, Launch};
use serde_json::json;

use crate::curl::{self, curl, post_json, url};
use crate::grpc_web::{call, frame, unframe};
use crate::harness::{Role, TestApp, sibling_binary, workspace_root};

const ECHO: &str = "ordermesh.bench.v1.EchoService";

/// The echo proto's descriptor set with its imports, as `protoc
/// --include_imports -o` or `buf build -o` would write it.
pub fn echo_descriptor_set(dir: &std::path::Path) -> std::path::PathBuf {
    let root = workspace_root();
    let mut compiler = protox::Compiler::new([root.join("bin/bench/proto"), root.join("proto")])
        .expect("the proto roots");
    compiler.include_imports(true);
    compiler
        .open_files(["echo.proto"])
        .expect("echo.proto compiles");
    let path = dir.join("echo.binpb");
    std::fs::write(&path, compiler.encode_file_descriptor_set()).expect("write");
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_annotated_service_is_fronted_by_configuration_alone() {
    if !curl::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let descriptors = echo_descriptor_set(dir.path());
    let echo = ChildProcess::start(
        Launch::new(sibling_binary("ordermesh-bench"))
            .args(["echo-server", "--addr", "127.0.0.1:0"])
            .wait_for(["echo"]),
    )
    .await
    .expect("the echo server starts");
    let echo_url = format!("http://{}", echo.addr("echo"));

    let app = TestApp::spawn_roles(
        Arc::new(TestDatabase::sqlite()),
        &[Role::Gateway],
        |settings| {
            settings.gateway.upstreams = vec![(ECHO.to_owned(), echo_url.clone())];
            settings.gateway.descriptor_sets = vec![descriptors.clone()];
        },
    )
    .await;
    let gw = app.addr(Role::Gateway);

    // REST, from the annotation: bytes travel as base64 in JSON.
    let echoed = post_json(gw, "/v1/echo", &json!({"payload": "aGVsbG8="}), &[]).expect(200);
    assert_eq!(echoed, json!({"payload": "aGVsbG8="}));
    // The gateway's own checks apply to it as to any route.
    let unknown = post_json(gw, "/v1/echo", &json!({"colour": "red"}), &[]).expect(400);
    assert!(
        unknown["message"].as_str().unwrap().contains("colour"),
        "{unknown}"
    );

    // The OpenAPI document lists it.
    let document = curl(&[&url(gw, "/openapi.json")]).expect(200);
    assert!(
        document["paths"]["/v1/echo"]["post"].is_object(),
        "{}",
        document["paths"]
    );

    // grpc-web reaches it too (EchoMessage { payload: b"hi" } is 0a 02 68 69).
    let request = [0x0a, 0x02, b'h', b'i'];
    let response = call(
        gw,
        &format!("/{ECHO}/Echo"),
        "application/grpc-web+proto",
        &frame(0, &request),
    );
    assert_eq!(response.status, 200, "{response:?}");
    let (messages, trailers) = unframe(&response.body);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    assert_eq!(messages, [request.to_vec()]);

    // Measured under its route, with the client side of the call too.
    let served = app
        .metrics()
        .requests_total
        .with_label_values(&["gateway", "POST /v1/echo", "200"])
        .get();
    assert_eq!(served, 1);
    let called = app
        .metrics()
        .client_requests_total
        .with_label_values(&["gateway", "/ordermesh.bench.v1.EchoService/Echo", "OK"])
        .get();
    assert_eq!(called, 2, "the REST call and the grpc-web call");
}
