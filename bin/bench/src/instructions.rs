//! `ordermesh-bench instructions`: callgrind's instruction counts per
//! GetOrder, per REST get-order and per CreateOrder saga, against a
//! committed baseline. Instructions are not timings: the same binary and
//! requests give (nearly) the same count whatever else the machine does,
//! so this guard does not drift with the load.
//!
//! It runs `ordermesh all` (SQLite, tokens checked) under
//! `valgrind --tool=callgrind`, and for each case: a few unmeasured
//! requests, the counters zeroed (`callgrind_control -z`), a fixed count of
//! requests one at a time, a dump (`callgrind_control -d`), and the dump's
//! total divided by the requests. Timers that tick during the window (the
//! saga's heartbeat, the relay's poll) are counted too; they are small next
//! to the requests, and the tolerance covers them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::load::{self, Mode, Spec};
use crate::procs::{self, Server};
use crate::targets::{self, Protocol, TargetSpec, Workload};

#[derive(Debug, Clone, clap::Args)]
pub struct InstructionsArgs {
    /// The ordermesh server binary (a release build: that is what ships).
    #[arg(long, default_value = "target/release/ordermesh")]
    pub ordermesh: PathBuf,
    /// The committed counts to hold the run against.
    #[arg(long, default_value = "bin/bench/instructions.json")]
    pub baseline: PathBuf,
    /// Write this run's counts to the baseline instead of checking them.
    #[arg(long)]
    pub update: bool,
    /// The largest rise over the baseline that passes (0.03: 3 %).
    #[arg(long, default_value_t = 0.03)]
    pub tolerance: f64,
    /// Reads measured per read case.
    #[arg(long, default_value_t = 200)]
    pub requests: u64,
    /// Orders measured in the CreateOrder case.
    #[arg(long, default_value_t = 30)]
    pub orders: u64,
    /// Keep callgrind's dumps (one per case) in this directory, to read
    /// with `callgrind_annotate --inclusive=yes`.
    #[arg(long)]
    pub keep_dumps: Option<PathBuf>,
}

/// The committed baseline: instructions per request of each case.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Baseline {
    /// How it was made, for whoever refreshes it.
    note: String,
    cases: BTreeMap<String, u64>,
}

/// One measured case.
struct Case {
    name: &'static str,
    protocol: Protocol,
    workload: Workload,
}

const CASES: [Case; 3] = [
    Case {
        name: "GetOrder over gRPC",
        protocol: Protocol::Grpc,
        workload: Workload::GetOrder,
    },
    Case {
        name: "GET /v1/orders/{id} through the gateway",
        protocol: Protocol::Rest,
        workload: Workload::GetOrder,
    },
    Case {
        name: "CreateOrder over gRPC (the whole saga)",
        protocol: Protocol::Grpc,
        workload: Workload::CreateOrder,
    },
];

/// Unmeasured requests before each case: connections opened, caches warm.
const WARM_UP: u64 = 20;

pub async fn instructions(args: InstructionsArgs) -> anyhow::Result<()> {
    for tool in ["valgrind", "callgrind_control"] {
        which(tool)
            .with_context(|| format!("{tool} is not installed (Debian package valgrind)"))?;
    }
    let ordermesh = std::fs::canonicalize(&args.ordermesh).with_context(|| {
        format!(
            "no ordermesh binary at {} (cargo build --release --bins)",
            args.ordermesh.display()
        )
    })?;
    let work = tempfile::Builder::new()
        .prefix("ordermesh-callgrind-")
        .tempdir()?;
    let server = start(&ordermesh, work.path()).await?;
    let measured = measure_all(&args, &server, work.path()).await;
    let _ = server.stop(None).await;
    if let Some(keep) = &args.keep_dumps {
        std::fs::create_dir_all(keep)?;
        for dump in std::fs::read_dir(work.path())? {
            let dump = dump?.path();
            if let Some(name) = dump
                .file_name()
                .filter(|n| n.to_string_lossy().starts_with("callgrind.out"))
            {
                std::fs::copy(&dump, keep.join(name))?;
            }
        }
        println!("callgrind dumps kept in {}", keep.display());
    }
    let counts = measured?;
    if args.update {
        let baseline = Baseline {
            note: "instructions per request, callgrind, ordermesh all on SQLite (release build): \
                   refresh with `make bench-guard-update` after a change that is meant to move them"
                .to_owned(),
            cases: counts,
        };
        crate::write_json(&args.baseline, &baseline)?;
        println!("baseline written to {}", args.baseline.display());
        return Ok(());
    }
    let baseline: Baseline = serde_json::from_slice(
        &std::fs::read(&args.baseline)
            .with_context(|| format!("reading the baseline {}", args.baseline.display()))?,
    )
    .with_context(|| format!("parsing the baseline {}", args.baseline.display()))?;
    judge(&baseline, &counts, args.tolerance)
}

/// `ordermesh all` under callgrind, every listener on port 0.
async fn start(ordermesh: &Path, work: &Path) -> anyhow::Result<Server> {
    let data = work.join("data");
    std::fs::create_dir_all(&data)?;
    let mut args = vec![
        "--tool=callgrind".to_owned(),
        format!(
            "--callgrind-out-file={}",
            work.join("callgrind.out").display()
        ),
        ordermesh.display().to_string(),
        "all".to_owned(),
    ];
    let listeners = ["order", "inventory", "payment", "gateway", "admin"];
    for listener in listeners {
        args.extend([format!("--{listener}-addr"), "127.0.0.1:0".to_owned()]);
    }
    let launch = procs::ordermesh(&which("valgrind")?, &args, &listeners)?
        .env("ORDERMESH_DATA_DIR", data.display().to_string());
    Server::start("ordermesh all under callgrind", launch).await
}

async fn measure_all(
    args: &InstructionsArgs,
    server: &Server,
    work: &Path,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let addr = |role| format!("http://{}", server.process.addr(role));
    let spec = |protocol| TargetSpec {
        protocol,
        url: match protocol {
            Protocol::Rest => addr("gateway"),
            _ => addr("order"),
        },
        inventory_url: Some(addr("inventory")),
        connections: 1,
        seed_orders: 1,
        order_ids: None,
        run_id: format!("callgrind-{}", std::process::id()),
        authorization: crate::identity::issuer().ok().map(|i| i.authorization()),
    };
    // One order to read, for both read cases.
    let seeded = targets::seed_orders(&spec(Protocol::Grpc), 1).await?;
    let mut counts = BTreeMap::new();
    for (part, case) in CASES.iter().enumerate() {
        let mut target = spec(case.protocol);
        target.order_ids = Some(seeded.clone());
        let requests = match case.workload {
            Workload::CreateOrder => args.orders,
            _ => args.requests,
        };
        let driver = targets::prepare(&target, case.workload).await?;
        run(driver.clone(), case.name, WARM_UP).await?;
        control(server.pid, &["-z"])?;
        run(driver, case.name, requests).await?;
        control(server.pid, &["-d", &format!("case{part}")])?;
        let total = newest_dump_total(work)?;
        let per_request = total / requests.max(1);
        println!(
            "{:<45} {per_request:>10} instructions per request",
            case.name
        );
        counts.insert(case.name.to_owned(), per_request);
    }
    Ok(counts)
}

/// `requests` of `driver`, one at a time; fails on any error.
async fn run(driver: Arc<dyn load::Driver>, name: &str, requests: u64) -> anyhow::Result<()> {
    let spec = Spec {
        name: name.to_owned(),
        mode: Mode::Count {
            concurrency: 1,
            requests,
        },
        duration: Duration::from_secs(600),
        timeout: Duration::from_secs(60),
        max_in_flight: 1,
        progress: false,
    };
    let report = load::run(driver, &spec).await?;
    if report.requests != requests || !report.errors.is_empty() {
        // The workload's declined cards are orders that fail as meant:
        // the driver counts those as ok.
        bail!(
            "{name}: {} of {requests} requests sent, errors {:?}",
            report.requests,
            report.errors
        );
    }
    Ok(())
}

fn control(pid: u32, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .output()
        .context("running callgrind_control")?;
    if !output.status.success() {
        bail!(
            "callgrind_control {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The total instruction count of the newest callgrind dump in `dir`.
fn newest_dump_total(dir: &Path) -> anyhow::Result<u64> {
    let newest = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("callgrind.out")
        })
        .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
        .max()
        .map(|(_, path)| path)
        .context("callgrind wrote no dump")?;
    let text = std::fs::read_to_string(&newest)?;
    total_of(&text).with_context(|| format!("no total in {}", newest.display()))
}

/// The `summary:` (or `totals:`) line of a callgrind dump: Ir first.
fn total_of(dump: &str) -> Option<u64> {
    dump.lines()
        .find_map(|line| {
            line.strip_prefix("summary:")
                .or_else(|| line.strip_prefix("totals:"))
        })
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// Prints each case against the baseline; fails on a rise past `tolerance`.
fn judge(
    baseline: &Baseline,
    counts: &BTreeMap<String, u64>,
    tolerance: f64,
) -> anyhow::Result<()> {
    let mut risen = Vec::new();
    for (case, &count) in counts {
        let Some(&before) = baseline.cases.get(case) else {
            risen.push(format!("{case}: not in the baseline"));
            continue;
        };
        let change = count as f64 / before.max(1) as f64 - 1.0;
        println!(
            "{case:<45} {count:>10} vs {before:>10} in the baseline ({:+.1} %)",
            change * 100.0
        );
        if change > tolerance {
            risen.push(format!(
                "{case}: {count} instructions per request, {:+.1} % over the baseline's {before}",
                change * 100.0
            ));
        } else if change < -tolerance {
            println!(
                "  fewer than the baseline: refresh it (make bench-guard-update) to keep the gain"
            );
        }
    }
    if risen.is_empty() {
        println!(
            "instruction counts within {:.0} % of the baseline",
            tolerance * 100.0
        );
        return Ok(());
    }
    bail!(
        "instruction counts rose past {:.0} %:\n  {}\n(if the rise is meant, refresh the baseline: make bench-guard-update)",
        tolerance * 100.0,
        risen.join("\n  ")
    )
}

fn which(tool: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(tool))
        .find(|path| path.is_file())
        .with_context(|| format!("{tool} not on PATH"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_total_is_read() {
        let dump =
            "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\n\nfn=main\n1 5\nsummary: 123456\n";
        assert_eq!(total_of(dump), Some(123_456));
        assert_eq!(total_of("totals: 42 7\n"), Some(42));
        assert_eq!(total_of("events: Ir\n"), None);
    }

    fn baseline(count: u64) -> Baseline {
        Baseline {
            note: String::new(),
            cases: BTreeMap::from([("GetOrder".to_owned(), count)]),
        }
    }

    #[test]
    fn a_rise_past_the_tolerance_fails() {
        let counts = BTreeMap::from([("GetOrder".to_owned(), 104_000)]);
        assert!(judge(&baseline(100_000), &counts, 0.03).is_err());
        assert!(judge(&baseline(102_000), &counts, 0.03).is_ok());
        // A fall passes (and asks for a refresh).
        assert!(judge(&baseline(200_000), &counts, 0.03).is_ok());
    }

    #[test]
    fn a_case_missing_from_the_baseline_fails() {
        let counts = BTreeMap::from([("Other".to_owned(), 1)]);
        assert!(judge(&baseline(100), &counts, 0.03).is_err());
    }
}
