//! Starts the real `ordermesh` binary on loopback ports it picks itself, and
//! hands out clients to it. Every test gets its own process and database.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh_proto::inventory::v1::{GetProductRequest, Product};
use ordermesh_proto::order::v1::order_service_client::OrderServiceClient;
use ordermesh_proto::order::v1::{
    CreateOrderRequest, GetOrderRequest, Order, OrderItem, OrderStatus,
};
use ordermesh_proto::payment::v1::payment_service_client::PaymentServiceClient;
use ordermesh_testkit::TestDatabase;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

pub const ORDERMESH: &str = env!("CARGO_BIN_EXE_ordermesh");

const ALL_ROLES: &[&str] = &["order", "inventory", "payment", "gateway", "admin"];

/// A running `ordermesh all` process.
pub struct System {
    child: Option<Child>,
    pub order_addr: SocketAddr,
    pub inventory_addr: SocketAddr,
    pub payment_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub gateway_addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    database: Arc<TestDatabase>,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl System {
    /// The whole system on a fresh SQLite directory.
    pub async fn sqlite() -> Self {
        Self::start(Arc::new(TestDatabase::sqlite()), &[]).await
    }

    pub async fn start(database: Arc<TestDatabase>, args: &[&str]) -> Self {
        Self::start_with_env(database, args, &[]).await
    }

    /// Starts with extra environment variables (e.g. the OTLP endpoint).
    pub async fn start_with_env(
        database: Arc<TestDatabase>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (child, addrs) = spawn(&database, &all_args(&args), &env, &logs, ALL_ROLES).await;
        Self {
            child: Some(child),
            order_addr: addrs["order"],
            inventory_addr: addrs["inventory"],
            payment_addr: addrs["payment"],
            admin_addr: addrs["admin"],
            gateway_addr: addrs["gateway"],
            logs,
            database,
            args,
            env,
        }
    }

    pub async fn order(&self) -> OrderServiceClient<Channel> {
        OrderServiceClient::new(connect(self.order_addr).await)
    }

    pub async fn inventory(&self) -> InventoryServiceClient<Channel> {
        InventoryServiceClient::new(connect(self.inventory_addr).await)
    }

    pub async fn payment(&self) -> PaymentServiceClient<Channel> {
        PaymentServiceClient::new(connect(self.payment_addr).await)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Every line the process wrote so far (stdout and stderr).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// SIGKILL: no drain, no cleanup, as in a crash.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill -9");
        }
    }

    /// SIGTERM, then waits for the process to drain and exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the process is running");
        let pid = child.id().expect("pid").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("the process exits within 30s of SIGTERM")
            .expect("wait")
    }

    /// Starts the process again on the same database (new ports).
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.kill().await;
        }
        let (child, addrs) = spawn(
            &self.database,
            &all_args(&self.args),
            &self.env,
            &self.logs,
            ALL_ROLES,
        )
        .await;
        self.child = Some(child);
        self.order_addr = addrs["order"];
        self.inventory_addr = addrs["inventory"];
        self.payment_addr = addrs["payment"];
        self.admin_addr = addrs["admin"];
        self.gateway_addr = addrs["gateway"];
    }
}

fn all_args(extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        "all",
        "--order-addr",
        "127.0.0.1:0",
        "--inventory-addr",
        "127.0.0.1:0",
        "--payment-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--gateway-addr",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    args.extend_from_slice(extra);
    args
}

/// One role in a process of its own, e.g. a second inventory replica.
pub struct RoleProcess {
    _child: Child,
    pub addr: SocketAddr,
    _logs: Arc<Mutex<Vec<String>>>,
}

impl RoleProcess {
    /// Runs `ordermesh ROLE --ROLE-addr 127.0.0.1:0 ARGS...` on `database`.
    pub async fn start(database: &TestDatabase, role: &str, args: &[&str]) -> Self {
        let mut all: Vec<String> = vec![
            role.to_owned(),
            format!("--{role}-addr"),
            "127.0.0.1:0".to_owned(),
            "--admin-addr".to_owned(),
            "127.0.0.1:0".to_owned(),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (child, addrs) = spawn(database, &all, &[], &logs, &[role, "admin"]).await;
        Self {
            _child: child,
            addr: addrs[role],
            _logs: logs,
        }
    }
}

/// Starts the binary with `args` and waits until `roles` listeners are up.
pub async fn spawn(
    database: &TestDatabase,
    args: &[String],
    env: &[(String, String)],
    logs: &Arc<Mutex<Vec<String>>>,
    roles: &[&str],
) -> (Child, HashMap<String, SocketAddr>) {
    let mut command = Command::new(ORDERMESH);
    command
        .args(args)
        .args(["--log-format", "json"])
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match &database.settings().database_url {
        Some(url) => command.env("DATABASE_URL", url),
        None => command.env("ORDERMESH_DATA_DIR", &database.settings().data_dir),
    };
    let mut child = command.spawn().expect("start ordermesh");

    let (addr_tx, mut addr_rx) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let collect =
        |stream: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
         addr_tx: Option<tokio::sync::mpsc::UnboundedSender<(String, SocketAddr)>>| {
            let logs = logs.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(tx) = &addr_tx
                        && let Some(listening) = listening(&line)
                    {
                        let _ = tx.send(listening);
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        };
    collect(Box::new(stdout), Some(addr_tx));
    collect(Box::new(stderr), None);

    let mut addrs = HashMap::new();
    let started = tokio::time::timeout(Duration::from_secs(60), async {
        while !roles.iter().all(|role| addrs.contains_key(*role)) {
            match addr_rx.recv().await {
                Some((role, addr)) => {
                    addrs.insert(role, addr);
                }
                None => return false,
            }
        }
        true
    })
    .await;
    if started != Ok(true) {
        let logs = logs.lock().unwrap().join("\n");
        panic!("ordermesh did not start listening; its output:\n{logs}");
    }
    (child, addrs)
}

/// The (role, address) of a `listening` log line.
fn listening(line: &str) -> Option<(String, SocketAddr)> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    if value.get("msg")?.as_str()? != "listening" {
        return None;
    }
    let role = value.get("role")?.as_str()?.to_owned();
    let addr = value.get("addr")?.as_str()?.parse().ok()?;
    Some((role, addr))
}

/// Whether something answers gRPC at `addr` (a connection succeeds).
pub async fn connect_checked(addr: SocketAddr) -> bool {
    Channel::from_shared(format!("http://{addr}"))
        .expect("valid url")
        .connect()
        .await
        .is_ok()
}

pub async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("valid url")
        .connect()
        .await
        .expect("connect")
}

/// A CreateOrder request for `items` paid with `payment_method`.
pub fn order_request(
    customer: &str,
    items: &[(&str, i32)],
    payment_method: &str,
) -> CreateOrderRequest {
    CreateOrderRequest {
        customer_id: customer.to_owned(),
        items: items
            .iter()
            .map(|(product_id, quantity)| OrderItem {
                product_id: (*product_id).to_owned(),
                quantity: *quantity,
                unit_price: None,
            })
            .collect(),
        payment_method: payment_method.to_owned(),
    }
}

pub async fn available(inventory: &mut InventoryServiceClient<Channel>, product_id: &str) -> i32 {
    product(inventory, product_id).await.available
}

pub async fn product(inventory: &mut InventoryServiceClient<Channel>, product_id: &str) -> Product {
    inventory
        .get_product(GetProductRequest {
            product_id: product_id.to_owned(),
        })
        .await
        .expect("get product")
        .into_inner()
}

/// Polls until the order reaches a terminal status (at most `limit`).
pub async fn wait_terminal(
    orders: &mut OrderServiceClient<Channel>,
    order_id: &str,
    limit: Duration,
) -> Order {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let order = orders
            .get_order(GetOrderRequest {
                order_id: order_id.to_owned(),
            })
            .await
            .map(tonic::Response::into_inner);
        if let Ok(order) = &order
            && order.status() != OrderStatus::Pending
        {
            return order.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "order {order_id} still not terminal after {limit:?}: {order:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `check` until it returns Some, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A binary built beside `ordermesh` (e.g. `orderctl`, which `cargo test
/// --workspace` builds for its own tests).
pub fn sibling_binary(name: &str) -> std::path::PathBuf {
    let path = std::path::PathBuf::from(ORDERMESH).with_file_name(name);
    assert!(
        path.is_file(),
        "{} is not built; run `cargo test --workspace` or `cargo build --bin {name}` first",
        path.display()
    );
    path
}

/// The repository's root folder.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A loopback port free right now, for tools that cannot report the port
/// they bound (unlike `ordermesh`). Drawn below Linux's ephemeral range
/// (32768 and up), so a server elsewhere binding port 0 cannot take it
/// between this check and the tool's own bind.
pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `count` consecutive free loopback ports, as [`free_port`].
pub fn free_ports(count: u16) -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Hand out the range in turn, from a start that differs between runs.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = u16::try_from(std::process::id() % 10_000).unwrap_or(0);
    for _ in 0..1000 {
        let offset = NEXT.fetch_add(count, Ordering::Relaxed).wrapping_add(seed) % 12_000;
        let first = 20_000 + offset;
        if (0..count).all(|i| std::net::TcpListener::bind(("127.0.0.1", first + i)).is_ok()) {
            return first;
        }
    }
    panic!("no {count} free ports between 20000 and 32000");
}
