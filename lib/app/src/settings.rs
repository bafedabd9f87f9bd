//! Everything an App is built from: which roles, on which addresses, with
//! each role's own settings. Every part has clap flags (the binary parses
//! them) and a `Default` read from those flags' defaults.

use std::net::SocketAddr;

use ordermesh_events::EventSettings;
use ordermesh_gateway::GatewaySettings;
use ordermesh_identity::IdentitySettings;
use ordermesh_inventory::InventorySettings;
use ordermesh_order::OrderSettings;
use ordermesh_payment::PaymentSettings;
use ordermesh_runtime::client::GrpcClientSettings;
use ordermesh_runtime::failpoint::FailpointSettings;
use ordermesh_runtime::grpc::GrpcServerSettings;
use ordermesh_runtime::trace::TraceSettings;
use ordermesh_storage::DatabaseSettings;

use crate::BoundAddrs;

/// A role an App can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Order,
    Inventory,
    Payment,
    Gateway,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Order, Role::Inventory, Role::Payment, Role::Gateway];

    /// The name in logs and `listening` lines.
    pub fn name(self) -> &'static str {
        match self {
            Role::Order => "order",
            Role::Inventory => "inventory",
            Role::Payment => "payment",
            Role::Gateway => "gateway",
        }
    }
}

/// What [`crate::App::build`] builds.
#[derive(Clone, Debug)]
pub struct AppSettings {
    /// The roles this App runs; each listens where its own settings say.
    pub roles: Vec<Role>,
    /// `/metrics` and `/healthz`, one port for the App's roles.
    pub admin_addr: SocketAddr,
    pub database: DatabaseSettings,
    pub server: GrpcServerSettings,
    pub client: GrpcClientSettings,
    pub order: OrderSettings,
    pub inventory: InventorySettings,
    pub payment: PaymentSettings,
    pub gateway: GatewaySettings,
    pub trace: TraceSettings,
    pub failpoints: FailpointSettings,
    /// Who issues customers' tokens (the order service and the gateway
    /// check them).
    pub identity: IdentitySettings,
    /// Where the outbox relays publish events (none without a NATS URL).
    pub events: EventSettings,
}

impl AppSettings {
    /// Every role on loopback with the kernel's choice of ports, each
    /// setting at its default: what tests start.
    pub fn loopback(roles: &[Role], database: DatabaseSettings) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            roles: roles.to_vec(),
            admin_addr: any,
            database,
            server: GrpcServerSettings::default(),
            client: GrpcClientSettings::default(),
            order: OrderSettings {
                listen: any,
                ..OrderSettings::default()
            },
            inventory: InventorySettings {
                listen: any,
                ..InventorySettings::default()
            },
            payment: PaymentSettings {
                listen: any,
                ..PaymentSettings::default()
            },
            gateway: GatewaySettings {
                listen: any,
                ..GatewaySettings::default()
            },
            trace: TraceSettings::default(),
            failpoints: FailpointSettings::default(),
            identity: IdentitySettings::default(),
            events: EventSettings::default(),
        }
    }

    pub(crate) fn addr(&self, role: Role) -> SocketAddr {
        match role {
            Role::Order => self.order.listen,
            Role::Inventory => self.inventory.listen,
            Role::Payment => self.payment.listen,
            Role::Gateway => self.gateway.listen,
        }
    }

    /// Peers that run in this App are called at their bound addresses; the
    /// URLs given for them are ignored.
    pub(crate) fn point_at_local_peers(&mut self, addrs: &BoundAddrs) {
        let url = |addr: SocketAddr| format!("http://{addr}");
        if let Some(addr) = addrs.inventory {
            self.order.inventory_url = url(addr);
            self.gateway.gateway_inventory_url = url(addr);
            // The inventory service also serves the stock events' watch.
            front_unless_given(&mut self.gateway, STOCK_EVENT_SERVICE, url(addr));
        }
        if let Some(addr) = addrs.payment {
            self.order.payment_url = url(addr);
            self.gateway.gateway_payment_url = url(addr);
        }
        if let Some(addr) = addrs.order {
            self.gateway.gateway_order_url = url(addr);
            // The order service also serves the events' watch.
            front_unless_given(&mut self.gateway, EVENT_SERVICE, url(addr));
        }
    }
}

/// The events' watches, which the order and inventory roles serve beside
/// their own services; the gateway fronts them as any other upstream.
const EVENT_SERVICE: &str = "ordermesh.events.v1.EventService";
const STOCK_EVENT_SERVICE: &str = "ordermesh.events.v1.StockEventService";

/// Fronts `service` at `url`, unless an `--upstream` already places it.
fn front_unless_given(gateway: &mut GatewaySettings, service: &str, url: String) {
    if !gateway.upstreams.iter().any(|(given, _)| given == service) {
        gateway.upstreams.push((service.to_owned(), url));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let settings = AppSettings::loopback(&Role::ALL, DatabaseSettings::sqlite("/tmp/x"));
        assert_eq!(settings.server.max_in_flight, 512);
        assert_eq!(settings.client.default_call_timeout.as_secs(), 5);
        assert_eq!(settings.order.saga_lease.as_secs(), 15);
        assert_eq!(settings.inventory.reservation_ttl.as_secs(), 15 * 60);
        assert_eq!(settings.payment.decline_rate, 0.0);
        assert_eq!(settings.gateway.body_limit, 64 * 1024);
        assert_eq!(settings.trace.export_target(), None);
        assert!(settings.failpoints.failpoints.is_empty());
    }

    #[test]
    fn local_peers_win_over_given_urls() {
        let mut settings = AppSettings::loopback(&Role::ALL, DatabaseSettings::sqlite("/tmp/x"));
        let addrs = BoundAddrs {
            order: Some("127.0.0.1:1".parse().unwrap()),
            inventory: Some("127.0.0.1:2".parse().unwrap()),
            payment: None,
            gateway: None,
            admin: "127.0.0.1:4".parse().unwrap(),
        };
        settings.order.payment_url = "http://payment.mesh:50053".into();
        settings.point_at_local_peers(&addrs);
        assert_eq!(settings.order.inventory_url, "http://127.0.0.1:2");
        assert_eq!(settings.order.payment_url, "http://payment.mesh:50053");
        assert_eq!(settings.gateway.gateway_order_url, "http://127.0.0.1:1");
        let upstreams = settings.gateway.upstream_urls();
        assert!(upstreams.contains(&(EVENT_SERVICE.into(), "http://127.0.0.1:1".into())));
        assert!(upstreams.contains(&(STOCK_EVENT_SERVICE.into(), "http://127.0.0.1:2".into())));
    }
}
