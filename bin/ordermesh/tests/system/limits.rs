//! Limits on what a client controls, each with a clear error: message
//! size, stream lifetime (body size, item counts, string lengths and page
//! sizes are in `validation.rs` and `gateway.rs`).

use std::sync::Arc;

use futures::StreamExt;
use ordermesh_proto::inventory::v1::WatchStockRequest;
use ordermesh_runtime::status::reason;
use ordermesh_testkit::TestDatabase;
use tonic::Code;

use crate::curl::{self, curl, url};
use crate::harness::{Endpoints, TestApp, authorize, order_message};

#[tokio::test(flavor = "multi_thread")]
async fn a_message_over_four_mebibytes_is_refused() {
    let system = TestApp::sqlite().await;
    let huge = "c".repeat(5 * 1024 * 1024);
    let mut request = tonic::Request::new(order_message(&huge, &[("sku-mug", 1)], "pm_card_visa"));
    authorize(
        &mut request,
        &ordermesh_testkit::tokens::customer("cust-huge"),
    );
    let error = system
        .order()
        .await
        .create_order(request)
        .await
        .expect_err("5 MiB is over the limit");
    assert!(
        matches!(error.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{error:?}"
    );
    assert!(
        error.message().contains("message length too large"),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_streams_end_at_their_longest_life_with_a_reason() {
    let system = TestApp::spawn(Arc::new(TestDatabase::sqlite()), |settings| {
        settings.inventory.max_stream_lifetime = std::time::Duration::from_secs(1);
    })
    .await;
    let mut stream = system
        .inventory()
        .await
        .watch_stock(WatchStockRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let mut products = 0;
    let ended = loop {
        match stream.next().await {
            Some(Ok(_)) => products += 1,
            Some(Err(status)) => break status,
            None => panic!("the stream closed without saying why"),
        }
    };
    assert!(products > 0);
    assert_eq!(ended.code(), Code::DeadlineExceeded);
    assert_eq!(reason(&ended).as_deref(), Some("STREAM_LIFETIME"));
    assert!(ended.message().contains("watch again"), "{ended:?}");

    // Through the gateway: a final SSE `error` event with the same reason.
    if !curl::available() {
        return;
    }
    let sse = curl(&["-N", &url(system.gateway_addr(), "/v1/products:watch")]).text();
    let (_, error) = sse
        .split_once("event: error\ndata: ")
        .expect("an error event");
    let error: serde_json::Value = serde_json::from_str(error.lines().next().unwrap()).unwrap();
    assert_eq!(error["code"], 4, "{error}");
    assert_eq!(error["details"][0]["reason"], "STREAM_LIFETIME", "{error}");
}
