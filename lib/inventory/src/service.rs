//! The inventory's use cases, apart from how they travel. Each change is
//! announced to stock watchers after its transaction commits.

use std::time::Duration;

use ordermesh_domain::limits::{
    self as limits, FOREIGN_PAGE_TOKEN, MAX_ITEMS, MAX_PAGE_SIZE, check_id, split_page,
};
use std::sync::Arc;

use ordermesh_domain::{Describe, ErrorDescription};
use ordermesh_runtime::metrics::Metrics;
use ordermesh_storage::{StoreError, now_millis};
use tokio::sync::broadcast;

use crate::domain::{self, InventoryError, Product, Reservation, ReserveRequest};
use crate::store::{InventoryStore, Reserved, StoreFailure};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Rule(#[from] InventoryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Describe for ServiceError {
    fn describe(&self) -> ErrorDescription {
        match self {
            ServiceError::Rule(rule) => rule.describe(),
            ServiceError::Store(error) => error.describe(),
        }
    }
}

fn failed(context: &'static str) -> impl Fn(StoreFailure) -> ServiceError {
    move |error| match error {
        StoreFailure::Rule(rule) => ServiceError::Rule(rule),
        StoreFailure::Database(source) => StoreError { context, source }.into(),
    }
}

fn db(context: &'static str) -> impl Fn(sqlx::Error) -> ServiceError {
    move |source| StoreError { context, source }.into()
}

const DEFAULT_PAGE_SIZE: usize = 50;

#[derive(Clone, Debug)]
pub struct Inventory {
    store: InventoryStore,
    reservation_ttl: Duration,
    changes: broadcast::Sender<Product>,
    metrics: Arc<Metrics>,
}

impl Inventory {
    pub fn new(store: InventoryStore, reservation_ttl: Duration, metrics: Arc<Metrics>) -> Self {
        // Exported from the start, at 0.
        metrics
            .saga_stale_steps_refused_total
            .with_label_values(&["inventory"]);
        Self {
            store,
            reservation_ttl,
            changes: broadcast::channel(1024).0,
            metrics,
        }
    }

    /// Stock changes made by this replica, after they commit.
    pub fn subscribe(&self) -> broadcast::Receiver<Product> {
        self.changes.subscribe()
    }

    async fn announce(&self, product_ids: Vec<String>) {
        for product_id in product_ids {
            match self.store.product(&product_id).await {
                // No watcher is fine.
                Ok(Some(product)) => {
                    self.record_stock(&product);
                    drop(self.changes.send(product));
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, product_id, "cannot read a changed product"),
            }
        }
    }

    pub async fn reserve(
        &self,
        request: ReserveRequest,
        fence: Option<i64>,
    ) -> Result<Reservation, ServiceError> {
        match self
            .store
            .reserve(&request, now_millis(), self.reservation_ttl, fence)
            .await
            .map_err(failed("reserving stock"))
            .inspect_err(|e| self.count_stale(e))
        {
            Ok(Reserved::New(reservation)) => {
                tracing::info!(
                    reservation_id = %reservation.reservation_id,
                    order_id = %reservation.reservation_id,
                    lines = reservation.items.len(),
                    "stock reserved"
                );
                for item in &reservation.items {
                    self.count_reservation(&item.product_id, "RESERVED");
                }
                let changed = reservation
                    .items
                    .iter()
                    .map(|i| i.product_id.clone())
                    .collect();
                self.announce(changed).await;
                Ok(reservation)
            }
            Ok(Reserved::Existing(existing)) => Ok(domain::replay(existing, &request)?),
            Err(ServiceError::Rule(rule)) => {
                if let InventoryError::OutOfStock { product_id, .. } = &rule {
                    self.count_reservation(product_id, "OUT_OF_STOCK");
                }
                tracing::info!(reservation_id = %request.reservation_id, order_id = %request.reservation_id, reason = %rule, "reservation refused");
                Err(rule.into())
            }
            Err(error) => Err(error),
        }
    }

    pub async fn commit(
        &self,
        reservation_id: &str,
        fence: Option<i64>,
    ) -> Result<Reservation, ServiceError> {
        check_id("reservation_id", reservation_id).map_err(InventoryError::Invalid)?;
        let changed = self
            .store
            .commit(reservation_id, now_millis(), fence)
            .await
            .map_err(failed("committing a reservation"))
            .inspect_err(|e| self.count_stale(e))?;
        self.announce(changed.products).await;
        let reservation = changed.value;
        match reservation.status {
            domain::ReservationStatus::Committed => {
                tracing::info!(
                    reservation_id,
                    order_id = reservation_id,
                    "reservation committed"
                );
                Ok(reservation)
            }
            status => Err(InventoryError::ReservationReleased {
                reservation_id: reservation_id.to_owned(),
                status: status.as_str(),
            }
            .into()),
        }
    }

    pub async fn release(
        &self,
        reservation_id: &str,
        fence: Option<i64>,
    ) -> Result<Reservation, ServiceError> {
        check_id("reservation_id", reservation_id).map_err(InventoryError::Invalid)?;
        let changed = self
            .store
            .release(reservation_id, now_millis(), fence)
            .await
            .map_err(failed("releasing a reservation"))
            .inspect_err(|e| self.count_stale(e))?;
        if !changed.products.is_empty() {
            tracing::info!(
                reservation_id,
                order_id = reservation_id,
                "reservation released; stock returned"
            );
        }
        self.announce(changed.products).await;
        Ok(changed.value)
    }

    /// Expires reservations past their time; returns how many products changed.
    pub async fn expire_due(&self) -> Result<usize, ServiceError> {
        let products = self
            .store
            .expire_due(now_millis(), 100)
            .await
            .map_err(db("expiring reservations"))?;
        let changed = products.len();
        self.announce(products).await;
        Ok(changed)
    }

    pub async fn adjust(&self, product_id: &str, delta: i32) -> Result<Product, ServiceError> {
        domain::check_adjustment(product_id, delta)?;
        let product = self
            .store
            .adjust(product_id, delta, now_millis())
            .await
            .map_err(failed("adjusting stock"))?;
        tracing::info!(
            product_id,
            delta,
            available = product.available,
            "stock adjusted"
        );
        self.record_stock(&product);
        drop(self.changes.send(product.clone()));
        Ok(product)
    }

    pub async fn product(&self, product_id: &str) -> Result<Product, ServiceError> {
        check_id("product_id", product_id).map_err(InventoryError::Invalid)?;
        self.store
            .product(product_id)
            .await
            .map_err(db("reading a product"))?
            .ok_or_else(|| InventoryError::ProductNotFound(product_id.to_owned()).into())
    }

    /// A page of products and the next page's token (empty on the last).
    pub async fn products(
        &self,
        page_size: i32,
        page_token: &str,
        only: &[String],
    ) -> Result<(Vec<Product>, String), ServiceError> {
        let page_size = limits::page_size(page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
            .map_err(InventoryError::Invalid)?;
        if only.len() > MAX_ITEMS {
            return Err(InventoryError::Invalid(format!(
                "product_ids may name at most {MAX_ITEMS} products"
            ))
            .into());
        }
        for product_id in only {
            check_id("product_ids", product_id).map_err(InventoryError::Invalid)?;
        }
        let after = if page_token.is_empty() {
            None
        } else {
            check_id("page_token", page_token)
                .map_err(|_| InventoryError::Invalid(FOREIGN_PAGE_TOKEN.into()))?;
            Some(page_token)
        };
        // One extra row tells whether another page follows.
        let products = self
            .store
            .products(after, page_size as i64 + 1, only)
            .await
            .map_err(db("listing products"))?;
        Ok(split_page(products, page_size, |p| p.product_id.clone()))
    }

    /// Sets `current_stock` for every product from the database, so the
    /// gauge is right from the start, not only after the first change.
    pub async fn publish_stock_levels(&self) -> Result<(), ServiceError> {
        let mut token = String::new();
        loop {
            let (page, next) = self.products(0, &token, &[]).await?;
            page.iter().for_each(|product| self.record_stock(product));
            if next.is_empty() {
                return Ok(());
            }
            token = next;
        }
    }
}

impl Inventory {
    fn record_stock(&self, product: &Product) {
        self.metrics
            .current_stock
            .with_label_values(&[&product.product_id])
            .set(i64::from(product.available));
    }

    /// Counts a step refused for its fencing number (and logs it).
    fn count_stale(&self, error: &ServiceError) {
        if let ServiceError::Rule(refusal @ InventoryError::StaleStep { .. }) = error {
            tracing::warn!(reason = %refusal, "stale saga step refused");
            self.metrics
                .saga_stale_steps_refused_total
                .with_label_values(&["inventory"])
                .inc();
        }
    }

    fn count_reservation(&self, product_id: &str, status: &str) {
        self.metrics
            .inventory_reservations_total
            .with_label_values(&[product_id, status])
            .inc();
    }
}
