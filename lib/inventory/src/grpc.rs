//! The gRPC face of the inventory: translates and delegates; errors
//! describe themselves and become statuses in `status::to_status`.

use std::pin::Pin;

use futures::Stream;
use ordermesh_domain::{ErrorDescription, ErrorKind, reasons};
use ordermesh_proto::convert::timestamp;
use ordermesh_proto::inventory::v1::inventory_service_server::InventoryService;
use ordermesh_proto::inventory::v1::{
    AdjustStockRequest, CommitReservationRequest, GetProductRequest, ListProductsRequest,
    ListProductsResponse, Product as ProtoProduct, ReleaseReservationRequest,
    Reservation as ProtoReservation, ReservationItem, ReservationStatus as ProtoStatus,
    ReserveStockRequest, WatchStockRequest,
};
use ordermesh_runtime::shutdown::Shutdown;
use ordermesh_runtime::status::{described, to_status};
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status};

use crate::domain::{InventoryError, Product, Reservation, ReservationStatus, ReserveRequest};
use crate::service::Inventory;
use ordermesh_storage::fence;

pub struct InventoryGrpc {
    inventory: Inventory,
    shutdown: Shutdown,
    max_stream_lifetime: std::time::Duration,
}

impl InventoryGrpc {
    pub fn new(
        inventory: Inventory,
        shutdown: Shutdown,
        max_stream_lifetime: std::time::Duration,
    ) -> Self {
        Self {
            inventory,
            shutdown,
            max_stream_lifetime,
        }
    }
}

type StockStream = Pin<Box<dyn Stream<Item = Result<ProtoProduct, Status>> + Send>>;

#[tonic::async_trait]
impl InventoryService for InventoryGrpc {
    async fn list_products(
        &self,
        request: Request<ListProductsRequest>,
    ) -> Result<Response<ListProductsResponse>, Status> {
        let message = request.into_inner();
        let (products, next_page_token) = self
            .inventory
            .products(message.page_size, &message.page_token, &message.product_ids)
            .await
            .map_err(to_status)?;
        Ok(Response::new(ListProductsResponse {
            products: products.iter().map(product_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn get_product(
        &self,
        request: Request<GetProductRequest>,
    ) -> Result<Response<ProtoProduct>, Status> {
        let product = self
            .inventory
            .product(&request.get_ref().product_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(product_to_proto(&product)))
    }

    async fn reserve_stock(
        &self,
        request: Request<ReserveStockRequest>,
    ) -> Result<Response<ProtoReservation>, Status> {
        let fence = fence_of(&request)?;
        let message = request.into_inner();
        let items = message
            .items
            .into_iter()
            .map(|item| (item.product_id, item.quantity))
            .collect();
        let request = ReserveRequest::parse(message.reservation_id, items).map_err(to_status)?;
        let reservation = self
            .inventory
            .reserve(request, fence)
            .await
            .map_err(to_status)?;
        Ok(Response::new(reservation_to_proto(&reservation)))
    }

    async fn commit_reservation(
        &self,
        request: Request<CommitReservationRequest>,
    ) -> Result<Response<ProtoReservation>, Status> {
        let reservation = self
            .inventory
            .commit(&request.get_ref().reservation_id, fence_of(&request)?)
            .await
            .map_err(to_status)?;
        Ok(Response::new(reservation_to_proto(&reservation)))
    }

    async fn release_reservation(
        &self,
        request: Request<ReleaseReservationRequest>,
    ) -> Result<Response<ProtoReservation>, Status> {
        let reservation = self
            .inventory
            .release(&request.get_ref().reservation_id, fence_of(&request)?)
            .await
            .map_err(to_status)?;
        Ok(Response::new(reservation_to_proto(&reservation)))
    }

    async fn adjust_stock(
        &self,
        request: Request<AdjustStockRequest>,
    ) -> Result<Response<ProtoProduct>, Status> {
        let message = request.into_inner();
        let product = self
            .inventory
            .adjust(&message.product_id, message.delta)
            .await
            .map_err(to_status)?;
        Ok(Response::new(product_to_proto(&product)))
    }

    type WatchStockStream = StockStream;

    async fn watch_stock(
        &self,
        request: Request<WatchStockRequest>,
    ) -> Result<Response<Self::WatchStockStream>, Status> {
        let only = request.into_inner().product_ids;
        // Subscribe before the snapshot so no change falls between them.
        let mut changes = self.inventory.subscribe();
        let inventory = self.inventory.clone();
        let first = snapshot(&inventory, &only).await?;
        let shutdown = self.shutdown.clone();
        let lifetime = self.max_stream_lifetime;
        let stream = async_stream::stream! {
            let ends = tokio::time::sleep(lifetime);
            tokio::pin!(ends);
            for product in first {
                yield Ok(product);
            }
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = &mut ends => {
                        yield Err(described(&ErrorDescription::new(
                            ErrorKind::DeadlineExceeded,
                            format!("the stream reached its longest life ({}); watch again to go on", humantime::format_duration(lifetime)),
                        ).with_reason(reasons::STREAM_LIFETIME)));
                        return;
                    }
                    change = changes.recv() => match change {
                        Ok(product) => {
                            if only.is_empty() || only.contains(&product.product_id) {
                                yield Ok(product_to_proto(&product));
                            }
                        }
                        // Too slow to keep up: send everything afresh.
                        Err(RecvError::Lagged(_)) => match snapshot(&inventory, &only).await {
                            Ok(products) => for product in products { yield Ok(product); },
                            Err(status) => { yield Err(status); return; }
                        },
                        Err(RecvError::Closed) => return,
                    },
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }
}

async fn snapshot(inventory: &Inventory, only: &[String]) -> Result<Vec<ProtoProduct>, Status> {
    let mut products = Vec::new();
    let mut token = String::new();
    loop {
        let (page, next) = inventory
            .products(0, &token, only)
            .await
            .map_err(to_status)?;
        products.extend(page.iter().map(product_to_proto));
        if next.is_empty() {
            return Ok(products);
        }
        token = next;
    }
}

/// The saga's fencing number the request carries, if any.
fn fence_of<T>(request: &Request<T>) -> Result<Option<i64>, Status> {
    let value = request
        .metadata()
        .get(fence::METADATA_KEY)
        .map(|value| value.to_str().unwrap_or("\u{fffd}"));
    fence::parse(value).map_err(|message| to_status(InventoryError::Invalid(message)))
}

pub fn product_to_proto(product: &Product) -> ProtoProduct {
    ProtoProduct {
        product_id: product.product_id.clone(),
        name: product.name.clone(),
        price: Some(product.price.into()),
        available: product.available,
    }
}

pub fn reservation_to_proto(reservation: &Reservation) -> ProtoReservation {
    let status = match reservation.status {
        ReservationStatus::Reserved => ProtoStatus::Reserved,
        ReservationStatus::Committed => ProtoStatus::Committed,
        ReservationStatus::Released => ProtoStatus::Released,
        ReservationStatus::Expired => ProtoStatus::Expired,
    };
    ProtoReservation {
        reservation_id: reservation.reservation_id.clone(),
        status: status.into(),
        items: reservation
            .items
            .iter()
            .map(|item| ReservationItem {
                product_id: item.product_id.clone(),
                quantity: item.quantity,
                unit_price: Some(item.unit_price.into()),
            })
            .collect(),
        expire_time: (reservation.expires_at_ms > 0).then(|| timestamp(reservation.expires_at_ms)),
    }
}
