//! The processes themselves: `ordermesh all` as the other sections use it,
//! and each role as its own process, as in a mesh (with an Envoy in front
//! of two of them): start to ready, idle and under-load resident memory.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use super::Suite;
use crate::procs::{self, Server};
use crate::targets::{Protocol, Workload};

/// Start-up and memory of one process.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessRow {
    pub process: String,
    pub ready_ms: f64,
    pub idle_rss_mib: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_rss_mib: Option<f64>,
}

/// The running `ordermesh all`: its process and the roles' addresses.
pub(super) struct All {
    pub server: Server,
    pub order: SocketAddr,
    pub inventory: SocketAddr,
    pub gateway: SocketAddr,
    pub admin: SocketAddr,
}

/// The roles in the order they start in, each after those it calls.
const ROLES: [&str; 4] = ["inventory", "payment", "order", "gateway"];
/// The listeners of `ordermesh all`, each on a port of its own.
const ALL_LISTENERS: [&str; 5] = ["order", "inventory", "payment", "gateway", "admin"];

impl Suite {
    /// Starts `ordermesh all` (SQLite under the scratch directory unless
    /// `database_url`) and records its start-up.
    pub(super) async fn start_all(
        &mut self,
        label: &str,
        database_url: Option<&str>,
    ) -> anyhow::Result<All> {
        self.start_all_with(label, database_url, &[]).await
    }

    /// [`Suite::start_all`] with more environment.
    pub(super) async fn start_all_with(
        &mut self,
        label: &str,
        database_url: Option<&str>,
        env: &[(&str, String)],
    ) -> anyhow::Result<All> {
        let data = self.scratch(label, "");
        std::fs::create_dir_all(&data)?;
        let mut args = vec!["all".to_owned()];
        for listener in ALL_LISTENERS {
            args.extend([format!("--{listener}-addr"), "127.0.0.1:0".to_owned()]);
        }
        let mut launch = procs::ordermesh(&self.ordermesh, &args, &ALL_LISTENERS)?
            .env("ORDERMESH_DATA_DIR", data.display().to_string());
        if let Some(url) = database_url {
            launch = launch.env("DATABASE_URL", url);
        }
        for (name, value) in env {
            launch = launch.env(*name, value.clone());
        }
        let server = Server::start(label, launch).await?;
        self.record_idle(&[&server]).await?;
        let addr = |role| server.process.addr(role);
        Ok(All {
            order: addr("order"),
            inventory: addr("inventory"),
            gateway: addr("gateway"),
            admin: addr("admin"),
            server,
        })
    }

    /// One second after `servers` are ready (once for all of them): each
    /// one's start to ready and idle resident memory.
    pub(super) async fn record_idle(&mut self, servers: &[&Server]) -> anyhow::Result<()> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for server in servers {
            let (ready, idle) = (ms(server.ready), mib(server.rss_kib()?));
            println!(
                "{}: ready in {ready:.0} ms, idle RSS {idle:.1} MiB",
                server.name
            );
            self.processes.push(ProcessRow {
                process: server.name.clone(),
                ready_ms: ready,
                idle_rss_mib: idle,
                load_rss_mib: None,
            });
        }
        Ok(())
    }

    /// Each role as its own process, as in a mesh, and an Envoy in front of
    /// two of them: start to ready, idle and loaded memory.
    pub(super) async fn separate_roles(&mut self) -> anyhow::Result<()> {
        println!("\n== Each role as its own process: start to ready, memory ==");
        let data = self.scratch("roles", "");
        std::fs::create_dir_all(&data)?;
        let mut started: Vec<Server> = Vec::new();
        for role in ROLES {
            let url = |i: usize, of: &str| format!("http://{}", started[i].process.addr(of));
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
                    url(0, "inventory"),
                    "--payment-url".to_owned(),
                    url(1, "payment"),
                ]),
                "gateway" => args.extend([
                    "--gateway-order-url".to_owned(),
                    url(2, "order"),
                    "--gateway-inventory-url".to_owned(),
                    url(0, "inventory"),
                ]),
                _ => {}
            }
            let launch = procs::ordermesh(&self.ordermesh, &args, &[role])?
                .env("ORDERMESH_DATA_DIR", data.display().to_string());
            started.push(Server::start(&format!("ordermesh {role}"), launch).await?);
        }
        let first_role_row = self.processes.len();
        self.record_idle(&started.iter().collect::<Vec<_>>())
            .await?;
        let role_pids: Vec<u32> = started.iter().map(|s| s.pid).collect();
        let addr = |i: usize| started[i].process.addr(ROLES[i]);
        let (inventory, order, gateway) = (addr(0), addr(2), addr(3));

        let gateway_target = self.target(Protocol::Rest, gateway, Some(inventory));
        let (_, peaks) = self
            .closed(
                "mixed rest gateway (one process per role)",
                &gateway_target,
                Workload::Mixed,
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
            let target = self.target(Protocol::Rest, addr, Some(inventory));
            let mut pids = vec![envoy.pid];
            pids.extend(&role_pids);
            let (_, peaks) = self
                .closed(
                    "mixed rest envoy (one process per role)",
                    &target,
                    Workload::Mixed,
                    &pids,
                )
                .await?;
            if let (Some(row), Some(peak)) = (self.processes.get_mut(row), peaks.first()) {
                row.load_rss_mib = Some(mib(*peak));
            }
            self.stop(envoy).await?;
        }
        for server in started.into_iter().rev() {
            self.stop(server).await?;
        }
        Ok(())
    }
}

/// A row of one ordermesh role in its own process.
pub(super) fn is_role(process: &str) -> bool {
    ROLES
        .iter()
        .any(|role| process == format!("ordermesh {role}"))
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
