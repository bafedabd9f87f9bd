//! Every SQL statement of the inventory (portable SQLite/PostgreSQL). Stock
//! is only ever changed by conditional updates inside transactions, never
//! by a lock in process memory, so replicas sharing one database stay exact.

use std::time::Duration;

use ordermesh_domain::{Currency, Money};
use ordermesh_storage::Tx;
use ordermesh_storage::{Columns, Database, Param, fence, push_value_rows};
use sqlx::Row;

use crate::catalog::DEMO_CATALOG;
use crate::domain::{
    InventoryError, Product, Reservation, ReservationStatus, ReserveRequest, ReservedItem,
};
use crate::outbox::{self, StockChange};

#[derive(Clone, Debug)]
pub struct InventoryStore {
    db: Database,
}

/// A store call's result: a rule was broken, or the database failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreFailure {
    #[error(transparent)]
    Rule(#[from] InventoryError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A reservation call's result, with the stock changes it committed.
#[derive(Debug)]
pub struct Changed<T> {
    pub value: T,
    pub stock: Vec<StockChange>,
}

/// Per product: where its units are, for the invariant audit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StockLine {
    pub product_id: String,
    pub available: i64,
    /// Held by RESERVED reservations.
    pub reserved: i64,
    /// Held by COMMITTED reservations.
    pub sold: i64,
    /// Seeded stock plus every adjustment; should equal the three above.
    pub stock_total: i64,
}

/// The most units of one product the service keeps, reserved and sold
/// included: the API's stock counts are `int32`.
const MAX_STOCK: i64 = i32::MAX as i64;

const PRODUCT_COLUMNS: &str = "product_id, name, price_minor_units, currency, available";

impl InventoryStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The underlying database (the invariant audit's tests, the metrics).
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Seeds the demo catalog into an empty products table. Safe when two
    /// replicas start at once.
    pub async fn seed_if_empty(&self, now_ms: i64) -> Result<bool, sqlx::Error> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inventory_products")
            .fetch_one(self.db.pool())
            .await?;
        if count > 0 {
            return Ok(false);
        }
        for (product_id, name, price, stock) in DEMO_CATALOG {
            sqlx::query(
                "INSERT INTO inventory_products (product_id, name, price_minor_units, currency, \
                 available, stock_total, updated_at) VALUES ($1, $2, $3, $4, $5, $5, $6) \
                 ON CONFLICT (product_id) DO NOTHING",
            )
            .bind(*product_id)
            .bind(*name)
            .bind(*price)
            .bind(Currency::USD.as_str())
            .bind(*stock)
            .bind(now_ms)
            .execute(self.db.pool())
            .await?;
        }
        Ok(true)
    }

    pub async fn product(&self, product_id: &str) -> Result<Option<Product>, sqlx::Error> {
        let sql = format!("SELECT {PRODUCT_COLUMNS} FROM inventory_products WHERE product_id = $1");
        let products = self
            .db
            .query_rows(&sql, &[Param::Text(product_id)], push_product)
            .await?;
        Ok(products.into_iter().next())
    }

    /// Products after `after` in id order, at most `limit`, only `only` when
    /// it is not empty. The catalog page is the hottest read of all (every
    /// order prices its lines with it); on SQLite it is usually read on the
    /// caller's thread (`Database::query_rows`).
    pub async fn products(
        &self,
        after: Option<&str>,
        limit: i64,
        only: &[String],
    ) -> Result<Vec<Product>, sqlx::Error> {
        let mut params = vec![Param::Text(after.unwrap_or("")), Param::Int(limit)];
        params.extend(only.iter().map(|id| Param::Text(id)));
        self.db
            .query_rows(&products_sql(only.len()), &params, push_product)
            .await
    }

    /// Reserves every item or none. A repeat of the id returns what is
    /// stored (the caller decides whether it is a replay).
    pub async fn reserve(
        &self,
        request: &ReserveRequest,
        now_ms: i64,
        ttl: Duration,
        fence: Option<i64>,
    ) -> Result<Reserved, StoreFailure> {
        let expires_at = now_ms + millis(ttl);
        let mut tx = self.db.transaction().await?;
        // The first statement writes, so SQLite takes its write lock at once.
        fenced(&mut tx, &request.reservation_id, fence).await?;
        let created = tx
            .execute(
                "INSERT INTO inventory_reservations (reservation_id, status, expires_at, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
                 ON CONFLICT (reservation_id) DO NOTHING",
                &[
                    Param::Text(&request.reservation_id),
                    Param::Text(ReservationStatus::Reserved.as_str()),
                    Param::Int(expires_at),
                    Param::Int(now_ms),
                ],
            )
            .await?;
        if created == 0 {
            // Nothing written but the fencing number, which must stay.
            tx.commit().await?;
            let existing = self
                .reservation(&request.reservation_id)
                .await?
                .ok_or(sqlx::Error::RowNotFound)?;
            return Ok(Reserved::Existing(existing));
        }
        let mut items = Vec::with_capacity(request.items.len());
        // Each product as its update left it, for the events.
        let mut changes = Vec::with_capacity(request.items.len());
        for (product_id, quantity) in &request.items {
            let taken = tx
                .query_optional(
                    &format!(
                        "UPDATE inventory_products SET available = available - $1, \
                         updated_at = $2 WHERE product_id = $3 AND available >= $1 \
                     RETURNING {PRODUCT_COLUMNS}"
                    ),
                    &[
                        Param::Int(i64::from(*quantity)),
                        Param::Int(now_ms),
                        Param::Text(product_id),
                    ],
                    |row| decode_product(row),
                )
                .await?;
            let Some(product) = taken else {
                let refusal = refusal(&mut tx, product_id, *quantity).await?;
                tx.rollback().await?;
                return Err(refusal.into());
            };
            items.push(ReservedItem {
                product_id: product_id.clone(),
                quantity: *quantity,
                unit_price: product.price,
            });
            changes.push((product, -i64::from(*quantity)));
        }
        insert_items(&mut tx, &request.reservation_id, &items).await?;
        let stock = outbox::record_changes(&mut tx, changes, now_ms).await?;
        tx.commit().await?;
        Ok(Reserved::New(Changed {
            value: Reservation {
                reservation_id: request.reservation_id.clone(),
                status: ReservationStatus::Reserved,
                items,
                expires_at_ms: expires_at,
            },
            stock,
        }))
    }

    /// RESERVED → COMMITTED, unless it has expired (then it expires now and
    /// its stock returns). Returns the reservation as it then stands, read in
    /// the same transaction: a racing release waits on the row, so what is
    /// returned is what the commit did.
    pub async fn commit(
        &self,
        reservation_id: &str,
        now_ms: i64,
        fence: Option<i64>,
    ) -> Result<Changed<Reservation>, StoreFailure> {
        let mut tx = self.db.transaction().await?;
        fenced(&mut tx, reservation_id, fence).await?;
        let committed = tx
            .execute(
                "UPDATE inventory_reservations SET status = 'COMMITTED', updated_at = $1 \
                 WHERE reservation_id = $2 AND status = 'RESERVED' AND expires_at >= $1",
                &[Param::Int(now_ms), Param::Text(reservation_id)],
            )
            .await?;
        let mut stock = Vec::new();
        if committed == 0 {
            // Past its time but not yet swept: expire it here.
            let expired = tx
                .execute(
                    EXPIRE_SQL,
                    &[Param::Int(now_ms), Param::Text(reservation_id)],
                )
                .await?;
            if expired == 1 {
                stock = return_items(&mut tx, reservation_id, now_ms).await?;
                tracing::info!(reservation_id, "reservation expired; its stock returned");
            }
        }
        let Some(reservation) = reservation_in(&mut tx, reservation_id).await? else {
            tx.rollback().await?;
            return Err(InventoryError::ReservationNotFound(reservation_id.to_owned()).into());
        };
        tx.commit().await?;
        Ok(Changed {
            value: reservation,
            stock,
        })
    }

    /// Gives a reserved or committed reservation's stock back, or records a
    /// tombstone for an id never reserved, in one transaction. The tombstone
    /// is written first: once it is in, a reserve of this id finds the row
    /// and is refused; if a reserve's row is there already (PostgreSQL waits
    /// for its transaction), the conditional update releases it. Either way
    /// the answer is RELEASED, or EXPIRED when the sweeper came first.
    pub async fn release(
        &self,
        reservation_id: &str,
        now_ms: i64,
        fence: Option<i64>,
    ) -> Result<Changed<Reservation>, StoreFailure> {
        let mut tx = self.db.transaction().await?;
        fenced(&mut tx, reservation_id, fence).await?;
        let tombstone = tx
            .execute(
                "INSERT INTO inventory_reservations (reservation_id, status, expires_at, \
                 created_at, updated_at) VALUES ($1, 'RELEASED', 0, $2, $2) \
                 ON CONFLICT (reservation_id) DO NOTHING",
                &[Param::Text(reservation_id), Param::Int(now_ms)],
            )
            .await?;
        let mut stock = Vec::new();
        if tombstone == 0 {
            let released = tx
                .execute(
                    "UPDATE inventory_reservations SET status = 'RELEASED', updated_at = $1 \
                     WHERE reservation_id = $2 AND status IN ('RESERVED', 'COMMITTED')",
                    &[Param::Int(now_ms), Param::Text(reservation_id)],
                )
                .await?;
            if released == 1 {
                stock = return_items(&mut tx, reservation_id, now_ms).await?;
            }
        }
        let reservation = reservation_in(&mut tx, reservation_id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        tx.commit().await?;
        Ok(Changed {
            value: reservation,
            stock,
        })
    }

    /// Expires one reservation if it is RESERVED and past its time.
    async fn expire_one(
        &self,
        reservation_id: &str,
        now_ms: i64,
    ) -> Result<Vec<StockChange>, sqlx::Error> {
        let mut tx = self.db.transaction().await?;
        let expired = tx
            .execute(
                EXPIRE_SQL,
                &[Param::Int(now_ms), Param::Text(reservation_id)],
            )
            .await?;
        if expired == 0 {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        let stock = return_items(&mut tx, reservation_id, now_ms).await?;
        tx.commit().await?;
        tracing::info!(reservation_id, "reservation expired; its stock returned");
        Ok(stock)
    }

    /// Expires every reservation past its time (at most `limit` per call).
    /// Returns the stock changes committed.
    pub async fn expire_due(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<StockChange>, sqlx::Error> {
        let due: Vec<String> = sqlx::query_scalar(
            "SELECT reservation_id FROM inventory_reservations \
             WHERE status = 'RESERVED' AND expires_at < $1 ORDER BY expires_at LIMIT $2",
        )
        .bind(now_ms)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        let mut stock = Vec::new();
        for reservation_id in due {
            stock.extend(self.expire_one(&reservation_id, now_ms).await?);
        }
        Ok(stock)
    }

    /// Adds `delta` to the product's stock, refusing to go below zero, or
    /// past `i32::MAX` counting the units reserved and sold: those may all
    /// come back to `available` (a release, a cancel), which must stay a
    /// count the API can carry.
    pub async fn adjust(
        &self,
        product_id: &str,
        delta: i32,
        now_ms: i64,
    ) -> Result<StockChange, StoreFailure> {
        let mut tx = self.db.transaction().await?;
        let adjusted = tx
            .query_optional(
                &format!(
                    "UPDATE inventory_products SET available = available + $1, \
                     stock_total = stock_total + $1, updated_at = $2 \
                     WHERE product_id = $3 AND available + $1 >= 0 \
                     AND ($1 < 0 OR stock_total + $1 <= $4) \
                     RETURNING {PRODUCT_COLUMNS}"
                ),
                &[
                    Param::Int(i64::from(delta)),
                    Param::Int(now_ms),
                    Param::Text(product_id),
                    Param::Int(MAX_STOCK),
                ],
                |row| decode_product(row),
            )
            .await?;
        if let Some(product) = adjusted {
            let recorded =
                outbox::record_changes(&mut tx, vec![(product, i64::from(delta))], now_ms).await?;
            tx.commit().await?;
            // A zero delta changes nothing and records no event.
            return recorded.into_iter().next().ok_or_else(|| {
                InventoryError::Invalid("a stock adjustment needs a non-zero delta".into()).into()
            });
        }
        tx.rollback().await?;
        let counts: Option<(i64, i64)> = sqlx::query_as(
            "SELECT available, stock_total FROM inventory_products WHERE product_id = $1",
        )
        .bind(product_id)
        .fetch_optional(self.db.pool())
        .await?;
        let (available, stock_total) =
            counts.ok_or_else(|| InventoryError::ProductNotFound(product_id.to_owned()))?;
        Err(if delta < 0 {
            InventoryError::StockNegative {
                product_id: product_id.to_owned(),
                available,
                removing: -i64::from(delta),
            }
        } else {
            InventoryError::StockOverflow {
                product_id: product_id.to_owned(),
                counted: stock_total,
                adding: i64::from(delta),
                limit: MAX_STOCK,
            }
        }
        .into())
    }

    pub async fn reservation(
        &self,
        reservation_id: &str,
    ) -> Result<Option<Reservation>, sqlx::Error> {
        let params = [Param::Text(reservation_id)];
        let head = self
            .db
            .query_rows(RESERVATION_SQL, &params, push_head)
            .await?;
        if head.is_none() {
            return Ok(None);
        }
        let items = self
            .db
            .query_rows(RESERVATION_ITEMS_SQL, &params, push_item)
            .await?;
        assemble(reservation_id, head, items)
    }

    /// Where every product's units are, for the invariant audit.
    pub async fn stock_report(&self) -> Result<Vec<StockLine>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT p.product_id, p.available, p.stock_total, \
             CAST(COALESCE(SUM(CASE WHEN r.status = 'RESERVED' THEN i.quantity ELSE 0 END), 0) AS BIGINT) AS reserved, \
             CAST(COALESCE(SUM(CASE WHEN r.status = 'COMMITTED' THEN i.quantity ELSE 0 END), 0) AS BIGINT) AS sold \
             FROM inventory_products p \
             LEFT JOIN inventory_reservation_items i ON i.product_id = p.product_id \
             LEFT JOIN inventory_reservations r ON r.reservation_id = i.reservation_id \
             GROUP BY p.product_id, p.available, p.stock_total ORDER BY p.product_id",
        )
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StockLine {
                    product_id: row.try_get("product_id")?,
                    available: row.try_get("available")?,
                    reserved: row.try_get("reserved")?,
                    sold: row.try_get("sold")?,
                    stock_total: row.try_get("stock_total")?,
                })
            })
            .collect()
    }
}

/// What a reserve call found.
#[derive(Debug)]
pub enum Reserved {
    New(Changed<Reservation>),
    Existing(Reservation),
}

/// Refuses a step whose fencing number is older than one seen for this
/// reservation (the transaction is dropped, so rolled back).
async fn fenced(tx: &mut Tx, reservation_id: &str, fence: Option<i64>) -> Result<(), StoreFailure> {
    fence::observe(
        tx,
        "inventory_fences",
        "reservation_id",
        reservation_id,
        fence,
    )
    .await?
    .map_err(|stale| {
        InventoryError::StaleStep {
            reservation_id: reservation_id.to_owned(),
            sent: stale.sent,
        }
        .into()
    })
}

const EXPIRE_SQL: &str = "UPDATE inventory_reservations SET status = 'EXPIRED', updated_at = $1 \
     WHERE reservation_id = $2 AND status = 'RESERVED' AND expires_at < $1";

const RESERVATION_SQL: &str =
    "SELECT status, expires_at FROM inventory_reservations WHERE reservation_id = $1";

const RESERVATION_ITEMS_SQL: &str = "SELECT product_id, quantity, unit_price_minor_units, \
     currency FROM inventory_reservation_items WHERE reservation_id = $1 ORDER BY product_id";

/// The reservation as this transaction sees it.
async fn reservation_in(
    tx: &mut Tx,
    reservation_id: &str,
) -> Result<Option<Reservation>, sqlx::Error> {
    let params = [Param::Text(reservation_id)];
    let head = tx.query_rows(RESERVATION_SQL, &params, push_head).await?;
    if head.is_none() {
        return Ok(None);
    }
    let items = tx
        .query_rows(RESERVATION_ITEMS_SQL, &params, push_item)
        .await?;
    assemble(reservation_id, head, items)
}

/// A reservation's status and expiry.
type Head = Option<(String, i64)>;

fn push_head(head: &mut Head, row: &dyn Columns) -> Result<(), sqlx::Error> {
    *head = Some((row.text("status")?, row.int("expires_at")?));
    Ok(())
}

fn push_item(items: &mut Vec<ReservedItem>, item: &dyn Columns) -> Result<(), sqlx::Error> {
    let quantity = item.int("quantity")?;
    items.push(ReservedItem {
        product_id: item.text("product_id")?,
        quantity: i32::try_from(quantity).map_err(|e| bad_column("quantity", e))?,
        unit_price: Money::new(
            parse_currency(&item.text("currency")?)?,
            item.int("unit_price_minor_units")?,
        ),
    });
    Ok(())
}

fn assemble(
    reservation_id: &str,
    head: Head,
    items: Vec<ReservedItem>,
) -> Result<Option<Reservation>, sqlx::Error> {
    let Some((status, expires_at_ms)) = head else {
        return Ok(None);
    };
    Ok(Some(Reservation {
        reservation_id: reservation_id.to_owned(),
        status: ReservationStatus::parse(&status)
            .ok_or_else(|| bad_column("status", std::io::Error::other(status.clone())))?,
        items,
        expires_at_ms,
    }))
}

/// Why a product's conditional update took nothing: unknown, or short.
async fn refusal(
    tx: &mut Tx,
    product_id: &str,
    requested: i32,
) -> Result<InventoryError, sqlx::Error> {
    let available = tx
        .query_optional(
            "SELECT available FROM inventory_products WHERE product_id = $1",
            &[Param::Text(product_id)],
            |row| row.int("available"),
        )
        .await?;
    Ok(match available {
        None => InventoryError::ProductNotFound(product_id.to_owned()),
        Some(available) => InventoryError::OutOfStock {
            product_id: product_id.to_owned(),
            requested,
            available,
        },
    })
}

/// Adds each item of the reservation back to its product's stock.
async fn return_items(
    tx: &mut Tx,
    reservation_id: &str,
    now_ms: i64,
) -> Result<Vec<StockChange>, sqlx::Error> {
    let items = tx
        .query_rows(
            "SELECT product_id, quantity FROM inventory_reservation_items \
             WHERE reservation_id = $1 ORDER BY product_id",
            &[Param::Text(reservation_id)],
            |items: &mut Vec<(String, i64)>, row| {
                items.push((row.text("product_id")?, row.int("quantity")?));
                Ok(())
            },
        )
        .await?;
    let mut returned = Vec::with_capacity(items.len());
    for (product_id, quantity) in items {
        let product = tx
            .query_optional(
                &format!(
                    "UPDATE inventory_products SET available = available + $1, updated_at = $2 \
                     WHERE product_id = $3 RETURNING {PRODUCT_COLUMNS}"
                ),
                &[
                    Param::Int(quantity),
                    Param::Int(now_ms),
                    Param::Text(&product_id),
                ],
                |row| decode_product(row),
            )
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        returned.push((product, quantity));
    }
    outbox::record_changes(tx, returned, now_ms).await
}

/// The catalog page's statement: `$1` after, `$2` limit, `$3…` the ids asked for.
fn products_sql(only: usize) -> String {
    let mut sql = format!("SELECT {PRODUCT_COLUMNS} FROM inventory_products WHERE product_id > $1");
    if only > 0 {
        let placeholders: Vec<String> = (0..only).map(|i| format!("${}", i + 3)).collect();
        sql.push_str(&format!(" AND product_id IN ({})", placeholders.join(", ")));
    }
    sql.push_str(" ORDER BY product_id LIMIT $2");
    sql
}

fn push_product(products: &mut Vec<Product>, row: &dyn Columns) -> Result<(), sqlx::Error> {
    products.push(decode_product(row)?);
    Ok(())
}

fn decode_product(row: &(impl Columns + ?Sized)) -> Result<Product, sqlx::Error> {
    let available = row.int("available")?;
    Ok(Product {
        product_id: row.text("product_id")?,
        name: row.text("name")?,
        price: Money::new(
            parse_currency(&row.text("currency")?)?,
            row.int("price_minor_units")?,
        ),
        available: i32::try_from(available).map_err(|e| bad_column("available", e))?,
    })
}

fn parse_currency(code: &str) -> Result<Currency, sqlx::Error> {
    Currency::parse(code).map_err(|e| bad_column("currency", e))
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn bad_column(column: &str, error: impl std::error::Error + Send + Sync + 'static) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: Box::new(error),
    }
}

/// The reservation's items, in one statement (a round trip each on
/// PostgreSQL).
async fn insert_items(
    tx: &mut Tx,
    reservation_id: &str,
    items: &[ReservedItem],
) -> Result<(), sqlx::Error> {
    let mut sql = String::from(
        "INSERT INTO inventory_reservation_items (reservation_id, product_id, quantity, \
         unit_price_minor_units, currency) VALUES ",
    );
    push_value_rows(&mut sql, items.len(), 5);
    let mut params = Vec::with_capacity(items.len() * 5);
    for item in items {
        params.extend([
            Param::Text(reservation_id),
            Param::Text(&item.product_id),
            Param::Int(i64::from(item.quantity)),
            Param::Int(item.unit_price.minor_units),
            Param::Text(item.unit_price.currency.as_str()),
        ]);
    }
    tx.execute(&sql, &params).await?;
    Ok(())
}

#[cfg(test)]
mod tests;
