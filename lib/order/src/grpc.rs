//! The gRPC face of the order service: translates messages and delegates to
//! [`Orders`]; errors describe themselves and become statuses in
//! `status::to_status`.

use futures::StreamExt;
use ordermesh_identity::Verifier;
use ordermesh_proto::convert::timestamp;
use ordermesh_proto::order::v1::order_service_server::OrderService;
use ordermesh_proto::order::v1::{
    CancelOrderRequest, CreateOrderRequest, GetOrderRequest, ListOrdersRequest, ListOrdersResponse,
    Order, OrderItem, OrderStatus as ProtoStatus, WatchOrderRequest,
};
use ordermesh_runtime::deadline::Deadline;
use ordermesh_runtime::status::{reply, to_status};
use tonic::{Request, Response, Status};

use crate::domain::{Caller, OrderForm, OrderStatus, OrderView};
use crate::error::OrderError;
use crate::service::Orders;

/// The gRPC metadata key of a client's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

pub struct OrderGrpc {
    orders: Orders,
    verifier: Verifier,
}

impl OrderGrpc {
    pub fn new(orders: Orders, verifier: Verifier) -> Self {
        Self { orders, verifier }
    }

    /// Who is calling, by the bearer token in `authorization`; refused with
    /// UNAUTHENTICATED (or UNAVAILABLE when the issuer's keys cannot be had)
    /// without one that verifies. Every RPC asks, whoever the caller is.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        let identity = self
            .verifier
            .verify_authorization(header)
            .await
            .map_err(|refused| to_status(OrderError::from(refused)))?;
        Ok(Caller {
            subject: identity.subject,
            customer_id: identity.customer_id,
            admin: identity.admin,
        })
    }
}

type WatchStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Order, Status>> + Send>>;

#[tonic::async_trait]
impl OrderService for OrderGrpc {
    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        let caller = self.caller(&request).await?;
        let deadline = Deadline::from_metadata(request.metadata());
        let idempotency_key = match request.metadata().get(IDEMPOTENCY_KEY) {
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| {
                        Status::invalid_argument("idempotency-key must be printable ASCII")
                    })?
                    .to_owned(),
            ),
            None => None,
        };
        let message = request.into_inner();
        let form = OrderForm {
            customer_id: message.customer_id,
            items: message
                .items
                .into_iter()
                .map(|item| (item.product_id, item.quantity))
                .collect(),
            payment_method: message.payment_method,
            idempotency_key,
        };
        reply(self.orders.create(&caller, form, deadline).await, |o| {
            to_proto(&o)
        })
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        let caller = self.caller(&request).await?;
        let order = self.orders.get(&caller, &request.get_ref().order_id).await;
        reply(order, |o| to_proto(&o))
    }

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        let caller = self.caller(&request).await?;
        let message = request.into_inner();
        let page = self
            .orders
            .list(
                &caller,
                &message.customer_id,
                message.page_size,
                &message.page_token,
            )
            .await;
        reply(page, |(orders, next_page_token)| ListOrdersResponse {
            orders: orders.iter().map(to_proto).collect(),
            next_page_token,
        })
    }

    async fn cancel_order(
        &self,
        request: Request<CancelOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        let caller = self.caller(&request).await?;
        let deadline = Deadline::from_metadata(request.metadata());
        let cancelled = self
            .orders
            .cancel(&caller, &request.get_ref().order_id, deadline)
            .await;
        reply(cancelled, |o| to_proto(&o))
    }

    type WatchOrderStream = WatchStream;

    async fn watch_order(
        &self,
        request: Request<WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        let caller = self.caller(&request).await?;
        let stream = self
            .orders
            .watch(&caller, &request.get_ref().order_id)
            .await
            .map_err(to_status)?;
        let stream = stream.map(|item| item.map(|order| to_proto(&order)).map_err(to_status));
        Ok(Response::new(Box::pin(stream)))
    }
}

pub fn to_proto(order: &OrderView) -> Order {
    let status = match order.status {
        OrderStatus::Pending => ProtoStatus::Pending,
        OrderStatus::Confirmed => ProtoStatus::Confirmed,
        OrderStatus::Failed => ProtoStatus::Failed,
        OrderStatus::Cancelled => ProtoStatus::Cancelled,
    };
    Order {
        order_id: order.order_id.clone(),
        customer_id: order.customer_id.clone(),
        items: order
            .lines
            .iter()
            .map(|line| OrderItem {
                product_id: line.product_id.clone(),
                quantity: line.quantity,
                unit_price: Some(line.unit_price.into()),
            })
            .collect(),
        total: Some(order.total.into()),
        status: status.into(),
        failure_reason: order
            .failure_reason
            .map(|reason| reason.as_str().to_owned())
            .unwrap_or_default(),
        create_time: Some(timestamp(order.created_at_ms)),
        update_time: Some(timestamp(order.updated_at_ms)),
    }
}
