//! `orderctl`: browse the catalog and place, follow and cancel orders.
//!
//! Human output is stable enough to script against: `order create` prints
//! `order <ORDER_ID> <STATUS>` on its first line. `--json` prints one JSON
//! object per result (per update for `watch`), in the proto3 JSON mapping.

mod cli;
mod commands;
mod health;
mod login;
mod render;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
