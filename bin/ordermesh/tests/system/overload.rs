//! Overload: at many times the concurrency a role is set to take, calls are
//! refused at once (RESOURCE_EXHAUSTED, or 503 with Retry-After at the
//! gateway) instead of queueing; what is accepted completes and stays
//! consistent. Figures are printed, not asserted. (Memory under hostile
//! load is `hostile.rs`'s; idle memory per role is `make bench`'s.)

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordermesh_testkit::{TestDatabase, tool};
use tonic::Code;

use crate::curl::url;
use crate::faults::{order_count, settled};
use crate::harness::{Endpoints, Role, TestApp, connect, order_client, order_request};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank]
}

/// `clients` concurrent clients, each placing `per_client` orders once (no
/// retry). Returns the latencies of accepted calls and the codes of the rest.
async fn burst(
    system: &TestApp,
    clients: usize,
    per_client: usize,
    tag: &str,
) -> (Vec<Duration>, Vec<tonic::Status>) {
    let channel = connect(system.addr(Role::Order)).await;
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let mut orders = order_client(channel.clone());
            let tag = tag.to_owned();
            tokio::spawn(async move {
                let (mut accepted, mut refused) = (Vec::new(), Vec::new());
                for i in 0..per_client {
                    let mut request = order_request(
                        &format!("{tag}-{client}"),
                        &[("sku-filter", 1)],
                        "pm_card_visa",
                    );
                    request.metadata_mut().insert(
                        "idempotency-key",
                        format!("{tag}-{client}-{i}").parse().unwrap(),
                    );
                    let started = Instant::now();
                    match orders.create_order(request).await {
                        Ok(_) => accepted.push(started.elapsed()),
                        Err(status) => refused.push(status),
                    }
                }
                (accepted, refused)
            })
        })
        .collect();
    let (mut accepted, mut refused) = (Vec::new(), Vec::new());
    for task in tasks {
        let (a, r) = task.await.unwrap();
        accepted.extend(a);
        refused.extend(r);
    }
    accepted.sort();
    (accepted, refused)
}

#[tokio::test(flavor = "multi_thread")]
async fn overload_is_shed_at_once_and_accepted_orders_complete() {
    let database = Arc::new(TestDatabase::sqlite());
    let system = TestApp::spawn(database.clone(), |settings| {
        settings.server.max_in_flight = 8;
        settings.gateway.gateway_max_in_flight = 4;
        // Shedding is the subject: no peer call may time out first on a
        // machine too busy to answer in the default 5 s.
        settings.client.default_call_timeout = std::time::Duration::from_secs(60);
    })
    .await;

    // What the system sustains: a few clients, nothing refused.
    let (baseline, refused) = burst(&system, 4, 10, "base").await;
    assert!(refused.is_empty(), "{refused:?}");

    // Sixteen times the limit at once.
    let (accepted, refused) = burst(&system, 128, 3, "over").await;
    assert!(!refused.is_empty(), "nothing was shed");
    assert!(
        refused
            .iter()
            .all(|status| status.code() == Code::ResourceExhausted),
        "refusals must say RESOURCE_EXHAUSTED: {:?}",
        refused
            .iter()
            .filter(|status| status.code() != Code::ResourceExhausted)
            .collect::<Vec<_>>()
    );
    eprintln!(
        "overload: baseline p50 {:?} p99 {:?}; at 16x: accepted {} (p50 {:?} p99 {:?}), shed {}",
        percentile(&baseline, 0.5),
        percentile(&baseline, 0.99),
        accepted.len(),
        percentile(&accepted, 0.5),
        percentile(&accepted, 0.99),
        refused.len(),
    );

    // Every accepted order completes, and the three services agree.
    let report = settled(&database).await;
    let orders = order_count(&report);
    assert_eq!(orders as usize, baseline.len() + accepted.len(), "{report}");

    // The gateway sheds too: 503 with Retry-After, in the gateway's error shape.
    let Some(curl) = tool("curl") else {
        return;
    };
    let target = url(system.gateway_addr(), "/v1/products");
    let mut args = vec!["-s", "-Z", "--parallel-max", "64", "--max-time", "30"];
    let format = "%{http_code} %header{retry-after}\\n";
    let targets = vec![target.as_str(); 200];
    for target in &targets {
        args.extend(["-o", "/dev/null", "-w", format, target]);
    }
    let output = Command::new(curl)
        .args(&args)
        .output()
        .expect("run curl -Z");
    let lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 200, "{lines:?}");
    let shed = lines.iter().filter(|l| l.starts_with("503")).count();
    assert!(
        lines.iter().all(|l| l.starts_with("200") || l == "503 1"),
        "{lines:?}"
    );
    eprintln!("gateway: {shed} of 200 parallel requests shed with 503 + Retry-After");
    assert!(shed > 0, "the gateway shed nothing at 16x its limit");
}
