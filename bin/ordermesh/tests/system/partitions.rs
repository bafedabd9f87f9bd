//! Partitions between real hosts (issue 19, item 3): each role on a host of
//! its own and PostgreSQL on a fourth (`chaos::cluster`). Under a bounded
//! load of orders with idempotency keys, one link goes dark for a few
//! seconds and comes back. Each test proves the fault hit (the errors and
//! timeouts seen in its window are printed) and, after the heal, that every
//! order settles once per key, `ordermesh audit` is clean and stock plus
//! units sold is the starting stock.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;

use crate::chaos::cluster::{Cluster, log_lines_since, settle};
use crate::faults::order_count;
use crate::harness::{available, connect};
use crate::load::Load;

const PRODUCTS: [&str; 3] = ["sku-filter", "sku-mug", "sku-espresso"];
/// How long a link stays dark: longer than a client's deadline and the
/// order service's call timeout (2 s), so calls in flight end in it.
const CUT: Duration = Duration::from_secs(4);
/// Each client call's deadline.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Which link goes dark.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Both ways between the two hosts.
    Both(&'static str, &'static str),
    /// Only the packets from the first to the second.
    OneWay(&'static str, &'static str),
}

impl Cut {
    fn apply(self, cluster: &Cluster) {
        match self {
            Cut::Both(a, b) => cluster.network.cut(cluster.host(a), cluster.host(b)),
            Cut::OneWay(from, to) => cluster
                .network
                .cut_one_way(cluster.host(from), cluster.host(to)),
        }
    }

    fn heal(self, cluster: &Cluster) {
        let (Cut::Both(a, b) | Cut::OneWay(a, b)) = self;
        cluster.network.heal(cluster.host(a), cluster.host(b));
    }
}

async fn stock(cluster: &Cluster) -> HashMap<&'static str, i64> {
    let mut inventory = InventoryServiceClient::new(connect(cluster.inventory_addr()).await);
    let mut stock = HashMap::new();
    for product in PRODUCTS {
        stock.insert(product, i64::from(available(&mut inventory, product).await));
    }
    stock
}

/// What the order service logs when a store or peer call fails.
const FAILURE_LOGS: [&str; 4] = [
    "downstream call failed",
    "saga paused: the order store failed",
    "cannot record this holder's heartbeat",
    "cannot scan for unfinished sagas",
];

async fn partition_mid_load(cut: Cut, tag: &str) {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let before = stock(&cluster).await;
    let order_addr = cluster.order_addr();
    let load = Load::start_with_timeout(order_addr, 4, tag, CALL_TIMEOUT);
    load.wait_taken(12, Duration::from_secs(30)).await;

    let logs_from = cluster.logs("order").len();
    let window = load.report_so_far();
    tokio::task::block_in_place(|| cut.apply(&cluster));
    tokio::time::sleep(CUT).await;
    tokio::task::block_in_place(|| cut.heal(&cluster));
    let in_window = load.report_so_far();
    let healed = load.taken();
    load.wait_taken(healed + 12, Duration::from_secs(60)).await;
    let report = load.finish().await;

    // The fault hit: calls failed or timed out in its window, at the client
    // or between the order service and what was cut from it.
    let client_errors = &in_window.errors[window.errors.len()..];
    let outages = in_window.failed_by_outage() - window.failed_by_outage();
    let order_logs = cluster.logs("order");
    let failures = log_lines_since(&order_logs, logs_from, &FAILURE_LOGS);

    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for line in &failures {
        let kind = format!(
            "{} {} {}",
            line["msg"].as_str().unwrap_or_default(),
            line["call"].as_str().unwrap_or_default(),
            line["code"].as_str().unwrap_or_default()
        );
        *by_kind.entry(kind.trim().to_owned()).or_default() += 1;
    }
    let mut client_codes: BTreeMap<String, usize> = BTreeMap::new();
    for code in client_errors {
        *client_codes.entry(format!("{code:?}")).or_default() += 1;
    }
    let first = failures.first().map(|line| {
        format!(
            "{} {}: {} ({})",
            line["ts"].as_str().unwrap_or_default(),
            line["msg"].as_str().unwrap_or_default(),
            line["call"].as_str().unwrap_or_default(),
            line["detail"].as_str().unwrap_or_default(),
        )
    });
    println!(
        "{cut:?} for {CUT:?} under load: clients saw {} failed calls {client_codes:?} and {outages} orders failed by an unavailable peer; \
         the order service logged {} failures {by_kind:?}; first: {first:?}",
        client_errors.len(),
        failures.len(),
    );
    assert!(
        !client_errors.is_empty() || outages > 0 || !failures.is_empty(),
        "{cut:?} was never seen: no error or timeout in its window"
    );

    // After the heal: one order per key, every one settled, the audit clean.
    report.assert_every_key_taken();
    let audit = settle(&cluster.database_url(), Duration::from_secs(60))
        .await
        .unwrap_or_else(|report| panic!("not settled 60 s after {cut:?} healed: {report:#}"));
    assert_eq!(
        order_count(&audit),
        report.taken.len() as u64,
        "one order per idempotency key: {audit}"
    );
    let after = stock(&cluster).await;
    for product in PRODUCTS {
        let sold = audit["sold"][product].as_i64().unwrap_or(0);
        assert_eq!(after[product] + sold, before[product], "{product}: {audit}");
    }
    println!(
        "{cut:?} healed: {} orders, all settled, audit clean {}",
        report.taken.len(),
        audit["orders"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cutting_order_from_payment_mid_load_settles_every_order() {
    partition_mid_load(Cut::Both("order", "payment"), "cut-pay").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cutting_order_from_inventory_mid_load_settles_every_order() {
    partition_mid_load(Cut::Both("order", "inventory"), "cut-inv").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cutting_order_from_postgres_mid_load_settles_every_order() {
    partition_mid_load(Cut::Both("order", "pg"), "cut-pg").await;
}

/// Payment receives the order service's calls and handles them (charges,
/// refunds), but its answers never arrive: the answers lost after the
/// commit, on the wire.
#[tokio::test(flavor = "multi_thread")]
async fn losing_payments_answers_one_way_mid_load_settles_every_order() {
    partition_mid_load(Cut::OneWay("payment", "order"), "oneway-pay").await;
}
