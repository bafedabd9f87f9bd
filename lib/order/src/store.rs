//! Every SQL statement of the order service. Portable between SQLite and
//! PostgreSQL through sqlx's Any driver.

use std::sync::OnceLock;
use std::time::Duration;

use ordermesh_domain::payment_method::masked;
use ordermesh_domain::{Currency, Money};
use ordermesh_storage::columns::decode_error;
use ordermesh_storage::{Columns, Database, Param};
use sqlx::Row;

use crate::domain::{FailureReason, NewOrder, OrderLine, OrderStatus, OrderView, SagaState, Step};
use crate::outbox::{self, EventKind, OrderFacts};

/// An order with the saga's bookkeeping, as stored.
#[derive(Clone, Debug)]
pub struct StoredOrder {
    pub view: OrderView,
    pub saga: SagaState,
    pub payment_method: String,
}

/// What inserting a new order found.
#[derive(Debug)]
pub enum Inserted {
    /// Stored, with its saga's lease when a first driver was given.
    New {
        order: StoredOrder,
        lease: Option<Lease>,
    },
    /// The customer already used this idempotency key.
    KeyTaken {
        order_id: String,
        fingerprint: String,
    },
}

/// A page position in a customer's orders, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub created_at_ms: i64,
    pub order_id: String,
}

#[derive(Clone, Debug)]
pub struct OrderStore {
    db: Database,
}

const ORDER_COLUMNS: &str = "order_id, customer_id, payment_method, currency, total_minor_units, \
     status, failure_reason, step, compensate_stock, compensate_payment, attempts, \
     version, created_at, updated_at";
/// The same columns of `order_orders o`, for joins with its lines.
const ORDER_COLUMNS_O: &str = "o.order_id, o.customer_id, o.payment_method, o.currency, \
     o.total_minor_units, o.status, o.failure_reason, o.step, o.compensate_stock, \
     o.compensate_payment, o.attempts, o.version, o.created_at, o.updated_at";
/// A line of `order_items i`, NULL where an order has none.
const LINE_COLUMNS_I: &str = "i.product_id, i.quantity, i.unit_price_minor_units";

/// GetOrder's statement: the order and its lines.
fn get_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "SELECT {ORDER_COLUMNS_O}, {LINE_COLUMNS_I} FROM order_orders o \
             LEFT JOIN order_items i ON i.order_id = o.order_id \
             WHERE o.order_id = $1 ORDER BY i.line"
        )
    })
}

/// ListOrders' statement: a page of a customer's orders and their lines.
fn list_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "SELECT {ORDER_COLUMNS_O}, {LINE_COLUMNS_I} FROM \
             (SELECT {ORDER_COLUMNS} FROM order_orders WHERE customer_id = $1 \
              AND (created_at < $2 OR (created_at = $2 AND order_id < $3)) \
              ORDER BY created_at DESC, order_id DESC LIMIT $4) o \
             LEFT JOIN order_items i ON i.order_id = o.order_id \
             ORDER BY o.created_at DESC, o.order_id DESC, i.line"
        )
    })
}

/// ListOrders of an admin, for everyone: a page of all orders and their lines.
fn list_all_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "SELECT {ORDER_COLUMNS_O}, {LINE_COLUMNS_I} FROM \
             (SELECT {ORDER_COLUMNS} FROM order_orders \
              WHERE created_at < $1 OR (created_at = $1 AND order_id < $2) \
              ORDER BY created_at DESC, order_id DESC LIMIT $3) o \
             LEFT JOIN order_items i ON i.order_id = o.order_id \
             ORDER BY o.created_at DESC, o.order_id DESC, i.line"
        )
    })
}

impl OrderStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The underlying database (the invariant audit's tests, the metrics).
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Stores a PENDING order and its lines, or reports the order that
    /// already holds the request's idempotency key. With `driver`, the
    /// order is stored with its saga's lease already taken (fence 1), in
    /// the same transaction: the first drive needs no claim of its own.
    pub async fn insert(
        &self,
        order_id: &str,
        request: &NewOrder,
        lines: &[OrderLine],
        total: Money,
        now_ms: i64,
        driver: Option<FirstDriver<'_>>,
    ) -> Result<Inserted, sqlx::Error> {
        let fingerprint = request.fingerprint();
        let saga = SagaState::new_order();
        let now = self.db.now_sql();
        let mut tx = self.db.transaction().await?;
        let inserted = tx
            .execute(
                &format!(
                    "INSERT INTO order_orders (order_id, customer_id, payment_method, currency, \
                     total_minor_units, status, step, idempotency_key, request_fingerprint, \
                     created_at, updated_at, lease_owner, lease_holder, lease_until, fence) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12, \
                     CASE WHEN $13 = 0 THEN 0 ELSE {now} + $13 END, $14) ON CONFLICT DO NOTHING"
                ),
                &[
                    Param::Text(order_id),
                    Param::Text(&request.customer_id),
                    Param::Text(request.payment_method.token()),
                    Param::Text(total.currency.as_str()),
                    Param::Int(total.minor_units),
                    Param::Text(saga.status.as_str()),
                    Param::Text(saga.step.as_str()),
                    Param::OptText(request.idempotency_key.as_deref()),
                    Param::Text(&fingerprint),
                    Param::Int(now_ms),
                    Param::OptText(driver.as_ref().map(|d| d.owner)),
                    Param::OptText(driver.as_ref().map(|d| d.leases.holder.as_str())),
                    Param::Int(driver.as_ref().map_or(0, |d| millis(d.leases.lease))),
                    Param::Int(i64::from(driver.is_some())),
                ],
            )
            .await?;
        if inserted == 0 {
            tx.rollback().await?;
            let key = request.idempotency_key.as_deref().unwrap_or_default();
            let row = sqlx::query(
                "SELECT order_id, request_fingerprint FROM order_orders \
                 WHERE customer_id = $1 AND idempotency_key = $2",
            )
            .bind(&request.customer_id)
            .bind(key)
            .fetch_one(self.db.pool())
            .await?;
            return Ok(Inserted::KeyTaken {
                order_id: row.try_get("order_id")?,
                fingerprint: row.try_get("request_fingerprint")?,
            });
        }
        for (line_no, line) in lines.iter().enumerate() {
            tx.execute(
                "INSERT INTO order_items (order_id, line, product_id, quantity, \
                 unit_price_minor_units) VALUES ($1, $2, $3, $4, $5)",
                &[
                    Param::Text(order_id),
                    Param::Int(i64::try_from(line_no).unwrap_or(i64::MAX)),
                    Param::Text(&line.product_id),
                    Param::Int(i64::from(line.quantity)),
                    Param::Int(line.unit_price.minor_units),
                ],
            )
            .await?;
        }
        let facts = OrderFacts {
            order_id,
            customer_id: &request.customer_id,
            status: saga.status,
            failure_reason: None,
            total,
        };
        outbox::record_of(&mut tx, &facts, EventKind::Placed, now_ms).await?;
        tx.commit().await?;
        let order = StoredOrder {
            view: OrderView {
                order_id: order_id.to_owned(),
                customer_id: request.customer_id.clone(),
                lines: lines.to_vec(),
                total,
                status: saga.status,
                failure_reason: None,
                created_at_ms: now_ms,
                updated_at_ms: now_ms,
                version: 1,
            },
            saga,
            payment_method: request.payment_method.token().to_owned(),
        };
        let lease = driver.map(|d| Lease {
            owner: d.owner.to_owned(),
            fence: 1,
        });
        Ok(Inserted::New { order, lease })
    }

    /// The order holding `customer_id`'s idempotency `key`, if any.
    pub async fn find_by_idempotency_key(
        &self,
        customer_id: &str,
        key: &str,
    ) -> Result<Option<(String, String)>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT order_id, request_fingerprint FROM order_orders \
             WHERE customer_id = $1 AND idempotency_key = $2",
        )
        .bind(customer_id)
        .bind(key)
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|row| {
            Ok((
                row.try_get("order_id")?,
                row.try_get("request_fingerprint")?,
            ))
        })
        .transpose()
    }

    /// The order and its lines, in one statement (on SQLite usually read on
    /// the caller's thread: `Database::query_rows`).
    pub async fn get(&self, order_id: &str) -> Result<Option<StoredOrder>, sqlx::Error> {
        let orders = self
            .db
            .query_rows(get_sql(), &[Param::Text(order_id)], OrdersWithLines::push)
            .await?;
        Ok(orders.0.into_iter().next())
    }

    /// A page of `customer_id`'s orders, newest first, starting after `after`;
    /// the page and its lines in one statement.
    pub async fn list_by_customer(
        &self,
        customer_id: &str,
        limit: i64,
        after: Option<&Cursor>,
    ) -> Result<Vec<OrderView>, sqlx::Error> {
        // The cursor's condition is always there; without a cursor it is
        // "before the end of time".
        let (created_at, order_id) = after.map_or((i64::MAX, ""), |cursor| {
            (cursor.created_at_ms, cursor.order_id.as_str())
        });
        let params = [
            Param::Text(customer_id),
            Param::Int(created_at),
            Param::Text(order_id),
            Param::Int(limit),
        ];
        let orders = self
            .db
            .query_rows(list_sql(), &params, OrdersWithLines::push)
            .await?;
        Ok(orders.0.into_iter().map(|order| order.view).collect())
    }

    /// A page of every customer's orders, newest first, starting after
    /// `after` (what an admin lists with no customer named).
    pub async fn list_all(
        &self,
        limit: i64,
        after: Option<&Cursor>,
    ) -> Result<Vec<OrderView>, sqlx::Error> {
        let (created_at, order_id) = after.map_or((i64::MAX, ""), |cursor| {
            (cursor.created_at_ms, cursor.order_id.as_str())
        });
        let params = [
            Param::Int(created_at),
            Param::Text(order_id),
            Param::Int(limit),
        ];
        let orders = self
            .db
            .query_rows(list_all_sql(), &params, OrdersWithLines::push)
            .await?;
        Ok(orders.0.into_iter().map(|order| order.view).collect())
    }

    /// Takes the saga lease of an unfinished order whose lease is free: run
    /// out by the database's clock, or held by a holder (process
    /// incarnation) that stopped heartbeating. The order's fencing number
    /// grows by one. None when the order is done or someone else drives it.
    pub async fn claim(
        &self,
        order_id: &str,
        owner: &str,
        leases: &Leases,
    ) -> Result<Option<Claimed>, sqlx::Error> {
        let now = self.db.now_sql();
        let claimed = sqlx::query(&format!(
            "UPDATE order_orders SET lease_owner = $1, lease_holder = $2, \
             lease_until = {now} + $3, fence = fence + 1, \
             taken_over = CASE WHEN lease_until > 0 THEN 1 ELSE 0 END \
             WHERE order_id = $4 AND step <> 'done' AND ({free}) \
             RETURNING fence, taken_over",
            free = free_lease_sql(now, "$2", "$5"),
        ))
        .bind(owner)
        .bind(&leases.holder)
        .bind(millis(leases.lease))
        .bind(order_id)
        .bind(millis(leases.holder_timeout))
        .fetch_optional(self.db.pool())
        .await?;
        let Some(claimed) = claimed else {
            return Ok(None);
        };
        let fence: i64 = claimed.try_get("fence")?;
        let taken_over: i64 = claimed.try_get("taken_over")?;
        Ok(self.get(order_id).await?.map(|order| Claimed {
            order,
            lease: Lease {
                owner: owner.to_owned(),
                fence,
            },
            taken_over: taken_over != 0,
        }))
    }

    /// Stores the saga's next state if `lease` is still the order's; the
    /// lease is renewed (by the database's clock) while the saga goes on and
    /// freed when it pauses or ends. None when the lease was lost.
    pub async fn advance(
        &self,
        current: &StoredOrder,
        lease: &Lease,
        state: &SagaState,
        retry_in: Option<Duration>,
        now_ms: i64,
        duration: Duration,
    ) -> Result<Option<StoredOrder>, sqlx::Error> {
        let keeps_going = retry_in.is_none() && state.step != Step::Done;
        let lease_ms = if keeps_going { millis(duration) } else { 0 };
        let retry_ms = retry_in.map_or(0, millis);
        // The token is kept only while a charge may still be sent (recovery
        // re-sends it); once the charge is decided only its masked form is.
        let payment_method = if state.step.may_charge() {
            current.payment_method.clone()
        } else {
            masked(&current.payment_method)
        };
        let now = self.db.now_sql();
        let event = outbox::event_for(&current.saga, state);
        let mut tx = self.db.transaction().await?;
        let updated = tx
            .execute(
                &format!(
                    "UPDATE order_orders SET status = $1, failure_reason = $2, step = $3, \
                     compensate_stock = $4, compensate_payment = $5, attempts = $6, \
                     next_attempt_at = {now} + $7, \
                     lease_until = CASE WHEN $8 = 0 THEN 0 ELSE {now} + $8 END, \
                     version = version + 1, updated_at = $9, payment_method = $12 \
                     WHERE order_id = $10 AND lease_owner = $11 AND fence = $13"
                ),
                &[
                    Param::Text(state.status.as_str()),
                    Param::OptText(state.failure_reason.map(FailureReason::as_str)),
                    Param::Text(state.step.as_str()),
                    Param::Int(i64::from(state.compensate_stock)),
                    Param::Int(i64::from(state.compensate_payment)),
                    Param::Int(i64::from(state.attempts)),
                    Param::Int(retry_ms),
                    Param::Int(lease_ms),
                    Param::Int(now_ms),
                    Param::Text(&current.view.order_id),
                    Param::Text(&lease.owner),
                    Param::Text(&payment_method),
                    Param::Int(lease.fence),
                ],
            )
            .await?;
        if updated == 0 {
            return Ok(None);
        }
        if let Some(kind) = event {
            let facts = OrderFacts {
                order_id: &current.view.order_id,
                customer_id: &current.view.customer_id,
                status: state.status,
                failure_reason: state.failure_reason,
                total: current.view.total,
            };
            outbox::record_of(&mut tx, &facts, kind, now_ms).await?;
        }
        tx.commit().await?;
        // Under the lease only this driver writes the row, so the stored
        // order is `current` with this update applied: no need to read it.
        let mut next = current.clone();
        next.saga = *state;
        next.view.status = state.status;
        next.view.failure_reason = state.failure_reason;
        next.view.version += 1;
        next.view.updated_at_ms = now_ms;
        next.payment_method = payment_method;
        Ok(Some(next))
    }

    /// Frees the lease if `owner` holds it (the driver stopped early: a
    /// graceful hand-over), so another replica may take the order at once.
    pub async fn release(&self, order_id: &str, owner: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE order_orders SET lease_until = 0, lease_owner = NULL \
             WHERE order_id = $1 AND lease_owner = $2",
        )
        .bind(order_id)
        .bind(owner)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Records that `holder` is alive (by the database's clock).
    pub async fn heartbeat(&self, holder: &str, started_ms: i64) -> Result<(), sqlx::Error> {
        let now = self.db.now_sql();
        sqlx::query(&format!(
            "INSERT INTO order_holders (holder_id, started_at, heartbeat_at) \
             VALUES ($1, $2, {now}) \
             ON CONFLICT (holder_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at"
        ))
        .bind(holder)
        .bind(started_ms)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Registers `holder` as the new incarnation of `replica`, retiring the
    /// older ones: a restarted replica's old leases are free at once.
    /// Returns how many were retired.
    pub async fn register(
        &self,
        holder: &str,
        replica: Option<&str>,
        started_ms: i64,
    ) -> Result<u64, sqlx::Error> {
        self.heartbeat(holder, started_ms).await?;
        let Some(replica) = replica else {
            return Ok(0);
        };
        let mut tx = self.db.begin().await?;
        sqlx::query("UPDATE order_holders SET replica = $1 WHERE holder_id = $2")
            .bind(replica)
            .bind(holder)
            .execute(&mut *tx)
            .await?;
        let retired =
            sqlx::query("DELETE FROM order_holders WHERE replica = $1 AND holder_id <> $2")
                .bind(replica)
                .bind(holder)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        tx.commit().await?;
        Ok(retired)
    }

    /// Forgets `holder` (it is stopping), and holders silent for an hour:
    /// their leases are free at once.
    pub async fn retire(&self, holder: &str) -> Result<(), sqlx::Error> {
        let now = self.db.now_sql();
        sqlx::query(&format!(
            "DELETE FROM order_holders WHERE holder_id = $1 OR heartbeat_at < {now} - 3600000"
        ))
        .bind(holder)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Milliseconds since the oldest unfinished order was placed, by the
    /// database's clock; 0 when every order is settled.
    pub async fn oldest_unsettled_age_ms(&self) -> Result<i64, sqlx::Error> {
        let now = self.db.now_sql();
        let age: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT {now} - MIN(created_at) FROM order_orders \
             WHERE step IN ('reserve', 'charge', 'commit', 'compensate')"
        ))
        .fetch_one(self.db.pool())
        .await?;
        Ok(age.unwrap_or(0).max(0))
    }

    /// Turns a CONFIRMED order into `cancelled` (a state from
    /// `saga::cancel`), only if it is still CONFIRMED and settled. False when
    /// the order was not in that state.
    pub async fn cancel(
        &self,
        order_id: &str,
        cancelled: &SagaState,
        now_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.db.transaction().await?;
        let updated = tx
            .execute(
                "UPDATE order_orders SET status = $1, step = $2, compensate_stock = $3, \
                 compensate_payment = $4, attempts = 0, next_attempt_at = 0, \
                 version = version + 1, updated_at = $5 \
                 WHERE order_id = $6 AND status = 'CONFIRMED' AND step = 'done'",
                &[
                    Param::Text(cancelled.status.as_str()),
                    Param::Text(cancelled.step.as_str()),
                    Param::Int(i64::from(cancelled.compensate_stock)),
                    Param::Int(i64::from(cancelled.compensate_payment)),
                    Param::Int(now_ms),
                    Param::Text(order_id),
                ],
            )
            .await?;
        if updated == 1 {
            outbox::record(&mut tx, order_id, EventKind::Cancelled, now_ms).await?;
        }
        tx.commit().await?;
        Ok(updated == 1)
    }

    /// Orders whose saga is unfinished, due for another try (by the
    /// database's clock), and whose lease is free for `leases.holder`.
    pub async fn due(&self, leases: &Leases, limit: i64) -> Result<Vec<String>, sqlx::Error> {
        let now = self.db.now_sql();
        sqlx::query_scalar(&format!(
            "SELECT order_id FROM order_orders WHERE step <> 'done' \
             AND next_attempt_at <= {now} AND ({free}) \
             ORDER BY next_attempt_at LIMIT $3",
            free = free_lease_sql(now, "$1", "$2"),
        ))
        .bind(&leases.holder)
        .bind(millis(leases.holder_timeout))
        .bind(limit)
        .fetch_all(self.db.pool())
        .await
    }
}

/// How this process holds saga leases.
#[derive(Clone, Debug)]
pub struct Leases {
    /// This process incarnation, as `order_holders` knows it.
    pub holder: String,
    /// How long a lease lasts without a step.
    pub lease: Duration,
    /// How long a holder may be silent before its leases are free.
    pub holder_timeout: Duration,
}

/// The driver that stores a new order and drives its saga at once.
#[derive(Clone, Copy, Debug)]
pub struct FirstDriver<'a> {
    pub owner: &'a str,
    pub leases: &'a Leases,
}

/// One driver's hold on one order's saga.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub owner: String,
    /// Sent with every step; inventory and payment refuse smaller ones.
    pub fence: i64,
}

/// A claimed order.
#[derive(Debug)]
pub struct Claimed {
    pub order: StoredOrder,
    pub lease: Lease,
    /// The lease was taken from a holder still holding it (it ran out, or
    /// its holder went silent), not handed over.
    pub taken_over: bool,
}

/// The condition under which an order's lease is free for `holder`: it ran
/// out by the database's clock, or another holder held it and stopped
/// heartbeating (`timeout` ms).
fn free_lease_sql(now: &str, holder: &str, timeout: &str) -> String {
    format!(
        "lease_until < {now} OR (lease_holder IS NOT NULL AND lease_holder <> {holder} \
         AND NOT EXISTS (SELECT 1 FROM order_holders h \
         WHERE h.holder_id = order_orders.lease_holder AND h.heartbeat_at >= {now} - {timeout}))"
    )
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Orders from the rows of an order-with-lines join, in row order:
/// consecutive rows of one order carry its lines.
#[derive(Default)]
struct OrdersWithLines(Vec<StoredOrder>);

impl OrdersWithLines {
    fn push(&mut self, row: &dyn Columns) -> Result<(), sqlx::Error> {
        let order_id = row.text("order_id")?;
        let order = match self.0.last_mut() {
            Some(last) if last.view.order_id == order_id => last,
            _ => {
                self.0.push(decode_order(row)?);
                self.0.last_mut().ok_or(sqlx::Error::RowNotFound)?
            }
        };
        if row.text_or_null("product_id")?.is_some() {
            let line = decode_line(row, order.view.total.currency)?;
            order.view.lines.push(line);
        }
        Ok(())
    }
}

fn decode_order(row: &(impl Columns + ?Sized)) -> Result<StoredOrder, sqlx::Error> {
    let currency =
        Currency::parse(&row.text("currency")?).map_err(|e| decode_error("currency", e))?;
    let status: OrderStatus = row
        .text("status")?
        .parse()
        .map_err(|e| decode_error("status", e))?;
    let step: Step = row
        .text("step")?
        .parse()
        .map_err(|e| decode_error("step", e))?;
    let failure_reason = row
        .text_or_null("failure_reason")?
        .map(|reason| reason.parse::<FailureReason>())
        .transpose()
        .map_err(|e| decode_error("failure_reason", e))?;
    let attempts = row.int("attempts")?;
    Ok(StoredOrder {
        view: OrderView {
            order_id: row.text("order_id")?,
            customer_id: row.text("customer_id")?,
            lines: Vec::new(),
            total: Money::new(currency, row.int("total_minor_units")?),
            status,
            failure_reason,
            created_at_ms: row.int("created_at")?,
            updated_at_ms: row.int("updated_at")?,
            version: row.int("version")?,
        },
        saga: SagaState {
            status,
            step,
            failure_reason,
            compensate_stock: row.int("compensate_stock")? != 0,
            compensate_payment: row.int("compensate_payment")? != 0,
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        },
        payment_method: row.text("payment_method")?,
    })
}

fn decode_line(
    row: &(impl Columns + ?Sized),
    currency: Currency,
) -> Result<OrderLine, sqlx::Error> {
    let quantity = row.int("quantity")?;
    Ok(OrderLine {
        product_id: row.text("product_id")?,
        quantity: i32::try_from(quantity).map_err(|e| decode_error("quantity", e))?,
        unit_price: Money::new(currency, row.int("unit_price_minor_units")?),
    })
}

#[cfg(test)]
mod tests;
