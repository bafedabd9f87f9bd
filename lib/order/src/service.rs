//! The order service's use cases: what CreateOrder, GetOrder, ListOrders,
//! CancelOrder and WatchOrder do, apart from how they travel.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use ordermesh_domain::limits::{self as limits, FOREIGN_PAGE_TOKEN, check_id, split_page};
use ordermesh_domain::{ErrorKind, Money};
use ordermesh_runtime::deadline::Deadline;
use ordermesh_runtime::shutdown::Shutdown;
use ordermesh_runtime::status::describe_status;
use ordermesh_storage::now_millis;

use crate::domain::saga;
use crate::domain::{
    Caller, ListScope, NewOrder, OrderForm, OrderLine, OrderView, RequestError, Step,
};
use crate::error::{OrderError, store_error};
use crate::hub::{OrderChanges, OrderHub, RecvError};
use crate::peers::Peers;
use crate::runner::SagaRunner;
use crate::store::{Cursor, Inserted, OrderStore, StoredOrder};

/// Tunables of the use cases.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest CreateOrder waits for the saga when the caller set no deadline.
    pub create_wait: Duration,
    /// Longest a WatchOrder stream stays open.
    pub watch_lifetime: Duration,
    /// How often a watch re-reads the order, to see changes made by another
    /// replica.
    pub watch_poll: Duration,
}

pub type OrderStream = Pin<Box<dyn Stream<Item = Result<OrderView, OrderError>> + Send>>;

#[derive(Clone, Debug)]
pub struct Orders {
    store: OrderStore,
    peers: Peers,
    hub: OrderHub,
    runner: SagaRunner,
    limits: Limits,
    shutdown: Shutdown,
}

/// Orders in a page when the caller does not say, and at most.
const DEFAULT_PAGE_SIZE: usize = 20;
const MAX_PAGE_SIZE: usize = 100;

/// How much of the caller's deadline to leave for the answer's trip back.
const ANSWER_MARGIN: Duration = Duration::from_millis(50);

impl Orders {
    pub fn new(
        store: OrderStore,
        peers: Peers,
        hub: OrderHub,
        runner: SagaRunner,
        limits: Limits,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            store,
            peers,
            hub,
            runner,
            limits,
            shutdown,
        }
    }

    /// Stores the order, for the caller, starts its saga, and answers with
    /// the order in its final state if the saga ends in time, else as it
    /// stands. A repeat of an earlier request with the same idempotency key
    /// (scoped by customer) answers with that earlier order.
    pub async fn create(
        &self,
        caller: &Caller,
        form: OrderForm,
        deadline: Option<Deadline>,
    ) -> Result<OrderView, OrderError> {
        let customer_id = caller.customer_for_new_order(&form.customer_id)?;
        let request = NewOrder::parse(
            customer_id,
            form.items,
            &form.payment_method,
            form.idempotency_key,
        )?;
        // No look-up of the idempotency key first: the insert finds a key
        // already taken, in its own transaction, and a replay only pays for
        // the pricing. A replay that cannot be priced any more (a product
        // gone, inventory away) still answers with its order.
        let (lines, total) = match self.price(&request, deadline).await {
            Ok(priced) => priced,
            Err(error) => return self.replay_unpriced(&request, error, deadline).await,
        };
        let order_id = format!("ord_{}", uuid::Uuid::now_v7().simple());
        let owner = SagaRunner::new_owner();
        let inserted = self
            .store
            .insert(
                &order_id,
                &request,
                &lines,
                total,
                now_millis(),
                Some(self.runner.first_driver(&owner)),
            )
            .await
            .map_err(store_error("storing a new order"))?;
        match inserted {
            Inserted::New { order, lease } => {
                tracing::info!(
                    order_id,
                    customer_id = %request.customer_id,
                    amount = total.minor_units,
                    currency = %total.currency,
                    payment_method = %request.payment_method,
                    "order placed"
                );
                // Subscribed before the saga starts, no change can be missed:
                // no need to read the order back before waiting.
                let changes = self.hub.subscribe(&order_id);
                self.hub.publish(Arc::new(order.clone()));
                match lease {
                    Some(lease) => self.runner.spawn_stored(order, lease),
                    None => self.runner.spawn(order_id.clone()),
                }
                self.wait_settled(&order_id, changes, None, deadline).await
            }
            // A concurrent request with the same key won the race.
            Inserted::KeyTaken {
                order_id,
                fingerprint,
            } => {
                self.replay(&request, order_id, &fingerprint, deadline)
                    .await
            }
        }
    }

    /// A request that could not be priced: the replay of an earlier order
    /// if its idempotency key names one, else `error`.
    async fn replay_unpriced(
        &self,
        request: &NewOrder,
        error: OrderError,
        deadline: Option<Deadline>,
    ) -> Result<OrderView, OrderError> {
        let Some(key) = &request.idempotency_key else {
            return Err(error);
        };
        let existing = self
            .store
            .find_by_idempotency_key(&request.customer_id, key)
            .await
            .map_err(store_error("looking up an idempotency key"))?;
        match existing {
            Some((order_id, fingerprint)) => {
                self.replay(request, order_id, &fingerprint, deadline).await
            }
            None => Err(error),
        }
    }

    async fn replay(
        &self,
        request: &NewOrder,
        order_id: String,
        fingerprint: &str,
        deadline: Option<Deadline>,
    ) -> Result<OrderView, OrderError> {
        if fingerprint != request.fingerprint() {
            return Err(OrderError::IdempotencyKeyReused { order_id });
        }
        tracing::info!(order_id, "idempotent replay of CreateOrder");
        self.settled(&order_id, deadline).await
    }

    /// Prices every line at the inventory's current price.
    async fn price(
        &self,
        request: &NewOrder,
        deadline: Option<Deadline>,
    ) -> Result<(Vec<OrderLine>, Money), OrderError> {
        let product_ids: Vec<String> = request.items.iter().map(|(id, _)| id.clone()).collect();
        let quotes: HashMap<String, Money> = self
            .peers
            .quote(&product_ids, deadline)
            .await
            .map_err(|status| {
                let mut upstream = describe_status(&status);
                // Our own default timeout, not the caller's deadline: an outage.
                if upstream.kind == ErrorKind::DeadlineExceeded && deadline.is_none() {
                    upstream.kind = ErrorKind::Unavailable;
                }
                if !matches!(upstream.kind, ErrorKind::DeadlineExceeded | ErrorKind::Cancelled) {
                    tracing::warn!(code = ?status.code(), upstream = status.message(), "inventory could not price an order");
                }
                OrderError::Inventory(upstream)
            })?
            .into_iter()
            .map(|quote| (quote.product_id, quote.unit_price))
            .collect();
        let unknown: Vec<String> = product_ids
            .iter()
            .filter(|id| !quotes.contains_key(*id))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(OrderError::UnknownProducts(unknown));
        }
        let mut lines = Vec::with_capacity(request.items.len());
        let mut total: Option<Money> = None;
        for (product_id, quantity) in &request.items {
            let unit_price = quotes[product_id];
            let line_total = unit_price.checked_mul(i64::from(*quantity))?;
            total = Some(match total {
                None => line_total,
                Some(sum) => sum.checked_add(line_total)?,
            });
            lines.push(OrderLine {
                product_id: product_id.clone(),
                quantity: *quantity,
                unit_price,
            });
        }
        let total = total.ok_or(OrderError::InvalidRequest(RequestError::NoItems))?;
        Ok((lines, total))
    }

    pub async fn get(&self, caller: &Caller, order_id: &str) -> Result<OrderView, OrderError> {
        Ok(self.visible(caller, order_id, "get").await?.view)
    }

    /// The order as it stands, for the service's own waits.
    async fn current(&self, order_id: &str) -> Result<OrderView, OrderError> {
        Ok(self.stored(order_id).await?.view)
    }

    /// The order if the caller may see it; else the same NOT_FOUND as for
    /// an order that does not exist. An admin's look at another customer's
    /// order is logged with the admin's subject.
    async fn visible(
        &self,
        caller: &Caller,
        order_id: &str,
        action: &'static str,
    ) -> Result<StoredOrder, OrderError> {
        let order = self.stored(order_id).await?;
        let owner = &order.view.customer_id;
        if !caller.may_see(owner) {
            return Err(OrderError::NotFound(order_id.to_owned()));
        }
        if caller.admin && *owner != caller.customer_id {
            tracing::info!(admin = %caller.subject, action, order_id, customer_id = %owner, "admin action");
        }
        Ok(order)
    }

    async fn stored(&self, order_id: &str) -> Result<StoredOrder, OrderError> {
        check_id("order_id", order_id).map_err(OrderError::InvalidArgument)?;
        self.store
            .get(order_id)
            .await
            .map_err(store_error("reading an order"))?
            .ok_or_else(|| OrderError::NotFound(order_id.to_owned()))
    }

    /// A page of orders, newest first, and the token of the next page
    /// (empty on the last): the caller's own, or for an admin one named
    /// customer's or, with none named, everyone's.
    pub async fn list(
        &self,
        caller: &Caller,
        customer_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<OrderView>, String), OrderError> {
        if !customer_id.is_empty() {
            check_id("customer_id", customer_id).map_err(OrderError::InvalidArgument)?;
        }
        let scope = caller.list_scope(customer_id)?;
        let page_size = limits::page_size(page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
            .map_err(OrderError::InvalidArgument)?;
        let cursor = if page_token.is_empty() {
            None
        } else {
            Some(
                decode_page_token(page_token)
                    .ok_or_else(|| OrderError::InvalidArgument(FOREIGN_PAGE_TOKEN.into()))?,
            )
        };
        // One extra row tells whether another page follows.
        let limit = page_size as i64 + 1;
        let orders = match &scope {
            ListScope::Customer(customer) => {
                if caller.admin && *customer != caller.customer_id {
                    tracing::info!(admin = %caller.subject, action = "list", customer_id = %customer, "admin action");
                }
                self.store.list_by_customer(customer, limit, cursor.as_ref()).await
            }
            ListScope::Everyone => {
                tracing::info!(admin = %caller.subject, action = "list everyone's", "admin action");
                self.store.list_all(limit, cursor.as_ref()).await
            }
        }
        .map_err(store_error("listing orders"))?;
        Ok(split_page(orders, page_size, encode_page_token))
    }

    /// Cancels a CONFIRMED order: it turns CANCELLED at once, and the refund
    /// and restock follow (retried until both are acknowledged).
    pub async fn cancel(
        &self,
        caller: &Caller,
        order_id: &str,
        deadline: Option<Deadline>,
    ) -> Result<OrderView, OrderError> {
        let order = self.visible(caller, order_id, "cancel").await?;
        let cancelled = saga::cancel(order.saga).map_err(|reason| OrderError::NotCancellable {
            order_id: order_id.to_owned(),
            reason,
        })?;
        if order.saga.status != cancelled.status {
            let changed = self
                .store
                .cancel(order_id, &cancelled, now_millis())
                .await
                .map_err(store_error("cancelling an order"))?;
            if changed {
                tracing::info!(order_id, customer_id = %order.view.customer_id, "order cancelled; refunding and restocking");
                self.runner.spawn(order_id.to_owned());
            } else {
                // Someone changed it meanwhile: decide again on what it is now.
                let now = self.stored(order_id).await?;
                saga::cancel(now.saga).map_err(|reason| OrderError::NotCancellable {
                    order_id: order_id.to_owned(),
                    reason,
                })?;
            }
        }
        self.settled(order_id, deadline).await
    }

    /// Waits until the order's saga has nothing left to do now (done, or
    /// paused for a retry after a terminal status), or until the wait budget
    /// runs out; then answers with the order as it stands.
    async fn settled(
        &self,
        order_id: &str,
        deadline: Option<Deadline>,
    ) -> Result<OrderView, OrderError> {
        let changes = self.hub.subscribe(order_id);
        let current = self.stored(order_id).await?;
        self.wait_settled(order_id, changes, Some(current), deadline)
            .await
    }

    async fn wait_settled(
        &self,
        order_id: &str,
        mut changes: OrderChanges,
        current: Option<StoredOrder>,
        deadline: Option<Deadline>,
    ) -> Result<OrderView, OrderError> {
        let budget = deadline.map_or(self.limits.create_wait, |d| {
            d.remaining().saturating_sub(ANSWER_MARGIN)
        });
        let wait = async {
            if let Some(current) = current
                && is_settled(&current)
            {
                return Ok(current.view);
            }
            loop {
                match changes.recv().await {
                    Ok(order) if order.view.order_id == order_id && is_settled(&order) => {
                        return Ok(order.view.clone());
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => {
                        let current = self.stored(order_id).await?;
                        if is_settled(&current) {
                            return Ok(current.view);
                        }
                    }
                    Err(RecvError::Closed) => return self.current(order_id).await,
                }
            }
        };
        match tokio::time::timeout(budget, wait).await {
            Ok(result) => result,
            Err(_) => self.current(order_id).await,
        }
    }

    /// The order now, then each change, until it is terminal, the stream's
    /// lifetime ends, or the server shuts down.
    pub async fn watch(&self, caller: &Caller, order_id: &str) -> Result<OrderStream, OrderError> {
        let mut changes = self.hub.subscribe(order_id);
        let first = self.visible(caller, order_id, "watch").await?.view;
        let orders = self.clone();
        let order_id = order_id.to_owned();
        let stream = async_stream::stream! {
            let mut last_version = first.version;
            let terminal = first.status.is_terminal();
            yield Ok(first);
            if terminal {
                return;
            }
            let lifetime = tokio::time::sleep(orders.limits.watch_lifetime);
            tokio::pin!(lifetime);
            let mut poll = tokio::time::interval(orders.limits.watch_poll);
            loop {
                let candidate = tokio::select! {
                    () = orders.shutdown.cancelled() => return,
                    () = &mut lifetime => return,
                    change = changes.recv() => match change {
                        Ok(order) if order.view.order_id == order_id => Some(Ok(order.view.clone())),
                        Ok(_) => None,
                        Err(RecvError::Lagged(_)) => Some(orders.current(&order_id).await),
                        Err(RecvError::Closed) => return,
                    },
                    _ = poll.tick() => Some(orders.current(&order_id).await),
                };
                match candidate {
                    Some(Ok(order)) if order.version > last_version => {
                        last_version = order.version;
                        let terminal = order.status.is_terminal();
                        yield Ok(order);
                        if terminal {
                            return;
                        }
                    }
                    Some(Err(error)) => {
                        yield Err(error);
                        return;
                    }
                    _ => {}
                }
            }
        };
        Ok(Box::pin(stream))
    }
}

fn is_settled(order: &StoredOrder) -> bool {
    order.saga.step == Step::Done || (order.view.status.is_terminal() && order.saga.attempts > 0)
}

fn encode_page_token(order: &OrderView) -> String {
    format!("{}.{}", order.created_at_ms, order.order_id)
}

fn decode_page_token(token: &str) -> Option<Cursor> {
    let (created_at, order_id) = token.split_once('.')?;
    check_id("page_token", order_id).ok()?;
    Some(Cursor {
        created_at_ms: created_at.parse().ok()?,
        order_id: order_id.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        let cursor = decode_page_token("1700000000000.ord_abc").unwrap();
        assert_eq!(cursor.created_at_ms, 1_700_000_000_000);
        assert_eq!(cursor.order_id, "ord_abc");
        for bad in ["", "abc", "12.", ".ord", "x.ord_abc", "1.ord abc"] {
            assert!(decode_page_token(bad).is_none(), "{bad:?}");
        }
    }
}
