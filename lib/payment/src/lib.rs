//! The payment service: charges with deterministic simulated outcomes chosen
//! by the payment-method token, one payment per order however often the
//! mesh retries.

mod domain;
mod grpc;
mod service;
mod store;

use crate::store::PaymentStore;

use ordermesh_proto::payment::v1::payment_service_server::PaymentServiceServer;
use ordermesh_runtime::grpc::RoleServices;
use ordermesh_runtime::{AppContext, grpc_service};
use ordermesh_storage::{Database, DatabaseSettings};

use crate::grpc::PaymentGrpc;
use crate::service::Payments;

/// The payment service's own flags.
#[derive(Clone, Debug, clap::Args)]
pub struct PaymentSettings {
    /// Where the payment service listens for gRPC.
    #[arg(
        id = "payment_addr",
        long = "payment-addr",
        env = "ORDERMESH_PAYMENT_ADDR",
        default_value = "127.0.0.1:50053"
    )]
    pub listen: std::net::SocketAddr,
    /// Share of otherwise good charges declined at random (0.0 to 1.0), for demos.
    #[arg(long, env = "ORDERMESH_PAYMENT_DECLINE_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub decline_rate: f64,
}

impl Default for PaymentSettings {
    fn default() -> Self {
        ordermesh_runtime::settings::defaults()
    }
}

fn parse_rate(value: &str) -> Result<f64, String> {
    let rate: f64 = value
        .parse()
        .map_err(|_| format!("{value:?} is not a number"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!(
            "the decline rate must be between 0 and 1, got {rate}"
        ))
    }
}

/// Opens the payment database and returns the gRPC services to serve.
pub async fn build(
    settings: &PaymentSettings,
    database: &DatabaseSettings,
    context: &AppContext,
) -> anyhow::Result<RoleServices> {
    let store = open_store(database).await?;
    context
        .metrics()
        .sqlite_commits
        .watch("payment", store.database().sqlite_commit_counter());
    let payments = Payments::new(store, settings.decline_rate, context.metrics().clone());
    let server = grpc_service!(PaymentServiceServer::new(PaymentGrpc::new(payments)));
    Ok(RoleServices::new("payment", server))
}

/// The payment database, migrated, for tools that read it (the invariant
/// audit); the service itself reads it only through its store.
pub async fn open_database(database: &DatabaseSettings) -> anyhow::Result<Database> {
    let db = Database::open(database, "payment", &sqlx::migrate!("./migrations")).await?;
    Ok(db)
}

async fn open_store(database: &DatabaseSettings) -> anyhow::Result<PaymentStore> {
    Ok(PaymentStore::new(open_database(database).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decline_rates_are_bounded() {
        assert_eq!(parse_rate("0.25"), Ok(0.25));
        assert!(parse_rate("1.5").is_err());
        assert!(parse_rate("-0.1").is_err());
        assert!(parse_rate("lots").is_err());
    }
}
