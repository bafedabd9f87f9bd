//! The gRPC face of the payment service: translates and delegates; every
//! error becomes a status in [`to_status`].

use ordermesh_domain::{Currency, Money};
use ordermesh_proto::common::v1::Money as ProtoMoney;
use ordermesh_proto::payment::v1::payment_service_server::PaymentService;
use ordermesh_proto::payment::v1::{
    GetPaymentRequest, Payment as ProtoPayment, PaymentStatus as ProtoStatus,
    ProcessPaymentRequest, RefundPaymentRequest,
};
use ordermesh_runtime::status::{database_error, with_reason};
use tonic::{Code, Request, Response, Status};

use crate::domain::{Charge, Payment, PaymentError, PaymentStatus};
use crate::service::{Payments, ServiceError};

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
        let message = request.into_inner();
        let amount = match message.amount {
            None => None,
            Some(money) => Some(money_from_proto(&money).map_err(|e| to_status(e.into()))?),
        };
        let charge = Charge::parse(message.order_id, amount, &message.payment_method)
            .map_err(|e| to_status(e.into()))?;
        let payment = self.payments.process(charge).await.map_err(to_status)?;
        Ok(Response::new(to_proto(&payment)))
    }

    async fn refund_payment(
        &self,
        request: Request<RefundPaymentRequest>,
    ) -> Result<Response<ProtoPayment>, Status> {
        let payment = self
            .payments
            .refund(&request.get_ref().order_id)
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

/// The one place a payment error becomes a gRPC status.
pub fn to_status(error: ServiceError) -> Status {
    let message = error.to_string();
    match error {
        ServiceError::Payment(error) => match error {
            PaymentError::Invalid(_) => Status::invalid_argument(message),
            PaymentError::ProcessorUnavailable => {
                with_reason(Code::Unavailable, "PROCESSOR_UNAVAILABLE", message, [])
            }
            PaymentError::Conflict { order_id, .. } => with_reason(
                Code::AlreadyExists,
                "PAYMENT_CONFLICT",
                message,
                [("order_id".to_owned(), order_id)],
            ),
            PaymentError::Voided(order_id) => with_reason(
                Code::FailedPrecondition,
                "PAYMENT_VOIDED",
                message,
                [("order_id".to_owned(), order_id)],
            ),
            PaymentError::NotFound(order_id) => with_reason(
                Code::NotFound,
                "PAYMENT_NOT_FOUND",
                message,
                [("order_id".to_owned(), order_id)],
            ),
        },
        ServiceError::Store { context, source } => database_error(context, &source),
    }
}

fn money_from_proto(money: &ProtoMoney) -> Result<Money, PaymentError> {
    let currency = Currency::parse(&money.currency_code)
        .map_err(|e| PaymentError::Invalid(format!("amount.currency_code: {e}")))?;
    Ok(Money::new(currency, money.minor_units))
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
        amount: Some(ProtoMoney {
            currency_code: payment.amount.currency.as_str().to_owned(),
            minor_units: payment.amount.minor_units,
        }),
        status: status.into(),
        decline_reason: payment.decline_reason.clone().unwrap_or_default(),
        create_time: Some(timestamp(payment.created_at_ms)),
        update_time: Some(timestamp(payment.updated_at_ms)),
    }
}

fn timestamp(millis: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: i32::try_from(millis.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}
