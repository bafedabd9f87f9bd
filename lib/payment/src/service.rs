//! The payment use cases, apart from how they travel.

use ordermesh_domain::{Currency, Money};
use std::sync::Arc;

use ordermesh_domain::{Describe, ErrorDescription};
use ordermesh_runtime::metrics::Metrics;
use ordermesh_storage::{StoreError, failed as store_error, now_millis};

use crate::domain::{self, Charge, Payment, PaymentError, PaymentStatus};
use crate::store::{PaymentStore, StoreFailure, Stored};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Payment(#[from] PaymentError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Describe for ServiceError {
    fn describe(&self) -> ErrorDescription {
        match self {
            ServiceError::Payment(error) => error.describe(),
            ServiceError::Store(error) => error.describe(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Payments {
    store: PaymentStore,
    decline_rate: f64,
    metrics: Arc<Metrics>,
}

impl Payments {
    pub fn new(store: PaymentStore, decline_rate: f64, metrics: Arc<Metrics>) -> Self {
        // Exported from the start, at 0.
        metrics
            .saga_stale_steps_refused_total
            .with_label_values(&["payment"]);
        Self {
            store,
            decline_rate,
            metrics,
        }
    }

    /// Charges the order once: a retry returns the first outcome, whatever
    /// the token or the random decline would say now.
    pub async fn process(
        &self,
        charge: Charge,
        fence: Option<i64>,
    ) -> Result<Payment, ServiceError> {
        let random_decline = self.decline_rate > 0.0 && rand::random::<f64>() < self.decline_rate;
        let (status, decline_reason) = match domain::decide(charge.method, random_decline) {
            Ok(outcome) => outcome,
            Err(error) => {
                // A retry of a charge already decided gets its outcome.
                if let Some(existing) = self
                    .store
                    .get(&charge.order_id)
                    .await
                    .map_err(store_error("reading a payment"))?
                {
                    return Ok(domain::replay(existing, &charge)?);
                }
                tracing::warn!(order_id = %charge.order_id, payment_method = %charge.method, "simulated processor error; nothing charged");
                return Err(error.into());
            }
        };
        let now = now_millis();
        let payment = Payment {
            payment_id: format!("pay_{}", uuid::Uuid::now_v7().simple()),
            order_id: charge.order_id.clone(),
            amount: charge.amount,
            status,
            decline_reason: decline_reason.map(str::to_owned),
            created_at_ms: now,
            updated_at_ms: now,
        };
        match self
            .store
            .insert(&payment, &charge.method.to_string(), fence)
            .await
            .map_err(|e| self.failed(e, &charge.order_id, "storing a payment"))?
        {
            Stored::New(payment) => {
                self.metrics
                    .payments_processed_total
                    .with_label_values(&[payment.status.as_str()])
                    .inc();
                tracing::info!(
                    order_id = %payment.order_id,
                    payment_id = %payment.payment_id,
                    amount = payment.amount.minor_units,
                    currency = %payment.amount.currency,
                    status = payment.status.as_str(),
                    decline_reason = payment.decline_reason.as_deref(),
                    payment_method = %charge.method,
                    "payment processed"
                );
                Ok(payment)
            }
            // A concurrent retry stored first.
            Stored::Existing(existing) => Ok(domain::replay(existing, &charge)?),
        }
    }

    pub async fn refund(
        &self,
        order_id: &str,
        fence: Option<i64>,
    ) -> Result<Payment, ServiceError> {
        ordermesh_domain::limits::check_id("order_id", order_id).map_err(PaymentError::Invalid)?;
        let now = now_millis();
        let void = Payment {
            payment_id: format!("pay_{}", uuid::Uuid::now_v7().simple()),
            order_id: order_id.to_owned(),
            amount: Money::zero(Currency::USD),
            status: PaymentStatus::Voided,
            decline_reason: None,
            created_at_ms: now,
            updated_at_ms: now,
        };
        let payment = self
            .store
            .refund(&void, now, fence)
            .await
            .map_err(|e| self.failed(e, order_id, "refunding a payment"))?;
        tracing::info!(
            order_id,
            status = payment.status.as_str(),
            amount = payment.amount.minor_units,
            "refund requested"
        );
        Ok(payment)
    }

    /// A store failure as the caller sees it; a stale saga step is counted.
    fn failed(&self, error: StoreFailure, order_id: &str, context: &'static str) -> ServiceError {
        match error {
            StoreFailure::Stale(stale) => {
                let refusal = PaymentError::StaleStep {
                    order_id: order_id.to_owned(),
                    sent: stale.sent,
                };
                tracing::warn!(order_id, reason = %refusal, "stale saga step refused");
                self.metrics
                    .saga_stale_steps_refused_total
                    .with_label_values(&["payment"])
                    .inc();
                refusal.into()
            }
            StoreFailure::Database(source) => store_error(context)(source).into(),
        }
    }

    pub async fn get(&self, order_id: &str) -> Result<Payment, ServiceError> {
        ordermesh_domain::limits::check_id("order_id", order_id).map_err(PaymentError::Invalid)?;
        self.store
            .get(order_id)
            .await
            .map_err(store_error("reading a payment"))?
            .ok_or_else(|| PaymentError::NotFound(order_id.to_owned()).into())
    }
}
