//! Every SQL statement of the payment service (portable SQLite/PostgreSQL).

use ordermesh_domain::{Currency, Money};
use ordermesh_storage::{Database, fence};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::domain::{Payment, PaymentStatus};

#[derive(Clone, Debug)]
pub struct PaymentStore {
    db: Database,
}

const COLUMNS: &str = "payment_id, order_id, amount_minor_units, currency, status, \
                       decline_reason, created_at, updated_at";

/// The outcome of storing a new payment.
pub enum Stored {
    New(Payment),
    /// The order already had a payment (a retry, or a void).
    Existing(Payment),
}

impl PaymentStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Stores `payment` unless its order already has one, which is then
    /// returned instead: one row per order, however many retries race. The
    /// step's fencing number is checked first, in the same transaction.
    pub async fn insert(
        &self,
        payment: &Payment,
        method_kind: &str,
        fence: Option<i64>,
    ) -> Result<Stored, StoreFailure> {
        let mut tx = self.db.begin().await?;
        fenced(&mut tx, &payment.order_id, fence).await?;
        let stored = insert_in(&mut tx, payment, method_kind).await?;
        tx.commit().await?;
        Ok(stored)
    }

    pub async fn get(&self, order_id: &str) -> Result<Option<Payment>, sqlx::Error> {
        let mut conn = self.db.pool().acquire().await?;
        get_on(&mut conn, order_id).await
    }

    /// Refunds the order's succeeded payment, or voids an order that has
    /// none, and returns the payment as it then stands, in one transaction.
    pub async fn refund(
        &self,
        void: &Payment,
        now_ms: i64,
        fence: Option<i64>,
    ) -> Result<Payment, StoreFailure> {
        let mut tx = self.db.begin().await?;
        fenced(&mut tx, &void.order_id, fence).await?;
        // After this insert a row surely exists (PostgreSQL waits for a
        // racing charge's transaction), so no charge can slip in after it.
        if let Stored::New(voided) = insert_in(&mut tx, void, "-").await? {
            tx.commit().await?;
            return Ok(voided);
        }
        sqlx::query(
            "UPDATE payment_payments SET status = $1, updated_at = $2 \
             WHERE order_id = $3 AND status = $4",
        )
        .bind(PaymentStatus::Refunded.as_str())
        .bind(now_ms)
        .bind(&void.order_id)
        .bind(PaymentStatus::Succeeded.as_str())
        .execute(&mut *tx)
        .await?;
        let payment = get_on(&mut tx, &void.order_id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        tx.commit().await?;
        Ok(payment)
    }
}

/// A store call's result: a stale saga step refused, or the database failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreFailure {
    #[error("stale saga step")]
    Stale(fence::Stale),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

async fn fenced(
    tx: &mut Transaction<'_, Any>,
    order_id: &str,
    fence: Option<i64>,
) -> Result<(), StoreFailure> {
    fence::observe(tx, "payment_fences", "order_id", order_id, fence)
        .await?
        .map_err(StoreFailure::Stale)
}

async fn insert_in(
    tx: &mut Transaction<'_, Any>,
    payment: &Payment,
    method_kind: &str,
) -> Result<Stored, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO payment_payments (payment_id, order_id, amount_minor_units, currency, \
         method_kind, status, decline_reason, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(&payment.payment_id)
    .bind(&payment.order_id)
    .bind(payment.amount.minor_units)
    .bind(payment.amount.currency.as_str())
    .bind(method_kind)
    .bind(payment.status.as_str())
    .bind(payment.decline_reason.as_deref())
    .bind(payment.created_at_ms)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Stored::New(payment.clone()));
    }
    let existing = get_on(tx, &payment.order_id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    Ok(Stored::Existing(existing))
}

async fn get_on(
    conn: &mut sqlx::AnyConnection,
    order_id: &str,
) -> Result<Option<Payment>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM payment_payments WHERE order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(decode)
    .transpose()
}

fn decode(row: &AnyRow) -> Result<Payment, sqlx::Error> {
    let currency: String = row.try_get("currency")?;
    let currency = Currency::parse(&currency).map_err(|e| bad_column("currency", e))?;
    let status: String = row.try_get("status")?;
    let status = PaymentStatus::parse(&status).ok_or_else(|| {
        bad_column(
            "status",
            std::io::Error::other(format!("unknown status {status:?}")),
        )
    })?;
    Ok(Payment {
        payment_id: row.try_get("payment_id")?,
        order_id: row.try_get("order_id")?,
        amount: Money::new(currency, row.try_get("amount_minor_units")?),
        status,
        decline_reason: row.try_get("decline_reason")?,
        created_at_ms: row.try_get("created_at")?,
        updated_at_ms: row.try_get("updated_at")?,
    })
}

fn bad_column(column: &str, error: impl std::error::Error + Send + Sync + 'static) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: Box::new(error),
    }
}
