//! What the system tests share. Most tests run the system in-process
//! ([`TestApp`], one App per test on its own database and ports) and talk
//! to it over loopback; [`System`] starts the real `ordermesh` binary for
//! the tests where the process is the point (signals, kill -9, log output,
//! the CLI, Envoy and the mesh).

use std::net::SocketAddr;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

pub use ordermesh_app::Role;
use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh_proto::inventory::v1::{GetProductRequest, Product};
use ordermesh_proto::order::v1::order_service_client::OrderServiceClient;
use ordermesh_proto::order::v1::{
    CreateOrderRequest, GetOrderRequest, Order, OrderItem, OrderStatus,
};
use ordermesh_proto::payment::v1::payment_service_client::PaymentServiceClient;
pub use ordermesh_testkit::TestApp;
use ordermesh_testkit::process::{ChildProcess, Launch, Logs};
use ordermesh_testkit::{TestDatabase, tokens};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub const ORDERMESH: &str = env!("CARGO_BIN_EXE_ordermesh");

const ALL_ROLES: &[&str] = &["order", "inventory", "payment", "gateway", "admin"];

/// Where a running system listens, in-process or not, and clients to it.
pub trait Endpoints {
    fn addr(&self, role: Role) -> SocketAddr;
    fn admin(&self) -> SocketAddr;

    fn gateway_addr(&self) -> SocketAddr {
        self.addr(Role::Gateway)
    }

    /// A client of the order service whose calls carry an operator's token
    /// (`orders:admin`) unless the request has a token of its own (as
    /// [`order_request`]'s do: a customer places their own orders).
    async fn order(&self) -> OrderClient {
        order_client(connect(self.addr(Role::Order)).await)
    }

    async fn inventory(&self) -> InventoryServiceClient<Channel> {
        InventoryServiceClient::new(connect(self.addr(Role::Inventory)).await)
    }

    async fn payment(&self) -> PaymentServiceClient<Channel> {
        PaymentServiceClient::new(connect(self.addr(Role::Payment)).await)
    }
}

impl Endpoints for TestApp {
    fn addr(&self, role: Role) -> SocketAddr {
        TestApp::addr(self, role)
    }
    fn admin(&self) -> SocketAddr {
        self.admin_addr()
    }
}

/// A running `ordermesh all` process.
pub struct System {
    process: ChildProcess,
    database: Arc<TestDatabase>,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Endpoints for System {
    fn addr(&self, role: Role) -> SocketAddr {
        self.process.addr(role.name())
    }
    fn admin(&self) -> SocketAddr {
        self.process.addr("admin")
    }
}

impl System {
    /// The process's id, to read its memory.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
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
        let process = launch(
            &database,
            &all_args(&args),
            &env,
            ALL_ROLES,
            Logs::default(),
        )
        .await;
        Self {
            process,
            database,
            args,
            env,
        }
    }

    /// Every line the process wrote so far (stdout and stderr).
    pub fn logs(&self) -> Vec<String> {
        self.process.logs()
    }

    /// SIGKILL: no drain, no cleanup, as in a crash.
    pub async fn kill(&mut self) {
        self.process.kill().await;
    }

    /// SIGTERM, then waits for the process to drain and exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.process
            .terminate(Duration::from_secs(30))
            .await
            .expect("the process exits within 30s of SIGTERM")
    }

    /// Starts the process again on the same database (new ports).
    pub async fn restart(&mut self) {
        self.process.kill().await;
        self.process = launch(
            &self.database,
            &all_args(&self.args),
            &self.env,
            ALL_ROLES,
            self.process.log_handle(),
        )
        .await;
    }
}

fn all_args(extra: &[String]) -> Vec<String> {
    let mut args = vec!["all".to_owned()];
    for role in ["order", "inventory", "payment", "admin", "gateway"] {
        args.push(format!("--{role}-addr"));
        args.push("127.0.0.1:0".to_owned());
    }
    args.extend_from_slice(extra);
    args
}

/// One role in a process of its own, e.g. a second inventory replica.
pub struct RoleProcess {
    process: ChildProcess,
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
        let process = launch(database, &all, &[], &[role, "admin"], Logs::default()).await;
        Self { process }
    }

    pub fn addr(&self) -> SocketAddr {
        self.process
            .addrs()
            .iter()
            .find(|(role, _)| role.as_str() != "admin")
            .map(|(_, addr)| *addr)
            .expect("the role listens")
    }

    /// Sends `signal` ("TERM", …) without waiting.
    pub fn signal(&self, signal: &str) {
        self.process.signal(signal).expect("signal the role");
    }

    /// SIGTERM (again, if sent) and waits at most `limit` for the exit.
    pub async fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        self.process
            .terminate(limit)
            .await
            .expect("a graceful exit")
    }
}

/// Starts the binary with `args` on `database` and waits until `roles` are
/// listening.
pub async fn launch(
    database: &TestDatabase,
    args: &[String],
    env: &[(String, String)],
    roles: &[&str],
    logs: Logs,
) -> ChildProcess {
    let mut launch = Launch::new(ORDERMESH)
        .args(args.iter().cloned())
        .args(["--log-format", "json"])
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "info")
        .envs(tokens::env())
        .envs(env.iter().cloned())
        .wait_for(roles.iter().copied());
    launch = match &database.settings().database_url {
        Some(url) => launch.env("DATABASE_URL", url),
        None => launch.env(
            "ORDERMESH_DATA_DIR",
            database.settings().data_dir.display().to_string(),
        ),
    };
    ChildProcess::start_logging_to(launch, logs)
        .await
        .unwrap_or_else(|error| panic!("{error:#}"))
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

/// The order service's client as tests use it (see [`Endpoints::order`]).
pub type OrderClient = OrderServiceClient<InterceptedService<Channel, OperatorUnlessGiven>>;

pub fn order_client(channel: Channel) -> OrderClient {
    OrderServiceClient::with_interceptor(channel, OperatorUnlessGiven)
}

/// Adds an operator's token to a request that carries none.
#[derive(Clone, Copy, Debug)]
pub struct OperatorUnlessGiven;

impl tonic::service::Interceptor for OperatorUnlessGiven {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if !request.metadata().contains_key("authorization") {
            authorize(&mut request, &tokens::admin("test-operator"));
        }
        Ok(request)
    }
}

/// Puts `token` on `request` as its bearer token.
pub fn authorize<T>(request: &mut tonic::Request<T>, token: &str) {
    let value = tokens::bearer(token).parse().expect("a token is ASCII");
    request.metadata_mut().insert("authorization", value);
}

/// A CreateOrder for `items` paid with `payment_method`, placed by
/// `customer` (it carries the customer's token).
pub fn order_request(
    customer: &str,
    items: &[(&str, i32)],
    payment_method: &str,
) -> tonic::Request<CreateOrderRequest> {
    let mut request = tonic::Request::new(order_message(customer, items, payment_method));
    authorize(&mut request, &tokens::customer(customer));
    request
}

/// The CreateOrder message alone (see [`order_request`]).
pub fn order_message(
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
pub async fn wait_terminal(orders: &mut OrderClient, order_id: &str, limit: Duration) -> Order {
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
