//! grpc-web through the gateway with the real curl: binary and text,
//! unary and streaming, error trailers, CORS preflight.

use base64::Engine;
use ordermesh_proto::order::v1::{GetOrderRequest, Order, OrderStatus, WatchOrderRequest};
use prost::Message;

use crate::curl::{self, Response, curl, curl_with_input, post_json, url};
use crate::gateway::mug_order;
use crate::harness::{Endpoints, TestApp};

/// One grpc-web frame: flag, big-endian length, payload.
pub fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Splits a grpc-web body into its messages and its trailers.
pub fn unframe(mut body: &[u8]) -> (Vec<Vec<u8>>, String) {
    let mut messages = Vec::new();
    let mut trailers = String::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        let payload = &body[5..5 + len];
        if body[0] & 0x80 != 0 {
            trailers.push_str(&String::from_utf8_lossy(payload));
        } else {
            messages.push(payload.to_vec());
        }
        body = &body[5 + len..];
    }
    assert!(body.is_empty(), "trailing bytes in a grpc-web body");
    (messages, trailers)
}

fn grpc_web_call(
    gw: std::net::SocketAddr,
    method: &str,
    content_type: &str,
    body: &[u8],
) -> Response {
    call(
        gw,
        &format!("/ordermesh.order.v1.OrderService/{method}"),
        content_type,
        body,
    )
}

/// A grpc-web call to `path` (`/pkg.Service/Method`) through the real curl.
pub fn call(gw: std::net::SocketAddr, path: &str, content_type: &str, body: &[u8]) -> Response {
    let target = url(gw, path);
    // As grpc-web clients do, ask for the response in the request's encoding.
    let accept = format!("accept: {content_type}");
    let content_type = format!("content-type: {content_type}");
    curl_with_input(
        &[
            "-X",
            "POST",
            "-H",
            &content_type,
            "-H",
            &accept,
            "-H",
            "x-grpc-web: 1",
            "-H",
            "origin: http://shop.example",
            "--data-binary",
            "@-",
            &target,
        ],
        Some(body),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_web_unary_and_streaming_over_http1() {
    if !curl::available() {
        return;
    }
    // The shop's site may call the gateway from its pages (CORS).
    let system = TestApp::spawn(
        std::sync::Arc::new(ordermesh_testkit::TestDatabase::sqlite()),
        |settings| settings.gateway.cors_allowed_origins = vec!["http://shop.example".into()],
    )
    .await;
    let gw = system.gateway_addr();
    let order = post_json(gw, "/v1/orders", &mug_order("web", 1, "pm_card_visa"), &[]).expect(200);
    let order_id = order["orderId"].as_str().unwrap().to_owned();

    // Binary grpc-web, unary.
    let request = GetOrderRequest {
        order_id: order_id.clone(),
    }
    .encode_to_vec();
    let response = grpc_web_call(
        gw,
        "GetOrder",
        "application/grpc-web+proto",
        &frame(0, &request),
    );
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("http://shop.example")
    );
    let (messages, trailers) = unframe(&response.body);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let fetched = Order::decode(messages[0].as_slice()).unwrap();
    assert_eq!(fetched.order_id, order_id);
    assert_eq!(fetched.status(), OrderStatus::Confirmed);

    // grpc-web-text (base64), server streaming.
    let b64 = base64::engine::general_purpose::STANDARD;
    let request = WatchOrderRequest {
        order_id: order_id.clone(),
    }
    .encode_to_vec();
    let body = b64.encode(frame(0, &request));
    let response = grpc_web_call(
        gw,
        "WatchOrder",
        "application/grpc-web-text",
        body.as_bytes(),
    );
    assert_eq!(response.status, 200);
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/grpc-web-text"),
        "{response:?}"
    );
    // Each chunk is base64 on its own; decode them one padded piece at a time.
    let mut decoded = Vec::new();
    let text = response.text();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let end = rest.find('=').map_or(rest.len(), |i| {
            let mut j = i;
            while rest[j..].starts_with('=') {
                j += 1;
            }
            j
        });
        decoded.extend(b64.decode(&rest[..end]).unwrap());
        rest = &rest[end..];
    }
    let (messages, trailers) = unframe(&decoded);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let last = Order::decode(messages.last().unwrap().as_slice()).unwrap();
    assert_eq!(last.status(), OrderStatus::Confirmed);

    // An error travels in the trailers.
    let request = GetOrderRequest {
        order_id: "ord_missing".into(),
    }
    .encode_to_vec();
    let response = grpc_web_call(
        gw,
        "GetOrder",
        "application/grpc-web+proto",
        &frame(0, &request),
    );
    let status = response
        .header("grpc-status")
        .map(str::to_owned)
        .unwrap_or_else(|| unframe(&response.body).1);
    assert!(status.contains('5'), "NOT_FOUND expected: {status}");

    // A browser's CORS preflight for grpc-web.
    let preflight = curl(&[
        "-X",
        "OPTIONS",
        "-H",
        "origin: http://shop.example",
        "-H",
        "access-control-request-method: POST",
        "-H",
        "access-control-request-headers: content-type,x-grpc-web,x-user-agent",
        &url(gw, "/ordermesh.order.v1.OrderService/GetOrder"),
    ]);
    assert!(
        preflight.status == 200 || preflight.status == 204,
        "{preflight:?}"
    );
    let allowed = preflight
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("x-grpc-web") || allowed == "*",
        "{preflight:?}"
    );
}
