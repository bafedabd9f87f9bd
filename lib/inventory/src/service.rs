//! The inventory's use cases, apart from how they travel. Each change is
//! announced to stock watchers after its transaction commits.

use std::time::Duration;

use ordermesh_domain::limits::{
    self as limits, FOREIGN_PAGE_TOKEN, MAX_ITEMS, MAX_PAGE_SIZE, check_id, split_page,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ordermesh_domain::{Describe, ErrorDescription};
use ordermesh_runtime::metrics::Metrics;
use ordermesh_storage::{StoreError, now_millis};
use tokio::sync::broadcast;

use crate::domain::{self, InventoryError, Product, Reservation, ReserveRequest};
use crate::outbox::StockChange;
use crate::store::{Changed, InventoryStore, Reserved, StoreFailure};

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
    /// Per product, the sequence of the last change announced (one entry
    /// per product of the catalog).
    announced: Arc<Mutex<HashMap<String, i64>>>,
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
            announced: Arc::default(),
            metrics,
        }
    }

    /// Stock changes made by this replica, after they commit.
    pub fn subscribe(&self) -> broadcast::Receiver<Product> {
        self.changes.subscribe()
    }

    /// Tells watchers (and the stock gauge) of committed changes, each
    /// product as its change left it. Two changes of one product can reach
    /// here in either order (their transactions commit one after the other,
    /// their callers race on): one older than the last announced for its
    /// product is dropped, so watchers never end on a stale count.
    fn announce(&self, changes: Vec<StockChange>) {
        let mut announced = self
            .announced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for StockChange { product, sequence } in changes {
            match announced.get_mut(&product.product_id) {
                Some(last) if *last >= sequence => continue,
                Some(last) => *last = sequence,
                None => {
                    announced.insert(product.product_id.clone(), sequence);
                }
            }
            self.record_stock(&product);
            // No watcher is fine.
            drop(self.changes.send(product));
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
            Ok(Reserved::New(Changed {
                value: reservation,
                stock,
            })) => {
                tracing::info!(
                    reservation_id = %reservation.reservation_id,
                    order_id = %reservation.reservation_id,
                    lines = reservation.items.len(),
                    "stock reserved"
                );
                for item in &reservation.items {
                    self.count_reservation(&item.product_id, "RESERVED");
                }
                self.announce(stock);
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
        self.announce(changed.stock);
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
        if !changed.stock.is_empty() {
            tracing::info!(
                reservation_id,
                order_id = reservation_id,
                "reservation released; stock returned"
            );
        }
        self.announce(changed.stock);
        Ok(changed.value)
    }

    /// Expires reservations past their time; returns how many products changed.
    pub async fn expire_due(&self) -> Result<usize, ServiceError> {
        let stock = self
            .store
            .expire_due(now_millis(), 100)
            .await
            .map_err(db("expiring reservations"))?;
        let changed = stock.len();
        self.announce(stock);
        Ok(changed)
    }

    pub async fn adjust(&self, product_id: &str, delta: i32) -> Result<Product, ServiceError> {
        domain::check_adjustment(product_id, delta)?;
        let change = self
            .store
            .adjust(product_id, delta, now_millis())
            .await
            .map_err(failed("adjusting stock"))?;
        let product = change.product.clone();
        tracing::info!(
            product_id,
            delta,
            available = product.available,
            "stock adjusted"
        );
        self.announce(vec![change]);
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

#[cfg(test)]
mod tests {
    use super::*;
    use ordermesh_domain::{Currency, Money};
    use ordermesh_testkit::TestDatabase;

    fn mug(available: i32) -> Product {
        Product {
            product_id: "sku-mug".into(),
            name: "Mug".into(),
            price: Money::new(Currency::USD, 1200),
            available,
        }
    }

    /// Two commits of one product whose callers announce them in the
    /// opposite order: the older one is dropped, so a watcher and the gauge
    /// end on the count the last commit left.
    #[tokio::test]
    async fn an_announcement_older_than_the_last_is_dropped() {
        let database = TestDatabase::sqlite();
        let store = crate::open_store(database.settings()).await.expect("open");
        let metrics = Arc::new(Metrics::new());
        let inventory = Inventory::new(store, Duration::from_secs(60), metrics.clone());
        let mut watcher = inventory.subscribe();
        let change = |available, sequence| StockChange {
            product: mug(available),
            sequence,
        };
        inventory.announce(vec![change(5, 2)]);
        inventory.announce(vec![change(9, 1)]);
        inventory.announce(vec![change(5, 2)]);
        inventory.announce(vec![change(4, 3)]);
        let mut seen = Vec::new();
        while let Ok(product) = watcher.try_recv() {
            seen.push(product.available);
        }
        assert_eq!(
            seen,
            [5, 4],
            "the stale and the repeated change are dropped"
        );
        let gauge = metrics.current_stock.with_label_values(&["sku-mug"]).get();
        assert_eq!(gauge, 4);
    }
}
