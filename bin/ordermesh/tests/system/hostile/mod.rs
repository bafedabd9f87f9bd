//! Hostile clients against the real system over loopback: each attack
//! bounded in time and count, each with the figure it saw. Clients that
//! must look like different clients bind different 127.0.0.x sources.
//! (Browser, metadata, body-limit and edge rate-limit attacks are in
//! `hostile_edge.rs`.)

mod floods;
mod raw;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ordermesh_proto::inventory::v1::GetProductRequest;
use ordermesh_testkit::TestDatabase;
use tokio::io::AsyncWriteExt;
use tonic::Code;

use crate::harness::{Endpoints, Role, TestApp, authorize, connect, order_message};
use raw::{BOUND, client, connect_from, get_from, read_to_close};

/// A series written as Prometheus prints it (`name{k="v",...}`), summed
/// over every series with those labels, as [`crate::curl::sample`] reads it.
fn metric(text: &str, series: &str) -> f64 {
    let (name, labels) = series.split_once('{').unwrap_or((series, ""));
    let labels: Vec<(&str, &str)> = labels
        .trim_end_matches('}')
        .split(',')
        .filter_map(|label| {
            let (key, value) = label.split_once('=')?;
            Some((key, value.trim_matches('"')))
        })
        .collect();
    crate::curl::sample(text, name, &labels)
}

async fn metrics_text(system: &impl Endpoints) -> String {
    let url = format!("http://{}/metrics", system.admin());
    tokio::task::spawn_blocking(move || crate::curl::get_text(&url))
        .await
        .expect("scrape")
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn p99(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort();
    let rank = ((latencies.len() as f64 - 1.0) * 0.99).round() as usize;
    latencies.get(rank).copied().unwrap_or_default()
}

/// Twenty product reads from a bystander; their latencies.
async fn bystander_reads(system: &TestApp) -> Vec<Duration> {
    let mut inventory = system.inventory().await;
    let mut latencies = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let request = tonic::Request::new(GetProductRequest {
            product_id: "sku-mug".into(),
        });
        tokio::time::timeout(BOUND, inventory.get_product(request))
            .await
            .expect("a product read within the bound")
            .expect("the product");
        latencies.push(started.elapsed());
    }
    latencies
}

/// A bogus method name of `length` random-looking characters.
fn bogus(n: usize, length: usize) -> String {
    let seed = format!("{n:08}");
    seed.repeat(length / seed.len() + 1)[..length].to_owned()
}

/// A grpc-web call (HTTP/1.1, through the gateway) to `path`.
async fn grpc_web_call(gateway: std::net::SocketAddr, path: &str) -> String {
    let body = [0u8, 0, 0, 0, 0];
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend(body);
    raw::exchange(gateway, &request).await
}

#[tokio::test(flavor = "multi_thread")]
async fn made_up_method_names_add_nothing_to_metrics_or_memory() {
    // Its own process, so its memory is its own.
    let system = crate::harness::System::start(Arc::new(TestDatabase::sqlite()), &[]).await;
    let pid = system.pid().expect("a pid");
    let channel = connect(system.addr(Role::Order)).await;
    let gateway = system.addr(Role::Gateway);
    let call = |path: String| {
        let channel = channel.clone();
        async move {
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.expect("ready");
            let codec = tonic_prost::ProstCodec::<(), ()>::default();
            let path = path.parse().expect("a path");
            grpc.unary(tonic::Request::new(()), path, codec)
                .await
                .expect_err("no such method")
                .code()
        }
    };
    // Warm up: the first unknown calls make the "other" series and the
    // connections; what follows must add nothing.
    for n in 0..20 {
        call(format!(
            "/ordermesh.order.v1.OrderService/W{}",
            bogus(n, 200)
        ))
        .await;
        grpc_web_call(
            gateway,
            &format!("/ordermesh.order.v1.OrderService/W{}", bogus(n, 200)),
        )
        .await;
    }
    let (size_before, rss_before) = (metrics_text(&system).await.len(), rss_kib(pid));
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for n in 0..250 {
        let path = format!("/ordermesh.order.v1.OrderService/X{}", bogus(n, 2000));
        *codes.entry(format!("{:?}", call(path).await)).or_default() += 1;
        let path = format!("/ordermesh.order.v1.OrderService/Y{}", bogus(n, 2000));
        let answer = grpc_web_call(gateway, &path).await;
        let answered = if answer.contains("grpc-status: 12") || answer.contains("grpc-status:12") {
            "grpc-web Unimplemented"
        } else {
            println!(
                "grpc-web answer: {}",
                answer.lines().next().unwrap_or_default()
            );
            "grpc-web other"
        };
        *codes.entry(answered.to_owned()).or_default() += 1;
    }
    let text = metrics_text(&system).await;
    let (size_after, rss_after) = (text.len(), rss_kib(pid));
    println!(
        "500 made-up methods (250 gRPC, 250 grpc-web): /metrics {size_before} -> {size_after} bytes, RSS {rss_before} -> {rss_after} KiB; answers {codes:?}"
    );
    assert_eq!(codes.get("Unimplemented"), Some(&250), "{codes:?}");
    assert_eq!(codes.get("grpc-web Unimplemented"), Some(&250), "{codes:?}");
    assert!(
        !text.contains("/X0") && !text.contains("/Y0"),
        "a made-up name reached /metrics"
    );
    // The gRPC calls reach the order service; the grpc-web ones are
    // answered by the gateway's channel. Either way, under one label.
    let other = metric(
        &text,
        "requests_total{code=\"UNIMPLEMENTED\",method=\"other\",service=\"order\"}",
    );
    assert!(
        other >= 270.0,
        "the calls are counted under `other`: {other}"
    );
    assert!(size_after as f64 <= size_before as f64 * 1.05);
    assert!(rss_after as f64 <= rss_before as f64 * 1.05);
}

#[tokio::test(flavor = "multi_thread")]
async fn three_hundred_watchers_starve_no_read_order_or_probe() {
    let system = TestApp::sqlite().await;
    let gateway = system.addr(Role::Gateway);
    let token = ordermesh_testkit::tokens::customer("cust-watcher");
    let quiet = p99(bystander_reads(&system).await);
    // 20 clients x 15 watches: within each client's share (16).
    let mut watchers = Vec::new();
    for source in 0..20u8 {
        for _ in 0..15 {
            let (stream, head) =
                get_from(client(10 + source), gateway, "/v1/products:watch", &token).await;
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            watchers.push(stream);
        }
    }
    let busy = p99(bystander_reads(&system).await);
    // An order and the probes, with 300 watches open.
    let mut request = tonic::Request::new(order_message(
        "cust-bystander",
        &[("sku-mug", 1)],
        "pm_card_visa",
    ));
    authorize(
        &mut request,
        &ordermesh_testkit::tokens::customer("cust-bystander"),
    );
    let started = Instant::now();
    tokio::time::timeout(BOUND, system.order().await.create_order(request))
        .await
        .expect("an order within the bound")
        .expect("the order");
    let order_took = started.elapsed();
    let (_, healthz) = get_from(client(5), gateway, "/healthz", &token).await;
    assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
    // One client over its share is refused, with when to retry.
    let (_sixteenth, refused) = get_from(client(10), gateway, "/v1/products:watch", &token).await;
    let (_seventeenth, another) = get_from(client(10), gateway, "/v1/products:watch", &token).await;
    assert!(another.starts_with("HTTP/1.1 429"), "{another}");
    assert!(
        refused.starts_with("HTTP/1.1 200"),
        "the 16th is within the share: {refused}"
    );
    assert!(
        another.to_ascii_lowercase().contains("retry-after: 5"),
        "{another}"
    );
    let text = metrics_text(&system).await;
    let open = metric(&text, "open_watches{service=\"gateway\"}");
    let inventory_open = metric(&text, "open_watches{service=\"inventory\"}");
    println!(
        "300 watchers: product read p99 {quiet:?} quiet, {busy:?} with them open; an order in {order_took:?}; \
         open watches: gateway {open}, inventory {inventory_open}; the 17th of one client: 429"
    );
    assert_eq!(open, 301.0);
    assert_eq!(
        inventory_open, 301.0,
        "each watch is counted by the service too"
    );
    drop(watchers);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_budgets_watches_by_the_client_the_gateway_names() {
    let system = TestApp::spawn(Arc::new(TestDatabase::sqlite()), |settings| {
        settings.server.watches.max_watches_per_client = 2;
    })
    .await;
    let mut inventory = system.inventory().await;
    let watch = |client: &str| {
        let mut request =
            tonic::Request::new(ordermesh_proto::inventory::v1::WatchStockRequest::default());
        request
            .metadata_mut()
            .insert("x-ordermesh-client", client.parse().expect("ascii"));
        request
    };
    let _a1 = inventory
        .watch_stock(watch("ip:10.0.0.1"))
        .await
        .expect("first");
    let _a2 = inventory
        .watch_stock(watch("ip:10.0.0.1"))
        .await
        .expect("second");
    let refused = inventory
        .watch_stock(watch("ip:10.0.0.1"))
        .await
        .expect_err("third of one client");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let _b1 = inventory
        .watch_stock(watch("ip:10.0.0.2"))
        .await
        .expect("another client");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_closed_on_every_listener_within_the_header_timeout() {
    let system = TestApp::spawn(Arc::new(TestDatabase::sqlite()), |settings| {
        settings.server.connections.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let targets = [
        ("gateway", system.addr(Role::Gateway)),
        ("order", system.addr(Role::Order)),
        ("admin", system.admin_addr()),
    ];
    // A hundred slowloris connections on the gateway while a bystander reads.
    let quiet = p99(bystander_reads(&system).await);
    let mut slow = Vec::new();
    for n in 0..100u8 {
        let mut stream = connect_from(client(100 + n), system.addr(Role::Gateway)).await;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .expect("send");
        slow.push(stream);
    }
    let during = p99(bystander_reads(&system).await);
    println!(
        "100 slowloris connections: a bystander's product read p99 {quiet:?} quiet, {during:?} with them"
    );
    drop(slow);
    for (name, addr) in targets {
        // Half a request head, then nothing.
        let mut stream = connect_from(client(2), addr).await;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .expect("send");
        let (_, held) = read_to_close(&mut stream).await;
        // An HTTP/2 client that sends its preface and no request.
        let mut stream = connect_from(client(3), addr).await;
        stream.write_all(&raw::h2::hello()).await.expect("send");
        let (_, held_h2) = read_to_close(&mut stream).await;
        println!(
            "{name}: a slowloris head held {held:?}, an HTTP/2 client with no request {held_h2:?}"
        );
    }
    let text = metrics_text(&system).await;
    for name in ["gateway", "order", "admin"] {
        let closed = metric(
            &text,
            &format!(
                "connections_closed_total{{reason=\"first_request_timeout\",service=\"{name}\"}}"
            ),
        ) + metric(
            &text,
            &format!("connections_closed_total{{reason=\"header_timeout\",service=\"{name}\"}}"),
        ) + metric(
            &text,
            &format!("connections_closed_total{{reason=\"protocol_error\",service=\"{name}\"}}"),
        );
        assert!(
            closed >= 2.0,
            "{name} closed {closed} slow connections:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_idle_connections_leave_the_gateway_answering() {
    let system = TestApp::sqlite().await;
    let gateway = system.addr(Role::Gateway);
    let quiet = p99(bystander_reads(&system).await);
    let mut idle = Vec::new();
    for n in 0..1000u32 {
        let source = client(u8::try_from(20 + n % 200).expect("an address"));
        idle.push(connect_from(source, gateway).await);
    }
    let busy = p99(bystander_reads(&system).await);
    let (_, healthz) = get_from(client(3), gateway, "/healthz", "x").await;
    let (_, product) = get_from(client(3), gateway, "/v1/products/sku-mug", "x").await;
    let text = metrics_text(&system).await;
    let open = metric(&text, "active_connections{service=\"gateway\"}");
    println!(
        "1000 idle connections: gateway holds {open} open; product read p99 {quiet:?} quiet, {busy:?} with them"
    );
    assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
    assert!(product.starts_with("HTTP/1.1 200"), "{product}");
    assert!(open >= 1000.0, "{open}");
    drop(idle);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_heads_and_urls_are_refused_before_any_handler() {
    let system = TestApp::sqlite().await;
    let gateway = system.addr(Role::Gateway);
    let long_url = format!(
        "GET /v1/products/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(10 * 1024)
    );
    let answer = raw::exchange(gateway, long_url.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 414"), "{answer}");
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = raw::exchange(
        gateway,
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(32 * 1024)
    );
    let answer = raw::exchange(gateway, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    // And a gRPC service, over HTTP/2: too many and too large metadata.
    let mut inventory = system.inventory().await;
    let mut request = tonic::Request::new(GetProductRequest {
        product_id: "sku-mug".into(),
    });
    for i in 0..150 {
        let key: tonic::metadata::MetadataKey<_> = format!("x-m{i}").parse().expect("key");
        request
            .metadata_mut()
            .insert(key, "v".parse().expect("value"));
    }
    let many = inventory
        .get_product(request)
        .await
        .expect_err("150 metadata entries");
    assert_eq!(many.code(), Code::ResourceExhausted, "{many:?}");
    let mut request = tonic::Request::new(GetProductRequest {
        product_id: "sku-mug".into(),
    });
    request
        .metadata_mut()
        .insert("x-big", "b".repeat(32 * 1024).parse().expect("value"));
    let big = inventory
        .get_product(request)
        .await
        .expect_err("32 KiB of metadata");
    println!(
        "inventory: 150 metadata entries -> {:?} {:?}; 32 KiB -> {:?} {:?}",
        many.code(),
        many.message(),
        big.code(),
        big.message()
    );
    let text = metrics_text(&system).await;
    assert!(
        metric(
            &text,
            "requests_refused_total{reason=\"uri_too_long\",service=\"gateway\"}"
        ) >= 1.0
    );
    assert!(
        metric(
            &text,
            "requests_refused_total{reason=\"too_many_headers\",service=\"inventory\"}"
        ) >= 1.0
    );
    // Refused, the service still answers.
    bystander_reads(&system).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn probes_answer_while_the_load_budget_is_full() {
    let system = TestApp::spawn(Arc::new(TestDatabase::sqlite()), |settings| {
        settings.server.max_in_flight = 1;
        settings.gateway.gateway_max_in_flight = 1;
        settings.failpoints.failpoints = vec![
            ordermesh_runtime::failpoint::parse_failpoint(
                "/ordermesh.inventory.v1.InventoryService/GetProduct=delay(6s)",
            )
            .expect("a failpoint"),
        ];
    })
    .await;
    let gateway = system.addr(Role::Gateway);
    // One slow read through the gateway holds the gateway's only slot and
    // inventory's.
    let slow = tokio::spawn(async move {
        get_from(client(2), gateway, "/v1/products/sku-mug", "x")
            .await
            .1
    });
    // Once its failpoint acted, the slow call holds both slots.
    let slowed = system
        .metrics()
        .failpoint_hits_total
        .with_label_values(&["/ordermesh.inventory.v1.InventoryService/GetProduct"]);
    crate::harness::eventually(BOUND, "the slow call holds its slots", || {
        let hits = slowed.get();
        async move { (hits >= 1).then_some(()) }
    })
    .await;
    let refused = system
        .inventory()
        .await
        .get_product(GetProductRequest {
            product_id: "sku-mug".into(),
        })
        .await
        .expect_err("inventory's budget is full");
    let (_, shed) = get_from(client(3), gateway, "/v1/products/sku-mug", "x").await;
    let (_, healthz) = get_from(client(3), gateway, "/healthz", "x").await;
    let (_, readyz) = get_from(client(3), gateway, "/readyz", "x").await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        connect(system.addr(Role::Inventory)).await,
    );
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("the health check answers over budget");
    println!(
        "over budget: inventory answers a call {:?}, the gateway {}; probes: /healthz {}, /readyz {}, gRPC health {:?}",
        refused.code(),
        shed.lines().next().unwrap_or_default(),
        healthz.lines().next().unwrap_or_default(),
        readyz.lines().next().unwrap_or_default(),
        serving.get_ref().status()
    );
    assert!(
        shed.starts_with("HTTP/1.1 503"),
        "the gateway's budget is full: {shed}"
    );
    assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
    assert!(readyz.starts_with("HTTP/1.1 200"), "{readyz}");
    assert_eq!(
        serving.get_ref().status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    let slow = slow.await.expect("the slow call");
    assert!(slow.starts_with("HTTP/1.1 200"), "{slow}");
}
