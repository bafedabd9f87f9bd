//! Prometheus metrics, one registry per App (see `AppContext`). Every role
//! labels its series with `service`, so `all` and one-role processes give
//! the same names. Handles are created once and cloned; a request costs a
//! label lookup in an existing map, not an allocation.

mod store_commits;

pub use store_commits::StoreCommits;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Buckets from 1 ms to 10 s: a saga takes milliseconds, a slow peer seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every metric ordermesh exports.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    /// Served requests, gRPC and HTTP: {service, method, code}.
    pub requests_total: IntCounterVec,
    /// Served request latency: {service, method}.
    pub request_duration_seconds: HistogramVec,
    /// Outgoing calls to peers: {service, method, code}.
    pub client_requests_total: IntCounterVec,
    /// Outgoing call latency: {service, method}.
    pub client_request_duration_seconds: HistogramVec,
    /// Open connections to a role's listener: {service}.
    pub active_connections: IntGaugeVec,
    /// Connections a listener closed itself, by why: {service, reason}.
    pub connections_closed_total: IntCounterVec,
    /// Requests a listener refused before any handler: {service, reason}.
    pub requests_refused_total: IntCounterVec,
    /// Watches (server streams) open now: {service}.
    pub open_watches: IntGaugeVec,
    /// Watches refused over a budget: {service, limit} ("client", "total").
    pub watches_refused_total: IntCounterVec,
    /// Orders by the status they settled in, why a failed one failed (a
    /// `FailureReason`, or "none") and whose it was ("customer", or
    /// "synthetic" for the rollout's own test orders): {status, reason, origin}.
    pub orders_created_total: IntCounterVec,
    /// Charges by outcome: {status}.
    pub payments_processed_total: IntCounterVec,
    /// Reservation attempts: {product_id, status}.
    pub inventory_reservations_total: IntCounterVec,
    /// Units available per product, as stored: {product_id}.
    pub current_stock: IntGaugeVec,
    /// Times a test-only failpoint acted: {failpoint}.
    pub failpoint_hits_total: IntCounterVec,
    /// Always 1, labelled with the version built in: {version}.
    pub build_info: IntGaugeVec,
    /// Saga steps refused because a newer lease holder had been seen
    /// (fencing): {service}.
    pub saga_stale_steps_refused_total: IntCounterVec,
    /// Saga leases taken from a holder that was still holding them (expired
    /// or dead), not handed over: no labels.
    pub saga_lease_takeovers_total: IntCounterVec,
    /// Age of the oldest order whose saga is unfinished, by the database's
    /// clock; 0 when every order is settled: no labels.
    pub saga_oldest_unsettled_age_seconds: IntGaugeVec,
    /// Outbox rows not yet published: {service}.
    pub outbox_pending_rows: IntGaugeVec,
    /// Age of the oldest unpublished outbox row, in seconds: {service}.
    pub outbox_oldest_age_seconds: IntGaugeVec,
    /// Outbox rows JetStream acknowledged: {service}.
    pub outbox_published_total: IntCounterVec,
    /// Failed tries to publish to JetStream (connect, stream, publish or
    /// ack): {service}.
    pub outbox_publish_errors_total: IntCounterVec,
    /// SQLite's write transactions and the COMMITs that made them durable:
    /// {service} (`StoreCommits::watch`).
    pub sqlite_commits: StoreCommits,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric registered once");
    metric
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    let metric = HistogramVec::new(opts, labels).expect("a valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric registered once");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric registered once");
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry of its own with every metric in it.
    pub fn new() -> Self {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("the process collector registers once");
        Self {
            requests_total: counter(
                &registry,
                "requests_total",
                "Requests served, by service, method and status code.",
                &["service", "method", "code"],
            ),
            request_duration_seconds: histogram(
                &registry,
                "request_duration_seconds",
                "Time to serve a request, by service and method.",
                &["service", "method"],
            ),
            client_requests_total: counter(
                &registry,
                "client_requests_total",
                "Calls made to peer services, by calling service, method and status code.",
                &["service", "method", "code"],
            ),
            client_request_duration_seconds: histogram(
                &registry,
                "client_request_duration_seconds",
                "Time a call to a peer service took, by calling service and method.",
                &["service", "method"],
            ),
            active_connections: gauge(
                &registry,
                "active_connections",
                "Open client connections, by service.",
                &["service"],
            ),
            connections_closed_total: counter(
                &registry,
                "connections_closed_total",
                "Connections a listener closed itself (a limit reached), by service and reason.",
                &["service", "reason"],
            ),
            open_watches: gauge(
                &registry,
                "open_watches",
                "Watches (server streams) open now, by service.",
                &["service"],
            ),
            watches_refused_total: counter(
                &registry,
                "watches_refused_total",
                "Watches refused over the per-client or the total budget, by service and limit.",
                &["service", "limit"],
            ),
            requests_refused_total: counter(
                &registry,
                "requests_refused_total",
                "Requests a listener refused before any handler (URL or header limits), by service and reason.",
                &["service", "reason"],
            ),
            orders_created_total: counter(
                &registry,
                "orders_created_total",
                "Orders placed, by the status their saga settled in, the failure reason and the origin.",
                &["status", "reason", "origin"],
            ),
            payments_processed_total: counter(
                &registry,
                "payments_processed_total",
                "Charges processed, by outcome.",
                &["status"],
            ),
            inventory_reservations_total: counter(
                &registry,
                "inventory_reservations_total",
                "Reservation attempts, by product and outcome.",
                &["product_id", "status"],
            ),
            current_stock: gauge(
                &registry,
                "current_stock",
                "Units available to reserve, by product.",
                &["product_id"],
            ),
            failpoint_hits_total: counter(
                &registry,
                "failpoint_hits_total",
                "Times a test-only failpoint acted, by failpoint.",
                &["failpoint"],
            ),
            build_info: {
                let info = gauge(
                    &registry,
                    "build_info",
                    "Always 1; its label is the version of ordermesh this process runs.",
                    &["version"],
                );
                info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
                info
            },
            saga_stale_steps_refused_total: counter(
                &registry,
                "saga_stale_steps_refused_total",
                "Saga steps refused because they carried an older fencing number than one already seen, by service.",
                &["service"],
            ),
            saga_lease_takeovers_total: counter(
                &registry,
                "saga_lease_takeovers_total",
                "Saga leases taken over from a holder that expired or stopped heartbeating.",
                &[],
            ),
            saga_oldest_unsettled_age_seconds: gauge(
                &registry,
                "saga_oldest_unsettled_age_seconds",
                "Age of the oldest order whose saga has not settled (0 when none).",
                &[],
            ),
            outbox_pending_rows: gauge(
                &registry,
                "outbox_pending_rows",
                "Outbox rows (events) not yet published to JetStream, by service.",
                &["service"],
            ),
            outbox_oldest_age_seconds: gauge(
                &registry,
                "outbox_oldest_age_seconds",
                "Age of the oldest unpublished outbox row in seconds, 0 when none waits, by service.",
                &["service"],
            ),
            outbox_published_total: counter(
                &registry,
                "outbox_published_total",
                "Outbox rows published and acknowledged by JetStream, by service.",
                &["service"],
            ),
            outbox_publish_errors_total: counter(
                &registry,
                "outbox_publish_errors_total",
                "Failed tries to publish outbox rows to JetStream, by service.",
                &["service"],
            ),
            sqlite_commits: {
                let commits = StoreCommits::new();
                registry
                    .register(Box::new(commits.clone()))
                    .expect("each metric registered once");
                commits
            },
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(error) = encoder.encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "cannot encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_documented_names() {
        let m = Metrics::new();
        m.requests_total
            .with_label_values(&[
                "order",
                "/ordermesh.order.v1.OrderService/CreateOrder",
                "OK",
            ])
            .inc();
        m.current_stock.with_label_values(&["sku-mug"]).set(7);
        let text = m.render();
        assert!(text.contains(
            "requests_total{code=\"OK\",method=\"/ordermesh.order.v1.OrderService/CreateOrder\",service=\"order\"} 1"
        ), "{text}");
        assert!(
            text.contains("current_stock{product_id=\"sku-mug\"} 7"),
            "{text}"
        );
        assert!(text.contains("build_info{version=\""), "{text}");
    }

    #[test]
    fn a_stores_commits_are_read_when_scraped() {
        let m = Metrics::new();
        let counts = std::sync::Arc::new(std::sync::Mutex::new((3, 1)));
        let source = counts.clone();
        m.sqlite_commits
            .watch("order", move || Some(*source.lock().expect("counts")));
        m.sqlite_commits.watch("memory", || None);
        let scraped = |transactions: u64, commits: u64| {
            let text = m.render();
            let expected = [
                format!("sqlite_transactions_total{{service=\"order\"}} {transactions}"),
                format!("sqlite_commits_total{{service=\"order\"}} {commits}"),
            ];
            for line in expected {
                assert!(text.contains(&line), "{line} in {text}");
            }
            text
        };
        let text = scraped(3, 1);
        assert!(!text.contains("service=\"memory\""), "{text}");
        *counts.lock().expect("counts") = (10, 4);
        scraped(10, 4);
    }
}
