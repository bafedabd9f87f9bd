//! A stream of orders from concurrent clients for the fault tests: each
//! order has its own idempotency key and is retried with it until taken.
//! It runs until told to stop, so a fault injected in the middle always
//! lands in it, and it is bounded (orders per client, tries per order).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::harness::{eventually, order_client, order_request};

const MAX_ORDERS_PER_CLIENT: usize = 200;
const TRIES_PER_ORDER: usize = 50;

/// What the clients saw, in the order they saw it.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// Ids of the orders taken.
    pub taken: Vec<String>,
    /// The status of every call that failed (each retried).
    pub errors: Vec<tonic::Code>,
    /// The failure reason of each taken order that ended FAILED.
    pub failure_reasons: Vec<String>,
    /// Keys given up on after every try failed.
    pub abandoned: Vec<String>,
}

impl LoadReport {
    /// Orders the outage failed (a peer unavailable), not the customer.
    pub fn failed_by_outage(&self) -> usize {
        self.failure_reasons
            .iter()
            .filter(|reason| reason.ends_with("_UNAVAILABLE"))
            .count()
    }

    /// Signs of a fault seen after `before` was taken: failed calls, and
    /// orders failed by an unavailable peer.
    pub fn fault_signs_since(&self, before: &LoadReport) -> usize {
        let errors = self.errors.len() - before.errors.len();
        let outages = self.failed_by_outage() - before.failed_by_outage();
        errors + outages
    }

    pub fn assert_every_key_taken(&self) {
        assert!(
            self.abandoned.is_empty(),
            "orders never taken: {:?}",
            self.abandoned
        );
    }
}

struct Shared {
    stop: AtomicBool,
    report: Mutex<LoadReport>,
}

pub struct Load {
    shared: Arc<Shared>,
    clients: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `clients` clients placing orders at the order service.
    pub fn start(order_addr: SocketAddr, clients: usize, tag: &str) -> Self {
        // Longer than the server's wait for a database connection (5 s),
        // so an outage answers UNAVAILABLE rather than the deadline.
        Self::start_with_timeout(order_addr, clients, tag, Duration::from_secs(8))
    }

    /// As [`Load::start`], each call with its own deadline of `timeout`:
    /// shorter than a fault, so a call that hangs in it ends
    /// DEADLINE_EXCEEDED and is retried.
    pub fn start_with_timeout(
        order_addr: SocketAddr,
        clients: usize,
        tag: &str,
        timeout: Duration,
    ) -> Self {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            report: Mutex::default(),
        });
        let clients = (0..clients)
            .map(|client| {
                let shared = shared.clone();
                let tag = format!("{tag}-{client}");
                tokio::spawn(async move { place_orders(order_addr, &tag, timeout, &shared).await })
            })
            .collect();
        Self { shared, clients }
    }

    pub fn taken(&self) -> usize {
        self.shared.report.lock().unwrap().taken.len()
    }

    pub fn report_so_far(&self) -> LoadReport {
        self.shared.report.lock().unwrap().clone()
    }

    /// Waits until `count` orders in all were taken.
    pub async fn wait_taken(&self, count: usize, limit: Duration) {
        eventually(limit, &format!("{count} orders taken"), || {
            let done = self.taken() >= count;
            async move { done.then_some(()) }
        })
        .await;
    }

    /// Stops the clients after the order each is placing, and reports.
    pub async fn finish(self) -> LoadReport {
        self.shared.stop.store(true, Ordering::SeqCst);
        for client in self.clients {
            client.await.expect("a load client ends");
        }
        self.shared.report.lock().unwrap().clone()
    }
}

async fn place_orders(order_addr: SocketAddr, tag: &str, timeout: Duration, shared: &Shared) {
    let channel = tonic::transport::Channel::from_shared(format!("http://{order_addr}"))
        .expect("a valid URL")
        .connect_timeout(Duration::from_secs(1))
        .connect_lazy();
    let mut orders = order_client(channel);
    for i in 0..MAX_ORDERS_PER_CLIENT {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let key = format!("{tag}-{i}");
        let token = if i % 5 == 4 {
            "pm_card_chargeDeclined"
        } else {
            "pm_card_visa"
        };
        let product = ["sku-filter", "sku-mug", "sku-espresso"][i % 3];
        let mut taken = false;
        for _ in 0..TRIES_PER_ORDER {
            let mut request = order_request(tag, &[(product, 1)], token);
            request
                .metadata_mut()
                .insert("idempotency-key", key.parse().expect("ASCII"));
            request.set_timeout(timeout);
            match orders.create_order(request).await {
                Ok(order) => {
                    let order = order.into_inner();
                    let mut report = shared.report.lock().unwrap();
                    if !order.failure_reason.is_empty() {
                        report.failure_reasons.push(order.failure_reason.clone());
                    }
                    report.taken.push(order.order_id);
                    taken = true;
                    break;
                }
                Err(status) => {
                    // tonic's client ends a call past its own timeout with
                    // CANCELLED "Timeout expired": the deadline, seen first
                    // by this side.
                    let code = if ordermesh_runtime::status::is_timeout(&status) {
                        tonic::Code::DeadlineExceeded
                    } else {
                        status.code()
                    };
                    shared.report.lock().unwrap().errors.push(code);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        if !taken {
            shared.report.lock().unwrap().abandoned.push(key);
        }
    }
}
