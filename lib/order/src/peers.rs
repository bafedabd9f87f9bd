//! The order service's calls to inventory and payment, and what each answer
//! means for the saga. Every call is keyed by the order id, so the mesh may
//! retry it; this code itself never retries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ordermesh_domain::{ErrorDescription, ErrorKind, Money, reasons};
use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh_proto::inventory::v1::{
    CommitReservationRequest, ListProductsRequest, ReleaseReservationRequest, ReservationItem,
    ReservationStatus, ReserveStockRequest,
};
use ordermesh_proto::payment::v1::payment_service_client::PaymentServiceClient;
use ordermesh_proto::payment::v1::{PaymentStatus, ProcessPaymentRequest, RefundPaymentRequest};
use ordermesh_runtime::AppContext;
use ordermesh_runtime::client::{GrpcClientSettings, PeerChannel, peer_channel};
use ordermesh_runtime::deadline::Deadline;
use ordermesh_runtime::status::describe_status;
use ordermesh_storage::fence;
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

use crate::domain::{FailureReason, Outcome, Step};
use crate::prices::PriceBook;
use crate::store::StoredOrder;

/// A product's price as the inventory quotes it.
#[derive(Clone, Debug)]
pub struct Quote {
    pub product_id: String,
    pub unit_price: Money,
}

#[derive(Clone, Debug)]
pub struct Peers {
    inventory: InventoryServiceClient<PeerChannel>,
    payment: PaymentServiceClient<PeerChannel>,
    call_timeout: Duration,
    prices: Arc<PriceBook>,
}

impl Peers {
    pub fn connect(
        inventory_url: &str,
        payment_url: &str,
        settings: &GrpcClientSettings,
        price_cache_ttl: Duration,
        context: &AppContext,
    ) -> anyhow::Result<Self> {
        let channel = |url| peer_channel("order", url, settings, context);
        Ok(Self {
            inventory: InventoryServiceClient::new(channel(inventory_url)?),
            payment: PaymentServiceClient::new(channel(payment_url)?),
            call_timeout: settings.default_call_timeout,
            prices: Arc::new(PriceBook::new(price_cache_ttl)),
        })
    }

    /// A saga step's request: the default timeout, and the lease's fencing
    /// number, by which inventory and payment refuse an older holder's steps.
    fn step<T>(&self, message: T, fence: i64) -> Request<T> {
        let mut request = self.request(message, None);
        request
            .metadata_mut()
            .insert(fence::METADATA_KEY, MetadataValue::from(fence));
        request
    }

    /// A request bounded by the caller's deadline, or the default timeout.
    fn request<T>(&self, message: T, deadline: Option<Deadline>) -> Request<T> {
        let mut request = Request::new(message);
        match deadline {
            Some(deadline) => deadline.apply(&mut request),
            None => request.set_timeout(self.call_timeout),
        }
        request
    }

    /// Current prices of `product_ids` (as of the price cache's time to
    /// live); unknown products are left out.
    pub async fn quote(
        &self,
        product_ids: &[String],
        deadline: Option<Deadline>,
    ) -> Result<Vec<Quote>, Status> {
        if let Some(quotes) = self.prices.fresh(product_ids, Instant::now()) {
            return Ok(quotes);
        }
        let asked = Instant::now();
        let quotes = self.list_prices(product_ids, deadline).await?;
        self.prices.remember(&quotes, asked);
        Ok(quotes)
    }

    /// The inventory's prices of `product_ids`, asked now.
    async fn list_prices(
        &self,
        product_ids: &[String],
        deadline: Option<Deadline>,
    ) -> Result<Vec<Quote>, Status> {
        let request = self.request(
            ListProductsRequest {
                page_size: i32::try_from(product_ids.len()).unwrap_or(i32::MAX),
                page_token: String::new(),
                product_ids: product_ids.to_vec(),
            },
            deadline,
        );
        let products = self
            .inventory
            .clone()
            .list_products(request)
            .await?
            .into_inner()
            .products;
        products
            .into_iter()
            .map(|product| {
                let unit_price = product.price.as_ref().and_then(|price| Money::try_from(price).ok()).ok_or_else(|| {
                    tracing::error!(product_id = %product.product_id, "inventory returned a product without a valid price");
                    Status::internal("the inventory returned a product without a valid price")
                })?;
                Ok(Quote {
                    product_id: product.product_id,
                    unit_price,
                })
            })
            .collect()
    }

    pub async fn reserve(&self, order: &StoredOrder, fence: i64) -> Outcome {
        let items = order
            .view
            .lines
            .iter()
            .map(|line| ReservationItem {
                product_id: line.product_id.clone(),
                quantity: line.quantity,
                unit_price: None,
            })
            .collect();
        let request = self.step(
            ReserveStockRequest {
                reservation_id: order.view.order_id.clone(),
                items,
            },
            fence,
        );
        match self.inventory.clone().reserve_stock(request).await {
            Ok(response) => match response.get_ref().status() {
                ReservationStatus::Reserved | ReservationStatus::Committed => Outcome::Reserved,
                other => {
                    // A replay of a reservation already given back holds
                    // nothing: fail (releasing again is harmless).
                    tracing::warn!(order_id = %order.view.order_id, status = ?other, "reserve answered a reservation that holds nothing");
                    Outcome::ReserveFailed {
                        reason: FailureReason::InventoryRejected,
                        maybe_reserved: true,
                    }
                }
            },
            Err(status) => reserve_failed(&order.view.order_id, &status),
        }
    }

    pub async fn charge(&self, order: &StoredOrder, fence: i64) -> Outcome {
        let request = self.step(
            ProcessPaymentRequest {
                order_id: order.view.order_id.clone(),
                amount: Some(order.view.total.into()),
                payment_method: order.payment_method.clone(),
            },
            fence,
        );
        match self.payment.clone().process_payment(request).await {
            Ok(response) => {
                let payment = response.into_inner();
                match payment.status() {
                    PaymentStatus::Succeeded => Outcome::Charged,
                    PaymentStatus::Declined => Outcome::ChargeFailed {
                        reason: FailureReason::from_decline(&payment.decline_reason),
                        maybe_charged: false,
                    },
                    other => {
                        tracing::warn!(order_id = %order.view.order_id, status = ?other, "payment answered an unexpected status");
                        Outcome::ChargeFailed {
                            reason: FailureReason::PaymentRejected,
                            maybe_charged: true,
                        }
                    }
                }
            }
            Err(status) => charge_failed(&order.view.order_id, &status),
        }
    }

    pub async fn commit(&self, order: &StoredOrder, fence: i64) -> Outcome {
        let request = self.step(
            CommitReservationRequest {
                reservation_id: order.view.order_id.clone(),
            },
            fence,
        );
        match self.inventory.clone().commit_reservation(request).await {
            Ok(response) if response.get_ref().status() == ReservationStatus::Committed => {
                Outcome::Committed
            }
            Ok(response) => {
                tracing::warn!(order_id = %order.view.order_id, status = ?response.get_ref().status(), "commit answered an unexpected status");
                Outcome::CommitRefused
            }
            Err(status) => commit_failed(&order.view.order_id, &status),
        }
    }

    /// What the saga makes of `step` failing with `status` without being
    /// called (a test's failpoint): the same as a real call failing so.
    pub fn failed_step(&self, step: Step, order: &StoredOrder, status: &Status) -> Outcome {
        let order_id = &order.view.order_id;
        match step {
            Step::Reserve => reserve_failed(order_id, status),
            Step::Charge => charge_failed(order_id, status),
            Step::Commit => commit_failed(order_id, status),
            Step::Compensate => {
                failure("compensate", order_id, status);
                Outcome::Compensated {
                    stock_released: !order.saga.compensate_stock,
                    payment_refunded: !order.saga.compensate_payment,
                }
            }
            Step::Done => Outcome::RetryLater,
        }
    }

    /// Releases stock and refunds or voids the payment, as the order's flags
    /// ask, both at once; reports which were acknowledged.
    pub async fn compensate(&self, order: &StoredOrder, fence: i64) -> Outcome {
        let order_id = &order.view.order_id;
        let release = async {
            if !order.saga.compensate_stock {
                return Acked::Yes;
            }
            let request = self.step(
                ReleaseReservationRequest {
                    reservation_id: order_id.clone(),
                },
                fence,
            );
            match self.inventory.clone().release_reservation(request).await {
                Ok(response) => Acked::from(released(order_id, response.get_ref().status())),
                Err(status) => Acked::failed(failure("release reservation", order_id, &status)),
            }
        };
        let refund = async {
            if !order.saga.compensate_payment {
                return Acked::Yes;
            }
            let request = self.step(
                RefundPaymentRequest {
                    order_id: order_id.clone(),
                },
                fence,
            );
            match self.payment.clone().refund_payment(request).await {
                Ok(response) => Acked::from(refunded(order_id, response.get_ref().status())),
                Err(status) => Acked::failed(failure("refund payment", order_id, &status)),
            }
        };
        let (stock_released, payment_refunded) = tokio::join!(release, refund);
        if stock_released == Acked::Fenced || payment_refunded == Acked::Fenced {
            return Outcome::Fenced;
        }
        Outcome::Compensated {
            stock_released: stock_released == Acked::Yes,
            payment_refunded: payment_refunded == Acked::Yes,
        }
    }
}

/// What one compensating call's answer means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Acked {
    Yes,
    No,
    /// Refused: a newer holder of the lease was seen.
    Fenced,
}

impl Acked {
    fn from(done: bool) -> Self {
        if done { Acked::Yes } else { Acked::No }
    }

    fn failed(failure: ErrorDescription) -> Self {
        if fenced(&failure) {
            Acked::Fenced
        } else {
            Acked::No
        }
    }
}

/// Whether a peer refused the step because a newer lease holder was seen.
fn fenced(failure: &ErrorDescription) -> bool {
    failure.reason.as_deref() == Some(reasons::STALE_SAGA_STEP)
}

/// Whether a release's answer means the order holds no stock: RELEASED
/// (a tombstone for an id never reserved included) or EXPIRED. Anything else
/// is retried.
fn released(order_id: &str, status: ReservationStatus) -> bool {
    let done = matches!(
        status,
        ReservationStatus::Released | ReservationStatus::Expired
    );
    if !done {
        tracing::warn!(order_id, status = ?status, "release answered a reservation still holding stock; retrying");
    }
    done
}

/// Whether a refund's answer means the order holds no charge: REFUNDED,
/// VOIDED or DECLINED. Anything else (SUCCEEDED) is retried.
fn refunded(order_id: &str, status: PaymentStatus) -> bool {
    let done = matches!(
        status,
        PaymentStatus::Refunded | PaymentStatus::Voided | PaymentStatus::Declined
    );
    if !done {
        tracing::warn!(order_id, status = ?status, "refund answered a payment still charged; retrying");
    }
    done
}

fn reserve_failed(order_id: &str, status: &Status) -> Outcome {
    let failure = failure("reserve stock", order_id, status);
    if fenced(&failure) {
        return Outcome::Fenced;
    }
    let reason = match (failure.kind, failure.reason.as_deref()) {
        (ErrorKind::FailedPrecondition, Some(reasons::OUT_OF_STOCK)) => {
            return Outcome::ReserveFailed {
                reason: FailureReason::OutOfStock,
                maybe_reserved: false,
            };
        }
        (ErrorKind::NotFound, _) => {
            return Outcome::ReserveFailed {
                reason: FailureReason::ProductUnavailable,
                maybe_reserved: false,
            };
        }
        (kind, _) if kind.outcome_unknown() => FailureReason::InventoryUnavailable,
        _ => FailureReason::InventoryRejected,
    };
    // Stock may be held: release it (idempotently) while failing.
    Outcome::ReserveFailed {
        reason,
        maybe_reserved: true,
    }
}

fn charge_failed(order_id: &str, status: &Status) -> Outcome {
    let failure = failure("charge payment", order_id, status);
    if fenced(&failure) {
        return Outcome::Fenced;
    }
    match (failure.kind, failure.reason.as_deref()) {
        // The processor failed and said nothing was charged.
        (ErrorKind::Unavailable, Some(reasons::PROCESSOR_UNAVAILABLE)) => Outcome::ChargeFailed {
            reason: FailureReason::PaymentProcessingError,
            maybe_charged: false,
        },
        (kind, _) if kind.outcome_unknown() => Outcome::ChargeFailed {
            reason: FailureReason::PaymentUnavailable,
            maybe_charged: true,
        },
        _ => Outcome::ChargeFailed {
            reason: FailureReason::PaymentRejected,
            maybe_charged: true,
        },
    }
}

fn commit_failed(order_id: &str, status: &Status) -> Outcome {
    let failure = failure("commit reservation", order_id, status);
    if fenced(&failure) {
        return Outcome::Fenced;
    }
    match failure.kind {
        ErrorKind::FailedPrecondition | ErrorKind::NotFound => Outcome::CommitRefused,
        _ => Outcome::RetryLater,
    }
}

/// What a peer's failed answer says, logged for the operator.
fn failure(call: &str, order_id: &str, status: &Status) -> ErrorDescription {
    let failure = describe_status(status);
    tracing::warn!(
        order_id,
        call,
        code = ?status.code(),
        reason = failure.reason.as_deref(),
        detail = status.message(),
        "downstream call failed"
    );
    failure
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compensation_is_done_only_when_its_answer_says_so() {
        assert!(released("o", ReservationStatus::Released));
        assert!(released("o", ReservationStatus::Expired));
        for holding in [
            ReservationStatus::Reserved,
            ReservationStatus::Committed,
            ReservationStatus::Unspecified,
        ] {
            assert!(!released("o", holding), "{holding:?} is retried");
        }
        for done in [
            PaymentStatus::Refunded,
            PaymentStatus::Voided,
            PaymentStatus::Declined,
        ] {
            assert!(refunded("o", done), "{done:?}");
        }
        assert!(!refunded("o", PaymentStatus::Succeeded), "still charged");
        assert!(!refunded("o", PaymentStatus::Unspecified));
    }

    #[test]
    fn a_stale_step_refusal_stops_the_saga_whatever_the_step() {
        let stale = ordermesh_runtime::status::described(
            &ErrorDescription::new(ErrorKind::Aborted, "newer holder")
                .with_reason(reasons::STALE_SAGA_STEP),
        );
        assert_eq!(reserve_failed("o", &stale), Outcome::Fenced);
        assert_eq!(charge_failed("o", &stale), Outcome::Fenced);
        assert_eq!(commit_failed("o", &stale), Outcome::Fenced);
        assert_eq!(Acked::failed(describe_status(&stale)), Acked::Fenced);
        let other = Status::aborted("something else");
        assert_ne!(charge_failed("o", &other), Outcome::Fenced);
        assert_eq!(Acked::failed(describe_status(&other)), Acked::No);
    }
}
