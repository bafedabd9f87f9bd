//! REST through the ordermesh gateway and through Envoy's transcoder, and
//! direct gRPC, to one `ordermesh all` on SQLite: each workload closed loop
//! at equal concurrency, then the highest fixed rate each REST path keeps
//! within the same p99 goal.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Suite;
use super::stores::{self, StoreRow};
use crate::load::Mode;
use crate::stats::{Bisection, Report};
use crate::targets::{self, Protocol, TargetSpec, Workload};

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

impl Suite {
    /// `ordermesh all` on SQLite, Envoy's transcoder in front of its order
    /// and inventory services, REST through both and direct gRPC.
    pub(super) async fn sqlite_paths(&mut self) -> anyhow::Result<()> {
        println!("\n== REST through the gateway and through Envoy, and direct gRPC (SQLite) ==");
        let all = self.start_all("ordermesh all (SQLite)", None).await?;
        let envoy = self
            .start_envoy("envoy transcoder", all.order, all.inventory)
            .await?;
        let mut grpc = self.target(Protocol::Grpc, all.order, Some(all.inventory));
        // The orders get-order reads, placed once for every path.
        let seed = targets::seed_orders(&grpc, self.args.seed_orders).await?;
        grpc.order_ids = Some(seed.clone());
        let mut gateway = self.target(Protocol::Rest, all.gateway, Some(all.inventory));
        gateway.order_ids = Some(seed.clone());
        let envoy_target = envoy.as_ref().map(|(_, addr)| {
            let mut target = self.target(Protocol::Rest, *addr, Some(all.inventory));
            target.order_ids = Some(seed.clone());
            target
        });
        let ordermesh_pid = all.server.pid;
        let envoy_pids: Vec<u32> = envoy
            .as_ref()
            .map(|(envoy, _)| vec![ordermesh_pid, envoy.pid])
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
            let (report, _) = self
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
                let (report, _) = self
                    .closed(&format!("{w} rest envoy"), target, workload, &envoy_pids)
                    .await?;
                closed.insert((w, "envoy"), report);
            }
            let served_before = stores::served(all.admin).await.ok();
            let (report, _) = self
                .closed(
                    &format!("{w} grpc direct"),
                    &grpc,
                    workload,
                    &[ordermesh_pid],
                )
                .await?;
            if workload == Workload::CreateOrder {
                let served_after = stores::served(all.admin).await.ok();
                let served = served_before.zip(served_after);
                self.stores.push(StoreRow::new("SQLite", &report, served));
            }
            closed.insert((w, "grpc"), report);
        }

        // CPU per unit of work: a fixed count through each path, the paths
        // in turn, in rounds.
        let rounds = (0..self.args.cost_rounds.max(1))
            .flat_map(|_| [Workload::GetOrder, Workload::CreateOrder]);
        for workload in rounds {
            if !self.args.workloads.contains(&workload) {
                continue;
            }
            let w = workload.name();
            let count = match workload {
                Workload::CreateOrder => self.args.cost_orders,
                _ => self.args.cost_requests,
            };
            let pid = [ordermesh_pid];
            self.count(
                &format!("{w} rest gateway"),
                &gateway,
                workload,
                count,
                &pid,
            )
            .await?;
            if let Some(target) = &envoy_target {
                self.count(
                    &format!("{w} rest envoy"),
                    target,
                    workload,
                    count,
                    &envoy_pids,
                )
                .await?;
            }
            self.count(&format!("{w} grpc direct"), &grpc, workload, count, &pid)
                .await?;
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

        if let Some((envoy, _)) = envoy {
            self.stop(envoy).await?;
        }
        self.stop(all.server).await
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
}
