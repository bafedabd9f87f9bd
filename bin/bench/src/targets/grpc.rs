//! The gRPC drivers: the order and inventory services directly, and the
//! bare echo RPC. Requests are spread over a few HTTP/2 connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::BoxFuture;
use ordermesh_proto::inventory::v1::ListProductsRequest;
use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh_proto::order::v1::order_service_client::OrderServiceClient;
use ordermesh_proto::order::v1::{CreateOrderRequest, GetOrderRequest, Order};
use tonic::transport::Channel;

use super::Workload;
use super::orders::{check_created, order_spec, pick_order};
use crate::echo::proto::EchoMessage;
use crate::echo::proto::echo_service_client::EchoServiceClient;
use crate::load::Driver;
use crate::stats::Outcome;

pub struct GrpcDriver {
    pub orders: Vec<OrderServiceClient<Channel>>,
    pub inventory: Vec<InventoryServiceClient<Channel>>,
    pub next: AtomicUsize,
    pub order_ids: Arc<Vec<String>>,
    pub workload: Workload,
    pub run_id: String,
    pub authorization: Option<tonic::metadata::AsciiMetadataValue>,
}

impl GrpcDriver {
    pub fn create_request(&self, seq: u64) -> tonic::Request<CreateOrderRequest> {
        let mut request = self.signed(order_spec(seq).grpc());
        if let Ok(key) = format!("bench-{}-{seq}", self.run_id).parse() {
            request.metadata_mut().insert("idempotency-key", key);
        }
        request
    }

    /// A request carrying the bench's token, if it has one.
    pub fn signed<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        request
    }
}

fn grpc_error(status: &tonic::Status) -> String {
    format!("grpc {:?}", status.code())
}

impl Driver for GrpcDriver {
    fn call(&self, seq: u64) -> BoxFuture<'static, Outcome> {
        let connection = self.next.fetch_add(1, Ordering::Relaxed);
        match self.workload.pick(seq) {
            Workload::CreateOrder => {
                let mut client = self.orders[connection % self.orders.len()].clone();
                let request = self.create_request(seq);
                Box::pin(async move {
                    let order: Order = client
                        .create_order(request)
                        .await
                        .map_err(|s| grpc_error(&s))?
                        .into_inner();
                    check_created(order.status(), &order.failure_reason)
                })
            }
            Workload::GetOrder => {
                let mut client = self.orders[connection % self.orders.len()].clone();
                let request = self.signed(GetOrderRequest {
                    order_id: pick_order(&self.order_ids, seq),
                });
                Box::pin(async move {
                    client
                        .get_order(request)
                        .await
                        .map(drop)
                        .map_err(|s| grpc_error(&s))
                })
            }
            Workload::ListProducts | Workload::Mixed | Workload::Echo => {
                let Some(client) = self.inventory.get(connection % self.inventory.len().max(1))
                else {
                    return Box::pin(async { Err("no inventory connection".to_owned()) });
                };
                let mut client = client.clone();
                Box::pin(async move {
                    client
                        .list_products(ListProductsRequest::default())
                        .await
                        .map(drop)
                        .map_err(|s| grpc_error(&s))
                })
            }
        }
    }
}

pub struct EchoDriver {
    pub clients: Vec<EchoServiceClient<Channel>>,
    pub next: AtomicUsize,
}

/// About the size of a GetOrder request (an order id).
const ECHO_PAYLOAD: &[u8] = b"ord_0196a3b1c2d37e4f8a9b0c1d2e3f4a5b";

impl Driver for EchoDriver {
    fn call(&self, _seq: u64) -> BoxFuture<'static, Outcome> {
        let connection = self.next.fetch_add(1, Ordering::Relaxed);
        let mut client = self.clients[connection % self.clients.len()].clone();
        Box::pin(async move {
            client
                .echo(EchoMessage {
                    payload: ECHO_PAYLOAD.to_vec(),
                })
                .await
                .map(drop)
                .map_err(|s| grpc_error(&s))
        })
    }
}
