//! The clients of a run: each a customer of its own who places orders
//! (each with an idempotency key, retried with it until answered), cancels
//! orders it saw confirmed and reads orders back, one operation at a time,
//! every one recorded in the history.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ordermesh_proto::order::v1::{CancelOrderRequest, GetOrderRequest, Order};
use ordermesh_testkit::tokens;

use super::history::{History, Kind, Op, Type};
use super::nemesis::Rng;
use crate::harness::{OrderClient, authorize, order_request};

const PRODUCTS: [&str; 3] = ["sku-filter", "sku-mug", "sku-espresso"];
/// Each call's deadline: a call that hangs in a fault ends within it.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Tries of one create (the same key) before it is left undecided.
const TRIES: usize = 8;
/// Bounds on one client's work, whatever the run's length.
const MAX_OPS: usize = 20_000;

/// The customer that client `client` places orders as.
pub fn customer(client: usize) -> String {
    format!("chaos-{client}")
}

/// Whether a failed call certainly did nothing: refused before it ran, or
/// for what the request says. Everything else (deadlines, resets, an
/// unavailable peer or database) may have happened.
fn definite(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::NotFound
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::AlreadyExists
            | Code::OutOfRange
            | Code::ResourceExhausted
    )
}

/// An order this client saw acknowledged, and its status as last seen.
struct Known {
    order_id: String,
    status: String,
}

struct Client {
    id: usize,
    customer: String,
    orders: OrderClient,
    history: Arc<History>,
    rng: Rng,
    known: Vec<Known>,
}

/// Runs client `id` until `stop` is set (it finishes its operation first).
pub async fn run(
    id: usize,
    seed: u64,
    orders: OrderClient,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
) {
    let mut client = Client {
        id,
        customer: customer(id),
        orders,
        history,
        rng: Rng::new(seed ^ (0x5EED_0000 + id as u64)),
        known: Vec::new(),
    };
    let mut created = 0;
    for _ in 0..MAX_OPS {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let confirmed: Vec<usize> = (0..client.known.len())
            .filter(|i| client.known[*i].status == "CONFIRMED")
            .collect();
        match client.rng.below(100) {
            0..60 => {
                client.create(created, &stop).await;
                created += 1;
            }
            60..80 if !confirmed.is_empty() => {
                let at = *client.rng.pick(&confirmed);
                client.cancel(at).await;
            }
            _ if !client.known.is_empty() => {
                let at = client.rng.below(client.known.len() as u64) as usize;
                client.read(at).await;
            }
            _ => {}
        }
        tokio::time::sleep(client.rng.millis(20, 80)).await;
    }
}

impl Client {
    fn op(&self, kind: Kind, kind_type: Type, key: &str) -> Op {
        Op {
            at_ms: 0,
            client: self.id,
            kind,
            kind_type,
            customer: self.customer.clone(),
            key: key.to_owned(),
            order_id: None,
            status: None,
            error: None,
        }
    }

    fn invoke(&self, kind: Kind, key: &str, order_id: Option<&str>) {
        let mut op = self.op(kind, Type::Invoke, key);
        op.order_id = order_id.map(str::to_owned);
        self.history.record(op);
    }

    /// Records the completion of an operation on `key`; the order's id and
    /// status when it is known.
    fn complete(&mut self, kind: Kind, key: &str, result: Result<Order, tonic::Status>) {
        let op = match result {
            Ok(order) => {
                let status = order
                    .status()
                    .as_str_name()
                    .trim_start_matches("ORDER_STATUS_")
                    .to_owned();
                match self.known.iter_mut().find(|k| k.order_id == order.order_id) {
                    Some(known) => known.status.clone_from(&status),
                    None => self.known.push(Known {
                        order_id: order.order_id.clone(),
                        status: status.clone(),
                    }),
                }
                let mut op = self.op(kind, Type::Ok, key);
                op.order_id = Some(order.order_id);
                op.status = Some(status);
                op
            }
            Err(status) => {
                let kind_type = if definite(status.code()) {
                    Type::Fail
                } else {
                    Type::Info
                };
                let mut op = self.op(kind, kind_type, key);
                op.error = Some(format!("{:?}: {}", status.code(), status.message()));
                if kind != Kind::Create {
                    op.order_id = Some(key.to_owned());
                }
                op
            }
        };
        self.history.record(op);
    }

    /// Places order number `n`, retrying with its key until it is answered
    /// or the run stops.
    async fn create(&mut self, n: usize, stop: &AtomicBool) {
        let key = format!("k{n}");
        let product = *self.rng.pick(&PRODUCTS);
        let quantity = 1 + self.rng.below(2) as i32;
        let method = if self.rng.below(6) == 0 {
            "pm_card_chargeDeclined"
        } else {
            "pm_card_visa"
        };
        for _ in 0..TRIES {
            let mut request = order_request(&self.customer, &[(product, quantity)], method);
            request
                .metadata_mut()
                .insert("idempotency-key", key.parse().expect("ASCII"));
            request.set_timeout(CALL_TIMEOUT);
            self.invoke(Kind::Create, &key, None);
            let result = self
                .orders
                .create_order(request)
                .await
                .map(tonic::Response::into_inner);
            let answered = result.is_ok();
            self.complete(Kind::Create, &key, result);
            if answered || stop.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn cancel(&mut self, at: usize) {
        let order_id = self.known[at].order_id.clone();
        let mut request = tonic::Request::new(CancelOrderRequest {
            order_id: order_id.clone(),
        });
        authorize(&mut request, &tokens::customer(&self.customer));
        request.set_timeout(CALL_TIMEOUT);
        self.invoke(Kind::Cancel, &order_id, Some(&order_id));
        let result = self
            .orders
            .cancel_order(request)
            .await
            .map(tonic::Response::into_inner);
        self.complete(Kind::Cancel, &order_id, result);
    }

    async fn read(&mut self, at: usize) {
        let order_id = self.known[at].order_id.clone();
        let mut request = tonic::Request::new(GetOrderRequest {
            order_id: order_id.clone(),
        });
        authorize(&mut request, &tokens::customer(&self.customer));
        request.set_timeout(CALL_TIMEOUT);
        self.invoke(Kind::Read, &order_id, Some(&order_id));
        let result = self
            .orders
            .get_order(request)
            .await
            .map(tonic::Response::into_inner);
        self.complete(Kind::Read, &order_id, result);
    }
}
