//! `ordermesh`: run one role per process (`order`, `inventory`, `payment`),
//! or every role in one process (`all`, the default).

mod cli;
mod roles;

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    let (service, single_role) = cli.service();
    if matches!(cli.command, Some(cli::Command::Audit(_))) {
        ordermesh_runtime::telemetry::init_for_command(cli.log_format, service);
    } else {
        ordermesh_runtime::telemetry::init(cli.log_format, service);
    }
    ordermesh_runtime::trace::set_single_role(single_role);
    let result = roles::run(cli).await;
    ordermesh_runtime::trace::shutdown();
    if let Err(error) = &result {
        tracing::error!(
            error = format!("{error:#}"),
            "ordermesh stopped on an error"
        );
    }
    result
}
