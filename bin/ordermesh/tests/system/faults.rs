//! Faults with real processes: a service down, a service killed mid-load,
//! the database restarted mid-load. After each, `ordermesh audit` must find
//! every order settled and the three services in agreement.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use ordermesh_proto::order::v1::{CancelOrderRequest, OrderStatus};
use ordermesh_testkit::TestDatabase;
use ordermesh_testkit::postgres::PrivatePostgres;
use ordermesh_testkit::process::{ChildProcess, Logs};

use crate::harness::{
    ORDERMESH, OrderClient, available, connect, eventually, launch, order_client, order_request,
    wait_terminal,
};
use crate::load::Load;

/// The order, inventory and payment roles as three processes. Each binds
/// port 0 the first time and its own port again when restarted, so the
/// others find it where it was.
pub struct Roles {
    pub database: Arc<TestDatabase>,
    ports: HashMap<&'static str, u16>,
    children: HashMap<&'static str, ChildProcess>,
    logs: Logs,
    extra_args: Vec<String>,
}

impl Roles {
    pub async fn start(database: Arc<TestDatabase>, extra_args: &[&str]) -> Self {
        let mut roles = Self {
            database,
            ports: HashMap::new(),
            children: HashMap::new(),
            logs: Logs::default(),
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
        };
        for role in ["inventory", "payment", "order"] {
            roles.start_role(role).await;
        }
        roles
    }

    pub fn addr(&self, role: &str) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[role]))
    }

    pub async fn start_role(&mut self, role: &'static str) {
        let port = self.ports.get(role).copied().unwrap_or(0);
        let mut args = vec![
            role.to_owned(),
            format!("--{role}-addr"),
            format!("127.0.0.1:{port}"),
            "--admin-addr".to_owned(),
            "127.0.0.1:0".to_owned(),
        ];
        if role == "order" {
            args.extend([
                "--inventory-url".to_owned(),
                format!("http://{}", self.addr("inventory")),
                "--payment-url".to_owned(),
                format!("http://{}", self.addr("payment")),
            ]);
        }
        args.extend(self.extra_args.iter().cloned());
        let process = launch(&self.database, &args, &[], &[role], self.logs.clone()).await;
        self.ports.insert(role, process.addr(role).port());
        self.children.insert(role, process);
    }

    /// SIGKILL: no drain, as in a crash.
    pub async fn kill(&mut self, role: &str) {
        if let Some(mut process) = self.children.remove(role) {
            process.kill().await;
        }
    }

    pub async fn orders(&self) -> OrderClient {
        order_client(connect(self.addr("order")).await)
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }
}

/// Runs `ordermesh audit --json` on `database` and returns its report,
/// failing the test with the report when an invariant is broken.
pub fn audit(database: &TestDatabase) -> serde_json::Value {
    let output = audit_command(database)
        .output()
        .expect("run ordermesh audit");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = serde_json::from_str(&stdout).ok().unwrap_or_else(|| {
        panic!(
            "audit printed no report: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert!(
        output.status.success(),
        "the audit found problems:\n{report:#}"
    );
    report
}

/// `ordermesh audit --json` on `database`'s SQLite folder or PostgreSQL URL.
fn audit_command(database: &TestDatabase) -> Command {
    let mut command = Command::new(ORDERMESH);
    command.args(["audit", "--json"]).env_remove("DATABASE_URL");
    match &database.settings().database_url {
        Some(url) => command.env("DATABASE_URL", url),
        None => command.env("ORDERMESH_DATA_DIR", &database.settings().data_dir),
    };
    command
}

/// How many orders an audit report counts, whatever their status.
pub fn order_count(report: &serde_json::Value) -> u64 {
    report["orders"]
        .as_object()
        .map(|by_status| {
            by_status
                .values()
                .filter_map(serde_json::Value::as_u64)
                .sum()
        })
        .unwrap_or(0)
}

/// Waits until the audit is clean (recovery loops finish their work).
pub async fn settled(database: &TestDatabase) -> serde_json::Value {
    eventually(Duration::from_secs(60), "every order settled", || {
        let clean = audit_command(database)
            .output()
            .is_ok_and(|o| o.status.success());
        async move { clean.then_some(()) }
    })
    .await;
    audit(database)
}

async fn stock(roles: &Roles, product: &str) -> i32 {
    let mut inventory =
        ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient::new(
            connect(roles.addr("inventory")).await,
        );
    available(&mut inventory, product).await
}

#[tokio::test(flavor = "multi_thread")]
async fn payment_down_fails_orders_at_once_and_releases_their_stock() {
    let mut roles = Roles::start(Arc::new(TestDatabase::sqlite()), &[]).await;
    let before = stock(&roles, "sku-kettle").await;
    roles.kill("payment").await;
    let mut orders = roles.orders().await;
    for i in 0..3 {
        let order = orders
            .create_order(order_request(
                &format!("down-{i}"),
                &[("sku-kettle", 1)],
                "pm_card_visa",
            ))
            .await
            .expect("the order is taken")
            .into_inner();
        let order = wait_terminal(&mut orders, &order.order_id, Duration::from_secs(20)).await;
        assert_eq!(order.status(), OrderStatus::Failed);
        assert_eq!(order.failure_reason, "PAYMENT_UNAVAILABLE");
    }
    assert_eq!(stock(&roles, "sku-kettle").await, before, "stock released");

    roles.start_role("payment").await;
    let order = orders
        .create_order(order_request("back", &[("sku-kettle", 1)], "pm_card_visa"))
        .await
        .unwrap()
        .into_inner();
    let order = wait_terminal(&mut orders, &order.order_id, Duration::from_secs(20)).await;
    assert_eq!(order.status(), OrderStatus::Confirmed);
    settled(&roles.database).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_while_inventory_is_down_completes_when_it_returns() {
    let mut roles = Roles::start(Arc::new(TestDatabase::sqlite()), &[]).await;
    let before = stock(&roles, "sku-grinder").await;
    let mut orders = roles.orders().await;
    let order = orders
        .create_order(order_request(
            "cancel-down",
            &[("sku-grinder", 2)],
            "pm_card_visa",
        ))
        .await
        .unwrap()
        .into_inner();
    let order = wait_terminal(&mut orders, &order.order_id, Duration::from_secs(20)).await;
    assert_eq!(order.status(), OrderStatus::Confirmed);

    roles.kill("inventory").await;
    let cancelled = orders
        .cancel_order(CancelOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .expect("the cancel is taken while inventory is down")
        .into_inner();
    assert_eq!(cancelled.status(), OrderStatus::Cancelled);
    // The restock is owed, not lost: the audit sees it outstanding.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !audit_command(&roles.database)
            .output()
            .unwrap()
            .status
            .success(),
        "restock cannot be done yet"
    );

    roles.start_role("inventory").await;
    settled(&roles.database).await;
    assert_eq!(stock(&roles, "sku-grinder").await, before, "restocked");
}

/// Kills `victim` while orders stream in, starts it again, and checks
/// that the kill was seen (the fault hit), that every order was taken once
/// per idempotency key, and that the audit is clean.
async fn kill_mid_load(victim: &'static str) {
    let database = match TestDatabase::postgres().await {
        Some(database) => database,
        None => TestDatabase::sqlite(),
    };
    let mut roles = Roles::start(Arc::new(database), &[]).await;
    let load = Load::start(roles.addr("order"), 4, victim);
    load.wait_taken(20, Duration::from_secs(30)).await;
    roles.kill(victim).await;
    let window = load.report_so_far();
    tokio::time::sleep(Duration::from_millis(800)).await;
    roles.start_role(victim).await;
    let restarted = load.taken();
    load.wait_taken(restarted + 20, Duration::from_secs(60))
        .await;
    let report = load.finish().await;
    let hit = report.fault_signs_since(&window);
    eprintln!(
        "kill -9 {victim}: {} orders taken, {} failed calls, {} orders failed by the outage ({hit} signs of the fault)",
        report.taken.len(),
        report.errors.len(),
        report.failed_by_outage(),
    );
    assert!(hit > 0, "the kill of {victim} was never seen: {report:?}");
    report.assert_every_key_taken();

    let audit = settled(&roles.database).await;
    assert_eq!(
        order_count(&audit),
        report.taken.len() as u64,
        "one order per idempotency key: {audit}"
    );
    // Payment tokens never reach a log line whole, even on error paths.
    for line in roles.logs() {
        assert!(
            !line.contains("pm_card_visa") && !line.contains("pm_card_chargeDeclined"),
            "a payment token in the logs: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_order_service_mid_load_keeps_every_invariant() {
    kill_mid_load("order").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_inventory_mid_load_keeps_every_invariant() {
    kill_mid_load("inventory").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_payment_service_mid_load_keeps_every_invariant() {
    kill_mid_load("payment").await;
}

/// How long the database restart keeps PostgreSQL away.
const OUTAGE: Duration = Duration::from_secs(6);

#[tokio::test(flavor = "multi_thread")]
async fn a_database_restart_mid_load_keeps_every_invariant() {
    let Some(server) = PrivatePostgres::start() else {
        return;
    };
    let database = Arc::new(TestDatabase::postgres_on(&server.url()).await);
    let roles = Roles::start(database.clone(), &[]).await;
    let products = ["sku-filter", "sku-mug", "sku-espresso"];
    let mut before = HashMap::new();
    for product in products {
        before.insert(product, stock(&roles, product).await);
    }

    let load = Load::start(roles.addr("order"), 4, "pg-restart");
    load.wait_taken(20, Duration::from_secs(30)).await;
    let window = load.report_so_far();
    server.down();
    // Longer than the pool's 5 s wait for a connection: a call that waits
    // through the outage is refused (UNAVAILABLE), however few calls meet a
    // dead pooled connection at once (remembered prices left fewer reads).
    tokio::time::sleep(OUTAGE).await;
    server.up();
    let back = load.taken();
    load.wait_taken(back + 20, Duration::from_secs(60)).await;
    let report = load.finish().await;
    // A call made while the database is away waits for the pool's connect
    // attempts (5 s) before it is refused: count what came after the stop.
    let away: Vec<tonic::Code> = report.errors[window.errors.len()..].to_vec();
    eprintln!(
        "PostgreSQL down {OUTAGE:?}: {} orders taken, {} calls refused while it was away ({:?})",
        report.taken.len(),
        away.len(),
        away.iter()
            .map(|code| format!("{code:?}"))
            .collect::<std::collections::BTreeSet<_>>()
    );
    // The fault hit: callers were refused while the database was away...
    assert!(
        away.contains(&tonic::Code::Unavailable),
        "no UNAVAILABLE while the database was down: {away:?}"
    );
    // ...and told only to retry, nothing else. CANCELLED is the load's own
    // 8 s timeout expiring (tonic's "Timeout expired"): a call that waited
    // for the pool's connect attempts, statement after statement, on a
    // machine busy with other tests.
    assert!(
        report.errors.iter().all(|code| matches!(
            code,
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        )),
        "{:?}",
        report.errors
    );
    report.assert_every_key_taken();

    let audit = settled(&database).await;
    assert_eq!(order_count(&audit), report.taken.len() as u64, "{audit}");
    // Stock plus units sold is the starting stock, product by product.
    for product in products {
        let sold = audit["sold"][product].as_i64().unwrap();
        let now = i64::from(stock(&roles, product).await);
        assert_eq!(now + sold, i64::from(before[product]), "{product}: {audit}");
    }
    drop(roles);
}

/// After a PostgreSQL restart, a service whose pooled connections all died
/// while idle answers its next calls on live connections, not with each
/// dead connection's error in turn (found by the chaos run: a saga's
/// compensation spent its retries on them; docs/reliability.md).
#[tokio::test(flavor = "multi_thread")]
async fn after_a_database_restart_no_call_gets_a_dead_pooled_connection() {
    use ordermesh_proto::inventory::v1::GetProductRequest;
    use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;

    let Some(server) = PrivatePostgres::start() else {
        return;
    };
    let database = TestDatabase::postgres_on(&server.url()).await;
    let inventory = crate::harness::RoleProcess::start(&database, "inventory", &[]).await;
    let client = InventoryServiceClient::new(connect(inventory.addr()).await);
    let read = |mut client: InventoryServiceClient<tonic::transport::Channel>| async move {
        client
            .get_product(GetProductRequest {
                product_id: "sku-mug".to_owned(),
            })
            .await
            .map(|_| ())
            .map_err(|status| status.code())
    };
    // Reads at once, so the pool holds several connections.
    let at_once = futures::future::join_all((0..32).map(|_| read(client.clone()))).await;
    assert!(at_once.iter().all(Result::is_ok), "{at_once:?}");
    tokio::task::block_in_place(|| {
        server.down();
        server.up();
    });
    // Idle past the pool's ping threshold (1 s), as after a quiet spell.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut failed = Vec::new();
    for _ in 0..20 {
        if let Err(code) = read(client.clone()).await {
            failed.push(code);
        }
    }
    println!(
        "PostgreSQL restarted under an idle pool: {} of 20 reads after it failed {failed:?}",
        failed.len()
    );
    assert!(failed.is_empty(), "reads got dead connections: {failed:?}");
}
