//! Every SQL statement of the payment service (portable SQLite/PostgreSQL).

use ordermesh_domain::{Currency, Money};
use ordermesh_storage::Database;
use sqlx::Row;
use sqlx::any::AnyRow;

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
    /// returned instead: one row per order, however many retries race.
    pub async fn insert(
        &self,
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
        .execute(self.db.pool())
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(Stored::New(payment.clone()));
        }
        let existing = self
            .get(&payment.order_id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        Ok(Stored::Existing(existing))
    }

    pub async fn get(&self, order_id: &str) -> Result<Option<Payment>, sqlx::Error> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM payment_payments WHERE order_id = $1"
        ))
        .bind(order_id)
        .fetch_optional(self.db.pool())
        .await?
        .as_ref()
        .map(decode)
        .transpose()
    }

    /// Refunds the order's succeeded payment, or voids an order that has
    /// none, and returns the payment as it then stands.
    pub async fn refund(&self, void: &Payment, now_ms: i64) -> Result<Payment, sqlx::Error> {
        // After this insert a row surely exists, so a racing charge can no
        // longer slip in between the two statements.
        if let Stored::New(voided) = self.insert(void, "-").await? {
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
        .execute(self.db.pool())
        .await?;
        self.get(&void.order_id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }
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
