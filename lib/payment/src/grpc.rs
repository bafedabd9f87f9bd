//! The gRPC face of the payment service: translates and delegates; errors
//! describe themselves and become statuses in `status::to_status`.

use ordermesh_domain::Money;
use ordermesh_proto::convert::timestamp;
use ordermesh_proto::payment::v1::payment_service_server::PaymentService;
use ordermesh_proto::payment::v1::{
    GetPaymentRequest, Payment as ProtoPayment, PaymentStatus as ProtoStatus,
    ProcessPaymentRequest, RefundPaymentRequest,
};
use ordermesh_runtime::status::to_status;
use ordermesh_storage::fence;
use tonic::{Request, Response, Status};

use crate::domain::{Charge, Payment, PaymentError, PaymentStatus};
use crate::service::Payments;

pub struct PaymentGrpc {
    payments: Payments,
}

impl PaymentGrpc {
    pub fn new(payments: Payments) -> Self {
        Self { payments }
    }
}

#[tonic::async_trait]
impl PaymentService for PaymentGrpc {
    async fn process_payment(
        &self,
        request: Request<ProcessPaymentRequest>,
    ) -> Result<Response<ProtoPayment>, Status> {
        let fence = fence_of(&request)?;
        let message = request.into_inner();
        let amount = message
            .amount
            .as_ref()
            .map(Money::try_from)
            .transpose()
            .map_err(|e| to_status(PaymentError::Invalid(format!("amount.currency_code: {e}"))))?;
        let charge =
            Charge::parse(message.order_id, amount, &message.payment_method).map_err(to_status)?;
        let payment = self
            .payments
            .process(charge, fence)
            .await
            .map_err(to_status)?;
        Ok(Response::new(to_proto(&payment)))
    }

    async fn refund_payment(
        &self,
        request: Request<RefundPaymentRequest>,
    ) -> Result<Response<ProtoPayment>, Status> {
        let payment = self
            .payments
            .refund(&request.get_ref().order_id, fence_of(&request)?)
            .await
            .map_err(to_status)?;
        Ok(Response::new(to_proto(&payment)))
    }

    async fn get_payment(
        &self,
        request: Request<GetPaymentRequest>,
    ) -> Result<Response<ProtoPayment>, Status> {
        let payment = self
            .payments
            .get(&request.get_ref().order_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(to_proto(&payment)))
    }
}

/// The saga's fencing number the request carries, if any.
fn fence_of<T>(request: &Request<T>) -> Result<Option<i64>, Status> {
    let value = request
        .metadata()
        .get(fence::METADATA_KEY)
        .map(|value| value.to_str().unwrap_or("\u{fffd}"));
    fence::parse(value).map_err(|message| to_status(PaymentError::Invalid(message)))
}

pub fn to_proto(payment: &Payment) -> ProtoPayment {
    let status = match payment.status {
        PaymentStatus::Succeeded => ProtoStatus::Succeeded,
        PaymentStatus::Declined => ProtoStatus::Declined,
        PaymentStatus::Refunded => ProtoStatus::Refunded,
        PaymentStatus::Voided => ProtoStatus::Voided,
    };
    ProtoPayment {
        payment_id: payment.payment_id.clone(),
        order_id: payment.order_id.clone(),
        amount: Some(payment.amount.into()),
        status: status.into(),
        decline_reason: payment.decline_reason.clone().unwrap_or_default(),
        create_time: Some(timestamp(payment.created_at_ms)),
        update_time: Some(timestamp(payment.updated_at_ms)),
    }
}
