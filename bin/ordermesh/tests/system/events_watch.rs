//! Events without a broker: `EventService.WatchEvents` over gRPC, and its
//! SSE form through the gateway, resumable with `Last-Event-ID`.

use std::time::Duration;

use ordermesh_app::Role;
use ordermesh_testkit::TestApp;

use crate::harness::{connect, order_client, order_request, wait_terminal};

/// The next `count` events of a watch, each within 10 s.
pub async fn next_events(
    stream: &mut tonic::Streaming<ordermesh_proto::events::v1::WatchEventsResponse>,
    count: usize,
) -> Vec<ordermesh_proto::events::v1::WatchEventsResponse> {
    let mut events = Vec::new();
    for _ in 0..count {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("an event within 10 s")
            .expect("the watch goes on")
            .expect("not ended");
        events.push(next);
    }
    events
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_events_follows_the_outbox_from_a_cursor_without_a_broker() {
    use ordermesh_proto::events::v1::event_service_client::EventServiceClient;
    use ordermesh_proto::events::v1::{EventStream, WatchEventsRequest, watch_events_response};

    let app = TestApp::sqlite().await;
    let channel = connect(app.addr(Role::Order)).await;
    let mut orders = order_client(channel.clone());
    let mut place = async |token: &str| {
        let order = orders
            .create_order(order_request("events-watch", &[("sku-mug", 1)], token))
            .await
            .expect("placed")
            .into_inner();
        wait_terminal(&mut orders, &order.order_id, Duration::from_secs(20))
            .await
            .order_id
    };
    let first = place("pm_card_visa").await;
    let mut events =
        EventServiceClient::with_interceptor(channel.clone(), crate::harness::OperatorUnlessGiven);
    let watch = |cursor: &str| WatchEventsRequest {
        stream: EventStream::Orders.into(),
        cursor: cursor.to_owned(),
    };
    let mut stream = events
        .watch_events(watch(""))
        .await
        .expect("watch")
        .into_inner();
    let got = next_events(&mut stream, 2).await;
    let subjects: Vec<&str> = got.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(
        subjects,
        ["ordermesh.orders.placed", "ordermesh.orders.confirmed"]
    );
    // Live: an order placed while watching arrives.
    let second = place("pm_card_chargeDeclined").await;
    let live = next_events(&mut stream, 2).await;
    let order_of = |e: &ordermesh_proto::events::v1::WatchEventsResponse| match &e.event {
        Some(watch_events_response::Event::Order(order)) => order.order_id.clone(),
        other => panic!("an order event: {other:?}"),
    };
    assert_eq!(order_of(&got[0]), first);
    assert_eq!(order_of(&live[1]), second);
    assert_eq!(live[1].subject, "ordermesh.orders.failed");
    drop(stream);

    // Resumed after the first event's cursor: the rest, nothing missed.
    let mut resumed = events
        .watch_events(watch(&got[0].cursor))
        .await
        .expect("watch")
        .into_inner();
    let rest = next_events(&mut resumed, 3).await;
    let cursors: Vec<&str> = rest.iter().map(|e| e.cursor.as_str()).collect();
    assert_eq!(cursors, [&got[1].cursor, &live[0].cursor, &live[1].cursor]);

    // Refusals.
    let mut customer = tonic::Request::new(watch(""));
    crate::harness::authorize(
        &mut customer,
        &ordermesh_testkit::tokens::customer("events-watch"),
    );
    let refused = events
        .watch_events(customer)
        .await
        .expect_err("not an admin");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let bad = events
        .watch_events(watch("x"))
        .await
        .expect_err("a bad cursor");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let stock = WatchEventsRequest {
        stream: EventStream::Stock.into(),
        cursor: String::new(),
    };
    let elsewhere = events
        .watch_events(stock)
        .await
        .expect_err("stock is inventory's");
    assert_eq!(elsewhere.code(), tonic::Code::FailedPrecondition);
    eprintln!(
        "WatchEvents: {} events, resumed after cursor {} with {:?}",
        got.len() + live.len(),
        got[0].cursor,
        cursors
    );
}

/// `GET path` on the gateway as a raw HTTP/1.1 SSE client, with
/// `headers`; returns the (id, data) of the first `count` events, within 10 s.
async fn sse_events(
    gateway: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    count: usize,
) -> Vec<(String, serde_json::Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(gateway)
        .await
        .expect("connect");
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: gateway\r\nAccept: text/event-stream\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    socket.write_all(request.as_bytes()).await.expect("send");
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let events: Vec<(String, serde_json::Value)> = text
            .split("\n\n")
            .filter_map(|block| {
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|line| line.strip_prefix(name).map(str::trim).map(str::to_owned))
                };
                Some((field("id:")?, serde_json::from_str(&field("data:")?).ok()?))
            })
            .collect();
        if events.len() >= count {
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            return events.into_iter().take(count).collect();
        }
        let mut buffer = [0u8; 8192];
        let read = tokio::time::timeout_at(deadline, socket.read(&mut buffer))
            .await
            .unwrap_or_else(|_| panic!("{count} events within 10 s: {text}"))
            .expect("read");
        assert!(read > 0, "the stream ended: {text}");
        text.push_str(&String::from_utf8_lossy(&buffer[..read]));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_through_the_gateway_resumes_after_last_event_id() {
    let app = TestApp::sqlite().await;
    let mut orders = order_client(connect(app.addr(Role::Order)).await);
    for token in ["pm_card_visa", "pm_card_chargeDeclined"] {
        let order = orders
            .create_order(order_request("events-sse", &[("sku-mug", 1)], token))
            .await
            .expect("placed")
            .into_inner();
        wait_terminal(&mut orders, &order.order_id, Duration::from_secs(20)).await;
    }
    let bearer = format!(
        "Bearer {}",
        ordermesh_testkit::tokens::admin("sse-operator")
    );
    let auth = [("Authorization", bearer.as_str())];
    let gateway = app.addr(Role::Gateway);
    let all = sse_events(gateway, "/v1/events:watch", &auth, 4).await;
    let ids: Vec<&str> = all.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["1", "2", "3", "4"], "each event's id is its cursor");
    assert_eq!(all[3].1["subject"], "ordermesh.orders.failed");
    assert_eq!(all[3].1["cursor"], "4");

    // A reconnect with Last-Event-ID gets what came after, nothing missed.
    let resumed = sse_events(
        gateway,
        "/v1/events:watch",
        &[auth[0], ("Last-Event-ID", "2")],
        2,
    )
    .await;
    let resumed_ids: Vec<&str> = resumed.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(resumed_ids, ["3", "4"]);
    assert_eq!(resumed[0].1, all[2].1, "the same event");
    eprintln!("SSE: 4 events with ids {ids:?}; after Last-Event-ID 2: {resumed_ids:?}");
}

/// The status line of `GET path` on the gateway with `headers`, within 10 s.
async fn status_line(
    gateway: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(gateway)
        .await
        .expect("connect");
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: gateway\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    socket.write_all(request.as_bytes()).await.expect("send");
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::BufReader::new(socket).read_line(&mut line),
    )
    .await
    .expect("an answer within 10 s")
    .expect("read");
    line.trim_end().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn stock_events_are_watched_at_inventory_and_through_the_gateway() {
    use ordermesh_proto::events::v1::event_service_client::EventServiceClient;
    use ordermesh_proto::events::v1::stock_event_service_client::StockEventServiceClient;
    use ordermesh_proto::events::v1::{
        EventStream, WatchEventsRequest, WatchStockEventsRequest, watch_events_response,
    };
    use ordermesh_proto::inventory::v1::AdjustStockRequest;
    use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;

    let app = TestApp::sqlite().await;
    let channel = connect(app.addr(Role::Inventory)).await;
    let mut inventory = InventoryServiceClient::new(channel.clone());
    let mut adjust = async |delta: i32| {
        inventory
            .adjust_stock(AdjustStockRequest {
                product_id: "sku-mug".into(),
                delta,
            })
            .await
            .expect("adjusted");
    };
    adjust(3).await;
    adjust(4).await;
    let delta = |e: &ordermesh_proto::events::v1::WatchEventsResponse| match &e.event {
        Some(watch_events_response::Event::Stock(stock)) => {
            assert_eq!(stock.product_id, "sku-mug");
            stock.delta
        }
        other => panic!("a stock event: {other:?}"),
    };

    // EventService at inventory answers STOCK from inventory's outbox.
    let mut events =
        EventServiceClient::with_interceptor(channel.clone(), crate::harness::OperatorUnlessGiven);
    let watch = |stream: EventStream, cursor: &str| WatchEventsRequest {
        stream: stream.into(),
        cursor: cursor.to_owned(),
    };
    let mut stream = events
        .watch_events(watch(EventStream::Stock, ""))
        .await
        .expect("watch")
        .into_inner();
    let got = next_events(&mut stream, 2).await;
    assert_eq!(got.iter().map(delta).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(got[0].subject, "ordermesh.stock.changed");
    // Live.
    adjust(-2).await;
    let live = next_events(&mut stream, 1).await;
    assert_eq!(delta(&live[0]), -2);
    drop(stream);

    // StockEventService, the gateway's way in: the same events, resumed
    // after a cursor with nothing missed.
    let mut stock = StockEventServiceClient::with_interceptor(
        channel.clone(),
        crate::harness::OperatorUnlessGiven,
    );
    let mut resumed = stock
        .watch_stock_events(WatchStockEventsRequest {
            cursor: got[0].cursor.clone(),
        })
        .await
        .expect("watch")
        .into_inner();
    let rest = next_events(&mut resumed, 2).await;
    assert_eq!(rest, [got[1].clone(), live[0].clone()]);
    drop(resumed);

    // Refusals: a customer; the order stream, which is the order service's.
    let mut customer = tonic::Request::new(WatchStockEventsRequest::default());
    crate::harness::authorize(
        &mut customer,
        &ordermesh_testkit::tokens::customer("stock-watch"),
    );
    let refused = stock
        .watch_stock_events(customer)
        .await
        .expect_err("not an admin");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let elsewhere = events
        .watch_events(watch(EventStream::Orders, ""))
        .await
        .expect_err("orders are the order service's");
    assert_eq!(elsewhere.code(), tonic::Code::FailedPrecondition);

    // Through the gateway: SSE, each id the cursor, resumed after Last-Event-ID.
    let gateway = app.addr(Role::Gateway);
    let bearer = format!(
        "Bearer {}",
        ordermesh_testkit::tokens::admin("stock-operator")
    );
    let auth = [("Authorization", bearer.as_str())];
    let all = sse_events(gateway, "/v1/events/stock:watch", &auth, 3).await;
    let ids: Vec<&str> = all.iter().map(|(id, _)| id.as_str()).collect();
    let cursors: Vec<&str> = [&got[0], &got[1], &live[0]]
        .iter()
        .map(|e| e.cursor.as_str())
        .collect();
    assert_eq!(ids, cursors);
    assert_eq!(all[2].1["stock"]["delta"], "-2");
    let after = sse_events(
        gateway,
        "/v1/events/stock:watch",
        &[auth[0], ("Last-Event-ID", ids[0])],
        2,
    )
    .await;
    assert_eq!(after, all[1..]);
    let customer = format!(
        "Bearer {}",
        ordermesh_testkit::tokens::customer("stock-watch")
    );
    let refused = status_line(
        gateway,
        "/v1/events/stock:watch",
        &[("Authorization", customer.as_str())],
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    eprintln!("stock events: gRPC cursors {cursors:?}; SSE ids {ids:?}; a customer: {refused}");
}
