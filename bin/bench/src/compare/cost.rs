//! CPU per unit of work: a fixed count of requests at fixed concurrency,
//! the servers' CPU read from /proc before and after, divided by the
//! successful requests. On a shared two-core machine this moves far less
//! from run to run than throughput at equal p99, so the targets use it.
//!
//! Besides the paths' counted runs (`Suite::count`), two costs of their
//! own: the outbox's relay to NATS per order, and the token check.

use std::time::Duration;

use anyhow::Context;
use ordermesh_identity::{DEV_ISSUER, Verifier, VerifierConfig};
use serde::Serialize;

use super::Suite;
use super::stores;
use crate::load::Mode;
use crate::procs;
use crate::stats::Report;
use crate::targets::{Protocol, TargetSpec, Workload};

/// Clients of every counted run: 16 HTTP/1.1 keep-alive connections for
/// REST (one per client), the bench's gRPC connections for gRPC.
pub const COUNT_CONCURRENCY: usize = 16;

/// The longest a counted run may take; it is cut there (and says so).
const COUNT_LIMIT: Duration = Duration::from_secs(120);

/// What one token check costs the verifier, in this process.
#[derive(Debug, Clone, Serialize)]
pub struct TokenCost {
    /// A token seen before (the verifier caches a verified token).
    pub cached_us: f64,
    /// A token never seen: its signature and claims checked.
    pub uncached_us: f64,
    pub checks: u64,
}

impl Suite {
    /// A fixed count of `workload` requests against `target`, the CPU of
    /// `servers` charged to it.
    pub(super) async fn count(
        &mut self,
        name: &str,
        target: &TargetSpec,
        workload: Workload,
        requests: u64,
        servers: &[u32],
    ) -> anyhow::Result<Report> {
        let mode = Mode::Count {
            concurrency: COUNT_CONCURRENCY,
            requests,
        };
        let (report, _) = self
            .measure(name, target, workload, mode, COUNT_LIMIT, servers)
            .await?;
        if report.requests < requests {
            self.note(&format!(
                "{name}: cut at {}s after {} of {requests} requests",
                COUNT_LIMIT.as_secs(),
                report.requests
            ));
        }
        Ok(report)
    }

    /// The counted runs of `name`, in the order they ran (one per round).
    pub(super) fn counted_rounds(&self, name: &str) -> Vec<&Report> {
        self.runs
            .iter()
            .filter(|r| r.name == name && r.mode.starts_with("count"))
            .collect()
    }

    /// The median of `name`'s counted runs by CPU per unit (the lower of
    /// the middle two for an even number), if any ran.
    pub(super) fn counted(&self, name: &str) -> Option<&Report> {
        let mut rounds = self.counted_rounds(name);
        let cpu = |r: &Report| r.server_cpu_us_per_req.unwrap_or(f64::INFINITY);
        rounds.sort_by(|a, b| cpu(a).total_cmp(&cpu(b)));
        rounds.get(rounds.len().saturating_sub(1) / 2).copied()
    }

    /// What the outbox's relay adds to an order: the same counted
    /// create-order over gRPC as the paths' (events recorded in the outbox
    /// either way), with the relay publishing to a NATS server of the
    /// suite's own; the CPU of ordermesh and nats-server until the outbox
    /// has drained.
    pub(super) async fn outbox_relay(&mut self) -> anyhow::Result<()> {
        println!("\n== The outbox relayed to NATS JetStream ==");
        let Some(nats) = ordermesh_testkit::nats::PrivateNats::start() else {
            self.note(
                "no nats-server (Debian package nats-server): the relay's cost is not measured",
            );
            return Ok(());
        };
        let all = self
            .start_all_with(
                "ordermesh all (SQLite, relay to NATS)",
                None,
                &[("ORDERMESH_NATS_URL", nats.url())],
            )
            .await?;
        let grpc = self.target(Protocol::Grpc, all.order, Some(all.inventory));
        let mut servers = vec![all.server.pid];
        servers.extend(nats.pid());
        // From before the warm-up to the drained outbox: every order placed
        // in the window (the warm-up's too) is charged all its relay work.
        let (cpu_before, served_before) = (cpu(&servers), stores::served(all.admin).await?);
        let report = self
            .count(
                "create-order grpc direct, relay to NATS",
                &grpc,
                Workload::CreateOrder,
                self.args.cost_orders,
                &servers,
            )
            .await?;
        if !drain(all.admin).await {
            self.note(
                "the outbox had not drained 30 s after the run: the relay's CPU is cut short",
            );
        }
        let (cpu_after, served_after) = (cpu(&servers), stores::served(all.admin).await?);
        let orders = served_after.create_orders - served_before.create_orders;
        if let Some(last) = self.runs.last_mut()
            && report.ok > 0
            && orders > 0.0
        {
            let spent = cpu_after.saturating_sub(cpu_before).as_secs_f64() * 1e6;
            last.server_cpu_us_per_req = Some(spent / orders);
        }
        self.stop(all.server).await
    }

    /// The token check in this process: one token again and again (the
    /// cached path every request with a known token takes), then tokens
    /// never seen (the signature and claims checked each time).
    pub(super) async fn token_check(&mut self) -> anyhow::Result<()> {
        println!("\n== The token check ==");
        let issuer = crate::identity::issuer()?;
        let config = VerifierConfig::new(DEV_ISSUER, ordermesh_identity::DEV_AUDIENCE);
        let verifier = Verifier::new(
            config,
            ordermesh_identity::JwksSource::File(issuer.jwks_path().to_owned()),
        )
        .context("a verifier of the bench's tokens")?;
        let checks = self.args.cost_requests;
        let token = issuer.token();
        let cached = timed(checks, || verifier.verify(token)).await?;
        let fresh: Vec<String> = (0..checks)
            .map(|n| issuer.fresh_token(n))
            .collect::<anyhow::Result<_>>()?;
        let mut tokens = fresh.iter();
        let uncached = timed(checks, || verifier.verify(tokens.next().map_or("", |t| t))).await?;
        let cost = TokenCost {
            cached_us: cached,
            uncached_us: uncached,
            checks,
        };
        println!(
            "token check: {:.2} µs cached, {:.1} µs a token never seen ({checks} checks each)",
            cost.cached_us, cost.uncached_us
        );
        self.token = Some(cost);
        Ok(())
    }
}

/// µs per call of `check`, over `checks` calls one after another; fails if
/// a check fails. Wall time, not /proc's CPU time, whose 10 ms ticks are
/// coarser than thousands of cached checks take; one at a time on an idle
/// generator, the two are the same.
async fn timed<F, Fut, T, E>(checks: u64, mut check: F) -> anyhow::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let started = std::time::Instant::now();
    for _ in 0..checks {
        check()
            .await
            .map_err(|error| anyhow::anyhow!("a token check failed: {error}"))?;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / checks.max(1) as f64)
}

fn cpu(pids: &[u32]) -> Duration {
    pids.iter()
        .filter_map(|pid| procs::cpu_time(*pid).ok())
        .sum()
}

/// Waits (30 s at most) until no outbox row is pending; whether it drained.
async fn drain(admin: std::net::SocketAddr) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        if stores::metric_sum(admin, "outbox_pending_rows").await.ok() == Some(0.0) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
