//! `ordermesh`: run one role per process (`order`, `inventory`, `payment`,
//! `gateway`), every role in one process (`all`, the default), or the
//! invariant audit. Everything else is `ordermesh-app`.

mod cli;

use clap::Parser;
use ordermesh_app::{App, Role};
use ordermesh_runtime::{shutdown, telemetry};

use crate::cli::Command;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    let log_format = cli.log_format;
    let command = cli.into_command();
    let service = command.service();
    let settings = match command {
        Command::Audit(args) => {
            telemetry::init_for_command(log_format, service);
            return audit(&args).await;
        }
        Command::All(args) => args.settings(),
        Command::Order(args) => args.settings(Role::Order, |s, order| s.order = order),
        Command::Inventory(args) => {
            args.settings(Role::Inventory, |s, inventory| s.inventory = inventory)
        }
        Command::Payment(args) => args.settings(Role::Payment, |s, payment| s.payment = payment),
        Command::Gateway(args) => args.settings(Role::Gateway, |s, gateway| s.gateway = gateway),
    };
    telemetry::init(log_format, service);
    let result = async {
        App::build(settings)
            .await?
            .run_until(shutdown::signal())
            .await
    }
    .await;
    if let Err(error) = &result {
        tracing::error!(
            error = format!("{error:#}"),
            "ordermesh stopped on an error"
        );
    }
    result
}

/// `ordermesh audit`: the invariant report on stdout; an error when broken.
async fn audit(args: &cli::AuditArgs) -> anyhow::Result<()> {
    let snapshot = ordermesh_audit::load(&args.database).await?;
    let report = ordermesh_audit::check(&snapshot);
    print!("{}", ordermesh_audit::render(&report, args.json)?);
    anyhow::ensure!(
        report.is_clean(),
        "audit: {} problems",
        report.problems.len()
    );
    Ok(())
}
