//! The whole system, composed in one place. [`App::build`] binds every
//! listener its settings name (port 0 allowed), builds each role on them and
//! reports the bound addresses; [`App::run_until`] serves until told to stop,
//! then drains. The `ordermesh` binary, the in-process tests and the bench's
//! child processes all start ordermesh through this one path.
//!
//! An App runs any set of roles: all of them (`ordermesh all`), or one (a
//! pod in the mesh). Roles of one App still call each other over gRPC on
//! loopback, as they do across the mesh, so what works here works deployed.

mod settings;

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use futures::future::BoxFuture;
use ordermesh_proto::events::v1::EventStream;
use ordermesh_runtime::grpc::{self, RoleServices};
use ordermesh_runtime::metrics::Metrics;
use ordermesh_runtime::shutdown::Shutdown;
use ordermesh_runtime::{AppContext, admin};
use tokio::net::TcpListener;

pub use crate::settings::{AppSettings, Role};

/// Where an App's listeners ended up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoundAddrs {
    pub order: Option<SocketAddr>,
    pub inventory: Option<SocketAddr>,
    pub payment: Option<SocketAddr>,
    pub gateway: Option<SocketAddr>,
    pub admin: SocketAddr,
}

impl BoundAddrs {
    /// The address of `role`, if this App runs it.
    pub fn of(&self, role: Role) -> Option<SocketAddr> {
        match role {
            Role::Order => self.order,
            Role::Inventory => self.inventory,
            Role::Payment => self.payment,
            Role::Gateway => self.gateway,
        }
    }
}

/// A built system, bound and ready to serve.
pub struct App {
    context: AppContext,
    addrs: BoundAddrs,
    servers: Vec<BoxFuture<'static, anyhow::Result<()>>>,
    background: Vec<grpc::BackgroundTask>,
}

impl App {
    /// Binds the listeners of `settings.roles` and the admin port, opens
    /// each role's database (one after another, so migrations on a shared
    /// PostgreSQL never race), and builds the roles. A role whose peer runs
    /// in this App calls the peer's bound address; other peers are called at
    /// the URLs the settings give.
    pub async fn build(mut settings: AppSettings) -> anyhow::Result<Self> {
        let context = AppContext::new(
            &settings.trace,
            settings.roles.len() == 1,
            &settings.failpoints,
        );
        let mut listeners = Listeners::default();
        for role in settings.roles.clone() {
            let listener = bind(settings.addr(role), role.name()).await?;
            listeners.put(role, listener);
        }
        let admin = bind(settings.admin_addr, "admin").await?;
        let addrs = listeners.addrs(admin.local_addr()?)?;
        settings.point_at_local_peers(&addrs);

        let mut app = Self {
            context: context.clone(),
            addrs,
            servers: Vec::new(),
            background: Vec::new(),
        };
        let database = &settings.database;
        // Only the roles that read customers' (or operators') tokens need to
        // know who issues them: inventory's for its events' watch.
        let identity = if listeners.order.is_some()
            || listeners.gateway.is_some()
            || listeners.inventory.is_some()
        {
            Some(identity(&settings).await?)
        } else {
            None
        };
        if let (Some(listener), Some((verifier, _))) = (listeners.inventory, &identity) {
            let events = event_watch(
                ordermesh_inventory::open_database(database).await?,
                ordermesh_inventory::OUTBOX,
                ordermesh_events::STOCK,
                EventStream::Stock,
                verifier,
            );
            let services = ordermesh_inventory::build(&settings.inventory, database, &context)
                .await?
                .with_service(events.clone().server())
                .with_service(events.stock_server());
            app.serve_grpc(services, listener, &settings);
            if settings.events.nats_url.is_some() {
                let db = ordermesh_inventory::open_database(database).await?;
                app.background.push(Box::pin(relay(
                    &settings,
                    &context,
                    db,
                    ordermesh_inventory::OUTBOX,
                    ordermesh_events::STOCK,
                )));
            }
        }
        if let Some(listener) = listeners.payment {
            let services = ordermesh_payment::build(&settings.payment, database, &context).await?;
            app.serve_grpc(services, listener, &settings);
        }
        if let (Some(listener), Some((verifier, _))) = (listeners.order, &identity) {
            let events = event_watch(
                ordermesh_order::open_database(database).await?,
                ordermesh_order::OUTBOX,
                ordermesh_events::ORDERS,
                EventStream::Orders,
                verifier,
            );
            let services = ordermesh_order::build(
                &settings.order,
                &settings.client,
                database,
                verifier.clone(),
                &context,
            )
            .await?
            .with_service(events.server());
            app.serve_grpc(services, listener, &settings);
            if settings.events.nats_url.is_some() {
                let db = ordermesh_order::open_database(database).await?;
                app.background.push(Box::pin(relay(
                    &settings,
                    &context,
                    db,
                    ordermesh_order::OUTBOX,
                    ordermesh_events::ORDERS,
                )));
            }
        }
        if let (Some(listener), Some((verifier, dev_issuer))) = (listeners.gateway, identity) {
            let identity = ordermesh_gateway::Identity {
                verifier,
                dev_issuer,
            };
            let router = ordermesh_gateway::build(
                &settings.gateway,
                &settings.client,
                &settings.server.watches,
                identity,
                &context,
            )?;
            let (connections, delay, grace) = (
                settings.server.connections.clone(),
                settings.server.shutdown_delay,
                settings.server.shutdown_grace,
            );
            let context = context.clone();
            app.servers.push(Box::pin(async move {
                ordermesh_gateway::serve(router, listener, &connections, &context, delay, grace)
                    .await
            }));
        }
        app.servers.push(Box::pin(admin::serve(
            admin,
            settings.server.connections.clone(),
            context.clone(),
        )));
        Ok(app)
    }

    fn serve_grpc(
        &mut self,
        mut services: RoleServices,
        listener: TcpListener,
        settings: &AppSettings,
    ) {
        self.background.append(&mut services.background);
        let server = settings.server.clone();
        let context = self.context.clone();
        self.servers.push(Box::pin(async move {
            grpc::serve(services, listener, &server, &context).await
        }));
    }

    pub fn addrs(&self) -> BoundAddrs {
        self.addrs
    }

    /// This App's metrics, as its `/metrics` serves them.
    pub fn metrics(&self) -> &std::sync::Arc<Metrics> {
        self.context.metrics()
    }

    /// The App's own shutdown signal: triggering it stops the App as
    /// `run_until`'s `stop` does.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.context.shutdown().clone()
    }

    /// Serves every role and runs their background work until `stop`
    /// resolves (or a server fails, which stops the others too); then
    /// drains, flushes the tracers and returns.
    pub async fn run_until(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let shutdown = self.context.shutdown().clone();
        {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = stop => shutdown.trigger(),
                    () = shutdown.cancelled() => {}
                }
            });
        }
        let background: Vec<_> = self.background.into_iter().map(tokio::spawn).collect();
        let servers = self.servers.into_iter().map(|server| {
            let shutdown = shutdown.clone();
            async move {
                let result = server.await;
                // One role failing stops the whole App.
                if result.is_err() {
                    shutdown.trigger();
                }
                result
            }
        });
        let results = futures::future::join_all(servers).await;
        shutdown.trigger();
        for task in background {
            let _ = task.await;
        }
        self.context.tracers().shutdown();
        results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        Ok(())
    }
}

#[derive(Default)]
struct Listeners {
    order: Option<TcpListener>,
    inventory: Option<TcpListener>,
    payment: Option<TcpListener>,
    gateway: Option<TcpListener>,
}

impl Listeners {
    fn put(&mut self, role: Role, listener: TcpListener) {
        let slot = match role {
            Role::Order => &mut self.order,
            Role::Inventory => &mut self.inventory,
            Role::Payment => &mut self.payment,
            Role::Gateway => &mut self.gateway,
        };
        *slot = Some(listener);
    }

    fn addrs(&self, admin: SocketAddr) -> anyhow::Result<BoundAddrs> {
        let addr = |listener: &Option<TcpListener>| {
            listener.as_ref().map(TcpListener::local_addr).transpose()
        };
        Ok(BoundAddrs {
            order: addr(&self.order)?,
            inventory: addr(&self.inventory)?,
            payment: addr(&self.payment)?,
            gateway: addr(&self.gateway)?,
            admin,
        })
    }
}

/// The verifier of customers' tokens and, with no issuer configured, the
/// development issuer (its key in the data directory). The keys of a URL or
/// file are loaded now, so a bad configuration shows in the log at start.
async fn identity(
    settings: &AppSettings,
) -> anyhow::Result<(
    ordermesh_identity::Verifier,
    Option<ordermesh_identity::DevIssuer>,
)> {
    let (verifier, dev_issuer) =
        ordermesh_identity::from_settings(&settings.identity, &settings.database.data_dir)
            .context("setting up the token verifier")?;
    if dev_issuer.is_none()
        && let Err(error) = verifier.refresh_keys().await
    {
        tracing::warn!(%error, issuer = verifier.issuer(), "the issuer's keys cannot be loaded yet; tokens are refused until they can");
    }
    Ok((verifier, dev_issuer))
}

async fn bind(addr: SocketAddr, role: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {role} listener to {addr}"))
}

/// The events' watch of one service's outbox (`ordermesh-events`).
fn event_watch(
    db: ordermesh_storage::Database,
    outbox: ordermesh_storage::outbox::Outbox,
    stream: ordermesh_events::StreamSpec,
    serves: EventStream,
    verifier: &ordermesh_identity::Verifier,
) -> ordermesh_events::EventWatch {
    ordermesh_events::EventWatch {
        outbox,
        pool: db.pool().clone(),
        stream,
        serves,
        verifier: verifier.clone(),
    }
}

/// The outbox relay of one service (see `ordermesh-events`), as a
/// background task that ends with the App.
fn relay(
    settings: &AppSettings,
    context: &AppContext,
    db: ordermesh_storage::Database,
    outbox: ordermesh_storage::outbox::Outbox,
    stream: ordermesh_events::StreamSpec,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let holder = format!(
        "{}-{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "ordermesh".to_owned()),
        uuid::Uuid::now_v7()
    );
    let relay = ordermesh_events::Relay {
        outbox,
        pool: db.pool().clone(),
        stream,
        settings: settings.events.clone(),
        metrics: context.metrics().clone(),
        tracer: context.tracer(stream.service),
        holder,
    };
    relay.run(context.shutdown().clone())
}
