//! A Jepsen-style run (issue 19, item 4): each role on a host of its own
//! ([`cluster`]), clients placing, cancelling and reading orders with
//! idempotency keys and recording a history ([`clients`], [`history`]),
//! while a seeded nemesis injects partitions (both ways, one way, a host
//! isolated), kill -9 of any role, PostgreSQL restarts and slow or failing
//! saga steps ([`nemesis`]). Then every fault is undone, the run waits for
//! every order to settle and [`check`] holds the history against the final
//! state.
//!
//! `make test` runs it for 30 s with a fresh seed; `make chaos` runs it as
//! long as `CHAOS_DURATION` says (`300s`, `5m`), with `CHAOS_SEED` to replay
//! a schedule. It prints a summary (operations, faults by kind, anomalies)
//! and writes it to `target/chaos/summary-<seed>.json`; on an anomaly (or
//! with `CHAOS_KEEP=1`) it keeps the history, the anomalies and every
//! role's logs in `target/chaos/seed-<seed>/`.

pub mod check;
pub mod clients;
pub mod cluster;
pub mod history;
pub mod nemesis;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::Connection;

use check::{Final, StoredOrder, StoredPayment};
use cluster::{Cluster, ROLES, settle};
use history::{History, Type};

/// Clients placing orders at once.
const CLIENTS: usize = 4;
/// Longest wait for every order to settle once the faults are undone.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);

struct Settings {
    seed: u64,
    duration: Duration,
}

/// CHAOS_SEED (a fresh one when unset) and CHAOS_DURATION (30 s).
fn settings() -> Settings {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("CHAOS_SEED: a number"))
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            u64::from(now.subsec_nanos()) ^ (now.as_secs() << 20) ^ u64::from(std::process::id())
        });
    let duration = std::env::var("CHAOS_DURATION")
        .ok()
        .filter(|s| !s.is_empty())
        .map_or(Duration::from_secs(30), |s| parse_duration(&s));
    Settings { seed, duration }
}

/// `300`, `300s` or `5m`.
fn parse_duration(text: &str) -> Duration {
    let (number, unit) = match text.strip_suffix('m') {
        Some(minutes) => (minutes, 60),
        None => (text.strip_suffix('s').unwrap_or(text), 1),
    };
    let number: u64 = number
        .parse()
        .unwrap_or_else(|_| panic!("CHAOS_DURATION {text:?}: seconds (300, 300s) or minutes (5m)"));
    Duration::from_secs(number * unit)
}

fn output_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(
            || {
                let root = crate::harness::workspace_root();
                root.canonicalize().unwrap_or(root).join("target")
            },
            PathBuf::from,
        )
        .join("chaos")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jepsen_style_run_under_random_faults_keeps_every_promise() {
    let Settings { seed, duration } = settings();
    let replay = format!(
        "CHAOS_SEED={seed} CHAOS_DURATION={}s make chaos",
        duration.as_secs()
    );
    println!("chaos: seed {seed}, {duration:?} of faults (replay: {replay})");
    let Some(mut cluster) = Cluster::start().await else {
        return;
    };
    let url = cluster.database_url();
    let stock_before = stock(&url).await;

    let history = Arc::new(History::new());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let run = clients::run(id, seed, cluster.orders(), history.clone(), stop.clone());
            tokio::spawn(run)
        })
        .collect();
    nemesis::run(&mut cluster, seed, Instant::now() + duration, &history).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        tokio::time::timeout(Duration::from_secs(60), client)
            .await
            .expect("a client stops within a minute")
            .expect("a client ends");
    }

    // Every fault is undone: wait for every order to settle, then check.
    let audit = settle(&url, SETTLE_LIMIT).await;
    let (audit_clean, audit) = match audit {
        Ok(report) => (true, report),
        Err(report) => (false, report),
    };
    let end = final_state(&url, audit_clean, &audit, stock_before).await;
    let ops = history.ops();
    let anomalies = check::anomalies(&ops, &end);
    let summary = summary(seed, duration, &history, &end, &anomalies);
    println!("chaos summary: {summary:#}");

    let dir = output_dir();
    std::fs::create_dir_all(&dir).expect("create target/chaos");
    let summary_file = dir.join(format!("summary-{seed}.json"));
    std::fs::write(&summary_file, format!("{summary:#}\n")).expect("write the summary");
    let keep = std::env::var("CHAOS_KEEP").is_ok_and(|v| v == "1");
    if !anomalies.is_empty() || keep {
        let kept = dir.join(format!("seed-{seed}"));
        std::fs::create_dir_all(&kept).expect("create the run's folder");
        std::fs::write(kept.join("history.jsonl"), history.to_json_lines()).unwrap();
        std::fs::write(kept.join("anomalies.txt"), anomalies.join("\n") + "\n").unwrap();
        std::fs::write(kept.join("audit.json"), format!("{audit:#}\n")).unwrap();
        std::fs::write(kept.join("summary.json"), format!("{summary:#}\n")).unwrap();
        for role in ROLES {
            let logs = cluster.logs(role).join("\n") + "\n";
            std::fs::write(kept.join(format!("{role}.log")), logs).unwrap();
        }
        println!(
            "chaos: history, anomalies and logs kept in {}",
            kept.display()
        );
    }
    assert!(
        anomalies.is_empty(),
        "{} anomalies (seed {seed}; replay: {replay}; kept in {}):\n{}",
        anomalies.len(),
        dir.join(format!("seed-{seed}")).display(),
        anomalies.join("\n")
    );
}

/// Available units per product, read from the inventory's table.
async fn stock(url: &str) -> BTreeMap<String, i64> {
    let mut db = sqlx::PgConnection::connect(url).await.expect("connect");
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT product_id, available FROM inventory_products")
            .fetch_all(&mut db)
            .await
            .expect("read the stock");
    db.close().await.ok();
    rows.into_iter().collect()
}

/// The orders, payments and stock as stored at the end.
async fn final_state(
    url: &str,
    audit_clean: bool,
    audit: &serde_json::Value,
    stock_before: BTreeMap<String, i64>,
) -> Final {
    let mut db = sqlx::PgConnection::connect(url).await.expect("connect");
    let orders: Vec<(String, String, Option<String>, String)> =
        sqlx::query_as("SELECT order_id, customer_id, idempotency_key, status FROM order_orders")
            .fetch_all(&mut db)
            .await
            .expect("read the orders");
    let payments: Vec<(String, String)> =
        sqlx::query_as("SELECT order_id, status FROM payment_payments")
            .fetch_all(&mut db)
            .await
            .expect("read the payments");
    db.close().await.ok();
    let sold = audit["sold"]
        .as_object()
        .map(|sold| {
            sold.iter()
                .map(|(product, units)| (product.clone(), units.as_i64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    let audit_problems = audit["problems"]
        .as_array()
        .map(|problems| problems.iter().map(ToString::to_string).collect())
        .unwrap_or_else(|| vec![audit.to_string()]);
    Final {
        orders: orders
            .into_iter()
            .map(|(order_id, customer, key, status)| StoredOrder {
                order_id,
                customer,
                key,
                status,
            })
            .collect(),
        payments: payments
            .into_iter()
            .map(|(order_id, status)| StoredPayment { order_id, status })
            .collect(),
        audit_clean,
        audit_problems,
        stock_after: stock(url).await,
        stock_before,
        sold,
    }
}

/// Operations by kind and outcome, faults by kind (how many, how long in
/// all, how many operations did not succeed while one was on), the orders'
/// final statuses and the anomalies.
fn summary(
    seed: u64,
    duration: Duration,
    history: &History,
    end: &Final,
    anomalies: &[String],
) -> serde_json::Value {
    let ops = history.ops();
    let mut operations: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for op in &ops {
        let kind = format!("{:?}", op.kind).to_lowercase();
        *operations
            .entry(kind)
            .or_default()
            .entry(op.kind_type.to_string())
            .or_default() += 1;
    }
    let mut faults: BTreeMap<&str, (usize, u64, usize)> = BTreeMap::new();
    for fault in history.faults() {
        let hurt = ops
            .iter()
            .filter(|op| matches!(op.kind_type, Type::Fail | Type::Info))
            .filter(|op| (fault.started_ms..=fault.ended_ms + 1000).contains(&op.at_ms))
            .count();
        let entry = faults.entry(fault.kind).or_default();
        entry.0 += 1;
        entry.1 += fault.ended_ms - fault.started_ms;
        entry.2 += hurt;
    }
    let faults: BTreeMap<&str, serde_json::Value> = faults
        .into_iter()
        .map(|(kind, (count, held_ms, hurt))| {
            let value = json!({
                "injected": count,
                "held_s": held_ms / 1000,
                "ops_failed_or_unknown_meanwhile": hurt,
            });
            (kind, value)
        })
        .collect();
    let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
    for order in &end.orders {
        *statuses.entry(order.status.as_str()).or_default() += 1;
    }
    json!({
        "seed": seed,
        "duration_s": duration.as_secs(),
        "operations": ops.iter().filter(|op| op.kind_type == Type::Invoke).count(),
        "by_kind": operations,
        "faults": faults,
        "orders": statuses,
        "payments": end.payments.len(),
        "audit_clean": end.audit_clean,
        "anomalies": anomalies.len(),
    })
}
