//! Events through the outbox to a real NATS JetStream (a `nats-server -js`
//! of each test's own): once each, in order per order, through a NATS
//! outage and a kill -9 of the order service.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use ordermesh_app::Role;
use ordermesh_proto::events::v1::{OrderEvent, OrderEventKind, StockEvent};
use ordermesh_proto::order::v1::{CancelOrderRequest, OrderStatus};
use ordermesh_testkit::nats::PrivateNats;
use ordermesh_testkit::{TestApp, TestDatabase};
use prost::Message;

use crate::faults::{Roles, settled};
use crate::harness::{connect, eventually, order_client, order_request, wait_terminal};
use crate::load::Load;

/// One message of `ORDERMESH_ORDERS`, decoded.
#[derive(Debug)]
struct Seen {
    subject: String,
    msg_id: String,
    event: OrderEvent,
}

async fn jetstream(nats: &PrivateNats) -> jetstream::Context {
    let client = async_nats::connect(nats.url()).await.expect("connect");
    jetstream::new(client)
}

/// Every message the stream holds, in stream order.
async fn stream_messages(js: &jetstream::Context) -> Vec<Seen> {
    let Ok(mut stream) = js.get_stream("ORDERMESH_ORDERS").await else {
        return Vec::new();
    };
    let last = stream
        .info()
        .await
        .expect("stream info")
        .state
        .last_sequence;
    let mut seen = Vec::new();
    for sequence in 1..=last {
        let message = stream.get_raw_message(sequence).await.expect("a message");
        let header = |name: &str| {
            message
                .headers
                .get(name)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        assert_eq!(
            header("Ordermesh-Event-Type"),
            "ordermesh.events.v1.OrderEvent"
        );
        assert!(
            header("traceparent").starts_with("00-"),
            "a traceparent on every message"
        );
        let event = OrderEvent::decode(message.payload.as_ref()).expect("an OrderEvent");
        // The relay's publish span joins the change's trace: same trace id,
        // its own span id.
        let change = event.header.as_ref().map(|h| h.traceparent.clone());
        if let Some(change) = change.filter(|t| !t.is_empty()) {
            let published = header("traceparent");
            let (ours, theirs): (Vec<&str>, Vec<&str>) =
                (published.split('-').collect(), change.split('-').collect());
            assert_eq!(ours[1], theirs[1], "one trace: {published} after {change}");
            assert_ne!(ours[2], theirs[2], "the relay's own span");
        }
        seen.push(Seen {
            subject: message.subject.to_string(),
            msg_id: header("Nats-Msg-Id"),
            event,
        });
    }
    seen
}

/// Waits until the stream holds `count` messages (or fails after `limit`).
async fn wait_for_messages(js: &jetstream::Context, count: usize, limit: Duration) -> Vec<Seen> {
    eventually(limit, &format!("{count} events in the stream"), || async {
        let seen = stream_messages(js).await;
        (seen.len() >= count).then_some(seen)
    })
    .await
}

/// The contract, checked over everything the stream holds: ids unique (no
/// duplicate), each order's events in sequence 1, 2, 3..., exactly one
/// placed and one confirmed-or-failed per order, and a cancel only after a
/// confirm. Returns the events per order.
fn check_contract(seen: &[Seen]) -> HashMap<String, Vec<OrderEventKind>> {
    let mut ids = HashSet::new();
    let mut per_order: HashMap<String, Vec<OrderEventKind>> = HashMap::new();
    let mut next_sequence: HashMap<String, i64> = HashMap::new();
    for message in seen {
        let header = message.event.header.clone().expect("a header");
        assert_eq!(
            message.msg_id, header.event_id,
            "Nats-Msg-Id is the event id"
        );
        assert!(
            ids.insert(header.event_id.clone()),
            "a duplicate: {message:?}"
        );
        let kind = message.event.kind();
        let name = format!("{kind:?}").to_lowercase();
        assert_eq!(message.subject, format!("ordermesh.orders.{name}"));
        let expected = next_sequence
            .entry(header.aggregate_id.clone())
            .or_insert(1);
        assert_eq!(header.sequence, *expected, "in sequence: {message:?}");
        *expected += 1;
        per_order
            .entry(message.event.order_id.clone())
            .or_default()
            .push(kind);
    }
    for (order_id, kinds) in &per_order {
        use OrderEventKind::{Cancelled, Confirmed, Failed, Placed, Refunded};
        assert_eq!(kinds.first(), Some(&Placed), "{order_id}: {kinds:?}");
        let settled = kinds
            .iter()
            .filter(|k| matches!(k, Confirmed | Failed))
            .count();
        assert!(settled <= 1, "{order_id} settled twice: {kinds:?}");
        if kinds.contains(&Cancelled) {
            assert_eq!(kinds.get(1), Some(&Confirmed), "{order_id}: {kinds:?}");
        }
        if kinds.contains(&Refunded) {
            assert_eq!(kinds.get(2), Some(&Cancelled), "{order_id}: {kinds:?}");
        }
    }
    per_order
}

async fn app_with_nats(nats: &PrivateNats) -> TestApp {
    let database = match TestDatabase::postgres().await {
        Some(database) => database,
        None => TestDatabase::sqlite(),
    };
    let url = nats.url();
    TestApp::spawn(Arc::new(database), move |settings| {
        settings.events.nats_url = Some(url);
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn each_settled_order_has_one_settling_event_and_a_cancel_its_own() {
    let Some(nats) = PrivateNats::start() else {
        return;
    };
    let app = app_with_nats(&nats).await;
    let mut orders = order_client(connect(app.addr(Role::Order)).await);
    let mut settled_as = HashMap::new();
    for n in 0..8 {
        let token = if n % 4 == 3 {
            "pm_card_chargeDeclined"
        } else {
            "pm_card_visa"
        };
        let order = orders
            .create_order(order_request("events-a", &[("sku-mug", 1)], token))
            .await
            .expect("placed")
            .into_inner();
        let order = wait_terminal(&mut orders, &order.order_id, Duration::from_secs(20)).await;
        settled_as.insert(order.order_id.clone(), order.status());
    }
    let mut cancelled = Vec::new();
    for (order_id, _) in settled_as
        .iter()
        .filter(|(_, status)| **status == OrderStatus::Confirmed)
        .take(2)
    {
        orders
            .cancel_order(CancelOrderRequest {
                order_id: order_id.clone(),
            })
            .await
            .expect("cancelled");
        cancelled.push(order_id.clone());
    }
    // 8 placed + 8 settled + 2 cancelled + 2 refunded.
    let js = jetstream(&nats).await;
    let seen = wait_for_messages(&js, 20, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen_again = stream_messages(&js).await;
    assert_eq!(seen_again.len(), 20, "nothing more than the 20 events");
    let per_order = check_contract(&seen);
    assert_eq!(per_order.len(), 8);
    let traced = seen
        .iter()
        .filter(|m| {
            m.event
                .header
                .as_ref()
                .is_some_and(|h| !h.traceparent.is_empty())
        })
        .count();
    assert_eq!(traced, seen.len(), "every change carries its trace");
    for (order_id, status) in &settled_as {
        let kinds = &per_order[order_id];
        let settling = match status {
            OrderStatus::Confirmed => OrderEventKind::Confirmed,
            _ => OrderEventKind::Failed,
        };
        assert_eq!(kinds.get(1), Some(&settling), "{order_id}: {kinds:?}");
        if cancelled.contains(order_id) {
            assert_eq!(
                kinds[2..],
                [OrderEventKind::Cancelled, OrderEventKind::Refunded]
            );
        } else {
            assert_eq!(kinds.len(), 2, "{order_id}: {kinds:?}");
        }
    }
    let failed = seen
        .iter()
        .find(|m| m.event.kind() == OrderEventKind::Failed)
        .expect("a declined card fails an order");
    assert_eq!(failed.event.failure_reason, "CARD_DECLINED");
    assert_eq!(failed.event.customer_id, "events-a");

    // The inventory's relay publishes its stock changes beside them: each
    // order reserved a mug, each failed or cancelled one gave it back.
    let gave_back = settled_as
        .values()
        .filter(|status| **status != OrderStatus::Confirmed)
        .count()
        + cancelled.len();
    let expected = (8 + gave_back) as u64;
    let messages = eventually(Duration::from_secs(20), "stock events", || async {
        let mut stock = js.get_stream("ORDERMESH_STOCK").await.ok()?;
        let messages = stock.info().await.ok()?.state.messages;
        (messages >= expected).then_some(messages)
    })
    .await;
    assert_eq!(messages, expected, "one changed event per stock movement");
    let stock = js.get_stream("ORDERMESH_STOCK").await.expect("the stream");
    let last = stock
        .get_raw_message(messages)
        .await
        .expect("a stock event");
    assert_eq!(last.subject.as_str(), "ordermesh.stock.changed");
    let event = StockEvent::decode(last.payload.as_ref()).expect("a StockEvent");
    assert_eq!((event.product_id.as_str(), event.delta), ("sku-mug", 1));
}

/// The order service's outbox backlog, as its metric says.
fn pending(app: &TestApp) -> i64 {
    app.metrics()
        .outbox_pending_rows
        .with_label_values(&["order"])
        .get()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nats_outage_mid_load_loses_and_duplicates_nothing() {
    let Some(mut nats) = PrivateNats::start() else {
        return;
    };
    let app = app_with_nats(&nats).await;
    let load = Load::start(app.addr(Role::Order), 4, "nats-outage");
    load.wait_taken(20, Duration::from_secs(30)).await;
    nats.down();
    let mut peak = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(pending(&app));
    }
    nats.up();
    let during = load.taken();
    load.wait_taken(during + 20, Duration::from_secs(60)).await;
    let report = load.finish().await;
    report.assert_every_key_taken();
    settled(app.database()).await;
    let drained = eventually(Duration::from_secs(30), "the outbox drained", || async {
        let now = pending(&app);
        (now == 0).then_some(now)
    })
    .await;
    let errors = app
        .metrics()
        .outbox_publish_errors_total
        .with_label_values(&["order"])
        .get();
    let js = jetstream(&nats).await;
    // Every taken order: placed and settled.
    let seen = wait_for_messages(&js, 2 * report.taken.len(), Duration::from_secs(30)).await;
    let per_order = check_contract(&seen);
    eprintln!(
        "NATS down 5 s mid-load: {} orders, {} events, pending rows peaked at {peak} and drained to {drained}, {errors} publish errors",
        report.taken.len(),
        seen.len(),
    );
    assert!(peak > 0, "the backlog rose while NATS was away");
    dashboards_query_exported_outbox_metrics(&app.metrics().render());
    assert!(errors > 0, "the relay saw the outage");
    assert_eq!(per_order.len(), report.taken.len(), "one order per key");
    for order_id in &report.taken {
        assert_eq!(
            per_order[order_id].len(),
            2,
            "{order_id}: placed and settled"
        );
    }
}

/// The dashboards' `outbox_*` series exist where a relay runs (the
/// observability test checks every other name without NATS).
fn dashboards_query_exported_outbox_metrics(exposition: &str) {
    let dashboards =
        crate::harness::workspace_root().join("deploy/observability/grafana/dashboards");
    let mut checked = 0;
    for entry in std::fs::read_dir(dashboards).expect("dashboards") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        for name in text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("outbox_"))
        {
            assert!(
                exposition.contains(&format!("\n{name}{{")),
                "{name} is not exported:\n{exposition}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 3, "the dashboards show the outbox");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_9_of_the_order_service_mid_load_loses_and_duplicates_nothing() {
    let Some(nats) = PrivateNats::start() else {
        return;
    };
    let database = match TestDatabase::postgres().await {
        Some(database) => database,
        None => TestDatabase::sqlite(),
    };
    let url = nats.url();
    let mut roles = Roles::start(Arc::new(database), &["--nats-url", &url]).await;
    let load = Load::start(roles.addr("order"), 4, "events-kill");
    load.wait_taken(20, Duration::from_secs(30)).await;
    roles.kill("order").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    roles.start_role("order").await;
    let restarted = load.taken();
    load.wait_taken(restarted + 20, Duration::from_secs(60))
        .await;
    let report = load.finish().await;
    report.assert_every_key_taken();
    settled(&roles.database).await;
    let js = jetstream(&nats).await;
    let seen = wait_for_messages(&js, 2 * report.taken.len(), Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_order = check_contract(&stream_messages(&js).await);
    eprintln!(
        "kill -9 of order mid-load: {} orders, {} events in the stream",
        report.taken.len(),
        seen.len()
    );
    assert_eq!(per_order.len(), report.taken.len(), "one order per key");
    for order_id in &report.taken {
        assert_eq!(
            per_order[order_id].len(),
            2,
            "{order_id}: placed and settled"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_that_acks_late_gets_redelivery_and_dedups_by_event_id() {
    let Some(nats) = PrivateNats::start() else {
        return;
    };
    let app = app_with_nats(&nats).await;
    let mut orders = order_client(connect(app.addr(Role::Order)).await);
    for _ in 0..3 {
        let order = orders
            .create_order(order_request(
                "events-late",
                &[("sku-mug", 1)],
                "pm_card_visa",
            ))
            .await
            .expect("placed")
            .into_inner();
        wait_terminal(&mut orders, &order.order_id, Duration::from_secs(20)).await;
    }
    let js = jetstream(&nats).await;
    wait_for_messages(&js, 6, Duration::from_secs(30)).await;
    let stream = js.get_stream("ORDERMESH_ORDERS").await.expect("the stream");
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("late-acker".to_owned()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(1),
            ..Default::default()
        })
        .await
        .expect("a durable consumer");
    let mut handled = HashSet::new();
    let mut deliveries = 0;
    let mut redelivered = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while handled.len() < 6 || redelivered < 6 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} handled, {redelivered} redelivered",
            handled.len()
        );
        let mut batch = consumer
            .fetch()
            .max_messages(10)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .expect("fetch");
        while let Some(message) = batch.next().await {
            let message = message.expect("a message");
            deliveries += 1;
            let event = OrderEvent::decode(message.payload.as_ref()).expect("an OrderEvent");
            let id = event.header.expect("a header").event_id;
            let info = message.info().expect("JetStream metadata");
            if info.delivered == 1 {
                // Handled, but "crashes" before acking: JetStream redelivers.
                handled.insert(id);
                continue;
            }
            redelivered += 1;
            assert!(
                !handled.insert(id),
                "a redelivery is of an event seen before"
            );
            message.ack().await.expect("ack");
        }
    }
    eprintln!(
        "late acks: {deliveries} deliveries of 6 events, {redelivered} redelivered and dropped as seen"
    );
    assert_eq!(handled.len(), 6);
}

/// `orderctl events tail` with `args`, bounded in time.
fn tail(nats: &PrivateNats, args: &[&str]) -> Vec<String> {
    let mut child = std::process::Command::new(crate::harness::sibling_binary("orderctl"))
        .args(["events", "tail", "--nats-url", &nats.url()])
        .args(args)
        .env_remove("ORDERMESH_NATS_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run orderctl");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("orderctl events tail {args:?} did not finish in 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("output");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn orderctl_tails_events_through_a_durable_consumer() {
    let Some(nats) = PrivateNats::start() else {
        return;
    };
    let app = app_with_nats(&nats).await;
    let mut orders = order_client(connect(app.addr(Role::Order)).await);
    for token in ["pm_card_visa", "pm_card_chargeDeclined"] {
        let order = orders
            .create_order(order_request("events-tail", &[("sku-mug", 1)], token))
            .await
            .expect("placed")
            .into_inner();
        wait_terminal(&mut orders, &order.order_id, Duration::from_secs(20)).await;
    }
    let js = jetstream(&nats).await;
    let seen = wait_for_messages(&js, 4, Duration::from_secs(30)).await;

    // Two runs of one durable consumer: the second resumes after the first.
    let mut lines = tail(&nats, &["--json", "--count", "3"]);
    lines.extend(tail(&nats, &["--json", "--count", "1"]));
    let ids: Vec<String> = lines
        .iter()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            value["eventId"].as_str().expect("an id").to_owned()
        })
        .collect();
    let in_stream: Vec<String> = seen
        .iter()
        .map(|m| m.event.header.clone().expect("header").event_id)
        .collect();
    assert_eq!(ids, in_stream, "every event once, in stream order");
    // The gateway's feed, the other source, prints the very same lines.
    let via_gateway =
        crate::events_tail::tail_gateway(app.addr(Role::Gateway), &["--json", "--count", "4"]);
    assert_eq!(via_gateway, lines, "NATS and the gateway print alike");

    let text = tail(&nats, &["--durable", "text", "--count", "4"]);
    assert!(
        text[3].starts_with("ordermesh.orders.failed ")
            && text[3].ends_with(" #2 FAILED CARD_DECLINED"),
        "{text:?}"
    );
    let stock = tail(&nats, &["--stream", "stock", "--count", "1"]);
    assert!(
        stock[0].starts_with("ordermesh.stock.changed sku-mug #1 available="),
        "{stock:?}"
    );
    eprintln!("orderctl events tail: {lines:?}\n{text:?}\n{stock:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_relay_publishes_at_a_time_across_replicas() {
    let Some(nats) = PrivateNats::start() else {
        return;
    };
    // Replicas share a database only on PostgreSQL.
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let database = Arc::new(database);
    let peers =
        TestApp::spawn_roles(database.clone(), &[Role::Inventory, Role::Payment], |_| {}).await;
    let replica = || {
        let (inventory, payment, url) = (
            peers.url(Role::Inventory),
            peers.url(Role::Payment),
            nats.url(),
        );
        TestApp::spawn_roles(database.clone(), &[Role::Order], move |settings| {
            settings.order.inventory_url = inventory;
            settings.order.payment_url = payment;
            settings.events.nats_url = Some(url);
        })
    };
    let (first, second) = (replica().await, replica().await);
    for (n, app) in [&first, &second, &first, &second].into_iter().enumerate() {
        let mut orders = order_client(connect(app.addr(Role::Order)).await);
        let order = orders
            .create_order(order_request(
                &format!("events-replicas-{n}"),
                &[("sku-mug", 1)],
                "pm_card_visa",
            ))
            .await
            .expect("placed")
            .into_inner();
        wait_terminal(&mut orders, &order.order_id, Duration::from_secs(20)).await;
    }
    let js = jetstream(&nats).await;
    let seen = wait_for_messages(&js, 8, Duration::from_secs(30)).await;
    check_contract(&seen);
    let published = |app: &TestApp| {
        app.metrics()
            .outbox_published_total
            .with_label_values(&["order"])
            .get()
    };
    let (a, b) = (published(&first), published(&second));
    eprintln!("two order replicas: their relays published {a} and {b} of 8 events");
    assert_eq!(a + b, 8, "each event published once, not once per replica");
    assert!(a == 0 || b == 0, "one relay holds the lease: {a} and {b}");
}
