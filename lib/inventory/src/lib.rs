//! The inventory service: the product catalog and its stock. Reservations
//! take every line of an order or none, in the database, so stock never goes
//! negative and the last unit is never sold twice, however many replicas
//! share the database.

mod catalog;
mod domain;
mod grpc;
mod outbox;
mod service;
mod store;

use crate::store::InventoryStore;

/// The inventory service's outbox, which the relay (`ordermesh-events`) reads.
pub use crate::outbox::OUTBOX;

use std::time::Duration;

use ordermesh_proto::inventory::v1::inventory_service_server::InventoryServiceServer;
use ordermesh_runtime::grpc::{BackgroundTask, RoleServices};
use ordermesh_runtime::shutdown::Shutdown;
use ordermesh_runtime::{AppContext, grpc_service};
use ordermesh_storage::{Database, DatabaseSettings, now_millis};

use crate::grpc::InventoryGrpc;
use crate::service::Inventory;

pub use crate::store::StockLine;

/// The inventory service's own flags.
#[derive(Clone, Debug, clap::Args)]
pub struct InventorySettings {
    /// Where the inventory service listens for gRPC.
    #[arg(
        id = "inventory_addr",
        long = "inventory-addr",
        env = "ORDERMESH_INVENTORY_ADDR",
        default_value = "127.0.0.1:50052"
    )]
    pub listen: std::net::SocketAddr,
    /// How long an uncommitted reservation holds stock before it expires.
    #[arg(long, env = "ORDERMESH_RESERVATION_TTL", default_value = "15m", value_parser = humantime::parse_duration)]
    pub reservation_ttl: Duration,
    /// How often expired reservations are swept.
    #[arg(long, env = "ORDERMESH_RESERVATION_SWEEP_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub reservation_sweep_interval: Duration,
    /// Longest life of a WatchStock stream; then it ends with
    /// DEADLINE_EXCEEDED (reason STREAM_LIFETIME) and the client reconnects,
    /// so no stream pins a connection or a replica forever.
    #[arg(long, env = "ORDERMESH_MAX_STREAM_LIFETIME", default_value = "30m", value_parser = humantime::parse_duration)]
    pub max_stream_lifetime: Duration,
}

impl Default for InventorySettings {
    fn default() -> Self {
        ordermesh_runtime::settings::defaults()
    }
}

/// Opens the inventory database, seeds the demo catalog into an empty one,
/// starts the expiry sweeper, and returns the gRPC services to serve.
pub async fn build(
    settings: &InventorySettings,
    database: &DatabaseSettings,
    context: &AppContext,
) -> anyhow::Result<RoleServices> {
    let shutdown = context.shutdown().clone();
    let store = open_store(database).await?;
    context
        .metrics()
        .sqlite_commits
        .watch("inventory", store.database().sqlite_commit_counter());
    if store.seed_if_empty(now_millis()).await? {
        tracing::info!("seeded the demo catalog into an empty database");
    }
    let inventory = Inventory::new(store, settings.reservation_ttl, context.metrics().clone());
    inventory.publish_stock_levels().await?;
    let sweeper = sweeper(
        inventory.clone(),
        settings.reservation_sweep_interval,
        shutdown.clone(),
    );
    let grpc = InventoryGrpc::new(inventory, shutdown, settings.max_stream_lifetime);
    let server = grpc_service!(InventoryServiceServer::new(grpc));
    Ok(RoleServices::new("inventory", server).with_background(sweeper))
}

/// The inventory database, migrated, for tools that read it (the invariant
/// audit); the service itself reads it only through its store.
pub async fn open_database(database: &DatabaseSettings) -> anyhow::Result<Database> {
    let db = Database::open(database, "inventory", &sqlx::migrate!("./migrations")).await?;
    Ok(db)
}

async fn open_store(database: &DatabaseSettings) -> anyhow::Result<InventoryStore> {
    Ok(InventoryStore::new(open_database(database).await?))
}

/// Where every unit of every product is (available, reserved, sold), for
/// tools and tests that check that they add up.
pub async fn stock_report(database: &DatabaseSettings) -> anyhow::Result<Vec<StockLine>> {
    Ok(open_store(database).await?.stock_report().await?)
}

fn sweeper(inventory: Inventory, interval: Duration, shutdown: Shutdown) -> BackgroundTask {
    Box::pin(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shutdown.cancelled() => return,
            }
            if let Err(error) = inventory.expire_due().await {
                tracing::warn!(%error, "sweeping expired reservations failed");
            }
        }
    })
}
