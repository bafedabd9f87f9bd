//! Faults with real processes: a service down, a service killed mid-load,
//! the database restarted mid-load. After each, `ordermesh audit` must find
//! every order settled and the three services in agreement.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ordermesh_proto::order::v1::order_service_client::OrderServiceClient;
use ordermesh_proto::order::v1::{CancelOrderRequest, OrderStatus};
use ordermesh_testkit::TestDatabase;
use tokio::process::Child;
use tonic::Request;

use crate::harness::{
    ORDERMESH, available, connect, eventually, free_port, order_request, spawn, wait_terminal,
};

/// The order, inventory and payment roles as three processes on fixed
/// ports, so any one can be killed and started again where it was.
pub struct Roles {
    pub database: Arc<TestDatabase>,
    ports: HashMap<&'static str, u16>,
    children: HashMap<&'static str, Child>,
    logs: Arc<Mutex<Vec<String>>>,
    extra_args: Vec<String>,
}

impl Roles {
    pub async fn start(database: Arc<TestDatabase>, extra_args: &[&str]) -> Self {
        let ports = ["order", "inventory", "payment"]
            .into_iter()
            .map(|role| (role, free_port()))
            .collect();
        let mut roles = Self {
            database,
            ports,
            children: HashMap::new(),
            logs: Arc::default(),
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
        };
        for role in ["inventory", "payment", "order"] {
            roles.start_role(role).await;
        }
        roles
    }

    pub fn addr(&self, role: &str) -> SocketAddr {
        format!("127.0.0.1:{}", self.ports[role]).parse().unwrap()
    }

    pub async fn start_role(&mut self, role: &'static str) {
        let mut args = vec![
            role.to_owned(),
            format!("--{role}-addr"),
            self.addr(role).to_string(),
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
        let (child, _) = spawn(&self.database, &args, &[], &self.logs, &[role]).await;
        self.children.insert(role, child);
    }

    /// SIGKILL: no drain, as in a crash.
    pub async fn kill(&mut self, role: &str) {
        if let Some(mut child) = self.children.remove(role) {
            child.kill().await.expect("kill -9");
        }
    }

    pub async fn orders(&self) -> OrderServiceClient<tonic::transport::Channel> {
        OrderServiceClient::new(connect(self.addr("order")).await)
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

/// Places `count` orders from `clients` concurrent clients (bounded), each
/// retried with its idempotency key when the call itself fails. Returns the
/// order ids that were taken, and the status codes of the calls that failed.
async fn load(
    order_addr: SocketAddr,
    clients: usize,
    count: usize,
    tag: &str,
) -> (Vec<String>, Vec<tonic::Code>) {
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let tag = tag.to_owned();
            tokio::spawn(async move {
                let mut taken = Vec::new();
                let mut errors = Vec::new();
                for i in 0..count / clients {
                    let key = format!("{tag}-{client}-{i}");
                    let token = if i % 5 == 4 {
                        "pm_card_chargeDeclined"
                    } else {
                        "pm_card_visa"
                    };
                    let product = ["sku-filter", "sku-mug", "sku-espresso"][i % 3];
                    for _attempt in 0..20 {
                        let Ok(channel) =
                            tonic::transport::Channel::from_shared(format!("http://{order_addr}"))
                                .unwrap()
                                .connect()
                                .await
                        else {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        };
                        let mut request = Request::new(order_request(
                            &format!("{tag}-{client}"),
                            &[(product, 1)],
                            token,
                        ));
                        request
                            .metadata_mut()
                            .insert("idempotency-key", key.parse().unwrap());
                        request.set_timeout(Duration::from_secs(5));
                        match OrderServiceClient::new(channel).create_order(request).await {
                            Ok(order) => {
                                taken.push(order.into_inner().order_id);
                                break;
                            }
                            Err(status) => {
                                errors.push(status.code());
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        }
                    }
                }
                (taken, errors)
            })
        })
        .collect();
    let (mut taken, mut errors) = (Vec::new(), Vec::new());
    for task in tasks {
        let (t, e) = task.await.unwrap();
        taken.extend(t);
        errors.extend(e);
    }
    (taken, errors)
}

async fn kill_mid_load(victim: &'static str) {
    let database = match TestDatabase::postgres().await {
        Some(database) => database,
        None => TestDatabase::sqlite(),
    };
    let mut roles = Roles::start(Arc::new(database), &[]).await;
    let order_addr = roles.addr("order");
    let run = tokio::spawn(load(order_addr, 4, 60, victim));
    tokio::time::sleep(Duration::from_millis(400)).await;
    roles.kill(victim).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    roles.start_role(victim).await;
    let (taken, _) = run.await.unwrap();
    assert_eq!(taken.len(), 60, "every order was taken in the end");
    let report = settled(&roles.database).await;
    let orders = order_count(&report);
    assert_eq!(orders, 60, "one order per idempotency key: {report}");
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

/// A PostgreSQL server of the test's own (initdb in a temporary folder), so
/// the test can stop and start it. As root, it runs as the `postgres` user,
/// since PostgreSQL refuses to run as root.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
}

impl PrivatePostgres {
    fn start() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .map(|entry| entry.path().join("bin"))
            .find(|bin| bin.join("initdb").is_file())
            .or_else(|| ordermesh_testkit::missing("PostgreSQL's initdb"))?;
        let dir = tempfile::tempdir().unwrap();
        if running_as_root() {
            assert!(
                Command::new("chown")
                    .arg("postgres")
                    .arg(dir.path())
                    .status()
                    .unwrap()
                    .success()
            );
        }
        let server = Self {
            dir,
            bin,
            port: free_port(),
        };
        server.pg(
            "initdb",
            &["-D", &server.data(), "-U", "postgres", "--auth=trust"],
        );
        server.up();
        Some(server)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        self.pg(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
    }

    fn down(&self) {
        self.pg("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// A PostgreSQL tool, as the `postgres` user when running as root.
    fn tool(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if running_as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn pg(&self, program: &str, args: &[&str]) {
        let output = self
            .tool(program)
            .args(args)
            .output()
            .expect("run a PostgreSQL tool");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

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

    let run = tokio::spawn(load(roles.addr("order"), 4, 60, "pg-restart"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.down();
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.up();
    let (taken, errors) = run.await.unwrap();
    assert_eq!(
        taken.len(),
        60,
        "every order was taken once the database was back"
    );
    // While it was away, callers were told to retry, nothing else.
    assert!(
        errors.iter().all(|code| matches!(
            code,
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
        )),
        "{errors:?}"
    );
    eprintln!("errors while the database was down: {}", errors.len());

    let report = settled(&database).await;
    let orders = order_count(&report);
    assert_eq!(orders, 60, "{report}");
    // Stock plus units sold is the starting stock, product by product.
    for product in products {
        let sold = report["sold"][product].as_i64().unwrap();
        let now = i64::from(stock(&roles, product).await);
        assert_eq!(
            now + sold,
            i64::from(before[product]),
            "{product}: {report}"
        );
    }
    drop(roles);
}
