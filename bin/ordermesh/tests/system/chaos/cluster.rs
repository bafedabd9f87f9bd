//! Each role on a host of its own (`ordermesh_testkit::hosts`): order,
//! inventory and payment each in a network namespace with its own address,
//! and a private PostgreSQL on a fourth host that all three use. The test
//! process is the network's runner: its clients reach the order service,
//! and `ordermesh audit` and sqlx reach PostgreSQL, at their addresses.
//!
//! Every role listens on a fixed port of its host's address, so a role
//! killed and started again is where its peers expect it.

use std::collections::HashMap;
use std::time::Duration;

use ordermesh_testkit::hosts::{Host, Network};
use ordermesh_testkit::postgres::PrivatePostgres;
use ordermesh_testkit::process::{ChildProcess, Logs};
use ordermesh_testkit::tokens;

use crate::harness::{ORDERMESH, OrderClient, order_client};

/// The three roles, in the order they start.
pub const ROLES: [&str; 3] = ["inventory", "payment", "order"];
/// The hosts faults can hit: the roles and the database.
pub const HOSTS: [&str; 4] = ["order", "inventory", "payment", "pg"];

fn port(role: &str) -> u16 {
    match role {
        "order" => 50051,
        "inventory" => 50052,
        "payment" => 50053,
        _ => unreachable!("no role {role}"),
    }
}

const ADMIN_PORT: u16 = 9464;

/// The roles' processes, the database and the network. Fields drop in
/// order: the processes first, then PostgreSQL, then the network (which
/// kills whatever still runs in its hosts and removes every namespace, also
/// when the test panics).
pub struct Cluster {
    processes: HashMap<&'static str, ChildProcess>,
    logs: HashMap<&'static str, Logs>,
    /// Failpoints each role is (re)started with.
    failpoints: HashMap<&'static str, Vec<String>>,
    pub postgres: PrivatePostgres,
    hosts: HashMap<&'static str, Host>,
    pub network: Network,
}

impl Cluster {
    /// The four hosts, PostgreSQL and the three roles, started; None (skip)
    /// without the capabilities or PostgreSQL, unless everything is
    /// required.
    pub async fn start() -> Option<Self> {
        let network = Network::new()?;
        let hosts: HashMap<&'static str, Host> = HOSTS
            .iter()
            .map(|name| (*name, network.host(name)))
            .collect();
        let postgres = tokio::task::block_in_place(|| PrivatePostgres::start_in(&hosts["pg"]))?;
        let mut cluster = Self {
            processes: HashMap::new(),
            logs: ROLES.iter().map(|role| (*role, Logs::default())).collect(),
            failpoints: HashMap::new(),
            postgres,
            hosts,
            network,
        };
        for role in ROLES {
            cluster.start_role(role).await;
        }
        Some(cluster)
    }

    pub fn host(&self, name: &str) -> &Host {
        &self.hosts[name]
    }

    pub fn database_url(&self) -> String {
        self.postgres.url()
    }

    /// The failpoints `role` is started with from now on (its next start).
    pub fn set_failpoints(&mut self, role: &'static str, failpoints: Vec<String>) {
        self.failpoints.insert(role, failpoints);
    }

    /// Starts `role` on its host (again), waiting until it listens. A role
    /// cannot start while PostgreSQL is out of its reach; the caller
    /// restores that first.
    pub async fn start_role(&mut self, role: &'static str) {
        let host = &self.hosts[role];
        let mut args = vec![
            role.to_owned(),
            format!("--{role}-addr"),
            host.socket(port(role)).to_string(),
            "--admin-addr".to_owned(),
            host.socket(ADMIN_PORT).to_string(),
            "--log-format".to_owned(),
            "json".to_owned(),
        ];
        if role == "order" {
            let peer = |name: &str| format!("http://{}", self.hosts[name].socket(port(name)));
            args.extend([
                "--inventory-url".to_owned(),
                peer("inventory"),
                "--payment-url".to_owned(),
                peer("payment"),
                "--replica-name".to_owned(),
                "order-0".to_owned(),
                // Scan for unfinished sagas often, and give up on a dark
                // peer within seconds, so a run settles soon after a heal.
                "--recovery-interval".to_owned(),
                "200ms".to_owned(),
                "--connect-timeout".to_owned(),
                "1s".to_owned(),
                "--default-call-timeout".to_owned(),
                "2s".to_owned(),
            ]);
        }
        for failpoint in self.failpoints.get(role).into_iter().flatten() {
            args.extend(["--failpoint".to_owned(), failpoint.clone()]);
        }
        let launch = host
            .launch(ORDERMESH)
            .args(args)
            .env_remove("DATABASE_URL")
            .env("DATABASE_URL", self.postgres.url())
            .env("RUST_LOG", "info")
            .envs(tokens::env())
            .wait_for([role])
            .timeout(Duration::from_secs(30));
        let process = ChildProcess::start_logging_to(launch, self.logs[role].clone())
            .await
            .unwrap_or_else(|error| panic!("starting {role}: {error:#}"));
        self.processes.insert(role, process);
    }

    /// SIGKILL: no drain, as in a crash.
    pub async fn kill(&mut self, role: &str) {
        if let Some(mut process) = self.processes.remove(role) {
            process.kill().await;
        }
    }

    /// A client of the order service, from the runner; it connects lazily
    /// and gives up a connect after 1 s, so a dark path fails a call
    /// rather than hanging it.
    pub fn orders(&self) -> OrderClient {
        let addr = self.order_addr();
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .expect("a valid URL")
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy();
        order_client(channel)
    }

    pub fn order_addr(&self) -> std::net::SocketAddr {
        self.hosts["order"].socket(port("order"))
    }

    pub fn inventory_addr(&self) -> std::net::SocketAddr {
        self.hosts["inventory"].socket(port("inventory"))
    }

    /// Every line `role` wrote so far, across its restarts.
    pub fn logs(&self, role: &str) -> Vec<String> {
        self.logs[role]
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Stops PostgreSQL (fast shutdown), as an outage would.
    pub fn postgres_down(&self) {
        tokio::task::block_in_place(|| self.postgres.down());
    }

    pub fn postgres_up(&self) {
        tokio::task::block_in_place(|| self.postgres.up());
    }
}

/// The log lines of `lines` from index `from` on whose `msg` is one of
/// `messages`, parsed.
pub fn log_lines_since(lines: &[String], from: usize, messages: &[&str]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .skip(from)
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| {
            line["msg"]
                .as_str()
                .is_some_and(|msg| messages.contains(&msg))
        })
        .collect()
}

/// `ordermesh audit --json` on the database at `url`: whether it is clean,
/// and its report.
pub fn audit(url: &str) -> (bool, serde_json::Value) {
    let output = tokio::task::block_in_place(|| {
        std::process::Command::new(ORDERMESH)
            .args(["audit", "--json"])
            .env("DATABASE_URL", url)
            .output()
            .expect("run ordermesh audit")
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|_| {
        serde_json::json!({
            "unreadable": stdout,
            "stderr": String::from_utf8_lossy(&output.stderr),
        })
    });
    (output.status.success(), report)
}

/// Polls the audit until it is clean (every order settled, the services
/// in agreement), at most `limit`; the last report either way.
pub async fn settle(url: &str, limit: Duration) -> Result<serde_json::Value, serde_json::Value> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (clean, report) = audit(url);
        if clean {
            return Ok(report);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(report);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
