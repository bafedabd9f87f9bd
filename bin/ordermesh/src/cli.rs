//! Command-line flags. Every flag has an environment variable, so the same
//! image is configured by flags locally and by env in Kubernetes; each
//! subcommand becomes the `AppSettings` of the roles it runs.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};
use ordermesh_app::{AppSettings, Role};
use ordermesh_events::EventSettings;
use ordermesh_gateway::GatewaySettings;
use ordermesh_identity::IdentitySettings;
use ordermesh_inventory::InventorySettings;
use ordermesh_order::OrderSettings;
use ordermesh_payment::PaymentSettings;
use ordermesh_runtime::client::GrpcClientSettings;
use ordermesh_runtime::failpoint::FailpointSettings;
use ordermesh_runtime::grpc::GrpcServerSettings;
use ordermesh_runtime::telemetry::LogFormat;
use ordermesh_runtime::trace::TraceSettings;
use ordermesh_storage::DatabaseSettings;

#[derive(Debug, Parser)]
#[command(
    name = "ordermesh",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Log lines as JSON or readable text [default: text on a terminal,
    /// JSON otherwise].
    #[arg(long, env = "ORDERMESH_LOG_FORMAT", value_enum, global = true)]
    pub log_format: Option<LogFormat>,

    #[command(subcommand)]
    command: Option<Command>,

    /// Flags of `all`, which runs when no subcommand is given.
    #[command(flatten)]
    all: Box<AllArgs>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every role in one process; the roles still call each other over gRPC.
    All(Box<AllArgs>),
    /// The order service alone.
    Order(Box<RoleArgs<OrderSettings>>),
    /// The inventory service alone.
    Inventory(Box<RoleArgs<InventorySettings>>),
    /// The payment service alone.
    Payment(Box<RoleArgs<PaymentSettings>>),
    /// The edge gateway alone: REST JSON, SSE, OpenAPI and grpc-web.
    Gateway(Box<RoleArgs<GatewaySettings>>),
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

/// What every role needs besides its own flags.
#[derive(Debug, Args)]
pub struct Common {
    /// Where Prometheus metrics are served (`/metrics`); one port for all
    /// roles of a process.
    #[arg(long, env = "ORDERMESH_ADMIN_ADDR", default_value = "127.0.0.1:9464")]
    admin_addr: SocketAddr,
    #[command(flatten)]
    database: DatabaseSettings,
    #[command(flatten)]
    server: GrpcServerSettings,
    #[command(flatten)]
    client: GrpcClientSettings,
    #[command(flatten)]
    trace: TraceSettings,
    #[command(flatten)]
    failpoints: FailpointSettings,
    #[command(flatten)]
    identity: IdentitySettings,
    #[command(flatten)]
    events: EventSettings,
}

impl Common {
    fn settings(self, roles: &[Role]) -> AppSettings {
        let mut settings = AppSettings::loopback(roles, self.database);
        settings.admin_addr = self.admin_addr;
        settings.server = self.server;
        settings.client = self.client;
        settings.trace = self.trace;
        settings.failpoints = self.failpoints;
        settings.identity = self.identity;
        settings.events = self.events;
        settings
    }
}

/// One role: the shared flags and its own settings (its address among them).
#[derive(Debug, Args)]
pub struct RoleArgs<S: Args> {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    role: S,
}

#[derive(Debug, Args)]
pub struct AllArgs {
    #[command(flatten)]
    common: Common,
    /// In `all`, the order service calls the inventory and payment listeners
    /// of this process; their URL flags are ignored.
    #[command(flatten)]
    order: OrderSettings,
    #[command(flatten)]
    inventory: InventorySettings,
    #[command(flatten)]
    payment: PaymentSettings,
    /// In `all`, the gateway calls this process's order and inventory
    /// listeners; its URL flags are ignored.
    #[command(flatten)]
    gateway: GatewaySettings,
}

impl Cli {
    /// The command to run: `all` when none was given.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::All(self.all))
    }
}

impl Command {
    /// The `service` of log lines outside a request.
    pub fn service(&self) -> &'static str {
        match self {
            Command::All(_) => "ordermesh",
            Command::Order(_) => "order",
            Command::Inventory(_) => "inventory",
            Command::Payment(_) => "payment",
            Command::Gateway(_) => "gateway",
            Command::Audit(_) => "audit",
        }
    }
}

impl AllArgs {
    pub fn settings(self) -> AppSettings {
        let mut settings = self.common.settings(&Role::ALL);
        settings.order = self.order;
        settings.inventory = self.inventory;
        settings.payment = self.payment;
        settings.gateway = self.gateway;
        settings
    }
}

impl<S: Args> RoleArgs<S> {
    /// The App of `role` alone; `install` puts the role's own settings in.
    pub fn settings(self, role: Role, install: impl FnOnce(&mut AppSettings, S)) -> AppSettings {
        let mut settings = self.common.settings(&[role]);
        install(&mut settings, self.role);
        settings
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
        let Command::All(all) = cli.into_command() else {
            panic!("not all")
        };
        let settings = all.settings();
        assert_eq!(settings.order.listen.port(), 0);
        assert_eq!(settings.roles.len(), 4);
    }

    #[test]
    fn single_roles_parse() {
        let cli =
            Cli::try_parse_from(["ordermesh", "order", "--inventory-url", "http://10.0.0.1:1"])
                .unwrap();
        match cli.into_command() {
            Command::Order(args) => {
                let settings = args.settings(Role::Order, |s, order| s.order = order);
                assert_eq!(settings.order.inventory_url, "http://10.0.0.1:1");
                assert_eq!(settings.order.listen.port(), 50051);
                assert_eq!(settings.roles, [Role::Order]);
            }
            other => panic!("parsed {other:?}"),
        }
    }
}
