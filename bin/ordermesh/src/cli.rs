//! Command-line flags. Every flag has an environment variable, so the same
//! image is configured by flags locally and by env in Kubernetes.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};
use ordermesh_gateway::GatewaySettings;
use ordermesh_inventory::InventorySettings;
use ordermesh_order::OrderSettings;
use ordermesh_payment::PaymentSettings;
use ordermesh_runtime::client::GrpcClientSettings;
use ordermesh_runtime::grpc::GrpcServerSettings;
use ordermesh_runtime::telemetry::LogFormat;
use ordermesh_storage::DatabaseSettings;

#[derive(Debug, Parser)]
#[command(
    name = "ordermesh",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Log lines as JSON (default) or readable text.
    #[arg(long, env = "ORDERMESH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Option<Command>,

    /// Flags of `all`, which runs when no subcommand is given.
    #[command(flatten)]
    pub all: Box<AllArgs>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every role in one process; the roles still call each other over gRPC.
    All(Box<AllArgs>),
    /// The order service alone.
    Order(OrderArgs),
    /// The inventory service alone.
    Inventory(InventoryArgs),
    /// The payment service alone.
    Payment(PaymentArgs),
    /// The edge gateway alone: REST JSON, SSE, OpenAPI and grpc-web.
    Gateway(GatewayArgs),
    /// Check the saga's invariants across the three services' data: every
    /// order settled, each confirmed order charged once and its stock
    /// committed, nothing held or charged for a failed or cancelled order,
    /// stock adding up. Exits 1 when anything is off.
    Audit(AuditArgs),
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub database: DatabaseSettings,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What every role needs: its database, gRPC server settings and admin port.
#[derive(Debug, Args)]
pub struct Common {
    /// Where Prometheus metrics are served (`/metrics`); one port for all
    /// roles of a process.
    #[arg(long, env = "ORDERMESH_ADMIN_ADDR", default_value = "127.0.0.1:9464")]
    pub admin_addr: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseSettings,
    #[command(flatten)]
    pub server: GrpcServerSettings,
}

#[derive(Debug, Args)]
pub struct OrderAddr {
    /// Where the order service listens for gRPC.
    #[arg(long, env = "ORDERMESH_ORDER_ADDR", default_value = "127.0.0.1:50051")]
    pub order_addr: SocketAddr,
}

#[derive(Debug, Args)]
pub struct InventoryAddr {
    /// Where the inventory service listens for gRPC.
    #[arg(
        long,
        env = "ORDERMESH_INVENTORY_ADDR",
        default_value = "127.0.0.1:50052"
    )]
    pub inventory_addr: SocketAddr,
}

#[derive(Debug, Args)]
pub struct PaymentAddr {
    /// Where the payment service listens for gRPC.
    #[arg(
        long,
        env = "ORDERMESH_PAYMENT_ADDR",
        default_value = "127.0.0.1:50053"
    )]
    pub payment_addr: SocketAddr,
}

#[derive(Debug, Args)]
pub struct GatewayAddr {
    /// Where the gateway listens for HTTP (REST, grpc-web, the web page).
    #[arg(long, env = "ORDERMESH_GATEWAY_ADDR", default_value = "127.0.0.1:8080")]
    pub gateway_addr: SocketAddr,
}

#[derive(Debug, Args)]
pub struct GatewayArgs {
    #[command(flatten)]
    pub listen: GatewayAddr,
    /// Where Prometheus metrics are served (`/metrics`).
    #[arg(long, env = "ORDERMESH_ADMIN_ADDR", default_value = "127.0.0.1:9464")]
    pub admin_addr: SocketAddr,
    #[command(flatten)]
    pub client: GrpcClientSettings,
    #[command(flatten)]
    pub gateway: GatewaySettings,
}

#[derive(Debug, Args)]
pub struct AllArgs {
    #[command(flatten)]
    pub gateway_listen: GatewayAddr,
    #[command(flatten)]
    pub order_listen: OrderAddr,
    #[command(flatten)]
    pub inventory_listen: InventoryAddr,
    #[command(flatten)]
    pub payment_listen: PaymentAddr,
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub client: GrpcClientSettings,
    /// In `all`, the order service calls the inventory and payment listeners
    /// of this process; their URL flags are ignored.
    #[command(flatten)]
    pub order: OrderSettings,
    #[command(flatten)]
    pub inventory: InventorySettings,
    #[command(flatten)]
    pub payment: PaymentSettings,
    /// In `all`, the gateway calls this process's order and inventory
    /// listeners; its URL flags are ignored.
    #[command(flatten)]
    pub gateway: GatewaySettings,
}

#[derive(Debug, Args)]
pub struct OrderArgs {
    #[command(flatten)]
    pub listen: OrderAddr,
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub client: GrpcClientSettings,
    #[command(flatten)]
    pub order: OrderSettings,
}

#[derive(Debug, Args)]
pub struct InventoryArgs {
    #[command(flatten)]
    pub listen: InventoryAddr,
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub inventory: InventorySettings,
}

#[derive(Debug, Args)]
pub struct PaymentArgs {
    #[command(flatten)]
    pub listen: PaymentAddr,
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub payment: PaymentSettings,
}

impl Cli {
    /// The `service` of log lines outside a request, and whether the process
    /// runs a single role (then OTEL_SERVICE_NAME may rename it).
    pub fn service(&self) -> (&'static str, bool) {
        match &self.command {
            None | Some(Command::All(_)) => ("ordermesh", false),
            Some(Command::Order(_)) => ("order", true),
            Some(Command::Inventory(_)) => ("inventory", true),
            Some(Command::Payment(_)) => ("payment", true),
            Some(Command::Gateway(_)) => ("gateway", true),
            Some(Command::Audit(_)) => ("audit", true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_subcommand_means_all() {
        let cli = Cli::try_parse_from(["ordermesh", "--order-addr", "127.0.0.1:0"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.all.order_listen.order_addr.port(), 0);
    }

    #[test]
    fn single_roles_parse() {
        let cli =
            Cli::try_parse_from(["ordermesh", "order", "--inventory-url", "http://10.0.0.1:1"])
                .unwrap();
        match cli.command {
            Some(Command::Order(args)) => {
                assert_eq!(args.order.inventory_url, "http://10.0.0.1:1");
                assert_eq!(args.listen.order_addr.port(), 50051);
            }
            other => panic!("parsed {other:?}"),
        }
    }
}
