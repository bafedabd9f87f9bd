//! create-order by store: what placing one order costs on SQLite (measured
//! with the paths) and on PostgreSQL, in a throwaway database: the
//! database's view of each order (commits, rows, WAL, backend CPU) and the
//! calls the services made for it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use sqlx::{Connection, Row};
use url::Url;

use super::Suite;
use crate::procs::{self, http_get};
use crate::stats::{Report, ratio};
use crate::targets::{self, Protocol, Workload};

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

impl StoreRow {
    /// The row of `report`'s create-order run on `store`, with the calls
    /// served around it; the database's own figures left out.
    pub(super) fn new(store: &str, report: &Report, served: Option<(Served, Served)>) -> Self {
        Self {
            store: store.to_owned(),
            orders_per_s: report.throughput,
            p50_ms: report.latency_ms.p50,
            p99_ms: report.latency_ms.p99,
            service_cpu_us_per_order: report.server_cpu_us_per_req.unwrap_or(0.0),
            database_cpu_us_per_order: None,
            rpcs_per_order: served.and_then(|(before, after)| before.rpcs_per_order(after)),
            commits_per_order: None,
            rows_written_per_order: None,
            wal_bytes_per_order: None,
        }
    }
}

impl Suite {
    /// The PostgreSQL half (SQLite's is measured with the paths):
    /// create-order on a throwaway database, with what each order costs it.
    pub(super) async fn postgres(&mut self) -> anyhow::Result<()> {
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
        let grpc = self.target(Protocol::Grpc, all.order, Some(all.inventory));
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
        let orders = self.args.cost_orders;
        let report = self
            .count(
                "create-order grpc direct (PostgreSQL)",
                &grpc,
                Workload::CreateOrder,
                orders,
                &[all.server.pid],
            )
            .await?;
        let db_cpu = backend_cpu().saturating_sub(db_cpu_before);
        let served_after = served(all.admin).await.ok();
        // The backends flush their statistics when they exit: stop the
        // service, wait for its connections to close, then read them.
        self.stop(all.server).await?;
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
            database_cpu_us_per_order: Some(db_cpu.as_secs_f64() * 1e6 / ok),
            commits_per_order: per_order_total(after_stats.commits - before_stats.commits),
            rows_written_per_order: per_order_total(
                after_stats.rows_written - before_stats.rows_written,
            ),
            wal_bytes_per_order: per_order_total(after_stats.wal_bytes - before_stats.wal_bytes),
            ..StoreRow::new("PostgreSQL", &report, served_before.zip(served_after))
        });
        Ok(())
    }
}

/// `admin_url` with its database replaced by `database`.
fn database_url(admin_url: &str, database: &str) -> anyhow::Result<String> {
    let mut url = Url::parse(admin_url).context("a postgres:// URL is needed")?;
    anyhow::ensure!(
        matches!(url.scheme(), "postgres" | "postgresql"),
        "a postgres:// URL is needed, not {}",
        redact(admin_url)
    );
    url.set_path(database);
    Ok(url.into())
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            url.into()
        }
        Err(_) => "(a URL that does not parse)".to_owned(),
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
    pub(super) fn rpcs_per_order(self, later: Served) -> Option<f64> {
        ratio(
            later.rpcs - self.rpcs,
            later.create_orders - self.create_orders,
        )
    }
}

pub(super) async fn served(admin: SocketAddr) -> anyhow::Result<Served> {
    let (_, body) = http_get(&format!("http://{admin}/metrics")).await?;
    Ok(parse_served(&String::from_utf8_lossy(&body)))
}

/// The sum of every sample of the metric `name` (all its label sets).
pub(super) async fn metric_sum(admin: SocketAddr, name: &str) -> anyhow::Result<f64> {
    let (_, body) = http_get(&format!("http://{admin}/metrics")).await?;
    Ok(samples(&String::from_utf8_lossy(&body), name)
        .map(|(_, value)| value)
        .sum())
}

/// The samples of the metric `name` in Prometheus text: each line's labels
/// (with the braces) and value.
fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            return None;
        }
        let (labels, value) = rest.rsplit_once(' ')?;
        Some((labels, value.parse::<f64>().ok()?))
    })
}

/// The samples of the server-side `requests_total` counter in Prometheus
/// text (not `client_requests_total`), summed, and those of CreateOrder.
/// Two sums over one counter's lines: less than a text-format parser
/// dependency would take.
fn parse_served(text: &str) -> Served {
    let mut served = Served::default();
    for (labels, value) in samples(text, "requests_total") {
        served.rpcs += value;
        if labels.contains("/ordermesh.order.v1.OrderService/CreateOrder\"") {
            served.create_orders += value;
        }
    }
    served
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
        assert!(database_url("mysql://h/x", "b").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h/x"), "postgres://u:***@h/x");
        assert_eq!(redact("postgres://u@h/x"), "postgres://u@h/x");
        assert!(!redact("postgres://u:secret@").contains("secret"));
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
}
