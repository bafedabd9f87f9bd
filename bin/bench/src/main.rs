//! `ordermesh-bench`: drives ordermesh (or Envoy's transcoder, or a bare
//! echo server) at a fixed rate or a fixed concurrency and reports an HDR
//! histogram; `compare` runs the whole suite behind `make bench`, and
//! `instructions` the callgrind guard behind `make bench-guard`.

mod compare;
mod echo;
mod identity;
mod instructions;
mod load;
mod procs;
mod stats;
mod targets;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::load::{Mode, Spec};
use crate::targets::{Protocol, TargetSpec, Workload};

#[derive(Debug, Parser)]
#[command(name = "ordermesh-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One workload against one target, then its latency histogram.
    Run(RunArgs),
    /// The bare tonic unary echo server (the ceiling for this machine).
    EchoServer {
        #[arg(long, default_value = "127.0.0.1:50099")]
        addr: SocketAddr,
    },
    /// The whole suite: starts what it needs, measures, prints the tables
    /// with ratios and writes them as JSON.
    Compare(compare::CompareArgs),
    /// Instructions per request (callgrind) against a committed baseline:
    /// a regression guard that does not move with the machine's load.
    Instructions(instructions::InstructionsArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The bearer token the order API asks for (e.g. `orderctl token`).
    #[arg(long, env = "ORDERMESH_BENCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// How to talk to the target.
    #[arg(long, value_enum)]
    target: Protocol,
    /// The REST base URL (the gateway or Envoy), the order service's gRPC
    /// URL, or the echo server's.
    #[arg(long)]
    url: String,
    /// The inventory's gRPC URL: list-products over gRPC and the stock
    /// top-up before creating orders (default: --url).
    #[arg(long)]
    inventory_url: Option<String>,
    #[arg(long, value_enum, default_value = "get-order")]
    workload: Workload,
    /// Requests per second, due on schedule whatever the answers (open loop).
    #[arg(long, conflicts_with = "concurrency")]
    rate: Option<f64>,
    /// Clients each sending the next request when the last answers (closed
    /// loop; the default, with 16, when no --rate).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Closed loop: stop after this many requests (or at --duration, which
    /// ever comes first): a fixed amount of work, as the CPU figures and
    /// the callgrind guard use.
    #[arg(long, conflicts_with = "rate")]
    requests: Option<u64>,
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// A request not answered within this counts as `timeout`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Open loop: at most this many requests in flight; the rest are dropped.
    #[arg(long, default_value_t = 10_000)]
    max_in_flight: usize,
    /// gRPC connections to open.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Orders placed before a get-order or mixed run, to read.
    #[arg(long, default_value_t = 100)]
    seed_orders: usize,
    /// Write the report as JSON to this file (`-`: stdout).
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long)]
    no_progress: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args).await,
        Command::EchoServer { addr } => echo::serve(addr).await,
        Command::Compare(args) => compare::compare(args).await,
        Command::Instructions(args) => instructions::instructions(args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let concurrency = args.concurrency.unwrap_or(16);
    let mode = match (args.rate, args.requests) {
        (Some(rate), _) => Mode::Open { rate },
        (None, Some(requests)) => Mode::Count {
            concurrency,
            requests,
        },
        (None, None) => Mode::Closed { concurrency },
    };
    let target = TargetSpec {
        protocol: args.target,
        url: args.url.trim_end_matches('/').to_owned(),
        inventory_url: args.inventory_url,
        connections: args.connections,
        seed_orders: args.seed_orders,
        order_ids: None,
        run_id: format!("{}", std::process::id()),
        authorization: args.token.map(|token| format!("Bearer {token}")),
    };
    let driver = targets::prepare(&target, args.workload).await?;
    let spec = Spec {
        name: format!("{} {}", args.workload.name(), args.target.name()),
        mode,
        duration: args.duration,
        timeout: args.timeout,
        max_in_flight: args.max_in_flight,
        progress: !args.no_progress,
    };
    let report = load::run(driver, &spec).await?;
    println!("{}", report.summary());
    match args.json.as_deref() {
        Some(path) if path.as_os_str() == "-" => {
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Some(path) => write_json(path, &report)?,
        None => {}
    }
    Ok(())
}

/// `value` as pretty JSON in the file `path`, its directory made if need be.
fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_string_pretty(value)? + "\n";
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_humantime_reads_them() {
        let run = |duration: &str| {
            Cli::try_parse_from([
                "b",
                "run",
                "--target",
                "grpc",
                "--url",
                "u",
                "--duration",
                duration,
            ])
            .map(|cli| match cli.command {
                Command::Run(args) => args.duration,
                _ => unreachable!(),
            })
        };
        assert_eq!(run("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(run("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(run("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(run("1s 500ms").unwrap(), Duration::from_millis(1500));
        assert!(run("fast").is_err());
        assert!(run("-1s").is_err());
    }

    #[test]
    fn the_cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
