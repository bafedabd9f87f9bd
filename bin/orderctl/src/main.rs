//! `orderctl`: browse the catalog and place, follow and cancel orders.
//!
//! Human output is stable enough to script against: `order create` prints
//! `order <ORDER_ID> <STATUS>` on its first line. `--json` prints one JSON
//! object per result (per update for `watch`), in the proto3 JSON mapping.

/// `println!` that fails instead of panicking when stdout is closed
/// (`orderctl ... | head -1`); `main` takes a closed pipe as done.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

mod cli;
mod commands;
mod events;
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
        // The reader went away (`| head`): what it wanted was printed.
        Err(error) if closed_stdout(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn closed_stdout(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}
