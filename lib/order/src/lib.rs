//! The order service: stores each order, then runs it as a saga over the
//! inventory and payment services (reserve → charge → commit, compensating
//! on failure), resuming unfinished sagas after a crash.

mod domain;
mod error;
mod grpc;
mod hub;
mod outbox;
mod peers;
mod prices;
mod runner;
mod service;
mod store;

use crate::store::{Leases, OrderStore};

/// The order service's outbox, which the relay (`ordermesh-events`) reads.
pub use crate::outbox::OUTBOX;

use std::time::Duration;

use anyhow::Context;
use ordermesh_identity::Verifier;
use ordermesh_proto::order::v1::order_service_server::OrderServiceServer;
use ordermesh_runtime::client::GrpcClientSettings;
use ordermesh_runtime::grpc::RoleServices;
use ordermesh_runtime::{AppContext, grpc_service};
use ordermesh_storage::{Database, DatabaseSettings};

use crate::grpc::OrderGrpc;
use crate::hub::OrderHub;
use crate::peers::Peers;
use crate::runner::SagaRunner;
use crate::service::{Limits, Orders};

/// The order service's own flags.
#[derive(Clone, Debug, clap::Args)]
pub struct OrderSettings {
    /// Where the order service listens for gRPC.
    #[arg(
        id = "order_addr",
        long = "order-addr",
        env = "ORDERMESH_ORDER_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    pub listen: std::net::SocketAddr,
    /// The inventory service (through the local sidecar in a mesh).
    #[arg(
        long,
        env = "ORDERMESH_INVENTORY_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub inventory_url: String,
    /// The payment service (through the local sidecar in a mesh).
    #[arg(
        long,
        env = "ORDERMESH_PAYMENT_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    pub payment_url: String,
    /// Longest CreateOrder waits for the saga when the caller set no deadline.
    #[arg(long, env = "ORDERMESH_CREATE_WAIT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub create_wait: Duration,
    /// How long one replica may drive an order before another may take over.
    #[arg(long, env = "ORDERMESH_SAGA_LEASE", default_value = "15s", value_parser = humantime::parse_duration)]
    pub saga_lease: Duration,
    /// How often this process proves it is alive to the other replicas.
    #[arg(long, env = "ORDERMESH_HOLDER_HEARTBEAT", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub holder_heartbeat: Duration,
    /// A name that stays the same when this replica restarts (a pod's
    /// name, a host's): a new incarnation frees the old one's saga leases at
    /// once instead of after --holder-timeout. Leave unset when two replicas
    /// might share a name.
    #[arg(long, env = "ORDERMESH_REPLICA_NAME")]
    pub replica_name: Option<String>,
    /// How long a replica may go without a heartbeat before the sagas it
    /// drives are taken over.
    #[arg(long, env = "ORDERMESH_HOLDER_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub holder_timeout: Duration,
    /// On shutdown, how long sagas in flight may finish before their leases
    /// are handed over.
    #[arg(long, env = "ORDERMESH_SAGA_DRAIN", default_value = "5s", value_parser = humantime::parse_duration)]
    pub saga_drain: Duration,
    /// Test-only: shifts this replica's clock by this many milliseconds, to
    /// show that saga leases go by the database's clock.
    #[arg(
        long,
        env = "ORDERMESH_TEST_CLOCK_OFFSET_MS",
        default_value_t = 0,
        hide = true,
        allow_negative_numbers = true
    )]
    pub test_clock_offset_ms: i64,
    /// How often unfinished sagas are looked for and resumed.
    #[arg(long, env = "ORDERMESH_RECOVERY_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub recovery_interval: Duration,
    /// Longest a WatchOrder stream stays open.
    #[arg(long, env = "ORDERMESH_WATCH_LIFETIME", default_value = "10m", value_parser = humantime::parse_duration)]
    pub watch_lifetime: Duration,
    /// How long a unit price the inventory quoted prices new orders before
    /// it is asked again (0 asks for every order). Unknown products are
    /// always asked about, so they are refused before an order is stored.
    #[arg(long, env = "ORDERMESH_PRICE_CACHE_TTL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub price_cache_ttl: Duration,
}

impl Default for OrderSettings {
    fn default() -> Self {
        ordermesh_runtime::settings::defaults()
    }
}

/// Opens the order database, starts the recovery loop (which first resumes
/// whatever a previous run left mid-saga), and returns the gRPC services.
pub async fn build(
    settings: &OrderSettings,
    client: &GrpcClientSettings,
    database: &DatabaseSettings,
    verifier: Verifier,
    context: &AppContext,
) -> anyhow::Result<RoleServices> {
    let shutdown = context.shutdown().clone();
    let store = open_store(database).await?;
    context
        .metrics()
        .sqlite_commits
        .watch("order", store.database().sqlite_commit_counter());
    let peers = Peers::connect(
        &settings.inventory_url,
        &settings.payment_url,
        client,
        settings.price_cache_ttl,
        context,
    )
    .context("connecting to inventory and payment")?;
    let hub = OrderHub::default();
    // One holder per process incarnation: a restart is a new holder, and
    // the old one's leases are free once its heartbeats stop.
    let leases = Leases {
        holder: uuid::Uuid::now_v7().to_string(),
        lease: settings.saga_lease,
        holder_timeout: settings.holder_timeout,
    };
    let retired = store
        .register(
            &leases.holder,
            settings.replica_name.as_deref(),
            ordermesh_storage::now_millis(),
        )
        .await
        .context("registering this saga lease holder")?;
    if retired > 0 {
        tracing::info!(
            retired,
            replica = settings.replica_name.as_deref(),
            "an earlier incarnation of this replica retired; its saga leases are free"
        );
    }
    let runner = SagaRunner::new(
        store.clone(),
        peers.clone(),
        hub.clone(),
        context.metrics().clone(),
        context.failpoints().clone(),
        leases,
        settings.test_clock_offset_ms,
    );
    let recovery = runner.recovery(
        settings.recovery_interval,
        settings.saga_drain,
        shutdown.clone(),
    );
    let heartbeat = runner.heartbeat(settings.holder_heartbeat, shutdown.clone());
    let limits = Limits {
        create_wait: settings.create_wait,
        watch_lifetime: settings.watch_lifetime,
        watch_poll: Duration::from_secs(1),
    };
    let orders = Orders::new(store, peers, hub, runner, limits, shutdown);
    let server = grpc_service!(OrderServiceServer::new(OrderGrpc::new(orders, verifier)));
    Ok(RoleServices::new("order", server)
        .with_background(recovery)
        .with_background(heartbeat))
}

/// The order database, migrated, for tools that read it (the invariant
/// audit); the service itself reads it only through its store.
pub async fn open_database(database: &DatabaseSettings) -> anyhow::Result<Database> {
    let db = Database::open(database, "order", &sqlx::migrate!("./migrations")).await?;
    Ok(db)
}

async fn open_store(database: &DatabaseSettings) -> anyhow::Result<OrderStore> {
    Ok(OrderStore::new(open_database(database).await?))
}
