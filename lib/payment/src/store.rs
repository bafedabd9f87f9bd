//! Every SQL statement of the payment service (portable SQLite/PostgreSQL).

use ordermesh_domain::{Currency, Money};
use ordermesh_storage::{Columns, Database, Param, Tx, fence};

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

    pub fn database(&self) -> &Database {
        &self.db
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
        let mut tx = self.db.transaction().await?;
        fenced(&mut tx, &payment.order_id, fence).await?;
        let stored = insert_in(&mut tx, payment, method_kind).await?;
        tx.commit().await?;
        Ok(stored)
    }

    pub async fn get(&self, order_id: &str) -> Result<Option<Payment>, sqlx::Error> {
        self.db
            .query_rows(&get_sql(), &[Param::Text(order_id)], push_payment)
            .await
    }

    /// Refunds the order's succeeded payment, or voids an order that has
    /// none, and returns the payment as it then stands, in one transaction.
    pub async fn refund(
        &self,
        void: &Payment,
        now_ms: i64,
        fence: Option<i64>,
    ) -> Result<Payment, StoreFailure> {
        let mut tx = self.db.transaction().await?;
        fenced(&mut tx, &void.order_id, fence).await?;
        // After this insert a row surely exists (PostgreSQL waits for a
        // racing charge's transaction), so no charge can slip in after it.
        if let Stored::New(voided) = insert_in(&mut tx, void, "-").await? {
            tx.commit().await?;
            return Ok(voided);
        }
        tx.execute(
            "UPDATE payment_payments SET status = $1, updated_at = $2 \
             WHERE order_id = $3 AND status = $4",
            &[
                Param::Text(PaymentStatus::Refunded.as_str()),
                Param::Int(now_ms),
                Param::Text(&void.order_id),
                Param::Text(PaymentStatus::Succeeded.as_str()),
            ],
        )
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

async fn fenced(tx: &mut Tx, order_id: &str, fence: Option<i64>) -> Result<(), StoreFailure> {
    fence::observe(tx, "payment_fences", "order_id", order_id, fence)
        .await?
        .map_err(StoreFailure::Stale)
}

async fn insert_in(
    tx: &mut Tx,
    payment: &Payment,
    method_kind: &str,
) -> Result<Stored, sqlx::Error> {
    let inserted = tx
        .execute(
            "INSERT INTO payment_payments (payment_id, order_id, amount_minor_units, currency, \
             method_kind, status, decline_reason, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (order_id) DO NOTHING",
            &[
                Param::Text(&payment.payment_id),
                Param::Text(&payment.order_id),
                Param::Int(payment.amount.minor_units),
                Param::Text(payment.amount.currency.as_str()),
                Param::Text(method_kind),
                Param::Text(payment.status.as_str()),
                Param::OptText(payment.decline_reason.as_deref()),
                Param::Int(payment.created_at_ms),
            ],
        )
        .await?;
    if inserted == 1 {
        return Ok(Stored::New(payment.clone()));
    }
    let existing = get_on(tx, &payment.order_id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    Ok(Stored::Existing(existing))
}

fn get_sql() -> String {
    format!("SELECT {COLUMNS} FROM payment_payments WHERE order_id = $1")
}

async fn get_on(tx: &mut Tx, order_id: &str) -> Result<Option<Payment>, sqlx::Error> {
    tx.query_rows(&get_sql(), &[Param::Text(order_id)], push_payment)
        .await
}

fn push_payment(found: &mut Option<Payment>, row: &dyn Columns) -> Result<(), sqlx::Error> {
    *found = Some(decode(row)?);
    Ok(())
}

fn decode(row: &dyn Columns) -> Result<Payment, sqlx::Error> {
    let currency = row.text("currency")?;
    let currency = Currency::parse(&currency).map_err(|e| bad_column("currency", e))?;
    let status = row.text("status")?;
    let status = PaymentStatus::parse(&status).ok_or_else(|| {
        bad_column(
            "status",
            std::io::Error::other(format!("unknown status {status:?}")),
        )
    })?;
    Ok(Payment {
        payment_id: row.text("payment_id")?,
        order_id: row.text("order_id")?,
        amount: Money::new(currency, row.int("amount_minor_units")?),
        status,
        decline_reason: row.text_or_null("decline_reason")?,
        created_at_ms: row.int("created_at")?,
        updated_at_ms: row.int("updated_at")?,
    })
}

fn bad_column(column: &str, error: impl std::error::Error + Send + Sync + 'static) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: Box::new(error),
    }
}
