//! The ceiling: the bare echo server (`ordermesh-bench echo-server`), in a
//! process of its own so its CPU is told apart from the load generator's.

use anyhow::Context;
use ordermesh_testkit::process::Launch;

use super::Suite;
use crate::procs::Server;
use crate::targets::{Protocol, Workload};

impl Suite {
    /// The bare echo server, the most this machine serves.
    pub(super) async fn echo_ceiling(&mut self) -> anyhow::Result<()> {
        println!("\n== The ceiling: a bare tonic echo server ==");
        let exe = std::env::current_exe().context("locating ordermesh-bench")?;
        // It binds port 0 and says where in a `listening` line, as ordermesh does.
        let launch = Launch::new(exe)
            .args(["echo-server", "--addr", "127.0.0.1:0"])
            .wait_for(["echo"]);
        let server = Server::start("echo server", launch).await?;
        let target = self.target(Protocol::Echo, server.process.addr("echo"), None);
        self.closed("echo grpc bare", &target, Workload::Echo, &[server.pid])
            .await?;
        let requests = self.args.cost_requests;
        self.count(
            "echo grpc bare",
            &target,
            Workload::Echo,
            requests,
            &[server.pid],
        )
        .await?;
        self.stop(server).await
    }
}
