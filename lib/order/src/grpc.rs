//! The gRPC face of the order service: translates messages and delegates to
//! [`Orders`]; errors describe themselves and become statuses in
//! `status::to_status`.

use futures::StreamExt;
use ordermesh_proto::convert::timestamp;
use ordermesh_proto::order::v1::order_service_server::OrderService;
use ordermesh_proto::order::v1::{
    CancelOrderRequest, CreateOrderRequest, GetOrderRequest, ListOrdersRequest, ListOrdersResponse,
    Order, OrderItem, OrderStatus as ProtoStatus, WatchOrderRequest,
};
use ordermesh_runtime::deadline::Deadline;
use ordermesh_runtime::status::{reply, to_status};
use tonic::{Request, Response, Status};

use crate::domain::{NewOrder, OrderStatus, OrderView};
use crate::service::{OrderError, Orders};

/// The gRPC metadata key of a client's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

pub struct OrderGrpc {
    orders: Orders,
}

impl OrderGrpc {
    pub fn new(orders: Orders) -> Self {
        Self { orders }
    }
}

type WatchStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Order, Status>> + Send>>;

#[tonic::async_trait]
impl OrderService for OrderGrpc {
    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<Order>, Status> {
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
        let items = message
            .items
            .into_iter()
            .map(|item| (item.product_id, item.quantity))
            .collect();
        let new_order = NewOrder::parse(
            message.customer_id,
            items,
            &message.payment_method,
            idempotency_key,
        )
        .map_err(|e| to_status(OrderError::from(e)))?;
        reply(self.orders.create(new_order, deadline).await, |o| {
            to_proto(&o)
        })
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        reply(self.orders.get(&request.get_ref().order_id).await, |o| {
            to_proto(&o)
        })
    }

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        let message = request.into_inner();
        let page = self
            .orders
            .list(&message.customer_id, message.page_size, &message.page_token)
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
        let deadline = Deadline::from_metadata(request.metadata());
        let cancelled = self
            .orders
            .cancel(&request.get_ref().order_id, deadline)
            .await;
        reply(cancelled, |o| to_proto(&o))
    }

    type WatchOrderStream = WatchStream;

    async fn watch_order(
        &self,
        request: Request<WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        let stream = self
            .orders
            .watch(&request.get_ref().order_id)
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
