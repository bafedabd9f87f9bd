//! Starting roles: bind the listeners, build each role's services, serve
//! until a signal, drain, exit.

use std::net::SocketAddr;

use anyhow::Context;
use ordermesh_runtime::admin;
use ordermesh_runtime::grpc::{self, GrpcServerSettings, RoleServices};
use ordermesh_runtime::shutdown::Shutdown;
use tokio::net::TcpListener;

use crate::cli::{AllArgs, Cli, Command};

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signal();
    match cli.command.unwrap_or(Command::All(cli.all)) {
        Command::All(args) => run_all(*args, shutdown).await,
        Command::Audit(args) => audit(&args).await,
        Command::Gateway(args) => {
            let listener = bind(args.listen.gateway_addr, "gateway").await?;
            let admin = bind(args.admin_addr, "admin").await?;
            tokio::try_join!(
                ordermesh_gateway::serve(&args.gateway, &args.client, listener, shutdown.clone()),
                admin::serve(admin, shutdown.clone()),
            )?;
            Ok(())
        }
        Command::Order(args) => {
            let listener = bind(args.listen.order_addr, "order").await?;
            let admin = bind(args.common.admin_addr, "admin").await?;
            let services = ordermesh_order::build(
                &args.order,
                &args.client,
                &args.common.database,
                shutdown.clone(),
            )
            .await?;
            serve_with_admin(services, listener, admin, &args.common.server, shutdown).await
        }
        Command::Inventory(args) => {
            let listener = bind(args.listen.inventory_addr, "inventory").await?;
            let admin = bind(args.common.admin_addr, "admin").await?;
            let services = ordermesh_inventory::build(
                &args.inventory,
                &args.common.database,
                shutdown.clone(),
            )
            .await?;
            serve_with_admin(services, listener, admin, &args.common.server, shutdown).await
        }
        Command::Payment(args) => {
            let listener = bind(args.listen.payment_addr, "payment").await?;
            let admin = bind(args.common.admin_addr, "admin").await?;
            let services =
                ordermesh_payment::build(&args.payment, &args.common.database, shutdown.clone())
                    .await?;
            serve_with_admin(services, listener, admin, &args.common.server, shutdown).await
        }
    }
}

/// Every role in this process. They still talk over gRPC on loopback, as
/// they do across the mesh, so what works here works deployed.
async fn run_all(mut args: AllArgs, shutdown: Shutdown) -> anyhow::Result<()> {
    let inventory_listener = bind(args.inventory_listen.inventory_addr, "inventory").await?;
    let payment_listener = bind(args.payment_listen.payment_addr, "payment").await?;
    let order_listener = bind(args.order_listen.order_addr, "order").await?;
    let gateway_listener = bind(args.gateway_listen.gateway_addr, "gateway").await?;
    let admin_listener = bind(args.common.admin_addr, "admin").await?;
    args.order.inventory_url = local_url(&inventory_listener)?;
    args.order.payment_url = local_url(&payment_listener)?;
    args.gateway.gateway_order_url = local_url(&order_listener)?;
    args.gateway.gateway_inventory_url = local_url(&inventory_listener)?;

    let database = &args.common.database;
    // One after another: on a shared PostgreSQL their migrations then never race.
    let inventory = ordermesh_inventory::build(&args.inventory, database, shutdown.clone()).await?;
    let payment = ordermesh_payment::build(&args.payment, database, shutdown.clone()).await?;
    let order =
        ordermesh_order::build(&args.order, &args.client, database, shutdown.clone()).await?;

    let server = &args.common.server;
    tokio::try_join!(
        serve(inventory, inventory_listener, server, &shutdown),
        serve(payment, payment_listener, server, &shutdown),
        serve(order, order_listener, server, &shutdown),
        ordermesh_gateway::serve(
            &args.gateway,
            &args.client,
            gateway_listener,
            shutdown.clone()
        ),
        admin::serve(admin_listener, shutdown.clone()),
    )?;
    Ok(())
}

/// One role and the admin port beside it.
async fn serve_with_admin(
    services: RoleServices,
    listener: TcpListener,
    admin: TcpListener,
    settings: &GrpcServerSettings,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    tokio::try_join!(
        serve(services, listener, settings, &shutdown),
        admin::serve(admin, shutdown.clone()),
    )?;
    Ok(())
}

/// Serves one role; if it fails, the others shut down too.
async fn serve(
    services: RoleServices,
    listener: TcpListener,
    settings: &GrpcServerSettings,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let result = grpc::serve(services, listener, settings, shutdown.clone()).await;
    if result.is_err() {
        shutdown.trigger();
    }
    result
}

async fn bind(addr: SocketAddr, role: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {role} listener to {addr}"))
}

fn local_url(listener: &TcpListener) -> anyhow::Result<String> {
    Ok(format!("http://{}", listener.local_addr()?))
}

/// `ordermesh audit`: the invariant report on stdout; an error when broken.
async fn audit(args: &crate::cli::AuditArgs) -> anyhow::Result<()> {
    let snapshot = ordermesh_audit::load(&args.database).await?;
    let report = ordermesh_audit::check(&snapshot);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("orders: {:?}", report.orders);
        println!("payments: {:?}", report.payments);
        println!("reservations: {:?}", report.reservations);
        println!("sold: {:?}", report.sold);
        for problem in &report.problems {
            println!("PROBLEM {}", serde_json::to_string(problem)?);
        }
        if report.is_clean() {
            println!("audit: clean");
        }
    }
    if !report.is_clean() {
        anyhow::bail!("audit: {} problems", report.problems.len());
    }
    Ok(())
}
